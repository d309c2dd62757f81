"""Benchmark: the default ``tune`` at several budgets, this checkout next to another commit.

The demo's own test labels are held by the host, so this seals 10,000 of its 60,000 labelled
rows as a private test set (stratified, fixed seed): each path runs on the other 50,000 and its
submission is scored against the sealed labels, which no run ever sees. Printed per run: the
sealed accuracy (what a leaderboard would say), the run's own estimate of it and whether the run
calls that estimate honest, seconds used, and peak RSS (``/usr/bin/time -v``). Runs go one after
another, never side by side (they would share the 2 cores). Results: bench/results/ (git-ignored).

    .venv/bin/python bench/leaderboard.py [--budgets 900,1800,3600] [--baseline REV]
        [--paths new,baseline] [--seed 42] [--classes 0,2,3,4,6] [-- extra tune args]

Each path runs from a git worktree of a commit (``new``: HEAD; ``baseline``: ``--baseline REV``,
default the commit before the leaderboard work) with this checkout's virtual environment, so
edits made while a run goes on never reach it. ``--classes`` keeps only
those labels (e.g. the five hard garment classes).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "input" / "fashion-mnist"
OUT = ROOT / "bench" / "results"
BASELINE = "7bc42a3"  # main before the redesign and the leaderboard work
SEALED = 10_000


def sealed_competition(folder: Path, seed: int, classes: list[int] | None) -> Path:
    """The demo's labelled rows less a stratified sealed test set (labels kept in labels.csv)."""
    import numpy as np
    import pandas as pd
    from sklearn.model_selection import train_test_split

    comp = folder / "fashion-mnist"
    if (comp / "train.csv.gz").exists():
        return comp
    comp.mkdir(parents=True, exist_ok=True)
    df = pd.read_csv(DEMO / "train.csv.gz")
    if classes:
        df = df[df["Label"].isin(classes)].reset_index(drop=True)
    n_test = min(SEALED, len(df) // 6)
    rest, test = train_test_split(df, test_size=n_test, random_state=seed, stratify=df["Label"])
    test = test.sort_values("Id")
    rest.sort_values("Id").to_csv(comp / "train.csv.gz", index=False)
    test.drop(columns="Label").to_csv(comp / "testX.csv.gz", index=False)
    test[["Id", "Label"]].to_csv(folder / "labels.csv", index=False)
    pd.DataFrame({"Id": test["Id"], "Label": np.int64(test["Label"].iloc[0])}).to_csv(
        comp / "sample_submission.csv", index=False
    )
    return comp


def worktree(rev: str) -> Path:
    path = OUT / f"worktree-{rev}"
    if not path.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev],
                       check=True, capture_output=True)  # fmt: skip
        (path / ".venv").symlink_to(ROOT / ".venv")
    return path


def head() -> str:
    """The short hash of the committed HEAD (benchmarks run that, frozen in a worktree)."""
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.strip()


def peak_rss_kib(stderr: str) -> int | None:
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    return int(m.group(1)) if m else None


def run_one(checkout: Path, comp: Path, labels: Path, budget: int, work: Path, extra) -> dict:
    """One tune run, scored on the sealed labels. ``extra``: tune arguments, where a leading
    ``NAME=VALUE`` is an environment variable of the run (a policy constant read from the
    environment, for a benchmark)."""
    import os

    import pandas as pd

    env = dict(os.environ)
    while extra and re.fullmatch(r"[A-Z_]+=\S*", extra[0]):
        key, _, value = extra[0].partition("=")
        env[key], extra = value, extra[1:]

    cmd = ["/usr/bin/time", "-v", str(checkout / "run.sh"), "tune", "--data", str(comp),
           "--artifacts", str(work / "artifacts"), "--submissions", str(work / "subs"),
           "--timeout", str(budget), "--no-report", *extra]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=checkout, env=env)
    wall = time.monotonic() - t0
    (work / "log.txt").write_text(proc.stdout + proc.stderr)
    subs = sorted((work / "subs").glob("*.csv"))
    result = {"exit": proc.returncode, "wall_seconds": round(wall, 1),
              "peak_rss_mib": (peak_rss_kib(proc.stderr) or 0) // 1024}  # fmt: skip
    if subs:
        sub = pd.read_csv(subs[-1]).merge(pd.read_csv(labels), on="Id", suffixes=("", "_true"))
        result["sealed_accuracy"] = round(float((sub["Label"] == sub["Label_true"]).mean()), 4)
    best = next((work / "artifacts").glob("*/tune/best.json"), None)
    if best:
        b = json.loads(best.read_text())
        result["estimate"] = round(b.get("holdout_accuracy") or 0, 4)
        result["honest"] = bool(b.get("honest"))
        result["model"] = b.get("model")
        fit = b.get("final_fit") or {}
        result["final_epochs"] = fit.get("epochs_run")
        result["search_seconds"] = b.get("search_seconds")
        stretch = fit.get("stretch") or {}
        result["stretch_epochs"] = stretch.get("epochs_run")
        result["pseudo_rows"] = stretch.get("pseudo_rows")
        measured = best.parent / "test_proba_measured.npy"
        if measured.exists():  # the model the estimate scored, before its last stretch
            result["measured_sealed_accuracy"] = measured_score(measured, labels)
    trials = next((work / "artifacts").glob("*/tune/trials.csv"), None)
    if trials:
        result["trials"] = pd.read_csv(trials)["state"].value_counts().to_dict()
    return result


def measured_score(probs_file: Path, labels: Path) -> float:
    """Sealed accuracy of saved test probabilities (rows in the test file's order, sorted by Id
    as sealed_competition writes it; columns the sorted labels)."""
    import numpy as np
    import pandas as pd

    truth = pd.read_csv(labels).sort_values("Id")["Label"].to_numpy()
    classes = np.unique(truth)
    return round(float((classes[np.load(probs_file).argmax(1)] == truth).mean()), 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budgets", default="900,1800,3600")
    ap.add_argument("--paths", default="new,baseline")
    ap.add_argument("--baseline", default=BASELINE)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--classes", help="keep only these labels, e.g. 0,2,3,4,6")
    ap.add_argument("extra", nargs="*", help="extra tune arguments (after --)")
    args = ap.parse_args()
    classes = [int(c) for c in args.classes.split(",")] if args.classes else None
    tag = "all" if not classes else "c" + "".join(map(str, classes))
    data = sealed_competition(OUT / f"sealed-{tag}-{args.seed}", args.seed, classes)
    labels = data.parent / "labels.csv"
    stamp = time.strftime("%Y%m%dT%H%M%S")
    commit = head()
    rows = []
    for budget in [int(b) for b in args.budgets.split(",")]:
        for path in args.paths.split(","):
            # the committed code, frozen: edits made while a run goes on never reach it
            checkout = worktree(commit if path == "new" else args.baseline)
            work = OUT / f"lb-{stamp}-{tag}-{path}-{budget}"
            r = run_one(checkout, data, labels, budget, work, args.extra)
            r.update(path=path, budget=budget, seed=args.seed, classes=tag,
                     commit=commit if path == "new" else args.baseline)  # fmt: skip
            rows.append(r)
            print(json.dumps(r), flush=True)
            (OUT / f"leaderboard-{stamp}.json").write_text(json.dumps(rows, indent=2))
    print(f"\n{'path':<9}{'budget':>7}{'sealed':>8}{'estimate':>9}{'honest':>7}{'seconds':>8}"
          f"{'RSS MiB':>8}  model")  # fmt: skip
    for r in rows:
        print(f"{r['path']:<9}{r['budget']:>7}{r.get('sealed_accuracy', 0):>8.4f}"
              f"{r.get('estimate', 0):>9.4f}{str(r.get('honest', '-')):>7}"
              f"{r['wall_seconds']:>8.0f}{r['peak_rss_mib']:>8}  {r.get('model')}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
