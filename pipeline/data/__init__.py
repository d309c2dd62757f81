"""Stage 1: competition files -> arrays.

Finds a competition's train, test and sample-submission files (:mod:`~pipeline.data.files`),
infers its layout with no flags (:mod:`~pipeline.data.layout`), validates every pixel
(:mod:`~pipeline.data.pixels`), returns uint8 images, cached (:mod:`~pipeline.data.dataset`), and
splits them into the stratified holdout (:mod:`~pipeline.data.split`).
"""

from pipeline.data.dataset import Dataset, load, load_competition, parse_competition
from pipeline.data.files import CompetitionFiles, Source, find_files, resolve_data_dir
from pipeline.data.layout import Layout, infer_image_shape
from pipeline.data.split import holdout, holdout_split, search_split

__all__ = [
    "CompetitionFiles",
    "Dataset",
    "Layout",
    "Source",
    "find_files",
    "holdout",
    "holdout_split",
    "infer_image_shape",
    "load",
    "load_competition",
    "parse_competition",
    "resolve_data_dir",
    "search_split",
]
