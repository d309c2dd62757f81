"""Importing the package has no side effects: no TensorFlow, no kaggle (which authenticates)."""

import os
import subprocess
import sys

from conftest import ROOT


def test_import_pipeline_loads_neither_tensorflow_nor_kaggle():
    code = (
        "import pkgutil, importlib, sys, pipeline\n"
        "for m in pkgutil.walk_packages(pipeline.__path__, 'pipeline.'):\n"
        "    if m.name != 'pipeline.__main__':\n"
        "        importlib.import_module(m.name)\n"
        "bad = [m for m in ('tensorflow', 'keras', 'kaggle') if m in sys.modules]\n"
        "print(bad)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
