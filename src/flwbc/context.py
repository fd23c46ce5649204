"""What a server-side plug-in (an aggregation rule, a pre- or post-aggregation step) may know
about the round besides the updates: below every kind of them, so none imports another's
package for it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


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
