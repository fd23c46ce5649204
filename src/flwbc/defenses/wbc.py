"""FL-WBC (Sun et al., "FL-WBC: Enhancing Robustness against Model Poisoning Attacks in
Federated Learning from a Client Perspective", NeurIPS 2021, §5.1 eq. 8-10): after every local
SGD step, perturb with Laplace noise the parameters whose Hessian-diagonal estimate is below the
noise's magnitude (the near-kernel directions where an attack's effect persists).

Assumes nothing about the attackers. Options (`WBCOptions`): s, and the reference code's noise
parametrisation, parameter set, Hessian proxy and per-epoch reset; the step itself is
`flwbc.client.wbc.WBCStep`. Noise comes from the stream (seed, "wbc", t, c).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from flwbc.client.local import StepHook
from flwbc.client.wbc import WBCOptions, WBCStep
from flwbc.defenses.base import ClientDefense, ClientRow, register_client_defense
from flwbc.rng import torch_generator


@register_client_defense("wbc")
class WBCDefense(ClientDefense[WBCOptions]):
    """FL-WBC's per-step perturbation of the local Hessian's near-kernel (eq. 8-10)."""

    Options = WBCOptions

    def step_key(self) -> Hashable:
        o = self.options
        return (o.noise, o.params, o.hessian, o.reset_each_epoch)

    def step_hook(self, rows: Sequence[ClientRow], position: int) -> StepHook:
        first = rows[0].exp
        return WBCStep(
            self.options,
            self.cfg.local.lr,
            first.model.weight_mask,
            [
                torch_generator(r.exp.cfg.seed, "wbc", r.round, r.client, device=first.device)
                for r in rows
            ],
            [r.exp.defenses[position].options.s for r in rows],
        )
