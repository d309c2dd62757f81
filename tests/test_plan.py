"""The plan: decided from the options, the data's size and the measured cost, never from the
device's name; and the folds' planning in the final stage."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline import memory
from pipeline.cli import build_options, build_parser
from pipeline.options import TuneOptions
from pipeline.records import TrialRecord, to_dict
from pipeline.search_space import DEFAULT_MODELS
from pipeline.training import FitMetrics
from pipeline.tune import cost as cost_module
from pipeline.tune import kfold
from pipeline.tune.cost import PREDICT_FIXED_S, CostModel, epoch_seconds
from pipeline.tune.plan import (
    LIGHT_FINAL_EPOCHS,
    MIN_FINAL_EPOCHS,
    MIN_FOLD_EPOCHS,
    choose_models,
    final_epochs,
    folds_fit,
    make_plan,
    split_sizes,
)

# Multiply-accumulates of a forward pass at 28x28x1 (pipeline.models.count_macs), and this
# project's 2-core CPU as its cost cache measured it: ~1e-10 s a training image per MAC
# (resnet9s: ~520 images a second)
MACS = {"resnet9s": 19_081_856, "resnet9m": 41_423_232, "resnet20": 31_021_952,
        **{f"cnn{i}": 32_340_992 for i in range(1, 8)}, "cnn5bn": 16_923_456,
        "lenet5": 1_630_440, "lenet5_wide": 4_796_744, "alexnet": 440_275_328,
        "vgg16": 720_953_344, "resnet": 122_320_128}  # fmt: skip
# a scikit-learn fit timed on 1,000 rows (seconds, rows), as the cost model probes it
FITS = {"logreg": (1.0, 1000), "svc": (0.7, 1000), "extra_trees": (0.8, 1000)}
CPU = CostModel(1e-10, MACS, classical=FITS)


def _parse(*argv):
    return build_options(build_parser().parse_args(["tune", *argv]))


@pytest.mark.parametrize(
    "labelled, flags, speed, rows, final",
    [
        (60_000, [], 1, 12_000, "fit"),  # multi-fidelity: a slice, then a final fit
        (60_000, [], 30, None, "trials"),  # a machine 30x as fast: every row in every trial
        (10_000, [], 1, None, "folds"),  # the split is hardly larger than a slice
        (60_000, ["--search-rows", "0"], 1, None, "trials"),
        (60_000, ["--final", "fit", "--search-rows", "0"], 1, None, "fit"),
        (10_000, ["--final", "trials"], 1, None, "trials"),
    ],
)
def test_the_plan_resolves_auto_settings_from_the_cost(labelled, flags, speed, rows, final):
    opts = _parse(*flags)
    plan = make_plan(opts, labelled, CPU.scaled(speed), 1000)
    assert plan.search_rows == rows and plan.final == final
    assert plan.max_epochs == (8 if rows else 15)
    assert 0 < plan.reserve < opts.timeout
    assert plan.kfold == (5 if final == "folds" else 0)
    assert _parse(*flags) == opts  # nothing written back


def _decisions(opts, labelled: int, cost: CostModel):
    """What a run decides before its first trial: trial rows, the final stage, the entries
    searched, and the final fit's epochs of the warm start."""
    plan = make_plan(opts, labelled, cost, 10_000)
    n_train = int(0.8 * labelled)
    trial = split_sizes(plan.search_rows or n_train)
    if plan.search_rows:  # a slice: a quarter as many validation rows
        trial = (plan.search_rows, plan.search_rows // 4)
    held = (n_train, labelled - n_train)
    models = choose_models(opts, plan, cost, trial, list(DEFAULT_MODELS), held)
    epochs = final_epochs(plan, cost, "resnet9s", *held, 10_000) if plan.final_fit else 0
    return (plan.search_rows, plan.final, plan.kfold, plan.max_epochs, models), epochs


@pytest.mark.parametrize("labelled", [1_437, 8_000, 14_000, 50_000, 60_000])
@pytest.mark.parametrize("budget", [120, 600, 3600])
def test_a_machine_30x_as_fast_with_budget_b_decides_what_this_cpu_decides_with_30b(
    labelled, budget
):
    """The device enters the plan only through the cost model: a GPU-like cost model (30x as
    fast) with a budget B makes the decisions this CPU makes with 30 B, so the path a GPU user
    gets is the path a long CPU run takes. The final fit's epochs differ only by what the
    fixed seconds of predicting (loading, writing: no faster on a GPU) are worth."""
    gpu, cpu = CPU.scaled(30), CPU
    fast, fast_epochs = _decisions(TuneOptions(timeout=budget), labelled, gpu)
    slow, slow_epochs = _decisions(TuneOptions(timeout=30 * budget), labelled, cpu)
    assert fast == slow
    if fast[1] == "fit":
        n_train = int(0.8 * labelled)
        epoch = cpu.epoch_seconds("resnet9s", n_train, min(labelled - n_train, 2000))
        assert abs(fast_epochs - slow_epochs) <= math.ceil(29 * PREDICT_FIXED_S / epoch) + 1
        assert slow_epochs >= MIN_FINAL_EPOCHS


def test_the_cpu_takes_the_gpus_path_once_its_budget_holds_trials_on_every_row():
    """On the demo (50,000 labelled rows) this CPU slices at the hour and a final fit follows;
    with a budget that holds 10 warm-start trials on every row in the search's share it trains
    them on every row, as a GPU does at the hour."""
    hour = make_plan(TuneOptions(timeout=3600), 50_000, CPU, 10_000)
    assert hour.search_rows == 12_000 and hour.final == "fit"
    week = make_plan(TuneOptions(timeout=7 * 24 * 3600), 50_000, CPU, 10_000)
    assert week.search_rows is None and week.final == "trials"
    gpu = make_plan(TuneOptions(timeout=3600), 50_000, CPU.scaled(30), 10_000)
    assert (gpu.search_rows, gpu.final) == (week.search_rows, week.final)


def test_an_entry_that_cannot_build_for_the_data_is_left_out_with_a_reason(monkeypatch, capsys):
    monkeypatch.setattr(cost_module, "measure_cost", lambda ds, cache: 1e-12)
    tiny = SimpleNamespace(image_shape=(6, 6, 1), num_classes=3)  # too small for some nets
    cost = cost_module.cost_model(tiny, list(DEFAULT_MODELS), None)
    assert cost.problems and set(cost.problems) | set(cost.macs) == set(DEFAULT_MODELS)
    assert "resnet9s" in cost.macs  # the fast nets stop pooling at 2x2
    opts = TuneOptions()
    plan = make_plan(opts, 1000, cost)
    kept = choose_models(opts, plan, cost, (100, 25), list(DEFAULT_MODELS), (6, 6))
    assert set(kept) <= set(cost.macs) and "resnet9s" in kept
    out = capsys.readouterr().out
    for name in cost.problems:
        assert f"leaving out {name}: " in out and "ValueError" in out


def test_entries_the_final_fit_cannot_train_long_are_left_out(capsys):
    opts = TuneOptions(timeout=900)
    plan = make_plan(opts, 60_000, CPU)
    assert plan.final_fit
    full = (48_000, 12_000)
    per_mac = 1e-9
    one_epoch = epoch_seconds(per_mac, *full)  # seconds per MAC of a full epoch
    # just over and just under MIN_FINAL_EPOCHS full epochs in the 585 s reserve
    fits = int(plan.reserve / MIN_FINAL_EPOCHS / one_epoch * 0.95)
    slow = int(plan.reserve / MIN_FINAL_EPOCHS / one_epoch * 1.05)
    cost = CostModel(per_mac, {"resnet9s": fits, "resnet9m": slow, "lenet5": fits // 50})
    kept = choose_models(opts, plan, cost, (12_000, 3_000), list(cost.macs), full_rows=full)
    assert kept == ["resnet9s", "lenet5"]
    assert "leaving out resnet9m: the final fit could not train" in capsys.readouterr().out
    forced = TuneOptions(timeout=900, models=("resnet9m",))  # --models is taken as given
    assert choose_models(forced, plan, cost, (12_000, 3_000), ["resnet9m"], full) == ["resnet9m"]


@pytest.mark.parametrize("speed", [1, 30])
def test_a_classical_fit_the_search_cannot_hold_is_left_out_with_its_reason(capsys, speed):
    """An SVC's fit grows as rows squared: timed at 1,000 rows, it is refused on 48,000, while
    logistic regression is kept (on a machine whose networks train 30x as fast, the same cost
    model of a scikit-learn fit, which runs on the CPU, refuses it too)."""
    from pipeline.classical import fit_seconds

    opts = TuneOptions(timeout=3600)
    probe = {"svc": (1.0, 1000), "logreg": (1.0, 1000)}
    assert fit_seconds("svc", probe["svc"], 48_000, 0) == pytest.approx(48**2)
    assert fit_seconds("logreg", probe["logreg"], 48_000, 0) == pytest.approx(48)
    cost = CostModel(1e-9 / speed, {"cnn1": 1000}, classical=probe)
    plan = make_plan(opts, 60_000, cost)
    kept = choose_models(opts, plan, cost, (48_000, 12_000), ["cnn1", "svc", "logreg"])
    assert kept == ["cnn1", "logreg"]
    assert "leaving out svc: one epoch (a classical entry: its fit) on 48000 rows" in (
        capsys.readouterr().out
    )


def test_kfold_is_given_up_before_the_search_when_its_folds_cannot_train(capsys):
    """6,000 rows at 300 s: when not even three folds of MIN_FOLD_EPOCHS epochs of a slow warm
    start fit the half of the budget kept for them, the search keeps it (no idle budget); one
    for which five folds are a little too slow keeps its folds (fewer of them fit: at 900 s
    fer48 had given up where 3 folds would have fit); --final folds is taken as given."""
    opts = TuneOptions(timeout=300)
    plan = make_plan(opts, 6000, None)
    assert plan.kfold == 5 and plan.reserve == 150
    per_mac = 1e-9
    one = epoch_seconds(per_mac, 4800, 1200)  # seconds per MAC of a fold's epoch
    five = plan.reserve / (5 * MIN_FOLD_EPOCHS) / one  # the MACs at which five folds just fit
    slow = CostModel(per_mac, {"resnet9s": int(five * 5)})
    gave_up = make_plan(opts, 6000, slow)
    assert gave_up.final == "trials" and gave_up.kfold == 0 and gave_up.reserve == 60
    assert "no k-fold final stage" in capsys.readouterr().out
    assert make_plan(opts, 6000, CostModel(per_mac, {"resnet9s": int(five * 1.1)})) == plan
    assert make_plan(TuneOptions(timeout=300, final="folds"), 6000, slow).kfold == 5
    # --quick --timeout 90 on 1,200 rows: the folds' 45 s would leave the search 15 s, less than
    # two warm-start trials of ~9 s (the kernel test's run completed no trial)
    short = TuneOptions(timeout=90, max_epochs=8)
    plan = make_plan(short, 1200, None)
    assert plan.kfold == 5 and plan.reserve == 45
    warm = CostModel(per_mac, {"resnet9s": int(9.0 / 8 / epoch_seconds(per_mac, 768, 192))})
    assert folds_fit(plan, warm, 1200, 0).kfold == 0
    assert "would not hold 2 trials of resnet9s" in capsys.readouterr().out


def test_each_fold_counts_predicting_the_test_set():
    """--quick on the demo: 3,000 labelled rows, 10,000 test images predicted plain and
    mirrored by every fold. The warm start's trial trained 3 epochs on 1,920 rows in 16.7 s and
    ~62 s were left: planned on training alone 3 folds of 3 epochs fit (~17 s each), but each
    fold also predicts ~22,000 images (~21 s), so none fit; before the search, the same count
    gives the folds up."""
    m = FitMetrics(0.73, 0.9, 0.7, 0.9, 3, 3, 16.7, 345.0, 1000, 1000)
    record = TrialRecord(model="resnet9s", metrics=m)
    y = np.arange(3000) % 10
    assert kfold.folds_that_fit([record], 1920, y, 3, 62.0, 5)[0] == 3
    assert kfold.folds_that_fit([record], 1920, y, 3, 62.0, 5, (10_000, 2))[0] == 0
    assert kfold.folds_that_fit([record], 1920, y, 3, 62.0, 5, (300, 2))[0] == 3

    opts = TuneOptions(timeout=900, max_epochs=8)
    plan = make_plan(opts, 3000, None)
    assert plan.kfold == 5 and plan.reserve == 450
    per_mac = 1e-9  # a warm start whose 3 folds of 8 epochs fit the 450 s without the test set
    fold = 8 * epoch_seconds(per_mac, 2000, 1000) + epoch_seconds(per_mac, 0, 2 * 1000)
    cost = CostModel(per_mac, {"resnet9s": int(450 / 3 / fold * 0.95)})
    assert folds_fit(plan, cost, 3000, 0).kfold == 5
    assert folds_fit(plan, cost, 3000, 10_000).kfold == 0


def test_fewer_folds_when_five_cannot_each_train_their_epochs():
    """The suite's digits28 at 300 s: trial 0 trained 15 epochs on 3,840 rows in 60 s; 135 s
    were left for the folds. Five folds of 8 epochs do not fit (~42 s each, 27 s left each);
    three do (~35 s each, 45 s each); with no time, none."""
    m = FitMetrics(0.99, 0.1, 0.99, 0.1, 15, 15, 60.0, 960.0, 1000, 1000)
    record = TrialRecord(model="resnet9s", metrics=m)
    y = np.arange(6000) % 10
    k, per_epoch, share = kfold.folds_that_fit([record], 3840, y, 8, 135.0, 5)
    assert k == 3 and 44.0 < share < 45.0 and 8 * per_epoch <= share  # less its 2,000 left out
    assert kfold.folds_that_fit([record], 3840, y, 8, 1000.0, 5)[0] == 5
    assert kfold.folds_that_fit([record], 3840, y, 8, 20.0, 5)[0] == 0
    # a classical member's fits come out of each fold's time: 5 folds no longer fit, 4 do
    fm = FitMetrics(0.9, 0.3, 0.9, 0.3, 1, 1, 15.0, 15.0, 100, 100)
    svc = TrialRecord(model="svc", metrics=fm)
    assert kfold.folds_that_fit([record], 3840, y, 8, 300.0, 5)[0] == 5
    k, per_epoch, share = kfold.folds_that_fit([svc, record], 3840, y, 8, 300.0, 5)
    assert k == 4 and 8 * per_epoch <= share < 300.0 / 4


def test_the_folds_train_the_ensembles_networks_that_fit_the_time_left():
    """The suite's rgb32 at 900 s: the validation rows chose cnn5 (30 s an epoch of its trial's
    5,120 rows) with resnet9s (8.4 s). With ``--final folds`` both train on 3 folds of cnn5's 9
    trial epochs or more when ~1,200 s are left; with ~900 s the folds leave resnet9s out; with
    ~400 s not even cnn5's 3 folds fit (a final fit takes the time). Where the plan chose the
    folds, each must hold twice the trial's epochs: ~1,200 s no longer hold any."""

    def trial(number, model, epochs, seconds):
        m = FitMetrics(0.86, 0.4, 0.9, 0.3, epochs, epochs, seconds, 100.0, 1000, 1000)
        return SimpleNamespace(
            number=number, user_attrs=to_dict(TrialRecord(model=model, metrics=m))
        )

    trials = [trial(2, "cnn5", 9, 270.0), trial(0, "resnet9s", 15, 126.0)]
    y = np.arange(8000) % 10

    def members(seconds, final="folds"):
        budget = SimpleNamespace(left=lambda: seconds + kfold.PREDICT_MARGIN_S)
        ctx = SimpleNamespace(opts=TuneOptions(final=final), budget=budget,
                              ds=SimpleNamespace(x_test=[]),
                              splits=SimpleNamespace(search=(None, np.zeros(5120))))  # fmt: skip
        kept, _, folds, epochs = kfold.fold_members(ctx, trials, y, 5)
        return [t.number for t in kept], folds, epochs

    assert members(1200.0) == ([2, 0], 3, 9)  # 400 s a fold less predicting, 40 s an epoch
    assert members(900.0)[:2] == ([2], 3)
    assert members(800.0)[1] == 0  # 3 folds of 9 epochs: ~844 s
    assert members(400.0)[1] == 0
    assert kfold.FOLD_EPOCHS_OVER_TRIAL == 2
    assert members(1200.0, "auto")[1] == 0  # 3 folds of 18 epochs: ~2,200 s
    kept, folds, epochs = members(2400.0, "auto")
    assert (kept, folds) == ([2, 0], 3) and epochs >= 18
    assert members(1900.0, "auto")[:2] == ([2], 3)  # cnn5's 18 epochs alone: ~1,700 s


def test_the_folds_epochs_are_replanned_up_and_down_from_the_measured_pace():
    """digits8 at 300 s: the first fold's 22 epochs took 40 s (1.8 s an epoch, its fixed costs
    counted) with 200 s left for four folds: the rest get 27 epochs (the plan of 22 left 7% of
    the budget idle). float01's folds ran 1.4x slower than planned: fewer epochs then, never
    fewer than one, never more than the cap."""
    assert kfold.replanned(40.0, 22, 200.0, 4, 50) == 27
    assert kfold.replanned(140.0, 10, 200.0, 2, 50) == 7
    assert kfold.replanned(140.0, 10, 5.0, 2, 50) == 1
    assert kfold.replanned(10.0, 10, 1000.0, 1, 50) == 50


def test_folds_that_could_not_train_their_epochs_are_left_out(monkeypatch, capsys):
    """After the first fold the pace says the next two could train 1 epoch each, fewer than
    the trial's 3: they are not run (two 1-epoch folds scored 0.12 and 0.27 and pulled a
    --quick submission to 0.455); the test prediction is the first fold's, and its left-out
    rows are the only ones scored."""
    m = FitMetrics(0.73, 0.9, 0.7, 0.9, 3, 3, 16.7, 345.0, 1000, 1000)
    records = [TrialRecord(model="resnet9s", metrics=m)]
    y = np.arange(30) % 3
    ctx = SimpleNamespace(
        opts=TuneOptions(), budget=SimpleNamespace(deadline=1e12),
        ds=SimpleNamespace(num_classes=3, x_test=np.zeros((5, 4, 4, 1))),
        runner=SimpleNamespace(ready=lambda: None),
    )  # fmt: skip
    first = np.tile([0.1, 0.7, 0.2], (5, 1))
    folds = [(np.arange(10, 30), np.arange(0, 10)), (np.arange(0, 20), np.arange(20, 30)),
             (np.arange(30)[10:20], np.arange(10, 20))]  # fmt: skip

    def one_fold(ctx, chosen, fold, epochs, which, end):
        va = folds[fold[1]][1]
        held = np.zeros((1, len(va), 3))
        held[0, np.arange(len(va)), y[va]] = 1.0  # right on every left-out row
        return epochs, held, first if fold[1] == 0 else np.tile([1.0, 0, 0], (5, 1))

    monkeypatch.setattr(kfold, "train_one_fold", one_fold)
    monkeypatch.setattr(kfold, "fold_rows", lambda y, k, seed: folds)
    monkeypatch.setattr(kfold, "replanned", lambda *a: 1)
    chosen = ([None], records, False)
    oof, test, (epochs, left_out) = kfold.run_folds(ctx, chosen, y, 3, 3, [((0, 0, False),)])
    assert epochs == [3] and len(left_out) == 1
    np.testing.assert_allclose(test, first)
    assert oof[0, 10:].sum() == 0 and oof[0, :10].sum() == 10
    assert "folds 2-3 left out" in capsys.readouterr().out
    monkeypatch.setattr(kfold, "replanned", lambda *a: 3)  # the pace holds: all three run
    _, test, (epochs, left_out) = kfold.run_folds(ctx, chosen, y, 3, 3, [((0, 0, False),)])
    assert epochs == [3, 3, 3] and len(left_out) == 3
    np.testing.assert_allclose(test, (first + 2 * np.tile([1.0, 0, 0], (5, 1))) / 3)


def test_a_workers_start_up_is_not_counted_in_the_folds_pace(monkeypatch):
    """A fold's epoch takes 1 s; the worker is replaced (100 s to start) before the first
    fold. The pace after it is 1 s an epoch, not 6: all three folds train their 20 epochs."""
    clock, started = [0.0], []
    monkeypatch.setattr(kfold.time, "monotonic", lambda: clock[0])

    def ready():  # the worker starts on its first task, or here
        if not started:
            clock[0] += 100.0
            started.append(True)

    def one_fold(ctx, chosen, fold, epochs, which, end):
        ready()
        clock[0] += epochs  # 1 s an epoch
        return epochs, np.zeros((1, 10, 3)), np.zeros((5, 3))

    folds = [(None, np.arange(i * 10, i * 10 + 10)) for i in range(3)]
    monkeypatch.setattr(kfold, "train_one_fold", one_fold)
    monkeypatch.setattr(kfold, "fold_rows", lambda y, k, seed: folds)
    m = FitMetrics(0.9, 0.3, 0.9, 0.3, 20, 20, 20.0, 20.0, 100, 100)
    ctx = SimpleNamespace(
        opts=TuneOptions(), runner=SimpleNamespace(ready=ready),
        budget=SimpleNamespace(deadline=100 + 3 * 20 + kfold.PREDICT_MARGIN_S),
        ds=SimpleNamespace(num_classes=3, x_test=np.zeros((5, 4, 4, 1))),
    )  # fmt: skip
    chosen = ([None], [TrialRecord(model="resnet9s", metrics=m)], False)
    _, _, (epochs, left_out) = kfold.run_folds(ctx, chosen, np.arange(30) % 3, 3, 20, [()])
    assert epochs == [20, 20, 20] and len(left_out) == 3


def test_what_a_fresh_worker_cannot_train_in_its_memory_is_left_out_or_batched_down(
    monkeypatch, capsys
):
    monkeypatch.setattr(cost_module, "measure_cost", lambda ds, cache: 1e-12)
    names = ["alexnet", "vgg16", "resnet9s", "cnn7"]
    small = cost_module.cost_model(SimpleNamespace(image_shape=(28, 28, 1), num_classes=10),
                                   names, None)  # fmt: skip
    params, activations = small.memory["vgg16"]
    assert params > 30_000_000 and activations > 0  # its two Dense(4096) layers
    # what a fit adds grows with the batch through the activations, not the parameters
    assert small.fit_mib("resnet9s", 512) - small.fit_mib("resnet9s", 256) == pytest.approx(
        4 * small.memory["resnet9s"][1] * 256 / 2**20
    )
    assert small.fit_mib("unknown", 32) == 0.0
    # a sampled width w scales the parameters by w**2 and the activations by w (resnet at 2x:
    # 45M parameters; its trial on digits28 took a worker to 3.6 GiB when read at 1x)
    params, activations = small.memory["cnn7"]
    assert small.fit_mib("cnn7", 64, 2.0) == pytest.approx(
        memory.fit_mib((4 * params, 2 * activations), 64)
    )
    opts = TuneOptions(timeout=3600)
    plan = make_plan(opts, 60_000, small)
    kept = choose_models(opts, plan, small, (12_000, 3_000), names)
    assert kept == ["resnet9s", "cnn7"]
    assert "leaving out alexnet, vgg16: training would take a process past" in (
        capsys.readouterr().out
    )
    forced = TuneOptions(timeout=3600, models=("vgg16",))  # --models is taken as given
    assert choose_models(forced, plan, small, (12_000, 3_000), ["vgg16"]) == ["vgg16"]
    # a batch is halved only where its activations would not fit: 48x48 at 512, not 28x28
    assert small.memory_batch("resnet9s", 512) == 512
    big = cost_module.cost_model(SimpleNamespace(image_shape=(48, 48, 1), num_classes=10),
                                 ["resnet9s"], None)  # fmt: skip
    batch = big.memory_batch("resnet9s", 512)
    assert batch < 512 and not big.too_big("resnet9s", batch) and big.too_big("resnet9s", 512)


@pytest.mark.parametrize("width", [1.0, 2.0])
def test_a_trial_whose_sampled_width_a_fresh_worker_cannot_hold_is_refused(tmp_path, width):
    """10M parameters: ~450 MiB at width 1, ~1,600 at width 2 (x4), past what a fresh worker
    can add (PROCESS_LIMIT_MIB - FRESH_WORKER_MIB): that trial is refused before it runs, with
    its MiB in the reason; the same entry at width 1 is sampled into a job."""
    import optuna

    from pipeline.tune.cost import Budget
    from pipeline.tune.objective import Objective
    from pipeline.tune.plan import TunePlan

    cost = CostModel(1e-15, {"cnn7": 10**6}, memory={"cnn7": (10_000_000, 1_000)})
    assert not cost.too_big("cnn7", 16, 1.0) and cost.too_big("cnn7", 16, 2.0)
    x, y = np.zeros((40, 28, 28, 1), np.float32), np.arange(40) % 10
    plan = TunePlan(10**6, None, "trials", 2, 0.0, 3)
    obj = Objective((x, y, x, y), ["cnn7"], plan, Budget.start(10**6), cost, tmp_path, 42,
                    runner=None)  # fmt: skip
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"model": "cnn7", "cnn7.width": width})
    trial = study.ask()
    if width == 1.0:
        job = obj.sample(trial)
        assert (job.model, job.width) == ("cnn7", 1.0) and job.settings.batch_size >= 16
    else:
        with pytest.raises(optuna.TrialPruned, match=r"needs ~\d+ MiB at width 2.0"):
            obj.sample(trial)
        assert trial.user_attrs["refused"] is True
        mib = cost.fit_mib("cnn7", 16, 2.0)
        assert mib > memory.PROCESS_LIMIT_MIB - memory.FRESH_WORKER_MIB
    # a final-stage fit of that trial is estimated at its width too (the worker's replacement)
    from pipeline.training import TrainSettings
    from pipeline.tune.fit import FitJob
    from pipeline.tune.trials import sampled_width

    record = TrialRecord(model="cnn7", settings=TrainSettings("sgd", 0.1, 0.9, 16, 2, False))
    fit = FitJob("final", trial.number, record, None, 0.0, width=sampled_width(trial))
    assert cost.too_big(*fit.footprint()) == (width == 2.0)


def test_the_light_warm_start_where_the_search_cannot_hold_two_standard_trials(capsys):
    """fer48 at 300 s: 6,000 48x48 rows, one resnet9s trial priced ~125 s, so the search beside
    the folds (120 s) holds not even one; the light warm start (4x cheaper) leaves room for the
    search and its folds fit. At 900 s, or with the warm start named, resnet9s stays."""
    per_mac = 125 / (15 * MACS["resnet9s"] * epoch_seconds(1.0, 3840, 960))
    cost = CostModel(per_mac, MACS)
    plan = make_plan(TuneOptions(timeout=300), 6000, cost)
    assert plan.warm_start == "lenet5_wide" and plan.final == "folds" and plan.kfold == 5
    assert (
        "warm start lenet5_wide: the search beside the folds would not hold 2 trials of "
        "resnet9s (~125 s each)" in capsys.readouterr().out
    )
    assert make_plan(TuneOptions(timeout=900), 6000, cost).warm_start == "resnet9s"
    named = make_plan(TuneOptions(timeout=300, warm_start="resnet9s"), 6000, cost)
    assert named.warm_start == "resnet9s" and named.final == "trials"
    # digits28 at 300 s: a trial of ~60 s measured; two of them fit the 120 s
    quicker = make_plan(TuneOptions(timeout=300), 6000, CostModel(per_mac / 2.5, MACS))
    assert quicker.warm_start == "resnet9s" and quicker.kfold == 5


def test_the_light_warm_start_where_the_final_fit_cannot_train_enough_standard_epochs(capsys):
    """The demo at 300 s: 50,000 labelled rows, the final fit's 195 s priced at ~6 epochs of
    resnet9s on all 40,000 training rows, fewer than LIGHT_FINAL_EPOCHS: the run starts from
    the light warm start. At 900 s (~20 epochs), or with the warm start named, resnet9s stays."""
    n_train, n_holdout = split_sizes(50_000)
    per_mac = 30 / (MACS["resnet9s"] * epoch_seconds(1.0, n_train, 2000))  # ~30 s an epoch
    cost = CostModel(per_mac, MACS)
    plan = make_plan(TuneOptions(timeout=300), 50_000, cost, 10_000)
    epochs = final_epochs(plan, cost, "resnet9s", n_train, n_holdout, 10_000)
    assert 0 < epochs < LIGHT_FINAL_EPOCHS
    assert plan.final_fit and plan.warm_start == "lenet5_wide"
    assert (
        f"warm start lenet5_wide: the final fit could train ~{epochs} epochs of resnet9s on all "
        "40000 rows" in capsys.readouterr().out
    )
    assert make_plan(TuneOptions(timeout=900), 50_000, cost, 10_000).warm_start == "resnet9s"
    named = make_plan(TuneOptions(timeout=300, warm_start="resnet9s"), 50_000, cost, 10_000)
    assert named.warm_start == "resnet9s"
