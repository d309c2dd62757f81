"""Where a competition's files are: the train, test and sample-submission CSVs of a folder.

Each may be plain, ``.gz``, ``.zip``, or a member of one zip holding them all (as ``kaggle
competitions download`` gives). The folder itself comes from :func:`resolve_data_dir`.
"""

from __future__ import annotations

import fnmatch
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import runtime
from pipeline.errors import PipelineError

TRAIN_PATTERNS = ("train*.csv", "*_train*.csv", "*-train*.csv")
TEST_PATTERNS = ("test*.csv", "*_test*.csv", "*-test*.csv")
SAMPLE_PATTERNS = ("*sample_submission*.csv", "*submission*.csv")


@dataclass(frozen=True)
class Source:
    """One CSV: a plain/.gz/.zip file, or a member of a zip holding several files."""

    path: Path
    member: str | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)

    @property
    def name(self) -> str:
        return Path(self.member).name if self.member else self.path.name

    def stat_key(self) -> list[Any]:
        st = self.path.stat()
        return [str(self.path.resolve()), self.member, st.st_size, st.st_mtime_ns]

    def read_csv(self, **kwargs: Any) -> pd.DataFrame:
        """Read with pandas; a corrupt archive or an empty file becomes a one-line error."""
        try:
            if self.member is not None:
                with zipfile.ZipFile(self.path) as zf, zf.open(self.member) as fh:
                    return pd.read_csv(io.BytesIO(fh.read()), **kwargs)
            if self.path.suffix == ".zip":
                with zipfile.ZipFile(self.path) as zf:
                    names = [n for n in zf.namelist() if not n.endswith("/")]
                    if len(names) != 1:
                        raise PipelineError(
                            f"{self.path}: expected one CSV inside the zip, found {len(names)}; "
                            "unzip it or pass the CSV itself"
                        )
                    with zf.open(names[0]) as fh:
                        return pd.read_csv(io.BytesIO(fh.read()), **kwargs)
            return pd.read_csv(self.path, **kwargs)
        except zipfile.BadZipFile:
            raise PipelineError(
                f"{self.path}: corrupt zip file; download it again (./run.sh fetch --force)"
            ) from None
        except (EOFError, OSError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise PipelineError(f"{self}: file not found") from None
            raise PipelineError(
                f"{self}: cannot be read ({exc}); the file is damaged, download it again"
            ) from None
        except pd.errors.EmptyDataError:
            raise PipelineError(f"{self}: file is empty; download it again") from None
        except pd.errors.ParserError as exc:
            raise PipelineError(f"{self}: not a valid CSV ({str(exc).strip()})") from None
        except UnicodeDecodeError:
            raise PipelineError(f"{self}: not a text CSV file (bad encoding)") from None


@dataclass(frozen=True)
class CompetitionFiles:
    folder: Path
    train: Source
    test: Source
    sample_submission: Source | None


def _strip_compression(name: str) -> tuple[str, str]:
    for ext in (".gz", ".zip"):
        if name.endswith(ext):
            return name[: -len(ext)], ext
    return name, ""


def _pick(candidates: list[Source], patterns: tuple[str, ...], exclude: tuple[str, ...] = ()):
    """The first candidate whose (decompressed) base name matches the earliest pattern."""
    for pattern in patterns:
        hits = []
        for src in candidates:
            base, _ = _strip_compression(src.name.lower())
            if fnmatch.fnmatch(base, pattern) and not any(
                fnmatch.fnmatch(base, e) for e in exclude
            ):
                hits.append(src)
        if hits:
            # prefer the plain file over the compressed one, then the shortest name
            return sorted(hits, key=lambda s: (s.member is not None, len(s.name), s.name))[0]
    return None


def _list_sources(folder: Path) -> list[Source]:
    sources: list[Source] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        base, ext = _strip_compression(path.name.lower())
        if base.endswith(".csv"):
            sources.append(Source(path))
        elif ext == ".zip":
            # one zip holding all files, as ``kaggle competitions download`` gives
            try:
                with zipfile.ZipFile(path) as zf:
                    for member in zf.namelist():
                        if _strip_compression(member.lower())[0].endswith(".csv"):
                            sources.append(Source(path, member))
            except zipfile.BadZipFile:
                raise PipelineError(
                    f"{path}: corrupt zip file; download it again (./run.sh fetch --force)"
                ) from None
    return sources


def find_files(folder: Path) -> CompetitionFiles:
    """Locate the train, test and sample-submission files in a competition folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PipelineError(f"{folder}: no such competition folder; check --data")
    sources = _list_sources(folder)
    sample = _pick(sources, SAMPLE_PATTERNS)
    rest = [s for s in sources if s != sample]
    train = _pick(rest, TRAIN_PATTERNS, exclude=("*submission*",))
    test = _pick([s for s in rest if s != train], TEST_PATTERNS, exclude=("*submission*",))
    if train is None:
        raise PipelineError(
            f"{folder}: no train file (train*.csv, .csv.gz or .zip); "
            "put the competition's training CSV there or pass --data"
        )
    if test is None:
        raise PipelineError(
            f"{folder}: no test file (test*.csv, .csv.gz or .zip); "
            "put the competition's test CSV there or pass --data"
        )
    return CompetitionFiles(folder, train, test, sample)


def _holds_competition(folder: Path) -> bool:
    try:
        find_files(folder)
        return True
    except PipelineError:
        return False


def resolve_data_dir(data: Path | None = None, competition: str | None = None) -> Path:
    """The competition folder, by the documented precedence (see README, "How data is found")."""
    if data is not None:
        return Path(data)
    env = os.environ.get("PIPELINE_DATA")
    if env:
        return Path(env)
    if runtime.in_kernel():
        root = runtime.kaggle_root() / "input"
        found = [
            p
            for p in sorted(root.glob("*")) + sorted(root.glob("*/*")) + sorted(root.glob("*/*/*"))
            if p.is_dir() and _holds_competition(p)
        ]
        if competition:
            named = [p for p in found if p.name == competition]
            found = named or found
        if len(found) == 1 or (found and competition):
            return found[0]
        if not found:
            raise PipelineError(
                f"{root}: no folder with a train and a test CSV; add the competition's data "
                "to the kernel (competition_sources) or pass --data"
            )
        raise PipelineError(
            f"{root}: several competition folders ({', '.join(str(p) for p in found)}); "
            "pass --competition SLUG or --data DIR"
        )
    input_dir = runtime.default_input_dir()
    if competition:
        return input_dir / competition
    found = [p for p in sorted(input_dir.glob("*")) if p.is_dir() and _holds_competition(p)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise PipelineError(
            f"{input_dir}: no competition folder; put one under input/ "
            "(./run.sh fetch --competition SLUG) or pass --data DIR"
        )
    names = ", ".join(p.name for p in found)
    raise PipelineError(f"{input_dir}: several competitions ({names}); pass --competition NAME")
