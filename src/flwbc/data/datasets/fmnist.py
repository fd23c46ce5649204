"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 28x28 grey, 60k train, 10k test, ten classes;
the paper's main dataset. Official files and checksums from the authors' S3 mirror."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from flwbc.data.datasets.base import Dataset, load_dataset, register_dataset
from flwbc.data.sources import add_source, idx_spec

SPEC = add_source(
    idx_spec(
        "fmnist",
        "fashion-mnist",
        (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
    aliases=("fashion-mnist", "fashion_mnist"),
)

register_dataset(
    "fmnist",
    num_classes=SPEC.num_classes,
    default_model="fmnist_cnn",
    description="Fashion-MNIST (Xiao et al. 2017): 28x28 grey, 60k train, 10k test",
    image_shape=SPEC.image_shape,
)(partial(load_dataset, "fmnist"))


@register_dataset(
    "fmnist_raw",
    num_classes=SPEC.num_classes,
    default_model="fmnist_cnn",
    description="Fashion-MNIST scaled to [0, 1] and not normalised (ToTensor only), as "
    "LeadFL's code reads it",
    image_shape=SPEC.image_shape,
)
def load_raw(data_dir: str | None) -> Dataset:
    """Fashion-MNIST as LeadFL's official code feeds it to the model (chaoyitud/LeadFL at
    06ecc98, `fltk/datasets/distributed/fashion_mnist.py:23-24,31-32`: `ToTensor` only), the
    same files and images as `fmnist` with mean 0 and std 1."""
    return replace(load_dataset("fmnist", data_dir), name="fmnist_raw", mean=(0.0,), std=(1.0,))
