"""The search space samples valid configurations without building any model."""

import optuna
import pytest

from pipeline.models.registry import get_entry
from pipeline.search_space import (
    CLASSICAL_RANGES,
    DEFAULT_MODELS,
    LR_RANGE,
    WARM_START,
    suggest,
    warm_start_params,
)


def test_sampled_configurations_are_in_range_and_clean():
    models = list(DEFAULT_MODELS)
    entries = {m: get_entry(m) for m in models}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        spec = suggest(trial, models, entries, max_epochs=8)
        seen.add(spec["model"])
        assert spec["model"] in models
        assert set(spec["hp"]) <= set(entries[spec["model"]].defaults)
        if entries[spec["model"]].classical:  # one fit: its own parameters, no training knobs
            assert spec["epochs"] == 1 and "optimizer" not in spec
            for key, value in spec["hp"].items():
                lo, hi = CLASSICAL_RANGES[key]
                assert lo <= value <= hi
            study.tell(trial, 0.5)
            continue
        lo, hi = LR_RANGE[spec["optimizer"]]
        assert lo <= spec["learning_rate"] <= hi
        assert 3 <= spec["epochs"] <= 8
        for key, value in spec["hp"].items():
            if key.startswith("dropout"):
                assert 0.0 <= value <= 0.6
                # on the 0.05 grid and printed without float noise (0.30000000000000004)
                assert len(repr(value)) <= 4, (key, value)
        study.tell(trial, 0.5)
    assert len(seen) >= 8  # the categorical choice reaches most of the zoo


def test_warm_start_only_when_its_model_is_searched():
    params = warm_start_params(list(DEFAULT_MODELS), max_epochs=5)
    assert params["model"] == WARM_START["model"] and params["epochs"] == 5
    assert warm_start_params(["lenet5", "cnn1"], max_epochs=5) is None


def test_a_short_budget_starts_from_the_light_recipe():
    """--quick's warm start is lenet5_wide (Adam 2e-3, batch 128, relu): its parameters fix
    every choice the search would otherwise sample, and the plan carries the choice."""
    import optuna

    from pipeline.models import get_entry
    from pipeline.options import TuneOptions
    from pipeline.search_space import LIGHT_WARM_START, suggest
    from pipeline.tune.plan import make_plan

    params = warm_start_params(list(DEFAULT_MODELS), 8, "lenet5_wide")
    assert params == {**LIGHT_WARM_START, "epochs": 8}
    assert warm_start_params(["resnet9s", "svc"], 8, "lenet5_wide") is None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    study.enqueue_trial(params)
    trial = study.ask()
    spec = suggest(trial, list(DEFAULT_MODELS), {m: get_entry(m) for m in DEFAULT_MODELS}, 8)
    assert set(trial.params) == set(params)  # nothing left to chance
    assert spec["model"] == "lenet5_wide" and spec["learning_rate"] == 0.002
    assert spec["hp"]["activation"] == "relu" and spec["batch_size"] == 128
    assert make_plan(TuneOptions(), 1000, None).warm_start == WARM_START["model"]
    quick = TuneOptions(**TuneOptions.QUICK)
    assert make_plan(quick, 1000, None).warm_start == "lenet5_wide"


def test_the_baseline_only_when_svc_is_searched():
    """SVC() as a user would fit it (C=1) wherever the search keeps svc."""
    from pipeline.search_space import baseline_params

    assert baseline_params(list(DEFAULT_MODELS)) == {"model": "svc", "svc.C": 1.0}
    assert baseline_params(["resnet9s", "logreg"]) is None


def test_every_default_entry_samples_repeatedly():
    """Each entry's conditional space is stable across trials (VGG exposes width and units)."""
    for name in DEFAULT_MODELS:
        entry = get_entry(name)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
        for _ in range(4):
            trial = study.ask()
            spec = suggest(trial, [name], {name: entry}, max_epochs=4)
            study.tell(trial, 0.5)
        if "width" in entry.defaults:
            assert spec["hp"]["width"] in (0.5, 1.0)


@pytest.mark.parametrize("rows", [300, 919, 2400, 12_000, 48_000])
def test_the_step_rule_gives_small_data_more_than_a_handful_of_steps(rows):
    """1,000 rows at batch 256 would be 4 steps an epoch: the batch shrinks until an epoch makes
    MIN_STEPS_PER_EPOCH steps; large data keeps the sampled batch."""
    from pipeline.tune.cost import MIN_STEPS_PER_EPOCH, batch_for_rows

    for sampled in (32, 256, 512):
        batch = batch_for_rows(sampled, rows)
        assert batch <= sampled and batch >= 16
        assert rows / batch >= MIN_STEPS_PER_EPOCH or batch == 16
        if rows / sampled >= MIN_STEPS_PER_EPOCH:
            assert batch == sampled
    assert batch_for_rows(256, 919) == 32 and batch_for_rows(512, 12_000) == 512
