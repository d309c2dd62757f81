"""``python -m pipeline <command>``: argparse subcommands -> one frozen options object -> handler.

This is the one place options are built from the command line: each flag maps to a field of the
command's dataclass in :mod:`pipeline.options` (flags left out keep its default), and handlers
import their stage only when they run. User errors print one ``error:`` line on stderr and exit 2
(``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from pipeline import argtypes
from pipeline import options as o
from pipeline.device import PRECISIONS
from pipeline.errors import PipelineError, explain
from pipeline.optimizers import OPTIMIZERS

# command -> (options class, "module:function" of its handler)
HANDLERS: dict[str, tuple[type[o.Options], str]] = {
    "inspect": (o.InspectOptions, "pipeline.commands.inspect:run"),
    "models": (o.ModelsOptions, "pipeline.commands.models:run"),
    "train": (o.TrainOptions, "pipeline.commands.train:run"),
    "predict": (o.PredictOptions, "pipeline.commands.predict:run"),
    "tune": (o.TuneOptions, "pipeline.tune.command:run"),
    "fetch": (o.FetchOptions, "pipeline.fetch:run"),
    "submit": (o.SubmitOptions, "pipeline.submit:run"),
    "report": (o.ReportOptions, "pipeline.report:run"),
    "kernel": (o.KernelOptions, "pipeline.kernel:run"),
    "dashboard": (o.DashboardOptions, "pipeline.dashboard:run"),
}
# commands whose results refresh the report (cheap) unless --no-report
REPORTED = ("train", "tune")
# (tune imports it itself, inside its budget)
NEEDS_TENSORFLOW = ("models", "train", "predict", "report")


def _default(cls: type[o.Options], name: str) -> str:
    value = cls.default(name)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _common_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    g = p.add_argument_group("common options")
    g.add_argument("--data", type=Path, help="competition folder (default: see README)")
    g.add_argument("--competition", help="competition slug (folder name under input/)")
    g.add_argument(
        "--artifacts", type=Path, help="study DB, models, histories, reports (default: artifacts/)"
    )
    g.add_argument(
        "--submissions", type=Path, help="folder for submission CSVs (default: submissions/)"
    )
    g.add_argument(
        "--seed", type=int, help=f"random seed: split, search, init (default {o.Options.seed})"
    )
    g.add_argument(
        "--image-shape", type=argtypes.shape, help="H,W,C when the pixel count is ambiguous"
    )
    g.add_argument(
        "--channels-first",
        action="store_true",
        help="pixel columns are plane-ordered (all R, then G, then B)",
    )
    g.add_argument("--submission", type=Path, help="write the submission here instead")
    g.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _models_flags(p) -> None:
    p.add_argument("--classes", type=int, help="number of classes (default: each study's)")
    p.add_argument("--input-shape", type=argtypes.shape, help="H,W,C (default: each study's)")
    p.add_argument("--json", action="store_true", help="print a JSON list")


def _train_flags(p) -> None:
    p.add_argument("--model", required=True, help="registry name (./run.sh models)")
    p.add_argument("--epochs", type=int, help="default: the study's recipe")
    p.add_argument("--batch-size", type=int, help="default: the study's recipe")
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--lr", type=float, help="learning rate (default: the study's)")
    p.add_argument(
        "--augment",
        nargs="?",
        const="strong",
        help="training augmentation: off, light, strong (rotation/shift/zoom), crop, flip, erase, "
        "or parts joined by '+' such as crop+flip (bare flag: strong)",
    )
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--limit", type=int, help="use only N labelled rows (stratified; for trials)")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")


def _predict_flags(p) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--run", help="run id under artifacts/<competition>/runs/")
    g.add_argument("--model-path", type=Path, help="a saved .keras model")
    p.add_argument("--tta", action="store_true", help="average over one-pixel test-time shifts")


def _tune_flags(p) -> None:
    """tune: the search, its budget and its storage."""
    t = o.TuneOptions
    p.add_argument(
        "--timeout",
        type=float,
        help=f"seconds for the whole command (default {_default(t, 'timeout')})",
    )
    p.add_argument("--trials", type=int, help="stop after N trials (default: budget only)")
    p.add_argument(
        "--max-epochs", type=int, help="epochs per trial at most (default 8 on a slice, else 15)"
    )
    q = t.QUICK
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"2-3 minute smoke run: {q['limit']} rows, up to {q['max_epochs']} epochs per "
        f"trial, {q['timeout']:g} s, {q['warm_start']} first",
    )
    p.add_argument(
        "--models", type=argtypes.names, help="comma-separated registry names to search over"
    )
    p.add_argument(
        "--pruner",
        choices=["halving", "median", "hyperband", "none"],
        help=f"default {_default(t, 'pruner')}",
    )
    p.add_argument(
        "--storage", help="Optuna storage URL (default: sqlite artifacts/<comp>/optuna.db)"
    )
    p.add_argument("--study", help="study name (default: the competition)")
    p.add_argument(
        "--artifact-store",
        help="a shared folder for the models trials and the final fit keep, recorded by "
        "artifact id (default: local files)",
    )
    p.add_argument(
        "--search-rows",
        type=argtypes.auto_or_int,
        help="training images per trial (default auto: a 12000-row slice where the budget "
        "cannot hold trials on every row; 0 = all)",
    )
    _tune_final_flags(p)


def _tune_final_flags(p) -> None:
    """tune: what the final stage does, and how the run runs."""
    p.add_argument("--search-only", action="store_true", help="run trials, skip the final stage")
    p.add_argument("--final-only", action="store_true", help="only the final stage")
    p.add_argument(
        "--final",
        choices=["auto", "fit", "folds", "trials"],
        help="the final stage: train the chosen configuration on the whole 80%% (fit), on k "
        "folds of every labelled row (folds), or average the trials' own models (trials) "
        "(default auto: the plan decides from the data's size and the measured cost)",
    )
    p.add_argument(
        "--ensemble",
        type=argtypes.auto_or_int,
        help="average the top K trials' models where no fit follows (default auto: the K<=3 "
        "whose average scores best on the trials' validation images)",
    )
    p.add_argument(
        "--final-max-epochs",
        type=int,
        help="epochs of the final fit at most (default: as many as the budget holds)",
    )
    p.add_argument(
        "--flip",
        choices=["auto", "on", "off"],
        help="left-right mirror in the final fit's augmentation and at test time (default auto: "
        "where the labels survive it, measured on the trials' validation images)",
    )
    p.add_argument("--tta", action="store_true", help="average over one-pixel test-time shifts")
    p.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        help="auto: mixed float16 on a GPU, float32 on a CPU; mixed: also bfloat16 on a CPU "
        "that has it in hardware; float32: everywhere (default auto)",
    )
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    p.add_argument("--limit", type=int, help="use only N labelled rows (stratified)")
    p.add_argument(
        "--isolate",
        choices=["process", "none"],
        help="train in a child process, so memory cannot grow fit after fit (default process; "
        "none: in this process)",
    )


def _fetch_flags(p) -> None:
    p.add_argument("--force", action="store_true", help="download again even if present")


def _submit_flags(p) -> None:
    p.add_argument("--file", type=Path, help="default: the newest CSV under submissions/")
    p.add_argument("--message", help="default: the model and the estimate recorded with the file")
    p.add_argument("--dry-run", action="store_true", help="validate only, upload nothing")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the score")
    p.add_argument(
        "--wait",
        type=float,
        help=f"seconds to wait for the score (default {_default(o.SubmitOptions, 'wait')})",
    )
    p.add_argument(
        "--kernel",
        help="code competitions: submit the output of this kernel (USER/SLUG) instead of a file",
    )
    p.add_argument("--version", type=int, help="with --kernel: its version (default: latest)")


def _report_flags(p) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--study", help="only this study (default: all runs and the competition's)")
    g.add_argument("--run", help="only this run id")
    p.add_argument("--storage", help="Optuna storage URL of the study (default: the SQLite file)")


def _dashboard_flags(p) -> None:
    p.add_argument(
        "--storage", help="Optuna storage URL (default: sqlite artifacts/<comp>/optuna.db)"
    )
    p.add_argument("--study", help="open this study (default: list them all)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: a free one)")
    p.add_argument("--artifact-store", help="the tune runs' --artifact-store, to show artifacts")


def _kernel_flags(p) -> None:
    p.add_argument("--id", help="USER/KERNEL-SLUG (default: <your user>/<competition>-tune)")
    p.add_argument("--out", type=Path, help="folder to write (default: kernel/<competition>/)")
    p.add_argument("--timeout", type=float, help="tune's budget inside the kernel (default 3600)")
    p.add_argument("--quick", action="store_true", help="the kernel runs tune --quick")
    p.add_argument(
        "--models", type=argtypes.names, help="comma-separated registry names for the search"
    )
    p.add_argument(
        "--gpu", action=argparse.BooleanOptionalAction, help="request a GPU (default: yes)"
    )
    p.add_argument("--internet", action="store_true", help="enable internet in the kernel")
    p.add_argument("--push", action="store_true", help="push it with the Kaggle API")
    p.add_argument(
        "--wait",
        action="store_true",
        help="after --push: poll the run until it ends, download its output and log into "
        "kernel/<slug>/output/ and validate submission.csv",
    )
    p.add_argument(
        "--submit",
        action="store_true",
        help="after --wait: submit the output (code competitions: the kernel version) and "
        "report the score",
    )
    p.add_argument(
        "--max-wait",
        type=float,
        help=f"seconds to wait for the run (default {_default(o.KernelOptions, 'max_wait')})",
    )


COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None] | None]] = [
    ("inspect", "print what the pipeline understands of the data (JSON)", None),
    ("models", "list the model zoo with parameter counts and recipes", _models_flags),
    ("train", "one experiment: fit a zoo model, save the run, submit", _train_flags),
    ("predict", "predict the test set from a saved model", _predict_flags),
    ("tune", "Optuna search over the zoo in a time budget, then predict and submit", _tune_flags),
    ("fetch", "download a competition's files from Kaggle into input/", _fetch_flags),
    ("submit", "validate and upload a submission, then print its score", _submit_flags),
    (
        "report",
        "tables and plots of every run and the study (artifacts/<competition>/report/)",
        _report_flags,
    ),
    ("kernel", "build (and optionally push) a self-contained Kaggle kernel that runs tune",
     _kernel_flags),
    ("dashboard", "serve the study live with optuna-dashboard (Ctrl-C stops it)",
     _dashboard_flags),
]  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    common = _common_parser()
    parser = argparse.ArgumentParser(
        prog="./run.sh",
        description="Kaggle pipeline for CSV pixel-row image classification competitions.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text, add_flags in COMMANDS:
        p = sub.add_parser(
            name, parents=[common], help=help_text, argument_default=argparse.SUPPRESS
        )
        if add_flags:
            add_flags(p)
    return parser


def build_options(ns: argparse.Namespace) -> o.Options:
    """The frozen options of this run: the flags given, the dataclass defaults for the rest."""
    values = vars(ns).copy()
    cls = HANDLERS[values.pop("command")][0]
    if values.get("quick") and cls is o.TuneOptions:
        values = {**o.TuneOptions.QUICK, **values}
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def handler(command: str) -> Callable[[o.Options], int]:
    module, func = HANDLERS[command][1].split(":")
    return getattr(importlib.import_module(module), func)


def _refresh_report(opts: o.Options) -> None:
    """Refresh the report after a command's results are saved. A failing report never fails
    the command: its results are already on disk."""
    from pipeline.report import build_report

    try:
        build_report(
            opts, study_name=getattr(opts, "study", None), storage=getattr(opts, "storage", None)
        )
    except Exception as exc:  # noqa: BLE001 - reported in one line, results are safe
        if opts.debug:
            raise
        print(f"report: not written ({type(exc).__name__}: {exc})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    opts = build_options(ns)
    from pipeline import device

    device.quiet(opts.debug)
    try:
        if opts.command in NEEDS_TENSORFLOW:
            # imported once, first, while its start-up messages are silenced (see device)
            device.configure_runtime()
        code = handler(opts.command)(opts)
        if code == 0 and opts.command in REPORTED and not getattr(opts, "no_report", False):
            _refresh_report(opts)
        return code
    except PipelineError as exc:
        if opts.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        from pipeline.interrupt import Interrupted

        saved = (
            f"; the final fit's state is saved in {exc.saved}" if getattr(exc, "saved", "") else ""
        )
        print(
            f"interrupted{f' by {exc}' if isinstance(exc, Interrupted) else ''}; completed work "
            f"is kept{saved} (rerun the same command to resume)",
            file=sys.stderr,
        )
        return exc.exit_code if isinstance(exc, Interrupted) else 130
    except Exception as exc:  # a bug, not bad input: still one line unless --debug
        known = explain(exc)  # or the machine: permissions, a full disk, a locked database
        if known is not None and not opts.debug:
            print(f"error: {known}", file=sys.stderr)
            return known.exit_code
        if opts.debug:
            raise
        print(
            f"error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
