"""Client partitions: disjoint, within the pool, reproducible, and as skewed as intended."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flwbc.data import (
    Dataset,
    partition,
    partition_dirichlet,
    partition_iid,
    partition_shards,
)
from flwbc.errors import FlwbcError


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def synthetic_labels(per_class: int = 600, classes: int = 10) -> np.ndarray:
    return rng(123).permutation(np.repeat(np.arange(classes), per_class))


def held_out_pool(n: int, held: int = 10) -> np.ndarray:
    return np.setdiff1d(np.arange(n, dtype=np.int64), rng(99).choice(n, held, replace=False))


def assert_valid(parts: list[np.ndarray], pool: np.ndarray) -> np.ndarray:
    for p in parts:
        assert p.dtype == np.int64 and p.ndim == 1
    merged = np.concatenate(parts)
    assert len(np.unique(merged)) == len(merged), "clients overlap"
    assert np.isin(merged, pool).all(), "index outside the pool"
    return merged


def test_iid_sizes_and_disjointness() -> None:
    pool = held_out_pool(6000)
    parts = partition_iid(pool, 100, rng(1))
    assert [len(p) for p in parts] == [len(pool) // 100] * 100
    assert_valid(parts, pool)
    assert not all((np.diff(p) > 0).all() for p in parts), "client indices are not shuffled"


@pytest.mark.parametrize(
    "split",
    [
        lambda pool, labels, r: partition_iid(pool, 10, r),
        lambda pool, labels, r: partition_shards(pool, labels, 10, r, num_shards=40),
        lambda pool, labels, r: partition_dirichlet(pool, labels, 10, r, alpha=0.5),
    ],
    ids=["iid", "shards", "dirichlet"],
)
def test_determinism(split: object, fmnist: Dataset) -> None:
    labels = fmnist.train_y.numpy()
    pool = held_out_pool(len(labels))
    a, b, c = (split(pool, labels, rng(s)) for s in (7, 7, 8))  # type: ignore[operator]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_shards_on_fmnist(fmnist: Dataset) -> None:
    labels = fmnist.train_y.numpy()
    pool = held_out_pool(len(labels), held=100)
    parts = partition_shards(pool, labels, 100, rng(3), num_shards=200, shards_per_client=2)
    shard = len(pool) // 200
    assert [len(p) for p in parts] == [2 * shard] * 100
    assert_valid(parts, pool)
    distinct = [len(np.unique(labels[p])) for p in parts]
    assert max(distinct) <= 4
    assert np.mean(distinct) < 3


def test_shards_needs_enough_shards() -> None:
    labels = synthetic_labels()
    with pytest.raises(FlwbcError, match="at least 200 shards"):
        partition_shards(np.arange(6000), labels, 100, rng(), num_shards=199)
    with pytest.raises(FlwbcError, match="cannot be cut"):
        partition_shards(np.arange(100), labels, 10, rng(), num_shards=200)


def mean_max_class_fraction(parts: list[np.ndarray], labels: np.ndarray) -> float:
    return float(np.mean([np.bincount(labels[p]).max() / len(p) for p in parts]))


def test_dirichlet_min_size_and_skew() -> None:
    labels = synthetic_labels()
    pool = held_out_pool(len(labels))
    fractions = {}
    for alpha in (0.1, 100.0):
        parts = partition_dirichlet(pool, labels, 10, rng(5), alpha=alpha, min_size=10)
        assert min(len(p) for p in parts) >= 10
        merged = assert_valid(parts, pool)
        assert np.array_equal(np.sort(merged), pool)
        fractions[alpha] = mean_max_class_fraction(parts, labels)
    assert fractions[0.1] > 0.5 > 0.2 > fractions[100.0]


def test_dirichlet_gives_up() -> None:
    labels = synthetic_labels(per_class=50, classes=2)
    with pytest.raises(FlwbcError, match="in 20 tries"):
        partition_dirichlet(np.arange(100), labels, 9, rng(), alpha=0.01, min_size=10, max_tries=20)
    with pytest.raises(FlwbcError, match="exceeds the pool"):
        partition_dirichlet(np.arange(100), labels, 11, rng(), min_size=10)


def test_dispatcher_matches_direct_calls() -> None:
    labels = synthetic_labels()
    pool = held_out_pool(len(labels))
    cases = [
        ("iid", {}, lambda r: partition_iid(pool, 20, r)),
        ("shards", {"num_shards": 60}, lambda r: partition_shards(pool, labels, 20, r, 60)),
        ("dirichlet", {"alpha": 1.0}, lambda r: partition_dirichlet(pool, labels, 20, r, 1.0)),
    ]
    for kind, kw, direct in cases:
        got = partition(kind.upper(), pool, labels, 20, rng(4), **kw)
        want = direct(rng(4))
        assert all(np.array_equal(x, y) for x, y in zip(got, want, strict=True))
    with pytest.raises(FlwbcError, match="unknown partition 'pathological'"):
        partition("pathological", pool, labels, 20, rng())
    with pytest.raises(FlwbcError, match="takes no option alpha"):
        partition("shards", pool, labels, 20, rng(), alpha=0.5)


def test_bad_inputs() -> None:
    with pytest.raises(FlwbcError, match="num_clients"):
        partition_iid(np.arange(10), 0, rng())
    with pytest.raises(FlwbcError, match="use fewer clients"):
        partition_iid(np.arange(10), 11, rng())
    with pytest.raises(FlwbcError, match="1-D integer"):
        partition_iid(np.arange(10.0), 2, rng())
    with pytest.raises(FlwbcError, match="outside"):
        partition_shards(np.arange(20), np.zeros(10, np.int64), 2, rng(), num_shards=4)


@st.composite
def pools(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    labels = np.array(draw(st.lists(st.integers(0, 4), min_size=4, max_size=200)), dtype=np.int64)
    mask = draw(st.lists(st.booleans(), min_size=len(labels), max_size=len(labels)))
    pool = np.flatnonzero(mask).astype(np.int64)
    if len(pool) == 0:
        pool = np.arange(len(labels), dtype=np.int64)
    return labels, pool, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=150, deadline=None)
@given(data=pools(), num_clients=st.integers(1, 12), spc=st.integers(1, 3), extra=st.integers(0, 5))
def test_property_iid_and_shards(
    data: tuple[np.ndarray, np.ndarray, int], num_clients: int, spc: int, extra: int
) -> None:
    labels, pool, seed = data
    if len(pool) >= num_clients:
        parts = partition_iid(pool, num_clients, rng(seed))
        assert_valid(parts, pool)
        assert [len(p) for p in parts] == [len(pool) // num_clients] * num_clients
    num_shards = num_clients * spc + extra
    if len(pool) >= num_shards:
        parts = partition_shards(pool, labels, num_clients, rng(seed), num_shards, spc)
        assert_valid(parts, pool)
        assert [len(p) for p in parts] == [spc * (len(pool) // num_shards)] * num_clients
