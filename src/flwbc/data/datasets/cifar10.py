"""CIFAR-10 (Krizhevsky 2009): 32x32 colour, 50k train, 10k test, ten classes; the paper's
second dataset. The official python-version tarball, unpacked, read without unpickling code."""

from __future__ import annotations

from functools import partial

from flwbc.data.datasets.base import load_dataset, register_dataset
from flwbc.data.readers import read_cifar10
from flwbc.data.sources import Archive, DatasetSpec, add_source

SPEC = add_source(
    DatasetSpec(
        name="cifar10",
        subdir="cifar-10/cifar-10-batches-py",
        files={
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
        },
        base_url=None,
        archive=Archive(
            filename="cifar-10-python.tar.gz",
            url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            md5="c58f30108f718f92721af3b95e74349a",
        ),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        num_classes=10,
        image_shape=(3, 32, 32),
        train_size=50000,
        test_size=10000,
        read=read_cifar10,
    ),
    aliases=("cifar-10",),
)

register_dataset(
    "cifar10",
    num_classes=SPEC.num_classes,
    default_model="cifar_cnn",
    description="CIFAR-10 (Krizhevsky 2009): 32x32 colour, 50k train, 10k test",
    image_shape=SPEC.image_shape,
)(partial(load_dataset, "cifar10"))
