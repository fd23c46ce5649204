"""A backdoor placed where LeadFL's regulariser does not reach: BadNets with the kernel penalty
(an attacker that knows LeadFL, issue-29 item 2; new, in no paper).

LeadFL (Zhu, Roos & Chen, ICML 2023) protects the global model by having benign clients add
α‖(I − ηH)v‖ to their loss, so that a perturbation δ of the parameters, which a benign local
step maps to (I − ηH)δ, is contracted instead of persisting in the near-kernel of the benign
Hessian H. The contraction acts only where the benign curvature is large. An attacker that knows
this places its implant where benign curvature stays small: it trains BadNets (its own data, a
`poison_fraction` of it triggered and relabelled `target`) and adds to every step the gradient
of λ‖H(w − W)‖², with H the Hessian of the loss of `kernel_batch` of its own clean images at the
global model W it received (`flwbc.client.attack.kernel_term`, the kernel-regularised attack of
FL-WBC's §4.3 applied to a backdoor). Since W was trained by LeadFL's clients, H already carries
the curvature LeadFL built, so the attacker aims at the directions LeadFL left flat.

Assumes: the attacker's own clean data is a fair sample for the benign Hessian (its H is taken
on its data, theirs on theirs), and the directions flat at W stay flat over the rounds its
implant must persist. With λ = 0 it is BadNets bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import Field
from torch import Tensor

from flwbc.attacks.backdoor import BackdoorAttack, BackdoorOptions
from flwbc.attacks.base import register_attack
from flwbc.client.attack import kernel_term
from flwbc.client.transform import ClientRun


class KernelBackdoorOptions(BackdoorOptions):
    kernel_reg: float = Field(
        0.1,
        ge=0,
        json_schema_extra={"label": True},
        description="λ: the weight of ‖H(w − W)‖², H the benign Hessian on the attacker's own "
        "clean images at the global model W; 0 is BadNets",
    )
    kernel_batch: int = Field(
        64, ge=1, description="clean images of the attacker's own data on which H is taken"
    )


@register_attack("kernel_backdoor")
class KernelBackdoor(BackdoorAttack[KernelBackdoorOptions]):
    """BadNets pushed into the benign Hessian's near-kernel, where LeadFL's regulariser does
    not contract it."""

    Options = KernelBackdoorOptions

    def init(self, run: ClientRun) -> Callable[[Tensor], Tensor] | None:
        return kernel_term(run, self.options.kernel_reg, self.options.kernel_batch)

    def grad(self, state: Callable[[Tensor], Tensor] | None, w: Tensor) -> Tensor | None:
        return state(w) if state is not None else None
