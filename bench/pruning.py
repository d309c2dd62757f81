"""Benchmark: configurations evaluated per CPU-hour, default pruner versus ``--pruner none``.

Runs ``./run.sh tune --search-only`` twice on the demo competition, same search space, seed and
budget, in fresh artifact folders, one after the other (never side by side: they would share the
cores). Counts the trials that got a verdict (complete or pruned) per hour of wall time on this
machine and the best holdout accuracy of each. Results go to bench/results/ (git-ignored).

    .venv/bin/python bench/pruning.py [--timeout 900] [--pruners halving,median,none] [tune args]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(pruner: str, timeout: float, extra: list[str]) -> dict:
    import optuna

    work = Path(tempfile.mkdtemp(prefix=f"prune-{pruner}-"))
    cmd = [str(ROOT / "run.sh"), "tune", "--search-only", "--no-report", "--pruner", pruner]
    cmd += ["--timeout", str(timeout), "--artifacts", str(work / "a"), *extra]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    db = next((work / "a").glob("*/optuna.db"))
    study = optuna.load_study(study_name=db.parent.name, storage=f"sqlite:///{db}")
    states = [t.state.name for t in study.trials]
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    # a trial the budget refused before training is not a configuration evaluated
    verdicts = sum(
        t.state.name in ("COMPLETE", "PRUNED") and not t.user_attrs.get("refused")
        for t in study.trials
    )
    return {
        "pruner": pruner,
        "exit": proc.returncode,
        "wall_seconds": round(wall, 1),
        "trials": {s: states.count(s) for s in set(states)},
        "configurations_per_hour": round(verdicts / (wall / 3600), 1),
        "best_val_accuracy": max((t.value for t in done), default=None),
        "log_tail": proc.stdout.splitlines()[-14:],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--pruners", default="halving,none", help="compared with the last one")
    a, extra = ap.parse_known_args()
    results = [run(p, a.timeout, extra) for p in a.pruners.split(",")]
    base = max(results[-1]["configurations_per_hour"], 1e-9)
    ratios = {r["pruner"]: round(r["configurations_per_hour"] / base, 2) for r in results[:-1]}
    summary = {"timeout": a.timeout, "extra": extra, "ratio": ratios, "runs": results}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"pruning-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(
        json.dumps(summary, indent=2)
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    for r in results:
        print(json.dumps({k: v for k, v in r.items() if k != "log_tail"}))


if __name__ == "__main__":
    main()
