"""The worker process: it runs the tasks it is sent (trials, fits, predictions) and answers
with their results; it is replaced after TASKS_PER_WORKER tasks or past its memory limit;
killed mid-trial, its trial fails with the reason and the search goes on with a new worker; a
signal to the main process stops a fit in the worker, its checkpoint saved."""

from __future__ import annotations

import os
import signal
import time

import optuna
import pytest
from conftest import wait_for

from pipeline import worker as w
from pipeline.data import load
from pipeline.data.split import run_splits
from pipeline.options import TuneOptions
from pipeline.training import TrainSettings
from pipeline.tune.cost import Budget, CostModel
from pipeline.tune.objective import Job, Objective
from pipeline.tune.plan import TunePlan

pytestmark = pytest.mark.slow

PLAN = TunePlan(10**6, None, "trials", 2, 0.0, 3)
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
    monkeypatch.setattr(w, "TASKS_PER_WORKER", 2)
    worker = w.Worker(opts)
    reports, pids = [], []
    try:
        for n in range(3):
            if n == 2:  # due for replacement: ready() replaces it now and answers once loaded
                worker.ready()
                pids.append(worker.process.pid)
                assert worker.tasks == 0
            record = worker.run(_job(n), lambda e, a, n=n: reports.append((n, e)) or None)
            pids.append(worker.process.pid)
            assert record.metrics.epochs_run == 2 and os.path.exists(record.model_path)
    finally:
        worker.close()
    assert reports == [(0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2)]  # every epoch, in order
    assert pids[0] == pids[1] != pids[2] == pids[3]  # a fresh worker for the third trial
    assert worker.process is None


def test_the_worker_is_replaced_once_its_memory_passes_the_limit(setup, monkeypatch):
    opts, _ = setup
    worker = w.Worker(opts)
    pids = []
    try:
        worker.run(_job(0), lambda e, a: None)
        pids.append(worker.process.pid)
        assert 100 < worker.rss_mib() < w.RSS_LIMIT_MIB  # a worker with TensorFlow loaded
        worker.run(_job(1), lambda e, a: None)
        pids.append(worker.process.pid)
        monkeypatch.setattr(w, "RSS_LIMIT_MIB", 50)  # every worker holds more than this
        worker.run(_job(2), lambda e, a: None)
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
            worker.run(_job(0), lambda e, a: "too weak")
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
    data = run_splits(ds, opts, None).search
    obj = Objective(data, ["mlp"], PLAN, Budget.start(10**6), CostModel(1e-12, {"mlp": 1}),
                    opts.artifacts / "models", 42, worker)  # fmt: skip
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


def test_a_signal_stops_a_fit_in_the_worker_with_its_checkpoint_saved(setup, tmp_path):
    """The main process's first SIGTERM while the worker fits: the worker (which ignores the
    signal itself) is asked to stop, finishes its batch, saves the fit's state and the main
    process raises Interrupted naming it; a rerun of the same fit resumes there."""
    import threading

    from pipeline import artifacts, interrupt
    from pipeline.records import TrialRecord
    from pipeline.training import FitMetrics
    from pipeline.tune.fit import FitJob

    opts, ds = setup
    metrics = FitMetrics(0.5, 1.0, 0.5, 1.0, 1, 1, 1.0, 100.0, 10, 10)
    trial = TrialRecord(model="mlp", hp={}, settings=SETTINGS, metrics=metrics)
    job = FitJob("final", 0, trial, None, time.monotonic() + 10**6, epochs=10**6, least=0)
    worker = w.Worker(opts)
    folder = job.folder(artifacts.tune_dir(opts.artifacts, ds.competition))

    def signal_once_an_epoch_is_saved():
        wait_for(lambda: (folder / "state.json").exists(), what="the fit's first checkpoint")
        os.kill(os.getpid(), signal.SIGTERM)

    interrupt.install()
    try:
        threading.Thread(target=signal_once_an_epoch_is_saved, daemon=True).start()
        with pytest.raises(interrupt.Interrupted) as caught:
            worker.run(job)
    finally:
        worker.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert caught.value.signum == signal.SIGTERM and caught.value.exit_code == 143
    assert caught.value.saved == str(folder) and (folder / "state.json").exists()
    assert interrupt.requested() is None  # passed on to the worker, not left waiting here
    assert worker.process is None


def test_the_worker_is_replaced_before_a_fit_that_would_pass_the_process_limit(setup, monkeypatch):
    opts, _ = setup
    worker = w.Worker(opts)
    worker.cost = CostModel(1e-12, {"mlp": 1}, memory={"mlp": (1000, 10)})  # adds ~70 MiB
    monkeypatch.setattr(w, "FRESH_WORKER_MIB", 50)  # a new worker would hold less
    pids = []
    try:
        for n in range(2):
            worker.run(_job(n), lambda e, a: None)
            pids.append(worker.process.pid)
        assert w.FRESH_WORKER_MIB < worker.rss_mib() < w.PROCESS_LIMIT_MIB - 100
        params = int(w.PROCESS_LIMIT_MIB * 2**20 / 40)  # its parameters alone pass the limit
        worker.cost = CostModel(1e-12, {"mlp": 1}, memory={"mlp": (params, 10)})
        worker.run(_job(2), lambda e, a: None)
        pids.append(worker.process.pid)
    finally:
        worker.close()
    assert pids[0] == pids[1] != pids[2]
