"""TensorFlow's device set-up, once per process: CPU threads and oneDNN, or GPU memory growth,
mixed precision and XLA. Nothing to configure: each choice switches itself off where it does not
apply."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

_RUNTIME: dict[str, Any] | None = None
_DEBUG = False


@contextlib.contextmanager
def _stderr_silenced(active: bool) -> Iterator[None]:
    """Send file descriptor 2 to /dev/null (C++ writes there directly, before absl logging is
    set up, whatever TF_CPP_MIN_LOG_LEVEL says); put back afterwards."""
    if not active:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet(debug: bool = False) -> None:
    """Environment and loggers for a quiet console (TensorFlow, absl, oneDNN and CUDA-stub
    messages hidden); ``debug`` shows them. Takes effect for TensorFlow imported afterwards."""
    global _DEBUG
    _DEBUG = debug
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if not debug:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        warnings.filterwarnings("ignore", module="keras")
        warnings.filterwarnings("ignore", module="tensorflow")
        # Python-side TensorFlow warnings (retracing notices and the like)
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        logging.getLogger("absl").setLevel(logging.ERROR)


# --precision: "auto" keeps float32 on a CPU and mixed float16 on a GPU of compute capability
# >= 7.0; "mixed" also trains under mixed bfloat16 on a CPU that multiplies it in hardware (1.2x
# faster epochs of resnet9s on 2 cores, +0.0010 sealed over 3 seeds at 900 s: inside the
# spread, bench/README.md); "float32" everywhere.
PRECISIONS = ("auto", "mixed", "float32")


def cpu_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU multiplies bfloat16 in hardware (AVX-512 BF16 or AMX-BF16, read from
    the flags of ``cpuinfo``; False where that file is absent)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def cpu_policy(precision: str) -> str:
    """The Keras dtype policy on a CPU: ``mixed_bfloat16`` for ``--precision mixed`` where the
    CPU has bfloat16 in hardware (oneDNN's bf16 kernels; elsewhere bf16 is emulated and
    slower), else ``float32``."""
    return "mixed_bfloat16" if precision == "mixed" and cpu_bf16() else "float32"


def gpu_policy(precision: str, capability) -> str:
    """The Keras dtype policy on a GPU: mixed float16 unless ``--precision float32``, where the
    GPU has tensor cores (compute capability >= 7.0)."""
    fast = capability is not None and tuple(capability) >= (7, 0)
    return "mixed_float16" if precision != "float32" and fast else "float32"


def configure_runtime(precision: str = "auto") -> dict[str, Any]:
    """Set up TensorFlow once per process; returns what was chosen.

    CPU: oneDNN kernels on (cnn7 trains 2.05x faster at batch 32 and 256 alike, measured one
    factor at a time by bench/train_speed.py; set before TensorFlow is imported), all
    cores for intra-op work, no XLA (2x slower on CPU). GPU: memory growth, mixed precision on
    GPUs with compute capability >= 7.0 (:func:`gpu_policy`), XLA on. ``precision``
    (``--precision``) counts at the first call only: the set-up is the process's.
    """
    global _RUNTIME
    if _RUNTIME is not None:
        return _RUNTIME
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    with _stderr_silenced(not _DEBUG and "tensorflow" not in sys.modules):
        import keras
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
    if not _DEBUG:
        tf.get_logger().setLevel(logging.ERROR)
    info: dict[str, Any] = {"device": "GPU" if gpus else "CPU", "gpus": len(gpus)}
    if gpus:
        for gpu in gpus:
            # RuntimeError: already initialised, growth can no longer be changed
            with contextlib.suppress(RuntimeError):
                tf.config.experimental.set_memory_growth(gpu, True)
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
        policy = gpu_policy(precision, capability)
        info.update(jit_compile=True)
    else:
        cores = os.cpu_count() or 1
        with contextlib.suppress(RuntimeError):
            tf.config.threading.set_intra_op_parallelism_threads(cores)
            tf.config.threading.set_inter_op_parallelism_threads(min(2, cores))
        policy = cpu_policy(precision)
        info.update(jit_compile=False, threads=cores)
    if policy != "float32":
        keras.mixed_precision.set_global_policy(policy)
    info.update(policy=policy, mixed_precision=policy != "float32")
    info["onednn"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1"
    _RUNTIME = info
    return info


def describe(info: dict[str, Any]) -> str:
    """One line for the log: where training runs and in which precision."""
    if info["device"] == "GPU":
        xla = "XLA on" if info.get("jit_compile") else "XLA off"
        return f"device: {info['gpus']} GPU(s), {info['policy']}, {xla}"
    onednn = "oneDNN on" if info.get("onednn") else "oneDNN off"
    return f"device: CPU, {info.get('threads')} threads, {onednn}, {info['policy']}"


def fresh_session() -> None:
    """``keras.backend.clear_session()`` (frees the models and graphs of the last trial), then
    the dtype policy again: Keras 3 resets the global policy with the session, which would
    silently turn mixed precision off on a GPU after the first trial."""
    import gc

    configure_runtime()  # TensorFlow imported quietly, once
    import keras

    keras.backend.clear_session()
    gc.collect()
    policy = (_RUNTIME or {}).get("policy")
    if policy and keras.mixed_precision.global_policy().name != policy:
        keras.mixed_precision.set_global_policy(policy)
