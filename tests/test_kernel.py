"""kernel: the generated folder, its push, and the script run as a Kaggle kernel would run it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, demo_slice
from fake_kaggle import FakeKaggle, start

from pipeline.cli import main

SLUG = "fashion-mnist"


@pytest.fixture
def fake(monkeypatch, tmp_path):
    fk = FakeKaggle()
    server = start(fk)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    monkeypatch.setenv("KAGGLE_USERNAME", "tester")
    monkeypatch.setenv("KAGGLE_KEY", "dummy-key-for-tests")
    for k, v in fk.env().items():
        monkeypatch.setenv(k, v)
    yield fk
    server.shutdown()
    server.server_close()


def _build(tmp_path, *extra):
    out = tmp_path / "kernel"
    args = ["kernel", "--competition", SLUG, "--out", str(out), *extra]
    assert main(args) == 0
    return out


def test_kernel_folder_and_metadata(fake, tmp_path, capsys):
    out = _build(tmp_path, "--no-gpu", "--timeout", "7200")
    assert capsys.readouterr().out.strip() == f"kaggle kernels push -p {out}"
    meta = json.loads((out / "kernel-metadata.json").read_text())
    assert meta["id"] == "tester/fashion-mnist-tune"  # user name from KAGGLE_USERNAME
    assert meta["title"] == "fashion-mnist-tune" and len(meta["title"]) >= 5
    assert meta["code_file"] == "kernel.py" and (out / "kernel.py").is_file()
    assert meta["language"] == "python" and meta["kernel_type"] == "script"
    assert meta["is_private"] is True and meta["enable_gpu"] is False
    assert meta["enable_internet"] is False
    assert meta["competition_sources"] == [SLUG] and meta["dataset_sources"] == []
    script = (out / "kernel.py").read_text()
    assert "'--timeout', '7200'" in script
    assert "dummy-key-for-tests" not in script
    compile(script, "kernel.py", "exec")
    # --internet and --gpu switch the flags
    out = _build(tmp_path, "--internet", "--id", "someone/my-kernel-1")
    meta = json.loads((out / "kernel-metadata.json").read_text())
    assert meta["enable_internet"] is True and meta["enable_gpu"] is True
    assert meta["id"] == "someone/my-kernel-1" and meta["title"] == "my-kernel-1"


def test_bad_id_is_one_line(fake, tmp_path, capsys):
    assert main(["kernel", "--competition", SLUG, "--id", "no-slash", "--out", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "USER/KERNEL-SLUG" in lines[0]


def test_push_goes_through_the_real_client(fake, tmp_path, capsys):
    out = _build(tmp_path, "--push")
    assert capsys.readouterr().out.strip() == "http://localhost/code/tester/fashion-mnist-tune"
    body = next(r["body"] for r in fake.requests if r["method"] == "SaveKernel")
    assert body["slug"] == "tester/fashion-mnist-tune"
    assert body["text"] == (out / "kernel.py").read_text()
    assert body["competitionDataSources"] == [SLUG]
    assert body["enableInternet"] is False and body["kernelType"] == "script"


@pytest.mark.slow
def test_script_runs_as_a_kernel_offline(fake, tmp_path):
    """Fresh process, /kaggle relocated, competition under input/competitions/<slug>/, read-only
    input, no project on sys.path, every HTTP(S) request routed to a recorder: it must write a
    valid /kaggle/working/submission.csv and try no network."""
    out = _build(tmp_path, "--quick", "--timeout", "90")  # --quick: 15,000 rows at most
    kaggle = tmp_path / "kaggle"
    comp = demo_slice(kaggle / "input" / "competitions" / SLUG, 1200, 150)
    os.chmod(comp, 0o555)
    (kaggle / "working").mkdir(parents=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KAGGLE", "PYTHON", "PIPELINE")) and "proxy" not in k.lower()
    }
    proxy = f"http://127.0.0.1:{fake.port}"
    env.update(
        KAGGLE_KERNEL_RUN_TYPE="Batch",
        PIPELINE_KAGGLE_ROOT=str(kaggle),
        HOME=str(tmp_path / "home"),
        HTTP_PROXY=proxy, http_proxy=proxy, HTTPS_PROXY=proxy, https_proxy=proxy,
        NO_PROXY="", no_proxy="",
    )  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-I", str(out / "kernel.py")],
        cwd=kaggle / "working",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    os.chmod(comp, 0o755)
    said = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, said
    sub = kaggle / "working" / "submission.csv"
    assert sub.is_file(), said
    from pipeline.data import load_competition
    from pipeline.submission import read_submission, validate_submission

    ds = load_competition(comp)
    validate_submission(read_submission(sub), ds.layout, ds.test_ids, str(sub))
    assert (kaggle / "working" / "artifacts" / SLUG / "optuna.db").is_file()
    assert sorted(p.name for p in comp.iterdir()) == [
        "sample_submission.csv",
        "testX.csv",
        "train.csv",
    ]
    assert str(ROOT) not in proc.stdout + proc.stderr  # ran from the embedded sources
    assert fake.requests == []  # internet off: nothing tried the network


def test_missing_package_is_one_line(tmp_path, fake):
    out = _build(tmp_path)
    script = (out / "kernel.py").read_text()
    script = script.replace("REQUIRED = [", "REQUIRED = [('nosuchpkg', 'nosuchpkg', 1), ", 1)
    (out / "kernel.py").write_text(script)
    proc = subprocess.run(
        [sys.executable, "-I", str(out / "kernel.py")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "error: the kernel lacks the nosuchpkg package; pick a recent Python image"
    )


# ---------------------------------------------------------------------------------------------
# push -> wait -> output -> submit, against the fake Kaggle with the real client


def _log(*lines):
    return json.dumps([{"stream_name": "stdout", "time": i, "data": f"{x}\n"}
                       for i, x in enumerate(lines)])  # fmt: skip


@pytest.fixture
def round_trip(fake, tmp_path, monkeypatch):
    """A local copy of the competition (for validation) and a kernel run that produced a valid
    submission.csv."""
    from conftest import write_layout

    comp = write_layout(tmp_path / "comp", "ece657a", n_train=30, n_test=6, side=4)
    sample = (comp / "sample_submission.csv").read_text()
    fake.kernel_files = {"submission.csv": sample.encode(), "report.html": b"<html></html>"}
    fake.kernel_log = _log("tune: study ...", "tune: done in 3400 s", "/kaggle/working/x.csv")
    monkeypatch.setenv("PIPELINE_KERNEL_POLL", "0.01")
    monkeypatch.setenv("PIPELINE_SUBMIT_POLL", "0.01")
    return comp


def _kernel(tmp_path, comp, *extra):
    return ["kernel", "--competition", SLUG, "--out", str(tmp_path / "kernel"), "--data",
            str(comp), "--submissions", str(tmp_path / "subs"), "--push", *extra]  # fmt: skip


def test_push_wait_downloads_and_validates_the_output(fake, round_trip, tmp_path, capsys):
    fake.kernel_statuses = ["QUEUED", "QUEUED", "RUNNING", "RUNNING", "COMPLETE"]
    assert main(_kernel(tmp_path, round_trip, "--wait")) == 0
    out, err = capsys.readouterr()
    output = tmp_path / "kernel" / "output"
    assert out.strip() == str(output / "submission.csv")
    for state in ("queued", "running", "complete"):
        assert re.search(rf"kernel: tester/fashion-mnist-tune {state} after \d+ s", err), err
    assert "is a valid submission (6 rows)" in err
    assert (output / "report.html").is_file() and (output / "fashion-mnist-tune.log").is_file()
    assert fake.status_calls == 5 and "CreateSubmission" not in fake.methods()


def test_errored_kernel_is_one_line_with_its_log_and_exit_1(fake, round_trip, tmp_path, capsys):
    fake.kernel_statuses = ["RUNNING", "ERROR"]
    fake.kernel_failure = "Your notebook tried to allocate more memory than is available."
    fake.kernel_log = _log("tune: trial 3 ...", "Traceback (most recent call last):",
                           "MemoryError: cannot allocate")  # fmt: skip
    code = main(_kernel(tmp_path, round_trip, "--wait", "--submit"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("error: kernel tester/fashion-mnist-tune error:")
    assert "more memory than is available" in err[-1] and "MemoryError: cannot allocate" in err[-1]
    assert not [x for x in err if x.startswith("Traceback")]
    assert "CreateSubmission" not in fake.methods()


def test_cancelled_kernel_exits_1(fake, round_trip, tmp_path, capsys):
    fake.kernel_statuses = ["RUNNING", "CANCEL_ACKNOWLEDGED"]
    assert main(_kernel(tmp_path, round_trip, "--wait")) == 1
    assert "cancel acknowledged" in capsys.readouterr().err


def test_submit_uploads_the_output_of_an_ordinary_competition(fake, round_trip, tmp_path, capsys):
    fake.kernel_statuses = ["RUNNING", "COMPLETE"]
    assert main(_kernel(tmp_path, round_trip, "--wait", "--submit")) == 0
    out = capsys.readouterr().out
    assert "public score 0.91230 for submission.csv" in out
    assert "CreateSubmission" in fake.methods() and "CreateCodeSubmission" not in fake.methods()
    uploaded = next(iter(fake.uploads.values()))
    assert uploaded == fake.kernel_files["submission.csv"]


def test_submit_a_code_competition_submits_the_kernel_version(fake, round_trip, tmp_path,
                                                               capsys):  # fmt: skip
    fake.code_competition = True
    fake.kernel_statuses = ["COMPLETE"]
    assert main(_kernel(tmp_path, round_trip, "--wait", "--submit")) == 0
    body = next(r["body"] for r in fake.requests if r["method"] == "CreateCodeSubmission")
    assert body["kernelSlug"] == "fashion-mnist-tune" and body["kernelVersion"] == 1
    assert body["competitionName"] == SLUG and body["fileName"] == "submission.csv"
    assert "public score 0.91230" in capsys.readouterr().out
    assert not fake.uploads


def test_submit_kernel_command_for_code_competitions(fake, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PIPELINE_SUBMIT_POLL", "0.01")
    args = ["submit", "--competition", SLUG, "--kernel", "tester/my-kernel", "--version", "3",
            "--submissions", str(tmp_path / "subs")]  # fmt: skip
    assert main(args) == 0
    body = next(r["body"] for r in fake.requests if r["method"] == "CreateCodeSubmission")
    assert body["kernelSlug"] == "my-kernel" and body["kernelVersion"] == 3
    assert "public score" in capsys.readouterr().out
    log = (tmp_path / "subs" / "log.csv").read_text()
    assert "kernel:tester/my-kernel" in log
    assert main(["submit", "--kernel", "nonsense", "--competition", SLUG]) == 2
