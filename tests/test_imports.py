"""Importing the package has no side effects: no TensorFlow, no kaggle (which authenticates).

The one module that imports Keras by design, ``pipeline.callbacks``, is imported only inside the
functions that train, never at the top of a module; and a tune's main process trains nothing
itself: it does not load TensorFlow before the final stage."""

import ast
import os
import subprocess
import sys

import pytest
from conftest import ROOT

# modules that import Keras when imported, and the functions allowed to import them
KERAS_MODULES = {"pipeline.callbacks"}
TRAINING_FUNCTIONS = {
    ("pipeline/training.py", "fit"),
    ("pipeline/training.py", "_callbacks"),
    ("pipeline/tune/objective.py", "train_trial"),
    ("pipeline/tune/refit.py", "train_final"),
}


def test_import_pipeline_loads_neither_tensorflow_nor_kaggle():
    code = (
        "import pkgutil, importlib, sys, pipeline\n"
        f"skip = {sorted(KERAS_MODULES)!r} + ['pipeline.__main__']\n"
        "for m in pkgutil.walk_packages(pipeline.__path__, 'pipeline.'):\n"
        "    if m.name not in skip:\n"
        "        importlib.import_module(m.name)\n"
        "bad = [m for m in ('tensorflow', 'keras', 'kaggle') if m in sys.modules]\n"
        "print(bad)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def _imports_of(node) -> set[str]:
    names = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            names |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module:
            names |= {n.module} | {f"{n.module}.{a.name}" for a in n.names}
    return names


def test_keras_modules_are_imported_only_where_training_happens():
    at_top, inside = [], set()
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        if _imports_of(ast.Module(body=top, type_ignores=[])) & KERAS_MODULES:
            at_top.append(rel)
        for n in ast.walk(tree):
            if isinstance(n, ast.FunctionDef) and _imports_of(n) & KERAS_MODULES:
                inside.add((rel, n.name))
    assert at_top == []
    assert inside == TRAINING_FUNCTIONS


@pytest.mark.slow
def test_the_tune_main_process_loads_no_tensorflow_for_the_search(demo_small, tmp_path):
    """With trials in the worker process, the worker measures the machine and trains; the main
    process runs the study only (its memory stays that of pandas and Optuna)."""
    code = (
        "import sys\n"
        "from pipeline import cli\n"
        "code = cli.main(sys.argv[1:])\n"
        "print('tensorflow loaded:', 'tensorflow' in sys.modules, 'exit', code)\n"
    )
    args = ["tune", "--data", str(demo_small), "--artifacts", str(tmp_path / "art"),
            "--models", "lenet5_wide", "--limit", "600", "--trials", "1", "--max-epochs", "1",
            "--search-only", "--no-report"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "tune: trial   0 lenet5_wide" in proc.stdout  # the trial trained, in the worker
    assert "tensorflow loaded: False exit 0" in proc.stdout
