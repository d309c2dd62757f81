"""Importing the package has no side effects: no TensorFlow, no kaggle (which authenticates);
no modules import each other in a circle, counting the imports inside functions.

The one module that imports Keras by design, ``pipeline.callbacks``, is imported only inside the
functions that train, never at the top of a module; and a tune's main process trains nothing
itself: it never loads TensorFlow (the worker process measures, trains and predicts)."""

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
    ("pipeline/tune/fit.py", "train_network"),
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


def _module_graph() -> dict[str, set[str]]:
    """Every pipeline module -> the pipeline modules it imports, at the top or in a function
    (``from pipeline.x import y`` counts as importing ``pipeline.x.y`` where that is a module,
    else ``pipeline.x``)."""
    names = {}
    for path in (ROOT / "pipeline").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def module_of(name: str) -> str | None:
        parts = name.split(".")
        return next((".".join(parts[:i]) for i in range(len(parts), 0, -1)
                     if ".".join(parts[:i]) in names), None)  # fmt: skip

    graph = {m: set() for m in names}
    for m, path in names.items():
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.Import):
                targets = [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom) and n.module and not n.level:
                targets = [f"{n.module}.{a.name}" for a in n.names]
            else:
                continue
            graph[m] |= {t for t in map(module_of, targets) if t and t != m}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on.discard(component[-1])
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_modules_import_each_other_in_a_circle():
    graph = _module_graph()
    assert "pipeline.tune.final" in graph["pipeline.tune.command"]  # the graph sees imports
    assert "pipeline.device" in graph["pipeline.models.registry"]  # ... inside functions too
    assert _cycles(graph) == []
    # the check finds a circle where there is one
    graph["pipeline.tune.cost"].add("pipeline.tune.command")
    assert any("pipeline.tune.cost" in c for c in _cycles(graph))


@pytest.mark.slow
def test_the_tune_main_process_never_loads_tensorflow(demo_small, tmp_path):
    """The worker process measures the machine, trains the trials and the final fit and makes
    every prediction; the main process runs the study and the decisions only (its memory stays
    that of pandas and Optuna)."""
    code = (
        "import sys\n"
        "from pipeline import cli\n"
        "code = cli.main(sys.argv[1:])\n"
        "print('tensorflow loaded:', 'tensorflow' in sys.modules, 'exit', code)\n"
    )
    args = ["tune", "--data", str(demo_small), "--artifacts", str(tmp_path / "art"),
            "--submissions", str(tmp_path / "subs"), "--models", "lenet5_wide", "--limit", "1000",
            "--trials", "1", "--max-epochs", "1", "--search-rows", "300", "--final", "fit",
            "--final-max-epochs", "2", "--no-report"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "tune: trial   0 lenet5_wide" in proc.stdout  # the trial trained, in the worker
    assert "final: epoch 2 val_accuracy" in proc.stdout  # and the final fit
    assert "tensorflow loaded: False exit 0" in proc.stdout
