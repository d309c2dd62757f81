"""The pipeline's own Keras callbacks: ``keras.callbacks.Callback`` subclasses.

Keras' built-ins do the rest (best weights: ``EarlyStopping(restore_best_weights=True)``;
plateaus: ``ReduceLROnPlateau``). This module imports Keras: import it only where training
happens (inside :func:`pipeline.training.fit` and the tune command's trial and final fit), never
at the top of another module, so that importing ``pipeline`` stays free of TensorFlow.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.device import configure_runtime

configure_runtime()  # TensorFlow imported once, its start-up messages silenced
import keras  # noqa: E402


def deadline_at(deadline) -> float:
    """The deadline's ``time.monotonic()`` seconds now (a number, or a function returning it,
    re-read every epoch)."""
    return deadline() if callable(deadline) else deadline


class Deadline(keras.callbacks.Callback):
    """Stop after an epoch when another as long as it would end past ``deadline`` (re-read
    after every epoch). Stopping only once the deadline was reached overran by up to an epoch:
    at --quick a cnn5 trial ran a third 16 s epoch past the search's deadline and the run
    ended 26 s over its 150 s. A cosine schedule to the same deadline (CosineToDeadline) plans
    with the slowest of its recent epochs, so it never plans an epoch this stops."""

    def __init__(self, deadline):
        super().__init__()
        self.deadline = deadline
        self.hit = False
        self.began = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.began = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        if now + (now - self.began) > deadline_at(self.deadline):
            self.hit = True
            self.model.stop_training = True


class EpochTimer(keras.callbacks.Callback):
    """Seconds of each epoch (training and validation)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self._t = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._t)
        if logs is not None:
            logs["seconds"] = round(self.seconds[-1], 3)  # into the history


class StopOnNaN(keras.callbacks.Callback):
    """Raise ``FloatingPointError`` at the first NaN/inf loss (Keras' TerminateOnNaN prints
    to stdout and still runs the epoch's validation)."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise FloatingPointError("loss became NaN/inf; lower the learning rate")


class CosineToDeadline(keras.callbacks.Callback):
    """Cosine decay of the learning rate to 1% over the planned epochs. With a deadline the
    plan is redone after every epoch from the measured epoch times, so the decay ends when
    the budget does (estimates made before training were 25-40% pessimistic here). Another
    epoch is planned only when it fits even if it is as slow as the slowest of the last
    ``RECENT`` (a mean-paced plan overran a 900 s budget when epochs took 45 s or 80 s at
    random). Each epoch's seconds left and plan go into the history."""

    RECENT = 3

    def __init__(self, lr0: float, epochs: int, deadline=None, planned: int | None = None):
        super().__init__()
        self.lr0, self.epochs, self.deadline = lr0, max(epochs, 1), deadline
        self.n = planned or self.epochs  # a resumed fit goes on with its plan
        self.started = 0.0
        self.last_end = 0.0
        self.recent: list[float] = []  # seconds from one epoch's end to the next's
        self.first: int | None = None
        self.done = 0

    def on_train_begin(self, logs=None):
        self.started = self.last_end = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        if self.first is None:
            self.first = epoch
        t = min(epoch / self.n, 1.0)
        self.model.optimizer.learning_rate = self.lr0 * (
            0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))
        )

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            )
        self.done = epoch + 1
        now = time.monotonic()
        self.recent = [*self.recent[1 - self.RECENT :], now - self.last_end]
        self.last_end = now
        if self.deadline is not None:
            left = deadline_at(self.deadline) - now
            per = max((now - self.started) / (self.done - self.first), *self.recent)
            self.n = max(self.done, min(self.epochs, self.done + int(left // per)))
            if logs is not None:
                logs["seconds_left"] = round(left, 1)
                logs["planned_epochs"] = self.n
        if self.done >= self.n:
            self.model.stop_training = True


class Warmup(keras.callbacks.Callback):
    """Scale the learning rate linearly from 1/steps to 1 over the first ``epochs`` epochs
    (per batch), on top of whatever rate the epoch started with."""

    def __init__(self, epochs: float, initial_epoch: int = 0):
        super().__init__()
        self.epochs, self.initial_epoch = epochs, initial_epoch
        self.step = 0
        self.total = 1
        self.target = 0.0
        self.last_set = None

    def _lr(self) -> float:
        return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_train_begin(self, logs=None):
        steps = self.params.get("steps") or 1
        self.total = max(1, round(steps * self.epochs))
        self.step = min(self.initial_epoch * steps, self.total + 1)

    def on_epoch_begin(self, epoch, logs=None):
        lr = self._lr()
        if self.last_set is None or abs(lr - self.last_set) > 1e-12 * max(lr, 1e-30):
            self.target = lr  # a schedule set this epoch's rate (or the first epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.step <= self.total:
            self.step += 1
            self.last_set = self.target * min(self.step, self.total) / self.total
            self.model.optimizer.learning_rate = self.last_set


class EpochReport(keras.callbacks.Callback):
    """After every epoch, ``report(epoch, val_accuracy)`` (the 1-based epoch, as the plots show
    it): a trial's pruner, in this process or across the worker's pipe. A reason returned
    stops the trial with ``optuna.TrialPruned``."""

    def __init__(self, report: Callable[[int, float], str | None]):
        super().__init__()
        self.report = report

    def on_epoch_end(self, epoch, logs=None):
        import optuna

        acc = (logs or {}).get("val_accuracy")
        if acc is None:
            return
        reason = self.report(epoch + 1, float(acc))
        if reason:
            raise optuna.TrialPruned(reason)


class EpochLog(keras.callbacks.Callback):
    """One progress line per epoch through ``log`` (the tune command's printer)."""

    def __init__(self, log: Callable[[str], None], prefix: str = ""):
        super().__init__()
        self.log, self.prefix = log, prefix

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        acc, loss = logs.get("val_accuracy", float("nan")), logs.get("loss", float("nan"))
        self.log(f"{self.prefix}epoch {epoch + 1} val_accuracy {acc:.4f} loss {loss:.4f}")


class ValidationPassTimer(keras.callbacks.Callback):
    """Appends the seconds per image of each epoch's validation pass to ``per_image``."""

    def __init__(self, images: int, per_image: list[float]):
        super().__init__()
        self.images, self.per_image = max(images, 1), per_image
        self.t0 = 0.0

    def on_test_begin(self, logs=None):
        self.t0 = time.monotonic()

    def on_test_end(self, logs=None):
        self.per_image.append((time.monotonic() - self.t0) / self.images)


class Checkpoint(keras.callbacks.Callback):
    """The fit's whole state after every epoch: weights with the optimizer's state, the
    epoch, the history and the schedule's plan, written atomically (weights first, then the
    state file that names them), so a killed fit resumes where it stood
    (:func:`pipeline.training.fit`'s ``checkpoint``)."""

    def __init__(self, folder, history: dict, schedule=None):
        super().__init__()
        self.folder = Path(folder)
        self.history = {k: list(v) for k, v in history.items()}
        self.schedule = schedule
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))
        self.save(epoch + 1, f"epoch-{epoch + 1}")

    def save(self, epoch: int, name: str) -> None:
        from pipeline.fsutil import atomic_path, atomic_write_json

        weights = f"{name}.weights.h5"
        with atomic_path(self.folder / weights) as tmp:
            self.model.save_weights(tmp)
        state = {
            "epoch": epoch,
            "weights": weights,
            "history": self.history,
            "planned_epochs": getattr(self.schedule, "n", None),
        }
        atomic_write_json(self.folder / "state.json", state)
        for old in self.folder.glob("*.weights.h5"):
            if old.name != weights:
                old.unlink(missing_ok=True)

    def save_partial(self) -> None:
        """Mid-epoch (a signal): the weights so far; the epoch is run again on resume."""
        self.save(self.epoch, f"epoch-{self.epoch}-partial")


class StopOnSignal(keras.callbacks.Callback):
    """After a SIGINT/SIGTERM (see :mod:`pipeline.interrupt`): finish the batch, save the
    checkpoint if there is one, and raise ``Interrupted``."""

    def __init__(self, checkpoint=None):
        super().__init__()
        self.checkpoint = checkpoint

    def on_train_batch_end(self, batch, logs=None):
        from pipeline import interrupt

        signum = interrupt.requested()
        if signum is None:
            return
        saved = ""
        if self.checkpoint is not None:
            self.checkpoint.save_partial()
            saved = str(self.checkpoint.folder)
        raise interrupt.Interrupted(signum, saved)
