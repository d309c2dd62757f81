"""``dashboard``: serve a study live with optuna-dashboard (Ctrl-C stops it).

The storage is ``--storage URL`` or the competition's SQLite file; with ``--artifact-store`` the
dashboard also lists the models and histories the trials uploaded there.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading

from pipeline.errors import PipelineError
from pipeline.options import DashboardOptions


def run(opts: DashboardOptions) -> int:
    from pipeline import artifacts
    from pipeline.storage import (
        make_storage,
        masked,
        quiet_optuna,
        storage_error,
        storage_url,
    )

    try:
        from optuna_dashboard import wsgi
    except ImportError:
        raise PipelineError(
            "optuna-dashboard is not installed; run ./run.sh (it installs requirements.txt)"
        ) from None
    if opts.storage:
        url = opts.storage
    else:
        from pipeline.data import load

        ds = load(opts)
        db = artifacts.competition_dir(opts.artifacts, ds.competition) / "optuna.db"
        if not db.is_file():
            raise PipelineError(f"{db}: no study database yet; run ./run.sh tune first")
        url = storage_url(None, db.parent)
    quiet_optuna()
    try:
        storage = make_storage(url)
        names = [s.study_name for s in storage.get_all_studies()]
    except PipelineError:
        raise
    except Exception as exc:  # noqa: BLE001 - unreachable server, bad password, no database
        raise storage_error(url, exc) from None
    if opts.study and opts.study not in names:
        known = ", ".join(names)
        raise PipelineError(f"no study {opts.study!r} in {masked(url)}; known: {known}")
    store = None
    if opts.artifact_store:
        from pipeline.storage import open_store

        store = open_store(opts.artifact_store)
    httpd = listen(wsgi(storage, artifact_store=store), opts.host, opts.port or 0)
    address = f"http://{opts.host}:{httpd.server_port}/dashboard/"
    if opts.study:
        study_id = storage.get_study_id_from_name(opts.study)
        address += f"studies/{study_id}"
    print(f"dashboard: {address} ({len(names)} studies; Ctrl-C stops it)", flush=True)
    serve_until_signal(httpd)
    print("dashboard: stopped", file=sys.stderr)
    return 0


def listen(app, host: str, port: int):
    """A threaded wsgiref server for ``app`` bound to host:port (0: the OS picks a free port)."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Quiet(WSGIRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            pass

    try:
        return make_server(host, port, app, server_class=Server, handler_class=Quiet)
    except OSError as exc:
        raise PipelineError(
            f"dashboard: cannot listen on {host}:{port} ({exc.strerror}); pick another --port"
        ) from None


def serve_until_signal(httpd) -> None:
    """Serve until SIGINT or SIGTERM, then stop at once.

    The server runs in a daemon thread and the main thread only waits for the signal: when
    Ctrl-C landed inside a request served on the main thread, wsgiref's bare ``except`` turned
    the KeyboardInterrupt into an error page and the server went on serving.
    """
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=httpd.serve_forever, name="dashboard", daemon=True)
    thread.start()
    try:
        stop.wait()
    finally:
        httpd.shutdown()
        httpd.server_close()
        for s, handler in previous.items():
            signal.signal(s, handler)
