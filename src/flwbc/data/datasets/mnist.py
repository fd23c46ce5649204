"""MNIST (LeCun et al. 1998): 28x28 grey digits, 60k train, 10k test. Official files and
checksums from PyTorch's mirror (the original site no longer serves them)."""

from __future__ import annotations

from functools import partial

from flwbc.data.datasets.base import load_dataset, register_dataset
from flwbc.data.sources import add_source, idx_spec

SPEC = add_source(
    idx_spec(
        "mnist",
        "mnist",
        (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
    )
)

register_dataset(
    "mnist",
    num_classes=SPEC.num_classes,
    default_model="fmnist_cnn",
    description="MNIST (LeCun et al. 1998): 28x28 grey, 60k train, 10k test",
    image_shape=SPEC.image_shape,
)(partial(load_dataset, "mnist"))
