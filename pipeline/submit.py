"""Last stage: submission CSV -> Kaggle leaderboard (``./run.sh submit``).

Validates the file against the competition's sample submission and test ids first (the same
checks as when it was written), uploads it with the official client, polls until Kaggle has
scored it, and appends one row per upload to ``submissions/log.csv``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.errors import PipelineError
from pipeline.fsutil import atomic_write_text
from pipeline.options import Options, SubmitOptions

LOG_COLUMNS = [
    "time",
    "file",
    "competition",
    "message",
    "ref",
    "status",
    "public_score",
    "holdout_accuracy",
]


def _meta(path: Path) -> dict[str, Any]:
    f = path.with_suffix(".json")
    try:
        return json.loads(f.read_text()) if f.is_file() else {}
    except (OSError, ValueError):
        return {}


def newest_submission(folder: Path, competition: str | None) -> Path:
    """The newest submission CSV under ``folder`` (for ``competition`` when known)."""
    files = [p for p in Path(folder).glob("*.csv") if p.name != "log.csv"]
    if competition:
        files = [
            p
            for p in files
            if _meta(p).get("competition") == competition or p.name.startswith(f"{competition}-")
        ]
    if not files:
        which = f" for {competition}" if competition else ""
        raise PipelineError(
            f"{folder}: no submission CSV{which}; run ./run.sh tune (or train) first, "
            "or pass --file PATH"
        )
    return max(files, key=lambda p: p.stat().st_mtime)


def default_message(meta: dict[str, Any], path: Path) -> str:
    """The model and what the file's run measured: the holdout's accuracy (rows that chose
    nothing), else the validation accuracy (rows that chose its epoch), said as such."""
    model = meta.get("model") or path.stem
    acc = meta.get("holdout_accuracy")
    if isinstance(acc, int | float):
        return f"{model} holdout {acc:.4f}"
    estimate = meta.get("estimate") or {}
    if isinstance(estimate.get("accuracy"), int | float):
        return f"{model} {estimate.get('scored_on', 'validation')} {estimate['accuracy']:.4f}"
    return str(model)


def validate_file(opts: Options, path: Path, data_competition: str | None) -> int:
    """Check ``path`` against the competition's files; returns its row count."""
    from pipeline.data import load
    from pipeline.submission import read_submission, validate_submission

    ds = load(opts.replace(competition=data_competition))
    df = read_submission(path)
    validate_submission(df, ds.layout, ds.test_ids, str(path))
    return len(df)


def append_log(folder: Path, row: dict[str, Any]) -> Path:
    """Add one row to ``log.csv`` (rewritten atomically, so it is never half-written)."""
    log = Path(folder) / "log.csv"
    new = pd.DataFrame([row], columns=LOG_COLUMNS).astype(str)
    if log.is_file():
        new = pd.concat(
            [pd.read_csv(log, dtype=str, keep_default_na=False), new], ignore_index=True
        )
    atomic_write_text(log, new.to_csv(index=False))
    return log


def wait_for_score(competition: str, ref: Any, path: Path, timeout: float, every: float) -> dict:
    """Poll the user's submissions until this one is COMPLETE or ERROR (or ``timeout``)."""
    from pipeline.kaggle_api import submissions

    deadline = time.monotonic() + timeout
    last = {"status": "PENDING", "public_score": None, "error_description": None}
    while True:
        found = submissions(competition)
        mine = [s for s in found if ref and str(s["ref"]) == str(ref)]
        if not mine:  # older servers do not return the ref: the newest with our file name
            mine = [s for s in found if s.get("file_name") == path.name][:1]
        if mine:
            last = mine[0]
            if last["status"] in ("COMPLETE", "ERROR"):
                return last
        if time.monotonic() + every > deadline:
            return last
        print(f"waiting for Kaggle to score it ({last['status'].lower()}) ...", file=sys.stderr)
        time.sleep(every)


def run(opts: SubmitOptions) -> int:
    from pipeline.kaggle_api import submit

    if opts.kernel:
        return submit_kernel_output(opts)
    data_competition = opts.competition
    path = Path(opts.file) if opts.file else None
    if path is None:
        path = newest_submission(opts.submissions, data_competition)
    if not path.is_file():
        raise PipelineError(f"{path}: no such submission file")
    meta = _meta(path)
    if not data_competition and opts.data is None:
        data_competition = meta.get("competition")
    slug = opts.competition or meta.get("competition")
    if not slug and opts.data is not None:
        slug = Path(opts.data).name
    if not slug:
        raise PipelineError(f"{path}: which competition? pass --competition SLUG")
    rows = validate_file(opts, path, data_competition)
    message = opts.message or default_message(meta, path)
    if opts.dry_run:
        print(f"{path}: valid for {slug} ({rows} rows); not uploaded (--dry-run)")
        return 0
    print(f"uploading {path.name} to {slug}: {message!r}", file=sys.stderr, flush=True)
    created = submit(path, slug, message)
    return follow(opts, slug, path.name, str(path), message, created, meta.get("holdout_accuracy"))


def submit_kernel_output(opts: SubmitOptions) -> int:
    """Code competitions: submit a kernel version's output file (Kaggle reruns the kernel on
    the hidden test set), then follow it as a file upload is followed."""
    from pipeline.kaggle_api import submit_kernel

    if not opts.competition:
        raise PipelineError("submit --kernel needs --competition SLUG")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", opts.kernel):
        raise PipelineError(f"--kernel {opts.kernel!r}: expected USER/KERNEL-SLUG")
    file_name = opts.file.name if opts.file else "submission.csv"
    version = f" version {opts.version}" if opts.version else " (latest version)"
    message = opts.message or f"kernel {opts.kernel}{version.replace(' (', ', ').rstrip(')')}"
    if opts.dry_run:
        print(f"would submit {file_name} of kernel {opts.kernel}{version} to {opts.competition}")
        return 0
    print(f"submitting kernel {opts.kernel}{version} ({file_name}) to {opts.competition}",
          file=sys.stderr, flush=True)  # fmt: skip
    created = submit_kernel(opts.competition, opts.kernel, opts.version, message, file_name)
    return follow(opts, opts.competition, file_name, f"kernel:{opts.kernel}", message, created)


def follow(opts, slug: str, name: str, what: str, message: str, created: dict,
           holdout: Any = None) -> int:  # fmt: skip
    """Record the upload in log.csv, wait for Kaggle's score (unless --no-wait), report it."""
    row = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "file": what,
        "competition": slug,
        "message": message,
        "ref": created.get("ref"),
        "status": "SUBMITTED",
        "public_score": "",
        "holdout_accuracy": holdout if holdout is not None else "",
    }
    result: dict[str, Any] = {}
    try:
        if not opts.no_wait:
            every = float(os.environ.get("PIPELINE_SUBMIT_POLL", "10"))
            result = wait_for_score(slug, created.get("ref"), Path(name), opts.wait, every)
            row["status"] = result.get("status", "PENDING")
            row["public_score"] = result.get("public_score") or ""
    finally:
        append_log(opts.submissions, row)  # the upload happened: record it whatever follows
    if opts.no_wait:
        print(f"submitted {name} to {slug} (ref {created.get('ref')}); not waiting")
        return 0
    if result.get("status") == "ERROR":
        raise PipelineError(
            f"Kaggle could not score {name}: {result.get('error_description') or 'no reason'}"
        )
    if result.get("status") != "COMPLETE":
        print(
            f"submitted {name} to {slug}; still {row['status'].lower()} after waiting "
            f"(see https://www.kaggle.com/competitions/{slug}/submissions)"
        )
        return 0
    extra = f" (holdout {holdout:.4f})" if isinstance(holdout, int | float) else ""
    print(f"public score {result.get('public_score')} for {name} on {slug}{extra}")
    return 0
