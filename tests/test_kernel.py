"""kernel: the generated folder, its push, and the script run as a Kaggle kernel would run it."""

from __future__ import annotations

import json
import os
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
    assert "USER/KERNEL-SLUG" in capsys.readouterr().err


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
    out = _build(tmp_path, "--quick", "--timeout", "90")
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
    assert proc.returncode == 0, proc.stderr[-3000:]
    sub = kaggle / "working" / "submission.csv"
    assert sub.is_file()
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
