"""Benchmark: the pipeline beside the AutoML tools a Kaggle user would run instead.

On each competition of bench/suite.py (same folders, same sealed rows), or on any folder given
as ``--data DIR --answers FILE`` (the sealed labels as a CSV in the sample submission's
columns), runs the pipeline's default ``tune`` and each peer at the same wall-clock budget for
the whole command (loading, searching, predicting, writing): AutoKeras, KerasTuner, AutoGluon,
FLAML and ``SVC()`` (bench/peer_run.py). Each runs in its own process, its process tree's RSS
sampled every second; a peer stops at its deadline (its own time limit where it has one, else
a Keras callback) and is scored on what it had; one still running PEER_GRACE_S after the budget
is killed and scores nothing. One table: competition x tool, sealed accuracy with its 95%
interval, seconds, tree MiB; the pipeline's margin over the best peer.

The peers live in their own environment, .venv-peers (bench/peers-requirements.txt, pinned),
created on first use; the project's requirements stay as they are.

    .venv/bin/python bench/peers.py [--only mnist,digits8] [--peers flaml,svc]
        [--timeout S] [--small-timeout S] [--data DIR --answers FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
import suite  # noqa: E402
from leaderboard import head, worktree  # noqa: E402
from tree_rss import descendants, sample_tree  # noqa: E402

PEERS = ("autokeras", "kerastuner", "autogluon", "flaml", "svc")
PEER_ENV = ROOT / ".venv-peers"
PEER_GRACE_S = 120  # past the budget a peer is killed: it could not stop itself in time


def peer_python() -> Path:
    """The peers' interpreter, the environment created on first use."""
    python = PEER_ENV / "bin" / "python"
    if not python.exists():
        print(f"creating {PEER_ENV.name} from bench/peers-requirements.txt (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_ENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r",
                        str(ROOT / "bench" / "peers-requirements.txt")], check=True)  # fmt: skip
    return python


def killer(budget: float):
    """A watchdog for sample_tree: SIGKILL the tree once ``budget + PEER_GRACE_S`` passed."""
    t0 = time.monotonic()

    def check(proc) -> bool:
        if time.monotonic() - t0 <= budget + PEER_GRACE_S:
            return False
        for pid in reversed(descendants(proc.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return True

    return check


def run_peer(peer: str, comp: Path, labels: Path, budget: int, work: Path, seed: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    out = work / "submission.csv"
    cmd = [str(peer_python()), str(ROOT / "bench" / "peer_run.py"), peer, "--data", str(comp),
           "--out", str(out), "--budget", str(budget), "--seed", str(seed)]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with (work / "log.txt").open("w") as log:
        code, wall, samples, _, _ = sample_tree(cmd, 1.0, stdout=log, stderr=subprocess.STDOUT,
                                                env=env, watchdog=killer(budget))  # fmt: skip
    peak = max(samples, key=lambda s: s[1], default=(0, 0, 0, 0))
    r = {"exit": code, "seconds": round(wall), "tree_mib": peak[1] // 1024}
    text = (work / "log.txt").read_text(errors="replace")
    info = [line[5:] for line in text.splitlines() if line.startswith("PEER ")]
    if info:
        r.update(json.loads(info[-1]))
    if out.exists():
        r["sealed"] = round(suite.sealed_score(out, labels), 4)
    else:
        tail = [line for line in text.splitlines() if line.strip()][-1:]
        r["why"] = "killed at the budget + grace" if wall > budget + PEER_GRACE_S else (
            tail[0][:160] if tail else f"exit {code}")  # fmt: skip
    return r


def cell(r: dict | None) -> str:
    if r is None:
        return "-"
    if r.get("sealed") is None:
        return f"no submission: {r.get('why', '?')}"
    return f"{suite.sealed_text(r)}, {r['seconds']} s, {r['tree_mib']} MiB"


def table(rows: list[dict], tools: list[str]) -> str:
    lines = ["| competition | budget s | " + " | ".join(tools) + " | margin over best peer |",
             "|---|---|" + "---|" * (len(tools) + 1)]  # fmt: skip
    for comp in dict.fromkeys(r["competition"] for r in rows):
        got = {r["tool"]: r for r in rows if r["competition"] == comp}
        peers = [r["sealed"] for t, r in got.items() if t != "pipeline" and r.get("sealed")]
        ours = (got.get("pipeline") or {}).get("sealed")
        margin = f"{ours - max(peers):+.4f}" if ours is not None and peers else "-"
        budget = next(iter(got.values()))["budget"]
        lines.append(f"| {comp} | {budget} | " + " | ".join(cell(got.get(t)) for t in tools)
                     + f" | {margin} |")  # fmt: skip
    return "\n".join(lines)


def competitions(a) -> list[tuple[str, Path, Path]]:
    """(name, competition folder, sealed labels) of each competition asked for."""
    if a.data:
        if not a.answers:
            raise SystemExit("--data needs --answers FILE (the sealed labels)")
        return [(a.data.name, a.data, a.answers)]
    return [(n, c := suite.prepared(n, a.seed), c.parent / "labels.csv") for n in a.only.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=",".join(suite.NAMES))
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--no-pipeline", action="store_true")
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--small-timeout", type=int, default=300)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--answers", type=Path)
    a = ap.parse_args()
    stamp, commit = time.strftime("%Y%m%dT%H%M%S"), head()
    tools = ([] if a.no_pipeline else ["pipeline"]) + a.peers.split(",")
    rows = []
    for name, comp, labels in competitions(a):
        labelled = len(pd.read_csv(next(comp.glob("train.csv*")), usecols=[0]))
        budget = a.small_timeout if labelled < suite.SMALL_ROWS else a.timeout
        sealed_rows = len(pd.read_csv(labels, usecols=[0]))
        for tool in tools:
            work = suite.OUT / f"peers-{stamp}" / name / tool
            work.mkdir(parents=True, exist_ok=True)
            r = {"competition": name, "tool": tool, "budget": budget, "commit": commit,
                 "labelled": labelled, "sealed_rows": sealed_rows}  # fmt: skip
            if tool == "pipeline":
                r.update(suite.run_pipeline(worktree(commit), comp, budget, work, [], labels))
            else:
                r.update(run_peer(tool, comp, labels, budget, work, a.seed))
            rows.append(r)
            print(json.dumps(r), flush=True)
            (suite.OUT / f"peers-{stamp}.json").write_text(json.dumps(rows, indent=2))
    print()
    print(table(rows, tools))


if __name__ == "__main__":
    main()
