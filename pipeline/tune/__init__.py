"""``tune``: Optuna search over the zoo within a time budget, then the best model(s) predict.

One module per job; a run goes ``command`` -> ``budget`` (plan, cost) -> ``study`` -> ``search``
(-> ``objective`` per trial) -> ``final`` (-> ``refit``) -> submission.

- :mod:`~pipeline.tune.command`: the CLI's entry: wiring and the opening line.
- :mod:`~pipeline.tune.budget`: the clock, the cost model, and the typed plan (fidelity).
- :mod:`~pipeline.tune.study`: storage, sampler, pruner, resume, the creation race.
- :mod:`~pipeline.tune.search`: the trial loop, progress lines, stop rules, the trials table.
- :mod:`~pipeline.tune.objective`: one trial.
- :mod:`~pipeline.tune.final`: choosing and writing what is submitted.
- :mod:`~pipeline.tune.refit`: the final fit and ``--refit``.
"""


def log(msg: str) -> None:
    """One progress line of the tune command."""
    print(f"tune: {msg}", flush=True)
