"""``python -m pipeline <command>``: argparse subcommands over the stages.

The arguments are turned into one frozen :class:`~pipeline.config.Config`, built once here and
passed down. User errors print one ``error:`` line on stderr and exit 2 (``--debug`` shows the
traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from pipeline import runtime
from pipeline.config import Config
from pipeline.errors import PipelineError

COMMON = {
    "data",
    "artifacts",
    "submissions",
    "seed",
    "competition",
    "image_shape",
    "channels_first",
    "submission",
    "debug",
}


def _shape(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W,C (e.g. 28,28,1), got {text!r}") from None
    if len(parts) == 2:
        parts = (*parts, 1)
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected H,W,C (e.g. 28,28,1), got {text!r}")
    return parts  # type: ignore[return-value]


def _common_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options")
    g.add_argument("--data", type=Path, help="competition folder (default: see README)")
    g.add_argument("--competition", help="competition slug (folder name under input/)")
    g.add_argument(
        "--artifacts",
        type=Path,
        default=runtime.default_artifacts_dir(),
        help="where study DB, models, histories and reports go (default: artifacts/)",
    )
    g.add_argument(
        "--submissions",
        type=Path,
        default=runtime.default_submissions_dir(),
        help="folder for submission CSVs (default: submissions/)",
    )
    g.add_argument("--seed", type=int, default=42, help="random seed (split, search, init)")
    g.add_argument("--image-shape", type=_shape, help="H,W,C when the pixel count is ambiguous")
    g.add_argument(
        "--channels-first",
        action="store_true",
        help="pixel columns are plane-ordered (all R, then G, then B)",
    )
    g.add_argument("--submission", type=Path, help="write the submission here instead")
    g.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


Handler = Callable[[Config], int]
COMMANDS: dict[str, Handler] = {}


def cmd_inspect(cfg: Config) -> int:
    from pipeline.data import load_competition, resolve_data_dir

    ds = load_competition(
        resolve_data_dir(cfg.data, cfg.competition),
        cache_dir=cfg.artifacts / "cache",
        image_shape=cfg.image_shape,
        channels_first=cfg.channels_first,
        competition=cfg.competition,
    )
    print(json.dumps(ds.layout.to_json(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = _common_parser()
    parser = argparse.ArgumentParser(
        prog="./run.sh",
        description="Kaggle pipeline for CSV pixel-row image classification competitions.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser(
        "inspect", parents=[common], help="print what the pipeline understands of the data (JSON)"
    )
    COMMANDS["inspect"] = cmd_inspect

    for register in _EXTENSIONS:
        register(sub, common)
    return parser


def _lazy(module: str, func: str) -> Handler:
    """A handler that imports its stage only when the command runs."""

    def run(cfg: Config) -> int:
        import importlib

        return getattr(importlib.import_module(module), func)(cfg)

    return run


def _zoo_commands(sub, common) -> None:
    p = sub.add_parser(
        "models", parents=[common], help="list the model zoo with parameter counts and recipes"
    )
    p.add_argument("--classes", type=int, help="number of classes (default: each study's)")
    p.add_argument("--input-shape", type=_shape, help="H,W,C (default: each study's)")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    COMMANDS["models"] = _lazy("pipeline.runs", "cmd_models")

    p = sub.add_parser(
        "train", parents=[common], help="one experiment: fit a zoo model, save the run, submit"
    )
    p.add_argument("--model", required=True, help="registry name (./run.sh models)")
    p.add_argument("--epochs", type=int, help="default: the study's recipe")
    p.add_argument("--batch-size", type=int, help="default: the study's recipe")
    p.add_argument("--optimizer", choices=["adam", "sgd", "sgd-nesterov", "rmsprop", "adadelta"])
    p.add_argument("--lr", type=float, help="learning rate (default: the study's)")
    p.add_argument(
        "--augment",
        nargs="?",
        const="strong",
        choices=["off", "light", "strong"],
        help="rotation/shift/zoom augmentation in training (bare flag: strong)",
    )
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--limit", type=int, help="use only N labelled rows (stratified; for trials)")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    COMMANDS["train"] = _lazy("pipeline.runs", "cmd_train")

    p = sub.add_parser("predict", parents=[common], help="predict the test set from a saved model")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--run", help="run id under artifacts/<competition>/runs/")
    g.add_argument("--model-path", type=Path, help="a saved .keras model")
    p.add_argument("--tta", action="store_true", help="average over one-pixel test-time shifts")
    COMMANDS["predict"] = _lazy("pipeline.runs", "cmd_predict")


# Each stage adds its subcommands here: ``register(subparsers, common_parser)`` adds its parsers
# and handlers to COMMANDS. The handlers import their stage lazily.
def _tune_command(sub, common) -> None:
    p = sub.add_parser(
        "tune",
        parents=[common],
        help="Optuna search over the zoo within a time budget, then predict and submit",
    )
    p.add_argument("--timeout", type=float, help="seconds for the whole command (default 3600)")
    p.add_argument("--trials", type=int, help="stop after N trials (default: budget only)")
    p.add_argument(
        "--max-epochs", type=int, help="epochs per trial at most (default 8 on a slice, else 15)"
    )
    p.add_argument(
        "--quick", action="store_true", help="2-3 minute smoke run: 3 trials, 2 epochs, 3000 rows"
    )
    p.add_argument("--models", help="comma-separated registry names to search over")
    p.add_argument(
        "--pruner", choices=["halving", "median", "hyperband", "none"], default="halving"
    )
    p.add_argument(
        "--storage", help="Optuna storage URL (default: sqlite artifacts/<comp>/optuna.db)"
    )
    p.add_argument("--study", help="study name (default: the competition)")
    p.add_argument("--search-only", action="store_true", help="run trials, skip the final stage")
    p.add_argument("--final-only", action="store_true", help="only the final stage")
    p.add_argument(
        "--ensemble",
        default="auto",
        help="average the top K trials' models (default auto: best K<=3 on holdout)",
    )
    p.add_argument("--tta", action="store_true", help="average over one-pixel test-time shifts")
    p.add_argument(
        "--refit",
        action="store_true",
        help="retrain the best configuration on all rows before predicting",
    )
    p.add_argument(
        "--search-rows",
        help="training images per trial (default auto: 12000 on CPU, all on GPU; 0 = all)",
    )
    p.add_argument(
        "--final-fit",
        choices=["auto", "on", "off"],
        default="auto",
        help="train the best configuration on the whole split at the end "
        "(default auto: when trials used a slice)",
    )
    p.add_argument("--final-max-epochs", type=int, help="epochs of the final fit at most (40)")
    p.add_argument("--max-failures", type=int, default=5, help="stop after N trials fail in a row")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    p.add_argument("--limit", type=int, help="use only N labelled rows (stratified)")
    COMMANDS["tune"] = _lazy("pipeline.tune", "cmd_tune")


def cmd_fetch(cfg: Config) -> int:
    """Download the competition, then say what ``inspect`` says about it."""
    from pipeline.fetch import fetch

    dest = fetch(cfg)
    return cmd_inspect(cfg.replace(data=dest))


def _kaggle_commands(sub, common) -> None:
    p = sub.add_parser(
        "fetch", parents=[common], help="download a competition's files from Kaggle into input/"
    )
    p.add_argument("--force", action="store_true", help="download again even if present")
    COMMANDS["fetch"] = cmd_fetch

    p = sub.add_parser(
        "submit", parents=[common], help="validate and upload a submission, then print its score"
    )
    p.add_argument("--file", type=Path, help="default: the newest CSV under submissions/")
    p.add_argument("--message", help="default: the model and holdout accuracy of the file")
    p.add_argument("--dry-run", action="store_true", help="validate only, upload nothing")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the score")
    p.add_argument(
        "--wait", type=float, default=600, help="seconds to wait for the score (default 600)"
    )
    COMMANDS["submit"] = _lazy("pipeline.submit", "cmd_submit")


def _then_report(handler: Handler) -> Handler:
    """Run ``handler``, then refresh the report (cheap). A failing report never fails the
    command: its results are already saved."""

    def run(cfg: Config) -> int:
        code = handler(cfg)
        if code == 0 and not cfg.opt("no_report"):
            from pipeline.report import build_report

            try:
                build_report(cfg, study_name=cfg.opt("study"))
            except Exception as exc:  # noqa: BLE001 - reported in one line, results are safe
                if cfg.debug:
                    raise
                print(f"report: not written ({type(exc).__name__}: {exc})", file=sys.stderr)
        return code

    return run


def _report_command(sub, common) -> None:
    p = sub.add_parser(
        "report",
        parents=[common],
        help="tables and plots of every run and the study (artifacts/<competition>/report/)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--study", help="only this study (default: all runs and the competition's)")
    g.add_argument("--run", help="only this run id")
    p.add_argument("--storage", help="Optuna storage URL of the study (default: the SQLite file)")
    COMMANDS["report"] = _lazy("pipeline.report", "cmd_report")
    for name in ("train", "tune"):
        COMMANDS[name] = _then_report(COMMANDS[name])


def _kernel_command(sub, common) -> None:
    p = sub.add_parser(
        "kernel",
        parents=[common],
        help="build (and optionally push) a self-contained Kaggle kernel that runs tune",
    )
    p.add_argument("--id", help="USER/KERNEL-SLUG (default: <your user>/<competition>-tune)")
    p.add_argument("--out", type=Path, help="folder to write (default: kernel/<competition>/)")
    p.add_argument("--timeout", type=float, help="tune's budget inside the kernel (default 3600)")
    p.add_argument("--quick", action="store_true", help="the kernel runs tune --quick")
    p.add_argument("--models", help="comma-separated registry names for the kernel's search")
    p.add_argument(
        "--gpu", action=argparse.BooleanOptionalAction, help="request a GPU (default: yes)"
    )
    p.add_argument("--internet", action="store_true", help="enable internet in the kernel")
    p.add_argument("--push", action="store_true", help="push it with the Kaggle API")
    COMMANDS["kernel"] = _lazy("pipeline.kernel", "cmd_kernel")


_EXTENSIONS: list[Callable[[argparse._SubParsersAction, argparse.ArgumentParser], None]] = [
    _zoo_commands,
    _tune_command,
    _kaggle_commands,
    _report_command,
    _kernel_command,
]


def build_config(ns: argparse.Namespace) -> Config:
    """The one frozen config of this run, from parsed arguments."""
    values = vars(ns).copy()
    command = values.pop("command")
    common = {k: values.pop(k) for k in list(values) if k in COMMON}
    return Config(command=command, **common).with_options(**values)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    cfg = build_config(ns)
    try:
        return COMMANDS[cfg.command](cfg)
    except PipelineError as exc:
        if cfg.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(
            "interrupted; completed work is kept (rerun the same command to resume)",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:  # a bug, not bad input: still one line unless --debug
        if cfg.debug:
            raise
        print(
            f"error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
