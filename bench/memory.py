"""Benchmark: resident memory across many trials, and where a tune's peak goes.

Runs N short trials of the default search space (same objective, study, pruner and clean-up as
``tune``) and prints the RSS after each, then the growth from trial 5 to trial N: with
``--isolate none`` in this process (``keras.backend.clear_session()`` + ``gc.collect()`` between
trials), with ``--isolate process`` (tune's default) in worker processes, whose RSS it prints
too. ``--fits`` measures what one fit adds to its process (peak RSS over the RSS before
building; each fit in its own process) beside the cost model's estimate
(:meth:`pipeline.tune.cost.CostModel.fit_mib`), for the fits the constants there cite.
``--stages`` instead prints the RSS after each stage of a tune on the demo (parse, split,
runtime, an epoch on the trial data and on the whole split, prediction), to show where memory
goes.

    .venv/bin/python bench/memory.py [--trials 30] [--rows 3000] [--epochs 1]
        [--isolate process|none] [--stages] [--fits]
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.memory import rss_mib  # noqa: E402 - after the path


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trials(n: int, rows: int, epochs: int, isolate: str) -> None:
    from pipeline import artifacts, device
    from pipeline.data import load
    from pipeline.data.split import run_splits
    from pipeline.options import TuneOptions
    from pipeline.search_space import DEFAULT_MODELS
    from pipeline.storage import create_or_load_study
    from pipeline.tune.cost import Budget, cost_model
    from pipeline.tune.objective import Objective
    from pipeline.tune.plan import TunePlan
    from pipeline.tune.study import make_pruner, make_sampler
    from pipeline.worker import InProcess, Worker

    device.quiet()
    device.configure_runtime()
    work = Path(tempfile.mkdtemp(prefix="mem-"))
    opts = TuneOptions(data=ROOT / "input" / "fashion-mnist", artifacts=work, limit=rows,
                       pruner="none", max_epochs=epochs)  # fmt: skip
    plan = TunePlan(1e6, None, "trials", epochs, 0.0, 3)
    ds = load(opts)
    data = run_splits(ds, opts, None).search
    models = [m for m in DEFAULT_MODELS if m not in ("alexnet", "vgg16")]
    cost = cost_model(ds, models, work / "cost.json")
    url = f"sqlite:///{work / 'optuna.db'}"
    study = create_or_load_study(url, "memory", make_sampler(42), make_pruner("none", epochs))
    worker = Worker(opts) if isolate == "process" else None
    models_dir = artifacts.tune_dir(work, ds.competition) / "models"
    objective = Objective(data, models, plan, Budget.start(10**6), cost, models_dir, 42,
                          worker or InProcess(opts, ds))  # fmt: skip
    print(f"start: RSS {rss_mib():.0f} MiB (data, runtime and cost model loaded); trials "
          f"{'in a worker process' if worker else 'in this process'}", flush=True)  # fmt: skip
    seen: dict[int, float] = {}
    child: dict[int, float] = {}

    def after(study, trial) -> None:
        gc.collect()
        k = trial.number + 1
        seen[k] = rss_mib()
        extra = ""
        if worker is not None and worker.process is not None:
            child[k] = rss_mib(worker.process.pid)
            extra = f", worker {child[k]:5.0f} MiB (task {worker.tasks} of its batch)"
        model = trial.params.get("model")
        print(f"trial {k:>3} {model:<12} {trial.state.name:<8} RSS {seen[k]:5.0f} MiB{extra}",
              flush=True)  # fmt: skip

    t0 = time.monotonic()
    try:
        study.optimize(objective, n_trials=n, callbacks=[after], catch=(Exception,),
                       gc_after_trial=True)  # fmt: skip
    finally:
        if worker is not None:
            worker.close()
    marks = " / ".join(f"{seen[k]:.0f}" for k in (1, 5, 10, 20, 30) if k in seen)
    print(f"\n{n} trials in {time.monotonic() - t0:.0f} s; RSS after trials 1/5/10/20/30: "
          f"{marks} MiB")  # fmt: skip
    a, b = seen.get(5), seen.get(n)
    if a and b:
        print(f"growth from trial 5 to {n}: {100 * (b - a) / a:+.1f}% (peak {peak_mib():.0f} MiB)")
    if child:
        print(f"worker processes: at most {max(child.values()):.0f} MiB")


def stages() -> None:
    """RSS after each stage of a tune on the demo, parsing from the CSV files (no cache)."""
    import numpy as np

    from pipeline import device
    from pipeline.data import holdout, load_competition, search_split

    device.quiet()
    print(f"python + pipeline: {rss_mib():.0f} MiB")
    ds = load_competition(ROOT / "input" / "fashion-mnist")
    print(f"parsed the CSVs (no cache): {rss_mib():.0f} MiB now, peak {peak_mib():.0f} MiB")
    device.configure_runtime()
    print(f"TensorFlow loaded: {rss_mib():.0f} MiB")
    split = holdout(ds, 42)
    data = search_split(split, 12_000, 42)
    print(f"holdout + trial split: {rss_mib():.0f} MiB")
    from pipeline.models import build_model
    from pipeline.predict import predict_proba
    from pipeline.training import TrainSettings, fit

    s = TrainSettings("sgd-nesterov", 0.1, 0.9, 256, 1, True, augment="crop+flip")
    r = fit(build_model("resnet9s", ds.image_shape, 10), s, data, 10, verbose=0)
    print(f"one resnet9s epoch on 12,000 rows: {rss_mib():.0f} MiB, peak {peak_mib():.0f} MiB")
    r = fit(r.model, s, split, 10, verbose=0)
    print(f"one resnet9s epoch on 48,000 rows: {rss_mib():.0f} MiB, peak {peak_mib():.0f} MiB")
    p = predict_proba(r.model, ds.x_test, flip=True)
    print(f"test prediction {p.shape} ({p.dtype}): {rss_mib():.0f} MiB, peak {peak_mib():.0f} MiB")
    del np


# (entry, image shape, batch, optimizer): the fits behind pipeline.tune.cost's FIT_* constants
FITS = [("alexnet", "8x8x1", 32, "adam"), ("vgg16", "8x8x1", 32, "adam"),
        ("vgg16", "8x8x1", 32, "sgd"), ("resnet9s", "28x28x1", 512, "sgd-nesterov"),
        ("resnet9s", "28x28x1", 32, "sgd-nesterov"), ("cnn7", "28x28x1", 32, "adam"),
        ("cnn7", "28x28x1", 256, "adam"), ("resnet20", "28x28x1", 128, "adam"),
        ("alexnet", "28x28x1", 64, "sgd"), ("vgg16", "48x48x1", 32, "adam"),
        ("resnet9s", "48x48x1", 256, "sgd-nesterov"), ("resnet9s", "32x32x3", 512, "sgd-nesterov"),
        ("cnn5", "28x28x1", 32, "adam")]  # fmt: skip


def one_fit(name: str, shape: str, batch: int, optimizer: str, rows: int = 2000) -> None:
    """One epoch of ``name`` on random images of ``shape`` after a warm-up fit (TensorFlow's
    runtime loaded); prints a JSON line: measured peak growth and the cost model's estimate."""
    import json
    import threading

    import numpy as np

    from pipeline import device
    from pipeline.models import build_model, count_activations
    from pipeline.training import TrainSettings, fit
    from pipeline.tune.cost import CostModel

    device.quiet()
    device.configure_runtime()
    dims = tuple(int(v) for v in shape.split("x"))
    x = np.random.rand(rows, *dims).astype("float32")
    y = np.random.randint(0, 10, rows)
    warm = TrainSettings("adam", 1e-3, 0.9, 32, 1, True)
    fit(build_model("cnn1", dims, 10), warm, (x[:200], y[:200], x[:50], y[:50]), 10, verbose=0)
    device.fresh_session()
    gc.collect()
    base = peak = rss_mib()
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mib())
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    model = build_model(name, dims, 10)  # its build counts: the estimate covers it
    cost = CostModel(1.0, {}, memory={name: (model.count_params(), count_activations(model))})
    lr = 1e-3 if optimizer == "adam" else 0.05
    settings = TrainSettings(optimizer, lr, 0.9, batch, 1, True, augment="crop")
    fit(model, settings, (x, y, x[:300], y[:300]), 10, verbose=0)
    done.set()
    params, activations = cost.memory[name]
    print(json.dumps(dict(model=name, shape=shape, batch=batch, optimizer=optimizer,
                          params=params, activations=activations, before_mib=round(base),
                          measured_mib=round(peak - base),
                          estimate_mib=round(cost.fit_mib(name, batch)))), flush=True)  # fmt: skip


def fits() -> None:
    """Every fit of FITS in its own process (a fresh TensorFlow), one JSON line each."""
    import subprocess

    for name, shape, batch, optimizer in FITS:
        code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench.memory import one_fit; "
                f"one_fit({name!r}, {shape!r}, {batch}, {optimizer!r})")  # fmt: skip
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        print(lines[-1] if lines else f"{name} {shape}: failed: {out.stderr[-300:]}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--rows", type=int, default=3000, help="labelled rows used (a slice)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--stages", action="store_true")
    ap.add_argument("--isolate", choices=["process", "none"], default="process")
    ap.add_argument("--fits", action="store_true", help="what one fit adds, beside the estimate")
    args = ap.parse_args()
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if args.fits:
        fits()
    elif args.stages:
        stages()
    else:
        trials(args.trials, args.rows, args.epochs, args.isolate)


if __name__ == "__main__":
    main()
