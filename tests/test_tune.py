"""tune: the study, resume, kill and rerun, pruning, failures, many workers, ensembles."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import ROOT, wait_for

from pipeline import cli
from pipeline.errors import PipelineError
from pipeline.records import read_trial
from pipeline.tune import plan
from pipeline.tune.cost import MIN_STEPS_PER_EPOCH

pytestmark = pytest.mark.slow

SMALL = ["--models", "lenet5_wide,cnn1", "--max-epochs", "1", "--limit", "600", "--timeout", "300",
         "--no-report"]  # fmt: skip
TRIALS = ["--final", "trials"]  # the trials' own models: nothing trained after the search


def _args(demo_small, tmp_path, *extra):
    return [
        "tune",
        "--data",
        str(demo_small),
        "--artifacts",
        str(tmp_path / "art"),
        "--submissions",
        str(tmp_path / "subs"),
        *SMALL,
        *extra,
    ]


def _study(tmp_path, name="fashion-mnist"):
    url = f"sqlite:///{tmp_path / 'art' / 'fashion-mnist' / 'optuna.db'}"
    return optuna.load_study(study_name=name, storage=url)


def _complete(study):
    return [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]


def test_study_resumes_and_final_stage_writes_everything(demo_small, tmp_path, capsys):
    assert cli.main(_args(demo_small, tmp_path, "--trials", "2", *TRIALS)) == 0
    out = capsys.readouterr().out
    sub_path = out.strip().splitlines()[-1]
    assert sub_path.endswith(".csv") and os.path.exists(sub_path)
    assert "tune: trial   0" in out and "top trials:" in out
    # where it trains and in which precision (the tests' CPU keeps float32 unless asked)
    assert re.search(r"device: CPU, \d+ threads, oneDNN on, (float32|mixed_bfloat16)", out)
    study = _study(tmp_path)
    assert len(study.get_trials()) == 2
    first = {t.number: t.value for t in _complete(study)}
    assert first
    # the step rule: 384 training rows per trial (80% of 80% of --limit 600) make at least
    # MIN_STEPS_PER_EPOCH steps an epoch whatever batch the search sampled
    for t in _complete(study):
        assert 384 / read_trial(t).settings.batch_size >= MIN_STEPS_PER_EPOCH

    tune_dir = tmp_path / "art" / "fashion-mnist" / "tune"
    best = json.loads((tune_dir / "best.json").read_text())
    assert os.path.exists(best["model_path"])
    # the estimate: the accuracy of what is submitted on the 120 holdout rows (20% of --limit)
    estimate = best["estimate"]
    assert estimate["scored_on"] == "holdout" and estimate["rows"] == 120
    assert estimate["accuracy"] == best["holdout_accuracy"]
    assert estimate["low"] < best["holdout_accuracy"] < estimate["high"]
    # and where the score on the test images should fall: wider, for their own rows
    assert estimate["test_rows"] == len(pd.read_csv(sub_path))
    assert estimate["test_low"] < estimate["low"] and estimate["test_high"] >= estimate["high"]
    assert "test images should fall in" in out
    trials = pd.read_csv(tune_dir / "trials.csv")
    for col in (
        "number",
        "state",
        "model",
        "params",
        "val_accuracy",
        "val_loss",
        "train_accuracy",
        "train_loss",
        "epochs_run",
        "seconds",
        "param_count",
    ):
        assert col in trials.columns
    assert len(trials) == 2
    sub = pd.read_csv(sub_path)
    assert list(sub.columns) == ["Id", "Label"] and len(sub) == 200

    # a rerun with the same settings resumes the same study and adds trials
    assert cli.main(_args(demo_small, tmp_path, "--trials", "1", *TRIALS)) == 0
    study = _study(tmp_path)
    assert len(study.get_trials()) == 3
    assert {t.number: t.value for t in _complete(study) if t.number in first} == first


def test_ensemble_is_the_mean_of_the_models(demo_small, tmp_path, capsys):
    assert (
        cli.main(_args(demo_small, tmp_path, "--trials", "2", "--pruner", "none", "--search-only"))
        == 0
    )
    assert cli.main(_args(demo_small, tmp_path, "--final-only", "--ensemble", "2", *TRIALS)) == 0
    sub_path = capsys.readouterr().out.strip().splitlines()[-1]
    tune_dir = tmp_path / "art" / "fashion-mnist" / "tune"
    best = json.loads((tune_dir / "best.json").read_text())
    assert len(best["model_paths"]) == 2
    from pipeline.data import load_competition
    from pipeline.predict import load_model, predict_proba

    ds = load_competition(demo_small)
    flip = best["mirror_at_test"]  # mirrored test-time views where the rule says so
    assert flip is False or best["flip"]["accuracy_averaged"] > best["flip"]["accuracy_plain"]
    each = [predict_proba(load_model(p), ds.x_test, flip=flip) for p in best["model_paths"]]
    mean = np.mean(each, axis=0)
    saved = np.load(tune_dir / "test_proba.npy")
    np.testing.assert_allclose(saved, mean, atol=1e-5)
    sub = pd.read_csv(sub_path)
    labels = ds.classes[mean.argmax(1)]
    by_id = dict(zip(ds.test_ids.astype(int), labels, strict=True))
    assert [by_id[i] for i in sub["Id"]] == list(sub["Label"])


def test_failing_trial_is_recorded_and_the_study_goes_on(demo_small, tmp_path, monkeypatch, capsys):
    import pipeline.models

    real = pipeline.models.build_model
    calls = {"n": 0}

    def flaky(name, *a, **kw):
        calls["n"] += bool(kw)  # trials pass hyperparameters; the cost measurement does not
        if calls["n"] == 1 and kw:
            raise RuntimeError("simulated out of memory")
        return real(name, *a, **kw)

    monkeypatch.setattr(pipeline.models, "build_model", flaky)
    # in this process: the patched builder does not reach a worker process
    assert cli.main(_args(demo_small, tmp_path, "--trials", "2", "--isolate", "none", *TRIALS)) == 0
    study = _study(tmp_path)
    states = [t.state for t in study.get_trials()]
    assert states[0] == optuna.trial.TrialState.FAIL
    assert "simulated out of memory" in study.get_trials()[0].user_attrs["reason"]
    assert optuna.trial.TrialState.COMPLETE in states[1:]
    assert "fail" in capsys.readouterr().out


def test_max_failures_stops_a_study_that_only_fails(demo_small, tmp_path, monkeypatch):
    import pipeline.models
    from pipeline.tune import search

    real = pipeline.models.build_model
    monkeypatch.setattr(search, "MAX_FAILURES", 2)

    def broken(*a, **kw):
        if kw:  # trial builds only
            raise RuntimeError("always broken")
        return real(*a, **kw)

    monkeypatch.setattr(pipeline.models, "build_model", broken)
    code = cli.main(_args(demo_small, tmp_path, "--trials", "10", "--isolate", "none"))
    assert code == 2  # no completed trial: one-line error from the final stage
    assert len(_study(tmp_path).get_trials()) == 2


def test_budget_refuses_a_trial_it_cannot_hold(demo_small, tmp_path, capsys):
    from pipeline.device import configure_runtime
    from pipeline.tune.cost import cost_key

    # this machine measured as a million times slower: no epoch fits the 300 s budget
    comp = tmp_path / "art" / "fashion-mnist"
    comp.mkdir(parents=True)
    key = cost_key(configure_runtime(), (28, 28, 1))
    cost = {"key": key, "seconds_per_image": 1.0, "macs": 1, "seconds_per_image_per_mac": 1.0}
    (comp / "cost.json").write_text(json.dumps(cost))
    code = cli.main(_args(demo_small, tmp_path, "--trials", "5"))
    out, err = capsys.readouterr()
    assert code == 2 and "no completed trial" in err  # nothing trained, one-line error
    trials = _study(tmp_path).get_trials()
    assert len(trials) == 1  # the first refusal stops the study
    assert trials[0].state == optuna.trial.TrialState.PRUNED and trials[0].user_attrs["refused"]
    line = next(x for x in out.splitlines() if "tune: trial   0" in x)
    assert trials[0].user_attrs["model"] in line and "(not started)" in line
    assert "needs ~" in line and "s/epoch" in line


def test_pruning_callback_prunes_what_the_pruner_prunes(demo_small):
    from pipeline.callbacks import EpochReport
    from pipeline.data import holdout, load_competition
    from pipeline.models import build_model, get_entry
    from pipeline.training import fit, settings_for
    from pipeline.tune.objective import epoch_reporter

    ds = load_competition(demo_small)
    data = holdout(ds, 0, limit=400)
    # a pruner that prunes anything below 99% accuracy after the first report
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.99)
    )
    trial = study.ask()
    settings = settings_for(get_entry("lenet5_wide"), epochs=3, batch_size=64)
    with pytest.raises(optuna.TrialPruned, match="epoch 1"):
        fit(
            build_model("lenet5_wide", ds.image_shape, ds.num_classes),
            settings,
            data,
            ds.num_classes,
            callbacks=[EpochReport(epoch_reporter(trial))],
            verbose=0,
        )
    assert list(study.trials[0].intermediate_values) == [1]

    # and a pruner that never prunes lets all epochs run
    keep = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    t2 = keep.ask()
    r = fit(
        build_model("lenet5_wide", ds.image_shape, ds.num_classes),
        settings,
        data,
        ds.num_classes,
        callbacks=[EpochReport(epoch_reporter(t2))],
        verbose=0,
    )
    assert r.metrics.epochs_run == 3 and len(keep.trials[0].intermediate_values) == 3


def _spawn(demo_small, tmp_path, *extra, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PIPELINE_HEARTBEAT": "1", **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *_args(demo_small, tmp_path, *extra)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _mid_trial(tmp_path, name="fashion-mnist"):
    """(completed trials, the trial running for a while) once there are both, else None."""
    db = tmp_path / "art" / "fashion-mnist" / "optuna.db"
    if not db.exists():
        return None
    try:
        study = _study(tmp_path, name)
    except Exception:  # noqa: BLE001 - study not created yet
        return None
    # mid-trial: running for a while, so its heartbeat has been recorded (a kill in the instant
    # between Optuna's ask() and the first heartbeat leaves nothing to expire), with epochs
    # left, so that it cannot finish between this look and the kill
    running = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.RUNNING
               and datetime.now() - t.datetime_start > timedelta(seconds=4)
               and len(t.intermediate_values) < 20]  # fmt: skip
    done = _complete(study)
    return (done, running[0]) if done and running else None


def expire_stale(url: str, name: str, number: int, monkeypatch):
    """Poll Optuna's heartbeat check until the killed process's trial ``number`` is FAIL (its
    heartbeat stopped; PIPELINE_HEARTBEAT=1: a 3 s grace); returns the study."""
    from pipeline.storage import make_storage

    monkeypatch.setenv("PIPELINE_HEARTBEAT", "1")
    study = optuna.load_study(study_name=name, storage=make_storage(url))

    def failed():
        optuna.storages.fail_stale_trials(study)
        return study.trials[number].state == optuna.trial.TrialState.FAIL

    wait_for(failed, timeout=120, what=f"trial {number}'s heartbeat to expire")
    return study


def test_killed_process_loses_no_completed_trial(demo_small, tmp_path, monkeypatch):
    # many epochs so that the second trial is still running when the first one has finished
    # no pruner: a pruned trial is not the completed one this test needs
    proc = _spawn(demo_small, tmp_path, "--trials", "5", "--max-epochs", "30", "--pruner", "none",
                  "--search-only")  # fmt: skip
    completed, victim = wait_for(lambda: _mid_trial(tmp_path), timeout=300,
                                 what="a completed trial and a running one")  # fmt: skip
    workers = _children(proc.pid)  # the trial worker process(es)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert workers
    wait_for(lambda: not [pid for pid in workers if _alive(pid)], timeout=60,
             what="the worker to die with its parent")  # fmt: skip
    before = {t.number: t.value for t in completed}
    url = f"sqlite:///{tmp_path / 'art' / 'fashion-mnist' / 'optuna.db'}"
    study = expire_stale(url, "fashion-mnist", victim.number, monkeypatch)
    # the killed trial is retried once, with its own configuration
    retried = [t for t in study.trials if t.state == optuna.trial.TrialState.WAITING]
    assert [t.params for t in retried] == [victim.params]
    assert optuna.storages.RetryFailedTrialCallback.retried_trial_number(retried[0]) == (
        victim.number
    )
    # the rerun trains the retried trial first (no pruner: it runs to the end)
    rerun = _spawn(demo_small, tmp_path, "--trials", "1", "--pruner", "none", "--search-only")
    out, _ = rerun.communicate(timeout=400)
    assert rerun.returncode == 0, out
    study = _study(tmp_path)
    after = {t.number: t.value for t in _complete(study)}
    assert all(after.get(n) == v for n, v in before.items())
    states = [t.state for t in study.get_trials()]
    assert optuna.trial.TrialState.RUNNING not in states
    assert study.trials[victim.number].state == optuna.trial.TrialState.FAIL
    assert study.trials[retried[0].number].state == optuna.trial.TrialState.COMPLETE


def test_two_workers_share_one_storage(demo_small, tmp_path):
    # no pruner: the halving pruner may rightly prune the worse of the two one-epoch trials
    extra = ("--trials", "1", "--pruner", "none", "--search-only")
    procs = [_spawn(demo_small, tmp_path, *extra) for _ in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
    study = _study(tmp_path)
    assert len(_complete(study)) == 2


def test_trials_on_a_slice_then_final_fit_on_the_whole_split(
    demo_small, tmp_path, capsys, monkeypatch
):
    """--search-rows: trials see a slice; the final stage trains the best on the whole split,
    from the trial's weights, prints progress on part of the holdout and scores all of it."""
    from pipeline.tune import fit

    monkeypatch.setattr(fit, "PROGRESS_ROWS", 40)
    args = _args(demo_small, tmp_path, "--trials", "2", "--search-rows", "240", "--isolate", "none")
    args += ["--final", "fit", "--final-max-epochs", "2"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "240 train / 60 validation images per trial" in out
    assert "on all 480 training images" in out
    assert "on 120 holdout images (progress on 40), starting from the trial's weights" in out
    tune_dir = tmp_path / "art" / "fashion-mnist" / "tune"
    best = json.loads((tune_dir / "best.json").read_text())
    final = best["final_fit"]
    assert final["train_rows"] == 480 and final["holdout_rows"] == 120
    # the seconds the fit kept back for predicting, and what predicting took (the cost formula's
    # evidence, read by bench/README.md)
    assert final["predict_kept_s"] > 0 and final["predict_used_s"] > 0
    assert final["epochs_run"] == 2 and final["progress_rows"] == 40
    assert final["started_from"].endswith(f"trial-{final['trial']}.keras")
    assert best["model_path"].endswith("final.keras") and os.path.exists(best["model_path"])
    # what is submitted uses the test-time views decided before the fit (none chosen on the
    # holdout), so the reported accuracy is the one with those views
    assert best["holdout_accuracy"] == final["holdout_accuracy_tta"] and best["honest"]
    # the reported holdout accuracy is the final model's on the whole 120-image holdout
    from pipeline.data import holdout, load_competition
    from pipeline.predict import load_model, predict_proba

    ds = load_competition(demo_small)
    _, _, x_va, y_va = holdout(ds, 42, 600)
    probs = predict_proba(load_model(best["model_path"]), x_va, tta=final["tta"],
                          flip=final["flip"])  # fmt: skip
    assert abs(float((probs.argmax(1) == y_va).mean()) - best["holdout_accuracy"]) < 1e-6
    assert len(pd.read_csv(tune_dir / "final_history.csv")) == 2
    sub = pd.read_csv(out.strip().splitlines()[-1])
    assert len(sub) == 200


@pytest.mark.parametrize("name", ["halving", "median"])
def test_pruners_judge_a_trial_by_its_epoch_number(name):
    from pipeline.tune.study import make_pruner

    study = optuna.create_study(direction="maximize", pruner=make_pruner(name, 8))
    for acc in (0.75, 0.8, 0.85, 0.9):  # each the best so far: never pruned
        t = study.ask()
        for epoch in (1, 2):
            t.report(acc, epoch)
            assert not t.should_prune()  # (halving records a trial's rung when asked)
        study.tell(t, acc)
    weak, strong = study.ask(), study.ask()
    weak.report(0.5, 1)
    strong.report(0.95, 1)
    # epoch 1 says little (batch-norm nets, strong augmentation): nobody is judged on it
    assert not weak.should_prune() and not strong.should_prune()
    # from epoch 2: halving keeps only the top third; median prunes below the median
    weak.report(0.5, 2)
    strong.report(0.95, 2)
    assert weak.should_prune() and not strong.should_prune()


def test_a_worker_that_loses_the_creation_race_opens_the_winners_study(tmp_path, monkeypatch):
    """Workers started together race to create the schema and the study: the loser's insert
    fails on a unique constraint. Forced here: another worker creates the study first, and this
    one's creation fails as the loser's does; it retries and opens the same study."""
    import sqlalchemy.exc

    from pipeline import storage as st

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    real = optuna.create_study
    calls = []

    def lose_once(**kw):
        calls.append(kw["study_name"])
        if len(calls) == 1:
            winner = real(storage=url, study_name=kw["study_name"], direction="maximize")
            winner.tell(winner.ask(), 0.5)
            raise sqlalchemy.exc.IntegrityError(
                "INSERT INTO studies", {}, Exception("UNIQUE constraint failed: studies.study_name")
            )
        return real(**kw)

    monkeypatch.setattr(optuna, "create_study", lose_once)
    monkeypatch.setattr(st.time, "sleep", lambda s: None)
    study = st.create_or_load_study(url, "race")
    assert calls == ["race", "race"]  # lost, retried
    assert [t.value for t in study.get_trials()] == [0.5]  # the winner's study, not a new one
    # any other failure is not a race: one line, no retry
    calls.clear()

    def broken(**kw):
        calls.append(1)
        raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(optuna, "create_study", broken)
    with pytest.raises(PipelineError, match="disk I/O error"):
        st.create_or_load_study(url, "race")
    assert calls == [1]


def test_trials_run_in_a_worker_process_and_their_records_come_back(
    demo_small, tmp_path, monkeypatch, capsys
):
    """By default a trial trains in a child process (memory cannot grow trial after trial in
    the main one): a builder broken in this process does not reach it, and the trials' records
    and models are there all the same."""
    import pipeline.models

    def broken(*a, **kw):
        if kw:  # trial builds only
            raise RuntimeError("this process must not train trials")
        return real(*a, **kw)

    real = pipeline.models.build_model
    monkeypatch.setattr(pipeline.models, "build_model", broken)
    assert cli.main(_args(demo_small, tmp_path, "--trials", "2", "--pruner", "none", *TRIALS)) == 0
    trials = _study(tmp_path).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for t in trials:
        assert t.user_attrs["val_accuracy"] == t.value and os.path.exists(
            t.user_attrs["model_path"]
        )
        assert sorted(t.intermediate_values) == [1]  # epochs reported from the worker
    assert "this process must not train" not in capsys.readouterr().out


def test_a_classical_entry_trains_saves_predicts_and_joins_an_ensemble(
    demo_small, tmp_path, capsys, monkeypatch
):
    """logreg beside a network: one fit, kept as .joblib with its validation probabilities, and
    averaged with the network's probabilities into what is submitted."""
    args = _args(demo_small, tmp_path, "--trials", "1", "--pruner", "none", "--search-only")
    args[args.index("lenet5_wide,cnn1")] = "logreg,cnn1"
    assert cli.main(args) == 0
    for model in ("logreg", "cnn1"):  # one of each, whatever the sampler would pick
        _study(tmp_path).enqueue_trial({"model": model})
    args[args.index("--trials") + 1] = "2"
    assert cli.main(args) == 0
    study = _study(tmp_path)
    kinds = {t.params["model"] for t in _complete(study)}
    assert kinds == {"logreg", "cnn1"}, kinds
    logreg = next(t for t in _complete(study) if t.params["model"] == "logreg")
    record = read_trial(logreg)
    assert record.model_path.endswith(".joblib") and os.path.exists(record.model_path)
    assert record.metrics.epochs_run == 1 and record.metrics.params > 0
    # scored on the same validation rows as the network: its kept probabilities give its value
    probs = np.load(record.model_path.replace(".joblib", ".validation.npy"))
    assert probs.shape == (96, 10)

    args = _args(demo_small, tmp_path, "--final-only", "--ensemble", "3", *TRIALS)
    args[args.index("lenet5_wide,cnn1")] = "logreg,cnn1"
    assert cli.main(args) == 0
    capsys.readouterr()
    tune_dir = tmp_path / "art" / "fashion-mnist" / "tune"
    best = json.loads((tune_dir / "best.json").read_text())
    paths = best["model_paths"]
    assert {Path(p).suffix for p in paths} == {".joblib", ".keras"}
    from pipeline.data import load_competition
    from pipeline.predict import load_model, predict_proba

    ds = load_competition(demo_small)
    flip = best["mirror_at_test"]
    mean = np.mean([predict_proba(load_model(p), ds.x_test, flip=flip) for p in paths], axis=0)
    np.testing.assert_allclose(np.load(tune_dir / "test_proba.npy"), mean, atol=1e-5)

    # k-fold: the folds train the chosen ensemble, networks and the classical member, each fold
    # averaging them; the estimate is the average's out-of-fold accuracy
    monkeypatch.setattr(plan, "KFOLD", 2)  # the fewest folds: 6 fits of 3 members
    args = _args(demo_small, tmp_path, "--final-only", "--ensemble", "3", "--final", "folds",
                 "--final-max-epochs", "1")  # fmt: skip
    args[args.index("lenet5_wide,cnn1")] = "logreg,cnn1"
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    best = json.loads((tune_dir / "best.json").read_text())
    folds = best["kfold"]
    models = {read_trial(t).model for t in _complete(study) if t.number in folds["members"]}
    assert models == {"logreg", "cnn1"} and len(folds["members"]) == 3, folds
    assert len(folds["member_accuracies"]) == 3 and "averaged" in out
    assert best["ensemble"] == folds["members"]  # all three trials (--ensemble 3)
    assert sorted(folds["members"]) == sorted(t.number for t in _complete(study))
    oof = np.load(tune_dir / "kfold_oof.npy")  # every row once, the members' average
    assert oof.shape == (600, 10) and best["estimate"]["rows"] == 600
    np.testing.assert_allclose(oof.sum(1), 1.0, atol=1e-4)
    assert best["estimate"]["accuracy"] == pytest.approx(folds["out_of_fold_accuracy"], abs=1e-4)


def test_folds_that_do_not_fit_leave_their_time_to_a_final_fit(demo_small, tmp_path, capsys,
                                                              monkeypatch):  # fmt: skip
    """When not even MIN_FOLDS folds fit the time left, the chosen configuration is trained on
    the whole training split and scored on the holdout, not the trials' models submitted with
    the folds' time unused (the suite's rgb32 and fer48 at 900 s: 480 s used)."""
    from pipeline.tune import kfold

    monkeypatch.setattr(kfold, "folds_that_fit", lambda *a, **k: (0, 1.0, 0.0))
    args = _args(demo_small, tmp_path, "--trials", "1", "--final", "folds", "--final-max-epochs",
                 "2")  # fmt: skip
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "no k-fold training" in out
    best = json.loads((tmp_path / "art" / "fashion-mnist" / "tune" / "best.json").read_text())
    assert best["kfold"] is None and best["final_fit"]["epochs_run"] == 2
    assert best["estimate"]["scored_on"] == "holdout" and best["estimate"]["rows"] == 120
    assert out.strip().splitlines()[-1].endswith("-full.csv")


@pytest.mark.parametrize("models", ["logreg", "cnn1"])
def test_the_kfold_final_stage_trains_on_every_labelled_row_and_scores_out_of_fold(
    demo_small, tmp_path, capsys, models, monkeypatch
):
    """--limit 600 on small data: 3 folds of all 600 labelled rows (the holdout's 120 included),
    every row predicted once by the fold that did not train on it, the estimate on all 600."""
    monkeypatch.setattr(plan, "KFOLD", 3)
    args = _args(demo_small, tmp_path, "--trials", "1", "--final", "folds", "--final-max-epochs",
                 "2")  # fmt: skip
    args[args.index("lenet5_wide,cnn1")] = models
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "on 3 folds of all 600 labelled rows" in out
    tune_dir = tmp_path / "art" / "fashion-mnist" / "tune"
    best = json.loads((tune_dir / "best.json").read_text())
    folds = best["kfold"]
    assert folds["k"] == 3 and folds["rows"] == 600 and len(folds["fold_accuracies"]) == 3
    estimate = best["estimate"]
    assert estimate["scored_on"] == "out-of-fold" and estimate["rows"] == 600
    assert estimate["accuracy"] == pytest.approx(folds["out_of_fold_accuracy"], abs=1e-4)
    oof = np.load(tune_dir / "kfold_oof.npy")
    # every labelled row predicted exactly once (a row no fold left out would be all zeros)
    assert oof.shape == (600, 10)
    np.testing.assert_allclose(oof.sum(1), 1.0, atol=1e-4)
    # the mean of the fold accuracies is the out-of-fold accuracy (folds of 200 rows each)
    assert np.mean(folds["fold_accuracies"]) == pytest.approx(folds["out_of_fold_accuracy"],
                                                              abs=2e-3)  # fmt: skip
    assert best["options"]["final"] == "folds" and best["honest"]
    sub_path = out.strip().splitlines()[-1]
    assert sub_path.endswith("-3fold.csv") and len(pd.read_csv(sub_path)) == 200
