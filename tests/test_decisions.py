"""The leaderboard hour's decision rules: the mirror is decided on data, the final fits train on
every row they should, the holdout chooses nothing, and the budget holds with the final stage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline import cli
from pipeline.tune.flip import MIN_RETAINED, is_invariant


def _bands(n: int, side: int, horizontal: bool, rng) -> tuple[np.ndarray, np.ndarray]:
    """Three classes, each a bright band: across the rows (a mirror keeps it) or across the
    columns at the left, middle or right (a mirror swaps left and right)."""
    y = np.arange(n) % 3
    x = rng.integers(0, 40, size=(n, side, side, 1))
    third = side // 3
    for k in range(3):
        lo, hi = k * third, (k + 1) * third
        if horizontal:
            x[y == k, :, lo:hi] += 180
        else:
            x[y == k, lo:hi, :] += 180
    return np.clip(x, 0, 255).astype(np.uint8), y


def _banded_model(horizontal: bool, seed: int, epochs: int):
    """(an mlp trained on band images, its validation images, their labels)."""
    from pipeline.models import build_model
    from pipeline.training import TrainSettings, fit

    rng = np.random.default_rng(seed)
    x, y = _bands(600, 12, horizontal, rng)
    xv, yv = _bands(300, 12, horizontal, rng)
    s = TrainSettings("adam", 3e-3, 0.0, 32, epochs, False)
    model = fit(build_model("mlp", (12, 12, 1), 3), s, (x, y, xv, yv), 3, verbose=0).model
    return model, xv, yv


@pytest.mark.parametrize("horizontal, expected", [(False, True), (True, False)])
def test_mirror_decided_right_on_symmetric_and_asymmetric_data(horizontal, expected):
    from pipeline.tune.flip import decide_flip

    model, xv, yv = _banded_model(horizontal, seed=0, epochs=4)
    decision = decide_flip(model, xv, yv, 3)
    assert decision.accuracy_plain > 0.9
    assert decision.invariant is expected, decision
    if not expected:  # the mirror moved the middle band nowhere and swapped the others
        assert decision.accuracy_mirrored < 0.5


def test_invariance_rule_on_the_measured_cases():
    # the demo's garments (resnet9s trial): 0.853 plain, 0.664 mirrored
    assert is_invariant(0.853, 0.664, 10)
    # scikit-learn's digits (lenet5_wide): 0.957 plain, 0.418 mirrored
    assert not is_invariant(0.957, 0.418, 10)
    # a model that barely beats chance cannot tell
    assert not is_invariant(0.25, 0.25, 10)
    assert is_invariant(0.9, 0.1 + MIN_RETAINED * 0.8, 10)


def test_trial_models_are_mirrored_at_test_time_only_where_validation_says_so():
    """The mirror-invariant labels of the 32x32x3 competition: trial models that never trained
    on mirrored images lose with mirrored views unless their average measured better."""
    from pipeline.records import FlipDecision
    from pipeline.tune.decide import test_mirror

    # the labels survive the mirror (0.61 mirrored against 0.87 plain, 10 classes) ...
    measured = FlipDecision(True, 0.87, 0.61, 2000, "measured", accuracy_averaged=0.85)
    assert is_invariant(0.87, 0.61, 10)
    # ... yet a trial's model is not mirrored: averaging measured worse than plain
    assert test_mirror(measured, trained_with_mirror=False)[0] is False
    # a model that trained with mirrored images is
    assert test_mirror(measured, trained_with_mirror=True)[0] is True
    # and where the average measured better, a trial's model is too
    better = FlipDecision(True, 0.87, 0.80, 2000, "measured", accuracy_averaged=0.88)
    mirror, why = test_mirror(better, trained_with_mirror=False)
    assert mirror is True and "0.8800 > plain 0.8700 on 2000 validation rows" in why
    # labels the mirror changes: never, whatever the model trained with
    changed = FlipDecision(False, 0.95, 0.40, 2000, "measured", accuracy_averaged=0.90)
    assert test_mirror(changed, trained_with_mirror=True)[0] is False
    # --flip on / off: as asked
    assert test_mirror(FlipDecision(True, 0, 0, 0, "--flip on"), False) == (True, "--flip on")


def test_the_mirror_average_is_measured_on_the_validation_rows():
    """decide_flip records the accuracy of the plain and mirrored predictions averaged, as a
    plain Keras forward pass of both images gives it."""
    from pipeline.tune.flip import decide_flip

    model, xv, yv = _banded_model(False, seed=1, epochs=3)
    decision = decide_flip(model, xv, yv, 3)

    images = xv.astype(np.float32) / 255.0
    plain = model.predict(images, verbose=0)
    mirrored = model.predict(images[:, :, ::-1], verbose=0)
    both = (plain + mirrored).argmax(1)
    assert decision.accuracy_averaged == pytest.approx(float((both == yv).mean()))
    assert decision.accuracy_plain == pytest.approx(float((plain.argmax(1) == yv).mean()))


def _study(values: list[float | None]):
    """A real in-memory study: the first value is the enqueued warm start, None a pruned trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"x": 0.0})
    it = iter(values)

    def objective(trial):
        trial.suggest_float("x", 0, 1)
        v = next(it)
        if v is None:
            raise optuna.TrialPruned()
        return v

    study.optimize(objective, n_trials=len(values))
    return study


def test_the_baseline_enqueued_with_the_warm_start_is_not_the_warm_start():
    """The search enqueues the warm start and the SVC() baseline; the final pick's warm start is
    the network's, even when the baseline is enqueued first and scores best."""
    import optuna

    from pipeline.search_space import BASELINE, WARM_START
    from pipeline.tune.decide import final_pick
    from pipeline.tune.trials import completed, is_warm_start, warm_start_trial

    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(BASELINE)
    study.enqueue_trial({"model": WARM_START["model"]})
    values = iter([0.95, 0.90, 0.91])

    def objective(trial):
        model = trial.suggest_categorical("model", ["svc", WARM_START["model"]])
        if model == "svc":
            trial.suggest_float("svc.C", 0.1, 100.0, log=True)
        return next(values)

    study.optimize(objective, n_trials=3)
    baseline, warm, _ = study.trials
    assert not is_warm_start(baseline) and is_warm_start(warm)
    ranked = completed(study)
    assert warm_start_trial(ranked).number == warm.number
    assert final_pick(ranked)[0].number == baseline.number  # 5 points ahead: past the margin


def test_the_warm_start_keeps_the_final_fit_unless_beaten_by_the_margin():
    from pipeline.tune.decide import final_pick
    from pipeline.tune.trials import MARGIN, completed

    # 0.64 points ahead on the slice (the 900 s run's lenet5_wide): not enough
    ranked = completed(_study([0.8783, 0.8847, None]))
    assert [t.number for t in ranked] == [1, 0]
    assert [t.number for t in final_pick(ranked)] == [0, 1]
    # more than the margin ahead: the search's pick is trained
    ranked = completed(_study([0.80, 0.80 + MARGIN + 0.002, 0.79]))
    assert final_pick(ranked)[0].number == 1
    # the warm start is the best anyway
    ranked = completed(_study([0.9, 0.85]))
    assert final_pick(ranked)[0].number == 0


def test_the_search_gives_up_its_share_when_it_does_not_earn_it():
    from pipeline.tune.search import PATIENCE, not_earning
    from pipeline.tune.trials import MARGIN

    warm = 0.85
    assert not not_earning(_study([warm] + [0.84] * (PATIENCE - 1)))
    assert not_earning(_study([warm] + [0.84, None] * PATIENCE))
    # a trial ahead by more than the margin keeps the search going
    assert not not_earning(_study([warm, warm + MARGIN + 0.001] + [None] * PATIENCE))
    # no completed warm start: nothing to judge against
    assert not not_earning(_study([None] + [0.5] * PATIENCE))


def test_a_share_too_short_to_judge_the_search_goes_to_the_final_fit():
    import optuna

    from pipeline.records import TrialRecord, write_trial
    from pipeline.training import FitMetrics
    from pipeline.tune.search import JUDGED_FRACTION, PATIENCE, cannot_judge

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"x": 0.0})

    def objective(trial):
        trial.suggest_float("x", 0, 1)
        m = FitMetrics(0.87, 0.5, 0.9, 0.4, 8, 8, 153.0, 700.0, 416_194, 416_194)
        write_trial(trial, TrialRecord(model="resnet9s", metrics=m))
        return 0.87

    study.optimize(objective, n_trials=2)
    warm, sampled = study.trials
    need = PATIENCE * JUDGED_FRACTION * 153.0
    # the 900 s run: 106 s of the share left after a 153 s warm start
    assert cannot_judge(warm, 106.0)
    assert not cannot_judge(warm, need + 1)
    # only the warm start is judged this way
    assert not cannot_judge(sampled, 1.0)


def test_time_the_search_left_goes_to_a_final_fit_of_the_one_chosen_trial():
    """--quick on 6,000 demo rows: the search's one trial ended with 38 s of 150 unused. The
    time left trains the chosen trial's configuration on the whole split where the budget ended
    the search and one trial was chosen; not after --trials N, not for an ensemble of several
    (except after folds that did not fit), not with --final trials."""
    from types import SimpleNamespace

    from pipeline.options import TuneOptions
    from pipeline.tune.modes import idle_fit

    def fits(after_folds=False, chosen=1, **opts):
        ctx = SimpleNamespace(opts=TuneOptions(**opts))
        return idle_fit(ctx, SimpleNamespace(trials=[object()] * chosen), after_folds)

    assert fits()
    assert not fits(trials=3)
    assert not fits(chosen=2)
    assert fits(after_folds=True, chosen=2) and fits(after_folds=True, trials=3)
    assert not fits(final="trials") and not fits(after_folds=True, final="trials")


@pytest.mark.slow
def test_final_fit_and_folds_train_on_every_row_they_should(demo_small, tmp_path, monkeypatch):
    """A trial trains on its slice, the final fit on the whole training split (80%), each of
    k folds on every labelled row but its fold (the holdout's too)."""
    import pipeline.training as training
    from pipeline.data import holdout, load_competition, search_split
    from pipeline.tune import plan

    seen: list[int] = []
    real = training.make_dataset

    def recording(x, y, *a, shuffle=False, **kw):
        if shuffle:  # the training pass (validation and prediction are not shuffled)
            seen.append(len(x))
        return real(x, y, *a, shuffle=shuffle, **kw)

    monkeypatch.setattr(training, "make_dataset", recording)
    monkeypatch.setattr(plan, "KFOLD", 3)
    common = [
        "--data",
        str(demo_small),
        "--artifacts",
        str(tmp_path / "art"),
        "--submissions",
        str(tmp_path / "subs"),
        "--models",
        "lenet5_wide",
        "--trials",
        "1",
        "--max-epochs",
        "1",
        "--limit",
        "1000",
        "--pruner",
        "none",
        "--no-report",
        "--timeout",
        "300",
        "--search-rows",
        "300",
        "--final-max-epochs",
        "2",
        "--isolate",
        "none",
    ]  # fmt: skip (the patch above reaches no worker process)
    assert cli.main(["tune", *common, "--final", "fit"]) == 0
    ds = load_competition(demo_small)
    split = holdout(ds, 42, 1000)
    trial_rows = len(search_split(split, 300, 42)[1])
    assert seen[0] == trial_rows == 300  # the trial: its slice
    assert seen[1:] == [len(split[1])] == [800]  # the final fit: every training row
    seen.clear()
    assert cli.main(["tune", *common, "--final", "folds", "--final-only"]) == 0
    assert sorted(seen) == [666, 667, 667]  # 2 of 3 folds of the 1,000 labelled rows each
    best = json.loads((tmp_path / "art" / "fashion-mnist" / "tune" / "best.json").read_text())
    assert best["kfold"]["rows"] == 1000 and best["estimate"]["scored_on"] == "out-of-fold"


@pytest.mark.slow
def test_the_holdout_chooses_nothing(demo_small, tmp_path, monkeypatch):
    """Every choice is made on the trials' validation images, carved out of the training
    part: they never overlap the holdout, which scores what is submitted."""
    from pipeline.data import holdout, load_competition, search_split

    ds = load_competition(demo_small)
    split = holdout(ds, 42)
    for rows in (None, 400):
        x_tr, _, x_val, _ = search_split(split, rows, 42)
        train_rows = {r.tobytes() for r in split[0]}
        hold_rows = {r.tobytes() for r in split[2]}
        assert {r.tobytes() for r in x_val} <= train_rows
        assert not {r.tobytes() for r in x_val} & hold_rows
        assert not {r.tobytes() for r in x_tr} & {r.tobytes() for r in x_val}


def _poison_holdout(monkeypatch):
    """Every process step that builds the run's splits gets the holdout labels permuted."""
    from pipeline.data import split as splits

    real = splits.run_splits

    def poisoned(ds, opts, search_rows):
        s = real(ds, opts, search_rows)
        x_tr, y_tr, x_ho, y_ho = s.holdout
        y_bad = y_ho[np.random.default_rng(7).permutation(len(y_ho))]
        return splits.RunSplits((x_tr, y_tr, x_ho, y_bad), s.search)

    monkeypatch.setattr(splits, "run_splits", poisoned)


def _decisions(best: dict) -> dict:
    """Every decision best.json records (the estimate is not one)."""
    fit = best["final_fit"] or {}
    return {
        "trial": best["trial"],
        "ensemble": best["ensemble"],
        "ensemble_scores": best["ensemble_validation_accuracy"],
        "mirror": best["flip"],
        "mirror_at_test": (best["mirror_at_test"], best["mirror_at_test_why"]),
        "epochs_trained": fit.get("epochs_run"),
        "final_settings": fit.get("settings"),
    }


@pytest.mark.slow
@pytest.mark.parametrize("mode", [["--final", "fit", "--final-max-epochs", "2"],
                                  ["--final", "trials"]])  # fmt: skip
def test_permuted_holdout_labels_change_no_decision(demo_small, tmp_path, monkeypatch, mode):
    """The final stage run twice on one study, the second time with the holdout's labels
    permuted: every decision (trial, ensemble members and scores, mirror, epochs trained) is
    the same; only the estimate moves (to about chance). A decision that read the holdout
    would move with it (the control below makes one)."""
    art = tmp_path / "art"
    common = ["--data", str(demo_small), "--artifacts", str(art), "--submissions",
              str(tmp_path / "subs"), "--models", "lenet5_wide,cnn1", "--limit", "1000",
              "--search-rows", "300", "--max-epochs", "1", "--pruner", "none",
              "--timeout", "600", "--no-report", *mode]  # fmt: skip
    assert cli.main(["tune", *common, "--trials", "3", "--search-only"]) == 0
    best_file = art / "fashion-mnist" / "tune" / "best.json"

    def final() -> dict:
        assert cli.main(["tune", *common, "--final-only", "--isolate", "none"]) == 0
        return json.loads(best_file.read_text())

    honest = final()
    with monkeypatch.context() as m:
        _poison_holdout(m)
        poisoned = final()
    assert _decisions(poisoned) == _decisions(honest)
    assert poisoned["estimate"]["rows"] == honest["estimate"]["rows"] == 200
    assert poisoned["holdout_accuracy"] != honest["holdout_accuracy"]
    # permuted labels leave the model near chance (0.1) there; the real ones do not
    assert (
        poisoned["holdout_accuracy"] < 0.2
        and honest["holdout_accuracy"] > poisoned["holdout_accuracy"]
    )

    # the control: an ensemble choice scored on the holdout is caught by the same comparison
    from pipeline.data import split as splits
    from pipeline.tune import decide

    real = decide.choose_ensemble

    def on_the_holdout(trials, files, requested, y_val):
        from pipeline.data import load_competition
        from pipeline.options import TuneOptions

        opts = TuneOptions(limit=1000, search_rows=300)
        ds = load_competition(demo_small)
        held = splits.run_splits(ds, opts, 300).holdout
        scores = {k + 1: float(held[3][: 20 * (k + 1)].mean()) for k in range(len(trials))}
        return real(trials, files, requested, y_val)[0], scores

    with monkeypatch.context() as m:
        m.setattr(decide, "choose_ensemble", on_the_holdout)
        leaky = final()
        _poison_holdout(m)
        leaky_poisoned = final()
    assert _decisions(leaky_poisoned) != _decisions(leaky)


@pytest.mark.slow
def test_the_final_fit_plans_its_epochs_from_its_measured_pace(demo_small, tmp_path):
    """After every epoch the final fit plans only the epochs that fit in the seconds left at the
    pace of its slowest recent epoch (the history records both), and stops where its plan
    ends. Checked on the recorded history, not on the clock."""
    args = ["tune", "--data", str(demo_small), "--artifacts", str(tmp_path / "art"),
            "--submissions", str(tmp_path / "subs"), "--models", "lenet5_wide,cnn1",
            "--limit", "2000", "--search-rows", "480", "--final", "fit", "--timeout", "600",
            "--trials", "1", "--final-max-epochs", "3", "--max-epochs", "1", "--pruner", "none",
            "--no-report"]  # fmt: skip
    assert cli.main(args) == 0
    tune = tmp_path / "art" / "fashion-mnist" / "tune"
    best = json.loads((tune / "best.json").read_text())
    assert best["final_fit"] is not None  # the final stage trained: 2 epochs at least fit
    hist = pd.read_csv(tune / "final_history.csv")
    assert len(hist) == best["final_fit"]["epochs_run"] >= 2
    from pipeline.callbacks import CosineToDeadline

    recent = CosineToDeadline.RECENT
    for i, row in hist.iterrows():
        done = i + 1
        # an epoch's seconds in the history omit the callbacks between epochs: a lower bound
        pace = max(hist["seconds"][max(0, i - recent + 1) : done])
        assert done <= row["planned_epochs"] <= min(3, done + max(row["seconds_left"], 0) // pace)
    assert hist["planned_epochs"].iloc[-1] == len(hist)  # it stopped where its plan ended


def test_a_larger_ensemble_only_on_a_gain_beyond_its_noise():
    """auto_k: two members whose average is right on 6 more of 2,400 rows than the first alone
    (46 gained, 40 lost: sqrt(86) ~ 9 rows of noise) stay k=1; right on 40 more (none lost),
    k=2; no gain, the smaller k."""
    from pipeline.tune.decide import auto_k

    y = np.zeros(2400, dtype=int)
    first = np.tile([0.45, 0.55], (2400, 1))
    first[:2000] = [0.55, 0.45]  # unsure, right on the first 2,000 rows

    def second(average_right):
        """The member that makes the two-member average right exactly on these rows."""
        p = np.tile([0.1, 0.9], (2400, 1))
        p[average_right] = [0.9, 0.1]
        return p

    noisy = second(np.r_[np.arange(0, 1960), np.arange(2000, 2046)])
    assert auto_k([first, noisy], y) == 1
    clear = second(np.arange(0, 2040))
    assert auto_k([first, clear], y) == 2
    assert auto_k([first, first], y) == 1 and auto_k([first], y) == 1
    assert auto_k([first, clear, second(np.arange(0, 2040))], y) == 2
