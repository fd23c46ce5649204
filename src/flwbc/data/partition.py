"""Split a pool of training indices among clients: IID, label shards, or Dirichlet label skew.

Every function takes the pool (held-out indices already removed) and a numpy Generator, so a
split is reproducible from a seed; each client's indices come back shuffled, as int64.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from flwbc.errors import FlwbcError
from flwbc.registry import Registry


def _as_pool(pool: np.ndarray) -> np.ndarray:
    pool = np.asarray(pool)
    if pool.ndim != 1 or not (np.issubdtype(pool.dtype, np.integer) or pool.size == 0):
        raise FlwbcError(
            f"the index pool must be a 1-D integer array, got {pool.dtype} {pool.shape}"
        )
    return pool.astype(np.int64, copy=False)


def _pool_labels(pool: np.ndarray, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise FlwbcError(f"labels must be a 1-D array of class ids, got shape {labels.shape}")
    if pool.size and (pool.min() < 0 or pool.max() >= len(labels)):
        raise FlwbcError(f"the index pool points outside the {len(labels)} labels")
    return labels[pool]


def _check_clients(num_clients: int) -> None:
    if num_clients < 1:
        raise FlwbcError(f"num_clients must be at least 1, got {num_clients}")


def _shuffled(parts: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.permutation(p).astype(np.int64, copy=False) for p in parts]


def partition_iid(pool: np.ndarray, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Split the pool uniformly at random into equal disjoint parts (the remainder is unused)."""
    pool = _as_pool(pool)
    _check_clients(num_clients)
    per = len(pool) // num_clients
    if per == 0:
        raise FlwbcError(
            f"cannot give {num_clients} clients data from a pool of {len(pool)}: use fewer clients"
        )
    perm = rng.permutation(pool)
    return [perm[i * per : (i + 1) * per].copy() for i in range(num_clients)]


def partition_shards(
    pool: np.ndarray,
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    num_shards: Annotated[
        int, Field(ge=1, description="shards the label-sorted pool is cut into (data.num_shards)")
    ] = 200,
    shards_per_client: Annotated[
        int, Field(ge=1, description="shards dealt to each client (data.shards_per_client)")
    ] = 2,
) -> list[np.ndarray]:
    """Non-IID split of McMahan et al.: sort by label, cut into shards, deal shards at random."""
    pool = _as_pool(pool)
    _check_clients(num_clients)
    if shards_per_client < 1 or num_shards < num_clients * shards_per_client:
        raise FlwbcError(
            f"{num_clients} clients x {shards_per_client} shards each need at least "
            f"{num_clients * shards_per_client} shards, got num_shards={num_shards}: "
            "raise num_shards or lower shards_per_client"
        )
    shard_size = len(pool) // num_shards
    if shard_size == 0:
        raise FlwbcError(
            f"a pool of {len(pool)} cannot be cut into {num_shards} shards: lower num_shards"
        )
    ordered = pool[np.argsort(_pool_labels(pool, labels), kind="stable")]
    shards = ordered[: shard_size * num_shards].reshape(num_shards, shard_size)
    picks = rng.permutation(num_shards)[: num_clients * shards_per_client]
    picks = picks.reshape(num_clients, shards_per_client)
    return _shuffled([shards[p].reshape(-1) for p in picks], rng)


def partition_dirichlet(
    pool: np.ndarray,
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    alpha: Annotated[
        float,
        Field(
            gt=0,
            description="concentration; smaller: fewer classes per client (data.dirichlet_alpha)",
        ),
    ] = 0.5,
    min_size: Annotated[
        int,
        Field(
            description="fewest indices a client may get; proportions are redrawn until "
            "every client has this many"
        ),
    ] = 10,
    max_tries: Annotated[
        int, Field(ge=1, description="draws of the proportions before giving up")
    ] = 1000,
) -> list[np.ndarray]:
    """Label-skewed split: each class is divided among clients in Dirichlet(alpha) proportions.

    Proportions are redrawn (up to ``max_tries`` times) until every client has ``min_size``
    indices; smaller alpha gives each client fewer classes.
    """
    pool = _as_pool(pool)
    _check_clients(num_clients)
    if not alpha > 0:
        raise FlwbcError(f"the Dirichlet alpha must be positive, got {alpha}")
    if len(pool) == 0 or min_size * num_clients > len(pool):
        raise FlwbcError(
            f"{num_clients} clients x min_size {min_size} exceeds the pool of {len(pool)}: "
            "lower min_size or use fewer clients"
        )
    pool_labels = _pool_labels(pool, labels)
    by_class = [rng.permutation(pool[pool_labels == c]) for c in np.unique(pool_labels)]
    sizes = np.array([len(c) for c in by_class])
    for _ in range(max_tries):
        props = rng.dirichlet(np.full(num_clients, float(alpha)), size=len(by_class))
        cuts = (np.cumsum(props, axis=1) * sizes[:, None]).astype(np.int64)
        cuts[:, -1] = sizes
        counts = np.diff(cuts, axis=1, prepend=0)
        if counts.sum(axis=0).min() >= min_size:
            break
    else:
        raise FlwbcError(
            f"no Dirichlet(alpha={alpha}) split gave all {num_clients} clients at least "
            f"{min_size} samples in {max_tries} tries: raise alpha or lower min_size"
        )
    parts = [
        np.concatenate([cls[start:end] for cls, start, end in zip(by_class, s, e, strict=True)])
        for s, e in zip((cuts - counts).T, cuts.T, strict=True)
    ]
    return _shuffled(parts, rng)


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


register_partition("iid", "uniformly at random, equal sizes")(
    lambda pool, labels, num_clients, rng: partition_iid(pool, num_clients, rng)
)
register_partition("shards", "label shards (McMahan et al. 2017): num_shards, shards_per_client")(
    partition_shards
)
register_partition("dirichlet", "Dirichlet(alpha) label skew (Hsu et al. 2019)")(
    partition_dirichlet
)


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
        from flwbc.plugin_options import signature_model, validate_options

        checked = validate_options("partition", key, signature_model(key, fn, fixed), kw)
        kw = {k: getattr(checked, k) for k in kw}
    return fn(pool, labels, num_clients, rng, **kw)
