"""The k-fold final stage for small data: every labelled row trains what is submitted.

On data under :data:`KFOLD_MAX_ROWS` labelled rows the trials see every row of their split, and
what they submit never trained on the 20% holdout (nor on their own validation rows). Here the
chosen configuration is trained ``k`` times, each time on all labelled rows but one fold; each
model predicts its left-out fold (the out-of-fold predictions give the estimate, on every
labelled row) and the test set (the submission averages the ``k`` predictions). A fold's network
trains on a cosine schedule to its share of the time left (no decision reads its left-out rows:
no best epoch, no plateau); a classical entry is fit once per fold.

The estimate is nearly honest: no fold model saw its left-out rows, but the configuration was
chosen on the trials' validation rows, which are among them (``scored_on``: "out-of-fold").
"""

from __future__ import annotations

import time

import numpy as np

from pipeline.predict import views
from pipeline.records import Estimate, FoldsRecord, TrialRecord, read_trial
from pipeline.tune import log
from pipeline.tune.cost import FORWARD_SHARE
from pipeline.tune.decide import test_mirror
from pipeline.tune.fit import FitJob, fold_rows
from pipeline.tune.modes import FinalContext, Submitted
from pipeline.tune.plan import MIN_FOLDS
from pipeline.tune.trials import sampled_width

MAX_EPOCHS = 50  # a fold's network trains at most this many epochs, however much time is left
PREDICT_MARGIN_S = 10.0  # kept after the last fold for predicting and writing
# Folds the plan chose (--final auto) start only where each can train this many times its
# trial's epochs; else their time goes to a final fit from the trial's weights. Side by side
# at 900 s (bench/suite.py --commits, one run each, sealed rows), 1x folds against the final fit
# this rule gave: five 0.8452 vs 0.8884 (the same trial chosen), float01 0.8955 vs 0.9270,
# imbalanced 0.9185 vs 0.9333; digits8 at 300 s keeps 5 folds of 41-50 epochs (0.9944).
FOLD_EPOCHS_OVER_TRIAL = 2


def all_rows(holdout_split):
    """Every labelled row of the run (the holdout split's two parts together)."""
    x_tr, y_tr, x_ho, y_ho = holdout_split
    return np.concatenate([x_tr, x_ho]), np.concatenate([y_tr, y_ho])


def epoch_seconds(record: TrialRecord, n_trial: int, n_rows: int) -> float:
    """A fold's epoch (or fit) time, scaled from the trial's by the rows."""
    from pipeline.classical import fit_seconds
    from pipeline.models import get_entry

    m = record.metrics
    if get_entry(record.model).classical:
        return fit_seconds(record.model, (m.seconds, n_trial), n_rows, 0)
    return m.seconds / max(m.epochs_run, 1) * n_rows / max(n_trial, 1)


def is_classical(record: TrialRecord) -> bool:
    from pipeline.models import get_entry

    return get_entry(record.model).classical


def fold_cost(records: list, n_trial: int, n_rows: int, n_predict: int = 0) -> tuple[float, float]:
    """(seconds of a fold's fixed work: its classical fits, and every member predicting
    ``n_predict`` images (the test set and the left-out rows, every view counted); seconds of one
    epoch of all its networks). At --quick (3,000 labelled rows, 10,000 test images in 2 views)
    predicting was most of a fold: planned without it, the second and third folds got 1 epoch."""
    fixed = per_epoch = 0.0
    for r in records:
        if is_classical(r):
            from pipeline.classical import fit_seconds

            fixed += fit_seconds(r.model, (r.metrics.seconds, n_trial), n_rows, n_predict)
        else:
            epoch = epoch_seconds(r, n_trial, n_rows)
            per_epoch += epoch
            fixed += epoch / max(n_rows, 1) * FORWARD_SHARE * n_predict
    return fixed, per_epoch


def folds_that_fit(records: list, n_trial: int, y, least: int, seconds: float, k: int,
                   predict: tuple[int, int] = (0, 1)):  # fmt: skip
    """(folds, seconds of an epoch of a fold's networks, seconds per fold for them): the most
    folds, ``k`` down to MIN_FOLDS, whose folds can each fit the classical members and train the
    networks ``least`` epochs in ``seconds`` (fewer folds train on fewer rows and get more time
    each); folds 0 when none can. In the suite a 6,000-row competition could not hold 5 folds
    of 8 epochs in its 135 s and left them idle, where 3 would fit. ``predict``: (test images,
    views): each fold predicts them and its left-out rows."""
    k = min(k, int(np.bincount(y).min()))
    per_epoch, share = 0.0, 0.0
    n_test, n_views = predict
    for folds in range(k, min(MIN_FOLDS, k) - 1, -1):
        n_predict = n_views * (n_test + len(y) // folds)
        fixed, per_epoch = fold_cost(records, n_trial, len(y) * (folds - 1) // folds, n_predict)
        share = seconds / folds - fixed
        if share >= least * per_epoch and share >= 0:
            return folds, per_epoch, share
    return 0, per_epoch, share


def least_epochs(ctx, records: list) -> int:
    """The epochs a fold's networks must train at least: as many as the first network's trial
    ran (short folds from scratch lose to a final fit from the trial's weights), or
    ``--final-max-epochs`` when fewer; 1 without a network."""
    network = [r for r in records if not is_classical(r)]
    least = max(network[0].metrics.epochs_run, 1) if network else 1
    return min(least, ctx.opts.final_max_epochs or least)


def fold_epochs(ctx, records: list, y, k: int, n_views: int = 1):
    """(folds, epochs of a fold's networks) for the time left; (0, seconds short) when they do
    not fit: FOLD_EPOCHS_OVER_TRIAL times :func:`least_epochs` each where the plan chose the
    folds, :func:`least_epochs` where the user did (``--final folds``). ``n_views``: the
    test-time views each fold predicts with."""
    least = least_epochs(ctx, records)
    if ctx.opts.final == "auto":
        least = min(FOLD_EPOCHS_OVER_TRIAL * least, ctx.opts.final_max_epochs or MAX_EPOCHS)
    seconds = ctx.budget.left() - PREDICT_MARGIN_S
    k, per_epoch, share = folds_that_fit(records, len(ctx.splits.search[1]), y, least, seconds, k,
                                         (len(ctx.ds.x_test), n_views))  # fmt: skip
    if k < 2:
        return 0, least * per_epoch - share
    if not per_epoch:
        return k, 1
    # as many epochs as a fold's share holds at the trials' measured pace (a fit's first epoch,
    # tracing included, is no guide), at least the trial's own
    cap = ctx.opts.final_max_epochs or MAX_EPOCHS
    return k, min(cap, max(least, int(share / per_epoch)))


def fold_members(ctx, trials: list, y, k: int, n_views: int = 1):
    """(members, their records, folds, epochs): the chosen ensemble's trials, less its last
    members while their folds do not fit the time left (its first network stays); folds 0 when
    even that network's do not (a final fit then takes the time). In the suite's rgb32 at 900 s
    the ensemble of cnn5 and resnet9s scored 0.8703 on the validation rows, cnn5 alone 0.8594;
    on fer48 resnet9s with SVC's folds were 17 s too long, resnet9s's alone fit."""
    members = list(trials)
    while True:
        records = [read_trial(t) for t in members]
        folds, epochs = fold_epochs(ctx, records, y, k, n_views)
        if folds or len(members) <= 1:
            break
        lead = next((i for i, r in enumerate(records) if not is_classical(r)), None)
        drop = max(i for i in range(len(members)) if i != lead)  # the last, not the lead network
        log(f"final: the folds leave out trial {members[drop].number} ({records[drop].model}): "
            "with it they do not fit the time left")  # fmt: skip
        members.pop(drop)
    if not folds:
        times = f"{FOLD_EPOCHS_OVER_TRIAL}x " if ctx.opts.final == "auto" else ""
        log(f"final: no k-fold training: {min(MIN_FOLDS, k)} folds of {times}the trial's epochs "
            f"need ~{epochs:.0f} s more than is left")  # fmt: skip
    return members, records, folds, epochs


def by_kfold(ctx: FinalContext, d, k: int) -> Submitted | None:
    """The chosen ensemble's configurations (:func:`fold_members`) trained on k folds of every
    labelled row; None when the time left cannot hold the folds. The members' probabilities
    are averaged, as the ensemble was chosen on the validation rows."""
    x, y = all_rows(ctx.splits.holdout)
    n_views = len(views(ctx.opts.tta, d.flip.invariant))  # at most: the mirror may be left out
    members, records, k, epochs = fold_members(ctx, d.trials, y, k, n_views)
    if k < 2:
        return None
    network = any(not is_classical(r) for r in records)
    mirror = test_mirror(d.flip, trained_with_mirror=d.flip.invariant and network)
    which = [tuple(views(ctx.opts.tta, mirror[0] and not is_classical(r))) for r in records]
    names = " + ".join(
        f"trial {t.number} ({r.model})" for t, r in zip(members, records, strict=True)
    )
    log(f"final: training {names} on {k} folds of all {len(y)} labelled rows, "
        f"~{(ctx.budget.left() - PREDICT_MARGIN_S) / k:.0f} s each; "
        f"{'' if epochs == 1 else f'{epochs} epochs, '}the estimate is out-of-fold")  # fmt: skip
    t0 = time.monotonic()
    oof, test, ran = run_folds(ctx, (members, records, d.flip.invariant), y, k, epochs, which)
    blend = oof.mean(axis=0)
    rows = np.sort(np.concatenate(ran[1]))  # every row, unless the last folds were left out
    acc = float((blend[rows].argmax(1) == y[rows]).mean())
    np.save(ctx.tune_dir / "kfold_oof.npy", blend.astype(np.float32))
    alone = [round(float((p[rows].argmax(1) == y[rows]).mean()), 4) for p in oof]
    if len(records) > 1:
        each = ", ".join(f"{r.model} {a:.4f}" for r, a in zip(records, alone, strict=True))
        log(f"final: out-of-fold accuracy {each}, averaged {acc:.4f}")
    per_fold = [round(float((blend[va].argmax(1) == y[va]).mean()), 4) for va in ran[1]]
    folds_record = FoldsRecord(k, members[0].number, records[0].model, len(rows), round(acc, 4),
                               per_fold, ran[0], round(time.monotonic() - t0, 1),
                               [t.number for t in members], alone)  # fmt: skip
    estimate = Estimate.of(acc, len(rows), "out-of-fold")
    return Submitted(test.astype(np.float32), members, estimate, None, mirror=mirror,
                     folds=folds_record)  # fmt: skip


def replanned(spent: float, epochs_done: int, left: float, folds_left: int, cap: int) -> int:
    """Epochs of each fold still to train: the seconds ``left`` shared by ``folds_left`` folds
    at the pace so far (``spent`` seconds over ``epochs_done`` epochs, everything in a fold
    counted: its fixed costs make the pace a safe one for more epochs), 1 to ``cap``."""
    pace = spent / max(epochs_done, 1)
    return max(1, min(cap, int(left / folds_left / pace)))


def run_folds(ctx: FinalContext, chosen: tuple, y, k: int, epochs: int, which: list):
    """``chosen``: (trials, their records, whether a network's folds train with the mirror).
    (out-of-fold probabilities per member (rows of folds left out: zeros), the test
    probabilities averaged over members and the folds run, ([epochs per fold], [left-out rows
    per fold])). After each fold the epochs are re-planned at the measured pace (predictions
    and classical fits included), up or down: on float01 at 900 s folds planned at the trials'
    pace ran 1.4x slower, the third fold's networks got one epoch and the run ended 22 s over
    its budget; on digits8 at 300 s five folds kept to the first plan's 22 epochs left 21 s
    (7%) unused. The folds still to run are left out when they could not each train
    :func:`least_epochs`: at --quick on the demo (3,000 rows) two folds of 1 epoch scored 0.12
    and 0.27 out-of-fold and pulled the submission to 0.455 where the first fold read 0.71."""
    records = chosen[1]
    oof = np.zeros((len(records), len(y), ctx.ds.num_classes))
    test = np.zeros((len(ctx.ds.x_test), ctx.ds.num_classes))
    epochs_ran, left_out = [], []
    cap, least = ctx.opts.final_max_epochs or MAX_EPOCHS, least_epochs(ctx, records)
    end, spent = ctx.budget.deadline - PREDICT_MARGIN_S, 0.0
    for i, (_, va) in enumerate(fold_rows(y, k, ctx.opts.seed)):
        ctx.runner.ready()  # a worker's start-up is not the folds' pace
        if i:
            epochs = replanned(spent, sum(epochs_ran), end - time.monotonic(), k - i, cap)
            if epochs < least:
                log(f"final: folds {i + 1}-{k} left out: at the pace measured they could "
                    f"train {epochs} epochs each, fewer than {least}; the submission averages "
                    f"the {i} fold{'s' if i > 1 else ''} run, the estimate rests on "
                    "their left-out rows")  # fmt: skip
                break
        t0 = time.monotonic()
        ran, held, probs = train_one_fold(ctx, chosen, (k, i), epochs, which, end)
        spent += time.monotonic() - t0
        oof[:, va] = held
        test += probs
        epochs_ran.append(ran)
        left_out.append(va)
        acc = float((oof[:, va].mean(axis=0).argmax(1) == y[va]).mean())
        log(f"final: fold {i + 1}/{k}: {ran} epochs, out-of-fold accuracy {acc:.4f}")
    return oof, test / len(left_out), (epochs_ran, left_out)


def train_one_fold(ctx: FinalContext, chosen: tuple, fold: tuple[int, int], epochs: int,
                   which: list, end: float):  # fmt: skip
    """(epochs its networks ran, the members' probabilities of the left-out rows, the test
    probabilities averaged over the members) of fold ``fold`` = (k, i); each member a
    :class:`~pipeline.tune.fit.FitJob` from scratch, classical fits first (the networks' fits
    stop by ``end``); each epoch reports on as many left-out rows as a trial validates, so an
    epoch costs what the trial's did."""
    members, records = chosen[:2]
    order = sorted(range(len(records)), key=lambda j: not is_classical(records[j]))
    ran, held, test = 1, [None] * len(records), 0.0
    for j in order:
        r, t = records[j], members[j]
        job = FitJob(f"fold{fold[1] + 1}-t{t.number}", t.number, r, ctx.plan.search_rows, end,
                     fold=fold, mirror=chosen[2] and not is_classical(r), views=which[j],
                     epochs=epochs, least=0,
                     warmup=min(1.0, r.settings.warmup_epochs or 0.0),
                     seed=ctx.opts.seed + fold[1], progress=False,
                     progress_rows=len(ctx.splits.search[3]), width=sampled_width(t))  # fmt: skip
        out = ctx.runner.run(job)
        ran = ran if is_classical(r) else out.record.epochs_run
        held[j] = out.scored
        test = test + out.test / len(records)
    return ran, np.stack(held), test
