"""Airbench's pieces in resnet9s's recipe: the whitened first convolution and the batch-norm bias
learning rate (bench/speedrun.py measures them; bench/README.md has the table)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.models import build_model, get_entry
from pipeline.training import fit, settings_for


def smooth_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """uint8 images whose neighbouring pixels are correlated (a blurred noise), so the
    patches' covariance is far from the identity."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size + 2, size + 2))
    x = (x[:, :-2, :-2] + x[:, 1:-1, 1:-1] + x[:, 2:, 2:] + x[:, 1:-1, :-2]) / 4
    x = (x - x.min()) / (x.max() - x.min()) * 255
    return x.round().astype(np.uint8)[..., None]


def test_the_first_convolution_starts_as_the_training_patches_whitening():
    """Each of its first 2 x 9 filters is an eigenvector of the 3x3 patches' covariance over
    sqrt(eigenvalue + eps), then its negative: the filters map the patches' covariance to
    (nearly) the identity; the filters after them keep their initialisation."""
    from pipeline.whitening import EPS, whiten_first_conv

    x = smooth_images(60, 12)
    model = build_model("resnet9s", x.shape[1:], 3)
    stem = model.get_layer("stem_conv")
    before = stem.get_weights()[0].copy()
    assert whiten_first_conv(model, x) == 9
    kernel = stem.get_weights()[0]  # (3, 3, 1, 24)

    # the patches, read one by one (rows, columns, channels: a Conv2D kernel's order)
    f = x.astype(np.float64) / 255.0
    p = np.array([f[i, r : r + 3, c : c + 3, :].ravel() for i in range(len(f))
                  for r in range(10) for c in range(10)])  # fmt: skip
    cov = np.cov(p, rowvar=False)
    values = np.sort(np.linalg.eigvalsh(cov))[::-1]
    m = kernel[..., 0:18:2].reshape(9, 9).T  # one filter a row
    np.testing.assert_allclose(m @ cov @ m.T, np.diag(values / (values + EPS)), atol=1e-3)
    assert np.diag(m @ cov @ m.T)[0] > 0.99  # the strongest direction: unit variance
    np.testing.assert_array_equal(kernel[..., 1:18:2], -kernel[..., 0:18:2])
    np.testing.assert_array_equal(kernel[..., 18:], before[..., 18:])


def test_rgb_whitening_fills_as_many_pairs_as_the_stem_holds():
    """27 patch directions at 3x3x3 and 24 stem filters: the 12 strongest, each a pair."""
    from pipeline.whitening import whiten_first_conv

    x = np.concatenate([smooth_images(20, 10, s) for s in range(3)], axis=-1)
    model = build_model("resnet9s", x.shape[1:], 3)
    assert whiten_first_conv(model, x) == 12
    kernel = model.get_layer("stem_conv").get_weights()[0]
    np.testing.assert_array_equal(kernel[..., 1::2], -kernel[..., 0::2])


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
                        batch_size=32, epochs=1, reduce_lr=False, whiten=False)  # fmt: skip
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
    """resnet9s's recipe starts from a whitened stem and steps batch-norm biases at 64x; the
    rate is SGD's only (Adam's steps ignore a gradient's scale); the study's entries keep
    neither."""
    from pipeline.optimizers import make_optimizer

    s = settings_for(get_entry("resnet9s"))
    assert (s.optimizer, s.whiten, s.bias_rate) == ("sgd-nesterov", True, 64.0)
    adam = settings_for(get_entry("resnet9s"), optimizer="adam", learning_rate=1e-3)
    assert (adam.whiten, adam.bias_rate) == (True, 1.0)
    cnn7 = settings_for(get_entry("cnn7"))
    assert (cnn7.whiten, cnn7.bias_rate) == (False, 1.0)
    with pytest.raises(PipelineError, match="needs SGD"):
        make_optimizer("adam", 1e-3, multiple=64.0)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"optimizer": "sgd-nesterov", "lr_sgd-nesterov": 0.1}, (True, 64.0)),
        ({"optimizer": "adam", "lr_adam": 1e-3}, (True, 1.0)),
    ],
)
def test_a_resnet9s_trial_trains_with_its_recipe(tmp_path, params, expected):
    """The search's trials of resnet9s (the warm start's included) carry the recipe's
    whitening and, with SGD, its bias rate; the final fit and the folds train from the
    trial's settings."""
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
    assert (settings.whiten, settings.bias_rate) == expected


def test_the_final_fit_keeps_the_recipe_and_the_trials_whitened_weights(demo_small, tmp_path):
    """The final fit of a resnet9s trial trains with the trial's bias rate and, started from the
    trial's weights, does not whiten them again; the trial itself started whitened."""
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
    assert (trial.optimizer, trial.whiten, trial.bias_rate) == ("sgd-nesterov", True, 64.0)
    assert (final["settings"]["whiten"], final["settings"]["bias_rate"]) == (False, 64.0)
