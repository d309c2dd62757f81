"""``tune``: Optuna search over the zoo within a time budget, then the best model(s) predict.

Storage: an SQLite file ``artifacts/<competition>/optuna.db`` (study name = competition) unless
``--storage URL``; rerunning resumes. Trials left RUNNING by a killed process are found by Optuna's
heartbeat, marked failed and retried. Each trial keeps its holdout probabilities, and the models
of the top trials are kept on disk, so the final stage never retrains unless ``--refit``.
"""

from __future__ import annotations

import gc
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import Config
from pipeline.data import Dataset
from pipeline.errors import PipelineError
from pipeline.fsutil import atomic_write_json, atomic_write_text
from pipeline.runs import (
    competition_dir,
    holdout,
    load_data,
    save_history,
    save_model,
    write_predictions,
)

QUICK = dict(timeout=150, trials=3, max_epochs=2, limit=3000)
FINAL_RESERVE = 60.0  # seconds kept for predicting and writing, beyond any refit
EXIT_MARGIN = 30.0  # seconds of the budget left for process start-up and exit
# Multi-fidelity on CPU: trials train on a stratified slice of the training split (and are scored
# on a slice of the holdout), then the final stage trains the best configuration on the whole
# split for the time it has left. One full-data epoch of cnn7 takes ~150 s on 2 cores, so
# full-data trials would buy about one trial per hour.
SEARCH_ROWS_CPU = 12_000
SEARCH_EPOCHS_CPU = 8
# of the budget, for the final fit (when on). In the first 3600 s default run on 2 CPU cores the
# search (45%) found nothing better than its warm start, while the final fit's accuracy was still
# rising at its last epoch: epochs of the final fit buy more than trials on a slice.
FINAL_SHARE = 0.65


def _log(msg: str) -> None:
    print(f"tune: {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# Cost: seconds per training image, measured once per machine, scaled by MACs


def measure_cost(cfg: Config, ds: Dataset, cache: Path) -> dict[str, Any]:
    """Seconds per training image per MAC, measured on this machine with cnn1 (cached)."""
    from pipeline.models import build_model, count_macs
    from pipeline.training import configure_runtime, make_dataset, make_optimizer

    info = configure_runtime()
    key = f"{info['device']}-{os.cpu_count()}-{'x'.join(map(str, ds.image_shape))}"
    if cache.exists():
        known = json.loads(cache.read_text())
        if known.get("key") == key:
            return known
    import keras

    keras.backend.clear_session()
    model = build_model("cnn1", ds.image_shape, ds.num_classes)
    model.compile(optimizer=make_optimizer("adam", 1e-3), loss="categorical_crossentropy")
    n = min(len(ds.x_train), 256 * 8)
    data = make_dataset(ds.x_train[:n], ds.y_train[:n], ds.num_classes, 256)
    model.fit(data.take(2), epochs=1, verbose=0, shuffle=False)  # trace and warm up
    t0 = time.perf_counter()
    model.fit(data, epochs=1, verbose=0, shuffle=False)
    per_image = (time.perf_counter() - t0) / n
    macs = count_macs(model)
    result = {
        "key": key,
        "seconds_per_image": per_image,
        "macs": macs,
        "seconds_per_image_per_mac": per_image / macs,
    }
    atomic_write_json(cache, result)
    keras.backend.clear_session()
    return result


def entry_macs(name: str, ds: Dataset) -> int:
    import keras

    from pipeline.models import build_model, count_macs

    keras.backend.clear_session()
    macs = count_macs(build_model(name, ds.image_shape, ds.num_classes))
    keras.backend.clear_session()
    return macs


# ---------------------------------------------------------------------------------------------
# Storage and study


def storage_url(cfg: Config, ds: Dataset) -> str:
    url = cfg.opt("storage")
    if url:
        return url
    path = competition_dir(cfg, ds) / "optuna.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


def make_storage(url: str):
    """Any Optuna storage URL; heartbeats find trials whose process died (RDB and journal)."""
    import optuna

    beat = float(os.environ.get("PIPELINE_HEARTBEAT", "10"))
    if url.endswith(".log") or url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = url.removeprefix("journal:").removeprefix("///")
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    kwargs: dict[str, Any] = dict(
        heartbeat_interval=max(1, int(beat)),
        grace_period=max(2, int(beat * 3)),
        engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {},
    )
    # Optuna 4.9 renamed the retry callback; Kaggle kernels may carry an older Optuna
    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
        kwargs["heartbeat_stale_trial_callback"] = optuna.storages.RetryHeartbeatStaleTrialCallback(
            max_retry=1
        )
    else:
        kwargs["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(max_retry=1)
    return optuna.storages.RDBStorage(url, **kwargs)


def make_pruner(name: str, max_epochs: int):
    import optuna

    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max_epochs, reduction_factor=3
        )
    if name == "halving":
        # asynchronous successive halving: a trial goes on past epoch 1, 3, 9... only while it is in
        # the top third of the trials that reached that epoch
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    # steps are epoch numbers (1-based): no pruning before epoch 2
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)


def open_study(cfg: Config, ds: Dataset, max_epochs: int):
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # TPE's multivariate/group/constant_liar and heartbeats are stable in practice but flagged
    # experimental; the flags would bury the progress lines
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    url = storage_url(cfg, ds)
    name = cfg.opt("study") or ds.competition
    sampler = optuna.samplers.TPESampler(
        seed=cfg.seed,
        n_startup_trials=5,
        multivariate=True,
        group=True,
        constant_liar=True,
    )
    pruner = make_pruner(cfg.opt("pruner", "halving"), max_epochs)
    return create_or_load_study(url, name, sampler, pruner), url, name


def create_or_load_study(url: str, name: str, sampler=None, pruner=None):
    """The study `name` in storage `url`, created if missing; safe for workers started together."""
    import optuna

    for attempt in range(5):
        try:
            return optuna.create_study(
                storage=make_storage(url),
                study_name=name,
                direction="maximize",
                sampler=sampler,
                pruner=pruner,
                load_if_exists=True,
            )
        except Exception as exc:  # noqa: BLE001 - bad URL, driver missing, DB locked...
            # workers started together race to create the schema or the study: the loser sees a
            # unique-constraint error and finds everything in place on the next try
            if attempt < 4 and _creation_race(exc):
                time.sleep(0.5 + random.random())
                continue
            raise PipelineError(f"cannot open Optuna storage {url!r}: {exc}") from None
    raise AssertionError("unreachable")


def _creation_race(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return any(
        k in text for k in ("IntegrityError", "UNIQUE constraint", "already exists", "Duplicated")
    )


# ---------------------------------------------------------------------------------------------
# One trial


def pruning_callback(trial):
    """Report val_accuracy to Optuna once per epoch; prune when the pruner says so."""
    import keras
    import optuna

    class Pruning(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            acc = (logs or {}).get("val_accuracy")
            if acc is None:
                return
            trial.report(float(acc), epoch + 1)  # step = epoch number, as the plots show it
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch + 1} (val_accuracy {acc:.4f})")

    return Pruning()


class Search:
    """Holds what every trial of this process shares: data, split, budget, cost model."""

    def __init__(
        self,
        cfg: Config,
        ds: Dataset,
        models: list[str],
        max_epochs: int,
        deadline: float,
        cost: dict[str, Any],
        macs: dict[str, int],
        keep: int,
    ):
        self.cfg, self.ds, self.models = cfg, ds, models
        self.max_epochs, self.deadline, self.keep = max_epochs, deadline, keep
        self.cost, self.macs = cost, macs
        self.full = holdout(ds, cfg.seed, cfg.opt("limit"))
        self.data = search_slice(self.full, cfg.opt("search_rows"), cfg.seed)
        self.tune_dir = competition_dir(cfg, ds) / "tune"
        self.failures = 0
        self.max_failures = cfg.opt("max_failures") or 5
        self.started = time.monotonic()

    def epoch_seconds(self, name: str) -> float:
        # training ~ 3 forward passes; validation one forward pass over the holdout
        n_train, n_val = len(self.data[0]), len(self.data[2])
        per = self.cost["seconds_per_image_per_mac"] * self.macs[name]
        return per * (n_train + n_val / 3.0) * 1.1

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def objective(self, trial) -> float:
        import keras
        import optuna

        from pipeline.models import build_model, get_entry
        from pipeline.search_space import suggest
        from pipeline.training import TrainSettings, fit

        keras.backend.clear_session()
        gc.collect()
        entries = {m: get_entry(m) for m in self.models}
        spec = suggest(trial, self.models, entries, self.max_epochs)
        name = spec["model"]
        per_epoch = self.epoch_seconds(name)
        epochs = spec["epochs"]
        fits = int(self.remaining() // per_epoch)
        if fits < 1:
            trial.set_user_attr(
                "reason", f"needs ~{per_epoch:.0f} s/epoch, {max(self.remaining(), 0):.0f} s left"
            )
            trial.set_user_attr("refused", True)
            trial.set_user_attr("model", name)
            raise optuna.TrialPruned(trial.user_attrs["reason"])
        if fits < epochs:
            epochs = fits
            trial.set_user_attr("epochs_clipped_to", epochs)
        settings = TrainSettings(
            optimizer=spec["optimizer"],
            learning_rate=spec["learning_rate"],
            momentum=spec["momentum"],
            batch_size=spec["batch_size"],
            epochs=epochs,
            reduce_lr=spec["reduce_lr"],
            augment=spec["augment"],
            label_smoothing=spec["label_smoothing"],
            seed=self.cfg.seed + trial.number,
        )
        trial.set_user_attr("model", name)
        trial.set_user_attr("hp", spec["hp"])
        trial.set_user_attr("settings", settings.to_dict())
        try:
            model = build_model(name, self.ds.image_shape, self.ds.num_classes, **spec["hp"])
            result = fit(
                model,
                settings,
                self.data,
                self.ds.num_classes,
                callbacks=[pruning_callback(trial)],
                deadline=self.deadline - 5,
                verbose=0,
            )
        except optuna.TrialPruned as exc:
            trial.set_user_attr("reason", str(exc))
            raise
        except FloatingPointError as exc:
            trial.set_user_attr("reason", str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        except Exception as exc:
            trial.set_user_attr("reason", f"{type(exc).__name__}: {str(exc)[:300]}")
            self.failures += 1
            raise
        self.failures = 0
        m = result.metrics
        for k in (
            "val_accuracy",
            "val_loss",
            "train_accuracy",
            "train_loss",
            "epochs_run",
            "best_epoch",
            "seconds",
            "params",
            "train_images_per_second",
        ):
            trial.set_user_attr(k, m[k])
        trial.set_user_attr("history", result.history)
        self.keep_artifacts(trial, result.model)
        return float(m["val_accuracy"])

    def keep_artifacts(self, trial, model) -> None:
        """Save this trial's model and holdout probabilities if it is among the top ``keep``."""
        from pipeline.predict import predict_proba

        models_dir = self.tune_dir / "models"
        models_dir.mkdir(parents=True, exist_ok=True)
        path = models_dir / f"trial-{trial.number}.keras"
        save_model(model, path)
        np.save(
            models_dir / f"trial-{trial.number}.holdout.npy", predict_proba(model, self.data[2])
        )
        trial.set_user_attr("model_path", str(path))

    def prune_saved_models(self, study) -> None:
        import optuna

        done = [
            t for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
        ]
        top = {t.number for t in sorted(done, key=lambda t: t.value, reverse=True)[: self.keep]}
        for p in (self.tune_dir / "models").glob("trial-*.keras"):
            number = int(p.name.split("-")[1].split(".")[0])
            if number not in top and number in {t.number for t in done}:
                p.unlink(missing_ok=True)
                p.with_name(f"trial-{number}.holdout.npy").unlink(missing_ok=True)

    def progress(self, study, trial) -> None:
        """One line per finished trial; also stops the study when the budget or failures say so."""
        import optuna

        a = trial.user_attrs
        state = trial.state.name.lower()
        hp = ", ".join(
            f"{k}={v}" for k, v in a.get("hp", {}).items() if "dropout" in k or k == "width"
        )
        s = a.get("settings", {})
        # a trial the budget refused never trained: it has no settings to show
        key = (
            f"{s.get('optimizer')} lr={s.get('learning_rate', 0):.2g} bs={s.get('batch_size')} "
            f"aug={s.get('augment')}" + (f" {hp}" if hp else "")
            if s
            else "(not started)"
        )
        try:
            best = f"{study.best_value:.4f} (#{study.best_trial.number})"
        except ValueError:
            best = "-"
        if trial.state == optuna.trial.TrialState.COMPLETE:
            result = (
                f"val_acc {trial.value:.4f} epochs {a.get('epochs_run')} {a.get('seconds', 0):.0f}s"
            )
        else:
            result = f"{state}: {a.get('reason', '')}"
        _log(
            f"trial {trial.number:>3} {a.get('model', '?'):<12} {key} | {result} | best {best}"
            f" | {max(self.remaining(), 0):.0f}s left"
        )
        if trial.state == optuna.trial.TrialState.COMPLETE:
            self.prune_saved_models(study)
        cheapest = min(self.epoch_seconds(m) for m in self.models)
        # once the budget refuses a sampled trial, TPE would only keep sampling refusals
        if self.remaining() < cheapest or a.get("refused"):
            study.stop()
        if self.failures >= self.max_failures:
            _log(f"stopping: {self.failures} trials failed in a row (--max-failures)")
            study.stop()


# ---------------------------------------------------------------------------------------------
# Final stage


def search_slice(split, rows: int | None, seed: int):
    """A stratified slice of (x_train, y_train, x_val, y_val): ``rows`` training images and a
    quarter as many holdout images; the split itself when ``rows`` covers it."""
    from sklearn.model_selection import train_test_split

    x_tr, y_tr, x_va, y_va = split
    if not rows or rows >= len(y_tr):
        return split

    def take(x, y, n):
        if n >= len(y):
            return x, y
        idx, _ = train_test_split(np.arange(len(y)), train_size=n, random_state=seed, stratify=y)
        idx = np.sort(idx)
        return x[idx], y[idx]

    return (*take(x_tr, y_tr, rows), *take(x_va, y_va, max(rows // 4, 1)))


def trials_frame(study) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        s = a.get("settings", {})
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "model": a.get("model", t.params.get("model")),
                "params": json.dumps({k: v for k, v in t.params.items()}, sort_keys=True),
                "val_accuracy": a.get("val_accuracy"),
                "val_loss": a.get("val_loss"),
                "train_accuracy": a.get("train_accuracy"),
                "train_loss": a.get("train_loss"),
                "epochs_run": a.get("epochs_run", len(t.intermediate_values) or None),
                "seconds": a.get("seconds")
                or (
                    (t.datetime_complete - t.datetime_start).total_seconds()
                    if t.datetime_complete and t.datetime_start
                    else None
                ),
                "param_count": a.get("params"),
                "optimizer": s.get("optimizer"),
                "learning_rate": s.get("learning_rate"),
                "batch_size": s.get("batch_size"),
                "augment": s.get("augment"),
                "reason": a.get("reason", ""),
            }
        )
    return pd.DataFrame(rows)


def final_stage(cfg: Config, ds: Dataset, study, deadline: float) -> Path:
    """Best trial(s) -> test probabilities -> submission, best.json, trials.csv."""
    import optuna

    from pipeline.predict import load_model, predict_proba

    tune_dir = competition_dir(cfg, ds) / "tune"
    tune_dir.mkdir(parents=True, exist_ok=True)
    frame = trials_frame(study)
    atomic_write_text(tune_dir / "trials.csv", frame.to_csv(index=False))
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
        if t.user_attrs.get("model_path") and Path(t.user_attrs["model_path"]).exists()
    ]
    if not done:
        raise PipelineError(
            f"study {study.study_name!r} has no completed trial with a saved model; run "
            "./run.sh tune with a larger --timeout"
        )
    done.sort(key=lambda t: t.value, reverse=True)
    # the trials' holdout probabilities are over the (sliced) holdout they were scored on
    y_val = search_slice(holdout(ds, cfg.seed, cfg.opt("limit")), cfg.opt("search_rows"), cfg.seed)[
        3
    ]
    requested = cfg.opt("ensemble") or "auto"
    candidates = done[: (3 if requested == "auto" else int(requested))]
    # holdout accuracy of the top-k averages, from the probabilities kept at trial time
    holdout_probs = []
    for t in candidates:
        f = Path(t.user_attrs["model_path"]).with_name(f"trial-{t.number}.holdout.npy")
        holdout_probs.append(np.load(f) if f.exists() else None)
    scores = {}
    for k in range(1, len(candidates) + 1):
        if any(p is None or len(p) != len(y_val) for p in holdout_probs[:k]):
            break
        mean = np.mean(holdout_probs[:k], axis=0)
        scores[k] = float((mean.argmax(1) == y_val).mean())
    if requested == "auto":
        k = max(scores, key=lambda i: (scores[i], -i)) if scores else 1
    else:
        k = len(candidates)
    chosen = candidates[:k]
    _log(
        "final: holdout accuracy of the top-k ensembles: "
        + ", ".join(f"k={i}: {s:.4f}" for i, s in scores.items())
        + f"; using k={k}"
    )
    tta = bool(cfg.opt("tta"))
    probs = []
    final_info = None
    trial_scores = dict(scores)
    if cfg.opt("final_fit") and not cfg.opt("refit"):
        fitted = final_fit(cfg, ds, chosen[0], deadline)
        if fitted is not None:
            model, final_info = fitted
            tta = final_info["tta"]
            probs.append(predict_proba(model, ds.x_test, tta=tta))
            chosen, k = chosen[:1], 1
            scores = {1: final_info["holdout_accuracy"]}
    if not probs and cfg.opt("refit"):
        refit_model = refit_best(cfg, ds, chosen[0], deadline)
        if refit_model is not None:
            probs.append(predict_proba(refit_model, ds.x_test, tta=tta))
            chosen = chosen[:1]
    if not probs:
        for t in chosen:
            model = load_model(Path(t.user_attrs["model_path"]))
            probs.append(predict_proba(model, ds.x_test, tta=tta))
    test_probs = np.mean(probs, axis=0)
    holdout_acc = scores.get(k, chosen[0].value)
    names = "+".join(t.user_attrs.get("model", "?") for t in chosen)
    label = f"tune-{names}" if k > 1 else f"tune-{names}-t{chosen[0].number}"
    if final_info:
        label += "-full"
    np.save(tune_dir / "test_proba.npy", test_probs)
    best = {
        "study": study.study_name,
        "trial": chosen[0].number,
        "ensemble": [t.number for t in chosen],
        "model": chosen[0].user_attrs.get("model"),
        "params": chosen[0].params,
        "hp": chosen[0].user_attrs.get("hp"),
        "settings": chosen[0].user_attrs.get("settings"),
        "holdout_accuracy": holdout_acc,
        "best_trial_holdout_accuracy": chosen[0].value,
        "ensemble_holdout_accuracy": trial_scores,
        "tta": tta,
        "final_fit": final_info,
        "model_path": (final_info or {}).get("model_path")
        or chosen[0].user_attrs.get("model_path"),
        "model_paths": [t.user_attrs.get("model_path") for t in chosen],
        "config": cfg.to_dict(),
    }
    atomic_write_json(tune_dir / "best.json", best)
    cfg.save(tune_dir / "config.json")
    _print_top(frame)
    return write_predictions(
        cfg,
        ds,
        test_probs,
        label,
        {"holdout_accuracy": holdout_acc, "trials": best["ensemble"], "study": study.study_name},
    )


def final_fit(cfg: Config, ds: Dataset, trial, deadline: float):
    """Train the best trial's configuration on the whole training split, scored on the whole
    holdout, for as many epochs as the budget leaves (cosine learning-rate decay over them)."""
    import keras

    from pipeline.models import build_model
    from pipeline.predict import TTA_SHIFTS, shift_probas
    from pipeline.training import TrainSettings, fit

    a = trial.user_attrs
    x_tr, y_tr, x_va, y_va = holdout(ds, cfg.seed, cfg.opt("limit"))
    ips = float(a.get("train_images_per_second") or 0)
    if ips <= 0:
        return None
    # an epoch: training, plus one forward pass over the holdout (~3x cheaper per image)
    epoch_s = (len(y_tr) + len(y_va) / 3) / ips * 1.1
    # afterwards: the holdout and the test set under every test-time shift, then saving; the
    # seconds per image are re-measured from each epoch's holdout pass (an estimate made from
    # the trial's training speed overran a 3600 s budget by 6 s)
    after = len(TTA_SHIFTS) * (len(y_va) + len(ds.x_test))
    per_image = [1 / (3 * ips)]

    def predict_s() -> float:
        return after * per_image[-1] * 1.25 + 15

    left = deadline - time.monotonic() - predict_s()
    cap = int(cfg.opt("final_max_epochs") or 40)
    epochs = min(int(left // epoch_s), cap)
    if epochs < 2:
        _log(f"final: no time to train on the whole split (~{epoch_s:.0f} s/epoch, {left:.0f} s)")
        return None
    # the cosine schedule re-plans from measured epoch times up to ``cap`` epochs (deadline below)
    settings = TrainSettings(
        **{**a["settings"], "epochs": cap, "schedule": "cosine", "seed": cfg.seed}
    )
    _log(
        f"final: training trial {trial.number}'s configuration ({a['model']}) on all "
        f"{len(y_tr)} training images for ~{epochs} epochs (~{epochs * epoch_s:.0f} s; re-planned "
        f"each epoch from its measured time, at most {cap}), "
        f"scored on {len(y_va)} holdout images"
    )
    keras.backend.clear_session()
    model = build_model(a["model"], ds.image_shape, ds.num_classes, **a.get("hp", {}))
    result = fit(
        model,
        settings,
        (x_tr, y_tr, x_va, y_va),
        ds.num_classes,
        deadline=lambda: deadline - predict_s(),
        verbose=0,
        callbacks=[_EpochLog(), _HoldoutTimer(len(y_va), per_image)],
    )
    tune_dir = competition_dir(cfg, ds) / "tune"
    path = tune_dir / "models" / "final.keras"
    save_model(result.model, path)
    save_history(tune_dir / "final_history.csv", result.history)
    passes = shift_probas(result.model, x_va)
    plain, shifted = passes[0].astype(np.float32), np.mean(passes, axis=0).astype(np.float32)
    acc_plain = float((plain.argmax(1) == y_va).mean())
    acc_tta = float((shifted.argmax(1) == y_va).mean())
    tta = bool(cfg.opt("tta")) or acc_tta > acc_plain
    np.save(tune_dir / "models" / "final.holdout.npy", shifted if tta else plain)
    _log(
        f"final: holdout accuracy {acc_plain:.4f}, with test-time shifts {acc_tta:.4f}; "
        f"using {'shifts' if tta else 'no shifts'}"
    )
    info = {
        "trial": trial.number,
        "model": a["model"],
        "epochs_run": result.metrics["epochs_run"],
        "best_epoch": result.metrics["best_epoch"],
        "seconds": result.metrics["seconds"],
        "train_rows": len(y_tr),
        "holdout_rows": len(y_va),
        "holdout_accuracy_plain": acc_plain,
        "holdout_accuracy_tta": acc_tta,
        "holdout_accuracy": max(acc_plain, acc_tta) if tta else acc_plain,
        "tta": tta,
        "model_path": str(path),
        "settings": settings.to_dict(),
    }
    return result.model, info


def _HoldoutTimer(images: int, per_image: list[float]):  # noqa: N802 - built lazily, as below
    """Appends the seconds per image of each epoch's holdout pass to ``per_image``."""
    import keras

    class HoldoutTimer(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            self.t0 = time.monotonic()

        def on_test_end(self, logs=None):
            per_image.append((time.monotonic() - self.t0) / max(images, 1))

    return HoldoutTimer()


def _EpochLog():  # noqa: N802 - a Keras callback class, built lazily (no TensorFlow at import)
    import keras

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            acc, loss = logs.get("val_accuracy", float("nan")), logs.get("loss", float("nan"))
            _log(f"final: epoch {epoch + 1} val_accuracy {acc:.4f} loss {loss:.4f}")

    return EpochLog()


def refit_best(cfg: Config, ds: Dataset, trial, deadline: float):
    """Retrain the best configuration on all labelled rows for its best epoch count."""
    import keras

    from pipeline.models import build_model
    from pipeline.training import TrainSettings, fit

    a = trial.user_attrs
    settings = TrainSettings(
        **{
            **a["settings"],
            "epochs": int(a.get("best_epoch") or 1),
            "reduce_lr": a["settings"].get("reduce_lr", True),
        }
    )
    needed = a.get("seconds", 0) / max(a.get("epochs_run", 1), 1) * settings.epochs * 1.25
    left = deadline - time.monotonic() - 30
    if needed > left:
        _log(f"final: skipping --refit (needs ~{needed:.0f} s, {left:.0f} s left)")
        return None
    _log(
        f"final: refitting trial {trial.number} ({a['model']}) on all {len(ds.y_train)} rows "
        f"for {settings.epochs} epochs (~{needed:.0f} s)"
    )
    keras.backend.clear_session()
    model = build_model(a["model"], ds.image_shape, ds.num_classes, **a.get("hp", {}))
    # the holdout is inside the training rows now: keep the last epoch, not the "best" one
    data = (ds.x_train, ds.y_train, ds.x_train[:256], ds.y_train[:256])
    return fit(model, settings, data, ds.num_classes, verbose=0, keep_best=False).model


def _print_top(frame: pd.DataFrame) -> None:
    done = frame[frame["state"] == "COMPLETE"].sort_values("val_accuracy", ascending=False)
    if done.empty:
        return
    print("\ntop trials:")
    cols = [
        "number",
        "model",
        "val_accuracy",
        "val_loss",
        "train_accuracy",
        "epochs_run",
        "seconds",
        "optimizer",
        "learning_rate",
        "batch_size",
        "augment",
    ]
    print(done[cols].head(10).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(flush=True)


# ---------------------------------------------------------------------------------------------
# The command


def _fidelity(cfg: Config, ds: Dataset, device: str) -> Config:
    """Resolve ``--search-rows`` and ``--final-fit`` ("auto": slice + final fit on CPU only)."""
    rows = cfg.opt("search_rows")
    limit = cfg.opt("limit")
    n_train = int(0.8 * (min(limit, len(ds.y_train)) if limit else len(ds.y_train)))
    if rows in (None, "auto"):
        rows = SEARCH_ROWS_CPU if device == "CPU" and n_train > 1.25 * SEARCH_ROWS_CPU else 0
    rows = int(rows)
    if rows >= n_train:
        rows = 0
    final = cfg.opt("final_fit") or "auto"
    final_on = final == "on" or (final == "auto" and rows > 0)
    return cfg.with_options(search_rows=rows or None, final_fit=final_on)


def cmd_tune(cfg: Config) -> int:
    import optuna

    from pipeline.models import get_entry
    from pipeline.search_space import DEFAULT_MODELS, warm_start_params
    from pipeline.training import configure_runtime

    start = time.monotonic()
    quick = bool(cfg.opt("quick"))
    timeout = cfg.opt("timeout") or (QUICK["timeout"] if quick else 3600)
    trials = cfg.opt("trials") or (QUICK["trials"] if quick else None)
    if quick and not cfg.opt("limit"):
        cfg = cfg.with_options(limit=QUICK["limit"])
    # the budget bounds the whole command: keep a little for starting Python and shutting down
    # TensorFlow, which happen outside this function (16 s in the 3600 s benchmark)
    deadline = start + timeout - min(EXIT_MARGIN, 0.01 * timeout)
    info = configure_runtime()
    ds = load_data(cfg)
    cfg = _fidelity(cfg, ds, info["device"])
    max_epochs = cfg.opt("max_epochs") or (
        QUICK["max_epochs"] if quick else SEARCH_EPOCHS_CPU if cfg.opt("search_rows") else 15
    )
    study, url, name = open_study(cfg, ds, max_epochs)
    tune_dir = competition_dir(cfg, ds) / "tune"
    cfg.save(tune_dir / "config.json")
    if cfg.opt("final_only"):
        print(final_stage(cfg, ds, study, deadline))
        return 0

    requested = [m.strip() for m in (cfg.opt("models") or "").split(",") if m.strip()]
    for m in requested:
        get_entry(m)  # unknown names: one clear line
    models = requested or list(DEFAULT_MODELS)
    cost = measure_cost(cfg, ds, competition_dir(cfg, ds) / "cost.json")
    macs = {m: entry_macs(m, ds) for m in models}
    ens = cfg.opt("ensemble") or "auto"
    keep = 3 if ens == "auto" else max(3, int(ens))
    # predicting and writing take seconds on small data: a short budget keeps most for trials
    reserve = min(FINAL_RESERVE, 0.2 * timeout)
    if cfg.opt("final_fit") and not cfg.opt("search_only"):
        reserve = max(FINAL_RESERVE, FINAL_SHARE * timeout)
    search = Search(cfg, ds, models, max_epochs, deadline - reserve, cost, macs, keep=keep)
    if not requested and info["device"] == "CPU":
        share = (timeout - reserve) / 4
        slow = [m for m in models if search.epoch_seconds(m) > share]
        if slow:
            models = [m for m in models if m not in slow]
            search.models = models
            _log(
                f"CPU only: leaving out {', '.join(slow)} (one epoch would take more than "
                f"a quarter of the {timeout:.0f} s budget; --models to force)"
            )
    if not models:
        raise PipelineError("no model fits the time budget; raise --timeout or pick --models")
    done = len(
        [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    )
    if done == 0 and not study.get_trials(deepcopy=False):
        warm = warm_start_params(models, max_epochs)
        if warm:
            study.enqueue_trial(warm, skip_if_exists=True)
    _log(
        f"study {name!r} in {url} ({done} completed trials), {len(models)} architectures, "
        f"{info['device']}, budget {timeout:.0f} s, up to {max_epochs} epochs per trial, "
        f"pruner {cfg.opt('pruner') or 'halving'}, "
        f"{len(search.data[0])} train / {len(search.data[2])} holdout images per trial"
        + (
            f"; then {reserve:.0f} s to train the best on all {len(search.full[0])}"
            if cfg.opt("final_fit")
            else ""
        )
    )
    if search.remaining() > 0:
        study.optimize(
            search.objective,
            n_trials=trials,
            timeout=max(search.remaining(), 1),
            catch=(Exception,),
            callbacks=[search.progress],
            gc_after_trial=True,
        )
    if cfg.opt("search_only"):
        frame = trials_frame(study)
        atomic_write_text(tune_dir / "trials.csv", frame.to_csv(index=False))
        _print_top(frame)
        return 0
    path = final_stage(cfg, ds, study, deadline)
    _log(f"done in {time.monotonic() - start:.0f} s")
    print(path)
    return 0
