"""The run's two splits, built in one place from the options and the trials' rows by every
process of a run.

- ``holdout``: the stratified 80/20 split of the labelled rows (``--seed``, ``--limit``). Its 20%
  scores what is submitted and chooses nothing.
- ``search``: the trials' own training and validation rows, carved out of the holdout split's
  training part (a slice of ``search_rows`` rows where the plan says so). Every choice of the run
  (trials, the ensemble, the mirror) is made on these validation rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.data import Dataset
from pipeline.data.split import Split


@dataclass(frozen=True)
class RunSplits:
    holdout: Split  # (x_train, y_train, x_holdout, y_holdout)
    search: Split  # (x_train, y_train, x_validation, y_validation), inside holdout's training part


def run_splits(ds: Dataset, opts, search_rows: int | None) -> RunSplits:
    """The splits of a tune run with these options (``seed``, ``limit``) and trials' rows."""
    from pipeline.data import holdout, search_split

    split = holdout(ds, opts.seed, opts.limit)
    return RunSplits(split, search_split(split, search_rows, opts.seed))
