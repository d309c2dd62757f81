"""Trials in a child process, so that neither a long search nor TensorFlow itself grows the main
process's memory.

Measured with ``bench/memory.py`` (30 one-epoch trials of the default space in one process, each
ended with ``keras.backend.clear_session()`` and ``gc.collect()``): RSS 1,511 MiB after trial 5,
2,766 MiB after trial 30, +83%: TensorFlow keeps much of what finished trials allocated. A
worker process (spawned, so its TensorFlow starts clean) runs the trials instead and is replaced
every ``TRIALS_PER_WORKER`` trials (its start-up, ~5 s, is paid once per batch). The main process
does not import TensorFlow before the final stage: the worker also measures the machine (the
device and the cost model) and reports it.

The worker knows nothing of Optuna: it gets the run's options (at start) and plan (with each
job) as records, builds the run's splits from them (:func:`pipeline.tune.splits.run_splits`), and
loads the data from the dataset cache. After every epoch it sends the validation accuracy over
the pipe and waits for the main process's answer (the trial's pruner decides there, as it would
in-process); at the end it sends back the trial's record. The main process writes everything to
the study.

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

from pipeline.options import TuneOptions
from pipeline.records import TrialRecord
from pipeline.tune.budget import TunePlan
from pipeline.tune.objective import Job, Report

TRIALS_PER_WORKER = 8
# ... or sooner, once its resident memory passes this. In the 3600 s default run (2 cores) a
# fresh worker held ~960 MiB; the first grew to 1,580 MiB over its 8 trials, the second to 2,270
# MiB over 6 (batch-32 cnn7 and resnet9s trials), taking the tree (main ~560 MiB) to 2,845 MiB.
RSS_LIMIT_MIB = 1400
PR_SET_PDEATHSIG = 1  # prctl(2)
POLL_SECONDS = 0.5  # the main process wakes this often, so that signals reach it


@dataclass(frozen=True)
class Probe:
    """Measure the machine: the device, and the cost model of these entries (cached)."""

    models: tuple[str, ...]
    cache: str


@dataclass(frozen=True)
class EpochDone:
    """Worker -> main after each epoch; the answer is the reason to stop, or None."""

    epoch: int
    accuracy: float


@dataclass(frozen=True)
class Outcome:
    state: str  # complete, pruned, failed, or probed
    record: TrialRecord | None = None
    reason: str = ""
    probed: tuple | None = None  # (runtime info, CostModel) for a Probe


class WorkerDied(RuntimeError):
    pass


class Worker:
    """The main process's handle on the trial worker (started on first use)."""

    def __init__(self, opts: TuneOptions):
        self.opts = opts
        self.process = None
        self.conn = None
        self.trials = 0

    def probe(self, models, cache: Path):
        """(runtime info, CostModel), measured in the worker."""
        out = self._request(Probe(tuple(models), str(cache)))
        if out.state != "probed":
            raise RuntimeError(f"the trial worker could not measure the machine: {out.reason}")
        return out.probed

    def run(self, job: Job, plan: TunePlan, report: Report) -> TrialRecord:
        """Run one trial in the worker; returns its record, raises ``optuna.TrialPruned`` or a
        ``RuntimeError`` carrying the failure's reason."""
        import optuna

        if self.trials >= TRIALS_PER_WORKER or self.rss_mib() > RSS_LIMIT_MIB:
            self.close()  # a fresh one starts for this trial
        out = self._request((job, plan), report)
        self.trials += 1
        if out.state == "complete":
            return out.record
        if out.state == "pruned":
            raise optuna.TrialPruned(out.reason)
        raise RuntimeError(out.reason)

    def rss_mib(self) -> float:
        """The worker's resident memory (0 when none runs)."""
        if self.process is None:
            return 0.0
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return 0.0
        kib = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")),
                   "0")  # fmt: skip
        return int(kib) / 1024

    def _request(self, message, report: Report | None = None) -> Outcome:
        """Send one request; answer its epoch reports until its outcome comes back."""
        if self.process is None or not self.process.is_alive():
            self.close()
            self._start()
        try:
            self.conn.send(message)
            while True:
                while not self.conn.poll(POLL_SECONDS):
                    if not self.process.is_alive():
                        raise self._died()
                reply = self.conn.recv()
                if not isinstance(reply, EpochDone):
                    return reply
                self.conn.send(report(reply.epoch, reply.accuracy) if report else None)
        except (EOFError, OSError):  # the pipe broke: the worker is gone
            died = self._died()
            self.close(kill=True)
            raise died from None
        except BaseException:
            self.close(kill=True)  # an interrupted or dead trial takes its worker along
            raise

    def _died(self) -> WorkerDied:
        self.process.join(timeout=10)
        return WorkerDied(
            f"the trial's worker process died (exit code {self.process.exitcode}; out of memory?)"
        )

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_main, args=(child, self.opts, os.getpid()),
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
    leave its worker training for nobody)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _main(conn, opts: TuneOptions, parent: int) -> None:
    """The worker: load once, then answer requests until it gets None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    from pipeline import artifacts, device
    from pipeline.data import load

    device.quiet(opts.debug)
    device.configure_runtime()
    ds = load(opts)
    models_dir = artifacts.tune_dir(opts.artifacts, ds.competition) / "models"
    splits: dict[TunePlan, tuple] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the main process is gone
            return
        if message is None:
            return
        if isinstance(message, Probe):
            conn.send(_probe(ds, message))
            continue
        job, plan = message
        if plan not in splits:
            from pipeline.tune.splits import run_splits

            splits = {plan: run_splits(ds, opts, plan).search}
        conn.send(_trial(conn, job, ds, splits[plan], models_dir))


def _probe(ds, message: Probe) -> Outcome:
    from pipeline.tune.budget import measure_machine
    from pipeline.tune.objective import failure_reason

    try:
        return Outcome("probed", probed=measure_machine(ds, list(message.models),
                                                        Path(message.cache)))  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - reported to the main process
        return Outcome("failed", reason=failure_reason(exc))


def _trial(conn, job: Job, ds, data, models_dir: Path) -> Outcome:
    import optuna

    from pipeline.tune.objective import failure_reason, train_trial

    def report(epoch: int, accuracy: float) -> str | None:
        conn.send(EpochDone(epoch, accuracy))
        return conn.recv()

    try:
        return Outcome("complete", train_trial(job, ds, data, models_dir, report))
    except optuna.TrialPruned as exc:
        return Outcome("pruned", reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - reported to the main process as the reason
        return Outcome("failed", reason=failure_reason(exc))
