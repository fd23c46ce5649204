"""A little is enough, ALIE (Baruch, Baruch & Goldberg, "A little is enough: circumventing
defenses for distributed learning", NeurIPS 2019): every attacker sends μ − z·σ, μ and σ the
coordinate-wise mean and standard deviation of the benign updates it sees, z small enough that
the malicious update hides among the benign ones yet moves every coordinate the same way.

z is given (`z`) or computed as the paper does from the round's n clients and f attackers: the
number of supporters needed is s = ⌊n/2 + 1⌋ − f, and z = Φ⁻¹((n − s)/n). Common
implementations (Blades, FLPoison) instead use Φ⁻¹((n − f − s)/(n − f)): `z_rule: benign`.
σ is the sample standard deviation (as `torch.std`).

Knowledge: `omniscient` (the paper's) or `partial` (the attackers' own honest updates).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import TYPE_CHECKING, Literal, TypeVar

from pydantic import Field
from torch import Tensor

from flwbc.attacks.base import register_attack
from flwbc.attacks.crafted import CraftedAttack, CraftedOptions
from flwbc.errors import FlwbcError

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext


class ALIEOptions(CraftedOptions):
    z: float | None = Field(None, description="z; default: computed from n and f (z_rule)")
    z_rule: Literal["paper", "benign"] = Field(
        "paper",
        description="paper: z = Φ⁻¹((n − s)/n); benign: Φ⁻¹((n − f − s)/(n − f)) as common "
        "implementations do; s = ⌊n/2 + 1⌋ − f",
    )


AO = TypeVar("AO", bound=ALIEOptions)


def alie_z(n: int, f: int, rule: str = "paper") -> float:
    """ALIE's z for n clients of which f attack (Baruch et al. 2019, §3)."""
    s = math.floor(n / 2 + 1) - f
    p = (n - s) / n if rule == "paper" else (n - f - s) / (n - f)
    if not 0 < p < 1:
        raise FlwbcError(f"attack 'alie': no z for n={n}, f={f} ({rule} rule gives p={p:g})")
    return NormalDist().inv_cdf(p)


@register_attack("alie")
class ALIE(CraftedAttack[AO]):
    """Send μ − z·σ of the benign updates seen."""

    Options = ALIEOptions

    def forge(
        self, exp: ExperimentContext, t: int, seen: Tensor, own: Tensor, *, n: int, f: int
    ) -> Tensor:
        opts = self.options
        z = opts.z if opts.z is not None else alie_z(n, f, opts.z_rule)
        if len(seen) < 2:
            raise FlwbcError("attack 'alie' needs at least 2 benign updates to see for σ")
        return (seen.mean(0) - z * seen.std(0)).expand(f, -1).clone()
