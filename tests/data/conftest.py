"""Fixtures for the data tests: real datasets loaded once per session, a local HTTP server."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from flwbc_data_testutil import FileServer

from flwbc.data import Dataset, load_dataset


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    root = tmp_path / "served"
    root.mkdir()
    server = FileServer(root)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No data dir or mirror from the environment; an empty cache under tmp_path."""
    cache = tmp_path / "cache"
    monkeypatch.delenv("FLWBC_DATA_DIR", raising=False)
    monkeypatch.delenv("FLWBC_MIRROR", raising=False)
    monkeypatch.setenv("FLWBC_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="session")
def fmnist(real_data_dir: Path) -> Dataset:
    return load_dataset("fmnist", real_data_dir, download=False)


@pytest.fixture(scope="session")
def mnist(real_data_dir: Path) -> Dataset:
    return load_dataset("mnist", real_data_dir, download=False)


@pytest.fixture(scope="session")
def cifar10_with_warnings(
    real_data_dir: Path,
) -> tuple[Dataset, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset("cifar10", real_data_dir, download=False)
    return ds, list(caught)


@pytest.fixture(scope="session")
def cifar10(cifar10_with_warnings: tuple[Dataset, list[warnings.WarningMessage]]) -> Dataset:
    return cifar10_with_warnings[0]


@pytest.fixture(scope="session")
def real(fmnist: Dataset, mnist: Dataset, cifar10: Dataset) -> dict[str, Dataset]:
    return {"fmnist": fmnist, "mnist": mnist, "cifar10": cifar10}
