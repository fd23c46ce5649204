"""Targeted model poisoning (paper §4.1, eq. 3; Bhagoji et al. 2019).

Attackers share a malicious set D_M of n images, each relabelled to a wrong target class, kept
out of every benign client's data. An attacker minimises α·F_k + (1−α)·F_M for `epochs` local
epochs. With α = 0 (the reference code) it trains on D_M alone, one epoch being one pass over
D_M; with α > 0 each step pairs a batch of its own data with a batch of D_M.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from flwbc.client.local import Epoch, Term, epoch_batches
from flwbc.curvature import Loss, hvp


@dataclass(frozen=True)
class MaliciousSet:
    """D_M: where its images come from, their true labels and the attacker's target labels."""

    source: str
    indices: np.ndarray
    true_labels: np.ndarray
    targets: np.ndarray

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "indices": self.indices.tolist(),
            "true_labels": self.true_labels.tolist(),
            "targets": self.targets.tolist(),
        }


def choose_malicious_set(
    labels: np.ndarray,
    n: int,
    num_classes: int,
    rng: np.random.Generator,
    source: str,
    target: int | None = None,
) -> MaliciousSet:
    """Draw n distinct images and a wrong target label for each.

    Without a fixed `target`, each image's target is uniform over the other classes. With a fixed
    target, images are drawn among those whose true label differs from it.
    """
    candidates = np.arange(len(labels)) if target is None else np.flatnonzero(labels != target)
    if n > len(candidates):
        raise ValueError(f"cannot draw {n} malicious images from {len(candidates)} candidates")
    idx = np.sort(rng.choice(candidates, size=n, replace=False)).astype(np.int64)
    true = labels[idx].astype(np.int64)
    if target is None:
        shift = rng.integers(1, num_classes, size=n)
        targets = (true + shift) % num_classes
    else:
        targets = np.full(n, target, dtype=np.int64)
    return MaliciousSet(
        source=source, indices=idx, true_labels=true, targets=targets.astype(np.int64)
    )


def malicious_plan(
    x_benign: Tensor,
    y_benign: Tensor,
    x_mal: Tensor,
    y_mal: Tensor,
    *,
    alpha: float,
    batch_size: int,
    epochs: int,
    generator: torch.Generator,
) -> Iterator[Epoch]:
    """Steps of eq. 3 for one attacker."""
    n_mal = len(y_mal)
    if alpha == 0.0:
        for batches in epoch_batches(n_mal, batch_size, epochs, generator):
            yield [[Term(x_mal[idx], y_mal[idx])] for idx in batches]
        return
    mal_stream = _cycle_batches(n_mal, batch_size, generator)
    for batches in epoch_batches(len(y_benign), batch_size, epochs, generator):
        epoch: Epoch = []
        for idx in batches:
            midx = next(mal_stream)
            epoch.append(
                [
                    Term(x_benign[idx], y_benign[idx], alpha),
                    Term(x_mal[midx], y_mal[midx], 1.0 - alpha),
                ]
            )
        yield epoch


def _cycle_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    while True:
        yield from torch.split(torch.randperm(n, generator=generator), batch_size)


def kernel_penalty_grad(loss: Loss, w_global: Tensor, lam: float) -> Callable[[Tensor], Tensor]:
    """The gradient of the kernel-regularised attack's penalty λ‖H(w − W)‖², with H the Hessian
    of the benign `loss` at the global model W (held fixed during the round): 2λ·H·H·(w − W),
    two Hessian-vector products per step, no dense Hessian."""

    def grad(w: Tensor) -> Tensor:
        d = w.detach() - w_global
        return (2.0 * lam) * hvp(loss, w_global, hvp(loss, w_global, d))

    return grad
