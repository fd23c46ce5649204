"""Sign flipping (e.g. Li et al., "RSA: Byzantine-robust stochastic aggregation methods for
distributed learning from heterogeneous datasets", AAAI 2019; Allen-Zhu et al. 2021): each
attacker sends its own honest update times −c.

Assumes only the attacker's own data (the `knowledge` option does not apply).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field
from torch import Tensor

from flwbc.attacks.base import register_attack
from flwbc.attacks.crafted import CraftedAttack, CraftedOptions

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext


class SignFlipOptions(CraftedOptions):
    c: float = Field(1.0, gt=0, description="the attacker sends −c times its honest update")


@register_attack("sign_flip")
class SignFlip(CraftedAttack[SignFlipOptions]):
    """Send −c times the attacker's own honest update."""

    Options = SignFlipOptions

    def forge(
        self, exp: ExperimentContext, t: int, seen: Tensor, own: Tensor, *, n: int, f: int
    ) -> Tensor:
        return own * -self.options.c
