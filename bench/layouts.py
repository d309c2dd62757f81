"""Benchmark: ``tune`` on other layouts made from the demo's images.

- FER2013-style: ``emotion,pixels,Usage`` / ``id,pixels``, the 28x28 images scaled to 48x48 and
  written as one column of space-separated values.
- CIFAR-style RGB: ``label,pixel0..pixel3071``, the images padded to 32x32 and tinted with a
  random colour per image (so the three channels differ; colour says nothing about the class).

Each is written from the first N labelled demo rows (a holdout-style test set is cut from them
so the accuracy is measured on labels no run saw), then ``tune`` runs on it (``--quick`` by
default, or ``--timeout S``) from a frozen worktree of HEAD; prints the run's honest estimate and
the accuracy on the cut-off labels, the shape it inferred and the seconds.

    .venv/bin/python bench/layouts.py [--rows 6000] [--timeout 0 (= --quick)]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from leaderboard import OUT, head, worktree  # noqa: E402


def demo_rows(n: int):
    import numpy as np
    import pandas as pd

    df = pd.read_csv(ROOT / "input" / "fashion-mnist" / "train.csv.gz", nrows=n)
    x = df.filter(like="pixel").to_numpy(np.uint8).reshape(-1, 28, 28)
    return x, df["Label"].to_numpy()


def write(folder: Path, kind: str, x, y) -> Path:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    n_test = len(y) // 6
    comp = folder / kind
    comp.mkdir(parents=True, exist_ok=True)
    if kind == "fer":
        idx = np.arange(48) * 28 // 48
        big = x[:, idx][:, :, idx]  # nearest-neighbour 28 -> 48
        cells = [" ".join(map(str, r)) for r in big.reshape(len(y), -1)]
        train = pd.DataFrame({"emotion": y[n_test:], "pixels": cells[n_test:],
                              "Usage": "Training"})  # fmt: skip
        test = pd.DataFrame({"id": np.arange(n_test), "pixels": cells[:n_test]})
        target = "emotion"
    else:
        padded = np.pad(x, ((0, 0), (2, 2), (2, 2)))
        tint = rng.uniform(0.4, 1.0, size=(len(y), 1, 1, 3))
        rgb = np.rint(padded[..., None] * tint).astype(np.uint8).reshape(len(y), -1)
        pix = [f"pixel{i}" for i in range(rgb.shape[1])]
        train = pd.DataFrame(rgb[n_test:], columns=pix)
        train.insert(0, "label", y[n_test:])
        test = pd.DataFrame(rgb[:n_test], columns=pix)
        test.insert(0, "id", np.arange(n_test))
        target = "label"
    train.to_csv(comp / "train.csv", index=False)
    test.to_csv(comp / "test.csv", index=False)
    pd.DataFrame({"id": np.arange(n_test), target: 0}).to_csv(
        comp / "sample_submission.csv", index=False
    )
    pd.DataFrame({"id": np.arange(n_test), "true": y[:n_test]}).to_csv(
        folder / f"{kind}-labels.csv", index=False
    )
    return comp


def main() -> None:
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=6000)
    ap.add_argument("--timeout", type=int, default=0, help="0: --quick")
    args = ap.parse_args()
    checkout = worktree(head())
    stamp = time.strftime("%Y%m%dT%H%M%S")
    folder = OUT / f"layouts-{stamp}"
    x, y = demo_rows(args.rows)
    budget = ["--quick"] if not args.timeout else ["--timeout", str(args.timeout)]
    for kind in ("fer", "rgb"):
        comp = write(folder, kind, x, y)
        art = folder / f"{kind}-art"
        t0 = time.monotonic()
        proc = subprocess.run(
            [str(checkout / "run.sh"), "tune", "--data", str(comp), "--artifacts", str(art),
             "--submissions", str(art / "subs"), "--no-report", *budget],
            capture_output=True, text=True, cwd=checkout,
        )  # fmt: skip
        wall = time.monotonic() - t0
        (folder / f"{kind}-log.txt").write_text(proc.stdout + proc.stderr)
        row = {"layout": kind, "exit": proc.returncode, "seconds": round(wall), "args": budget}
        subs = sorted((art / "subs").glob("*.csv"))
        if subs:
            sub = pd.read_csv(subs[-1])
            truth = pd.read_csv(folder / f"{kind}-labels.csv")
            merged = sub.merge(truth, on="id")
            row["cut_off_accuracy"] = round(float((merged.iloc[:, 1] == merged["true"]).mean()), 4)
        best = next(art.glob("*/tune/best.json"), None)
        if best:
            b = json.loads(best.read_text())
            row.update(estimate=round(b["holdout_accuracy"], 4), model=b["model"],
                       mirror=(b.get("flip") or {}).get("invariant"))  # fmt: skip
        inspect = [
            str(checkout / "run.sh"),
            "inspect",
            "--data",
            str(comp),
            "--artifacts",
            str(art),
        ]
        layout = subprocess.run(inspect, capture_output=True, text=True)
        if layout.returncode == 0:
            info = json.loads(layout.stdout)
            row.update(shape=info["image_shape"], pixel_format=info["pixel_format"])
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
