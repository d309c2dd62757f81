"""The model zoo: ``build_model(name, input_shape, num_classes, **hp)``, ``list_models()``.

Importing the package registers every family's entries (none of them imports TensorFlow).
"""

from pipeline.models import (  # noqa: F401 - importing a family registers its entries
    alexnet,
    cifar,
    classical,
    cnn,
    fast,
    inception,
    lenet,
    mlp,
    resnet,
    vgg,
)
from pipeline.models.registry import (
    Entry,
    Recipe,
    build_model,
    count_activations,
    count_macs,
    count_params,
    get_entry,
    list_models,
    model_suffix,
    register,
    trial_file,
)

__all__ = [
    "Entry",
    "Recipe",
    "build_model",
    "count_activations",
    "count_macs",
    "count_params",
    "get_entry",
    "list_models",
    "model_suffix",
    "register",
    "trial_file",
]
