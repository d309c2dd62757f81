"""``models``: the zoo with parameter counts (at a given or each study's shape) and recipes."""

from __future__ import annotations

import json
from typing import Any

from pipeline.device import fresh_session
from pipeline.options import ModelsOptions


def models_table(opts: ModelsOptions) -> list[dict[str, Any]]:
    """Every registry entry with its parameter counts at the given (or its own study) shape."""

    from pipeline.models import build_model, count_params, get_entry, list_models

    rows = []
    for name in list_models():
        e = get_entry(name)
        shape = tuple(opts.input_shape) if opts.input_shape else e.study_shape
        k = opts.classes or e.study_classes
        if e.classical:  # its size is known once fitted
            trainable = total = None
        else:
            fresh_session()
            trainable, total = count_params(build_model(name, shape, k))
        rows.append(
            {
                "name": name,
                "family": e.family,
                "source": e.source,
                "input_shape": list(shape),
                "classes": k,
                "params": total,
                "trainable_params": trainable,
                "study_shape": list(e.study_shape),
                "designed_for": list(e.resize_to) if e.resize_to else None,
                "recipe": e.recipe.to_dict(),
                "hyperparameters": e.defaults,
                "description": e.description,
            }
        )
    return rows


def run(opts: ModelsOptions) -> int:
    from pipeline.device import configure_runtime

    configure_runtime()
    rows = models_table(opts)
    if opts.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    head = f"{'name':<16}{'family':<10}{'study':<8}{'shape':<11}{'K':>3}{'params':>13}"
    print(head + f"{'trainable':>13}  recipe")
    for r in rows:
        rc = r["recipe"]
        recipe = f"{rc['optimizer']}({rc['learning_rate']:g}) batch {rc['batch_size']}, "
        recipe += f"{rc['epochs']} epochs" + (", ReduceLROnPlateau" if rc["reduce_lr"] else "")
        if r["family"] == "classical":
            recipe = f"{r['description']}; searched: {', '.join(r['hyperparameters'])}"
        shape = "x".join(map(str, r["input_shape"]))
        sizes = (f"{r['params']:>13,}{r['trainable_params']:>13,}" if r["params"] is not None
                 else f"{'(fitted)':>13}{'':>13}")  # fmt: skip
        print(
            f"{r['name']:<16}{r['family']:<10}{r['source']:<8}{shape:<11}{r['classes']:>3}"
            f"{sizes}  {recipe}"
        )
    return 0
