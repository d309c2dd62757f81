"""A throwaway PostgreSQL server for the tests: initdb + pg_ctl in a temporary folder, on
127.0.0.1 and a free port, password authentication; as root it runs as the ``postgres`` user."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER, PASSWORD, DATABASE = "pipeline", "pg-secret-7f3a", "pipeline"


def binaries() -> tuple[str, str] | None:
    """(initdb, pg_ctl), from PATH or Debian's /usr/lib/postgresql/*/bin, or None."""
    for folder in [None, *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]:
        initdb = shutil.which("initdb", path=folder)
        pg_ctl = shutil.which("pg_ctl", path=folder)
        if initdb and pg_ctl:
            return initdb, pg_ctl
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """Start with :meth:`start`, stop with :meth:`stop`; :attr:`url` has the password."""

    def __init__(self) -> None:
        found = binaries()
        if found is None:
            raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self.initdb, self.pg_ctl = found
        self.root = Path(tempfile.mkdtemp(prefix="pipeline-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # the server refuses to run as root
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres", "postgres")
        self.url = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self.as_user, *cmd], check=True, capture_output=True, text=True)

    def start(self) -> Server:
        pw = self.root / "pw"
        pw.write_text(PASSWORD + "\n")
        if self.as_user:
            shutil.chown(pw, "postgres", "postgres")
        self._run(self.initdb, "-D", str(self.data), "-U", USER, f"--pwfile={pw}",
                  "--auth=scram-sha-256", "-E", "UTF8")  # fmt: skip
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.root / "log"), "-o", opts,
                  "-w", "start")  # fmt: skip
        import psycopg

        admin = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        return self

    def stop(self) -> None:
        subprocess.run([*self.as_user, self.pg_ctl, "-D", str(self.data), "-m", "immediate",
                        "stop"], capture_output=True)  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)
