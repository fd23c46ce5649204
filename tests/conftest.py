"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


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
