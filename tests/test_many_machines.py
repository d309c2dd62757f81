"""Many machines: workers on one study in a real PostgreSQL server, a shared artifact store,
the final stage anywhere, the dashboard, and one-line errors for a bad storage URL."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from datetime import datetime, timedelta

import optuna
import pandas as pd
import pytest
from conftest import ROOT, unavailable, wait_for
from pg_server import PASSWORD, Server, binaries

from pipeline import cli

pytestmark = pytest.mark.slow

TINY = ["--models", "lenet5_wide,cnn1", "--max-epochs", "1", "--limit", "600", "--timeout", "300",
        "--final", "trials", "--pruner", "none", "--no-report"]  # fmt: skip


@pytest.fixture(scope="module")
def pg():
    if binaries() is None:
        unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not on this machine")
    server = Server().start()
    yield server
    server.stop()


def _args(demo_small, art, *extra):
    return ["tune", "--data", str(demo_small), "--artifacts", str(art),
            "--submissions", str(art.parent / f"{art.name}-subs"), *TINY, *extra]  # fmt: skip


def _spawn(args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PIPELINE_HEARTBEAT": "1"}
    cmd = [sys.executable, "-m", "pipeline", *args]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _states(url, name):
    study = optuna.load_study(study_name=name, storage=url)
    return [t.state for t in study.get_trials()]


@pytest.fixture(scope="module")
def shared(pg, demo_small, tmp_path_factory):
    """Two search workers started together on one PostgreSQL study, keeping their models in a
    shared artifact store."""
    tmp = tmp_path_factory.mktemp("shared")
    store = tmp / "store"
    extra = ("--storage", pg.url, "--study", "shared", "--artifact-store", str(store),
             "--trials", "1", "--search-only")  # fmt: skip
    procs = [_spawn(_args(demo_small, tmp / f"worker{i}", *extra)) for i in range(2)]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-3000:]
    return tmp, store, outs


def test_two_workers_share_one_study_in_postgresql(pg, shared):
    _, _, outs = shared
    assert all(PASSWORD not in out for out in outs)
    assert all(f"postgresql://pipeline:***@127.0.0.1:{pg.port}/pipeline" in o for o in outs)
    study = optuna.load_study(study_name="shared", storage=pg.url)
    states = [t.state for t in study.get_trials()]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2 and len(states) == 2


def test_final_stage_on_a_machine_that_ran_no_trial(pg, shared, demo_small):
    tmp, store, _ = shared
    study = optuna.load_study(study_name="shared", storage=pg.url)
    done = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert done and all(t.user_attrs.get("model_artifact") for t in done)
    assert not any("model_path" in t.user_attrs for t in done)  # ids, not local paths
    assert any(store.rglob("*"))
    # a third machine: an empty artifacts folder, the study and the store only
    other = tmp / "third"
    extra = ("--storage", pg.url, "--study", "shared", "--artifact-store", str(store))
    final = _spawn(_args(demo_small, other, *extra, "--final-only"))
    out, _ = final.communicate(timeout=400)
    assert final.returncode == 0, out[-3000:]
    sub = pd.read_csv(out.strip().splitlines()[-1])
    sample = pd.read_csv(demo_small / "sample_submission.csv")
    assert list(sub["Id"]) == list(sample["Id"])
    assert list((other / "fashion-mnist" / "tune" / "models").glob("trial-*.keras"))


def test_dashboard_serves_the_study(pg, shared):
    port = str(__import__("pg_server").free_port())
    proc = _spawn(["dashboard", "--storage", pg.url, "--port", port,
                   "--artifact-store", str(shared[1])])  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/dashboard/" in line and PASSWORD not in line, line

        def studies():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies") as r:
                    return json.load(r)
            except OSError:
                return None

        studies = wait_for(studies, timeout=120, what="the dashboard to answer")
        listed = studies.get("study_summaries", studies.get("studies", []))
        assert "shared" in [s["study_name"] for s in listed]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_killed_worker_leaves_no_running_trial_and_the_warm_start_is_queued_once(
    pg, demo_small, tmp_path, monkeypatch
):
    """A worker killed mid-trial leaves its trial to the heartbeat (failed, retried once); the
    warm start (--quick's, lenet5_wide) is queued into the empty study by the first worker
    only: a worker that joins late loads the study as it stands."""
    from test_tune import expire_stale

    from pipeline.search_space import warm_start_params
    from pipeline.tune.trials import is_warm_start

    name = "killed"
    extra = ("--storage", pg.url, "--study", name, "--search-only", "--quick", "--timeout", "300",
             "--limit", "600", "--max-epochs", "1")  # fmt: skip
    first = _spawn(_args(demo_small, tmp_path / "a", *extra, "--trials", "1"))
    assert first.wait(timeout=300) == 0
    # a long trial, killed mid-way after its heartbeat was recorded
    victim = _spawn(_args(demo_small, tmp_path / "b", *extra, "--trials", "5",
                          "--max-epochs", "40"))  # fmt: skip

    def running():
        study = optuna.load_study(study_name=name, storage=pg.url)
        return [t for t in study.get_trials() if t.state == optuna.trial.TrialState.RUNNING
                and datetime.now() - t.datetime_start > timedelta(seconds=4)]  # fmt: skip

    killed = wait_for(running, timeout=300, what="a running trial")[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    study = expire_stale(pg.url, name, killed.number, monkeypatch)
    retried = [t for t in study.trials if t.state == optuna.trial.TrialState.WAITING]
    assert [t.params for t in retried] == [killed.params]  # retried with its configuration
    late = _spawn(_args(demo_small, tmp_path / "c", *extra, "--trials", "1"))
    out, _ = late.communicate(timeout=400)
    assert late.returncode == 0, out[-3000:]
    study = optuna.load_study(study_name=name, storage=pg.url)
    states = [t.state for t in study.get_trials()]
    assert optuna.trial.TrialState.RUNNING not in states
    assert study.trials[killed.number].state == optuna.trial.TrialState.FAIL  # the killed one
    # the late worker joined the study as it stood (the sampler sees the trials it found)
    assert int(re.search(r"\((\d+) completed trials\)", out).group(1)) >= 1
    # the killed trial's configuration was retried, by the late worker, to the end
    again = study.trials[retried[0].number]
    assert again.state == optuna.trial.TrialState.COMPLETE and again.params == killed.params
    assert optuna.storages.RetryFailedTrialCallback.retried_trial_number(again) == killed.number
    warm = warm_start_params(["lenet5_wide", "cnn1"], 1, "lenet5_wide")
    queued = [t.number for t in study.trials if t.system_attrs.get("fixed_params") == warm]
    assert queued == [0] and is_warm_start(study.trials[0])  # once, by the first worker


@pytest.mark.parametrize(
    "how, expected",
    [("password", "refused the user name or password"),
     ("port", "no server answers"),
     ("database", "no such database")],
)  # fmt: skip
def test_bad_storage_url_is_one_line_without_the_password(pg, demo_small, tmp_path, capsys,
                                                          how, expected):  # fmt: skip
    url = pg.url
    if how == "password":
        url = url.replace(PASSWORD, "wrong-secret-9")
    elif how == "port":
        url = url.replace(f":{pg.port}/", f":{__import__('pg_server').free_port()}/")
    else:
        url = url.rsplit("/", 1)[0] + "/nosuchdb"
    code = cli.main(_args(demo_small, tmp_path / "bad", "--storage", url, "--trials", "1"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert expected in err[0] and "***" in err[0]
    assert PASSWORD not in err[0] and "wrong-secret-9" not in err[0]


def test_artifact_store_with_sqlite_too(demo_small, tmp_path, capsys):
    """The store does not need PostgreSQL: a shared folder with the default SQLite study."""
    store = tmp_path / "store"
    args = _args(demo_small, tmp_path / "art", "--artifact-store", str(store), "--trials", "2")
    assert cli.main(args) == 0
    url = f"sqlite:///{tmp_path / 'art' / 'fashion-mnist' / 'optuna.db'}"
    trials = optuna.load_study(study_name="fashion-mnist", storage=url).get_trials()
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done and all(t.user_attrs.get("model_artifact") for t in done)
    assert all(t.user_attrs.get("validation_artifact") for t in done)
    assert not any("model_path" in t.user_attrs for t in done)  # ids, not local paths
    ids = {f.name for f in store.rglob("*") if f.is_file()}
    assert {t.user_attrs["model_artifact"] for t in done} <= ids
    best = json.loads((tmp_path / "art" / "fashion-mnist" / "tune" / "best.json").read_text())
    assert best["model_paths"] and all(os.path.exists(p) for p in best["model_paths"])
    del capsys
