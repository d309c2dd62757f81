"""Benchmark: reading a FER2013-sized competition as pixel strings versus the same pixels as
columns.

Writes two folders with the same 48x48 images (default 35,000 train and 3,500 test rows): one
with ``emotion,pixels`` (one column of space-separated values, a Usage column) and one with
``label,pixel0..pixel2303``; then parses each (no cache) in alternation, each in a fresh process,
and prints the median seconds and peak RSS of each and their ratio.

    .venv/bin/python bench/parse_speed.py [--rows 35000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write(folder: Path, rows: int, test_rows: int) -> tuple[Path, Path]:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(rows + test_rows, 48 * 48), dtype=np.uint8)
    y = rng.integers(0, 7, size=rows)
    fer, cols = folder / "fer", folder / "columns"
    fer.mkdir(parents=True)
    cols.mkdir(parents=True)
    strings = [" ".join(map(str, r)) for r in x]
    pd.DataFrame({"emotion": y, "pixels": strings[:rows], "Usage": "Training"}).to_csv(
        fer / "train.csv", index=False
    )
    pd.DataFrame({"id": range(test_rows), "pixels": strings[rows:]}).to_csv(
        fer / "test.csv", index=False
    )
    pix = [f"pixel{i}" for i in range(48 * 48)]
    train = pd.DataFrame(x[:rows], columns=pix)
    train.insert(0, "label", y)
    train.to_csv(cols / "train.csv", index=False)
    test = pd.DataFrame(x[rows:], columns=pix)
    test.insert(0, "id", range(test_rows))
    test.to_csv(cols / "test.csv", index=False)
    for f, target in ((fer, "emotion"), (cols, "label")):
        pd.DataFrame({"id": range(test_rows), target: 0}).to_csv(
            f / "sample_submission.csv", index=False
        )
    return fer, cols


CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from pipeline.data import load_competition
t0 = time.perf_counter()
ds = load_competition({folder!r})
seconds = time.perf_counter() - t0
print(json.dumps({{"seconds": seconds, "shape": list(ds.image_shape),
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def parse_once(folder: Path) -> dict:
    code = CHILD.format(root=str(ROOT), folder=str(folder))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=35_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="parse-") as tmp:
        fer, cols = write(Path(tmp), args.rows, args.rows // 10)
        size = {p.name: sum(f.stat().st_size for f in p.iterdir()) / 2**20 for p in (fer, cols)}
        runs: dict[str, list[dict]] = {"fer": [], "columns": []}
        for _ in range(args.repeats):
            runs["fer"].append(parse_once(fer))
            runs["columns"].append(parse_once(cols))
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    for k, v in runs.items():
        peak = max(r["peak_mib"] for r in v)
        each = ", ".join(f"{r['seconds']:.2f}" for r in v)
        print(f"{k:<8} {size[k]:6.0f} MiB of CSV: median {med[k]:6.2f} s ({each}), "
              f"peak RSS {peak:.0f} MiB, shape {v[0]['shape']}")  # fmt: skip
    print(f"pixel strings / columns: {med['fer'] / med['columns']:.2f}x the time")


if __name__ == "__main__":
    main()
