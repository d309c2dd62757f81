#!/usr/bin/env bash
# The project's only entry point. First use: creates .venv/ and installs requirements.txt (again
# whenever that file changes). Inside a Kaggle kernel it uses the kernel's own Python and packages.
#   ./run.sh test [pytest args]   run the test suite
#   ./run.sh COMMAND [options]    python -m pipeline COMMAND (see README or ./run.sh --help)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [ -n "${KAGGLE_KERNEL_RUN_TYPE:-}" ]; then
    py="$(command -v python3 || command -v python)"
else
    venv="$here/.venv"
    py="$venv/bin/python"
    if [ ! -x "$py" ]; then
        base="$(command -v python3.11 || command -v python3)"
        echo "run.sh: creating $venv with $("$base" --version 2>&1)" >&2
        "$base" -m venv "$venv"
    fi
    want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
    stamp="$venv/.requirements.sha256"
    if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
        echo "run.sh: installing requirements.txt into .venv (first run: a few minutes)" >&2
        "$py" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
        echo "$want" >"$stamp"
    fi
fi

export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
# oneDNN kernels: cnn7 trains 2.05x faster with them on 2 CPU cores (bench/train_speed.py);
# harmless on GPU
export TF_ENABLE_ONEDNN_OPTS="${TF_ENABLE_ONEDNN_OPTS:-1}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

if [ "${1:-}" = "test" ]; then
    shift
    cd "$here"
    exec "$py" -m pytest "$@"
fi
exec "$py" -m pipeline "$@"
