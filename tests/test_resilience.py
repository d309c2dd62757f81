"""Nothing lost: a killed or interrupted final fit resumes; a hostile machine gets one line."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import ROOT, unavailable

from pipeline import cli

pytestmark = pytest.mark.slow

# trials on a slice, then a final fit of up to 8 short epochs (the one killed and resumed)
FINAL = ["--models", "lenet5_wide", "--trials", "1", "--max-epochs", "1", "--limit", "2000",
         "--search-rows", "480", "--final", "fit", "--final-max-epochs", "8",
         "--timeout", "400", "--pruner", "none", "--no-report"]  # fmt: skip


def _args(demo_small, tmp_path, *extra):
    return ["tune", "--data", str(demo_small), "--artifacts", str(tmp_path / "art"),
            "--submissions", str(tmp_path / "subs"), *extra]  # fmt: skip


def _spawn(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PIPELINE_HEARTBEAT": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw,
    )  # fmt: skip


def _wait_for(proc, pattern: str, timeout: float = 300) -> list[str]:
    """Read the process's output until a line matches; returns the lines read."""
    lines, deadline = [], time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line)
        if re.search(pattern, line) or time.monotonic() > deadline:
            break
    return lines


def _valid_submission(tmp_path, out: str, demo_small) -> None:
    path = out.strip().splitlines()[-1]
    assert path.endswith(".csv") and os.path.exists(path), out[-2000:]
    sub = pd.read_csv(path)
    sample = pd.read_csv(demo_small / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns) and list(sub["Id"]) == list(sample["Id"])


def test_killed_final_fit_resumes_from_its_last_epoch(demo_small, tmp_path):
    proc = _spawn(_args(demo_small, tmp_path, *FINAL))
    seen = _wait_for(proc, r"final: epoch 2 val_accuracy")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert any("final: epoch 2" in line for line in seen), "".join(seen)[-2000:]
    checkpoint = tmp_path / "art" / "fashion-mnist" / "tune" / "final-checkpoint"
    assert (checkpoint / "final" / "state.json").is_file()

    rerun = _spawn(_args(demo_small, tmp_path, *FINAL))
    out, _ = rerun.communicate(timeout=400)
    assert rerun.returncode == 0, out[-3000:]
    m = re.search(r"final: resuming lenet5_wide from epoch (\d+)", out)
    assert m and int(m.group(1)) >= 2, out[-3000:]
    assert "tune: trial" not in out  # straight to the final stage: no new trial
    _valid_submission(tmp_path, out, demo_small)
    assert not checkpoint.exists()  # removed once the submission is written


def test_killed_folds_resume_and_the_finished_ones_are_not_trained_again(demo_small, tmp_path):
    """The folds go through the final fit's one fit: a finished fold keeps its probabilities
    beside its checkpoint, so a rerun after a kill trains only the folds still to do."""
    args = _args(demo_small, tmp_path, *FINAL)
    args[args.index("fit")] = "folds"
    args[args.index("--final-max-epochs") + 1] = "2"
    args[args.index("--limit") + 1] = "1000"
    proc = _spawn(args)
    seen = _wait_for(proc, r"final: fold 2/\d+: ")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert any("fold 2/" in line for line in seen), "".join(seen)[-2000:]
    checkpoint = tmp_path / "art" / "fashion-mnist" / "tune" / "final-checkpoint"
    done = sorted(p.parent.parent.name for p in checkpoint.glob("*/done/record.json"))
    assert done[:2] == ["fold1-t0", "fold2-t0"], done

    rerun = _spawn(args)
    out, _ = rerun.communicate(timeout=400)
    assert rerun.returncode == 0, out[-3000:]
    assert "going straight to it" in out and "tune: trial" not in out
    for name in done:
        assert f"final: {name} finished before" in out, out[-3000:]
    k = int(re.search(r"on (\d) folds of all 1000 labelled rows", out).group(1))
    assert f"final: fold {k}/{k}:" in out
    _valid_submission(tmp_path, out, demo_small)
    assert not checkpoint.exists()


def test_sigterm_finishes_the_batch_saves_and_exits_143(demo_small, tmp_path):
    proc = _spawn(_args(demo_small, tmp_path, *FINAL))
    _wait_for(proc, r"final: epoch 1 val_accuracy")
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, out[-2000:]
    last = out.strip().splitlines()[-1]
    assert "interrupted by SIGTERM" in last and "rerun the same command" in last
    assert "final-checkpoint" in last and "Traceback" not in out
    subs = tmp_path / "subs"
    assert not subs.exists() or not list(subs.glob("*.csv"))  # never half a result
    rerun = _spawn(_args(demo_small, tmp_path, *FINAL))
    out = rerun.communicate(timeout=400)[0]
    assert rerun.returncode == 0 and "final: resuming" in out, out[-3000:]
    _valid_submission(tmp_path, out, demo_small)


# ---------------------------------------------------------------------------------------------
# A hostile machine: one line (exit 2) or a clean recovery, never a traceback or a half file

SMALL = ["--models", "lenet5_wide", "--trials", "1", "--max-epochs", "1", "--limit", "600",
         "--timeout", "300", "--pruner", "none", "--no-report", "--final", "trials"]  # fmt: skip


def _one_line(code, err, pattern):
    assert code == 2, err
    lines = [x for x in err.strip().splitlines() if x]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in err


@pytest.fixture
def readonly_dir(tmp_path):
    path = tmp_path / "readonly"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    # root writes anywhere: a read-only file system is the one thing that stops it
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        unavailable("cannot make a read-only folder here (root, and mount refused)")
    yield path
    subprocess.run(["umount", str(path)], capture_output=True)


@pytest.mark.parametrize("which", ["artifacts", "submissions"])
def test_unwritable_folder_is_one_line(demo_small, tmp_path, readonly_dir, capsys, which):
    args = _args(demo_small, tmp_path, *SMALL)
    args[args.index(f"--{which}") + 1] = str(readonly_dir / which)
    code = cli.main(args)
    _one_line(code, capsys.readouterr().err, rf"{which}.*cannot write there.*--{which}")


def test_disk_filling_up_during_a_save(demo_small, tmp_path):
    """RLIMIT_FSIZE: any file over 300 kB fails to write, as on a full disk (the model saves)."""

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    args = ["train", "--model", "lenet5_wide", "--epochs", "1", "--limit", "400", "--no-report",
            "--data", str(demo_small), "--artifacts", str(tmp_path / "art"),
            "--submissions", str(tmp_path / "subs")]  # fmt: skip
    proc = _spawn(args, preexec_fn=limit)
    out = proc.communicate(timeout=300)[0]
    err = [x for x in out.splitlines() if x.startswith("error")]
    assert proc.returncode == 2 and err, out[-2000:]
    assert "disk is full" in err[0] and "Traceback" not in out
    # nothing half-written: no model, no temporary file, no submission
    files = [p.name for p in (tmp_path / "art").rglob("*") if p.is_file()]
    assert not [f for f in files if f.endswith(".keras") or f.startswith(".tmp-")], files
    assert not (tmp_path / "subs").exists() or not list((tmp_path / "subs").iterdir())


def test_corrupt_study_database_names_the_file(demo_small, tmp_path, capsys):
    db = tmp_path / "art" / "fashion-mnist" / "optuna.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not a database at all" * 100)
    code = cli.main(_args(demo_small, tmp_path, *SMALL))
    _one_line(code, capsys.readouterr().err, rf"{re.escape(str(db))}: damaged.*mv .*--study")


def test_locked_study_database_waits_then_says_so(demo_small, tmp_path, capsys, monkeypatch):
    import threading

    from pipeline.tune import study

    assert cli.main(_args(demo_small, tmp_path, *SMALL, "--search-only")) == 0
    capsys.readouterr()
    db = tmp_path / "art" / "fashion-mnist" / "optuna.db"
    # a lock released 1 s after the command first opens the study: the command waits, then
    # goes on
    holder = sqlite3.connect(db, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    monkeypatch.setenv("PIPELINE_SQLITE_TIMEOUT", "120")
    real, waited = study.create_or_load_study, []

    def opening(*args, **kwargs):
        release = threading.Timer(1.0, holder.rollback)
        release.start()
        t0 = time.monotonic()
        try:
            return real(*args, **kwargs)
        finally:
            waited.append(time.monotonic() - t0)
            release.join()

    monkeypatch.setattr(study, "create_or_load_study", opening)
    try:
        assert cli.main(_args(demo_small, tmp_path, *SMALL, "--search-only")) == 0
    finally:
        holder.close()
    assert waited and waited[0] >= 1.0  # it opened the study only once the lock was released
    monkeypatch.setattr(study, "create_or_load_study", real)
    # a lock held past the wait: one line that says so
    holder = sqlite3.connect(db)
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.setenv("PIPELINE_SQLITE_TIMEOUT", "0.5")
    try:
        code = cli.main(_args(demo_small, tmp_path, *SMALL))
    finally:
        holder.rollback()
        holder.close()
    _one_line(code, capsys.readouterr().err, r"locked by another process")


def test_study_made_for_other_data_is_refused(demo_small, tmp_path, capsys):
    assert cli.main(_args(demo_small, tmp_path, *SMALL, "--search-only")) == 0
    capsys.readouterr()
    for change, flag in [(["--seed", "7"], "--seed 42"), (["--limit", "700"], "--limit 600")]:
        args = _args(demo_small, tmp_path, *SMALL, "--search-only", *change)  # the last one counts
        code = cli.main(args)
        _one_line(code, capsys.readouterr().err, rf"made for other data.*{flag}.*--study NEW_NAME")
    # a new study name is the way out
    assert cli.main([*args, "--study", "another"]) == 0


NOISE = re.compile(r"^(I0000|W0000|E0000|WARNING: All log messages|.*cuda|.*oneDNN|.*absl)",
                   re.IGNORECASE)  # fmt: skip


def test_console_shows_only_the_pipelines_lines_and_debug_shows_tensorflow(demo_small, tmp_path):
    """TensorFlow is imported (a model is loaded): its start-up chatter stays hidden unless
    --debug."""
    missing = tmp_path / "missing.keras"
    args = ["predict", "--model-path", str(missing), "--data", str(demo_small),
            "--artifacts", str(tmp_path / "art")]  # fmt: skip
    quiet = _spawn(args)
    out = quiet.communicate(timeout=300)[0]
    assert quiet.returncode == 2
    expected = f"error: {missing}: no such model file; train one with ./run.sh train or tune"
    assert out.strip().splitlines() == [expected], out
    loud = _spawn([*args, "--debug"])
    out = loud.communicate(timeout=300)[0]
    assert loud.returncode == 2 and any(NOISE.match(line) for line in out.splitlines()), out


# a WSGI app that says when it is inside a request, then stays there
SLOW_SERVER = """
import sys, time
from pipeline.dashboard import listen, serve_until_signal

def app(environ, start_response):
    print("in request", flush=True)
    time.sleep(60)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"late"]

httpd = listen(app, "127.0.0.1", 0)
print(httpd.server_port, flush=True)
serve_until_signal(httpd)
print("stopped", flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_dashboard_stops_on_a_signal_that_lands_inside_a_request(sig):
    """Ctrl-C mid-request once left the dashboard serving: wsgiref swallowed the interrupt."""
    import threading
    import urllib.request

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SERVER], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        port = int(proc.stdout.readline())
        url = f"http://127.0.0.1:{port}/"

        def ask():
            with contextlib.suppress(OSError):  # the server stops mid-request, as asked
                urllib.request.urlopen(url, timeout=90)

        threading.Thread(target=ask, daemon=True).start()
        assert proc.stdout.readline().strip() == "in request"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0 and out.strip() == "stopped", out


def test_dashboard_port_in_use_is_one_line(tmp_path):
    import socket

    from pipeline.dashboard import listen
    from pipeline.errors import PipelineError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PipelineError, match=rf"127.0.0.1:{port} .*another --port"):
            listen(lambda e, s: [], "127.0.0.1", port)
