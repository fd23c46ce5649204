"""Robust learning rate, RLR (Ozdayi, Kantarcioglu & Gel, "Defending against Backdoors in
Federated Learning with Robust Learning Rate", AAAI 2021).

Per coordinate j the server counts how the n updates vote: s_j = |Σ_k sign(Δ_k,j)|
(`torch.sign`, so a zero entry abstains). Where s_j < θ the server learning rate on that
coordinate is −η, elsewhere +η (s_j = θ exactly gets +η); the aggregate is η_vec ⊙ (the FedAvg
weighted mean of the updates). Coordinates on which too few clients agree are pushed the other
way: a backdoor needs coordinates that the benign clients do not move together, and there the
attackers' direction is reversed.

Assumes the benign clients outnumber the attackers enough to agree in sign on the coordinates
the main task needs, and that the attackers are fewer than θ (with at least θ attackers
pushing one sign they win the vote on their coordinates).

Options:
- `threshold` θ (default 4): the value the official code
  (TinfoilHat0/Defending-Against-Backdoors-with-Robust-Learning-Rate, README and
  `src/runner.sh`: `--robustLR_threshold=4`) uses for the paper's Fashion-MNIST setting, 10
  agents per round and one corrupt agent; the same script uses 8 for CIFAR-10 (40 agents) and
  for Federated EMNIST (1% of 3383 agents per round). It must be tuned to the clients per
  round: it should exceed the number of attackers and stay below the number of benign clients.
  θ = 0 gives +η everywhere (FedAvg scaled by η); θ > n reverses every coordinate, so `check`
  refuses it;
- `server_lr` η (default 1, the official code's `--server_lr` default).

Deviations: none in the computation; the official code's weighted mean also uses the clients'
data sizes (here the FedAvg weights). Votes are counted per row: under `attack.mode: emulate`
one row standing for several attackers votes once.

`info` holds `reversed`, the share of coordinates that got −η. Not a detector (`flagged` is
None).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from flwbc.errors import FlwbcError
from flwbc.plugin_options import PluginOptions
from flwbc.server.base import Aggregate, Aggregator, RoundContext, register_aggregator


class RLROptions(PluginOptions):
    threshold: float = Field(
        4.0,
        ge=0,
        allow_inf_nan=False,
        description="θ: a coordinate whose |sum of update signs| is below θ gets −η "
        "(paper / official runner.sh: 4 for 10 agents per round)",
    )
    server_lr: float = Field(
        1.0,
        gt=0,
        allow_inf_nan=False,
        description="η: the server learning rate (official code's default 1)",
    )


def robust_lr(updates: Tensor, threshold: float, server_lr: float) -> Tensor:
    """The per-coordinate server learning rate [P]: −η where |Σ_k sign(Δ_k)| < θ, else +η."""
    votes = torch.sign(updates).sum(dim=0).abs()
    lr = torch.full_like(votes, server_lr)
    return torch.where(votes < threshold, -lr, lr)


@register_aggregator("rlr")
class RobustLearningRate(Aggregator):
    Options = RLROptions

    def __init__(self, **options: Any) -> None:
        o = RLROptions(**options)
        self.threshold, self.server_lr = float(o.threshold), float(o.server_lr)

    def check(self, num_updates: int) -> None:
        super().check(num_updates)
        if self.threshold > num_updates:
            raise FlwbcError(
                f"aggregator '{self.name}' needs threshold <= n, or it reverses every "
                f"coordinate (threshold={self.threshold:g}, n={num_updates})"
            )

    def aggregate(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
        lr = robust_lr(updates, self.threshold, self.server_lr)
        mean = weights.to(updates.dtype) @ updates
        reversed_share = float((lr < 0).to(torch.float64).mean()) if lr.numel() else 0.0
        return Aggregate(lr * mean, {"reversed": reversed_share})
