"""Inner product manipulation, IPM (Xie, Koyejo & Gupta, "Fall of empires: breaking Byzantine-
tolerant SGD by inner product manipulation", UAI 2020): every attacker sends −ε times the mean
of the benign updates it sees, so that the aggregate's inner product with the true update turns
negative while each malicious update stays small.

Knowledge: `omniscient` (the paper's: all benign updates) or `partial` (the mean of the
attackers' own honest updates).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from pydantic import Field
from torch import Tensor

from flwbc.attacks.base import register_attack
from flwbc.attacks.crafted import CraftedAttack, CraftedOptions

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext


class IPMOptions(CraftedOptions):
    epsilon: float = Field(0.1, gt=0, description="ε: the attackers send −ε × the benign mean")


IO = TypeVar("IO", bound=IPMOptions)


@register_attack("ipm")
class IPM(CraftedAttack[IO]):
    """Send −ε times the mean benign update."""

    Options = IPMOptions

    def forge(
        self, exp: ExperimentContext, t: int, seen: Tensor, own: Tensor, *, n: int, f: int
    ) -> Tensor:
        return (-self.options.epsilon * seen.mean(0)).expand(f, -1).clone()
