"""The paper's targeted model poisoning (§4.1 eq. 3, after Bhagoji et al., "Analyzing federated
learning through an adversarial lens", ICML 2019), with the reference code's variants.

Attackers share the malicious set D_M (drawn by the experiment) and minimise α·F_k + (1−α)·F_M
for `attack.epochs` local epochs (`flwbc.client.attack.malicious_plan`). Modes: `real`, N_m
attackers train; `boost`, their updates are scaled by `attack.boost` (explicit boosting);
`emulate`, the reference code's one attacker standing for N_m with aggregation weight N_m (the
round plan does that). With `attack.kernel_reg` λ > 0 each step adds the gradient of
λ‖H(w − W)‖², H the Hessian of the attacker's own benign loss at the global model (§4.3).

Assumed knowledge: the global model, D_M and (for α > 0 or the kernel term) the attacker's
own data. Its options are the `attack` section's fields (`flwbc run --help`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from flwbc.attacks.base import Attack, register_attack
from flwbc.client.attack import kernel_penalty_grad, malicious_plan
from flwbc.client.local import Epoch
from flwbc.curvature import batch_loss
from flwbc.rng import torch_generator

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext


@register_attack("targeted")
class TargetedAttack(Attack[None]):
    """The paper's eq. 3: train on relabelled D_M (real, boost or emulate; kernel-regularised)."""

    def plan(
        self, exp: ExperimentContext, t: int, c: int, generator: torch.Generator
    ) -> tuple[int, Iterator[Epoch]]:
        att, loc = self.cfg.attack, self.cfg.local
        x, y = exp.client_data(c) if att.alpha > 0 else (torch.empty(0), torch.empty(0))
        assert exp.x_mal is not None and exp.y_mal is not None
        return len(y), malicious_plan(
            x,
            y,
            exp.x_mal,
            exp.y_mal,
            alpha=att.alpha,
            batch_size=loc.batch_size,
            epochs=att.epochs,
            generator=generator,
        )

    def group_key(self, exp: ExperimentContext, n: int) -> Hashable:
        att = self.cfg.attack
        assert exp.y_mal is not None
        batch = self.cfg.local.batch_size
        return (n, len(exp.y_mal), batch, att.epochs, att.alpha, att.kernel_reg > 0)

    def extra_grad(
        self, exp: ExperimentContext, t: int, c: int, w: Tensor
    ) -> Callable[[Tensor], Tensor] | None:
        """The kernel term's gradient: H at the global model w on `kernel_batch` of attacker c's
        own images, drawn from the stream (seed, "kernel", t, c)."""
        att = self.cfg.attack
        if att.kernel_reg == 0.0:
            return None
        x, y = exp.client_data(c)
        gen = torch_generator(self.cfg.seed, "kernel", t, c)
        idx = torch.randperm(len(y), generator=gen)[: att.kernel_batch].to(x.device)
        loss = batch_loss(exp.model, x[idx], y[idx])
        return kernel_penalty_grad(loss, w.detach(), att.kernel_reg)

    def finish(self, exp: ExperimentContext, t: int, c: int, update: Tensor) -> Tensor:
        if self.cfg.attack.mode == "boost":
            return update * self.cfg.attack.boost
        return update
