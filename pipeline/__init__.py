"""Kaggle pipeline for image-classification competitions whose data is CSV pixel rows.

Stages (data flows one way, each hands over through files in ``artifacts/``):
``data`` (competition files -> arrays) -> ``models``/``training`` (arrays -> model)
-> ``predict`` (model -> probabilities) -> ``submission`` (-> CSV) -> ``kaggle_api`` (upload).

Importing this package has no side effects: TensorFlow and ``kaggle`` are imported lazily.
"""

__version__ = "0.1.0"
