"""The trial worker process: it trains what it is sent and answers with the trial's record; it
is replaced after TRIALS_PER_WORKER trials; killed mid-trial, its trial fails with the reason
and the search goes on with a new worker."""

from __future__ import annotations

import os
import signal
import time

import optuna
import pytest

from pipeline.data import load
from pipeline.options import TuneOptions
from pipeline.training import TrainSettings
from pipeline.tune import worker as w
from pipeline.tune.budget import Budget, CostModel, TunePlan
from pipeline.tune.objective import Job, Objective
from pipeline.tune.splits import run_splits

pytestmark = pytest.mark.slow

PLAN = TunePlan("CPU", 10**6, None, False, 2, 0.0, 3)
SETTINGS = TrainSettings("adam", 3e-3, 0.0, 32, 2, False)


@pytest.fixture
def setup(layout_dir, tmp_path):
    folder = layout_dir("digit", n_train=120, n_test=10, side=8)
    opts = TuneOptions(data=folder, artifacts=tmp_path / "art", isolate="process")
    return opts, load(opts)


def _job(number: int) -> Job:
    return Job(number, "mlp", {}, SETTINGS, time.monotonic() + 10**6)


def test_the_worker_trains_reports_each_epoch_and_is_replaced_after_n_trials(setup, monkeypatch):
    opts, _ = setup
    monkeypatch.setattr(w, "TRIALS_PER_WORKER", 2)
    worker = w.Worker(opts)
    reports, pids = [], []
    try:
        for n in range(3):
            record = worker.run(_job(n), PLAN, lambda e, a, n=n: reports.append((n, e)) or None)
            pids.append(worker.process.pid)
            assert record.metrics.epochs_run == 2 and os.path.exists(record.model_path)
    finally:
        worker.close()
    assert reports == [(0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2)]  # every epoch, in order
    assert pids[0] == pids[1] != pids[2]  # a fresh worker for the third trial
    assert worker.process is None


def test_the_worker_is_replaced_once_its_memory_passes_the_limit(setup, monkeypatch):
    opts, _ = setup
    worker = w.Worker(opts)
    pids = []
    try:
        worker.run(_job(0), PLAN, lambda e, a: None)
        pids.append(worker.process.pid)
        assert 100 < worker.rss_mib() < w.RSS_LIMIT_MIB  # a worker with TensorFlow loaded
        worker.run(_job(1), PLAN, lambda e, a: None)
        pids.append(worker.process.pid)
        monkeypatch.setattr(w, "RSS_LIMIT_MIB", 50)  # every worker holds more than this
        worker.run(_job(2), PLAN, lambda e, a: None)
        pids.append(worker.process.pid)
    finally:
        worker.close()
    assert pids[0] == pids[1] != pids[2]
    assert worker.rss_mib() == 0.0


def test_the_workers_pruner_answer_stops_the_trial(setup):
    opts, _ = setup
    worker = w.Worker(opts)
    try:
        with pytest.raises(optuna.TrialPruned, match="too weak"):
            worker.run(_job(0), PLAN, lambda e, a: "too weak")
        assert worker.process.is_alive()  # a pruned trial keeps its worker
    finally:
        worker.close()


def test_a_worker_killed_mid_trial_fails_that_trial_and_the_search_goes_on(setup, monkeypatch):
    opts, ds = setup
    import pipeline.tune.objective as objective

    worker = w.Worker(opts)
    killed = []
    real = objective.epoch_reporter

    def killing(trial):
        report = real(trial)

        def first_epoch_kills(epoch, accuracy):
            if not killed:  # the out-of-memory killer, mid-trial
                killed.append(worker.process.pid)
                os.kill(worker.process.pid, signal.SIGKILL)
            return report(epoch, accuracy)

        return first_epoch_kills

    monkeypatch.setattr(objective, "epoch_reporter", killing)
    data = run_splits(ds, opts, PLAN).search
    obj = Objective(ds, data, ["mlp"], PLAN, Budget.start(10**6), CostModel(1e-12, {"mlp": 1}),
                    opts.artifacts / "models", 42, None, worker)  # fmt: skip
    study = optuna.create_study(direction="maximize")
    try:
        study.optimize(obj, n_trials=2, catch=(Exception,))
    finally:
        worker.close()
    first, second = study.trials
    assert first.state == optuna.trial.TrialState.FAIL
    assert "worker process died" in first.user_attrs["reason"]
    assert "exit code -9" in first.user_attrs["reason"]
    assert second.state == optuna.trial.TrialState.COMPLETE  # a new worker trained it
    assert second.user_attrs["epochs_run"] == second.params["epochs"]
    assert obj.failures == 0 and len(killed) == 1
