"""Benchmark: paired ablations of ``tune`` on the demo over several seeds (airbench-style table).

Each seed seals a different stratified 10,000 of the demo's labelled rows (bench/leaderboard.py's
sealed_competition), and every variant runs on that same competition, one after another, from a
frozen worktree of HEAD. A variant is a name and the tune arguments it adds, ``name=ARGS``
(``base=`` for none). Per variant: the mean sealed accuracy, its spread (min-max over seeds), and
the mean paired gain over the first variant with its spread; a change is kept only when its mean
gain exceeds that spread. Rows go to bench/results/ablate-<stamp>.json as they finish.

    .venv/bin/python bench/ablate.py --seeds 1,2,3 --timeout 900 \\
        --variant base= --variant tta=--tta [--classes 0,2,3,4,6]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from leaderboard import OUT, head, run_one, sealed_competition, worktree  # noqa: E402


def variants(specs: list[str]) -> list[tuple[str, list[str]]]:
    out = []
    for spec in specs:
        name, sep, args = spec.partition("=")
        if not sep or not name:
            raise SystemExit(f"ablate: --variant {spec!r}: write it as NAME=ARGS (base= for none)")
        out.append((name, shlex.split(args)))
    return out


def summary(rows: list[dict], names: list[str]) -> str:
    """A row per variant: mean sealed, min-max, mean paired gain over the first, its spread."""
    by = {(r["variant"], r["seed"]): r.get("sealed_accuracy") for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    lines = ["| variant | sealed mean | min-max | gain over first (mean, min-max) | seeds |",
             "|---|---|---|---|---|"]  # fmt: skip
    for name in names:
        got = [by[(name, s)] for s in seeds if by.get((name, s)) is not None]
        both = [s for s in seeds if None not in (by.get((name, s)), by.get((names[0], s)))]
        pairs = [by[(name, s)] - by[(names[0], s)] for s in both]
        if not got:
            lines.append(f"| {name} | - | - | - | 0 |")
            continue
        gain = (f"{sum(pairs) / len(pairs):+.4f} ({min(pairs):+.4f}..{max(pairs):+.4f})"
                if pairs and name != names[0] else "-")  # fmt: skip
        lines.append(f"| {name} | {sum(got) / len(got):.4f} | {min(got):.4f}-{max(got):.4f} | "
                     f"{gain} | {len(got)} |")  # fmt: skip
    return "\n".join(lines)


def stretch_summary(rows: list[dict]) -> str:
    """Per variant with a last stretch: the sealed score of the submitted model over the one
    the estimate measured (before the stretch), paired within each run."""
    lines = []
    for name in dict.fromkeys(r["variant"] for r in rows):
        pairs = [r["sealed_accuracy"] - r["measured_sealed_accuracy"] for r in rows
                 if r["variant"] == name and r.get("measured_sealed_accuracy") is not None
                 and r.get("sealed_accuracy") is not None]  # fmt: skip
        if pairs:
            mean = sum(pairs) / len(pairs)
            spread = f"({min(pairs):+.4f}..{max(pairs):+.4f})"
            lines.append(f"{name}: the stretch over the measured model {mean:+.4f} {spread} "
                         f"over {len(pairs)} runs")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--variant", action="append", required=True, help="NAME=ARGS")
    ap.add_argument("--classes", help="keep only these labels, e.g. 0,2,3,4,6")
    args = ap.parse_args()
    chosen = variants(args.variant)
    classes = [int(c) for c in args.classes.split(",")] if args.classes else None
    tag = "all" if not classes else "c" + "".join(map(str, classes))
    stamp, commit = time.strftime("%Y%m%dT%H%M%S"), head()
    checkout = worktree(commit)  # frozen: edits made while runs go on never reach them
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        data = sealed_competition(OUT / f"sealed-{tag}-{seed}", seed, classes)
        for name, extra in chosen:
            work = OUT / f"ablate-{stamp}-{tag}-{name}-{seed}"
            r = run_one(checkout, data, data.parent / "labels.csv", args.timeout, work, extra)
            r.update(variant=name, args=extra, seed=seed, budget=args.timeout, commit=commit)
            rows.append(r)
            print(json.dumps(r), flush=True)
            (OUT / f"ablate-{stamp}.json").write_text(json.dumps(rows, indent=2))
    print(summary(rows, [n for n, _ in chosen]))
    print(stretch_summary(rows))


if __name__ == "__main__":
    sys.exit(main())
