"""The reduced-precision settings run here, on the CPU: the GPU's mixed_float16 and the bfloat16
CPU's mixed_bfloat16 policy for every family of the search space (one train step, one
prediction, softmax kept float32), and XLA (jit_compile) for a small model. An entry that cannot
take the machine's mixed precision is left out of the search with a reason."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.models import get_entry
from pipeline.search_space import DEFAULT_MODELS

pytestmark = pytest.mark.slow

# one entry per family of the search space (a family shares its builder)
# the networks' families (a classical entry is scikit-learn on the CPU: no float16 to test)
FAMILIES = {get_entry(m).family: m for m in reversed(DEFAULT_MODELS) if not get_entry(m).classical}


@pytest.fixture(params=["mixed_float16", "mixed_bfloat16"])
def mixed_precision(request):
    import keras

    keras.backend.clear_session()  # first: Keras 3 resets the policy with the session
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param.removeprefix("mixed_")
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")


def _batch(shape, k, n=4):
    rng = np.random.default_rng(0)
    x = rng.random((n, *shape), dtype=np.float32)
    y = np.eye(k, dtype=np.float32)[np.arange(n) % k]
    return x, y


@pytest.mark.parametrize("name", sorted(FAMILIES.values()))
def test_every_searched_family_trains_and_predicts_under_mixed_precision(name, mixed_precision):
    import keras

    from pipeline.models import build_model

    model = build_model(name, (28, 28, 1), 10)
    convs = [la for la in model.layers if isinstance(la, keras.layers.Conv2D)]
    assert convs and convs[0].compute_dtype == mixed_precision  # the policy is really in force
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


def test_an_entry_that_cannot_take_mixed_precision_is_left_out_with_a_reason(monkeypatch, capsys):
    from types import SimpleNamespace

    import keras

    from pipeline import device
    from pipeline.models import registry
    from pipeline.options import TuneOptions
    from pipeline.tune import cost as cost_module
    from pipeline.tune.plan import choose_models, make_plan

    def float16_softmax(input_shape, num_classes, **hp):  # forgets registry.classifier
        inputs = keras.Input(input_shape)
        x = keras.layers.Flatten()(inputs)
        return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))

    entry = registry.get_entry("mlp")
    monkeypatch.setitem(registry._REGISTRY, "mlp", entry.__class__(
        **{**entry.__dict__, "builder": float16_softmax, "defaults": {}}))  # fmt: skip
    # the worker measures the machine: under a mixed policy (a GPU's), which entries take it
    runtime = {**device.configure_runtime(), "device": "GPU", "policy": "mixed_float16"}
    monkeypatch.setattr(device, "_RUNTIME", runtime)
    monkeypatch.setattr(cost_module, "measure_cost", lambda ds, cache: 1e-12)
    data = SimpleNamespace(image_shape=(28, 28, 1), num_classes=10)
    try:
        measured, cost = cost_module.measure_machine(data, ["mlp", "lenet5"], None)
    finally:
        keras.backend.clear_session()
        keras.mixed_precision.set_global_policy("float32")
    assert measured["device"] == "GPU" and list(cost.policy_problems) == ["mlp"]
    assert "float16" in cost.policy_problems["mlp"]
    opts = TuneOptions()
    plan = make_plan(opts, 60_000, cost)
    kept = choose_models(opts, plan, cost, (100, 25), ["mlp", "lenet5"], (28, 28))
    assert kept == ["lenet5"]
    assert "leaving out mlp: its output is float16" in capsys.readouterr().out


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


def test_bfloat16_in_hardware_is_read_from_the_cpu_flags(tmp_path):
    from pipeline.device import cpu_bf16

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_bf16(str(info))
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert not cpu_bf16(str(info))
    info.write_text("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert cpu_bf16(str(info))
    assert not cpu_bf16(str(tmp_path / "absent"))


def test_the_policy_follows_precision_and_the_hardware(monkeypatch):
    """--precision: auto keeps float32 on a CPU and mixed float16 on a GPU with tensor cores;
    mixed adds bfloat16 on a CPU that has it in hardware; float32 everywhere."""
    from pipeline import device
    from pipeline.tune.cost import cost_key

    cases = [("auto", True, "float32"), ("mixed", True, "mixed_bfloat16"),
             ("mixed", False, "float32"), ("float32", True, "float32")]  # fmt: skip
    for asked, hardware, policy in cases:
        monkeypatch.setattr(device, "cpu_bf16", lambda h=hardware: h)
        assert device.cpu_policy(asked) == policy, (asked, hardware)
    assert device.gpu_policy("auto", (8, 0)) == device.gpu_policy("mixed", (7, 0))
    assert device.gpu_policy("auto", (8, 0)) == "mixed_float16"
    assert device.gpu_policy("auto", (6, 1)) == device.gpu_policy("float32", (9, 0)) == "float32"
    # a cost measured under one policy is not read under the other
    keys = {cost_key({"device": "CPU", "policy": p}, (28, 28, 1))
            for p in ("float32", "mixed_bfloat16")}  # fmt: skip
    assert len(keys) == 2


def test_a_bfloat16_model_saved_by_the_fit_loads_and_predicts_float32(tmp_path):
    """What the final fit saves under mixed_bfloat16 is what predict loads (in a process whose
    policy may be float32): bfloat16 layers, float32 probabilities that sum to 1."""
    import keras

    from pipeline.models import build_model, get_entry
    from pipeline.predict import load_model, predict_proba
    from pipeline.training import fit, settings_for

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (96, 28, 28, 1), dtype=np.uint8)
    y = np.arange(96) % 10
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model("resnet9s", (28, 28, 1), 10)
        settings = settings_for(get_entry("resnet9s"), seed=0, epochs=1, batch_size=32)
        fit(model, settings, (x[:64], y[:64], x[64:], y[64:]), 10, verbose=0)
        model.save(tmp_path / "m.keras")
    finally:
        keras.backend.clear_session()
        keras.mixed_precision.set_global_policy("float32")
    loaded = load_model(tmp_path / "m.keras")
    convs = [la for la in loaded.layers if isinstance(la, keras.layers.Conv2D)]
    assert convs[0].compute_dtype == "bfloat16"
    assert keras.backend.standardize_dtype(loaded(x[:2].astype(np.float32)).dtype) == "float32"
    p = predict_proba(loaded, x[64:])
    assert p.dtype == np.float32 and p.shape == (32, 10)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-3)
