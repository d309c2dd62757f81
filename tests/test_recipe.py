"""Airbench's piece in resnet9s's recipe: the batch-norm bias learning rate (bench/speedrun.py
measures it; bench/README.md has the table)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.models import build_model, get_entry
from pipeline.training import fit, settings_for


def smooth_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """uint8 images of a blurred noise (neighbouring pixels correlated, as in real images)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size + 2, size + 2))
    x = (x[:, :-2, :-2] + x[:, 1:-1, 1:-1] + x[:, 2:, 2:] + x[:, 1:-1, :-2]) / 4
    x = (x - x.min()) / (x.max() - x.min()) * 255
    return x.round().astype(np.uint8)[..., None]


def one_step(model, settings, x, y, start):
    """The change in every trainable variable after one SGD step on (x, y) from ``start``."""
    model.set_weights(start)
    before = [v.numpy() for v in model.trainable_variables]
    fit(model, settings, (x, y, x, y), 3, verbose=0, keep_best=False)
    return {v.path: v.numpy() - b for v, b in zip(model.trainable_variables, before, strict=True)}


def test_batch_norm_biases_step_at_the_multiple_asked():
    """With bias_rate 64 one step moves every batch-norm beta 64 times as far as with 1, and
    every other variable exactly as far."""
    x = smooth_images(32, 8)
    y = np.arange(32) % 3
    model = build_model("resnet9s", x.shape[1:], 3)
    start = model.get_weights()
    base = settings_for(get_entry("resnet9s"), optimizer="sgd-nesterov", learning_rate=0.01,
                        batch_size=32, epochs=1, reduce_lr=False)  # fmt: skip
    plain = one_step(model, base.replace(bias_rate=1.0), x, y, start)
    fast = one_step(model, base.replace(bias_rate=64.0), x, y, start)
    betas = [k for k in plain if k.endswith("beta")]
    assert len(betas) == 8  # the stem, three stages, two residual pairs
    for k in plain:
        if k in betas:
            assert np.abs(plain[k]).max() > 0
            np.testing.assert_allclose(fast[k], 64.0 * plain[k], rtol=1e-3, atol=1e-7)
        else:
            np.testing.assert_allclose(fast[k], plain[k], rtol=1e-4, atol=1e-7)


def test_the_recipe_reaches_resnet9s_with_sgd_only():
    """resnet9s's recipe steps batch-norm biases at 64x; the rate is SGD's only (Adam's steps
    ignore a gradient's scale); the study's entries keep 1."""
    from pipeline.optimizers import make_optimizer

    s = settings_for(get_entry("resnet9s"))
    assert (s.optimizer, s.bias_rate) == ("sgd-nesterov", 64.0)
    adam = settings_for(get_entry("resnet9s"), optimizer="adam", learning_rate=1e-3)
    assert adam.bias_rate == 1.0
    cnn7 = settings_for(get_entry("cnn7"))
    assert cnn7.bias_rate == 1.0
    with pytest.raises(PipelineError, match="needs SGD"):
        make_optimizer("adam", 1e-3, multiple=64.0)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"optimizer": "sgd-nesterov", "lr_sgd-nesterov": 0.1}, 64.0),
        ({"optimizer": "adam", "lr_adam": 1e-3}, 1.0),
    ],
)
def test_a_resnet9s_trial_trains_with_its_recipe(tmp_path, params, expected):
    """The search's trials of resnet9s (the warm start's included) carry, with SGD, the recipe's
    bias rate; the final fit and the folds train from the trial's settings."""
    import optuna

    from pipeline.tune.cost import Budget, CostModel
    from pipeline.tune.objective import Objective
    from pipeline.tune.plan import TunePlan

    cost = CostModel(1e-15, {"resnet9s": 10**6}, memory={"resnet9s": (100_000, 1_000)})
    x, y = np.zeros((40, 28, 28, 1), np.float32), np.arange(40) % 10
    plan = TunePlan(10**6, None, "trials", 2, 0.0, 3)
    obj = Objective((x, y, x, y), ["resnet9s"], plan, Budget.start(10**6), cost, tmp_path, 42,
                    runner=None)  # fmt: skip
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"model": "resnet9s", **params})
    settings = obj.sample(study.ask()).settings
    assert settings.bias_rate == expected


def test_the_final_fit_keeps_the_trials_recipe(demo_small, tmp_path):
    """The final fit of a resnet9s trial, started from the trial's weights, trains with the
    trial's bias rate."""
    import json

    import optuna

    from pipeline import cli
    from pipeline.records import read_trial

    args = ["tune", "--data", str(demo_small), "--artifacts", str(tmp_path / "art"),
            "--submissions", str(tmp_path / "subs"), "--models", "resnet9s", "--max-epochs", "1",
            "--limit", "600", "--timeout", "300", "--no-report", "--trials", "1",
            "--search-rows", "240", "--isolate", "none", "--final", "fit",
            "--final-max-epochs", "2"]  # fmt: skip
    assert cli.main(args) == 0
    tune_dir = tmp_path / "art" / "fashion-mnist" / "tune"
    best = json.loads((tune_dir / "best.json").read_text())
    final = best["final_fit"]
    assert final["model"] == "resnet9s" and final["started_from"]
    url = f"sqlite:///{tmp_path / 'art' / 'fashion-mnist' / 'optuna.db'}"
    study = optuna.load_study(study_name="fashion-mnist", storage=url)
    trial = read_trial(study.trials[final["trial"]]).settings
    assert (trial.optimizer, trial.bias_rate) == ("sgd-nesterov", 64.0)
    assert final["settings"]["bias_rate"] == 64.0
