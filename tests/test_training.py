"""Training on real demo rows, and `train` -> `predict` end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline import cli
from pipeline.data import holdout, load_competition
from pipeline.models import build_model, get_entry
from pipeline.training import fit, make_dataset, settings_for


def test_dataset_scales_per_batch_and_one_hots():
    x = np.array([[[[0]], [[255]]], [[[51]], [[102]]]], dtype=np.uint8)  # 2 images, 2x1x1
    ds = make_dataset(x, np.array([1, 0]), 3, batch_size=2)
    images, labels = next(iter(ds))
    np.testing.assert_allclose(images.numpy().ravel(), [0, 1, 0.2, 0.4], atol=1e-6)
    np.testing.assert_array_equal(labels.numpy(), [[0, 1, 0], [1, 0, 0]])


def test_tf_data_autotuning_is_off_on_a_cpu_only():
    from pipeline.device import configure_runtime
    from pipeline.training import dataset_options

    assert dataset_options("CPU").autotune.enabled is False
    assert dataset_options("GPU").autotune.enabled is not False  # the autotuner feeds a GPU
    x = np.zeros((4, 2, 2, 1), dtype=np.uint8)
    on_cpu = configure_runtime()["device"] == "CPU"
    for ds in (make_dataset(x, np.arange(4) % 2, 2, 2, shuffle=True, augment="crop"),
               make_dataset(x, None, 0, 2)):  # fmt: skip
        assert (ds.options().autotune.enabled is False) == on_cpu


@pytest.mark.slow
def test_small_model_learns_real_rows(demo_small):
    ds = load_competition(demo_small)
    data = holdout(ds, seed=0)
    entry = get_entry("cnn1")
    settings = settings_for(entry, seed=0, epochs=2, batch_size=32)
    result = fit(
        build_model("cnn1", ds.image_shape, ds.num_classes),
        settings,
        data,
        ds.num_classes,
        verbose=0,
    )
    assert result.metrics.val_accuracy > 0.70
    assert result.metrics.epochs_run == 2
    assert len(result.history["val_accuracy"]) == 2
    # the best epoch's weights are the ones kept
    assert result.metrics.val_accuracy == max(result.history["val_accuracy"])


@pytest.mark.slow
def test_train_then_predict_end_to_end(demo_small, tmp_path, capsys):
    art, subs = tmp_path / "art", tmp_path / "subs"
    common = ["--data", str(demo_small), "--artifacts", str(art), "--submissions", str(subs)]
    assert (
        cli.main(
            ["train", "--model", "lenet5_wide", "--epochs", "1", "--batch-size", "128", *common]
        )
        == 0
    )
    out = capsys.readouterr().out.strip().splitlines()
    first = out[-1]
    assert first.endswith("-lenet5_wide.csv")
    runs = list((art / "fashion-mnist" / "runs").iterdir())
    assert len(runs) == 1
    run = runs[0]
    for name in ("model.keras", "history.csv", "metrics.json", "config.json"):
        assert (run / name).exists(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["params"] == 369_174 and metrics["epochs_run"] == 1
    assert json.loads((run / "config.json").read_text())["settings"]["batch_size"] == 128
    sub = pd.read_csv(first)
    sample = pd.read_csv(demo_small / "sample_submission.csv")
    assert list(sub.columns) == ["Id", "Label"] and list(sub["Id"]) == list(sample["Id"])

    again = tmp_path / "again.csv"
    assert cli.main(["predict", "--run", run.name, "--submission", str(again), *common]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(again)
    pd.testing.assert_frame_equal(pd.read_csv(again), sub)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["svc", "extra_trees"])
def test_train_then_predict_a_classical_entry(demo_small, tmp_path, capsys, name):
    """scikit-learn's SVC and extra trees through the same commands: one fit, model.joblib,
    the same submission again from the saved run."""
    art, subs = tmp_path / "art", tmp_path / "subs"
    common = ["--data", str(demo_small), "--artifacts", str(art), "--submissions", str(subs)]
    assert cli.main(["train", "--model", name, *common]) == 0
    first = capsys.readouterr().out.strip().splitlines()[-1]
    (run,) = list((art / "fashion-mnist" / "runs").iterdir())
    assert (run / "model.joblib").exists() and not (run / "model.keras").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1 and metrics["val_accuracy"] > 0.7  # 400 rows of the demo
    assert metrics["params"] > 0  # support vectors, tree nodes
    again = tmp_path / "again.csv"
    assert cli.main(["predict", "--run", run.name, "--submission", str(again), *common]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(again), pd.read_csv(first))


def test_predict_unknown_run_is_one_line(demo_small, tmp_path, capsys):
    code = cli.main(
        ["predict", "--run", "nope", "--data", str(demo_small), "--artifacts", str(tmp_path)]
    )
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    assert "no such run" in lines[0] and "Traceback" not in err


def test_batch_norm_momentum_follows_the_epoch_length():
    import keras

    from pipeline.batchnorm import adapt_batch_norm
    from pipeline.models import build_model

    model = build_model("cnn7", (28, 28, 1), 10)
    bns = [la for la in model.layers if isinstance(la, keras.layers.BatchNormalization)]
    assert len(bns) == 4
    assert adapt_batch_norm(model, 24) == pytest.approx(1 - 5 / 24)  # few large batches
    assert all(la.momentum == pytest.approx(1 - 5 / 24) for la in bns)
    assert adapt_batch_norm(model, 8) == 0.5  # tiny runs: track the weights quickly
    assert adapt_batch_norm(model, 188) == pytest.approx(1 - 5 / 188)
    assert adapt_batch_norm(model, 1500) == 0.99  # the study's epochs: Keras' default
    assert adapt_batch_norm(build_model("cnn1", (28, 28, 1), 10), 24) is None


def test_cosine_schedule_replans_to_the_deadline(tmp_path):
    import time

    import keras

    from pipeline.models import build_model
    from pipeline.training import TrainSettings, fit

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(64, 28, 28, 1), dtype=np.uint8)
    y = np.arange(64) % 3
    s = TrainSettings(
        optimizer="sgd", learning_rate=0.05, momentum=0.0, batch_size=32, epochs=10,
        reduce_lr=False, schedule="cosine",
    )  # fmt: skip
    # no deadline: the whole plan, learning rate decayed from 0.05 towards 1%
    r = fit(build_model("mlp", (28, 28, 1), 3), s, (x, y, x, y), 3, verbose=0, keep_best=False)
    lrs = r.history["learning_rate"]
    assert len(lrs) == 10 and lrs[0] == pytest.approx(0.05) and lrs == sorted(lrs, reverse=True)
    assert lrs[-1] < 0.05 * 0.05
    # a deadline already close: the plan shrinks to what fits, and training stops there
    r = fit(build_model("mlp", (28, 28, 1), 3), s, (x, y, x, y), 3, verbose=0,
            deadline=time.monotonic() + 0.01)  # fmt: skip
    assert r.metrics.epochs_run == 1
    del keras


def test_the_cosine_plan_leaves_room_for_a_slow_epoch(monkeypatch):
    """Epochs of 10 s, then one of 30 s, with 25 s left: the mean (15 s) says one more fits,
    the slowest recent epoch says it may not, and the schedule stops."""
    import types

    from pipeline import callbacks

    clock = [100.0]
    monkeypatch.setattr(callbacks, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    model = types.SimpleNamespace(optimizer=types.SimpleNamespace(learning_rate=0.1))
    model.stop_training = False
    cb = callbacks.CosineToDeadline(0.1, 100, deadline=100.0 + 60 + 25)
    cb.set_model(model)
    cb.on_train_begin()
    for epoch, seconds in enumerate([10, 10, 10]):
        cb.on_epoch_begin(epoch)
        clock[0] += seconds
        logs = {}
        cb.on_epoch_end(epoch, logs)
        assert not model.stop_training
        assert logs["seconds_left"] == pytest.approx(85 - 10 * (epoch + 1))
    assert cb.n == 3 + 55 // 10  # steady 10 s epochs: the plan is the mean's
    cb.on_epoch_begin(3)
    clock[0] += 30
    logs = {}
    cb.on_epoch_end(3, logs)
    assert logs["seconds_left"] == pytest.approx(25) and logs["planned_epochs"] == 4
    assert model.stop_training


def test_a_deadline_function_is_reread_every_epoch():
    import time

    import keras

    from pipeline.models import build_model
    from pipeline.training import TrainSettings, fit

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(64, 28, 28, 1), dtype=np.uint8)
    y = np.arange(64) % 3
    ended = []

    class Count(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ended.append(epoch)

    # far away for two epochs, then already passed (as when the measured prediction time grows)
    def deadline():
        return time.monotonic() + (1e6 if len(ended) < 2 else -1)

    for schedule in ("cosine", "plateau"):
        ended.clear()
        s = TrainSettings(
            optimizer="sgd", learning_rate=0.05, momentum=0.0, batch_size=32, epochs=10,
            reduce_lr=False, schedule=schedule,
        )  # fmt: skip
        r = fit(build_model("mlp", (28, 28, 1), 3), s, (x, y, x, y), 3, verbose=0,
                keep_best=False, deadline=deadline, callbacks=[Count()])  # fmt: skip
        # our callbacks run before the caller's, so the move is seen at the end of epoch 3
        assert r.metrics.epochs_run == 3, schedule
        assert r.metrics.stopped_by_deadline


def test_the_deadline_stops_before_an_epoch_that_would_end_past_it(monkeypatch):
    """A 10 s epoch ending 8 s before the deadline: another would end past it, so training
    stops now; with 25 s left it goes on (a cnn5 trial at --quick ran its third 16 s epoch past
    the search's deadline)."""
    from types import SimpleNamespace

    from pipeline import callbacks

    clock = [0.0]
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: clock[0])
    for deadline, stops in ((18.0, True), (35.0, False), (9.0, True)):
        cb = callbacks.Deadline(deadline)
        cb.set_model(SimpleNamespace(stop_training=False))
        clock[0] = 0.0
        cb.on_epoch_begin(0)
        clock[0] = 10.0
        cb.on_epoch_end(0)
        assert cb.model.stop_training is stops and cb.hit is stops, deadline


def test_test_time_views_share_the_plain_pass():
    from pipeline.models import build_model
    from pipeline.predict import TTA_SHIFTS, predict_proba, view_probas, views

    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, size=(40, 28, 28, 1), dtype=np.uint8)
    model = build_model("mlp", (28, 28, 1), 4)
    passes = view_probas(model, x, views(shifts=True), batch_size=16)
    assert len(passes) == len(TTA_SHIFTS)
    np.testing.assert_allclose(passes[0], predict_proba(model, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.mean(passes, axis=0), predict_proba(model, x, tta=True), rtol=1e-5, atol=1e-6
    )
    # the shifted passes see different pixels, so they differ from the plain one
    assert not np.allclose(passes[1], passes[0])


def test_final_fit_starts_from_the_trials_weights_when_they_fit(tmp_path):
    """The final fit begins where the chosen trial's network stopped; a saved model of another
    shape leaves the new one as built (one log line, no crash)."""
    from pipeline import artifacts
    from pipeline.tune.fit import start_from

    trained = build_model("lenet5", (28, 28, 1), 10)
    trained.set_weights([w + 0.5 for w in trained.get_weights()])
    path = tmp_path / "trial-0.keras"
    artifacts.save_model(trained, path)

    fresh = build_model("lenet5", (28, 28, 1), 10)
    assert start_from(fresh, path)
    for a, b in zip(fresh.get_weights(), trained.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

    other = build_model("cnn1", (28, 28, 1), 10)
    before = [w.copy() for w in other.get_weights()]
    assert not start_from(other, path)
    for a, b in zip(other.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_final_fit_times_the_trials_forward_pass_before_it_plans(tmp_path):
    """The time kept for predicting is planned from the trial's saved model timed on holdout
    images, not a third of a training image's time (25.4 s kept where 8.3 s were used); no
    model, or too few images to time, falls back to that estimate."""
    from pipeline import artifacts
    from pipeline.tune.fit import FORWARD_TRACE, FitJob, forward_seconds

    path = tmp_path / "trial-0.keras"
    artifacts.save_model(build_model("cnn1", (28, 28, 1), 10), path)
    x = np.random.default_rng(0).integers(0, 256, (600, 28, 28, 1)).astype(np.uint8)

    def job(init, epochs=None):
        return FitJob("final", 0, None, None, 0.0, init=init and str(init), epochs=epochs)

    per_image = forward_seconds(job(path), x, fallback=1.0)
    assert 0 < per_image < 1.0
    assert forward_seconds(job(None), x, fallback=1.0) == 1.0
    assert forward_seconds(job(path), x[: 2 * FORWARD_TRACE], fallback=1.0) == 1.0
    assert forward_seconds(job(tmp_path / "missing.keras"), x, fallback=1.0) == 1.0
    assert forward_seconds(job(path, epochs=3), x, fallback=1.0) == 1.0  # a fold plans its own


def test_prediction_batches_shrink_with_an_images_activations_not_the_probabilities():
    from pipeline.memory import PREDICT_ACTIVATION_MIB, PREDICT_BATCH
    from pipeline.models import build_model, count_activations
    from pipeline.predict import predict_batch, view_probas

    small = build_model("mlp", (28, 28, 1), 4)
    assert predict_batch(small) == PREDICT_BATCH
    big = build_model("resnet9s", (48, 48, 1), 7)  # ~0.75M values an image
    batch = predict_batch(big)
    assert batch < PREDICT_BATCH
    assert 4 * count_activations(big) * batch / 2**20 <= PREDICT_ACTIVATION_MIB
    assert 4 * count_activations(big) * batch * 2 / 2**20 > PREDICT_ACTIVATION_MIB  # the largest
    x = np.random.default_rng(2).integers(0, 255, size=(2 * batch + 3, 48, 48, 1), dtype=np.uint8)
    (default,) = view_probas(big, x, [(0, 0, False)])
    (whole,) = view_probas(big, x, [(0, 0, False)], batch_size=len(x))
    np.testing.assert_allclose(default, whole, rtol=1e-4, atol=1e-6)
