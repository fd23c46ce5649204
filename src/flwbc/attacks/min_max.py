"""Min-Max, the AGR-agnostic attack of Shejwalkar & Houmansadr, "Manipulating the Byzantine:
Optimizing Model Poisoning Attacks and Defenses for Federated Learning", NDSS 2021: every
attacker sends m = μ + γ·∇p with γ the largest for which m is no farther from any benign update
than the two farthest benign updates are from each other,

    max_i ‖m − g_i‖ ≤ max_{i,j} ‖g_i − g_j‖,

g_i the benign updates the attackers see and μ their mean. The pairwise distances come from the
aggregators' own `pairwise_sq_dists` (`flwbc.server.krum`); squared distances are compared, as in
the official code (`our_attack_dist`), which is the same test. Options (`direction`, `gamma_init`,
`tau`, `knowledge`), their defaults and sources, and the search are documented in
`flwbc.attacks.agr_search`.

Assumes the attackers know the benign updates of the round (`omniscient`, the paper's default)
or only their own honest ones (`partial`); they need not know the aggregation rule.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from flwbc.attacks.agr_search import AgrAgnosticAttack, AgrAgnosticOptions, sq_dists_to
from flwbc.attacks.base import register_attack
from flwbc.server.krum import pairwise_sq_dists


@register_attack("min_max")
class MinMax(AgrAgnosticAttack[AgrAgnosticOptions]):
    """Send μ + γ·∇p no farther from any benign update than the benign diameter."""

    def constraint(self, seen: Tensor) -> Callable[[Tensor], bool]:
        bound = pairwise_sq_dists(seen).max()
        return lambda m: bool(sq_dists_to(seen, m).max() <= bound)
