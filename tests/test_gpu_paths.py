"""The reduced-precision settings run here, on the CPU: the GPU's mixed_float16 and the bfloat16
CPU's mixed_bfloat16 policy for every family of the search space (one train step, one
prediction, softmax kept float32), and XLA (jit_compile) for a small model. An entry that cannot
take the GPU's settings is left out of a GPU search with a reason."""

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


def test_the_cpu_policy_is_bfloat16_only_where_asked_for_and_in_hardware(monkeypatch):
    from pipeline import device
    from pipeline.errors import PipelineError

    for asked, hardware, policy in [
        (None, True, "float32"),
        ("bf16", True, "mixed_bfloat16"),
        ("bf16", False, "float32"),
        ("float32", True, "float32"),
    ]:
        monkeypatch.setattr(device, "cpu_bf16", lambda h=hardware: h)
        if asked is None:
            monkeypatch.delenv("PIPELINE_CPU_PRECISION", raising=False)
        else:
            monkeypatch.setenv("PIPELINE_CPU_PRECISION", asked)
        assert device.cpu_policy() == policy, (asked, hardware)
    # a cost measured under one policy is not read under the other
    from pipeline.tune.budget import cost_key

    keys = {cost_key({"device": "CPU", "policy": p}, (28, 28, 1)) for p in device.POLICIES.values()}
    assert len(keys) == 2
    monkeypatch.setenv("PIPELINE_CPU_PRECISION", "fp16")
    with pytest.raises(PipelineError, match="PIPELINE_CPU_PRECISION='fp16'"):
        device.cpu_policy()


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
