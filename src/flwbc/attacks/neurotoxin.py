"""Neurotoxin (Zhang, Panda, Song, Yang, Mahoney, Gonzalez, Ramchandran & Mittal, "Neurotoxin:
Durable backdoors in federated learning", ICML 2022): backdoor training (the BadNets-style
poisoning of `flwbc.attacks.backdoor`) in which every step's gradient is projected off the
top-`topk`% coordinates, by magnitude, of the last global update θ_{t−1} − θ_{t−2}: the
backdoor is written into coordinates that benign clients rarely change, so it outlives the
attack.

The projection is applied to each SGD step's gradient (as in the official code, which masks
`.grad` before `optimizer.step()`); with torch's coordinate-wise momentum that is exactly the
same as keeping the masked coordinates at the global model's values, which is how it is done
here (after every step), so the update is exactly zero there.

`mask`: `global_update` (default, the paper's Algorithm 1): S = top-k% of |θ_{t−1} − θ_{t−2}|,
the global models the attacker is sent (it observes every round's global model, like any
client downloading it; the state is saved in checkpoints so a resumed run continues
identically). `clean_gradient`: the official code's (jhcknzzm/Federated-Learning-Backdoor,
`grad_mask_cv`): S = top-k% of |∇ L(θ_{t−1})|, the gradient of the mean loss on clean data at
the global model; its simulation sums it over the clean data of 30 sampled participants, here
it is the attacker's own clean data. Without a previous global update (round 1, whose global
model is the first the attacker sees) `global_update` masks nothing: that round's attack is
plain backdoor training.

`topk`: the percentage of coordinates masked, the count being ⌊P·topk/100 + ½⌋ of P (the
official code masks P − int(P·ratio), which can differ by one coordinate); ties are broken by
the lower index. Default 1 (%): `--gradmask_ratio 0.99` (the top 1% masked), the value most of
the official code's run scripts use (some use 0.97 and 0.95); the paper's ablation sweeps it.

Assumed knowledge: the attacker's own data and the global models of the last two rounds
(`clean_gradient`: of the current round only).

Not with `mask: global_update` on an engine whose clients never see past global models
(`Engine.no_past_models`: Flower's, where each ClientApp builds its own experiment); refused
with one line. Not built: the paper's optional PGD norm bound on the attacker's update.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from flwbc.attacks.backdoor import BackdoorAttack, BackdoorOptions
from flwbc.attacks.base import register_attack
from flwbc.client.transform import ClientRun, SGDStep
from flwbc.errors import FlwbcError
from flwbc.plugins import registered

if TYPE_CHECKING:
    from flwbc.config import ExperimentConfig
    from flwbc.context import ExperimentContext


class NeurotoxinOptions(BackdoorOptions):
    topk: float = Field(
        1.0,
        gt=0,
        lt=100,
        description="percentage of coordinates, largest first, kept off the backdoor "
        "(official CIFAR-10 runs: 1)",
    )
    mask: Literal["global_update", "clean_gradient"] = Field(
        "global_update",
        description="rank coordinates by the last global update (paper) or by the gradient "
        "on the attacker's clean data at the global model (official code)",
    )


def topk_count(p: int, topk: float) -> int:
    """How many of p coordinates are masked: ⌊p·topk/100 + ½⌋."""
    return min(p, int(p * topk / 100 + 0.5))


def topk_mask(scores: Tensor, topk: float) -> Tensor:
    """Boolean [P]: the top-`topk`% coordinates of |scores| (ties: lower index first)."""
    order = torch.argsort(scores.abs(), descending=True, stable=True)
    masked = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    masked[order[: topk_count(scores.numel(), topk)]] = True
    return masked


def project_off(grad: Tensor, masked: Tensor) -> Tensor:
    """The gradient with the masked coordinates zeroed (the paper's projection)."""
    return torch.where(masked, torch.zeros_like(grad), grad)


def clean_gradient(exp: ExperimentContext, c: int, w: Tensor, batch_size: int = 500) -> Tensor:
    """∇ of the mean NLL on client c's own (clean) data at weights w [P]."""
    x, y = exp.client_data(c)
    w = w.detach().requires_grad_(True)
    grad = torch.zeros_like(w)
    for s in range(0, len(y), batch_size):
        loss = F.nll_loss(
            exp.model(w, x[s : s + batch_size]), y[s : s + batch_size], reduction="sum"
        )
        (g,) = torch.autograd.grad(loss / len(y), w)
        grad += g
    return grad


@register_attack("neurotoxin")
class Neurotoxin(BackdoorAttack[NeurotoxinOptions]):
    """Backdoor training with each step projected off the top-k% coordinates of the last
    global update (or of the clean gradient)."""

    Options = NeurotoxinOptions

    def __init__(self, cfg: ExperimentConfig, options: NeurotoxinOptions | None = None) -> None:
        super().__init__(cfg, options)
        engines = registered("engine")
        why = engines[cfg.engine].no_past_models
        if why is not None and self.nt.mask == "global_update":
            able = sorted(n for n, e in engines.items() if e.no_past_models is None)
            raise FlwbcError(
                "attack 'neurotoxin' with mask=global_update needs the past global models, "
                f"which engine {cfg.engine} does not give its clients ({why}); use engine "
                f"{' or '.join(able)}, or mask=clean_gradient"
            )
        self.prev: Tensor | None = None
        """The last global model observed (θ_{t−1} once round t−1 is done)."""
        self.update: Tensor | None = None
        """The last global update θ_{t−1} − θ_{t−2} (None before two models were seen)."""

    @property
    def nt(self) -> NeurotoxinOptions:
        return self.options

    def observe(self, exp: ExperimentContext, t: int, w: Tensor) -> None:
        w = w.detach()
        if self.prev is not None:
            self.update = w - self.prev
        self.prev = w.clone()

    def state_dict(self) -> dict[str, Tensor]:
        state = {"prev": self.prev, "update": self.update}
        return {k: v for k, v in state.items() if v is not None}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.prev, self.update = state.get("prev"), state.get("update")

    def masked(self, exp: ExperimentContext, c: int, w0: Tensor) -> Tensor:
        """Boolean [P]: the coordinates attacker c leaves alone this round (none when there is
        no previous global update)."""
        if self.nt.mask == "clean_gradient":
            return topk_mask(clean_gradient(exp, c, w0, self.cfg.eval.batch_size), self.nt.topk)
        if self.update is None:
            return torch.zeros(w0.shape, dtype=torch.bool, device=w0.device)
        return topk_mask(self.update.to(w0.device), self.nt.topk)

    def init(self, run: ClientRun) -> tuple[Tensor, Tensor]:
        """Attacker c's starting weights and the coordinates it leaves alone this round."""
        return run.w0.detach(), self.masked(run.exp, run.client, run.w0)

    def after_step(self, state: tuple[Tensor, Tensor], s: SGDStep) -> Tensor:
        """The masked coordinates reset to the starting weights after every step: the same
        as SGD with momentum on the projected gradient (momentum is per coordinate)."""
        w0, masked = state
        return torch.where(masked, w0, s.w_hat)
