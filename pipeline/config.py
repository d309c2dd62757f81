"""One frozen configuration object, built once from the command line and passed down."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import runtime
from pipeline.fsutil import atomic_write_text


@dataclass(frozen=True)
class Config:
    """Every setting of a run. Saved as ``config.json`` beside the artifacts it produced."""

    command: str = "inspect"
    data: Path | None = None
    artifacts: Path = field(default_factory=runtime.default_artifacts_dir)
    submissions: Path = field(default_factory=runtime.default_submissions_dir)
    seed: int = 42
    competition: str | None = None
    image_shape: tuple[int, int, int] | None = None
    channels_first: bool = False
    submission: Path | None = None
    debug: bool = False
    # command-specific settings live in ``options`` so that adding a command never breaks the others
    options: tuple[tuple[str, Any], ...] = ()

    def opt(self, name: str, default: Any = None) -> Any:
        """A command-specific option, or ``default`` when the command has no such option."""
        return dict(self.options).get(name, default)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def with_options(self, **changes: Any) -> Config:
        merged = dict(self.options)
        merged.update(changes)
        return dataclasses.replace(self, options=tuple(sorted(merged.items())))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "options":
                out.update({k: _jsonable(v) for k, v in value})
            else:
                out[f.name] = _jsonable(value)
        return out

    def save(self, path: Path) -> None:
        """Write the config as JSON (atomically) so a result can be traced to its settings."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value
