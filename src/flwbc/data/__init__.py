"""Datasets for the simulator: locate or download official files, read them, split them."""

from flwbc.data.datasets import (
    DATASETS,
    Dataset,
    DatasetEntry,
    get_dataset,
    load_dataset,
    register_dataset,
)
from flwbc.data.partition import (
    PARTITIONS,
    partition,
    partition_dirichlet,
    partition_iid,
    partition_shards,
    register_partition,
)
from flwbc.data.readers import read_cifar_batch, read_idx
from flwbc.data.sources import (
    SPECS,
    ChecksumWarning,
    canonical_name,
    download_file,
    resolve_dataset_dir,
)

DATASET_NAMES: tuple[str, ...] = tuple(SPECS)
"""The built-in datasets with official files (`flwbc fetch` gets them)."""

__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "DatasetEntry",
    "get_dataset",
    "register_dataset",
    "PARTITIONS",
    "register_partition",
    "ChecksumWarning",
    "Dataset",
    "canonical_name",
    "download_file",
    "load_dataset",
    "partition",
    "partition_dirichlet",
    "partition_iid",
    "partition_shards",
    "read_cifar_batch",
    "read_idx",
    "resolve_dataset_dir",
]
