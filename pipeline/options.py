"""Typed, frozen options: one dataclass per command, each default written once, here.

``pipeline.cli`` builds them from argparse (flags left out keep these defaults) and passes them
down; every artifact gets them beside it as JSON (:meth:`Options.save`), so a result can always
be traced to the settings that made it. Decisions computed from the options and the machine (the
tune command's fidelity, for instance) live in their own plan objects, never written back here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pipeline import runtime
from pipeline.fsutil import atomic_write_text

Shape = tuple[int, int, int]


@dataclass(frozen=True)
class Options:
    """What every command accepts (see README, "Commands")."""

    command: ClassVar[str] = ""
    data: Path | None = None
    competition: str | None = None
    artifacts: Path = field(default_factory=runtime.default_artifacts_dir)
    submissions: Path = field(default_factory=runtime.default_submissions_dir)
    seed: int = 42
    image_shape: Shape | None = None
    channels_first: bool = False
    submission: Path | None = None
    debug: bool = False

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"command": self.command}
        for f in dataclasses.fields(self):
            out[f.name] = _jsonable(getattr(self, f.name))
        return out

    def save(self, path: Path) -> None:
        """Write these options as JSON (atomically) beside the artifact they produced."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of field ``name`` (for help texts)."""
        f = cls.__dataclass_fields__[name]
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return f.default


@dataclass(frozen=True)
class InspectOptions(Options):
    command: ClassVar[str] = "inspect"


@dataclass(frozen=True)
class FetchOptions(Options):
    command: ClassVar[str] = "fetch"
    force: bool = False


@dataclass(frozen=True)
class ModelsOptions(Options):
    command: ClassVar[str] = "models"
    classes: int | None = None  # None: each study's own
    input_shape: Shape | None = None
    json: bool = False


@dataclass(frozen=True)
class TrainOptions(Options):
    command: ClassVar[str] = "train"
    model: str = ""
    # None: the entry's study recipe
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    augment: str | None = None
    label_smoothing: float | None = None
    limit: int | None = None
    no_report: bool = False


@dataclass(frozen=True)
class PredictOptions(Options):
    command: ClassVar[str] = "predict"
    run: str | None = None
    model_path: Path | None = None
    tta: bool = False


@dataclass(frozen=True)
class TuneOptions(Options):
    command: ClassVar[str] = "tune"
    timeout: float = 3600.0
    trials: int | None = None  # None: the budget decides
    max_epochs: int | None = None  # None: 8 on a slice, else 15 (see pipeline.tune.plan)
    quick: bool = False
    models: tuple[str, ...] = ()  # (): the default search space
    warm_start: str = "auto"  # the first trial's recipe (search_space.WARM_STARTS); auto: resnet9s
    pruner: str = "halving"
    storage: str | None = None  # None: sqlite file artifacts/<competition>/optuna.db
    study: str | None = None  # None: the competition
    artifact_store: str | None = None  # a shared folder for kept models (Optuna artifacts)
    search_only: bool = False
    final_only: bool = False
    final: str = "auto"  # the final stage: auto (the plan), fit, folds or trials
    ensemble: int | str = "auto"
    tta: bool = False
    search_rows: int | str = "auto"  # 0: all rows
    final_max_epochs: int | None = None  # None: as many as the budget holds
    flip: str = "auto"  # mirror in the final fit and at test time: auto (measured), on, off
    precision: str = "auto"  # auto, mixed, float32 (pipeline.device.PRECISIONS)
    limit: int | None = None
    no_report: bool = False
    isolate: str = "process"  # TensorFlow's work in a child process (memory), or "none"

    # ``--quick``: a 2-3 minute smoke run; these replace the defaults of flags not given. No
    # trial cap: the 150 s decide. With 3 trials of 2 epochs it stopped at 76 s of 150 and scored
    # 0.68 on a 28x28 digits competition (the warm start at 2 epochs: 0.34).
    QUICK: ClassVar[dict[str, Any]] = {
        "timeout": 150.0,
        "max_epochs": 8,
        "limit": 15000,
        "warm_start": "lenet5_wide",
    }


@dataclass(frozen=True)
class ReportOptions(Options):
    command: ClassVar[str] = "report"
    study: str | None = None
    run: str | None = None
    storage: str | None = None


@dataclass(frozen=True)
class DashboardOptions(Options):
    command: ClassVar[str] = "dashboard"
    storage: str | None = None  # None: sqlite file artifacts/<competition>/optuna.db
    study: str | None = None  # None: every study in the storage
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    artifact_store: str | None = None


@dataclass(frozen=True)
class SubmitOptions(Options):
    command: ClassVar[str] = "submit"
    file: Path | None = None  # None: the newest CSV under submissions/
    message: str | None = None  # None: the model and the estimate recorded with the file
    dry_run: bool = False
    no_wait: bool = False
    wait: float = 600.0
    kernel: str | None = None  # code competitions: submit this kernel's output (USER/SLUG)
    version: int | None = None  # ... of this kernel version (default: the latest)


@dataclass(frozen=True)
class KernelOptions(Options):
    command: ClassVar[str] = "kernel"
    id: str | None = None  # None: <your user>/<competition>-tune
    out: Path | None = None  # None: kernel/<competition>/
    timeout: float | None = None  # None: tune's own default
    quick: bool = False
    models: tuple[str, ...] = ()
    gpu: bool = True
    internet: bool = False
    push: bool = False
    wait: bool = False  # after --push: poll until the run ends, then download its output
    submit: bool = False  # after --wait: submit the output (or the kernel version)
    max_wait: float = 12 * 3600.0  # Kaggle stops a kernel session after 12 hours


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value
