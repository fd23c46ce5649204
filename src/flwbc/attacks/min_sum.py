"""Min-Sum, the AGR-agnostic attack of Shejwalkar & Houmansadr, "Manipulating the Byzantine:
Optimizing Model Poisoning Attacks and Defenses for Federated Learning", NDSS 2021: every
attacker sends m = μ + γ·∇p with γ the largest for which m's sum of squared distances to the
benign updates is at most that of a benign update,

    Σ_i ‖m − g_i‖² ≤ max_i Σ_j ‖g_i − g_j‖²,

g_i the benign updates the attackers see and μ their mean. Options (`direction`, `gamma_init`,
`tau`, `knowledge`), their defaults and sources, and the search are documented in
`flwbc.attacks.agr_search`; the pairwise distances come from the aggregators' own
`pairwise_sq_dists` (`flwbc.server.krum`).

Deviation option `bound`: the paper's constraint takes the max over benign updates (`max`, the
default); the official code (`our_attack_score` in every notebook of
github.com/vrt1shjwlkr/NDSS21-Model-Poisoning) compares with the *smallest* benign sum
(`min_score = torch.min(scores)`), a stricter test giving a smaller γ: `bound: min`.

Assumes the attackers know the benign updates of the round (`omniscient`, the paper's default)
or only their own honest ones (`partial`); they need not know the aggregation rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import Field
from torch import Tensor

from flwbc.attacks.agr_search import AgrAgnosticAttack, AgrAgnosticOptions, sq_dists_to
from flwbc.attacks.base import register_attack
from flwbc.server.krum import pairwise_sq_dists


class MinSumOptions(AgrAgnosticOptions):
    bound: Literal["max", "min"] = Field(
        "max",
        description="max: Σ_i ‖m − g_i‖² ≤ max_i Σ_j ‖g_i − g_j‖² (paper); min: ≤ the min over "
        "i instead (official code)",
    )


@register_attack("min_sum")
class MinSum(AgrAgnosticAttack[MinSumOptions]):
    """Send μ + γ·∇p whose sum of squared distances to the benign updates is a benign one's."""

    Options = MinSumOptions

    def constraint(self, seen: Tensor) -> Callable[[Tensor], bool]:
        sums = pairwise_sq_dists(seen).sum(dim=1)
        bound = sums.max() if self.options.bound == "max" else sums.min()
        return lambda m: bool(sq_dists_to(seen, m).sum() <= bound)
