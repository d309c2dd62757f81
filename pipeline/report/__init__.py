"""Reports: the study's tables and plots for every run and every search (``./run.sh report``).

Reads what ``train`` and ``tune`` left in ``artifacts/<competition>/`` (:mod:`.gather`) and writes
``artifacts/<competition>/report/`` (:mod:`.page`, :mod:`.figures`): ``models.csv``/``models.md``
(one row per run, completed trial or final fit), per entry ``history.csv`` and a six-panel figure,
for the best model a confusion matrix, precision/recall/F1 and its most confident mistakes on the
holdout, for a study Optuna's plots, and ``index.html`` showing it all. Nothing is retrained; the
best model predicts the holdout once.
"""

from pipeline.report.page import build_report, run

__all__ = ["build_report", "run"]
