"""FL-WBC (Sun et al., "FL-WBC: Enhancing Robustness against Model Poisoning Attacks in
Federated Learning from a Client Perspective", NeurIPS 2021, §5.1 eq. 8-10): after every local
SGD step, perturb with Laplace noise the parameters whose Hessian-diagonal estimate is below the
noise's magnitude (the near-kernel directions where an attack's effect persists).

Assumes nothing about the attackers. Options (`WBCOptions`): s, and the reference code's noise
parametrisation, parameter set, Hessian proxy and per-epoch reset; the step itself is
`flwbc.client.wbc.WBCStep`. Noise comes from the stream (seed, "wbc", t, c).
"""

from __future__ import annotations

from torch import Tensor

from flwbc.client.transform import ClientRun, SGDStep
from flwbc.client.wbc import WBCOptions, WBCStep
from flwbc.defenses.base import ClientDefense, register_client_defense
from flwbc.rng import torch_generator


@register_client_defense("wbc")
class WBCDefense(ClientDefense[WBCOptions]):
    """FL-WBC's per-step perturbation of the local Hessian's near-kernel (eq. 8-10)."""

    Options = WBCOptions

    def init(self, run: ClientRun) -> WBCStep:
        exp = run.exp
        gen = torch_generator(exp.cfg.seed, "wbc", run.round, run.client, device=exp.device)
        return WBCStep(self.options, self.cfg.local.lr, exp.model.weight_mask, gen)

    def start_epoch(self, state: WBCStep, epoch: int) -> None:
        state.new_epoch()

    def after_step(self, state: WBCStep, s: SGDStep) -> Tensor:
        return state(s.w_hat.unsqueeze(0), s.step.unsqueeze(0), s.grad.unsqueeze(0))[0]

    def stats(self, state: WBCStep) -> dict[str, float]:
        return {"wbc_perturbed": state.perturbed_fraction()}
