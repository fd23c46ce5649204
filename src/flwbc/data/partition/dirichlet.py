"""`dirichlet`: Dirichlet label skew (Hsu, Qi & Brown 2019)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from flwbc.data.partition.base import (
    as_pool,
    check_clients,
    pool_labels,
    register_partition,
    shuffled,
)
from flwbc.errors import FlwbcError


def partition_dirichlet(
    pool: np.ndarray,
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    alpha: Annotated[
        float,
        Field(
            gt=0,
            description="concentration; smaller: fewer classes per client",
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
    pool = as_pool(pool)
    check_clients(num_clients)
    if not alpha > 0:
        raise FlwbcError(f"the Dirichlet alpha must be positive, got {alpha}")
    if len(pool) == 0 or min_size * num_clients > len(pool):
        raise FlwbcError(
            f"{num_clients} clients x min_size {min_size} exceeds the pool of {len(pool)}: "
            "lower min_size or use fewer clients"
        )
    classes = pool_labels(pool, labels)
    by_class = [rng.permutation(pool[classes == c]) for c in np.unique(classes)]
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
    return shuffled(parts, rng)


register_partition("dirichlet", "Dirichlet(alpha) label skew (Hsu et al. 2019)")(
    partition_dirichlet
)
