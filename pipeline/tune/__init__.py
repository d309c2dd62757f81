"""``tune``: Optuna search over the zoo within a time budget, then the final stage submits.

Modules in layers, each importing only those above it in this list:

- :mod:`~pipeline.tune.cost`: the budget's clock and the cost model (the machine, measured);
  :mod:`~pipeline.tune.plan`: every decision before the first trial, from the cost model.
- :mod:`~pipeline.tune.trials`: the study's trials and their files (the storage itself:
  :mod:`pipeline.storage`; the run's rows: :func:`pipeline.data.split.run_splits`; where
  TensorFlow works, a worker process or this one: :mod:`pipeline.worker`).
- :mod:`~pipeline.tune.objective` (one trial), :mod:`~pipeline.tune.study`,
  :mod:`~pipeline.tune.search` (the trial loop).
- :mod:`~pipeline.tune.flip`, :mod:`~pipeline.tune.decide`: the final stage's decisions, on
  the trials' validation rows.
- :mod:`~pipeline.tune.fit`: the one fit every final-stage training goes through.
- :mod:`~pipeline.tune.modes`, :mod:`~pipeline.tune.kfold`: what the final stage submits.
- :mod:`~pipeline.tune.final`: the final stage; :mod:`~pipeline.tune.command`: the command.
"""


def log(msg: str) -> None:
    """One progress line of the tune command."""
    print(f"tune: {msg}", flush=True)
