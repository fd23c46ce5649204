"""What every partition shares: the registry, the dispatcher a config's `data.partition` goes
through, and the checks on the pool each partition makes.

A partition takes the pool (held-out indices already removed) and a numpy Generator, so a split
is reproducible from a seed; each client's indices come back shuffled, as int64.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from flwbc.errors import FlwbcError
from flwbc.plugin_options import signature_model, validate_options
from flwbc.registry import Registry

Partitioner = Callable[..., list[np.ndarray]]
"""f(pool, labels, num_clients, rng, **options) -> each client's indices."""

PARTITIONS: Registry[tuple[Partitioner, str]] = Registry("partition")
"""Registered partitions: name -> (function, one-line description)."""


def register_partition(name: str, description: str = "") -> Callable[[Partitioner], Partitioner]:
    """Register `f(pool, labels, num_clients, rng, **options) -> list of index arrays` as the
    partition `name` (configs: `data.partition`, its options in `data.partition_options`)."""

    def deco(fn: Partitioner) -> Partitioner:
        text = description or " ".join((fn.__doc__ or "").strip().split("\n\n")[0].split())
        PARTITIONS.add(name, (fn, text), origin=fn)
        return fn

    return deco


def partition(
    kind: str,
    pool: np.ndarray,
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    **kw: Any,
) -> list[np.ndarray]:
    """Dispatch to the registered partition `kind` (iid, shards, dirichlet, or a plug-in)."""
    key = str(kind).strip().lower()
    fn, _ = PARTITIONS.lookup(key)
    params = inspect.signature(fn).parameters
    fixed = ("pool", "labels", "num_clients", "rng")
    allowed = [p for p in params if p not in fixed]
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise FlwbcError(
            f"partition {key!r} takes no option {', '.join(unknown)}: "
            f"allowed are {', '.join(allowed) or 'none'}"
        )
    if kw:
        checked = validate_options("partition", key, signature_model(key, fn, fixed), kw)
        kw = {k: getattr(checked, k) for k in kw}
    return fn(pool, labels, num_clients, rng, **kw)


def as_pool(pool: np.ndarray) -> np.ndarray:
    """`pool` as int64 indices, refusing anything but a 1-D integer array."""
    pool = np.asarray(pool)
    if pool.ndim != 1 or not (np.issubdtype(pool.dtype, np.integer) or pool.size == 0):
        raise FlwbcError(
            f"the index pool must be a 1-D integer array, got {pool.dtype} {pool.shape}"
        )
    return pool.astype(np.int64, copy=False)


def pool_labels(pool: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The labels of the pool's indices, refusing indices outside `labels`."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise FlwbcError(f"labels must be a 1-D array of class ids, got shape {labels.shape}")
    if pool.size and (pool.min() < 0 or pool.max() >= len(labels)):
        raise FlwbcError(f"the index pool points outside the {len(labels)} labels")
    return labels[pool]


def check_clients(num_clients: int) -> None:
    """Refuse fewer than one client."""
    if num_clients < 1:
        raise FlwbcError(f"num_clients must be at least 1, got {num_clients}")


def shuffled(parts: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Each part in a random order, as int64."""
    return [rng.permutation(p).astype(np.int64, copy=False) for p in parts]
