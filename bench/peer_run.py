"""One peer (an AutoML tool a Kaggle user would run instead) on one competition folder.

Run by bench/peers.py inside the peers' own environment (.venv-peers), one process per peer:

    .venv-peers/bin/python bench/peer_run.py PEER --data DIR --out SUBMISSION.csv --budget S

Every peer gets the same arrays the pipeline reads (``pipeline.data.load_competition``: numpy
and pandas only), counted in its time, and writes a submission in the sample submission's
columns. ``--budget``: the whole command's seconds, loading and predicting included. A peer
with a time limit of its own gets what is left of the budget less PREDICT_MARGIN_S; the Keras
ones stop at a deadline by a callback. Each peer runs as its documentation shows it, with no
pretrained weights (there is no internet).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

T0 = time.monotonic()
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PREDICT_MARGIN_S = 30.0  # kept for predicting the test set and writing the submission
SVC_MAX_ROWS = 10_000  # as bench/suite.py: SVC's fit grows as rows squared


def left(budget: float) -> float:
    return budget - (time.monotonic() - T0)


def flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1).astype(np.float32) / 255.0


def svc(ds, budget: float, work: Path, seed: int) -> tuple[np.ndarray, dict]:
    """``SVC()`` on standardized pixels (the first SVC_MAX_ROWS rows): the floor."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    n = min(len(ds.x_train), SVC_MAX_ROWS)
    est = make_pipeline(StandardScaler(), SVC()).fit(flat(ds.x_train[:n]), ds.y_train[:n])
    return est.predict(flat(ds.x_test)), {"rows": n}


def flaml(ds, budget: float, work: Path, seed: int) -> tuple[np.ndarray, dict]:
    """FLAML's ``AutoML`` with ``time_budget`` (its quick-start), on the pixel columns."""
    from flaml import AutoML

    automl = AutoML()
    automl.fit(flat(ds.x_train), ds.y_train, task="classification", metric="accuracy",
               time_budget=max(10, left(budget) - PREDICT_MARGIN_S), seed=seed, verbose=0,
               log_file_name=str(work / "flaml.log"))  # fmt: skip
    return automl.predict(flat(ds.x_test)), {"model": automl.best_estimator}


def autogluon(ds, budget: float, work: Path, seed: int) -> tuple[np.ndarray, dict]:
    """AutoGluon's ``TabularPredictor`` on the pixel columns, default presets, ``time_limit``."""
    from autogluon.tabular import TabularPredictor

    cols = [f"p{i}" for i in range(flat(ds.x_train[:1]).shape[1])]
    train = pd.DataFrame(flat(ds.x_train), columns=cols).assign(label=ds.y_train)
    predictor = TabularPredictor(label="label", eval_metric="accuracy", path=str(work / "ag"),
                                 verbosity=1)  # fmt: skip
    predictor.fit(train, time_limit=max(10, left(budget) - PREDICT_MARGIN_S))
    pred = predictor.predict(pd.DataFrame(flat(ds.x_test), columns=cols)).to_numpy()
    return pred, {"model": predictor.model_best}


SEARCH = {}  # "tuner": the search a deadline ends (callbacks are deep-copied for each trial)


def deadline_callback(seconds_at: float, end_search: bool = False):
    """A Keras callback that stops training once ``seconds_at`` (from the process start) has
    passed; with ``end_search``, it also ends the search in SEARCH after the trial running (its
    oracle's max_trials set to the trials so far)."""
    import keras

    class Deadline(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if time.monotonic() - T0 > seconds_at:
                self.model.stop_training = True
                if end_search and "tuner" in SEARCH:
                    oracle = SEARCH["tuner"].oracle
                    oracle.max_trials = max(1, len(oracle.trials))

    return Deadline()


def images(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 255.0


def kerastuner(ds, budget: float, work: Path, seed: int) -> tuple[np.ndarray, dict]:
    """KerasTuner's Hyperband over a CNN hypermodel, as in its getting-started guide (conv
    blocks, dense units, dropout, learning rate tuned; 20% validation split), stopped at the
    deadline; the best model found predicts."""
    import keras
    import keras_tuner as kt

    shape, classes = ds.x_train.shape[1:], ds.num_classes

    def build(hp):
        inputs = keras.Input(shape)
        x = inputs
        for i in range(hp.Int("blocks", 1, 3)):
            x = keras.layers.Conv2D(hp.Choice(f"filters_{i}", [32, 64, 128]), 3,
                                    padding="same", activation="relu")(x)  # fmt: skip
            x = keras.layers.MaxPooling2D()(x) if min(x.shape[1:3]) >= 4 else x
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(hp.Int("units", 32, 512, step=32), activation="relu")(x)
        x = keras.layers.Dropout(hp.Float("dropout", 0.0, 0.5, step=0.1))(x)
        model = keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x))
        lr = hp.Float("lr", 1e-4, 1e-2, sampling="log")
        model.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])  # fmt: skip
        return model

    tuner = kt.Hyperband(build, objective="val_accuracy", max_epochs=20, factor=3, seed=seed,
                         directory=str(work / "kt"), overwrite=True)  # fmt: skip
    SEARCH["tuner"] = tuner
    stop = deadline_callback(budget - PREDICT_MARGIN_S, end_search=True)
    tuner.search(images(ds.x_train), ds.y_train, validation_split=0.2, verbose=0,
                 callbacks=[stop, keras.callbacks.EarlyStopping(patience=3)])  # fmt: skip
    model = tuner.get_best_models(1)[0]
    probs = model.predict(images(ds.x_test), batch_size=512, verbose=0)
    return probs.argmax(1), {"trials": len(tuner.oracle.trials)}


def autokeras(ds, budget: float, work: Path, seed: int) -> tuple[np.ndarray, dict]:
    """AutoKeras's ``ImageClassifier`` (its default search), stopped at the deadline: the search
    ends after the trial running at 70% of the time left, the refit of the best at the end."""
    import autokeras as ak

    _mend_autokeras()
    search_end = (time.monotonic() - T0) + 0.7 * (left(budget) - PREDICT_MARGIN_S)
    clf = ak.ImageClassifier(max_trials=100, overwrite=True, directory=str(work / "ak"),
                             seed=seed)  # fmt: skip
    SEARCH["tuner"] = clf.tuner
    stop = deadline_callback(search_end, end_search=True)
    final = deadline_callback(budget - PREDICT_MARGIN_S)
    clf.fit(images(ds.x_train), ds.y_train, verbose=0, callbacks=[stop, final])
    probs = clf.export_model().predict(images(ds.x_test), batch_size=512, verbose=0)
    return np.asarray(probs).argmax(1), {"trials": len(clf.tuner.oracle.trials)}


def _mend_autokeras() -> None:
    """AutoKeras 3.0.0 under Keras 3.15 hands a numpy integer to ``Dense(units=...)``: cast it."""
    import keras

    dense_init = keras.layers.Dense.__init__

    def init(self, units, *args, **kwargs):
        dense_init(self, int(units), *args, **kwargs)

    keras.layers.Dense.__init__ = init


PEERS = {"svc": svc, "flaml": flaml, "autogluon": autogluon, "kerastuner": kerastuner,
         "autokeras": autokeras}  # fmt: skip


def write(ds, comp: Path, pred: np.ndarray, out: Path) -> None:
    """The submission in the sample submission's columns and row order."""
    sample = pd.read_csv(next(comp.glob("sample_submission.csv*")))
    by_id = pd.Series(ds.classes[np.asarray(pred).astype(int)], index=ds.test_ids.astype(str))
    sample.iloc[:, 1] = by_id.loc[sample.iloc[:, 0].astype(str)].to_numpy()
    tmp = out.with_suffix(".tmp")
    sample.to_csv(tmp, index=False)
    tmp.rename(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("peer", choices=sorted(PEERS))
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budget", type=float, required=True)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    from pipeline.data import load_competition

    ds = load_competition(a.data)
    with tempfile.TemporaryDirectory(dir=a.out.parent) as work:
        pred, info = PEERS[a.peer](ds, a.budget, Path(work), a.seed)
    write(ds, a.data, pred, a.out)
    info["inside_s"] = round(time.monotonic() - T0, 1)  # from its own start: imports not counted
    print("PEER " + json.dumps(info, default=str), flush=True)


if __name__ == "__main__":
    main()
