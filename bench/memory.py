"""Benchmark: resident memory across many trials in one process, and where a tune's peak goes.

Runs N short trials of the default search space (same objective, study, pruner and clean-up as
``tune``: ``keras.backend.clear_session()`` + ``gc.collect()`` between trials) in this process
and prints the RSS after each, then the growth from trial 5 to trial N. ``--stages`` instead
prints the RSS after each stage of a tune on the demo (parse, split, cost model, a trial, the
final fit's data, prediction), each in a fresh process, to show where memory goes.

    .venv/bin/python bench/memory.py [--trials 30] [--rows 3000] [--epochs 1] [--stages]
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


def rss_mib() -> float:
    """This process's resident set size now (VmRSS), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trials(n: int, rows: int, epochs: int) -> None:
    import optuna

    from pipeline import device
    from pipeline.data import holdout, load_competition, search_split
    from pipeline.search_space import DEFAULT_MODELS
    from pipeline.tune.budget import Budget, cost_model
    from pipeline.tune.objective import Objective
    from pipeline.tune.study import make_pruner, make_sampler

    device.quiet()
    device.configure_runtime()
    ds = load_competition(ROOT / "input" / "fashion-mnist", cache_dir=ROOT / "artifacts" / "cache")
    split = holdout(ds, 42, rows)
    data = search_split(split, None, 42)
    work = Path(tempfile.mkdtemp(prefix="mem-"))
    models = [m for m in DEFAULT_MODELS if m not in ("alexnet", "vgg16")]
    cost = cost_model(ds, models, work / "cost.json")
    budget = Budget.start(10**6)
    objective = Objective(ds, data, models, epochs, budget, cost, work / "models", 42)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(42),
                                pruner=make_pruner("none", epochs))  # fmt: skip
    print(f"start: RSS {rss_mib():.0f} MiB (data, runtime and cost model loaded)", flush=True)
    seen: dict[int, float] = {}

    def after(study, trial) -> None:
        gc.collect()
        seen[trial.number + 1] = rss_mib()
        model = trial.params.get("model")
        print(f"trial {trial.number + 1:>3} {model:<12} {trial.state.name:<8} "
              f"RSS {seen[trial.number + 1]:7.0f} MiB", flush=True)  # fmt: skip

    t0 = time.monotonic()
    study.optimize(objective, n_trials=n, callbacks=[after], catch=(Exception,),
                   gc_after_trial=True)  # fmt: skip
    a, b = seen.get(5), seen.get(n)
    marks = " / ".join(f"{seen[k]:.0f}" for k in (1, 5, 10, 20, 30) if k in seen)
    print(f"\n{n} trials in {time.monotonic() - t0:.0f} s; RSS after trials 1/5/10/20/30: "
          f"{marks} MiB")  # fmt: skip
    if a and b:
        print(f"growth from trial 5 to {n}: {100 * (b - a) / a:+.1f}% (peak {peak_mib():.0f} MiB)")


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--rows", type=int, default=3000, help="labelled rows used (a slice)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--stages", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if args.stages:
        stages()
    else:
        trials(args.trials, args.rows, args.epochs)


if __name__ == "__main__":
    main()
