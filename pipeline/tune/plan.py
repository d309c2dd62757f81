"""The plan: every decision taken before the first trial, from the options, the data's size and
the measured cost (:class:`~pipeline.tune.cost.CostModel`), never from the device's name.

- **Trial rows.** Trials see every row of their split where the search's share could hold
  :data:`MIN_FULL_TRIALS` warm-start trials on them; else (on data over 1.25 x
  :data:`SEARCH_ROWS` training rows) a stratified slice of :data:`SEARCH_ROWS`.
- **The final stage.** Trials on a slice: a final fit of the chosen configuration on the whole
  training split (:data:`FINAL_SHARE` of the budget). Trials on every row: k folds of every
  labelled row on small data (:data:`KFOLD_MAX_ROWS`; :data:`KFOLD_SHARE` of the budget) where
  they fit (:func:`folds_fit`), else the trials' own models (and a final fit in the time the
  search leaves, :mod:`pipeline.tune.modes`).
- **The warm start.** resnet9s, or the light one (lenet5_wide) where the search beside the
  folds could not hold :data:`SEARCH_HOLDS` resnet9s trials, or the final fit could not train
  :data:`LIGHT_FINAL_EPOCHS` of it on all training rows (:func:`light_when_dear`).
- **Entries.** Those that cannot finish an epoch in a quarter of the search's share, or whose
  final fit could not train :data:`MIN_FINAL_EPOCHS`, are left out (:func:`choose_models`).

Every rule compares seconds of the budget with seconds of the cost model, so a machine 30x as
fast with a budget B decides what this one decides with 30 B (tests/test_plan.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipeline.memory import PROCESS_LIMIT_MIB
from pipeline.options import TuneOptions
from pipeline.search_space import LIGHT_WARM_START
from pipeline.tune import log
from pipeline.tune.cost import EXIT_MARGIN, CostModel

# Trials on a slice of the training split, scored on a slice of its validation rows, then a
# final fit of the best configuration on the whole split: one epoch of cnn7 on all 48,000 demo
# rows takes ~150 s on 2 CPU cores, so trials on every row would buy about one trial an hour.
SEARCH_ROWS = 12_000
SEARCH_EPOCHS = 8  # epochs per trial at most, on a slice
FULL_EPOCHS = 15  # ... on every row
# Trials see every row where the search's share holds this many warm-start trials of
# FULL_EPOCHS on them: TPE samples at random for its first 5 trials, and the search's stop rule
# judges 5 after the warm start (pipeline.tune.search). Not measured against other counts; on
# the demo at 3600 s a 2-core CPU holds 1.5-4 (slice), a GPU ~40 (every row).
MIN_FULL_TRIALS = 10
# of the budget, for the final fit. In the first 3600 s default run on 2 CPU cores the search
# (45%) found nothing better than its warm start, while the final fit's accuracy was still
# rising at its last epoch: epochs of the final fit buy more than trials on a slice.
FINAL_SHARE = 0.65
FINAL_RESERVE = 60.0  # seconds kept for predicting and writing where no fit follows
KEEP_MODELS = 3  # trial models kept on disk (the top K by validation accuracy)
KFOLD = 5
# Labelled rows up to which the final stage trains k folds: the size where trials see every
# row (1.25 x SEARCH_ROWS training rows), so no final fit follows.
KFOLD_MAX_ROWS = 15_000
# of the budget, kept for the folds: k fits of ~1.25x a trial's rows each. A starting point,
# not measured against other shares.
KFOLD_SHARE = 0.5
# ... unless the search left beside the folds could not hold this many warm-start trials: at
# --quick --timeout 90 on 1,200 rows the folds kept 60 s and the search's 30 s completed no trial
SEARCH_HOLDS = 2
# Before the search the folds must hold this many epochs of the warm start; after it, as many as
# the chosen network's trial ran, else a final fit from the trial's weights takes the time. On
# fer48 at 900 s a fold of 10 epochs from scratch scored 0.8075 out-of-fold where its trial (15
# epochs) read 0.8583 on the validation rows.
MIN_FOLD_EPOCHS = 8
# ... on at least this many folds: 2 folds train on half the labelled rows, fewer than a
# trial's 64% (80% of the 80% search split)
MIN_FOLDS = 3
# Entries whose final fit could not reach this many epochs on all rows are left out. Measured
# at 900 s (40,000 rows): resnet9s after 8 epochs scored 0.9314 against 0.9225 for lenet5 after
# 31 and 0.9278 for lenet5_wide after 33; resnet9s after 4 epochs (300 s) 0.9168.
MIN_FINAL_EPOCHS = 6
# ... and where the final fit could not train this many epochs of the standard warm start, the
# run starts from the light one. At 300 s on the demo (40,000 training rows) the cost model gave
# resnet9s ~6 epochs; it trained 3 and the submission read 0.8426 sealed against AutoKeras's
# 0.9096 (bench/README.md); resnet9s after 8 epochs beat lenet5_wide after 33 (above).
LIGHT_FINAL_EPOCHS = 8
MODES = ("fit", "folds", "trials")


@dataclass(frozen=True)
class TunePlan:
    """What this run does, decided from the options, the data's size and the cost model."""

    timeout: float
    search_rows: int | None  # training images per trial; None: the whole split
    final: str  # fit, folds or trials (MODES)
    max_epochs: int  # per trial
    reserve: float  # seconds of the budget kept for the final stage
    keep: int  # trial models kept on disk
    kfold: int = 0  # folds of every labelled row the final stage trains (0: none)
    warm_start: str = "resnet9s"  # the first trial's recipe (pipeline.search_space.WARM_STARTS)

    @property
    def final_fit(self) -> bool:
        return self.final == "fit"


def split_sizes(n_rows: int) -> tuple[int, int]:
    """(training, validation) rows of an 80/20 split of ``n_rows``."""
    return int(0.8 * n_rows), n_rows - int(0.8 * n_rows)


def reference(cost: CostModel | None, warm: str) -> str | None:
    """The network whose epochs price the plan: the warm start, else the cheapest network."""
    if cost is None or not cost.macs:
        return None
    return warm if warm in cost.macs else min(cost.macs, key=cost.macs.get)


def trial_rows(opts: TuneOptions, n_train: int, cost: CostModel | None, warm: str) -> int:
    """Training images per trial (0: every row of the split): ``--search-rows``, else
    SEARCH_ROWS where the search's share cannot hold MIN_FULL_TRIALS trials on every row."""
    if opts.search_rows != "auto":
        rows = int(opts.search_rows)
    elif n_train <= 1.25 * SEARCH_ROWS:
        rows = 0
    else:
        ref, share = reference(cost, warm), (1 - FINAL_SHARE) * opts.timeout
        full = FULL_EPOCHS * cost.epoch_seconds(ref, *split_sizes(n_train)) if ref else share
        rows = SEARCH_ROWS if MIN_FULL_TRIALS * full > share else 0
    return 0 if rows >= n_train else rows


def make_plan(opts: TuneOptions, n_labelled: int, cost: CostModel | None, n_test: int = 0,
              rows: int | None = None) -> TunePlan:  # fmt: skip
    """The plan (see the module's text); ``rows``: the trials' rows already fixed (a study made
    with them, for ``--final-only``), else decided here from ``cost``."""
    n_used = min(opts.limit, n_labelled) if opts.limit else n_labelled
    warm = opts.warm_start if opts.warm_start != "auto" else TunePlan.warm_start
    if rows is None:
        rows = trial_rows(opts, int(0.8 * n_used), cost, warm)
    final = opts.final
    if final == "auto":
        final = "fit" if rows else "folds" if n_used <= KFOLD_MAX_ROWS else "trials"
    small = min(FINAL_RESERVE, 0.2 * opts.timeout)  # predicting and writing, on small data
    share = {"fit": max(FINAL_RESERVE, FINAL_SHARE * opts.timeout),
             "folds": KFOLD_SHARE * opts.timeout, "trials": small}  # fmt: skip
    keep = KEEP_MODELS if opts.ensemble == "auto" else max(KEEP_MODELS, int(opts.ensemble))
    plan = TunePlan(
        timeout=opts.timeout, search_rows=rows or None, final=final,
        max_epochs=opts.max_epochs or (SEARCH_EPOCHS if rows else FULL_EPOCHS),
        reserve=small if opts.search_only else share[final], keep=keep,
        kfold=KFOLD if final == "folds" else 0, warm_start=warm,
    )  # fmt: skip
    if cost is None or opts.search_only:
        return plan
    if opts.warm_start == "auto" and final in ("fit", "folds"):
        plan = light_when_dear(plan, cost, n_used, n_test)
    if opts.final == "auto" and final == "folds":
        plan = folds_fit(plan, cost, n_used, n_test)
    return plan


def trial_seconds(plan: TunePlan, cost: CostModel, model: str, n_labelled: int) -> float:
    """Seconds of one trial of ``model`` on every row of the search's split (64% / 16% of the
    labelled rows), by the cost model."""
    return plan.max_epochs * cost.epoch_seconds(model, int(0.64 * n_labelled),
                                                int(0.16 * n_labelled))  # fmt: skip


def search_seconds(plan: TunePlan) -> float:
    """Seconds of the budget the search has beside the plan's reserve."""
    return plan.timeout - plan.reserve - EXIT_MARGIN


def light_when_dear(plan: TunePlan, cost: CostModel, n_labelled: int, n_test: int) -> TunePlan:
    """The plan with the light warm start (LIGHT_WARM_START) where the standard one is too dear
    for the budget: the search beside the folds could not hold SEARCH_HOLDS of its trials, or
    the final fit could not train LIGHT_FINAL_EPOCHS of it on all training rows. At 300 s, fer48
    (6,000 48x48 rows) spent 191 s of the search on one resnet9s trial and submitted that
    trial's model (0.8015 sealed, below SVC()'s 0.8425); the demo's final fit trained 3 epochs
    (0.8426, below AutoKeras's 0.9096; bench/README.md)."""
    standard, light = plan.warm_start, LIGHT_WARM_START["model"]
    if standard not in cost.macs or light not in cost.macs:
        return plan
    if plan.final_fit:
        n_train, n_holdout = split_sizes(n_labelled)
        epochs = final_epochs(plan, cost, standard, n_train, n_holdout, n_test)
        if epochs >= LIGHT_FINAL_EPOCHS:
            return plan
        why = f"the final fit could train ~{epochs} epochs of {standard} on all {n_train} rows"
    else:
        trial = trial_seconds(plan, cost, standard, n_labelled)
        if search_seconds(plan) >= SEARCH_HOLDS * trial:
            return plan
        why = (f"the search beside the folds would not hold {SEARCH_HOLDS} trials of {standard} "
               f"(~{trial:.0f} s each)")  # fmt: skip
    log(f"warm start {light}: {why}")
    return dataclasses.replace(plan, warm_start=light)


def folds_fit(plan: TunePlan, cost: CostModel, n_labelled: int, n_test: int) -> TunePlan:
    """The plan, without k-fold (its reserve back to the search) when not even MIN_FOLDS folds
    of the warm start could each train MIN_FOLD_EPOCHS epochs in the reserve, or the search
    beside them could not hold SEARCH_HOLDS warm-start trials. In the suite at 300 s,
    6,000-row competitions kept half the budget for folds that could not run and left it idle
    (160 of 300 s used); at 900 s fer48 gave its folds up because 5 did not fit (~503 s of 450)
    where 3 would have (~250 s). Each fold also predicts the ``n_test`` test images and its
    left-out rows in two views (plain and mirrored): at --quick on the demo (3,000 labelled
    rows, 10,000 test images) that was most of a fold."""
    model = plan.warm_start
    if model not in cost.macs:
        return plan
    give_up = dataclasses.replace(plan, final="trials", kfold=0,
                                  reserve=min(FINAL_RESERVE, 0.2 * plan.timeout))  # fmt: skip
    trial = trial_seconds(plan, cost, model, n_labelled)
    search = search_seconds(plan)
    if search < SEARCH_HOLDS * trial:
        log(f"no k-fold final stage: the search's ~{max(search, 0):.0f} s left beside it would "
            f"not hold {SEARCH_HOLDS} trials of {model} (~{trial:.0f} s each)")  # fmt: skip
        return give_up
    need = 0.0
    for k in range(plan.kfold, MIN_FOLDS - 1, -1):
        fold = cost.epoch_seconds(model, n_labelled * (k - 1) // k, n_labelled // k)
        predict = cost.epoch_seconds(model, 0, 2 * (n_test + n_labelled // k))
        need = k * (MIN_FOLD_EPOCHS * fold + predict)
        if need <= plan.reserve:
            return plan
    log(f"no k-fold final stage: even {MIN_FOLDS} folds of {MIN_FOLD_EPOCHS} epochs of {model} "
        f"would take ~{need:.0f} s of the {plan.reserve:.0f} s kept for them; the search keeps "
        "the time")  # fmt: skip
    return give_up


def final_epochs(plan: TunePlan, cost: CostModel, model: str, n_train: int, n_holdout: int,
                 n_test: int) -> int:  # fmt: skip
    """Epochs the final fit of ``model`` on ``n_train`` rows could train in the plan's reserve,
    less predicting the holdout and the test set in two views (the fit re-plans from its
    measured pace; this is the plan's figure for the opening line)."""
    if model not in cost.macs:
        return 0
    predict = cost.predict_seconds(model, 2 * (n_holdout + n_test))
    epoch = cost.epoch_seconds(model, n_train, min(n_holdout, 2000))
    return max(int((plan.reserve - predict) // epoch), 0)


def choose_models(opts: TuneOptions, plan: TunePlan, cost: CostModel, trial_split: tuple,
                  models, full_rows: tuple[int, int] | None = None) -> list[str]:  # fmt: skip
    """The searched entries: those that build for the data's shape and train under the
    machine's dtype policy; ``--models`` as given, else the default space less the entries that
    cannot finish an epoch in a quarter of the search's share, and (with a final fit) those
    whose final fit on ``full_rows`` (training, holdout) could not train MIN_FINAL_EPOCHS, and
    those a fresh worker could not train within PROCESS_LIMIT_MIB."""
    for m, reason in {**cost.problems, **cost.policy_problems}.items():
        log(f"leaving out {m}: {reason}")
    models = [m for m in models if m not in cost.problems and m not in cost.policy_problems]
    if opts.models:
        return models
    share = (plan.timeout - plan.reserve) / 4
    epoch = {m: cost.epoch_seconds(m, *trial_split) for m in models}
    slow = [m for m in models if epoch[m] > share]
    if slow:
        log(f"leaving out {', '.join(slow)}: one epoch (a classical entry: its fit) on "
            f"{trial_split[0]} rows would take more than a quarter of the search's "
            f"{4 * share:.0f} s (--models to force)")  # fmt: skip
    models = [m for m in models if m not in slow]
    big = [m for m in models if cost.too_big(m)]
    if big:
        log(f"leaving out {', '.join(big)}: training would take a process past "
            f"{PROCESS_LIMIT_MIB} MiB of memory (--models to force)")  # fmt: skip
    models = [m for m in models if m not in big]
    if plan.final_fit and full_rows:
        # a configuration the final fit cannot train for long on all rows is not worth a trial
        # on a slice: it would win there and lose in the final fit
        epochs = {m: plan.reserve / cost.epoch_seconds(m, *full_rows) for m in cost.macs}
        heavy = [m for m in models if epochs.get(m, MIN_FINAL_EPOCHS) < MIN_FINAL_EPOCHS]
        if heavy and len(heavy) < len(models):
            log(f"leaving out {', '.join(heavy)}: the final fit could not train "
                f"{MIN_FINAL_EPOCHS} epochs of it on all {full_rows[0]} training images in its "
                f"{plan.reserve:.0f} s (--models to force)")  # fmt: skip
            models = [m for m in models if m not in heavy]
    return models
