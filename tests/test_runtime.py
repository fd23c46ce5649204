"""flwbc.runtime: the allocator thresholds are set where glibc is the C library."""

from __future__ import annotations

import platform
import sys

import pytest

from flwbc.runtime import tune_allocator


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's",
)
def test_tune_allocator_on_glibc():
    assert tune_allocator() is True
    assert tune_allocator() is True  # idempotent
