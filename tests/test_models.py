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


def test_an_entry_that_cannot_build_for_the_data_is_left_out_with_a_reason(monkeypatch, capsys):
    from types import SimpleNamespace

    from pipeline.options import TuneOptions
    from pipeline.search_space import DEFAULT_MODELS
    from pipeline.tune import budget
    from pipeline.tune.command import choose_models

    monkeypatch.setattr(budget, "measure_cost", lambda ds, cache: 1e-12)
    tiny = SimpleNamespace(image_shape=(6, 6, 1), num_classes=3)  # too small for some nets
    cost = budget.cost_model(tiny, list(DEFAULT_MODELS), None)
    assert cost.problems and set(cost.problems) | set(cost.macs) == set(DEFAULT_MODELS)
    assert "resnet9s" in cost.macs  # the fast nets stop pooling at 2x2
    opts = TuneOptions()
    plan = budget.make_plan(opts, 1000, "CPU")
    kept = choose_models(opts, plan, cost, 100, 25, list(DEFAULT_MODELS), (6, 6, 1))
    assert set(kept) <= set(cost.macs) and "resnet9s" in kept
    out = capsys.readouterr().out
    for name in cost.problems:
        assert f"leaving out {name}: it cannot be built for 6x6x1 images" in out


def test_entries_the_final_fit_cannot_train_long_are_left_out_on_cpu(capsys):
    from pipeline.options import TuneOptions
    from pipeline.tune.budget import CostModel, epoch_seconds, make_plan
    from pipeline.tune.command import MIN_FINAL_EPOCHS, choose_models

    opts = TuneOptions(timeout=900)
    plan = make_plan(opts, 60_000, "CPU")
    full = (48_000, 12_000)
    per_mac = 1e-9
    one_epoch = epoch_seconds(per_mac, *full)  # seconds per MAC of a full epoch
    # just over and just under MIN_FINAL_EPOCHS full epochs in the 585 s reserve
    fits = int(plan.reserve / MIN_FINAL_EPOCHS / one_epoch * 0.95)
    slow = int(plan.reserve / MIN_FINAL_EPOCHS / one_epoch * 1.05)
    cost = CostModel(per_mac, {"resnet9s": fits, "resnet9m": slow, "lenet5": fits // 50})
    kept = choose_models(opts, plan, cost, 12_000, 3_000, list(cost.macs), full_rows=full)
    assert kept == ["resnet9s", "lenet5"]
    assert "leaving out resnet9m (the final fit could not train" in capsys.readouterr().out
    # --models is taken as given
    forced = TuneOptions(timeout=900, models=("resnet9m",))
    assert choose_models(forced, plan, cost, 12_000, 3_000, ["resnet9m"], full_rows=full) == [
        "resnet9m"
    ]


@pytest.mark.parametrize("device", ["CPU", "GPU"])
def test_a_classical_fit_the_search_cannot_hold_is_left_out_with_its_reason(capsys, device):
    """An SVC's fit grows as rows squared: timed at 1,000 rows, it is refused on 48,000 (on a
    GPU machine too: scikit-learn fits on the CPU), while logistic regression is kept."""
    from pipeline.classical import fit_seconds
    from pipeline.options import TuneOptions
    from pipeline.tune.budget import CostModel, make_plan
    from pipeline.tune.command import choose_models

    opts = TuneOptions(timeout=3600)
    plan = make_plan(opts, 60_000, device)
    probe = {"svc": (1.0, 1000), "logreg": (1.0, 1000)}
    assert fit_seconds("svc", probe["svc"], 48_000, 0) == pytest.approx(48**2)
    assert fit_seconds("logreg", probe["logreg"], 48_000, 0) == pytest.approx(48)
    cost = CostModel(1e-9, {"cnn1": 1000}, classical=probe)
    kept = choose_models(opts, plan, cost, 48_000, 12_000, ["cnn1", "svc", "logreg"])
    assert kept == ["cnn1", "logreg"]
    assert "leaving out svc: its fit on 48000 rows would take ~" in capsys.readouterr().out


def test_kfold_is_given_up_before_the_search_when_its_folds_cannot_train(capsys):
    """6,000 rows at 300 s: when not even two folds of MIN_FOLD_EPOCHS epochs of a slow warm
    start fit the half of the budget kept for them, the search keeps it (no idle budget); one
    for which five folds are a little too slow keeps its folds (fewer of them fit: at 900 s
    fer48 had given up where 3 folds would have fit); --kfold K is taken as given."""
    from pipeline.options import TuneOptions
    from pipeline.tune.budget import CostModel, epoch_seconds, folds_fit, make_plan
    from pipeline.tune.kfold import MIN_FOLD_EPOCHS

    opts = TuneOptions(timeout=300)
    plan = make_plan(opts, 6000, "CPU")
    assert plan.kfold == 5 and plan.reserve == 150
    per_mac = 1e-9
    one = epoch_seconds(per_mac, 4800, 1200)  # seconds per MAC of a fold's epoch
    five = plan.reserve / (5 * MIN_FOLD_EPOCHS) / one  # the MACs at which five folds just fit
    cost = CostModel(per_mac, {"slow": int(five * 5), "fewer": int(five * 1.1)})
    gave_up = folds_fit(plan, opts, cost, 6000, "slow")
    assert gave_up.kfold == 0 and gave_up.reserve == 60
    assert "no k-fold final stage" in capsys.readouterr().out
    assert folds_fit(plan, opts, cost, 6000, "fewer") == plan
    forced = TuneOptions(timeout=300, kfold="5")
    assert folds_fit(make_plan(forced, 6000, "CPU"), forced, cost, 6000, "slow").kfold == 5
    # --quick --timeout 90 on 1,200 rows: the folds' 45 s would leave the search 15 s, less than
    # two warm-start trials of ~9 s (the kernel test's run completed no trial)
    short = TuneOptions(timeout=90, max_epochs=8)
    plan = make_plan(short, 1200, "CPU")
    assert plan.kfold == 5 and plan.reserve == 45
    warm = CostModel(per_mac, {"warm": int(9.0 / 8 / epoch_seconds(per_mac, 768, 192))})
    assert folds_fit(plan, short, warm, 1200, "warm").kfold == 0
    assert "would not hold 2 trials of warm" in capsys.readouterr().out


def test_fewer_folds_when_five_cannot_each_train_their_epochs():
    """The suite's digits28 at 300 s: trial 0 trained 15 epochs on 3,840 rows in 60 s; 135 s
    were left for the folds. Five folds of 8 epochs do not fit (~42 s each, 27 s left each);
    three do (~35 s each, 45 s each); with no time, none."""
    import numpy as np

    from pipeline.records import TrialRecord
    from pipeline.training import FitMetrics
    from pipeline.tune.kfold import folds_that_fit

    m = FitMetrics(0.99, 0.1, 0.99, 0.1, 15, 15, 60.0, 960.0, 1000, 1000)
    record = TrialRecord(model="resnet9s", metrics=m)
    y = np.arange(6000) % 10
    k, per_epoch, share = folds_that_fit([record], 3840, y, 8, 135.0, 5)
    assert k == 3 and 44.0 < share < 45.0 and 8 * per_epoch <= share  # less its 2,000 left out
    assert folds_that_fit([record], 3840, y, 8, 1000.0, 5)[0] == 5
    assert folds_that_fit([record], 3840, y, 8, 20.0, 5)[0] == 0
    # a classical member's fits come out of each fold's time: 5 folds no longer fit, 4 do
    fm = FitMetrics(0.9, 0.3, 0.9, 0.3, 1, 1, 15.0, 15.0, 100, 100)
    svc = TrialRecord(model="svc", metrics=fm)
    assert folds_that_fit([record], 3840, y, 8, 300.0, 5)[0] == 5
    k, per_epoch, share = folds_that_fit([svc, record], 3840, y, 8, 300.0, 5)
    assert k == 4 and 8 * per_epoch <= share < 300.0 / 4


def test_the_folds_train_the_ensembles_networks_that_fit_the_time_left():
    """The suite's rgb32 at 900 s: the validation rows chose cnn5 (30 s an epoch of its trial's
    5,120 rows) with resnet9s (8.4 s). Both train on 3 folds of cnn5's 9 trial epochs or more
    when ~1,200 s are left; with ~900 s the folds leave resnet9s out; with ~400 s not even
    cnn5's 3 folds fit (a final fit takes the time)."""
    from types import SimpleNamespace

    import numpy as np

    from pipeline.options import TuneOptions
    from pipeline.records import TrialRecord, to_dict
    from pipeline.training import FitMetrics
    from pipeline.tune.kfold import PREDICT_MARGIN_S, fold_members

    def trial(number, model, epochs, seconds):
        m = FitMetrics(0.86, 0.4, 0.9, 0.3, epochs, epochs, seconds, 100.0, 1000, 1000)
        return SimpleNamespace(
            number=number, user_attrs=to_dict(TrialRecord(model=model, metrics=m))
        )

    trials = [trial(2, "cnn5", 9, 270.0), trial(0, "resnet9s", 15, 126.0)]
    y = np.arange(8000) % 10

    def members(seconds):
        budget = SimpleNamespace(left=lambda: seconds + PREDICT_MARGIN_S)
        ctx = SimpleNamespace(opts=TuneOptions(), budget=budget, ds=SimpleNamespace(x_test=[]),
                              splits=SimpleNamespace(search=(None, np.zeros(5120))))  # fmt: skip
        kept, _, folds, epochs = fold_members(ctx, trials, y, 5)
        return [t.number for t in kept], folds, epochs

    assert members(1200.0) == ([2, 0], 3, 9)  # 400 s a fold less predicting, 40 s an epoch
    assert members(900.0)[:2] == ([2], 3)
    assert members(800.0)[1] == 0  # 3 folds of 9 epochs: ~844 s
    assert members(400.0)[1] == 0


def test_the_folds_epochs_are_replanned_up_and_down_from_the_measured_pace():
    """digits8 at 300 s: the first fold's 22 epochs took 40 s (1.8 s an epoch, its fixed costs
    counted) with 200 s left for four folds: the rest get 27 epochs (the plan of 22 left 7% of
    the budget idle). float01's folds ran 1.4x slower than planned: fewer epochs then, never
    fewer than one, never more than the cap."""
    from pipeline.tune.kfold import replanned

    assert replanned(40.0, 22, 200.0, 4, 50) == 27
    assert replanned(140.0, 10, 200.0, 2, 50) == 7
    assert replanned(140.0, 10, 5.0, 2, 50) == 1
    assert replanned(10.0, 10, 1000.0, 1, 50) == 50


def test_each_fold_counts_predicting_the_test_set():
    """--quick on the demo: 3,000 labelled rows, 10,000 test images predicted plain and
    mirrored by every fold. The warm start's trial trained 3 epochs on 1,920 rows in 16.7 s and
    ~62 s were left: planned on training alone 3 folds of 3 epochs fit (~17 s each), but each
    fold also predicts ~22,000 images (~21 s), so none fit; before the search, the same count
    gives the folds up."""
    import numpy as np

    from pipeline.options import TuneOptions
    from pipeline.records import TrialRecord
    from pipeline.training import FitMetrics
    from pipeline.tune.budget import CostModel, epoch_seconds, folds_fit, make_plan
    from pipeline.tune.kfold import folds_that_fit

    m = FitMetrics(0.73, 0.9, 0.7, 0.9, 3, 3, 16.7, 345.0, 1000, 1000)
    record = TrialRecord(model="resnet9s", metrics=m)
    y = np.arange(3000) % 10
    assert folds_that_fit([record], 1920, y, 3, 62.0, 5)[0] == 3
    assert folds_that_fit([record], 1920, y, 3, 62.0, 5, (10_000, 2))[0] == 0
    assert folds_that_fit([record], 1920, y, 3, 62.0, 5, (300, 2))[0] == 3  # a small test set

    opts = TuneOptions(timeout=900, max_epochs=8)
    plan = make_plan(opts, 3000, "CPU")
    assert plan.kfold == 5 and plan.reserve == 450
    per_mac = 1e-9  # a warm start whose 3 folds of 8 epochs fit the 450 s without the test set
    fold = 8 * epoch_seconds(per_mac, 2000, 1000) + epoch_seconds(per_mac, 0, 2 * 1000)
    macs = int(450 / 3 / fold * 0.95)
    cost = CostModel(per_mac, {"warm": macs})
    assert folds_fit(plan, opts, cost, 3000, "warm", 0).kfold == 5
    assert folds_fit(plan, opts, cost, 3000, "warm", 10_000).kfold == 0


def test_folds_that_could_not_train_their_epochs_are_left_out(monkeypatch, capsys):
    """After the first fold the pace says the next two could train 1 epoch each, fewer than
    the trial's 3: they are not run (two 1-epoch folds scored 0.12 and 0.27 and pulled a
    --quick submission to 0.455); the test prediction is the first fold's, and its left-out
    rows are the only ones scored."""
    from types import SimpleNamespace

    import numpy as np

    from pipeline.options import TuneOptions
    from pipeline.records import TrialRecord
    from pipeline.training import FitMetrics
    from pipeline.tune import kfold

    m = FitMetrics(0.73, 0.9, 0.7, 0.9, 3, 3, 16.7, 345.0, 1000, 1000)
    records = [TrialRecord(model="resnet9s", metrics=m)]
    x, y = np.zeros((30, 4, 4, 1), np.uint8), np.arange(30) % 3
    ctx = SimpleNamespace(
        opts=TuneOptions(), budget=SimpleNamespace(deadline=1e12),
        ds=SimpleNamespace(num_classes=3, x_test=np.zeros((5, 4, 4, 1))),
        splits=SimpleNamespace(search=(None, None, None, np.zeros(6))),
    )  # fmt: skip
    first = np.tile([0.1, 0.7, 0.2], (5, 1))

    def one_fold(ctx, records, fold, epochs, flip, which, order, i, end):
        held = np.zeros((1, len(fold[3]), 3))
        held[0, np.arange(len(fold[3])), y[fold[3]]] = 1.0  # right on every left-out row
        return epochs, held, first if i == 0 else np.tile([1.0, 0, 0], (5, 1))

    monkeypatch.setattr(kfold, "train_one_fold", one_fold)
    monkeypatch.setattr(kfold, "replanned", lambda *a: 1)
    folds = [(np.arange(10, 30), np.arange(0, 10)), (np.arange(0, 20), np.arange(20, 30)),
             (np.arange(30)[10:20], np.arange(10, 20))]  # fmt: skip
    oof, test, (epochs, left_out) = kfold.run_folds(ctx, records, (x, y), folds, 3, False,
                                                    [[(0, 0, False)]])  # fmt: skip
    assert epochs == [3] and len(left_out) == 1
    np.testing.assert_allclose(test, first)
    assert oof[0, 10:].sum() == 0 and oof[0, :10].sum() == 10
    assert "folds 2-3 left out" in capsys.readouterr().out
    monkeypatch.setattr(kfold, "replanned", lambda *a: 3)  # the pace holds: all three run
    _, test, (epochs, left_out) = kfold.run_folds(ctx, records, (x, y), folds, 3, False,
                                                  [[(0, 0, False)]])  # fmt: skip
    assert epochs == [3, 3, 3] and len(left_out) == 3
    np.testing.assert_allclose(test, (first + 2 * np.tile([1.0, 0, 0], (5, 1))) / 3)
