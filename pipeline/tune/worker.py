"""Trials in a child process, so that a long search cannot grow the main process's memory.

Measured with ``bench/memory.py`` (30 one-epoch trials of the default space in one process, each
ended with ``keras.backend.clear_session()`` and ``gc.collect()``): RSS 1,511 MiB after trial 5,
2,766 MiB after trial 30, +83%: TensorFlow keeps much of what finished trials allocated. A
worker process (spawned, so its TensorFlow starts clean) runs the trials instead and is replaced
every ``TRIALS_PER_WORKER`` trials (its start-up, ~5 s, is paid once per batch). It loads the
data from the dataset cache, reports every epoch to the study through the study's storage (as the
trial would in-process, so the pruner decides the same way), writes the trial's record there, and
sends back only the outcome over a pipe.

Ctrl-C reaches the worker too (same process group): it ignores it, and the main process stops it.
A worker that dies (the out-of-memory killer) fails its trial with the reason, and a new one
starts for the next.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from pipeline.tune.objective import Job

TRIALS_PER_WORKER = 8
PR_SET_PDEATHSIG = 1  # prctl(2)


@dataclass(frozen=True)
class Setup:
    """What a worker needs to run any trial of this search (picklable)."""

    data_dir: str
    cache_dir: str
    competition: str | None
    image_shape: tuple[int, int, int] | None
    channels_first: bool
    seed: int
    limit: int | None
    search_rows: int | None
    storage: str
    study: str
    pruner: str
    max_epochs: int
    models_dir: str
    artifact_store: str | None
    debug: bool


@dataclass(frozen=True)
class Outcome:
    state: str  # complete, pruned or failed
    value: float | None = None
    reason: str = ""


class Worker:
    """The main process's handle on the trial worker (started on first use)."""

    def __init__(self, setup: Setup):
        self.setup = setup
        self.process = None
        self.conn = None
        self.trials = 0

    def run(self, job: Job) -> float:
        """Run one trial in the worker; returns its value, raises ``optuna.TrialPruned`` or a
        ``RuntimeError`` carrying the failure's reason (written on the trial too)."""
        import optuna

        if self.process is None or not self.process.is_alive() or self.trials >= TRIALS_PER_WORKER:
            self.close()
            self._start()
        self.trials += 1
        self.conn.send(job)
        try:
            while not self.conn.poll(0.5):  # wakes up so that signals reach this process
                if not self.process.is_alive():
                    raise RuntimeError(
                        f"the trial's worker process died (exit code {self.process.exitcode}; "
                        "out of memory?)"
                    )
            outcome: Outcome = self.conn.recv()
        except BaseException:
            self.close(kill=True)  # an interrupted or dead trial takes its worker along
            raise
        if outcome.state == "complete":
            return float(outcome.value)
        if outcome.state == "pruned":
            raise optuna.TrialPruned(outcome.reason)
        raise RuntimeError(outcome.reason)

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_main, args=(child, self.setup, os.getpid()),
                                   daemon=True)  # fmt: skip
        self.process.start()
        child.close()
        self.trials = 0

    def close(self, kill: bool = False) -> None:
        """Stop the worker (politely, unless ``kill``)."""
        if self.process is None:
            return
        if not kill and self.process.is_alive():
            try:
                self.conn.send(None)
                self.process.join(timeout=30)
            except (OSError, EOFError):
                pass
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=10)
        self.conn.close()
        self.process = self.conn = None


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this process when its parent dies (a SIGKILLed tune would otherwise
    leave its worker training, and writing to the study, for nobody)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _main(conn, setup: Setup, parent: int) -> None:
    """The worker: load once, then run the trials it is sent until it gets None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    import optuna

    from pipeline import device
    from pipeline.data import holdout, load_competition, search_split
    from pipeline.tune.objective import train_trial
    from pipeline.tune.store import open_store
    from pipeline.tune.study import make_pruner, make_storage, quiet_optuna

    device.quiet(setup.debug)
    device.configure_runtime()
    quiet_optuna()
    ds = load_competition(Path(setup.data_dir), cache_dir=Path(setup.cache_dir),
                          image_shape=setup.image_shape, channels_first=setup.channels_first,
                          competition=setup.competition)  # fmt: skip
    data = search_split(holdout(ds, setup.seed, setup.limit), setup.search_rows, setup.seed)
    study = optuna.load_study(study_name=setup.study, storage=make_storage(setup.storage),
                              pruner=make_pruner(setup.pruner, setup.max_epochs))  # fmt: skip
    store = open_store(setup.artifact_store)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # the main process is gone
            return
        if job is None:
            return
        trial = optuna.trial.Trial(study, job.trial_id)
        try:
            value = train_trial(trial, job, ds, data, Path(setup.models_dir), store)
            outcome = Outcome("complete", value)
        except optuna.TrialPruned as exc:
            outcome = Outcome("pruned", reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - reported to the main process as the reason
            outcome = Outcome("failed", reason=f"{type(exc).__name__}: {str(exc)[:300]}")
        conn.send(outcome)
