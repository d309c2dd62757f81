"""Stage 0: Kaggle -> competition files under ``input/<slug>/`` (``./run.sh fetch``)."""

from __future__ import annotations

import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from pipeline import runtime
from pipeline.errors import PipelineError
from pipeline.options import FetchOptions

DATA_SUFFIXES = (".csv", ".csv.gz", ".csv.zip", ".zip", ".gz")


def target_dir(opts: FetchOptions) -> Path:
    return Path(opts.data) if opts.data else runtime.default_input_dir() / opts.competition


def has_files(folder: Path) -> bool:
    return folder.is_dir() and any(
        p.is_file() and p.name.lower().endswith(DATA_SUFFIXES) for p in folder.iterdir()
    )


def _extract(archive: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            # zipfile drops absolute paths and ".." parts, so members stay inside dest
            zf.extractall(dest)
    except zipfile.BadZipFile:
        raise PipelineError(
            f"{archive.name}: Kaggle's download is not a valid zip; retry with --force"
        ) from None


def fetch(opts: FetchOptions) -> Path:
    """Download and unzip the competition's files unless they are already there."""
    from pipeline.kaggle_api import download_competition

    if not opts.competition:
        raise PipelineError("fetch needs --competition SLUG (the last part of the competition URL)")
    dest = target_dir(opts)
    if has_files(dest) and not opts.force:
        print(f"{dest}: already there (--force downloads again)", file=sys.stderr)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    # download and unpack beside the destination, then rename: no half-filled folder
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}-", dir=dest.parent) as tmp:
        tmp = Path(tmp)
        print(f"downloading {opts.competition} from Kaggle ...", file=sys.stderr, flush=True)
        archive = download_competition(opts.competition, tmp / "download")
        unpacked = tmp / "files"
        unpacked.mkdir()
        if archive.suffix.lower() == ".zip" or zipfile.is_zipfile(archive):
            _extract(archive, unpacked)
        else:
            shutil.copy2(archive, unpacked / archive.name)
        # a zip holding a single folder: use the folder's content
        entries = [p for p in unpacked.iterdir() if not p.name.startswith("__MACOSX")]
        if len(entries) == 1 and entries[0].is_dir():
            unpacked = entries[0]
        if dest.exists():
            dest.rename(tmp / "replaced")  # removed with tmp
        unpacked.rename(dest)
    n = sum(1 for p in dest.rglob("*") if p.is_file())
    print(f"{dest}: {n} files from {opts.competition}", file=sys.stderr)
    return dest


def run(opts: FetchOptions) -> int:
    """Download the competition, then say what ``inspect`` says about it."""
    from pipeline.commands import inspect

    return inspect.run(opts.replace(data=fetch(opts)))
