"""The final fit's last stretch: every labelled row, and the test images, put to work.

The final fit trains on the training split and is scored once on the whole holdout: that score
is the run's estimate. Then, with ``--last-stretch labelled`` (or ``labelled+test``), the
measured model trains a few more epochs on every labelled row, the holdout included, (and on
the test images it labels confidently, with those labels), at a fraction of its peak learning
rate decaying to the deadline. What is submitted is that model; its own score cannot be
measured (the holdout trained it), so the estimate stays the measured model's, and says so.

The pseudo-label threshold is read off the measured model's holdout predictions, whose job as
scoring rows is done once the estimate is taken: the lowest confidence above which its holdout
predictions were at least PSEUDO_PRECISION right.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.tune import log

# Of the final fit's time (after the search) kept for the stretch; a stretch that cannot hold
# one epoch of all its rows is not run, and the fit keeps the time.
STRETCH_SHARE = 0.2
# The stretch's learning rate at its start, as a fraction of the configuration's peak; a cosine
# takes it down to the deadline. A fine-tune, not a restart: the measured model is annealed.
STRETCH_LR = 0.1
# A test image joins with its predicted label when the measured model's holdout predictions at
# least as confident as it were right this often.
PSEUDO_PRECISION = 0.99
MODES = ("off", "labelled", "labelled+test")


def pseudo_threshold(probs: np.ndarray, y: np.ndarray, precision: float = PSEUDO_PRECISION):
    """(threshold, precision there): the lowest confidence c such that the predictions in
    ``probs`` with confidence >= c are right at least ``precision`` of the time on labels
    ``y``; (None, None) when no confidence gets there."""
    conf = probs.max(1)
    right = probs.argmax(1) == y
    order = np.argsort(-conf, kind="stable")
    hits = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(hits >= precision)
    if not len(ok):
        return None, None
    last = ok[-1]  # the largest set, most confident first, that is precise enough
    return float(conf[order[last]]), float(hits[last])


def pseudo_labelled(test_probs: np.ndarray, threshold: float | None):
    """(indices, labels) of the test images at least ``threshold`` confident (none for None)."""
    if threshold is None:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    keep = np.flatnonzero(test_probs.max(1) >= threshold)
    return keep, test_probs[keep].argmax(1)


def stretch_learning_rate(fitted) -> float:
    """The stretch's starting rate: STRETCH_LR of the fit's peak. A benchmark may set
    PIPELINE_STRETCH_LR to another fraction, or to ``last``: the fit's last epoch's rate."""
    import os

    how = os.environ.get("PIPELINE_STRETCH_LR", str(STRETCH_LR))
    if how == "last" and fitted.last_learning_rate:
        return float(fitted.last_learning_rate)
    return fitted.settings.learning_rate * float(how if how != "last" else STRETCH_LR)


def stretch_seconds(mode: str, left: float, epoch_s: float, n_train: int, n_rows: int) -> float:
    """Seconds of the final fit's ``left`` kept for the stretch: STRETCH_SHARE of it, or 0
    when that cannot hold one epoch of its ``n_rows`` rows (an epoch of the ``n_train``
    training rows takes ``epoch_s``)."""
    if mode == "off":
        return 0.0
    share = STRETCH_SHARE * left
    per_epoch = epoch_s * n_rows / max(n_train, 1)
    if share < per_epoch:
        log(f"final: no last stretch: one epoch on {n_rows} rows needs ~{per_epoch:.0f} s, "
            f"its share of the time left is {share:.0f} s")  # fmt: skip
        return 0.0
    return share


def stretch_rows(mode: str, split, x_test, test_probs, holdout_probs):
    """(x, y, pseudo-label record fields): every labelled row, and the confident test images
    with their predicted labels where ``mode`` says so."""
    x_tr, y_tr, x_ho, y_ho = split
    x, y = np.concatenate([x_tr, x_ho]), np.concatenate([y_tr, y_ho])
    if mode != "labelled+test":
        return x, y, dict(pseudo_rows=0, pseudo_threshold=None, pseudo_holdout_precision=None)
    threshold, precision = pseudo_threshold(holdout_probs, y_ho)
    keep, labels = pseudo_labelled(test_probs, threshold)
    x, y = np.concatenate([x, x_test[keep]]), np.concatenate([y, labels.astype(y.dtype)])
    return x, y, dict(pseudo_rows=len(keep), pseudo_threshold=threshold,
                      pseudo_holdout_precision=precision)  # fmt: skip


def run_stretch(model, fitted, mode: str, split, x_test, probs, budget, predict_s: float,
                models_dir):  # fmt: skip
    """(model, StretchRecord, its saved path) after the last stretch of the final fit
    ``fitted`` (its record), or None when its first epoch no longer fits before the deadline
    less ``predict_s``.
    ``probs``: the measured model's (holdout, test) probabilities, as the test-time views give
    them. The measured model stays saved where ``fitted.model_path`` says."""
    import time
    from pathlib import Path

    import keras

    from pipeline import artifacts
    from pipeline.records import StretchRecord
    from pipeline.training import fit
    from pipeline.tune.budget import epoch_seconds

    x, y, fields = stretch_rows(mode, split, x_test, probs[1], probs[0])
    check = min(256, len(y))  # training rows: the fit needs some, they score nothing
    per_epoch = epoch_seconds(1 / max(fitted.images_per_second or 0, 1e-9), len(y), check)
    if budget.left() - predict_s < per_epoch:
        log(f"final: no last stretch: one epoch on {len(y)} rows needs ~{per_epoch:.0f} s, "
            f"{budget.left() - predict_s:.0f} s left")  # fmt: skip
        return None
    lr = stretch_learning_rate(fitted)
    # its share of the fit's epochs at most, when the fit stopped short of the time
    most = max(1, math.ceil(fitted.epochs_run * STRETCH_SHARE / (1 - STRETCH_SHARE)))
    settings = fitted.settings.replace(learning_rate=lr, epochs=most, schedule="cosine",
                                       reduce_lr=False, warmup_epochs=0.0)  # fmt: skip
    log(
        f"final: last stretch: {len(y) - fields['pseudo_rows']} labelled rows (the holdout "
        f"joins, its score taken)"
        + (f" and {fields['pseudo_rows']} test images at confidence >= "
           f"{fields['pseudo_threshold']:.4f}" if fields["pseudo_rows"] else "")
        + f", learning rate {lr:.3g} down to the deadline (~{per_epoch:.0f} s an epoch)"
    )  # fmt: skip

    def line(epoch, logs):
        log(f"final: stretch epoch {epoch + 1} loss {(logs or {}).get('loss', float('nan')):.4f}")

    t0 = time.monotonic()
    result = fit(model, settings, (x, y, x[:check], y[:check]), int(probs[1].shape[1]),
                 deadline=lambda: budget.deadline - predict_s, verbose=0, keep_best=False,
                 callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=line)])  # fmt: skip
    path = Path(models_dir) / "final-stretched.keras"
    artifacts.save_model(result.model, path)
    record = StretchRecord(
        epochs_run=result.metrics.epochs_run, seconds=round(time.monotonic() - t0, 1),
        labelled_rows=len(y) - fields["pseudo_rows"], learning_rate=lr,
        measured_model_path=str(fitted.model_path), **fields,
    )  # fmt: skip
    return result.model, record, path
