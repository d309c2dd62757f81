"""Memory: what one fit adds to the process that trains it, the most a training process may
hold, and the batch a prediction affords. Measured by ``bench/memory.py --fits`` (13 fits of 7
entries from 8x8 to 48x48, batch 32-512, each in its own process, peak RSS over the RSS before
building): alexnet (30.0M parameters) 1,089 MiB, vgg16 (33.6M) 1,380 with Adam and 1,206 with
SGD, resnet9s at 28x28 batch 512 484 and at 48x48 batch 256 638, cnn7 at batch 32 128 and 256
285, resnet20 at batch 128 317. :func:`fit_mib` reads 4-35% high on 11 of the 13 and at most 7%
low (cnn7). TensorFlow keeps most of a fit's memory after it, with or without
``keras.backend.clear_session()``, ``gc.collect()`` and glibc's ``malloc_trim(0)`` (-40 MiB of
~1.6 GiB), ``MALLOC_ARENA_MAX=2`` or a fixed mmap threshold (within 90 MiB): only a new process
gives it back (:mod:`pipeline.worker`)."""

from __future__ import annotations

from pathlib import Path

FIT_FIXED_MIB = 70
FIT_BYTES_PER_PARAM = 40  # weights, gradients, optimizer slots, TensorFlow's copies
FIT_BYTES_PER_ACTIVATION = 4  # every layer's float32 output, per image of a batch
# A fit starts in a fresh worker when the one running would pass PROCESS_LIMIT_MIB; a network a
# fresh worker (its data and TensorFlow loaded: 734-890 MiB before the fits above, 940-960 in
# tune's workers on 8x8 and 28x28 data) could not train within it is left out of the default
# search. 2,048 MiB less ~7% (the largest under-estimate).
PROCESS_LIMIT_MIB = 1900
FRESH_WORKER_MIB = 950
# Prediction's batch: PREDICT_BATCH images, halved while a batch's activations would pass
# PREDICT_ACTIVATION_MIB. At 1,024 resnet9s on 48x48 images (746,634 values an image) grew a
# fresh worker by 785 MiB to score 960 images (by 155 MiB at 128), and a worker that had searched
# by 1,233 MiB, to 2,788 MiB (fer48 at 900 s, 29b90cc). The probabilities do not depend on it.
PREDICT_BATCH = 1024
PREDICT_ACTIVATION_MIB = 512


def fit_mib(footprint: tuple[int, int] | None, batch_size: int) -> float:
    """MiB a fit adds to its process: ``footprint`` = (parameters, activations per image) of
    the network (None: unknown, 0)."""
    if footprint is None:
        return 0.0
    params, activations = footprint
    per_batch = FIT_BYTES_PER_ACTIVATION * activations * batch_size
    return FIT_FIXED_MIB + (FIT_BYTES_PER_PARAM * params + per_batch) / 2**20


def too_big_for_fresh_worker(mib: float) -> bool:
    """Whether a fit adding ``mib`` would take a fresh worker past PROCESS_LIMIT_MIB."""
    return FRESH_WORKER_MIB + mib > PROCESS_LIMIT_MIB


def predict_batch(activations: int) -> int:
    """The batch a network of ``activations`` values an image predicts in."""
    batch = PREDICT_BATCH
    while batch > 16 and batch * FIT_BYTES_PER_ACTIVATION * activations / 2**20 > (
        PREDICT_ACTIVATION_MIB
    ):
        batch //= 2
    return batch


def rss_mib(pid: int | str = "self") -> float:
    """A process's resident memory now (VmRSS), MiB; 0 when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    kib = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")), "0")
    return int(kib) / 1024
