"""The real datasets: shapes, label counts, known statistics, normalisation, caching."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest
import torch

from flwbc.data import ChecksumWarning, Dataset, load_dataset, resolve_dataset_dir, sources
from flwbc.errors import FlwbcError

SIZES = {
    "fmnist": (60000, 10000, 1, 28),
    "mnist": (60000, 10000, 1, 28),
    "cifar10": (50000, 10000, 3, 32),
}
MNIST_COUNTS = (
    [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
)
TRAIN_MEAN = {"fmnist": (0.2860,), "mnist": (0.1307,), "cifar10": (0.4914, 0.4822, 0.4465)}
TRAIN_STD = {"fmnist": (0.3530,), "mnist": (0.3081,), "cifar10": (0.2470, 0.2435, 0.2616)}


def channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Exact per-channel mean and std on the 0-1 scale, from a histogram of uint8 values."""
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        mean = (counts * values).sum() / counts.sum()
        var = (counts * (values - mean) ** 2).sum() / counts.sum()
        means.append(mean.item())
        stds.append(var.sqrt().item())
    return means, stds


@pytest.mark.parametrize("name", ["fmnist", "mnist", "cifar10"])
def test_shapes_dtypes_and_label_counts(real: dict[str, Dataset], name: str) -> None:
    ds = real[name]
    n_train, n_test, c, hw = SIZES[name]
    assert ds.name == name and ds.num_classes == 10
    assert ds.image_shape == (c, hw, hw)
    assert ds.train_x.shape == (n_train, c, hw, hw) and ds.test_x.shape == (n_test, c, hw, hw)
    assert ds.train_x.dtype == ds.test_x.dtype == torch.uint8
    assert ds.train_y.dtype == ds.test_y.dtype == torch.int64
    assert ds.train_x.is_contiguous() and ds.test_x.is_contiguous()
    train_counts, test_counts = (
        torch.bincount(ds.train_y).tolist(),
        torch.bincount(ds.test_y).tolist(),
    )
    if name == "mnist":
        assert (train_counts, test_counts) == MNIST_COUNTS
    else:
        assert train_counts == [n_train // 10] * 10 and test_counts == [n_test // 10] * 10
    assert len(ds.mean) == len(ds.std) == c


@pytest.mark.parametrize("name", ["fmnist", "mnist", "cifar10"])
def test_known_statistics(real: dict[str, Dataset], name: str) -> None:
    means, stds = channel_stats(real[name].train_x)
    assert means == pytest.approx(TRAIN_MEAN[name], abs=1e-3)
    assert stds == pytest.approx(TRAIN_STD[name], abs=1e-3)


def test_fmnist_test_mean(fmnist: Dataset) -> None:
    assert channel_stats(fmnist.test_x)[0] == pytest.approx([0.2868], abs=1e-3)


def test_normalisation_constants() -> None:
    assert sources.SPECS["fmnist"].mean == sources.SPECS["mnist"].mean == (0.1307,)
    assert sources.SPECS["fmnist"].std == sources.SPECS["mnist"].std == (0.3081,)
    assert sources.SPECS["cifar10"].mean == sources.SPECS["cifar10"].std == (0.5, 0.5, 0.5)


def test_normalize(cifar10: Dataset, mnist: Dataset) -> None:
    x = cifar10.train_x[:6]
    out = cifar10.normalize(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    want = (x.double() / 255 - 0.5) / 0.5
    torch.testing.assert_close(out.double(), want, atol=1e-6, rtol=0)
    assert out.min() >= -1 and out.max() <= 1
    stacked = cifar10.normalize(x.view(2, 3, 3, 32, 32))
    torch.testing.assert_close(stacked.view_as(out), out)
    torch.testing.assert_close(cifar10.normalize(x[0]), out[0])
    m = mnist.normalize(mnist.train_x[:100])
    torch.testing.assert_close(m, (mnist.train_x[:100].float() / 255 - 0.1307) / 0.3081)
    with pytest.raises(FlwbcError, match="cannot normalise"):
        mnist.normalize(x)
    as_float = x.float()
    torch.testing.assert_close(cifar10.normalize(as_float), out)
    assert torch.equal(as_float, x.float()), "normalize changed its input"


def test_normalize_on_meta_device(mnist: Dataset) -> None:
    x = torch.empty(4, 1, 28, 28, dtype=torch.uint8, device="meta")
    out = mnist.normalize(x)
    assert out.device.type == "meta" and out.dtype == torch.float32


def test_dataset_is_frozen_and_cached(mnist: Dataset, real_data_dir: Path) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        mnist.name = "other"  # type: ignore[misc]
    assert load_dataset("MNIST", real_data_dir, download=False) is mnist


def test_official_idx_files_pass_md5(real_data_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ChecksumWarning)
        for name in ("fmnist", "mnist"):
            resolve_dataset_dir(name, real_data_dir, download=False)


def test_cifar_md5_mismatch_warns_but_loads(
    cifar10_with_warnings: tuple[Dataset, list[warnings.WarningMessage]], real_data_dir: Path
) -> None:
    ds, caught = cifar10_with_warnings
    assert ds.train_x.shape[0] == 50000
    flagged = {
        Path(str(w.message).split()[0]).name for w in caught if w.category is ChecksumWarning
    }
    assert flagged == set(sources.SPECS["cifar10"].files)
    with pytest.warns(ChecksumWarning, match="not the official"):
        got = resolve_dataset_dir("cifar-10", real_data_dir, download=False)
    assert got == real_data_dir / "cifar-10" / "cifar-10-batches-py"
