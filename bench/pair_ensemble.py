"""Benchmark: what averaging two final models would give, from the probabilities runs left behind.

Two run folders of bench/ablate.py on the same seed (the same holdout, the same sealed rows):
each final fit's measured model is scored on the holdout (``final.holdout.npy``) and on the
sealed rows (``test_proba_measured.npy`` where a last stretch ran, else ``test_proba.npy``), then
the average of the two models' probabilities. Nothing is trained or predicted again, so it runs
in seconds; it prices a second final model before one is built.

    .venv/bin/python bench/pair_ensemble.py bench/results/ablate-STAMP-TAG-A-SEED \
        bench/results/ablate-STAMP-TAG-B-SEED
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from views import run_data  # noqa: E402


def measured(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(holdout, sealed) probabilities of a run's measured final model."""
    tune = next(run.glob("artifacts/*/tune"))
    sealed = tune / "test_proba_measured.npy"
    if not sealed.exists():
        sealed = tune / "test_proba.npy"
    return np.load(tune / "models" / "final.holdout.npy"), np.load(sealed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("first", type=Path)
    ap.add_argument("second", type=Path)
    args = ap.parse_args()
    if args.first.name.split("-")[-1] != args.second.name.split("-")[-1]:
        sys.exit("pair_ensemble.py: the two runs must share a seed (the folder names' last part)")
    _, _, split, truth = run_data(args.first)
    (ha, ta), (hb, tb) = measured(args.first), measured(args.second)
    print(f"| model | holdout ({len(split[3]):,}) | sealed ({len(truth):,}) |\n|---|---|---|")
    for name, h, t in ((args.first.name, ha, ta), (args.second.name, hb, tb),
                       ("average of the two", ha + hb, ta + tb)):  # fmt: skip
        print(
            f"| {name} | {(h.argmax(1) == split[3]).mean():.4f} "
            f"| {(t.argmax(1) == truth).mean():.4f} |"
        )
    both = (ha.argmax(1) == hb.argmax(1)).mean()
    print(f"\nthe two agree on {both:.4f} of the holdout")


if __name__ == "__main__":
    main()
