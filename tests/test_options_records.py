"""Typed options (defaults written once, built from argparse), records and the tune plan."""

from __future__ import annotations

import dataclasses
import json

import optuna
import pytest

from pipeline import options as o
from pipeline.cli import HANDLERS, build_options, build_parser
from pipeline.records import (
    Estimate,
    FinalFitRecord,
    RunRecord,
    TrialRecord,
    TuneResult,
    from_dict,
    load_json,
    read_trial,
    save_json,
    to_dict,
    write_trial,
)
from pipeline.training import FitMetrics, TrainSettings

METRICS = FitMetrics(
    val_accuracy=0.9, val_loss=0.3, train_accuracy=0.95, train_loss=0.2, best_epoch=3,
    epochs_run=4, seconds=12.5, train_images_per_second=800.0, params=1000,
    trainable_params=990,
)  # fmt: skip
SETTINGS = TrainSettings("adam", 1e-3, 0.0, 64, 4, True, augment="light")


def _parse(*argv):
    return build_options(build_parser().parse_args(list(argv)))


@pytest.mark.parametrize("command", sorted(HANDLERS))
def test_flags_left_out_keep_the_dataclass_defaults(command):
    cls = HANDLERS[command][0]
    required = {"train": ["--model", "cnn1"], "predict": ["--run", "x"]}.get(command, [])
    opts = _parse(command, *required)
    assert type(opts) is cls and opts.command == command
    for f in dataclasses.fields(cls):
        if f.name in ("model", "run"):
            continue
        assert getattr(opts, f.name) == cls.default(f.name), f.name


def test_every_flag_lands_in_a_typed_field():
    opts = _parse(
        "tune", "--timeout", "900", "--models", "cnn1, lenet5", "--ensemble", "2",
        "--search-rows", "240", "--seed", "7", "--image-shape", "28x28", "--tta",
    )  # fmt: skip
    assert opts.timeout == 900.0 and opts.models == ("cnn1", "lenet5")
    assert opts.ensemble == 2 and opts.search_rows == 240 and opts.seed == 7
    assert opts.image_shape == (28, 28, 1) and opts.tta is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.timeout = 1  # type: ignore[misc]


def test_quick_replaces_the_defaults_of_flags_not_given():
    quick = _parse("tune", "--quick")
    for key, value in o.TuneOptions.QUICK.items():
        assert getattr(quick, key) == value
    assert _parse("tune", "--quick", "--timeout", "300").timeout == 300.0
    assert _parse("tune").timeout == o.TuneOptions.default("timeout") == 3600.0


def test_options_are_saved_as_json(tmp_path):
    opts = _parse("tune", "--models", "cnn1", "--limit", "500")
    opts.save(tmp_path / "config.json")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["command"] == "tune" and saved["models"] == ["cnn1"] and saved["limit"] == 500
    assert set(saved) == {"command"} | {f.name for f in dataclasses.fields(o.TuneOptions)}


def test_run_record_is_one_flat_object_and_reads_back(tmp_path):
    record = RunRecord(model="cnn1", run_id="r1", metrics=METRICS)
    save_json(tmp_path / "metrics.json", record)
    flat = json.loads((tmp_path / "metrics.json").read_text())
    assert flat["model"] == "cnn1" and flat["val_accuracy"] == 0.9 and flat["epochs_run"] == 4
    assert "metrics" not in flat
    assert load_json(RunRecord, tmp_path / "metrics.json") == record


def test_tune_result_nests_and_reads_back():
    fitted = FinalFitRecord(
        trial=0, model="cnn7", epochs_run=5, best_epoch=5, seconds=10.0, train_rows=480,
        holdout_rows=120, holdout_accuracy_plain=0.8, holdout_accuracy_tta=0.81,
        holdout_accuracy=0.81, tta=True, model_path="final.keras", settings=SETTINGS,
    )  # fmt: skip
    result = TuneResult(
        study="s", trial=0, ensemble=[0], model="cnn7", params={"model": "cnn7"}, hp={},
        settings=SETTINGS, holdout_accuracy=0.81, best_trial_validation_accuracy=0.7,
        ensemble_validation_accuracy={"1": 0.7}, tta=True, final_fit=fitted,
        model_path="final.keras", model_paths=["t0.keras"], options={"seed": 1},
        estimate=Estimate.of(0.81, 120, "holdout"),
    )  # fmt: skip
    data = json.loads(json.dumps(to_dict(result)))
    assert data["final_fit"]["settings"]["augment"] == "light"
    assert from_dict(TuneResult, data) == result
    # a best.json written before the trial-side "holdout" became "validation" still loads
    old = {k: v for k, v in data.items() if "validation" not in k and k != "estimate"}
    old["best_trial_holdout_accuracy"] = 0.7
    old["ensemble_holdout_accuracy"] = {"1": 0.7}
    back = from_dict(TuneResult, old)
    assert back.best_trial_validation_accuracy == 0.7
    assert back.ensemble_validation_accuracy == {"1": 0.7}


def test_estimate_interval_is_wilsons():
    e = Estimate.of(0.95, 12_000, "holdout")
    # 1.96 * sqrt(0.95 * 0.05 / 12000) = 0.0039: the interval is about +-0.4 points
    assert 0.9459 < e.low < 0.9461 and 0.9537 < e.high < 0.9539
    small = Estimate.of(0.962, 288, "holdout")  # the small competition's estimate
    assert small.low < 0.94 and small.high < 0.98 and "288 holdout rows" in small.text()
    assert Estimate.of(1.0, 10, "validation").high == pytest.approx(1.0)


def test_the_test_scores_interval_counts_the_test_sets_own_rows():
    """digits28 at 900 s: 0.999 on 6,000 out-of-fold rows, 1.0000 on its 2,000 sealed rows,
    above the accuracy's interval; the test score's interval holds it, and is wider the fewer
    rows either side has. Without test rows there is none."""
    e = Estimate.of(0.999, 6000, "out-of-fold", test_rows=2000)
    assert e.high < 1.0 and e.test_high == pytest.approx(1.0)
    assert e.test_low < e.low and "2000 test images" in e.text()
    wide = Estimate.of(0.8638, 1600, "holdout").for_test(2000)  # rgb32: sealed 0.8820
    assert wide.high < 0.8820 < wide.test_high
    big = wide.for_test(20_000)
    assert wide.test_high - wide.test_low > big.test_high - big.test_low > wide.high - wide.low
    perfect = Estimate.of(1.0, 300, "holdout", test_rows=300)
    assert perfect.test_low < 0.99 and perfect.test_high == 1.0
    assert Estimate.of(0.9, 100, "holdout").test_low is None


def test_trial_record_through_optuna_user_attrs():
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    # written in steps, as a trial does: configuration first, results after training
    write_trial(trial, TrialRecord(model="cnn1", hp={"dropout1": 0.3}, settings=SETTINGS))
    assert read_trial(trial).metrics is None  # not trained yet
    write_trial(trial, TrialRecord(metrics=METRICS, model_path="m.keras"))
    study.tell(trial, 0.9)
    back = read_trial(study.trials[0])
    assert back.model == "cnn1" and back.settings == SETTINGS and back.metrics == METRICS
    assert back.model_path == "m.keras" and back.reason is None
    # the keys are the field names; the metrics are flat, as in metrics.json
    assert study.trials[0].user_attrs["val_accuracy"] == 0.9
    # a study written before the rename: its "holdout_artifact" is the validation artifact
    old = study.ask()
    old.set_user_attr("holdout_artifact", "abc")
    assert read_trial(old).validation_artifact == "abc"


def test_a_metric_of_zero_survives_the_user_attrs():
    # 0.0 == False: a trial whose training accuracy was 0.0 once read back with no metrics
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    zero = dataclasses.replace(METRICS, train_accuracy=0.0, val_loss=0.0, best_epoch=0)
    write_trial(trial, TrialRecord(model="cnn1", metrics=zero))
    study.tell(trial, 0.9)
    assert read_trial(study.trials[0]).metrics == zero
