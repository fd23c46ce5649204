"""The malicious set D_M of targeted model poisoning (paper §4.1; Bhagoji et al. 2019): n images
shared by the attackers, each relabelled to a wrong target class, kept out of every benign
client's data. Drawn once per experiment (`choose_malicious_set`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
