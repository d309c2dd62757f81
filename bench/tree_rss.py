"""Benchmark: the memory of a whole command, its process tree sampled every second.

Runs the command given after ``--`` and, once a second, sums the resident set size (VmRSS) of
it and every descendant (the tune command's trial worker included). Prints the peak of the sum,
the peak of each process, what the main process held while a worker ran, and the wall time;
``--csv`` writes every sample.

    .venv/bin/python bench/tree_rss.py [--csv FILE] -- ./run.sh tune --timeout 900

A one-second sample can miss a peak shorter than a second; the largest single process is also
read from the kernel's own high-water mark (VmHWM) at each sample.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path


def status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in KiB (empty when it is gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return {}
    return out


def children() -> dict[int, list[int]]:
    """parent pid -> child pids, for every process on the machine."""
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(ppid, []).append(int(stat.parent.name))
    return tree


def descendants(root: int) -> list[int]:
    tree, out, todo = children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += tree.get(pid, [])
    return out


def sample_tree(cmd: list[str], every: float = 1.0, watchdog=None, **popen):
    """Run ``cmd`` (``popen``: subprocess.Popen's keywords), sampling its tree every ``every``
    seconds: (exit code, wall seconds, samples (seconds, tree KiB, processes, largest KiB),
    peak KiB by pid, high-water mark KiB by pid). ``watchdog(proc)``, called at each sample,
    may end the tree (bench/peers.py kills a peer past its deadline)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, **popen)
    samples, peak_each, hwm = [], {}, {}
    while proc.poll() is None:
        if watchdog is not None and watchdog(proc):
            proc.wait()
            break
        pids = descendants(proc.pid)
        rss = {p: status(p) for p in pids}
        rss = {p: s for p, s in rss.items() if s}
        total = sum(s.get("VmRSS", 0) for s in rss.values())
        # the largest process is the python one under run.sh (the shell's pid is the root)
        samples.append((round(time.monotonic() - t0, 1), total, len(rss),
                        max((s.get("VmRSS", 0) for s in rss.values()), default=0)))  # fmt: skip
        for p, s in rss.items():
            peak_each[p] = max(peak_each.get(p, 0), s.get("VmRSS", 0))
            hwm[p] = max(hwm.get(p, 0), s.get("VmHWM", 0))
        time.sleep(every)
    return proc.returncode, time.monotonic() - t0, samples, peak_each, hwm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--csv", type=Path, help="write every sample here")
    ap.add_argument("--every", type=float, default=1.0, help="seconds between samples")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        ap.error("give the command after --")
    code, wall, samples, peak_each, hwm = sample_tree(cmd, a.every)
    if a.csv:
        with a.csv.open("w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["seconds", "tree_rss_kib", "processes", "largest_rss_kib"])
            out.writerows(samples)
    peak = max(samples, key=lambda s: s[1], default=(0, 0, 0, 0))
    print(f"\ncommand: {' '.join(cmd)}", file=sys.stderr)
    print(f"exit {code}, {wall:.0f} s, {len(samples)} samples", file=sys.stderr)
    print(f"peak of the tree: {peak[1] / 1024:.0f} MiB at {peak[0]:.0f} s "
          f"({peak[2]} processes)", file=sys.stderr)  # fmt: skip
    big = sorted(peak_each, key=peak_each.get, reverse=True)[:4]
    for p in big:
        print(f"  pid {p}: peak RSS {peak_each[p] / 1024:.0f} MiB (high-water mark "
              f"{hwm[p] / 1024:.0f} MiB)", file=sys.stderr)  # fmt: skip
    sys.exit(code)


if __name__ == "__main__":
    main()
