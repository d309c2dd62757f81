"""User-facing errors: one line, no traceback, exit status 2."""


class PipelineError(Exception):
    """An error caused by the user's input or environment, reported as one ``error:`` line."""

    exit_code = 2
