"""The final fit as several members (``--final-members N``): the final fit's time split evenly
among N models of the chosen configuration, trained one after another on the whole training
split, each with its own seed (data order, augmentation) and its own cosine to its share's end.
Their probabilities are averaged; the holdout, which chose nothing, scores the average.

A benchmark's knob, PIPELINE_MEMBER_ROWS=all, trains the members after the first on every
labelled row (the training split and the holdout): what is submitted then puts the holdout's
labels to work, and the estimate rests on the members that never saw it (the first), as the
log says.

Each member checkpoints as the single fit does; a finished member leaves its record and test
probabilities under the final checkpoint (``members/``), so an interrupted run resumes at the
member it stopped in and does not train a finished one again.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from pipeline.records import FinalFitRecord, load_json, save_json
from pipeline.tune import log
from pipeline.tune.budget import Budget

MEMBERS = "members"  # under the final checkpoint: each finished member's record and probabilities


def member_budget(budget: Budget, remaining: int, now: float | None = None) -> Budget:
    """The budget of the next of ``remaining`` members: an even share of what is left (the
    last member ends when the budget does)."""
    now = time.monotonic() if now is None else now
    share = max(budget.deadline - now, 0.0) / max(remaining, 1)
    return Budget(budget.started, now + share, budget.search_deadline)


def fit_members(ctx, job, mirror: bool) -> list[tuple[FinalFitRecord, np.ndarray]]:
    """(record, test probabilities) of each member that trained (finished ones read back from
    the checkpoint), in order; the members that no longer fit are left out (logged). ``ctx``:
    the final stage's FinalContext; ``job``: the first member's FinalFitJob."""
    from pipeline.tune.refit import final_fit

    done = []
    for k in range(job.members):
        member = dataclasses.replace(job, member=k, seed=job.seed + k)
        saved = read_member(ctx.tune_dir, k)
        if saved is not None:
            log(f"final: member {k + 1} of {job.members} finished before ({saved[0].model_path})")
            done.append(saved)
            continue
        share = member_budget(ctx.budget, job.members - k)
        log(f"final: member {k + 1} of {job.members}: ~{share.left():.0f} s of "
            f"{ctx.budget.left():.0f} s left")  # fmt: skip
        out = final_fit(member, ctx.ds, member_split(ctx.splits.holdout, k), share, ctx.store,
                        ctx.study)  # fmt: skip
        if out is None:
            log(f"final: {len(done)} of {job.members} members trained: the rest do not fit")
            break
        fitted, probs = predict_test(ctx, out, mirror)
        save_member(ctx.tune_dir, k, fitted, probs)
        done.append((fitted, probs))
    return done


def member_split(split, k: int):
    """The rows member ``k`` trains on and is scored on: the training split and the holdout;
    with PIPELINE_MEMBER_ROWS=all, members after the first train on the holdout's rows too
    (their holdout score is then not an estimate: combine leaves them out of it)."""
    import os

    how = os.environ.get("PIPELINE_MEMBER_ROWS", "train")
    if how not in ("train", "all"):
        from pipeline.errors import PipelineError

        raise PipelineError(f"PIPELINE_MEMBER_ROWS={how!r}: write train (the default) or all")
    x_tr, y_tr, x_va, y_va = split
    if how == "train" or k == 0:
        return split
    log(f"final: member {k + 1} trains on every labelled row ({len(y_tr)} training and "
        f"{len(y_va)} holdout rows: PIPELINE_MEMBER_ROWS=all); its holdout score is not an "
        "estimate")  # fmt: skip
    return np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va]), x_va, y_va


def predict_test(ctx, out: tuple, mirror: bool) -> tuple[FinalFitRecord, np.ndarray]:
    """(record with the prediction's seconds added, the test probabilities) of a final fit's
    (model, record) ``out``."""
    from pipeline.predict import predict_proba

    model, fitted = out
    t0 = time.monotonic()
    probs = predict_proba(model, ctx.ds.x_test, tta=ctx.opts.tta, flip=mirror)
    used = round((fitted.predict_used_s or 0) + time.monotonic() - t0, 1)
    return dataclasses.replace(fitted, predict_used_s=used), probs


def combine(members: list[tuple[FinalFitRecord, np.ndarray]], y_holdout: np.ndarray):
    """(test probabilities, record): the members' probabilities averaged, the average scored
    on the holdout; the record is the first member's with every member's figures beside it."""
    from pipeline.tune.refit import holdout_probs_path

    records = [r for r, _ in members]
    scored = [r for r in records if r.train_rows == records[0].train_rows]  # not on the holdout
    holdout = np.mean([np.load(holdout_probs_path(r.model_path)) for r in scored], axis=0)
    accuracy = float((holdout.argmax(1) == y_holdout).mean())
    if len(scored) < len(records):
        log(f"final: {len(records)} members averaged; the holdout scores the {len(scored)} "
            f"that never trained on it: {accuracy:.4f} (not the average submitted)")  # fmt: skip
    elif len(records) > 1:
        log(f"final: {len(records)} members averaged: holdout accuracy {accuracy:.4f} "
            f"(each alone: {', '.join(f'{r.holdout_accuracy:.4f}' for r in records)})")  # fmt: skip
    record = dataclasses.replace(
        records[0], holdout_accuracy=accuracy,
        seconds=round(sum(r.seconds for r in records), 1),
        predict_used_s=round(sum(r.predict_used_s or 0 for r in records), 1),
        member_seeds=[r.settings.seed for r in records],
        member_epochs=[r.epochs_run for r in records],
        member_seconds=[r.seconds for r in records],
        member_holdout_accuracies=[r.holdout_accuracy for r in records],
        member_model_paths=[r.model_path for r in records],
        member_train_rows=[r.train_rows for r in records],
    )  # fmt: skip
    return np.mean([p for _, p in members], axis=0), record


def members_dir(tune_dir: Path) -> Path:
    from pipeline.tune.final import CHECKPOINT

    return Path(tune_dir) / CHECKPOINT / MEMBERS


def save_member(tune_dir: Path, k: int, record: FinalFitRecord, probs: np.ndarray) -> None:
    """Member ``k``'s record and test probabilities, probabilities first: a record is only
    there when its probabilities are."""
    from pipeline.fsutil import atomic_path

    folder = members_dir(tune_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / f"{k}.test.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, probs)
    save_json(folder / f"{k}.json", record)


def read_member(tune_dir: Path, k: int) -> tuple[FinalFitRecord, np.ndarray] | None:
    """Member ``k``'s (record, test probabilities) when it finished in this final fit (and its
    model's holdout probabilities are still there), else None."""
    from pipeline.tune.refit import holdout_probs_path

    folder = members_dir(tune_dir)
    try:
        record = load_json(FinalFitRecord, folder / f"{k}.json")
        probs = np.load(folder / f"{k}.test.npy")
    except (OSError, ValueError, TypeError):
        return None
    return (record, probs) if holdout_probs_path(record.model_path).is_file() else None
