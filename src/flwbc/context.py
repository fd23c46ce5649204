"""What a plug-in may know of the experiment it runs in (`ExperimentContext`) and a server-side
plug-in (an aggregation rule, a pre- or post-aggregation step) of the round besides the updates
(`RoundContext`): below every kind of them, so none imports the module that builds them all,
nor another kind's package."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:
    import numpy as np

    from flwbc.client.malicious_set import MaliciousSet
    from flwbc.config import ExperimentConfig
    from flwbc.data.datasets import Dataset
    from flwbc.models import FlatModel


@dataclass(frozen=True)
class RoundPlan:
    """Who takes part in a round and with which aggregation weight (`Experiment.round_plan`)."""

    round: int
    adversarial: bool
    clients: list[int]
    malicious: list[bool]
    weights: Tensor
    model_scale: float | None = None
    """None: the new global model is w + aggregate(updates). Otherwise (an attack's
    `plan_round`, e.g. the targeted attack's `emulate_average: reference`) it is
    model_scale·w + weights @ updates: the FL-WBC reference code's average of client models
    with coefficients `weights` that sum to model_scale ≠ 1."""


class ExperimentContext(Protocol):
    """The experiment as its plug-ins' hooks see it: `flwbc.experiment.Experiment` is one."""

    cfg: ExperimentConfig
    dataset: Dataset
    model: FlatModel
    device: torch.device
    client_indices: list[np.ndarray]
    """Every client's training images (indices into the dataset)."""
    malicious_ids: list[int]
    benign_ids: np.ndarray
    malicious_set: MaliciousSet | None
    """The targeted attack's D_M (None for other attacks)."""
    x_mal: Tensor | None
    y_mal: Tensor | None
    attack: Any
    """The experiment's attack (an `flwbc.attacks.Attack`), None without one."""

    @property
    def defenses(self) -> Sequence[Any]:
        """The benign clients' chain of client defenses (`flwbc.defenses.ClientDefense`)."""
        ...

    @property
    def dtype(self) -> torch.dtype: ...

    def client_data(self, c: int) -> tuple[Tensor, Tensor]:
        """Client c's training images (normalised, on the device) and labels."""
        ...

    def test_data(self, t: int | None = None) -> tuple[Tensor, Tensor]:
        """The test images (raw) and labels evaluated at round t."""
        ...


@dataclass
class RoundContext:
    """What a rule may know about the round besides the updates."""

    round: int
    client_ids: list[int]
    generator: torch.Generator
    global_weights: Tensor
    reference_update: Callable[[], Tensor] | None = None
    """For rules with a server-side root dataset (FLTrust): the server's own update."""
    rows_are_clients: bool = True
    """Whether row i of the updates is still client `client_ids[i]`'s (False after a
    pre-aggregation step that merges or reorders rows, e.g. bucketing)."""
