"""The one adapter over the official ``kaggle`` client (fetch, submit, kernels).

``import kaggle`` authenticates at import time and prints help text when credentials are missing,
so the package is imported only inside :func:`client`, after :func:`find_credentials` has checked
them the way the client does. Kaggle's HTTP errors become one :class:`PipelineError` line.
Credentials are never printed, logged or copied: only *where* they were found is reported.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline import runtime
from pipeline.errors import PipelineError

ACCOUNT_URL = "https://www.kaggle.com/settings"
UPLOAD_FAILED = (
    "Could not submit to competition"  # KaggleApi.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE
)


def config_dir() -> Path:
    """The folder the client reads kaggle.json from (KAGGLE_CONFIG_DIR, ~/.kaggle, XDG)."""
    d = os.environ.get("KAGGLE_CONFIG_DIR")
    if d:
        return Path(d)
    home = Path.home() / ".kaggle"
    xdg = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "kaggle"
    # the client falls back to the XDG folder on Linux when ~/.kaggle does not exist
    return xdg if sys.platform.startswith("linux") and not home.exists() and xdg.exists() else home


def find_credentials() -> str:
    """Where the client will find credentials, in its own order; never the secret itself."""
    token = os.environ.get("KAGGLE_API_TOKEN")
    if token:
        return "KAGGLE_API_TOKEN"
    for name in ("access_token", "access_token.txt"):
        f = Path.home() / ".kaggle" / name
        if f.is_file() and f.read_text().strip():
            return str(f)
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    f = config_dir() / "kaggle.json"
    if f.is_file():
        mode = f.stat().st_mode
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            print(f"warning: {f} is readable by other users; run: chmod 600 {f}", file=sys.stderr)
        return str(f)
    raise PipelineError(
        "no Kaggle credentials: create an API token on "
        f"{ACCOUNT_URL} (API section) and save it as ~/.kaggle/access_token or set "
        "KAGGLE_API_TOKEN (legacy: ~/.kaggle/kaggle.json or KAGGLE_USERNAME+KAGGLE_KEY)"
    )


def client():
    """An authenticated ``KaggleApi`` (the official client), without its import-time chatter."""
    source = find_credentials()
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        try:
            from kaggle.api.kaggle_api_extended import KaggleApi
        except ImportError:
            raise PipelineError(
                "the kaggle package is not installed; run ./run.sh (it installs requirements.txt)"
            ) from None
        api = KaggleApi()
        # the client fixes its config folder when first imported; follow the current environment
        api.config_dir = str(config_dir())
        api.config = str(config_dir() / "kaggle.json")
        try:
            with translate_errors():
                api.authenticate()
        except SystemExit:
            raise PipelineError(
                f"Kaggle rejected the credentials from {source}; create a new API token on "
                f"{ACCOUNT_URL}"
            ) from None
    return api


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _server_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    with contextlib.suppress(Exception):
        body = response.json()
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])[:200]
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


@contextlib.contextmanager
def translate_errors(competition: str | None = None, api=None) -> Iterator[None]:
    """Turn the client's exceptions into one plain line (exit 2)."""
    import requests

    try:
        yield
    except requests.exceptions.ConnectionError:
        if runtime.in_kernel():
            raise PipelineError(
                "cannot reach Kaggle (internet is off in this kernel): save a version of the "
                "kernel and submit its output /kaggle/working/submission.csv from the kernel's "
                "Output tab (or: kaggle competitions submit -k USER/KERNEL -f submission.csv -v N)"
            ) from None
        raise PipelineError(
            "cannot reach Kaggle (network unreachable); check your connection or proxy and retry"
        ) from None
    except requests.exceptions.Timeout:
        raise PipelineError("Kaggle did not answer in time; retry later") from None
    except requests.exceptions.HTTPError as exc:
        code = _status(exc)
        detail = _server_message(exc)
        if code == 401:
            raise PipelineError(
                f"Kaggle refused the credentials (401: {detail}); create a new API token on "
                f"{ACCOUNT_URL}"
            ) from None
        if code == 403 and competition:
            raise PipelineError(
                f"Kaggle says forbidden for competition {competition!r} (403: {detail}); accept "
                f"its rules at https://www.kaggle.com/competitions/{competition}/rules "
                "(or check the slug's spelling)"
            ) from None
        if code == 404 and competition:
            raise PipelineError(
                f"no competition {competition!r} on Kaggle (404: {detail}); check the slug in "
                "the competition's URL"
            ) from None
        if code == 429 or "limit" in detail.lower():
            left = ""
            if competition and api is not None:
                with contextlib.suppress(Exception):
                    lim = api.competition_get_submission_limits(competition)
                    left = (
                        f"; {lim.num_allowed_now} submissions left now ({lim.num_today} made today)"
                    )
            raise PipelineError(
                f"Kaggle's submission limit is reached ({code}: {detail}){left}; "
                "try again after the daily reset (00:00 UTC)"
            ) from None
        raise PipelineError(f"Kaggle answered {code}: {detail}") from None


def download_competition(competition: str, folder: Path) -> Path:
    """Download a competition's files as one zip into ``folder``; returns the zip's path."""
    api = client()
    folder.mkdir(parents=True, exist_ok=True)
    with translate_errors(competition, api):
        api.competition_download_files(competition, path=str(folder), force=True, quiet=True)
    found = sorted(folder.glob("*.zip")) or sorted(p for p in folder.iterdir() if p.is_file())
    if not found:
        raise PipelineError(f"Kaggle sent no file for competition {competition!r}")
    return found[0]


def submit(path: Path, competition: str, message: str) -> dict[str, Any]:
    """Upload ``path``; returns ``{"ref", "message"}`` of the created submission."""
    api = client()
    with translate_errors(competition, api):
        response = api.competition_submit(str(path), message, competition, quiet=True)
    if response.message == UPLOAD_FAILED:
        raise PipelineError(f"{path}: the upload to Kaggle failed; retry ./run.sh submit")
    return {"ref": response.ref, "message": response.message}


def submissions(competition: str) -> list[dict[str, Any]]:
    """The user's submissions to ``competition``, newest first, as plain dicts."""
    api = client()
    with translate_errors(competition, api):
        found = api.competition_submissions(competition) or []
    out = []
    for s in found:
        if s is None:
            continue
        out.append(
            {
                "ref": s.ref,
                "status": getattr(s.status, "name", str(s.status)),
                "public_score": s.public_score,
                "error_description": s.error_description,
                "description": s.description,
                "file_name": s.file_name,
                "date": s.date.isoformat() if s.date else None,
            }
        )
    return out


def kernel_status(kernel: str, competition: str | None = None) -> tuple[str, str]:
    """(status name, failure message) of the kernel's latest run: QUEUED, RUNNING, COMPLETE,
    ERROR, CANCEL_REQUESTED, CANCEL_ACKNOWLEDGED."""
    api = client()
    with translate_errors(competition, api):
        try:
            response = api.kernels_status(kernel)
        except ValueError as exc:  # the client's own "cannot access kernel" message
            raise PipelineError(f"kernel {kernel}: {str(exc)[:200]}") from None
    status = getattr(response.status, "name", str(response.status))
    return status, response.failure_message or ""


def kernel_output(kernel: str, folder: Path, competition: str | None = None) -> list[Path]:
    """Download the kernel's output files and its log into ``folder``; returns their paths."""
    api = client()
    folder.mkdir(parents=True, exist_ok=True)
    with translate_errors(competition, api):
        try:
            files, _ = api.kernels_output(kernel, str(folder), force=True, quiet=True)
        except ValueError as exc:
            raise PipelineError(f"kernel {kernel}: {str(exc)[:200]}") from None
    return [Path(f) for f in files]


def is_code_competition(competition: str) -> bool:
    """True when the competition takes only kernel submissions (Kaggle's code competitions)."""
    api = client()
    with translate_errors(competition, api):
        found = api.competitions_list(search=competition, category="all")
    for c in getattr(found, "competitions", None) or []:
        if str(c.ref).rstrip("/").split("/")[-1] == competition:
            return bool(c.is_kernels_submissions_only)
    return False


def submit_kernel(
    competition: str, kernel: str, version: int | None, message: str, file_name: str
) -> dict[str, Any]:
    """Submit a kernel version's output file to a code competition; returns ``{"ref",
    "message"}`` of the created submission."""
    api = client()
    with translate_errors(competition, api):
        try:
            response = api.competition_submit_code(
                file_name, message, competition, kernel=kernel, kernel_version=version, quiet=True
            )
        except ValueError as exc:
            raise PipelineError(f"--kernel {kernel}: {exc}") from None
    return {"ref": response.ref, "message": response.message}
