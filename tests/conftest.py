"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker computes on one thread: the workers are the parallelism,
    and two workers with a thread per core each would contend for the same cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The folder with the real datasets: $FLWBC_DATA_DIR, else shared/data beside the repo."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    path = Path(os.environ.get("FLWBC_DATA_DIR") or default)
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"real data folder {path} does not exist; CI must provide it")
        pytest.skip(f"real data folder {path} does not exist (set FLWBC_DATA_DIR)")
    return path
