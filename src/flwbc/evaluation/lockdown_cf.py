"""Consensus fusion (Lockdown, Huang et al., NeurIPS 2023, Alg. 1 l.11; official code
git-disl/Lockdown at 147ec87, `src/federated.py:180-212`): the model Lockdown deploys is the
global model with every coordinate zeroed that fewer than `theta` clients' masks hold. This
metric measures that model's test accuracy and, under a backdoor attack, its backdoor success,
every `eval.every` rounds (the code's "Clean" lines); the global model itself is unchanged.

As the code, the votes are the masks as the round began (before its recovery and pruning),
every client's, trained or not (one that never trained votes with its first mask). Departure:
attackers never run Lockdown here (`flwbc.defenses.lockdown`), so only benign clients vote, while
the code counts its attackers' masks too (θ = 20 of 40 clients, 4 of them attackers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field
from torch import Tensor

from flwbc.attacks.backdoor import BackdoorAttack
from flwbc.defenses.lockdown import Lockdown
from flwbc.evaluation.backdoor import backdoor_success
from flwbc.evaluation.base import Metric, register_metric
from flwbc.metrics import evaluate
from flwbc.plugin_options import PluginOptions

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext


class ConsensusOptions(PluginOptions):
    theta: int = Field(20, ge=1, description="masks that must hold a coordinate (code: 20 of 40)")


def consensus_votes(exp: ExperimentContext, lockdown: Lockdown) -> Tensor:
    """Per coordinate [P], how many benign clients' masks held it as the round began."""
    benign = [c for c in range(exp.cfg.federation.num_clients) if c not in exp.malicious_ids]
    seen = [c for c in benign if c in lockdown.round_start]
    votes = torch.zeros(exp.model.num_params, dtype=torch.float64, device=exp.device)
    for c in seen:
        votes += lockdown.round_start_mask(exp, c)
    unseen = [c for c in benign if c not in lockdown.round_start]
    if lockdown.options.same_mask and unseen:
        votes += len(unseen) * lockdown.initial_mask(exp, unseen[0]).double()
    else:
        for c in unseen:
            votes += lockdown.initial_mask(exp, c)
    return votes


@register_metric("lockdown_cf")
class ConsensusFusion(Metric[ConsensusOptions]):
    """Accuracy and backdoor success of Lockdown's consensus-fused model (cf_acc,
    cf_backdoor_acc); nothing without the lockdown defense."""

    fields = ("cf_acc", "cf_backdoor_acc")
    Options = ConsensusOptions

    def measure(self, exp: ExperimentContext, w: Tensor, t: int) -> dict[str, Any]:
        cfg = exp.cfg
        lockdown = next((d for d in exp.defenses if isinstance(d, Lockdown)), None)
        if lockdown is None or (t % cfg.eval.every != 0 and t != cfg.federation.rounds):
            return {}
        fused = torch.where(consensus_votes(exp, lockdown) >= self.options.theta, w, 0.0)
        x, y = exp.test_data(t)
        acc, _ = evaluate(exp.model, fused, x, y, exp.dataset.normalize, cfg.eval.batch_size)
        out: dict[str, Any] = {"cf_acc": acc}
        attack = exp.attack
        if isinstance(attack, BackdoorAttack):
            out["cf_backdoor_acc"] = backdoor_success(
                exp, fused, attack.test_trigger(exp), attack.target, cfg.eval.batch_size, t
            )
        return out
