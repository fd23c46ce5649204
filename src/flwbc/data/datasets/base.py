"""In-memory datasets: uint8 image tensors plus the normalisation the models expect, and the
dataset registry (each built-in dataset is one module of this package, registering itself as
a plug-in's would)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flwbc.data.sources import DatasetSpec, get_spec, resolve_dataset_dir
from flwbc.errors import FlwbcError
from flwbc.registry import Registry


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset held as uint8 images [N,C,H,W] and int64 labels; normalise on the fly.

    Images stay uint8 (4x smaller than float32) so a whole dataset fits on an accelerator and a
    batch is normalised only when used. The tensors are shared by every load in a process: do not
    modify them in place.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    def normalize(self, x: Tensor) -> Tensor:
        """Map uint8 images [..., C, H, W] to float32 ((x / 255) - mean) / std, on x's device."""
        channels = len(self.mean)
        if x.dim() < 3 or x.shape[-3] != channels:
            raise FlwbcError(
                f"cannot normalise a tensor of shape {tuple(x.shape)} for {self.name}: "
                f"expected [..., {channels}, H, W]"
            )
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
        return (x.to(torch.float32) / 255.0).sub_(mean).div_(std)


def _validate(spec: DatasetSpec, directory: Path, arrays: tuple[np.ndarray, ...]) -> None:
    train_x, train_y, test_x, test_y = arrays
    for split, x, y, n in (
        ("train", train_x, train_y, spec.train_size),
        ("test", test_x, test_y, spec.test_size),
    ):
        if x.shape != (n, *spec.image_shape) or y.shape != (n,):
            raise FlwbcError(
                f"{spec.name} {split} split in {directory} has images {x.shape} and labels "
                f"{y.shape}, expected ({n}, {', '.join(map(str, spec.image_shape))}) and ({n},); "
                "replace the files with the official ones"
            )
        if y.min() < 0 or y.max() >= spec.num_classes:
            raise FlwbcError(
                f"{spec.name} {split} labels in {directory} span {y.min()}..{y.max()}, outside "
                f"0..{spec.num_classes - 1}; replace the files with the official ones"
            )


@lru_cache(maxsize=8)
def _load(name: str, directory: Path) -> Dataset:
    spec = get_spec(name)
    arrays = spec.read(directory)
    _validate(spec, directory, arrays)
    train_x, train_y, test_x, test_y = (torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    return Dataset(
        name=spec.name,
        train_x=train_x,
        train_y=train_y.to(torch.int64),
        test_x=test_x,
        test_y=test_y.to(torch.int64),
        num_classes=spec.num_classes,
        mean=spec.mean,
        std=spec.std,
    )


def load_dataset(
    name: str, data_dir: str | os.PathLike[str] | None = None, *, download: bool = True
) -> Dataset:
    """Resolve (see ``resolve_dataset_dir``), read and validate a dataset; cached per process."""
    spec = get_spec(name)
    directory = resolve_dataset_dir(spec.name, data_dir, download=download)
    return _load(spec.name, directory.resolve())


DatasetLoader = Callable[[str | None], Dataset]
"""f(data_dir) -> Dataset: find (or fetch) and read a dataset; `data_dir` is the config's
`data.dir`, which a loader may ignore."""


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: its loader, class count and the model `model: auto` picks."""

    name: str
    load: DatasetLoader
    num_classes: int
    default_model: str
    description: str
    image_shape: tuple[int, int, int] | None = None
    """(C, H, W), when known without loading the data."""


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register_dataset(
    name: str,
    *,
    num_classes: int,
    default_model: str = "mlp",
    description: str = "",
    image_shape: tuple[int, int, int] | None = None,
) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register `loader(data_dir) -> Dataset` as the dataset `name` (configs: `data.name`).

    Any partition (iid, shards, dirichlet) splits it among clients; `num_classes` bounds the
    attack's target labels; `model: auto` builds `default_model` for it."""

    def deco(loader: DatasetLoader) -> DatasetLoader:
        text = description or (loader.__doc__ or "").strip().split("\n")[0]
        entry = DatasetEntry(name, loader, num_classes, default_model, text, image_shape)
        DATASETS.add(name, entry, origin=loader if not isinstance(loader, partial) else None)
        return loader

    return deco


def dataset_image_shape(name: str, data_dir: str | None) -> tuple[int, int, int]:
    """(C, H, W) of a registered dataset's images, loading it only when not declared."""
    entry = get_dataset(name)
    return entry.image_shape or entry.load(data_dir).image_shape


def get_dataset(name: str) -> DatasetEntry:
    """The dataset registered as `name`; an unknown name lists the registered ones."""
    return DATASETS.lookup(name)
