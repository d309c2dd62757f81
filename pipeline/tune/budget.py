"""Time: the budget's clock, the cost model (seconds per epoch of any entry), and the plan.

The plan (:class:`TunePlan`) holds every decision taken from the options, the data and the
machine before the first trial: how many rows and epochs a trial gets (multi-fidelity on CPU),
whether a final fit follows and how much of the budget it keeps. It is computed once and never
written back into the options.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.fsutil import atomic_write_json
from pipeline.options import TuneOptions

# of the budget, kept for the k folds (pipeline.tune.kfold): k fits of ~1.25x a trial's rows
# each. A starting point, not yet measured against other shares (bench/suite.py will).
KFOLD_SHARE = 0.5
# ... unless the search left beside the folds could not hold this many warm-start trials: at
# --quick --timeout 90 on 1,200 rows the folds kept 60 s and the search's 30 s completed no trial
SEARCH_HOLDS = 2

FINAL_RESERVE = 60.0  # seconds kept for predicting and writing, beyond any refit
EXIT_MARGIN = 30.0  # seconds of the budget left for process start-up and exit
# Multi-fidelity on CPU: trials train on a stratified slice of the training split (and are scored
# on a slice of the holdout), then the final stage trains the best configuration on the whole
# split for the time it has left. One full-data epoch of cnn7 takes ~150 s on 2 cores, so
# full-data trials would buy about one trial per hour.
SEARCH_ROWS_CPU = 12_000
SEARCH_EPOCHS_CPU = 8
FULL_EPOCHS = 15  # epochs per trial at most when trials see all rows
# of the budget, for the final fit (when on). In the first 3600 s default run on 2 CPU cores the
# search (45%) found nothing better than its warm start, while the final fit's accuracy was still
# rising at its last epoch: epochs of the final fit buy more than trials on a slice.
FINAL_SHARE = 0.65
KEEP_MODELS = 3  # trial models kept on disk (the top K by holdout accuracy)


@dataclass(frozen=True)
class Budget:
    """The command's deadline and the search's, as ``time.monotonic()`` seconds."""

    started: float
    deadline: float
    search_deadline: float

    @classmethod
    def start(cls, timeout: float, started: float | None = None) -> Budget:
        started = time.monotonic() if started is None else started
        # the budget bounds the whole command: keep a little for starting Python and shutting
        # down TensorFlow, which happen outside the command (16 s in the 3600 s benchmark)
        deadline = started + timeout - min(EXIT_MARGIN, 0.01 * timeout)
        return cls(started, deadline, deadline)

    def with_reserve(self, seconds: float) -> Budget:
        """The same budget with ``seconds`` kept back from the search for the final stage."""
        return Budget(self.started, self.deadline, self.deadline - seconds)

    def search_left(self) -> float:
        return self.search_deadline - time.monotonic()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@dataclass(frozen=True)
class TunePlan:
    """What this run does, decided from the options, the data's size and the device."""

    device: str
    timeout: float
    search_rows: int | None  # training images per trial; None: the whole split
    final_fit: bool  # train the best configuration on the whole split at the end
    max_epochs: int  # per trial
    reserve: float  # seconds of the budget kept for the final stage
    keep: int  # trial models kept on disk
    kfold: int = 0  # folds of every labelled row the final stage trains (0: none)
    warm_start: str = "resnet9s"  # the first trial's recipe (pipeline.search_space.WARM_STARTS)


def make_plan(opts: TuneOptions, n_labelled: int, device: str) -> TunePlan:
    """Resolve ``auto`` settings: on a CPU trials train on a slice and a final fit follows; on a
    GPU trials see every row and the top trials' own models are the final ensemble."""
    n_used = min(opts.limit, n_labelled) if opts.limit else n_labelled
    n_train = int(0.8 * n_used)
    rows = opts.search_rows
    if rows == "auto":
        rows = SEARCH_ROWS_CPU if device == "CPU" and n_train > 1.25 * SEARCH_ROWS_CPU else 0
    rows = int(rows)
    if rows >= n_train:
        rows = 0
    final = opts.final_fit == "on" or (opts.final_fit == "auto" and rows > 0)
    max_epochs = opts.max_epochs or (SEARCH_EPOCHS_CPU if rows else FULL_EPOCHS)
    # predicting and writing take seconds on small data: a short budget keeps most for trials
    reserve = min(FINAL_RESERVE, 0.2 * opts.timeout)
    if final and not opts.search_only:
        reserve = max(FINAL_RESERVE, FINAL_SHARE * opts.timeout)
    keep = KEEP_MODELS if opts.ensemble == "auto" else max(KEEP_MODELS, int(opts.ensemble))
    kfold = kfold_plan(opts, n_used, final)
    if kfold and not opts.search_only:  # the folds keep their own margin for predicting
        reserve = KFOLD_SHARE * opts.timeout
    return TunePlan(
        device=device,
        timeout=opts.timeout,
        search_rows=rows or None,
        final_fit=final,
        max_epochs=max_epochs,
        reserve=reserve,
        keep=keep,
        kfold=kfold,
        warm_start=opts.warm_start if opts.warm_start != "auto" else TunePlan.warm_start,
    )


def folds_fit(plan: TunePlan, opts: TuneOptions, cost: CostModel, n_labelled: int,
              model: str, n_test: int = 0) -> TunePlan:  # fmt: skip
    """The plan, without k-fold (its reserve back to the search) when not even MIN_FOLDS folds
    of ``model`` (the warm start) could each train MIN_FOLD_EPOCHS epochs in the reserve (the
    final stage then takes the most folds that fit, pipeline.tune.kfold.folds_that_fit). In the
    suite at 300 s, 6,000-row competitions kept half the budget for folds that could not run,
    and left it idle (160 of 300 s used); at 900 s fer48 gave its folds up because 5 did not
    fit (~503 s of 450) where 3 would have (~250 s). Each fold also predicts the ``n_test`` test
    images and its left-out rows in two views (plain and mirrored): at --quick on the demo
    (3,000 labelled rows, 10,000 test images) that was most of a fold."""
    from pipeline.tune.kfold import MIN_FOLD_EPOCHS, MIN_FOLDS

    if not plan.kfold or opts.kfold != "auto" or model not in cost.macs:
        return plan
    from pipeline.tune import log

    give_up = dataclasses.replace(plan, kfold=0, reserve=min(FINAL_RESERVE, 0.2 * opts.timeout))
    trial = plan.max_epochs * cost.epoch_seconds(model, int(0.64 * n_labelled),
                                                 int(0.16 * n_labelled))  # fmt: skip
    search = plan.timeout - plan.reserve - EXIT_MARGIN
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


def kfold_plan(opts: TuneOptions, n_labelled: int, final_fit: bool) -> int:
    """Folds for the final stage: ``--kfold k``; ``auto``: KFOLD on data up to KFOLD_MAX_ROWS
    labelled rows when no final fit or ``--refit`` trains instead; 0: none."""
    from pipeline.tune.kfold import KFOLD, KFOLD_MAX_ROWS

    if opts.kfold == "off" or opts.refit:
        return 0
    if opts.kfold != "auto":
        return int(opts.kfold)
    return KFOLD if not final_fit and n_labelled <= KFOLD_MAX_ROWS else 0


# A trial's batch is at most its rows over this many steps: an epoch of small data is not a
# handful of updates. Measured on a 1,437-row competition (919 training rows): the warm start at
# batch 256 made 4 steps an epoch and reached 0.31 validation accuracy after 15 epochs (60 steps).
# At 20 a 12,000-row slice keeps every searched batch (512: 23 steps).
MIN_STEPS_PER_EPOCH = 20
MIN_BATCH = 16


def batch_for_rows(batch_size: int, n_rows: int) -> int:
    """``batch_size``, halved until an epoch of ``n_rows`` rows makes at least
    :data:`MIN_STEPS_PER_EPOCH` steps (not below :data:`MIN_BATCH`)."""
    while batch_size > MIN_BATCH and n_rows / batch_size < MIN_STEPS_PER_EPOCH:
        batch_size //= 2
    return batch_size


# The cost formula, written once: the search (before each trial), the final fit and --refit
# (before and during training) all plan with it. A training step is a forward and a backward
# pass, about three forward passes, so scoring an image costs about a third of training on it.
FORWARD_SHARE = 1 / 3
# An epoch's wall time over its images at the measured training pace (the iterator's start, the
# callbacks, the first batches). In the 3600 s run a final-fit epoch took a median 42.8 s
# against 38.0 s planned (bench/README.md, "The cost formula"); the fit re-plans every epoch.
EPOCH_OVERHEAD = 1.1
# Prediction after training: the measured seconds per image of a forward pass with this margin,
# plus fixed seconds (loading the model, each view's dataset, writing the files). The same run
# kept back 25.4 s and used 8.3 s (best.json: final_fit.predict_kept_s / predict_used_s); at
# 900 s the suite's final fits kept 28.8 / 31.3 / 19.5 s and used 11.6 / 13.5 / 3.9 s (rgb32,
# fer48, float01), so 15 fixed seconds were spare every time, and on rgb32 they cost the 11th
# of its 37 s epochs (59 s of 900 unused). 5 s still leaves 6-8 s spare in each of those runs.
PREDICT_MARGIN = 1.25
PREDICT_FIXED_S = 5.0


def epoch_seconds(per_image: float, n_train: int, n_val: int) -> float:
    """Seconds of one epoch: ``n_train`` images trained at ``per_image`` seconds each, then
    ``n_val`` images scored."""
    return per_image * (n_train + n_val * FORWARD_SHARE) * EPOCH_OVERHEAD


def predict_seconds(per_forward_image: float, n_images: int) -> float:
    """Seconds to predict ``n_images`` images (all views counted) at the measured pace."""
    return n_images * per_forward_image * PREDICT_MARGIN + PREDICT_FIXED_S


@dataclass(frozen=True)
class CostModel:
    """Seconds per training image per multiply-accumulate on this machine, and each entry's
    MACs at the data's real shape: the time of an epoch of any entry before it runs. Entries
    that cannot be built for that shape are in ``problems`` with the reason; on a GPU, those
    that cannot take its settings (mixed precision) in ``gpu_problems``. A classical entry has
    no MACs: its one timed small fit, ``(seconds, rows)``, is in ``classical``."""

    seconds_per_image_per_mac: float
    macs: dict[str, int]
    problems: dict[str, str] = field(default_factory=dict)
    gpu_problems: dict[str, str] = field(default_factory=dict)
    classical: dict[str, tuple[float, int]] = field(default_factory=dict)

    def epoch_seconds(self, name: str, n_train: int, n_val: int) -> float:
        """Seconds of one epoch of a network; of the one fit (and scoring) of a classical entry."""
        if name in self.classical:
            from pipeline.classical import fit_seconds

            return fit_seconds(name, self.classical[name], n_train, n_val)
        return epoch_seconds(self.seconds_per_image_per_mac * self.macs[name], n_train, n_val)


def measure_machine(ds, models: list[str], cache: Path) -> tuple[dict, CostModel]:
    """(the device set-up, the cost model of ``models``): what the plan and the search need to
    know of this machine, measured where the trials train (the worker process)."""
    from pipeline.device import configure_runtime, gpu_problem

    runtime = configure_runtime()
    cost = cost_model(ds, models, cache)
    if runtime["device"] == "GPU":
        bad = {m: gpu_problem(m, ds.image_shape, ds.num_classes) for m in cost.macs}
        cost = CostModel(cost.seconds_per_image_per_mac, cost.macs, cost.problems,
                         {m: why for m, why in bad.items() if why}, cost.classical)  # fmt: skip
    return runtime, cost


def cost_key(runtime: dict, image_shape) -> str:
    """What a cached cost measurement holds for: the device, its cores, the image shape and the
    dtype policy (a bfloat16 CPU trains resnet9s ~1.2x faster under mixed_bfloat16)."""
    shape = "x".join(map(str, image_shape))
    return f"{runtime['device']}-{os.cpu_count()}-{shape}-{runtime.get('policy', 'float32')}"


def measure_cost(ds, cache: Path) -> float:
    """Seconds per training image per MAC, measured on this machine with cnn1 (cached)."""
    from pipeline.device import configure_runtime, fresh_session
    from pipeline.models import build_model, count_macs
    from pipeline.optimizers import make_optimizer
    from pipeline.training import make_dataset

    key = cost_key(configure_runtime(), ds.image_shape)
    if cache.exists():
        known = json.loads(cache.read_text())
        if known.get("key") == key:
            return float(known["seconds_per_image_per_mac"])

    fresh_session()
    model = build_model("cnn1", ds.image_shape, ds.num_classes)
    model.compile(optimizer=make_optimizer("adam", 1e-3), loss="categorical_crossentropy")
    n = min(len(ds.x_train), 256 * 8)
    data = make_dataset(ds.x_train[:n], ds.y_train[:n], ds.num_classes, 256)
    model.fit(data.take(2), epochs=1, verbose=0, shuffle=False)  # trace and warm up
    t0 = time.perf_counter()
    model.fit(data, epochs=1, verbose=0, shuffle=False)
    per_image = (time.perf_counter() - t0) / n
    macs = count_macs(model)
    result = {
        "key": key,
        "seconds_per_image": per_image,
        "macs": macs,
        "seconds_per_image_per_mac": per_image / macs,
    }
    atomic_write_json(cache, result)
    fresh_session()
    return per_image / macs


def entry_macs(name: str, ds) -> int:
    """Multiply-accumulates of one forward pass of entry ``name`` on one of the data's images
    (in the session as it is: :func:`cost_model` clears it once around all the entries)."""
    from pipeline.models import build_model, count_macs

    return count_macs(build_model(name, ds.image_shape, ds.num_classes))


def cost_model(ds, models: list[str], cache: Path) -> CostModel:
    """The cost model for ``models`` on this data; an entry that cannot be built for the data's
    shape (too small for its pooling, say) is recorded with its reason, not measured. The
    networks are built in one session, cleared before and after: clearing it around each one
    cost ~0.9 s an entry, 14 s of a 150 s --quick run's 16 entries."""
    from pipeline.classical import probe_seconds
    from pipeline.device import fresh_session
    from pipeline.models import get_entry

    macs, problems, classical = {}, {}, {}
    fresh_session()
    for m in models:
        try:
            if get_entry(m).classical:
                classical[m] = probe_seconds(m, ds.x_train, ds.y_train, ds.num_classes)
            else:
                macs[m] = entry_macs(m, ds)
        except Exception as exc:  # noqa: BLE001 - any failure to build is the reason
            problems[m] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
    fresh_session()
    return CostModel(measure_cost(ds, cache), macs, problems, classical=classical)
