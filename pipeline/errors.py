"""User-facing errors: one line, no traceback, exit status 2."""

from __future__ import annotations

import errno


class PipelineError(Exception):
    """An error caused by the user's input or environment, reported as one ``error:`` line."""

    exit_code = 2


WRITE_HINT = "choose writable folders with --artifacts and --submissions"


def explain(exc: BaseException) -> PipelineError | None:
    """The one-line error for what the machine did to us (a folder that cannot be written, a
    full disk, a damaged or locked study database), or None for a bug."""
    if isinstance(exc, OSError) and exc.errno is not None:
        where = exc.filename or "a file"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return PipelineError(f"{where}: cannot write there (permission denied); {WRITE_HINT}")
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            return PipelineError(
                f"{where}: the disk is full (or the file size limit is reached); free some space "
                f"or {WRITE_HINT}; nothing was left half-written"
            )
    text = str(exc)
    if "database or disk is full" in text:
        return PipelineError(
            f"the study database cannot grow: the disk is full; free some space or {WRITE_HINT}"
        )
    if "database is locked" in text:
        return PipelineError(
            "the study database stayed locked by another process; wait for it to finish, or run "
            "several workers on --storage journal:FILE.log or a PostgreSQL URL"
        )
    return None
