"""The model zoo: ``build_model(name, input_shape, num_classes, **hp)``, ``list_models()``."""

from pipeline.models.registry import (
    Entry,
    Recipe,
    build_model,
    count_macs,
    count_params,
    get_entry,
    list_models,
    register,
)

__all__ = [
    "Entry",
    "Recipe",
    "build_model",
    "count_macs",
    "count_params",
    "get_entry",
    "list_models",
    "register",
]
