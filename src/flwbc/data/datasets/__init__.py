"""Datasets: the in-memory `Dataset`, the registry, and each built-in dataset as one module of
this package registering itself (its official files and checksums, its reader, its default
model), exactly as a plug-in registers one; this package imports every one of them."""

from flwbc.data.datasets import fmnist, mnist  # noqa: F401  (listed first, in this order)
from flwbc.data.datasets.base import (
    DATASETS,
    Dataset,
    DatasetEntry,
    DatasetLoader,
    dataset_image_shape,
    get_dataset,
    load_dataset,
    register_dataset,
)
from flwbc.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetEntry",
    "DatasetLoader",
    "dataset_image_shape",
    "get_dataset",
    "load_dataset",
    "register_dataset",
]
