"""Benchmark: ``./run.sh tune`` with defaults on the demo competition (fresh artifacts).

Reports holdout accuracy reached and wall time; results go to bench/results/ (git-ignored).

    .venv/bin/python bench/tune_default.py [extra tune args, e.g. --pruner none --timeout 1800]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    extra = sys.argv[1:]
    work = Path(tempfile.mkdtemp(prefix="tune-bench-"))
    cmd = [
        str(ROOT / "run.sh"),
        "tune",
        "--artifacts",
        str(work / "artifacts"),
        "--submissions",
        str(work / "submissions"),
        *extra,
    ]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (out_dir / f"tune-{stamp}.log").write_text(proc.stdout + proc.stderr)
    best_file = next((work / "artifacts").glob("*/tune/best.json"), None)
    best = json.loads(best_file.read_text()) if best_file else {}
    trials = next((work / "artifacts").glob("*/tune/trials.csv"), None)
    n_trials = {}
    if trials:
        import pandas as pd

        n_trials = pd.read_csv(trials)["state"].value_counts().to_dict()
    result = {
        "args": extra,
        "exit": proc.returncode,
        "wall_seconds": round(wall, 1),
        "holdout_accuracy": best.get("holdout_accuracy"),
        "best_trial_validation_accuracy": best.get(
            "best_trial_validation_accuracy", best.get("best_trial_holdout_accuracy")
        ),
        "ensemble": best.get("ensemble"),
        "model": best.get("model"),
        "trials": n_trials,
    }
    (out_dir / f"tune-{stamp}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
