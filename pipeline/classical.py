"""Stage 2 for the classical entries: fit a scikit-learn estimator on the flattened pixels, score
it on the validation rows, save and load it (joblib), and predict probabilities.

The same data reaches every entry: uint8 images scaled to [0, 1] (the networks' input), one row
per image. The fit's record has the networks' shape (one "epoch"), so trials, reports and the
final stage treat both kinds alike.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.fsutil import atomic_path
from pipeline.training import FitMetrics, FitResult

SUFFIX = ".joblib"
# rows of the fit the cost probe times (see pipeline.models.classical): at 400 the fixed costs
# of a fit, scaled as if they grew with the rows, made an SVC look 3x slower than it was
PROBE_ROWS = 1000


def flat(x: np.ndarray) -> np.ndarray:
    """uint8 images (N, H, W, C) -> float32 rows in [0, 1]."""
    return x.reshape(len(x), -1).astype(np.float32) / 255.0


def is_classical(model) -> bool:
    """True for a scikit-learn estimator (a fitted classical entry)."""
    return hasattr(model, "predict_proba") and hasattr(model, "get_params")


def threads():
    """joblib's threads for an estimator's ``n_jobs`` (its processes cannot start inside the
    trial worker, a daemon process: scikit-learn then warns and uses one core)."""
    from joblib import parallel_config

    return parallel_config(backend="threading")


@contextlib.contextmanager
def quiet():
    """No ConvergenceWarning: an iteration cap is part of an entry's recipe (logreg stops at
    300), and the warning's advice (scale the data) is already taken."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def seeded(estimator, seed: int):
    """The estimator with every ``random_state`` of it (and of its steps) set to ``seed``."""
    keys = [k for k in estimator.get_params() if k.split("__")[-1] == "random_state"]
    return estimator.set_params(**dict.fromkeys(keys, seed))


def probabilities(model, x: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """(N, K) class probabilities of uint8 images; a class the fit never saw gets 0."""
    with threads():
        p = np.asarray(model.predict_proba(flat(x)), dtype=np.float64)
    k = num_classes or int(max(model.classes_) + 1)
    if p.shape[1] == k:
        return p
    out = np.zeros((len(x), k))
    out[:, np.asarray(model.classes_, dtype=int)] = p
    return out


def fit_classical(estimator, data, num_classes: int, seed: int = 42) -> FitResult:
    """Fit on ``data``'s training rows, score on its validation rows; a FitResult as a one-epoch
    network fit would give (loss: the validation log-loss)."""
    x_tr, y_tr, x_val, y_val = data
    t0 = time.perf_counter()
    with threads(), quiet():
        model = seeded(estimator, seed).fit(flat(x_tr), y_tr)
    seconds = time.perf_counter() - t0
    train = probabilities(model, x_tr[:2000], num_classes)
    val = probabilities(model, x_val, num_classes)
    eps = 1e-7
    val_loss = float(-np.mean(np.log(val[np.arange(len(y_val)), y_val] + eps)))
    tr_loss = float(-np.mean(np.log(train[np.arange(len(train)), y_tr[:2000]] + eps)))
    val_acc = float((val.argmax(1) == y_val).mean())
    tr_acc = float((train.argmax(1) == y_tr[:2000]).mean())
    size = param_count(model)
    metrics = FitMetrics(val_acc, val_loss, tr_acc, tr_loss, best_epoch=1, epochs_run=1,
                         seconds=round(seconds, 2),
                         train_images_per_second=len(x_tr) / max(seconds, 1e-9), params=size,
                         trainable_params=size)  # fmt: skip
    history = {"accuracy": [tr_acc], "loss": [tr_loss], "val_accuracy": [val_acc],
               "val_loss": [val_loss], "seconds": [seconds]}  # fmt: skip
    return FitResult(model, history, metrics)


def param_count(model) -> int:
    """The fitted model's size in numbers: coefficients, support vectors, tree nodes."""
    last = model[-1] if hasattr(model, "steps") else model
    if hasattr(last, "coef_"):
        return int(last.coef_.size + last.intercept_.size)
    if hasattr(last, "support_vectors_"):
        return int(last.support_vectors_.size + last.dual_coef_.size)
    if hasattr(last, "estimators_"):
        return int(sum(t.tree_.node_count for t in last.estimators_))
    return 0


def save(model, path: Path) -> None:
    import joblib

    with atomic_path(path) as tmp:
        joblib.dump(model, tmp)


def load(path: Path):
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - a damaged file raises many types
        why = f"{type(exc).__name__}: {exc}"
        raise PipelineError(f"{path}: cannot load the model ({why})") from None


def probe_seconds(name: str, x: np.ndarray, y: np.ndarray, num_classes: int) -> tuple[float, int]:
    """(seconds, rows) of one fit of entry ``name`` on a stratified slice of ``PROBE_ROWS`` rows
    and the prediction of as many: what :func:`fit_seconds` scales from."""
    from sklearn.model_selection import train_test_split

    from pipeline.models import build_model

    n = min(PROBE_ROWS, len(y))
    if n < len(y):
        try:
            idx, _ = train_test_split(np.arange(len(y)), train_size=n, random_state=0, stratify=y)
        except ValueError:  # a class with a single row
            idx = np.arange(n)
    else:
        idx = np.arange(n)
    est = build_model(name, x.shape[1:], num_classes)
    t0 = time.perf_counter()
    with threads():
        model = seeded(est, 0).fit(flat(x[idx]), y[idx])
        model.predict_proba(flat(x[idx]))
    return time.perf_counter() - t0, n


def fit_seconds(name: str, probe: tuple[float, int], n_train: int, n_val: int) -> float:
    """Seconds to fit ``n_train`` rows and score ``n_val``, scaled from the probe by the entry's
    growth (:data:`pipeline.models.classical.COST_EXPONENT`)."""
    from pipeline.models.classical import COST_EXPONENT

    seconds, rows = probe
    grow = (max(n_train, rows) / rows) ** COST_EXPONENT.get(name, 1.0)
    return seconds * grow * (1 + n_val / max(n_train, 1))
