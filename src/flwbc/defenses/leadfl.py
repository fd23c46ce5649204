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
(the transform's `grad`).
- direction v: `probe` (default) a fresh Rademacher vector z per step, since ‖(I − ηH)z‖
  concentrates at ‖I − ηH‖_F in high dimension (E‖(I − ηH)z‖² = ‖I − ηH‖_F² exactly); `step`
  the client's previous local step (no term at the round's first step).
- H on an independent batch of the step's size (the extra-gradient interface does not see the
  step's batch); one norm over the masked parameter vector; one SGD step.
- `params: weights` regularises only tensors named "weight" (as the code does);
  `reset_each_epoch`: no term at each epoch's first step (as the code).

`form: code`, the official code's computation exactly, after every step (`CodeStep`). It computes no
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

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from pydantic import Field, ValidationInfo, field_validator
from torch import Tensor

from flwbc.client.transform import ClientRun, SGDStep
from flwbc.curvature import Loss, batch_loss
from flwbc.defenses.base import ClientDefense, register_client_defense
from flwbc.plugin_options import PluginOptions
from flwbc.rng import torch_generator


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
    """Client c's LeadFL gradient term for one round: told where each epoch starts, called
    once per local step with the current weights, it keeps the previous weights."""

    def __init__(
        self,
        opts: LeadFLOptions,
        model_loss: Callable[[Tensor], Loss],
        n: int,
        batch: int,
        lr: float,
        epochs: int,
        mask: Tensor | None,
        generator: torch.Generator,
    ) -> None:
        self.opts = opts
        self.model_loss = model_loss
        self.n = n
        self.batch = batch
        self.lr = lr
        self.epochs = epochs
        self.mask = mask
        self.generator = generator
        self.epoch = 0
        self.index = 0
        self.prev: Tensor | None = None
        self.applied = 0

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.index = epoch, 0

    def __call__(self, w: Tensor) -> Tensor:
        o = self.opts
        epoch, i = self.epoch, self.index
        self.index += 1
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
    """The official code's LeadFL step (`form: code`) for one client: after the ordinary step
    to W, the loss gradient plus α·∇Σ_k‖W_k − W_prev,k − G_prev,k − η‖ (k over the weight
    tensors) clipped by value to [−q, q], and a second momentum-SGD step with it, advancing
    the optimiser's momentum buffer; nothing at an epoch's first step, which starts the memory
    afresh."""

    def __init__(
        self,
        segments: list[tuple[int, int]],
        alpha: float,
        clip: float | None,
        active_epochs: int | None,
    ) -> None:
        self.segments = segments
        self.alpha = alpha
        self.clip = clip
        self.active_epochs = active_epochs
        self.epoch = 0
        self.prev_w: Tensor | None = None
        self.prev_g: Tensor | None = None

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.prev_w = self.prev_g = None

    def __call__(self, s: SGDStep) -> Tensor:
        w_hat, grad = s.w_hat, s.grad
        if self.active_epochs is not None and self.epoch >= self.active_epochs:
            return w_hat
        if self.prev_w is None or self.prev_g is None:
            self.prev_w, self.prev_g = w_hat.clone(), grad.clone()
            return w_hat
        unit = torch.zeros_like(w_hat)
        for a, b in self.segments:
            d = w_hat[a:b] - self.prev_w[a:b] - self.prev_g[a:b] - s.lr
            n = d.norm()
            unit[a:b] = torch.where(n > 0, d / n.clamp_min(torch.finfo(d.dtype).tiny), 0.0)
        g2 = grad + self.alpha * unit
        if self.clip is not None:
            g2 = g2.clamp(-self.clip, self.clip)
        s.velocity.mul_(s.momentum).add_(g2)
        w = w_hat.add(s.velocity.mul(-s.lr))
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

    def init(self, run: ClientRun) -> LeadFLTerm | CodeStep | None:
        """Client c's state for the round: the code form's second step, or the hessian form's
        gradient term (None when α = 0)."""
        opts, exp = self.options, run.exp
        if opts.form == "code":
            return CodeStep(
                weight_segments(exp.model.names, exp.model.numels),
                opts.alpha,
                opts.clip,
                self.cfg.local.epochs // 2 if opts.first_half else None,
            )
        if opts.alpha == 0.0:
            return None
        loc = self.cfg.local
        x, y = exp.client_data(run.client)
        mask = exp.model.weight_mask.to(run.w0.dtype) if opts.params == "weights" else None

        def model_loss(idx: Tensor) -> Loss:
            return batch_loss(exp.model, x[idx], y[idx])

        return LeadFLTerm(
            opts,
            model_loss,
            len(y),
            opts.hessian_batch or loc.batch_size,
            loc.lr,
            loc.epochs,
            mask,
            torch_generator(self.cfg.seed, "leadfl", run.round, run.client),
        )

    def start_epoch(self, state: LeadFLTerm | CodeStep | None, epoch: int) -> None:
        if state is not None:
            state.start_epoch(epoch)

    def grad(self, state: LeadFLTerm | CodeStep | None, w: Tensor) -> Tensor | None:
        return state(w) if isinstance(state, LeadFLTerm) else None

    def after_step(self, state: LeadFLTerm | CodeStep | None, s: SGDStep) -> Tensor:
        return state(s) if isinstance(state, CodeStep) else s.w_hat
