"""fetch and submit with the real ``kaggle`` client against a local fake Kaggle (no internet)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import main
from tests.conftest import ROOT, write_layout
from tests.fake_kaggle import FakeKaggle, start

DUMMY_KEY = "0123456789abcdef-not-a-real-key"


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """A fake Kaggle on 127.0.0.1, and an environment whose client talks only to it."""
    fk = FakeKaggle()
    server = start(fk)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR", "KAGGLE_KERNEL_RUN_TYPE", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_USERNAME", "tester")
    monkeypatch.setenv("KAGGLE_KEY", DUMMY_KEY)
    monkeypatch.setenv("PIPELINE_SUBMIT_POLL", "0.05")
    for k, v in fk.env().items():
        monkeypatch.setenv(k, v)
    yield fk
    server.shutdown()
    server.server_close()


@pytest.fixture
def comp(tmp_path):
    """A tiny ECE657A-style competition and a valid submission file with its metadata."""
    data = write_layout(tmp_path / "comp", "ece657a", n_train=30, n_test=12)
    subs = tmp_path / "submissions"
    subs.mkdir()
    sub = subs / "comp-20261123T100000Z-cnn7.csv"
    shutil.copy(data / "sample_submission.csv", sub)
    sub.with_suffix(".json").write_text(
        json.dumps({"competition": "comp", "model": "cnn7", "holdout_accuracy": 0.9123})
    )
    return data, subs, sub


def _submit(comp, tmp_path, *extra):
    data, subs, _ = comp
    return main(
        [
            "submit",
            "--data",
            str(data),
            "--submissions",
            str(subs),
            "--artifacts",
            str(tmp_path / "artifacts"),
            *extra,
        ]
    )


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_submit_uploads_exact_bytes_and_prints_score(fake, comp, tmp_path, capsys):
    _, subs, sub = comp
    assert _submit(comp, tmp_path) == 0
    out, err = capsys.readouterr()
    assert fake.methods()[:3] == ["StartSubmissionUpload", "Upload", "CreateSubmission"]
    start_body = fake.requests[0]["body"]
    assert start_body["competitionName"] == "comp"
    assert start_body["fileName"] == sub.name
    assert start_body["contentLength"] == sub.stat().st_size
    assert list(fake.uploads.values()) == [sub.read_bytes()]
    create = fake.requests[2]["body"]
    assert create["submissionDescription"] == "cnn7 holdout 0.9123"
    assert create["blobFileTokens"] == "tok1"
    assert "public score 0.91230" in out
    log = pd.read_csv(subs / "log.csv", dtype=str)
    assert len(log) == 1
    row = log.iloc[0]
    assert row["status"] == "COMPLETE" and row["public_score"] == "0.91230"
    assert row["ref"] == "1000" and row["competition"] == "comp"
    assert row["holdout_accuracy"] == "0.9123"
    # the key is never shown or stored
    assert DUMMY_KEY not in out + err + (subs / "log.csv").read_text()


def test_submit_polls_pending_until_complete(fake, comp, tmp_path, capsys):
    fake.statuses = ["PENDING", "PENDING", "COMPLETE"]
    assert _submit(comp, tmp_path, "--message", "my run") == 0
    out, err = capsys.readouterr()
    assert fake.methods().count("ListSubmissions") == 3
    assert "pending" in err and "public score 0.91230" in out
    assert fake.submitted[0]["submissionDescription"] == "my run"
    # a second upload appends to the log
    fake.statuses = ["COMPLETE"]
    fake.list_calls = 0
    assert _submit(comp, tmp_path) == 0
    assert len(pd.read_csv(comp[1] / "log.csv")) == 2


def test_submit_error_status_is_one_line_with_reason(fake, comp, tmp_path, capsys):
    fake.statuses = ["ERROR"]
    fake.error_description = "Submission must have 10000 rows"
    assert _submit(comp, tmp_path) == 2
    line = _one_line(capsys.readouterr().err)
    assert "Submission must have 10000 rows" in line
    assert pd.read_csv(comp[1] / "log.csv")["status"].tolist() == ["ERROR"]


@pytest.mark.parametrize(
    ("method", "code", "message", "expect"),
    [
        ("StartSubmissionUpload", 401, "Unauthenticated", "credentials"),
        ("StartSubmissionUpload", 403, "You must accept the rules", "/competitions/comp/rules"),
        ("StartSubmissionUpload", 404, "Not found", "no competition 'comp'"),
        ("CreateSubmission", 429, "Submission limit reached", "0 submissions left"),
    ],
)
def test_kaggle_errors_are_one_plain_line(
    fake, comp, tmp_path, capsys, method, code, message, expect
):
    fake.fail[method] = (code, message)
    assert _submit(comp, tmp_path) == 2
    out, err = capsys.readouterr()
    line = _one_line(err)
    assert expect in line and str(code) in line
    assert DUMMY_KEY not in out + err


def test_invalid_file_is_refused_before_any_request(fake, comp, tmp_path, capsys):
    _, _, sub = comp
    df = pd.read_csv(sub)
    df.iloc[:-1].to_csv(sub, index=False)  # one row short
    assert _submit(comp, tmp_path) == 2
    line = _one_line(capsys.readouterr().err)
    assert sub.name in line and "rows" in line
    assert fake.requests == []


def test_dry_run_validates_and_sends_nothing(fake, comp, tmp_path, capsys):
    assert _submit(comp, tmp_path, "--dry-run") == 0
    assert "valid for comp (12 rows)" in capsys.readouterr().out
    assert fake.requests == []


def test_no_wait_records_the_upload(fake, comp, tmp_path, capsys):
    assert _submit(comp, tmp_path, "--no-wait") == 0
    assert "ListSubmissions" not in fake.methods()
    assert pd.read_csv(comp[1] / "log.csv")["status"].tolist() == ["SUBMITTED"]


def test_network_unreachable(fake, comp, tmp_path, capsys, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("HTTP_PROXY", dead)
    monkeypatch.setenv("http_proxy", dead)
    assert _submit(comp, tmp_path) == 2
    assert "cannot reach Kaggle" in _one_line(capsys.readouterr().err)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    monkeypatch.setenv("PIPELINE_KAGGLE_ROOT", str(tmp_path / "kaggle"))
    assert _submit(comp, tmp_path) == 2
    assert "Output tab" in _one_line(capsys.readouterr().err)


def test_world_readable_kaggle_json_warns(fake, comp, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    cfg = Path(os.environ["HOME"]) / ".kaggle"
    cfg.mkdir()
    (cfg / "kaggle.json").write_text(json.dumps({"username": "tester", "key": DUMMY_KEY}))
    (cfg / "kaggle.json").chmod(0o644)
    assert _submit(comp, tmp_path) == 0
    out, err = capsys.readouterr()
    assert "readable by other users" in err and "chmod 600" in err
    assert DUMMY_KEY not in out + err
    assert fake.uploads


def _zip_of(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, p.name)
    return buf.getvalue()


def test_fetch_unzips_and_inspects_then_skips(fake, tmp_path, capsys):
    src = write_layout(tmp_path / "src", "digit", n_train=30, n_test=9)
    fake.zip_bytes = _zip_of(src)
    dest = tmp_path / "input" / "digit-recognizer"
    args = ["fetch", "--competition", "digit-recognizer", "--data", str(dest)]
    args += ["--artifacts", str(tmp_path / "artifacts")]
    assert main(args) == 0
    out, _ = capsys.readouterr()
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in src.iterdir())
    assert (dest / "train.csv").read_bytes() == (src / "train.csv").read_bytes()
    assert fake.requests[0]["body"] == {"competitionName": "digit-recognizer"}
    info = json.loads(out)
    assert info["n_train"] == 30 and info["n_test"] == 9
    assert not list(dest.parent.glob(".digit-recognizer-*"))  # no temp folder left
    # already there: no request; --force downloads again
    n = len(fake.requests)
    assert main(args) == 0
    assert len(fake.requests) == n
    assert "already there" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    assert fake.methods().count("DownloadDataFiles") == 2


def test_fetch_403_and_bad_zip(fake, tmp_path, capsys):
    dest = tmp_path / "input" / "x-comp"
    args = ["fetch", "--competition", "x-comp", "--data", str(dest)]
    fake.fail["DownloadDataFiles"] = (403, "rules not accepted")
    assert main(args) == 2
    assert "https://www.kaggle.com/competitions/x-comp/rules" in _one_line(capsys.readouterr().err)
    del fake.fail["DownloadDataFiles"]
    fake.zip_bytes = b"PK\x03\x04 this is not a zip"
    assert main(args) == 2
    _one_line(capsys.readouterr().err)
    assert not dest.exists()


def _env_without_credentials(tmp_path: Path, fake: FakeKaggle) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KAGGLE_") and k.lower() not in ("http_proxy", "https_proxy")
    }
    home = tmp_path / "empty-home"
    home.mkdir(exist_ok=True)
    env.update(fake.env(), HOME=str(home), PYTHONPATH=str(ROOT))
    env.pop("KAGGLE_USERNAME", None)
    env["KAGGLE_API_ENVIRONMENT"] = "LOCALHOST"
    return env


def test_no_credentials_one_line_and_no_client_help(fake, comp, tmp_path):
    data, subs, _ = comp
    env = _env_without_credentials(tmp_path, fake)
    cmd = [sys.executable, "-m", "pipeline", "submit", "--data", str(data)]
    cmd += ["--submissions", str(subs), "--artifacts", str(tmp_path / "a")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stdout == ""  # the client's import-time help never shows
    line = _one_line(proc.stderr)
    assert "no Kaggle credentials" in line and "https://www.kaggle.com/settings" in line
    assert fake.requests == []


def test_run_sh_submit_end_to_end(fake, comp, tmp_path):
    """The README's command, in a fresh process, with the real client and the fake server."""
    data, subs, sub = comp
    env = _env_without_credentials(tmp_path, fake)
    env.update(KAGGLE_USERNAME="tester", KAGGLE_KEY=DUMMY_KEY, PIPELINE_SUBMIT_POLL="0.05")
    cmd = [str(ROOT / "run.sh"), "submit", "--data", str(data), "--submissions", str(subs)]
    cmd += ["--artifacts", str(tmp_path / "a"), "--competition", "comp"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("public score 0.91230")
    assert list(fake.uploads.values()) == [sub.read_bytes()]
    assert DUMMY_KEY not in proc.stdout + proc.stderr
