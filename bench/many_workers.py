"""Benchmark: one tune study in a real PostgreSQL server.

1. Configurations that got a verdict (complete or pruned) in a window of ``--window`` seconds
   (default 900: a quarter of an hour) with 1 search worker, then with 2 workers side by side, on
   this machine (same study settings, fresh study each).
2. Wall time per trial with SQLite and with PostgreSQL: the same short trials (lenet5, 1 epoch,
   2,000 rows, no pruning) in each storage, one after the other; the median of the trials'
   durations and the run's wall time.

Starts its own throwaway PostgreSQL server (tests/pg_server.py). Runs from a frozen worktree of
HEAD; results in bench/results/ (git-ignored).

    .venv/bin/python bench/many_workers.py [--window 900] [--trials 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from leaderboard import OUT, head, worktree  # noqa: E402
from pg_server import Server  # noqa: E402


def spawn(checkout: Path, art: Path, *args: str) -> subprocess.Popen:
    cmd = [str(checkout / "run.sh"), "tune", "--artifacts", str(art), "--submissions",
           str(art / "subs"), "--no-report", *args]  # fmt: skip
    log = open(art.with_suffix(".log"), "w")  # noqa: SIM115 - closed with the process
    art.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cmd, cwd=checkout, stdout=log, stderr=subprocess.STDOUT)


def verdicts(url: str, study: str) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = optuna.load_study(study_name=study, storage=url)
    states = [t.state.name for t in s.get_trials()]
    secs = [(t.datetime_complete - t.datetime_start).total_seconds() for t in s.get_trials()
            if t.datetime_complete and t.state.name in ("COMPLETE", "PRUNED")]  # fmt: skip
    return {
        "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
        "verdicts": states.count("COMPLETE") + states.count("PRUNED"),
        "median_trial_seconds": round(statistics.median(secs), 2) if secs else None,
        "best": round(s.best_value, 4) if states.count("COMPLETE") else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--window", type=int, default=900)
    ap.add_argument("--trials", type=int, default=20)
    args = ap.parse_args()
    checkout = worktree(head())
    stamp = time.strftime("%Y%m%dT%H%M%S")
    server = Server().start()
    rows = []
    try:
        # 1. one worker vs two, the default search on the demo (trials on 12,000-row slices)
        for workers in (1, 2):
            study = f"w{workers}"
            procs = [spawn(checkout, OUT / f"workers-{stamp}-{workers}-{i}", "--search-only",
                           "--storage", server.url, "--study", study,
                           "--timeout", str(args.window)) for i in range(workers)]  # fmt: skip
            t0 = time.monotonic()
            for p in procs:
                p.wait()
            wall = round(time.monotonic() - t0)
            row = {"test": "workers", "workers": workers, "window_s": args.window,
                   "wall_s": wall, **verdicts(server.url, study)}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
        # 2. the same short trials in SQLite and in PostgreSQL
        short = ["--models", "lenet5", "--max-epochs", "1", "--limit", "2000", "--pruner", "none",
                 "--trials", str(args.trials), "--search-only", "--timeout", "3000"]  # fmt: skip
        for name in ("sqlite", "postgresql"):
            art = OUT / f"storage-{stamp}-{name}"
            storage = ["--storage", server.url, "--study", "short"] if name == "postgresql" else []
            t0 = time.monotonic()
            spawn(checkout, art, *short, *storage).wait()
            url = server.url if storage else f"sqlite:///{art / 'fashion-mnist' / 'optuna.db'}"
            study = "short" if storage else "fashion-mnist"
            row = {"test": "storage", "storage": name, "trials": args.trials,
                   "wall_s": round(time.monotonic() - t0, 1), **verdicts(url, study)}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        server.stop()
        (OUT / f"many-workers-{stamp}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
