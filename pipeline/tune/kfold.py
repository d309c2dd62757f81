"""The k-fold final stage for small data: every labelled row trains what is submitted.

On data under :data:`KFOLD_MAX_ROWS` labelled rows the trials see every row of their split, and
what they submit never trained on the 20% holdout (nor on their own validation rows). Here the
chosen configuration is trained ``k`` times, each time on all labelled rows but one fold; each
model predicts its left-out fold (the out-of-fold predictions give the estimate, on every
labelled row) and the test set (the submission averages the ``k`` predictions). A fold's network
trains on a cosine schedule to its share of the time left (no decision reads its left-out rows:
no best epoch, no plateau); a classical entry is fit once per fold.

The estimate is nearly honest: no fold model saw its left-out rows, but the configuration was
chosen on the trials' validation rows, which are among them (``scored_on``: "out-of-fold").
"""

from __future__ import annotations

import time

import numpy as np

from pipeline.records import Estimate, FoldsRecord, TrialRecord, read_trial
from pipeline.tune import log

KFOLD = 5
# Labelled rows up to which tune trains k folds (``--kfold auto``): the size where trials see
# every row on a CPU (pipeline.tune.budget: 1.25 x 12,000), so no final fit follows.
KFOLD_MAX_ROWS = 15_000
MAX_EPOCHS = 50  # a fold's network trains at most this many epochs, however much time is left
# ... and at least this many (or its trial's, when fewer): else no k-fold (pipeline.tune.budget
# .folds_fit decides before the search, by_kfold again after it)
MIN_FOLD_EPOCHS = 8
PREDICT_MARGIN_S = 10.0  # kept after the last fold for predicting and writing


def all_rows(holdout_split):
    """Every labelled row of the run (the holdout split's two parts together)."""
    x_tr, y_tr, x_ho, y_ho = holdout_split
    return np.concatenate([x_tr, x_ho]), np.concatenate([y_tr, y_ho])


def epoch_seconds(record: TrialRecord, n_trial: int, n_rows: int) -> float:
    """A fold's epoch (or fit) time, scaled from the trial's by the rows."""
    from pipeline.classical import fit_seconds
    from pipeline.models import get_entry

    m = record.metrics
    if get_entry(record.model).classical:
        return fit_seconds(record.model, (m.seconds, n_trial), n_rows, 0)
    return m.seconds / max(m.epochs_run, 1) * n_rows / max(n_trial, 1)


def train_fold(record: TrialRecord, ds, data, epochs: int, deadline: float, flip: bool,
               seed: int):  # fmt: skip
    """(model, epochs run) of one fold: a classical fit, or a network for ``epochs`` on a
    cosine schedule (cut short only where ``deadline``, the stage's own, comes first)."""
    from pipeline.models import build_model, get_entry

    if get_entry(record.model).classical:
        from pipeline.classical import fit_classical

        est = build_model(record.model, ds.image_shape, ds.num_classes, **record.hp)
        return fit_classical(est, data, ds.num_classes, seed).model, 1
    from pipeline.device import fresh_session
    from pipeline.training import fit, with_flip

    fresh_session()
    settings = record.settings.replace(
        epochs=epochs, schedule="cosine", reduce_lr=False, seed=seed,
        augment=with_flip(record.settings.augment, flip),
        warmup_epochs=min(1.0, record.settings.warmup_epochs or 0.0),
    )  # fmt: skip
    model = build_model(record.model, ds.image_shape, ds.num_classes, **record.hp)
    result = fit(model, settings, data, ds.num_classes, deadline=deadline, verbose=0,
                 keep_best=False)  # fmt: skip
    return result.model, result.metrics.epochs_run


def folds_that_fit(record: TrialRecord, n_trial: int, y, least: int, seconds: float, k: int):
    """(folds, seconds per epoch of a fold, seconds per fold): the most folds, ``k`` down to 2,
    whose folds can each train ``least`` epochs in ``seconds`` (fewer folds train on fewer rows
    and get more time each); folds 0 when none can. In the suite a 6,000-row competition
    could not hold 5 folds of 8 epochs in its 135 s and left them idle, where 3 would fit."""
    k = min(k, int(np.bincount(y).min()))
    per_epoch, share = 0.0, 0.0
    for folds in range(k, 1, -1):
        per_epoch = epoch_seconds(record, n_trial, len(y) * (folds - 1) // folds)
        share = seconds / folds
        if share >= least * per_epoch:
            return folds, per_epoch, share
    return 0, per_epoch, share


def by_kfold(ctx, d, k: int):
    """The chosen configuration trained on k folds of every labelled row; a Submitted, or None
    when the time left cannot hold an epoch per fold."""
    from sklearn.model_selection import StratifiedKFold

    from pipeline.models import get_entry
    from pipeline.predict import view_probas, views
    from pipeline.tune.decide import test_mirror
    from pipeline.tune.final import Submitted

    best = d.trials[0]
    record = read_trial(best)
    x, y = all_rows(ctx.splits.holdout)
    least = 1 if get_entry(record.model).classical else max(record.metrics.epochs_run, 1)
    least = min(least, MIN_FOLD_EPOCHS)
    least = min(least, ctx.opts.final_max_epochs or least)
    k, per_epoch, share = folds_that_fit(record, len(ctx.splits.search[1]), y, least,
                                         ctx.budget.left() - PREDICT_MARGIN_S, k)  # fmt: skip
    if k < 2:
        log(f"final: no k-fold training: even 2 folds need ~{least * per_epoch:.0f} s each "
            f"({least} epochs), {share:.0f} s each are left")  # fmt: skip
        return None
    # as many epochs as a fold's share holds at the trial's measured pace (a fit's first epoch,
    # tracing included, is no guide), at least the trial's own
    cap = ctx.opts.final_max_epochs or MAX_EPOCHS
    epochs = min(cap, max(least, int(share / per_epoch)))
    classical = get_entry(record.model).classical
    flip = d.flip.invariant and not classical  # a network's folds train with the mirror
    mirror = test_mirror(d.flip, trained_with_mirror=flip)
    which = views(ctx.opts.tta, mirror[0])
    log(f"final: training trial {best.number}'s configuration ({record.model}) on {k} folds of "
        f"all {len(y)} labelled rows, ~{(ctx.budget.left() - PREDICT_MARGIN_S) / k:.0f} s each; "
        f"{'' if classical else f'{epochs} epochs, '}the estimate is out-of-fold")  # fmt: skip
    oof = np.zeros((len(y), ctx.ds.num_classes))
    test = np.zeros((len(ctx.ds.x_test), ctx.ds.num_classes))
    accs, ran, t0 = [], [], time.monotonic()
    folds = StratifiedKFold(k, shuffle=True, random_state=ctx.opts.seed).split(x, y)
    end = ctx.budget.deadline - PREDICT_MARGIN_S
    for i, (tr, va) in enumerate(folds):
        model, n = train_fold(record, ctx.ds, (x[tr], y[tr], x[va], y[va]), epochs, end, flip,
                              ctx.opts.seed + i)  # fmt: skip
        oof[va] = np.mean(view_probas(model, x[va], which), axis=0)
        test += np.mean(view_probas(model, ctx.ds.x_test, which), axis=0) / k
        accs.append(round(float((oof[va].argmax(1) == y[va]).mean()), 4))
        ran.append(n)
        log(f"final: fold {i + 1}/{k}: {n} epochs, out-of-fold accuracy {accs[-1]:.4f}")
    acc = float((oof.argmax(1) == y).mean())
    np.save(ctx.tune_dir / "kfold_oof.npy", oof.astype(np.float32))
    folds_record = FoldsRecord(k, best.number, record.model, len(y), round(acc, 4), accs, ran,
                               round(time.monotonic() - t0, 1))  # fmt: skip
    estimate = Estimate.of(acc, len(y), "out-of-fold")
    return Submitted(test.astype(np.float32), [best], estimate, None, mirror=mirror,
                     folds=folds_record)  # fmt: skip
