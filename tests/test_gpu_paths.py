"""The GPU-only settings run here, on the CPU: a mixed_float16 policy for every family of the
search space (one train step, one prediction, softmax kept float32), and XLA (jit_compile) for a
small model. An entry that cannot take them is left out of a GPU search with a reason."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.models import get_entry
from pipeline.search_space import DEFAULT_MODELS

pytestmark = pytest.mark.slow

# one entry per family of the search space (a family shares its builder)
# the networks' families (a classical entry is scikit-learn on the CPU: no float16 to test)
FAMILIES = {get_entry(m).family: m for m in reversed(DEFAULT_MODELS) if not get_entry(m).classical}


@pytest.fixture
def mixed_precision():
    import keras

    keras.backend.clear_session()  # first: Keras 3 resets the policy with the session
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")


def _batch(shape, k, n=4):
    rng = np.random.default_rng(0)
    x = rng.random((n, *shape), dtype=np.float32)
    y = np.eye(k, dtype=np.float32)[np.arange(n) % k]
    return x, y


@pytest.mark.parametrize("name", sorted(FAMILIES.values()))
def test_every_searched_family_trains_and_predicts_under_mixed_float16(name, mixed_precision):
    import keras

    from pipeline.models import build_model

    model = build_model(name, (28, 28, 1), 10)
    convs = [la for la in model.layers if isinstance(la, keras.layers.Conv2D)]
    assert convs and convs[0].compute_dtype == "float16"  # the policy is really in force
    model.compile(
        optimizer=keras.optimizers.SGD(0.01), loss="categorical_crossentropy", jit_compile=False
    )
    x, y = _batch((28, 28, 1), 10)
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    p = model.predict(x, verbose=0)
    assert p.dtype == np.float32 and p.shape == (4, 10)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-3)


def test_xla_jit_compile_trains_a_small_model():
    import keras

    from pipeline.models import build_model

    keras.backend.clear_session()
    model = build_model("lenet5", (28, 28, 1), 10)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="categorical_crossentropy",
                  jit_compile=True)  # fmt: skip
    x, y = _batch((28, 28, 1), 10, n=8)
    first = model.train_on_batch(x, y)
    for _ in range(3):
        last = model.train_on_batch(x, y)
    assert np.isfinite(last) and last < first
    assert model.predict(x, verbose=0).shape == (8, 10)


def test_an_entry_that_cannot_take_the_gpu_settings_is_left_out_with_a_reason(monkeypatch, capsys):
    from types import SimpleNamespace

    import keras

    from pipeline import device
    from pipeline.device import gpu_problem
    from pipeline.models import registry
    from pipeline.options import TuneOptions
    from pipeline.tune import budget
    from pipeline.tune.command import choose_models

    def float16_softmax(input_shape, num_classes, **hp):  # forgets registry.classifier
        inputs = keras.Input(input_shape)
        x = keras.layers.Flatten()(inputs)
        return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))

    entry = registry.get_entry("mlp")
    monkeypatch.setitem(registry._REGISTRY, "mlp", entry.__class__(
        **{**entry.__dict__, "builder": float16_softmax, "defaults": {}}))  # fmt: skip
    assert "float16" in gpu_problem("mlp", (28, 28, 1), 10)
    assert gpu_problem("lenet5", (28, 28, 1), 10) is None
    assert keras.mixed_precision.global_policy().name == "float32"  # put back

    # the worker measures the machine: on a GPU, which entries take its settings
    runtime = {**device.configure_runtime(), "device": "GPU"}
    monkeypatch.setattr(device, "configure_runtime", lambda *a, **kw: runtime)
    monkeypatch.setattr(budget, "measure_cost", lambda ds, cache: 1e-12)
    data = SimpleNamespace(image_shape=(28, 28, 1), num_classes=10)
    measured, cost = budget.measure_machine(data, ["mlp", "lenet5"], None)
    assert measured["device"] == "GPU" and list(cost.gpu_problems) == ["mlp"]
    opts = TuneOptions()
    plan = budget.make_plan(opts, 60_000, "GPU")
    kept = choose_models(opts, plan, cost, 100, 25, ["mlp", "lenet5"], (28, 28, 1))
    assert kept == ["lenet5"]
    assert "GPU: leaving out mlp (its output is float16" in capsys.readouterr().out


def test_a_fresh_session_between_trials_keeps_mixed_precision(monkeypatch):
    """Keras 3's clear_session() resets the global dtype policy: on a GPU, every trial after
    the first would have trained in float32 without fresh_session putting it back."""
    import keras

    from pipeline import device

    monkeypatch.setattr(device, "_RUNTIME", {**device.configure_runtime(),
                                             "policy": "mixed_float16"})  # fmt: skip
    try:
        keras.mixed_precision.set_global_policy("mixed_float16")
        keras.backend.clear_session()
        assert keras.mixed_precision.global_policy().name == "float32"  # what Keras does
        keras.mixed_precision.set_global_policy("mixed_float16")
        device.fresh_session()
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
    finally:
        keras.backend.clear_session()
        keras.mixed_precision.set_global_policy("float32")
