"""Classical entries: scikit-learn estimators on the flattened pixels, first-class in the zoo.

A builder is ``(input_shape, num_classes, **hp) -> estimator``: unfitted, with
``predict_proba``, no Optuna. They are searched, scored on the same validation rows, kept and
averaged into ensembles like the networks (:mod:`pipeline.classical` fits and predicts them).
Why they are here: on a 1,437-row competition of 8x8 digits scikit-learn's ``SVC()`` scored
0.994 on the test labels in a second, where the networks' search submitted 0.917.

Each entry carries how its fit time grows with the rows (``COST_EXPONENT``): the search measures
one small fit on this machine and refuses a fit the budget cannot hold (an SVC on 48,000 rows).
"""

from __future__ import annotations

from pipeline.models.registry import Recipe, register

# Fit seconds grow as rows ** exponent (measured on the demo, 1,000 -> 3,000 rows, 2 cores:
# SVC with probabilities 0.7 -> 6.0 s (~n^2), logistic regression 4.3 -> 8.2 s at a fixed
# iteration cap (~n), extra trees ~n log n).
COST_EXPONENT = {"logreg": 1.0, "svc": 2.0, "extra_trees": 1.2}
# A classical entry is fit once: no optimizer, batches or epochs (``epochs=1`` keeps the records'
# shape). The learning rate is 0 so no schedule reads it.
FIT_ONCE = Recipe("none", 0.0, batch_size=0, epochs=1, note="scikit-learn: one fit, no epochs")
_STUDY = dict(family="classical", source="sklearn", study_shape=(8, 8, 1), study_classes=10,
              recipe=FIT_ONCE, kind="classical")  # fmt: skip


@register("logreg", defaults=dict(C=1.0), **_STUDY)
def logreg(input_shape, num_classes, *, C):
    """Logistic regression on standardized pixels (L2, lbfgs, at most 300 iterations)"""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=300))


@register("svc", defaults=dict(C=1.0), **_STUDY)
def svc(input_shape, num_classes, *, C):
    """RBF support-vector classifier on standardized pixels (Platt probabilities)"""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return make_pipeline(StandardScaler(), SVC(C=C, gamma="scale", probability=True))


@register("extra_trees", defaults=dict(min_samples_leaf=1), **_STUDY)
def extra_trees(input_shape, num_classes, *, min_samples_leaf):
    """Extremely randomized trees (200, all cores) on the pixels"""
    from sklearn.ensemble import ExtraTreesClassifier

    return ExtraTreesClassifier(n_estimators=200, min_samples_leaf=min_samples_leaf, n_jobs=-1)
