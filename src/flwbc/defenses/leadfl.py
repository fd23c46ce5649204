"""LeadFL (Zhu, Roos & Chen, "LeadFL: Client Self-Defense against Model Poisoning in Federated
Learning", ICML 2023; official code github.com/chaoyitud/LeadFL, `fltk/core/client.py`,
`Client.train`, the `defense == "LeadFL"` branch): each benign client adds to its local loss a
regulariser α‖I − ηH‖ on the local Hessian H, so that a perturbation δ of the parameters (an
attack's effect on the global model), which a local step maps to (I − ηH)δ, is driven out
instead of persisting in the Hessian's near-kernel; the regulariser's gradient is clipped per
coordinate to [−q, q] (the clipping norm q) before it enters the step.

Assumes nothing about the attackers; attackers never defend. Both forms below compose with every
server rule, chain with the other client defenses (`defense.client: [leadfl, wbc]`) and run
unchanged in both engines. Options: `defense.options.leadfl` (`LeadFLOptions`). The paper's
full text was not at hand here: its stated method (the abstract, Algorithm 1's name, the
clipping norm q) is the default form, the official code the other, and every difference
between the two is listed.

`form: hessian` (default), what the paper states, at local step i at the client's weights w:
    R(w) = α‖M(I − ηH(w))Mv‖₂,   w ← w − η·SGD(∇F(w) + clip_q(M∇R(w)))
with H(w) the Hessian of the client's mean NLL on `hessian_batch` of its own images drawn per
step from the stream (seed, "leadfl", t, c), v the direction, M the parameter mask (identity, or
the weights only) and ∇R exact: H·v by double backpropagation and its gradient by a third one
(`regulariser_grad`), never a dense Hessian. It is an extra gradient term of benign clients
(`ClientDefense.extra_grad`).
- direction v: `probe` (default) a fresh Rademacher vector z per step, since ‖(I − ηH)z‖
  concentrates at ‖I − ηH‖_F in high dimension (E‖(I − ηH)z‖² = ‖I − ηH‖_F² exactly); `step`
  the client's previous local step (no term at the round's first step).
- H on an independent batch of the step's size (the extra-gradient interface does not see the
  step's batch); one norm over the masked parameter vector; one SGD step.
- `params: weights` regularises only tensors named "weight" (as the code does);
  `reset_each_epoch`: no term at each epoch's first step (as the code).

`form: code`, the official code's computation exactly, a step hook (`CodeStep`). It computes no
Hessian: after the ordinary SGD step to W it penalises, per tensor named "weight",
‖W − W_prev − G_prev − η·1‖ (W_prev the weights after the previous step, G_prev the gradient
that step applied), summed over tensors, times α. It does not zero the gradient first, so the
loss gradient plus that term's gradient (a unit vector per tensor, times α) is clipped by value
to [−q, q] over all parameters, biases included, and a second optimiser step is taken: the loss
gradient is applied twice and the momentum buffer advanced twice. The first step of every epoch
has no term and forgets the previous one. With α = 0 this form still takes the second step.

The code form equals the official loop within a round (a test transcribes it), up to float
rounding. Across rounds the official client keeps one optimiser, so its momentum buffer carries
over from round to round (its default momentum is 0.1); here, as for every client, momentum
starts at zero each round (`local.momentum`). The official `regular_schedule` flag (off by
default) scales the term by 0.8^⌊round/100⌋ and is not modelled. Chained after this form, a
hook sees the ordinary step and the loss gradient, not the second step.

Both: `first_half` (the code's `defense_half`, off there by default too) regularises only epochs
< ⌊E/2⌋, none when E = 1. α = 0.4 and q = 0.2 are `regular_weight` and `pert_strength` of the
code's `configs/template.yaml` (its Fashion-MNIST setup with η = 0.01 and batch 32, as in the
paper).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field, ValidationInfo, field_validator
from torch import Tensor

from flwbc.client.local import StepHook
from flwbc.curvature import Loss, batch_loss
from flwbc.defenses.base import ClientDefense, ClientRow, register_client_defense
from flwbc.plugin_options import PluginOptions
from flwbc.rng import torch_generator

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext


def regulariser_grad(
    loss: Loss, w: Tensor, v: Tensor, lr: float, alpha: float, mask: Tensor | None = None
) -> Tensor:
    """∇_w α‖M(I − ηH(w))Mv‖₂ for the Hessian H(w) of `loss`, v held fixed and M the 0/1
    `mask` (None: all); the result is masked too. Three backward passes: the gradient and H·v
    with their graphs, then the norm's gradient (which includes the derivative of H itself)."""
    if mask is not None:
        v = v * mask
    w = w.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(w), w, create_graph=True)
    (hv,) = torch.autograd.grad(g, w, grad_outputs=v.detach(), create_graph=True)
    r = v.detach() - lr * hv
    if mask is not None:
        r = r * mask
    norm = r.norm()
    if not norm.requires_grad or float(norm.detach()) == 0.0:
        return torch.zeros_like(w).detach()
    (out,) = torch.autograd.grad(norm, w)
    out = out.mul_(alpha)
    return out * mask if mask is not None else out


class LeadFLTerm:
    """Client c's LeadFL gradient term for one round: called once per local step with the
    current weights, it keeps the step count (for epochs) and the previous weights."""

    def __init__(
        self,
        opts: LeadFLOptions,
        model_loss: Callable[[Tensor], Loss],
        n: int,
        batch: int,
        lr: float,
        steps_per_epoch: int,
        epochs: int,
        mask: Tensor | None,
        generator: torch.Generator,
    ) -> None:
        self.opts = opts
        self.model_loss = model_loss
        self.n = n
        self.batch = batch
        self.lr = lr
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.mask = mask
        self.generator = generator
        self.step = 0
        self.prev: Tensor | None = None
        self.applied = 0

    def __call__(self, w: Tensor) -> Tensor:
        o = self.opts
        epoch, i = divmod(self.step, self.steps_per_epoch)
        self.step += 1
        prev, self.prev = self.prev, w.detach().clone()
        if o.reset_each_epoch and i == 0:
            prev = None
        # the draws of every step, used or not, so that options do not shift the stream
        idx = torch.randperm(self.n, generator=self.generator)[: self.batch]
        probe = torch.randint(0, 2, w.shape, generator=self.generator).to(w.dtype) * 2 - 1
        active = not (o.first_half and epoch >= self.epochs // 2)
        if o.reset_each_epoch and i == 0:
            active = False
        if o.direction == "step":
            if prev is None:
                active = False
            v = w.detach() - prev if prev is not None else None
        else:
            v = probe.to(w.device)
        if not active or v is None:
            return torch.zeros_like(w)
        grad = regulariser_grad(
            self.model_loss(idx.to(w.device)), w, v, self.lr, o.alpha, self.mask
        )
        self.applied += 1
        return grad.clamp_(-o.clip, o.clip) if o.clip is not None else grad


class CodeStep:
    """The official code's LeadFL step (`form: code`) on G rows [G, P] of one lock-step group:
    after the ordinary step to W, the loss gradient plus α·∇Σ_k‖W_k − W_prev,k − G_prev,k − η‖
    (k over the weight tensors) clipped by value to [−q, q], and a second momentum-SGD step with
    it; nothing at an epoch's first step, which starts the memory afresh."""

    def __init__(
        self,
        segments: list[tuple[int, int]],
        alphas: Tensor,
        clip: float | None,
        lr: float,
        active_epochs: int | None,
    ) -> None:
        self.segments = segments
        self.alphas = alphas.unsqueeze(1)
        self.clip = clip
        self.lr = lr
        self.active_epochs = active_epochs
        self.epoch = -1
        self.prev_w: Tensor | None = None
        self.prev_g: Tensor | None = None
        self.velocity: Tensor | None = None
        self.momentum = 0.0

    def bind(self, velocity: Tensor, momentum: float) -> None:
        self.velocity = velocity
        self.momentum = momentum

    def new_epoch(self) -> None:
        self.epoch += 1
        self.prev_w = self.prev_g = None

    def __call__(self, w_hat: Tensor, step: Tensor, grad: Tensor) -> Tensor:
        if self.active_epochs is not None and self.epoch >= self.active_epochs:
            return w_hat
        if self.prev_w is None or self.prev_g is None:
            self.prev_w, self.prev_g = w_hat.clone(), grad.clone()
            return w_hat
        assert self.velocity is not None, "CodeStep needs the momentum buffer (bind)"
        unit = torch.zeros_like(w_hat)
        for a, b in self.segments:
            d = w_hat[:, a:b] - self.prev_w[:, a:b] - self.prev_g[:, a:b] - self.lr
            n = d.norm(dim=1, keepdim=True)
            unit[:, a:b] = torch.where(n > 0, d / n.clamp_min(torch.finfo(d.dtype).tiny), 0.0)
        g2 = grad + self.alphas * unit
        if self.clip is not None:
            g2 = g2.clamp(-self.clip, self.clip)
        self.velocity.mul_(self.momentum).add_(g2)
        w = w_hat.add(self.velocity.mul(-self.lr))
        self.prev_w, self.prev_g = w.clone(), g2
        return w


def weight_segments(names: Sequence[str], numels: Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) of each parameter tensor named "weight" in the flat vector."""
    out, start = [], 0
    for name, n in zip(names, numels, strict=True):
        if "weight" in name:
            out.append((start, start + n))
        start += n
    return out


class LeadFLOptions(PluginOptions):
    """LeadFL's options (Zhu et al., ICML 2023; chaoyitud/LeadFL)."""

    alpha: float = Field(
        0.4,
        ge=0,
        allow_inf_nan=False,
        description="α, the regulariser's coefficient (code: regular_weight, 0.4 in its "
        "template); 0 is no defense",
    )
    clip: float | None = Field(
        0.2,
        gt=0,
        allow_inf_nan=False,
        description="q: clip the regulariser's gradient to [−q, q] per coordinate (paper's "
        "clipping, code's clip_grad_value_ with pert_strength 0.2); null: no clipping",
    )
    direction: Literal["probe", "step"] = Field(
        "probe",
        description="v in ‖(I − ηH)v‖: a fresh Rademacher probe per step, estimating the "
        "paper's ‖I − ηH‖_F; or the previous local step (the code's finite-difference "
        "quantity)",
    )
    hessian_batch: int | None = Field(
        None,
        ge=1,
        description="images of the client's own data, drawn per step, on which H is taken; "
        "null: local.batch_size (the step's size, paper and code)",
    )
    params: Literal["all", "weights"] = Field(
        "all",
        description="regularise all parameters (paper) or only weights, not biases (code)",
    )
    reset_each_epoch: bool = Field(
        False,
        description="no term at the first step of every epoch, forgetting the previous step "
        "(code); default: the step direction has no term at the round's first step only",
    )
    first_half: bool = Field(
        False,
        description="regularise only epochs < ⌊E/2⌋ (code's defense_half, default off)",
    )
    form: Literal["hessian", "code"] = Field(
        "hessian",
        description="hessian: the paper's clipped gradient of α‖(I − ηH)v‖ in the step; "
        "code: the official code's finite-difference penalty and second optimiser step",
    )

    @field_validator("form")
    @classmethod
    def _hessian_options_need_hessian_form(cls, form: str, info: ValidationInfo) -> str:
        if form == "code":
            fields = ("direction", "hessian_batch", "params", "reset_each_epoch")
            set_ = [f for f in fields if info.data.get(f) != cls.model_fields[f].default]
            if set_:
                raise ValueError(
                    f"not with form: code ({', '.join(set_)}: form hessian's; the code "
                    "form computes no Hessian and always regularises weights, per epoch)"
                )
        return form


@register_client_defense("leadfl")
class LeadFL(ClientDefense[LeadFLOptions]):
    """LeadFL's clipped Hessian regulariser α‖I − ηH‖ in every benign local step."""

    Options = LeadFLOptions

    def step_key(self) -> Hashable | None:
        opts = self.options
        if opts.form != "code":
            return None
        return ("leadfl-code", opts.clip, opts.first_half, self.cfg.local.epochs)

    def step_hook(self, rows: Sequence[ClientRow], position: int) -> StepHook | None:
        """The code form's second step for a lock-step group (each row's own α)."""
        opts = self.options
        if opts.form != "code":
            return None
        first = rows[0].exp
        alphas = [r.exp.defenses[position].options.alpha for r in rows]  # type: ignore[attr-defined]
        return CodeStep(
            weight_segments(first.model.names, first.model.numels),
            torch.tensor(alphas, dtype=first.dtype, device=first.device),
            opts.clip,
            self.cfg.local.lr,
            self.cfg.local.epochs // 2 if opts.first_half else None,
        )

    def extra_grad(
        self, exp: ExperimentContext, t: int, c: int, w: Tensor
    ) -> Callable[[Tensor], Tensor] | None:
        """The clipped regulariser gradient of benign client c in round t (None when α = 0)."""
        opts = self.options
        if opts.alpha == 0.0 or opts.form != "hessian":
            return None
        loc = self.cfg.local
        x, y = exp.client_data(c)
        mask = exp.model.weight_mask.to(w.dtype) if opts.params == "weights" else None

        def model_loss(idx: Tensor) -> Loss:
            return batch_loss(exp.model, x[idx], y[idx])

        return LeadFLTerm(
            opts,
            model_loss,
            len(y),
            opts.hessian_batch or loc.batch_size,
            loc.lr,
            max(1, math.ceil(len(y) / loc.batch_size)),
            loc.epochs,
            mask,
            torch_generator(self.cfg.seed, "leadfl", t, c),
        )
