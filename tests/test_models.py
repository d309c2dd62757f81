"""Model zoo: every entry builds, predicts probabilities, and matches its study's counts."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.models import build_model, count_macs, count_params, get_entry, list_models

# (total, trainable) at the study's own shape and K, from the studies' printed summaries
STUDY_COUNTS = {
    "cnn1": (886_245, 886_245),
    "cnn2": (886_245, 886_245),
    "cnn3": (886_245, 886_245),
    "cnn4": (886_245, 886_245),
    "cnn5": (886_245, 886_245),
    "cnn6": (886_245, 886_245),
    "cnn7": (887_013, 887_013 - 384),
    "lenet5": (245_601, 245_601),
    "lenet5_wide": (368_749, 368_749),
    "alexnet": (29_967_045, 29_967_045),
    "vgg16": (33_616_581, 33_616_581),
    "resnet": (11_183_621, 11_183_621 - 7_808),
    "cnn5bn": (1_607_210, 1_605_226),
    "vgg19_transfer": (3_510_858, 5_130),
    "resnet_concat": (1_646_858, 1_643_210),
    "cifar_cnn": (315_722, 315_722),
    "inception_naive": (1_477_162, 1_477_162),
    "residual_small": (352_650, 352_650),
    "lenet_cifar": (62_006, 62_006),
    "alexnet_bn": (21_591_306, 21_590_602),
    "vgg_bn": (33_687_882, 33_663_050),
    "resnet50": (23_608_202, 23_555_082),
    "googlenet": (23_188_534, 23_187_702),
    "mlp": (59_210, 59_210),
    "dense_resnet": (441_226, 436_618),
}


@pytest.fixture(autouse=True)
def _fresh_session():
    import keras

    keras.backend.clear_session()
    yield


# entries added for speed on 2 CPU cores (pipeline/models/fast.py): (params at 28x28x1, K=10)
FAST = {"resnet9s": 416_194, "resnet9m": 931_818, "resnet20": 273_754}


def test_every_entry_has_a_study_count():
    studied = [m for m in list_models() if get_entry(m).source not in ("new", "sklearn")]
    assert sorted(studied) == sorted(STUDY_COUNTS)
    classical = [m for m in list_models() if get_entry(m).classical]
    assert sorted(classical) == ["extra_trees", "logreg", "svc"]
    studied += classical
    assert sorted(set(list_models()) - set(studied)) == sorted(FAST)


@pytest.mark.parametrize("name", sorted(FAST))
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (48, 48, 1), (20, 12, 1)])
def test_fast_entries_build_for_any_size_and_channels(name, shape):
    model = build_model(name, shape, 7)
    x = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    p = np.asarray(model(x, training=False))
    assert p.shape == (2, 7) and not np.isnan(p).any()
    if shape == (28, 28, 1):
        assert count_params(build_model(name, shape, 10))[1] == FAST[name]
        half = count_macs(build_model(name, shape, 10, width=0.5))
        assert 0.2 < half / count_macs(build_model(name, shape, 10)) < 0.3  # ~width squared


@pytest.mark.parametrize("name", sorted(STUDY_COUNTS))
def test_parameter_counts_match_the_study(name):
    e = get_entry(name)
    model = build_model(name, e.study_shape, e.study_classes)
    trainable, total = count_params(model)
    assert (total, trainable) == STUDY_COUNTS[name]


CORE = [
    "cnn1",
    "cnn2",
    "cnn3",
    "cnn4",
    "cnn5",
    "cnn6",
    "cnn7",
    "lenet5",
    "lenet5_wide",
    "alexnet",
    "vgg16",
    "resnet",
]


@pytest.mark.parametrize("name", CORE)
def test_core_study_counts_at_28x28x1_k5(name):
    _, total = count_params(build_model(name, (28, 28, 1), 5))
    assert total == STUDY_COUNTS[name][0]


@pytest.mark.parametrize("name", sorted(STUDY_COUNTS))
@pytest.mark.parametrize("shape", ["study", (28, 28, 1)])
def test_forward_pass_gives_probabilities(name, shape):
    e = get_entry(name)
    shape = e.study_shape if shape == "study" else shape
    model = build_model(name, shape, 7)
    x = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    p = np.asarray(model(x, training=False))
    assert p.shape == (2, 7)
    assert not np.isnan(p).any()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-4)
    assert all(layer.name for layer in model.layers)


def test_designed_input_size_is_adapted_inside_the_model():
    m = build_model("vgg16", (28, 28, 1), 5)
    assert m.input_shape == (None, 28, 28, 1)
    assert m.get_layer("resize").output.shape[1:3] == (48, 48)
    t = build_model("vgg19_transfer", (28, 28, 1), 10, weights=None)
    assert t.get_layer("channel_repeat").output.shape[-1] == 3


def test_hyperparameters_override_defaults_and_unknown_ones_are_refused():
    wide = build_model("cnn1", (28, 28, 1), 10, filters1=64, dense_units=128)
    assert wide.get_layer("conv1").filters == 64
    assert wide.get_layer("dense").units == 128
    with pytest.raises(PipelineError, match="no hyperparameter"):
        build_model("cnn1", (28, 28, 1), 10, nonsense=3)
    with pytest.raises(PipelineError, match="unknown model"):
        build_model("cnn99", (28, 28, 1), 10)


def test_recipes_follow_the_study():
    assert get_entry("cnn1").recipe.reduce_lr is False
    assert get_entry("cnn2").recipe.reduce_lr is True
    r5, r6 = get_entry("cnn5").recipe, get_entry("cnn6").recipe
    assert (r5.optimizer, r5.learning_rate, r5.momentum, r5.batch_size) == (
        "sgd-nesterov",
        0.01,
        0.9,
        32,
    )
    assert r6.batch_size == 128
    assert get_entry("lenet5").recipe.epochs == 80


def test_macs_scale_with_the_architecture():
    cnn1 = count_macs(build_model("cnn1", (28, 28, 1), 10))
    # conv2 alone: 28*28 outputs x 5*5*32 inputs x 32 filters
    assert cnn1 > 28 * 28 * 5 * 5 * 32 * 32
    vgg = count_macs(build_model("vgg16", (28, 28, 1), 10))
    assert 10 < vgg / cnn1 < 60


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(32, 32, 3), (48, 48, 1)])
def test_every_searched_entry_builds_for_rgb_and_other_sizes(shape):
    from pipeline.search_space import DEFAULT_MODELS

    families = {get_entry(m).family: m for m in DEFAULT_MODELS}  # a family shares its builder
    families.pop("classical")  # scikit-learn: flat pixels of any shape (test_tune, test_training)
    for name in families.values():
        import keras

        keras.backend.clear_session()
        model = build_model(name, shape, 7)
        assert model.input_shape == (None, *shape) and model.output_shape == (None, 7), name
        assert count_macs(model) > 0
