"""Where TensorFlow works during ``tune``: a child process (the worker), so that neither a long
search, nor k folds, nor TensorFlow itself grows the main process's memory; or, with
``--isolate none``, this process.

TensorFlow keeps what finished fits allocated (:mod:`pipeline.memory`): the worker (spawned,
so its TensorFlow starts clean) runs every task (measuring the machine, each trial, each fit of
the final stage, each prediction) and is replaced every :data:`TASKS_PER_WORKER` tasks that
train, once its memory passes :data:`RSS_LIMIT_MIB`, or before a fit that would take it past
:data:`~pipeline.memory.PROCESS_LIMIT_MIB` (its start-up, ~5 s, is paid then). The main process
runs Optuna and the decisions and never imports TensorFlow.

A task is a picklable record with ``run(env, report)``: ``env`` (:class:`Env`) holds what the
worker loaded once (the options, the dataset, the run's splits); ``report`` sends a trial's
epoch to the main process and returns its pruner's answer. What ``run`` returns comes back; what
it raises is raised again here.

Signals: the worker ignores SIGINT and SIGTERM; the main process, on its first one while a task
runs, asks the worker to stop (SIGUSR1): a fit finishes its batch, saves its checkpoint and the
main process raises :class:`~pipeline.interrupt.Interrupted` naming it. A worker whose main
process dies is killed by the kernel (PR_SET_PDEATHSIG); one that dies (the out-of-memory
killer) fails its task with the reason, and a new one starts for the next.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
from dataclasses import dataclass
from typing import Any

from pipeline import artifacts, interrupt
from pipeline.data import split as data_split
from pipeline.memory import FRESH_WORKER_MIB, PROCESS_LIMIT_MIB, rss_mib
from pipeline.options import TuneOptions

TASKS_PER_WORKER = 8
# ... or sooner, past this: a second worker of the 3600 s run grew from 962 to 2,270 MiB over six
# small trials (bench/README.md, *Memory of the whole run*).
RSS_LIMIT_MIB = 1400
PR_SET_PDEATHSIG = 1  # prctl(2)
POLL_SECONDS = 0.5  # the main process wakes this often, so that signals reach it


class Env:
    """What every task reads, loaded once per process: the options, the dataset, the run's
    splits (by the trials' rows), and where the run's files go."""

    def __init__(self, opts: TuneOptions, ds):
        self.opts, self.ds = opts, ds
        self.tune_dir = artifacts.tune_dir(opts.artifacts, ds.competition)
        self.models_dir = self.tune_dir / "models"
        self._splits: dict[int | None, data_split.RunSplits] = {}

    def splits(self, search_rows: int | None) -> data_split.RunSplits:
        if search_rows not in self._splits:
            self._splits = {search_rows: data_split.run_splits(self.ds, self.opts, search_rows)}
        return self._splits[search_rows]


@dataclass(frozen=True)
class EpochDone:
    """Worker -> main after each epoch of a trial; the answer is the reason to stop, or None."""

    epoch: int
    accuracy: float


@dataclass(frozen=True)
class Outcome:
    state: str  # done, raised or interrupted
    value: Any = None  # the task's result, or the exception it raised
    saved: str = ""  # interrupted: the checkpoint folder saved


class WorkerDied(RuntimeError):
    pass


@dataclass(frozen=True)
class Ready:
    """A task that does nothing: it returns once the worker has loaded."""

    def run(self, env, report=None):
        return None


class InProcess:
    """``--isolate none``: every task in this process."""

    def __init__(self, opts: TuneOptions, ds):
        from pipeline.device import configure_runtime

        configure_runtime(opts.precision)
        self.env = Env(opts, ds)
        self.cost = None  # as the worker's; this process is never replaced

    def run(self, task, report=None):
        return task.run(self.env, report)

    def ready(self) -> None:
        pass

    def close(self, kill: bool = False) -> None:
        pass


class Worker:
    """The main process's handle on the worker (started on first use)."""

    def __init__(self, opts: TuneOptions):
        self.opts = opts
        self.process = None
        self.conn = None
        self.tasks = 0
        self.cost = None  # the measured CostModel, once known: what a fit will add

    def run(self, task, report=None):
        """Run one task in the worker; returns its result, raises what it raised (a
        ``WorkerDied`` when the worker died)."""
        if self.due(task):
            self.close()  # a fresh one starts for this task
        out = self._request(task, report)
        self.tasks += bool(getattr(task, "trains", False))  # measuring or predicting: no
        if out.state == "done":
            return out.value
        if out.state == "interrupted":
            raise interrupt.Interrupted(out.value, out.saved)
        raise out.value

    def due(self, task) -> bool:
        """Whether the worker should be replaced before ``task``: it trained its share of
        tasks, holds more than RSS_LIMIT_MIB, or ``task``'s fit would take it past
        PROCESS_LIMIT_MIB while a new worker would hold less (FRESH_WORKER_MIB)."""
        if self.process is None:
            return False
        rss = self.rss_mib()
        if self.tasks >= TASKS_PER_WORKER or rss > RSS_LIMIT_MIB:
            return True
        footprint = getattr(task, "footprint", None)
        if self.cost is None or footprint is None or rss <= FRESH_WORKER_MIB:
            return False
        return rss + self.cost.fit_mib(*footprint()) > PROCESS_LIMIT_MIB

    def ready(self) -> None:
        """Replace the worker now if it is due, and return once it has loaded: a stage that
        plans by its own measured pace (the folds) then does not time a start-up."""
        self.run(Ready())

    def rss_mib(self) -> float:
        """The worker's resident memory (0 when none runs)."""
        return rss_mib(self.process.pid) if self.process is not None else 0.0

    def _request(self, task, report) -> Outcome:
        """Send one task; answer its epoch reports until its outcome comes back. A first
        signal here asks the worker to stop (SIGUSR1) and waits for its outcome."""
        if self.process is None or not self.process.is_alive():
            self.close()
            self._start()
        relayed = None
        try:
            self.conn.send(task)
            with interrupt.training():
                while True:
                    while not self.conn.poll(POLL_SECONDS):
                        if not self.process.is_alive():
                            raise self._died()
                        if interrupt.requested() and relayed is None:
                            relayed = interrupt.take()
                            os.kill(self.process.pid, signal.SIGUSR1)
                    reply = self.conn.recv()
                    if not isinstance(reply, EpochDone):
                        break
                    self.conn.send(report(reply.epoch, reply.accuracy) if report else None)
        except (EOFError, OSError):  # the pipe broke: the worker is gone
            died = self._died()
            self.close(kill=True)
            raise died from None
        except BaseException:
            self.close(kill=True)  # a second signal, or a dead task, takes its worker along
            raise
        if relayed is not None:  # the main process's signal, not the relay's
            return Outcome("interrupted", relayed, getattr(reply, "saved", ""))
        return reply

    def _died(self) -> WorkerDied:
        self.process.join(timeout=10)
        return WorkerDied(
            f"the worker process died (exit code {self.process.exitcode}; out of memory?)"
        )

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_main, args=(child, self.opts, os.getpid()),
                                   daemon=True)  # fmt: skip
        self.process.start()
        child.close()
        self.tasks = 0

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


def open_runner(opts: TuneOptions, ds) -> InProcess | Worker:
    """The worker (``--isolate process``, the default) or this process."""
    return Worker(opts) if opts.isolate == "process" else InProcess(opts, ds)


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this process when its parent dies (a SIGKILLed tune would otherwise
    leave its worker training for nobody)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _main(conn, opts: TuneOptions, parent: int) -> None:
    """The worker: load once, then run tasks until it gets None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    interrupt.install((signal.SIGUSR1,))  # the main process's request to stop
    _die_with_parent(parent)
    from pipeline import device
    from pipeline.data import load

    device.quiet(opts.debug)
    device.configure_runtime(opts.precision)
    env = Env(opts, load(opts))
    while True:
        try:
            task = conn.recv()
        except interrupt.Interrupted:  # a stop request that came after its task ended
            continue
        except (EOFError, OSError):  # the main process is gone
            return
        if task is None:
            return
        conn.send(_run(conn, task, env))


def _run(conn, task, env: Env) -> Outcome:
    def report(epoch: int, accuracy: float) -> str | None:
        conn.send(EpochDone(epoch, accuracy))
        return conn.recv()

    try:
        return Outcome("done", task.run(env, report))
    except interrupt.Interrupted as exc:
        return Outcome("interrupted", exc.signum, exc.saved)
    except Exception as exc:  # noqa: BLE001 - raised again in the main process
        try:
            pickle.dumps(exc)
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its text
            exc = RuntimeError(f"{type(exc).__name__}: {str(exc)[:300]}")
        return Outcome("raised", exc)
