"""Time: the budget's clock and the cost model (seconds per epoch of any entry, seconds to
predict; each network's parameters and activations, for :mod:`pipeline.memory`), measured once
per machine where the training runs (the worker process).

The device enters ``tune``'s decisions only through this model: a GPU is a machine whose epochs
cost less (:mod:`pipeline.tune.plan`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import memory
from pipeline.fsutil import atomic_write_json

EXIT_MARGIN = 30.0  # seconds of the budget left for process start-up and exit
# The cost formula, written once: the search (before each trial), the final fit and the folds
# (before and during training) all plan with it. A training step is a forward and a backward
# pass, about three forward passes, so scoring an image costs about a third of training on it.
FORWARD_SHARE = 1 / 3
# An epoch's wall time over its images at the measured training pace (the iterator's start, the
# callbacks, the first batches). In the 3600 s run a final-fit epoch took a median 42.8 s
# against 38.0 s planned (bench/README.md, "The cost formula"); the fit re-plans every epoch.
EPOCH_OVERHEAD = 1.1
# Prediction after training: the measured seconds per image of a forward pass with this margin,
# plus fixed seconds (loading the model, each view's dataset, writing the files). A 3600 s run
# kept back 25.4 s and used 8.3 s; at 900 s the suite's final fits kept 28.8 / 31.3 / 19.5 s and
# used 11.6 / 13.5 / 3.9 s (rgb32, fer48, float01) with 20 fixed seconds; 5 still leaves 6-8 s
# spare in each.
PREDICT_MARGIN = 1.25
PREDICT_FIXED_S = 5.0
# A trial's batch is at most its rows over this many steps: an epoch of small data is not a
# handful of updates. Measured on a 1,437-row competition (919 training rows): the warm start at
# batch 256 made 4 steps an epoch and reached 0.31 validation accuracy after 15 epochs (60 steps).
# At 20 a 12,000-row slice keeps every searched batch (512: 23 steps).
MIN_STEPS_PER_EPOCH = 20
MIN_BATCH = 16


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


def batch_for_rows(batch_size: int, n_rows: int) -> int:
    """``batch_size``, halved until an epoch of ``n_rows`` rows makes at least
    :data:`MIN_STEPS_PER_EPOCH` steps (not below :data:`MIN_BATCH`)."""
    while batch_size > MIN_BATCH and n_rows / batch_size < MIN_STEPS_PER_EPOCH:
        batch_size //= 2
    return batch_size


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
    that cannot be built for that shape are in ``problems`` with the reason; those that cannot
    train under the machine's dtype policy (mixed precision) in ``policy_problems``. A classical
    entry has no MACs: its one timed small fit, ``(seconds, rows)``, is in ``classical``."""

    seconds_per_image_per_mac: float
    macs: dict[str, int]
    problems: dict[str, str] = field(default_factory=dict)
    policy_problems: dict[str, str] = field(default_factory=dict)
    classical: dict[str, tuple[float, int]] = field(default_factory=dict)
    memory: dict[str, tuple[int, int]] = field(default_factory=dict)  # (params, activations)

    def fit_mib(self, name: str, batch_size: int, width: float = 1.0) -> float:
        """MiB a fit of network ``name`` at ``batch_size`` adds to its process (0: unknown);
        a ``width`` multiplier scales its parameters by width**2, its activations by width."""
        known = self.memory.get(name)
        scaled = known and (known[0] * width**2, known[1] * width)
        return memory.fit_mib(scaled or None, batch_size)

    def too_big(self, name: str, batch_size: int = MIN_BATCH, width: float = 1.0) -> bool:
        """Whether a fit of ``name`` at ``batch_size`` would not fit in a fresh worker."""
        return memory.too_big_for_fresh_worker(self.fit_mib(name, batch_size, width))

    def memory_batch(self, name: str, batch_size: int, width: float = 1.0) -> int:
        """``batch_size``, halved (not below MIN_BATCH) until a fresh worker holds the fit."""
        while batch_size > MIN_BATCH and self.too_big(name, batch_size, width):
            batch_size //= 2
        return batch_size

    def epoch_seconds(self, name: str, n_train: int, n_val: int) -> float:
        """Seconds of one epoch of a network; of the one fit (and scoring) of a classical entry."""
        if name in self.classical:
            from pipeline.classical import fit_seconds

            return fit_seconds(name, self.classical[name], n_train, n_val)
        return epoch_seconds(self.seconds_per_image_per_mac * self.macs[name], n_train, n_val)

    def predict_seconds(self, name: str, n_images: int) -> float:
        """Seconds for a network to predict ``n_images`` images (every view counted)."""
        per_image = self.seconds_per_image_per_mac * self.macs[name] * FORWARD_SHARE
        return predict_seconds(per_image, n_images)

    def scaled(self, factor: float) -> CostModel:
        """This machine ``factor`` times as fast (a benchmark's or a test's machine)."""
        classical = {m: (s / factor, n) for m, (s, n) in self.classical.items()}
        return CostModel(self.seconds_per_image_per_mac / factor, self.macs, self.problems,
                         self.policy_problems, classical, self.memory)  # fmt: skip


def measure_machine(ds, models: list[str], cache: Path, precision: str = "auto"):
    """(the device set-up, the cost model of ``models``): what the plan and the search need to
    know of this machine, measured where the training runs (the worker process)."""
    from pipeline.device import configure_runtime

    runtime = configure_runtime(precision)
    cost = cost_model(ds, models, cache)
    if runtime["policy"] != "float32":
        bad = {m: policy_problem(m, ds.image_shape, ds.num_classes) for m in cost.macs}
        cost = CostModel(cost.seconds_per_image_per_mac, cost.macs, cost.problems,
                         {m: why for m, why in bad.items() if why}, cost.classical,
                         cost.memory)  # fmt: skip
    return runtime, cost


def policy_problem(name: str, input_shape, num_classes: int) -> str | None:
    """Why entry ``name`` cannot train under the process's mixed dtype policy (the softmax kept
    float32), or None when it can: one forward pass must give finite float32 probabilities."""
    import keras
    import numpy as np

    from pipeline.device import fresh_session
    from pipeline.models import build_model

    try:
        fresh_session()
        model = build_model(name, input_shape, num_classes)
        out = model(np.zeros((2, *input_shape), dtype=np.float32), training=False)
        dtype = keras.backend.standardize_dtype(out.dtype)
        if dtype != "float32":
            return f"its output is {dtype} under mixed precision (softmax must stay float32)"
        if not np.isfinite(np.asarray(out)).all():
            return "non-finite output under mixed precision"
        return None
    except Exception as exc:  # noqa: BLE001 - any failure to build or run is the reason
        return f"{type(exc).__name__}: {str(exc)[:120]}"
    finally:
        fresh_session()


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
    atomic_write_json(cache, {"key": key, "seconds_per_image": per_image, "macs": macs,
                              "seconds_per_image_per_mac": per_image / macs})  # fmt: skip
    fresh_session()
    return per_image / macs


def cost_model(ds, models: list[str], cache: Path) -> CostModel:
    """The cost model for ``models`` on this data; an entry that cannot be built for the data's
    shape (too small for its pooling, say) is recorded with its reason, not measured. The
    networks are built in one session, cleared before and after: clearing it around each one
    cost ~0.9 s an entry, 14 s of a 150 s --quick run's 16 entries."""
    from pipeline.classical import probe_seconds
    from pipeline.device import fresh_session
    from pipeline.models import build_model, count_activations, count_macs, get_entry

    macs, problems, classical, memory = {}, {}, {}, {}
    fresh_session()
    for m in models:
        try:
            if get_entry(m).classical:
                classical[m] = probe_seconds(m, ds.x_train, ds.y_train, ds.num_classes)
            else:
                model = build_model(m, ds.image_shape, ds.num_classes)
                macs[m] = count_macs(model)
                memory[m] = (model.count_params(), count_activations(model))
        except Exception as exc:  # noqa: BLE001 - any failure to build is the reason
            problems[m] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
    fresh_session()
    return CostModel(measure_cost(ds, cache), macs, problems, classical=classical,
                     memory=memory)  # fmt: skip


@dataclass(frozen=True)
class MeasureTask:
    """Measure the machine where the training runs (a runner's task): (runtime, CostModel)."""

    models: tuple[str, ...]
    cache: str

    def run(self, env, report=None):
        return measure_machine(env.ds, list(self.models), Path(self.cache), env.opts.precision)
