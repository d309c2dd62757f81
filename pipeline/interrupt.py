"""Ctrl-C and SIGTERM (a laptop lid, a kernel timeout, preemption) without losing work.

While a model trains, the first signal only asks training to stop: the current batch finishes,
the fit saves its checkpoint (when it keeps one), and :class:`Interrupted` ends the command with
exit status 130 (SIGINT) or 143 (SIGTERM). Outside training, or at a second signal, it stops at
once. Completed trials live in the study, so the same command resumes.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Interrupted(KeyboardInterrupt):
    """Raised at a safe point after SIGINT/SIGTERM; ``exit_code`` is 128 + the signal."""

    def __init__(self, signum: int, saved: str = ""):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.saved = saved

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_requested: int | None = None
_training = 0


def _handler(signum, frame) -> None:
    global _requested
    if _requested is not None or _training == 0:
        raise Interrupted(signum)
    _requested = signum  # training stops after its current batch


def install(signals=(signal.SIGINT, signal.SIGTERM)) -> None:
    """Route these signals here (main thread only; elsewhere Python's defaults stay)."""
    if threading.current_thread() is threading.main_thread():
        for signum in signals:
            signal.signal(signum, _handler)


def requested() -> int | None:
    """The signal waiting to stop training, if any."""
    return _requested


def take() -> int | None:
    """The signal waiting to stop training, which is then no longer waiting (it was passed on:
    to the worker process, see pipeline.worker)."""
    global _requested
    signum, _requested = _requested, None
    return signum


@contextlib.contextmanager
def training() -> Iterator[None]:
    """While inside, a first signal waits for the end of the current batch."""
    global _training
    _training += 1
    try:
        yield
    finally:
        _training -= 1
