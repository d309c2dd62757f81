"""A local stand-in for Kaggle's API, driven by the real ``kaggle`` client.

The 2.x client POSTs every call to ``<base>/v1/<Service>/<Method>``; with
``KAGGLE_API_ENVIRONMENT=LOCALHOST`` the base is ``http://localhost/api``, and ``HTTP_PROXY``
pointing here makes every request arrive in absolute form, so we route on the URL's path.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class FakeKaggle:
    """What the fake answers, and everything it saw."""

    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)
    zip_bytes: bytes = b""
    # statuses ListSubmissions reports for the newest submission, one per call (last repeats)
    statuses: list[str] = field(default_factory=lambda: ["COMPLETE"])
    public_score: str = "0.91230"
    error_description: str = ""
    fail: dict[str, tuple[int, str]] = field(default_factory=dict)  # method -> (status, message)
    limits: dict[str, Any] = field(
        default_factory=lambda: {"numToday": 5, "numTotal": 5, "numAllowedNow": 0}
    )
    submitted: list[dict[str, Any]] = field(default_factory=list)
    list_calls: int = 0
    # kernels: the statuses GetKernelSessionStatus reports, one per call (last repeats), the
    # output files and log of the run, whether competitions take kernel submissions only
    kernel_statuses: list[str] = field(default_factory=lambda: ["COMPLETE"])
    kernel_failure: str = ""
    kernel_files: dict[str, bytes] = field(default_factory=dict)
    kernel_log: str = ""
    code_competition: bool = False
    status_calls: int = 0

    def methods(self) -> list[str]:
        return [r["method"] for r in self.requests]

    def env(self) -> dict[str, str]:
        proxy = f"http://127.0.0.1:{self.port}"
        return {
            "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
            "HTTP_PROXY": proxy,
            "http_proxy": proxy,
            "NO_PROXY": "",
            "no_proxy": "",
        }

    def handle(self, verb: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if verb == "PUT" and path.startswith("/upload/"):
            token = path.rsplit("/", 1)[1]
            self.uploads[token] = body
            self.requests.append({"method": "Upload", "token": token})
            return _json(200, {})
        if verb == "GET" and path.startswith("/kernel-output/"):
            name = path.rsplit("/", 1)[1]
            self.requests.append({"method": "GetOutputFile", "name": name})
            return 200, {"Content-Type": "application/octet-stream"}, self.kernel_files[name]
        if verb == "GET" and path.startswith("/files/"):
            self.requests.append({"method": "GetZip", "path": path})
            return 200, {"Content-Type": "application/zip"}, self.zip_bytes
        if verb != "POST" or "/api/v1/" not in path:
            return _json(404, {"code": 404, "message": f"no route {verb} {path}"})
        method = path.rsplit("/", 1)[1]
        payload = json.loads(body or b"{}")
        self.requests.append({"method": method, "body": payload})
        if method in self.fail:
            code, message = self.fail[method]
            return _json(code, {"code": code, "message": message})
        if method == "StartSubmissionUpload":
            token = f"tok{len(self.uploads) + 1}"
            return _json(200, {"token": token, "createUrl": f"http://localhost/upload/{token}"})
        if method == "CreateSubmission":
            ref = 1000 + len(self.submitted)
            self.submitted.append({**payload, "ref": ref})
            return _json(200, {"message": "Successfully submitted", "ref": ref})
        if method == "ListSubmissions":
            status = self.statuses[min(self.list_calls, len(self.statuses) - 1)]
            self.list_calls += 1
            subs = []
            for s in reversed(self.submitted):
                subs.append(
                    {
                        "ref": s["ref"],
                        "status": status,
                        "publicScore": self.public_score if status == "COMPLETE" else None,
                        "errorDescription": self.error_description if status == "ERROR" else None,
                        "description": s.get("submissionDescription"),
                        "date": "2026-11-23T10:00:00Z",
                        "fileName": "submission.csv",
                    }
                )
                status = "COMPLETE"  # older submissions were scored long ago
            return _json(200, {"submissions": subs})
        if method == "GetSubmissionLimits":
            return _json(200, self.limits)
        if method == "SaveKernel":
            slug = payload.get("slug", "")
            return _json(
                200,
                {
                    "ref": f"/code/{slug}",
                    "url": f"http://localhost/code/{slug}",
                    "versionNumber": 1,
                },
            )
        if method == "GetKernelSessionStatus":
            i = min(self.status_calls, len(self.kernel_statuses) - 1)
            self.status_calls += 1
            status = self.kernel_statuses[i]
            failure = self.kernel_failure if status == "ERROR" else None
            return _json(200, {"status": status, "failureMessage": failure})
        if method == "ListKernelSessionOutput":
            files = [{"fileName": n, "url": f"http://localhost/kernel-output/{n}"}
                     for n in self.kernel_files]  # fmt: skip
            return _json(200, {"files": files, "log": self.kernel_log})
        if method == "ListCompetitions":
            comp = {"ref": f"https://www.kaggle.com/competitions/{payload.get('search', '')}",
                    "isKernelsSubmissionsOnly": self.code_competition}  # fmt: skip
            return _json(200, {"competitions": [comp]})
        if method == "CreateCodeSubmission":
            ref = 1000 + len(self.submitted)
            self.submitted.append({**payload, "ref": ref})
            return _json(200, {"message": "Successfully submitted", "ref": ref})
        if method == "DownloadDataFiles":
            return 302, {"Location": "http://localhost/files/competition.zip"}, b""
        return _json(404, {"code": 404, "message": f"fake Kaggle has no {method}"})


def _json(code: int, obj: Any) -> tuple[int, dict[str, str], bytes]:
    return code, {"Content-Type": "application/json"}, json.dumps(obj).encode()


def start(fake: FakeKaggle) -> ThreadingHTTPServer:
    """Serve ``fake`` on a free 127.0.0.1 port in a daemon thread; sets ``fake.port``."""

    class Handler(BaseHTTPRequestHandler):
        def _serve(self, verb: str) -> None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = self._read_chunked()
            else:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
            code, headers, out = fake.handle(verb, urlsplit(self.path).path, body)
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def _read_chunked(self) -> bytes:
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()

        def do_POST(self):  # noqa: N802 (http.server's naming)
            self._serve("POST")

        def do_PUT(self):  # noqa: N802
            self._serve("PUT")

        def do_GET(self):  # noqa: N802
            self._serve("GET")

        def log_message(self, *args):  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
