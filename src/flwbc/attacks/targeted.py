"""The paper's targeted model poisoning (§4.1 eq. 3, after Bhagoji et al., "Analyzing federated
learning through an adversarial lens", ICML 2019), with the reference code's variants.

Attackers share the malicious set D_M (drawn by the experiment) and minimise α·F_k + (1−α)·F_M
for `epochs` local epochs (`flwbc.client.attack.malicious_plan`). Modes: `real`, N_m attackers
train; `boost`, their updates are scaled by `boost` (explicit boosting); `emulate`, the
reference code's one attacker standing for N_m with aggregation weight N_m (`Attack.stand_in`:
the round plan does that). With `kernel_reg` λ > 0 each step adds the gradient of
λ‖H(w − W)‖², H the Hessian of the attacker's own benign loss at the global model (§4.3).

Assumed knowledge: the global model, D_M and (for α > 0 or the kernel term) the attacker's
own data. Options: `TargetedOptions` (`attack.options`; configs written before they moved there
give them as the `attack` section's fields, which `flwbc.legacy` moves, and the flags
`--attack-epochs`, `--attack-mode`, ... still set them).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from flwbc.attacks.base import Attack, register_attack
from flwbc.client.attack import kernel_term, malicious_plan
from flwbc.client.local import Epoch
from flwbc.client.transform import ClientRun
from flwbc.config import ExperimentConfig
from flwbc.context import RoundPlan
from flwbc.errors import FlwbcError
from flwbc.plugin_options import PluginOptions
from flwbc.rng import numpy_rng

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext


class TargetedOptions(PluginOptions):
    """The eq. 3 attack's options (`attack.options` of `targeted`)."""

    alpha: float = Field(
        0.0, ge=0, le=1, description="weight of the benign loss in eq. 3 (reference code: 0)"
    )
    epochs: int = Field(
        10, ge=1, description="malicious local epochs (reference: local_mal_ep = 10)"
    )
    mode: Literal["real", "boost", "emulate"] = Field(
        "real",
        description="real: N_m attackers train; boost: real attackers whose update is scaled by "
        "boost; emulate: the reference code's single attacker with aggregation weight N_m",
    )
    emulate_average: Literal["intended", "reference"] = Field(
        "intended",
        description="mode=emulate, FedAvg, uniform weighting only: intended, the weighted "
        "average; reference, the authors' average_weights_ns as it runs: in the reference "
        "code's random client order the round's first client counts with weight 1 whatever "
        "its weight (a zeroed benign client, or the attacker when drawn first), dividing by "
        "the sum of all weights, so the new model is sum_i a_i w_i with sum_i a_i != 1",
    )
    boost: float = Field(1.0, gt=0, description="explicit boosting factor λ (mode=boost)")
    kernel_reg: float = Field(
        0.0,
        ge=0,
        description="λ of the kernel-regularised attack: attackers add λ‖H(w − W)‖² to eq. 3, "
        "H the Hessian of their own benign data's loss at the global model W, pushing their "
        "update into the benign Hessian's kernel where it persists (paper §4.3); 0: off",
    )
    kernel_batch: int = Field(
        64, ge=1, description="images of the attacker's own data on which H is taken"
    )


def _check_reference_average(cfg: ExperimentConfig, att: TargetedOptions) -> None:
    """`attack.emulate_average: reference` reproduces one FedAvg of client models whose weights
    are client counts (1 per benign client, N_m for the emulated attacker): it needs the
    emulate mode, the fedavg aggregator, uniform weighting and no pre- or post-aggregation
    step."""
    if att.mode != "emulate":
        raise FlwbcError(
            f"attack.emulate_average=reference needs attack.mode=emulate (got {att.mode})"
        )
    if cfg.server.aggregator != "fedavg":
        raise FlwbcError(
            "attack.emulate_average=reference reproduces the reference code's FedAvg; it needs "
            f"server.aggregator=fedavg (got {cfg.server.aggregator})"
        )
    if cfg.federation.weighting != "uniform":
        raise FlwbcError(
            "attack.emulate_average=reference needs federation.weighting=uniform (the reference "
            f"code weighs clients by count, not samples; got {cfg.federation.weighting})"
        )
    if cfg.server.pre or cfg.server.post:
        raise FlwbcError(
            "attack.emulate_average=reference applies to the plain FedAvg of the reference "
            "code; it cannot take server.pre or server.post steps"
        )


def reference_average_plan(
    exp: ExperimentContext, t: int, clients: list[int], malicious: list[bool], weights: Tensor
) -> RoundPlan:
    """An emulated adversarial round aggregated as the authors' `average_weights_ns`
    (jeremy313/FL-WBC `src/utils.py`) runs: it starts from the first client's model and
    never multiplies it by its weight, but divides by the sum of all weights, so the new
    model is Σ_i a_i w_i with a_first = 1/Σn and a_i = n_i/Σn for the others. In client
    updates u_i = w_i − w that is (Σ_i a_i)·w + Σ_i a_i u_i (`RoundPlan.model_scale`).

    Which client is first follows `src/fedavg.py`: the round's K clients are trained and
    averaged in the order `np.random.choice` sampled them, so the attacker is at a uniform
    position among K, drawn here from the stream (seed, "reference-order", t). Attacker
    first (probability 1/K): a_attacker = 1/Σn instead of N_m/Σn. Otherwise the first
    client is benign and, the reference code giving weight 0 to the first N_m − 1 benign
    clients in that order, it is one of those zeroed clients, which flwbc's emulated round
    leaves out: it is drawn uniformly from the benign clients not in the round, trains
    like them, and enters first with a = 1/Σn. With uniform weighting Σn = K, so Σ a_i is
    (K − N_m + 1)/K or (K + 1)/K (0.6 or 1.1 for K = 10, N_m = 5). Only called for
    N_m > 1: with one attacker nothing is zeroed and the quirk changes nothing."""
    k = exp.cfg.federation.clients_per_round
    rng = numpy_rng(exp.cfg.seed, "reference-order", t)
    num = weights.clone()
    if int(rng.integers(k)) == 0:
        num[malicious.index(True)] = 1.0
    else:
        first = int(rng.choice(np.setdiff1d(exp.benign_ids, clients)))
        clients, malicious = [first, *clients], [False, *malicious]
        num = torch.cat([torch.ones(1, dtype=num.dtype), num])
    total = float(weights.sum())
    return RoundPlan(t, True, clients, malicious, (num / total).float(), float(num.sum()) / total)


@register_attack("targeted")
class TargetedAttack(Attack[TargetedOptions]):
    """The paper's eq. 3: train on relabelled D_M (real, boost or emulate; kernel-regularised)."""

    goal = "targeted"

    Options = TargetedOptions

    def __init__(self, cfg: ExperimentConfig, options: TargetedOptions | None = None) -> None:
        super().__init__(cfg, options)
        if self.options.emulate_average == "reference":
            _check_reference_average(cfg, self.options)

    def stand_in(self) -> bool:
        return self.options.mode == "emulate"

    def plan_round(
        self,
        exp: ExperimentContext,
        t: int,
        clients: list[int],
        malicious: list[bool],
        weights: Tensor,
        count: int,
    ) -> RoundPlan | None:
        if self.stand_in() and self.options.emulate_average == "reference" and count > 1:
            return reference_average_plan(exp, t, clients, malicious, weights)
        return None

    def plan(
        self, exp: ExperimentContext, t: int, c: int, generator: torch.Generator
    ) -> tuple[int, Iterator[Epoch]]:
        att, loc = self.options, self.cfg.local
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
        att = self.options
        assert exp.y_mal is not None
        batch = self.cfg.local.batch_size
        return (n, len(exp.y_mal), batch, att.epochs, att.alpha)

    def init(self, run: ClientRun) -> Callable[[Tensor], Tensor] | None:
        """The kernel term's gradient for attacker c (`kernel_term`; None without one)."""
        return kernel_term(run, self.options.kernel_reg, self.options.kernel_batch)

    def grad(self, state: Callable[[Tensor], Tensor] | None, w: Tensor) -> Tensor | None:
        return state(w) if state is not None else None

    def final(self, state: Callable[[Tensor], Tensor] | None, update: Tensor) -> Tensor:
        if self.options.mode == "boost":
            return update * self.options.boost
        return update
