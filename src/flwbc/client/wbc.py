"""FL-WBC: perturb the near-kernel directions of the local Hessian (paper §5.1, eq. 8-10).

After each ordinary SGD step Ŵ_{i+1} = W_i − η ΔW-step (eq. 8), the diagonal of the local Hessian
is estimated from how much the update changed since the previous step,
h = |(Ŵ_{i+1} − W_i) − ΔW_i| / η, and the parameter receives η·Υ where h ≤ |Υ| (eq. 9-10),
Υ having i.i.d. Laplace(0, b) entries. Small h marks directions in which the benign objective
is flat (the Hessian's kernel), which is where the attack effect on parameters persists.

ΔW_i is the previous step's SGD update (without its perturbation), so h is the finite-difference
Hessian-diagonal proxy the paper derives. The reference code instead uses |g_i − g_{i−1}|, the
change of the raw gradient, forgets it at every local epoch, and perturbs only "weight"
parameters; each is an option in `WBCConfig`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flwbc.config import WBCConfig
from flwbc.transforms import laplace_noise


def laplace_scale(s: float, noise: str) -> float:
    """Laplace scale b for strength s: the paper draws Υ with std s (b = s/√2), the reference
    code passes s as the scale (std √2·s)."""
    if noise == "std":
        return s / math.sqrt(2.0)
    if noise == "scale":
        return s
    raise ValueError(f"unknown Laplace parametrisation '{noise}'")


def wbc_perturb(
    w_hat: Tensor, hessian_diag: Tensor, noise: Tensor, lr: float, allowed: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Eq. 9-10: add lr·Υ to w_hat where the Hessian-diagonal estimate is at most |Υ|.

    Returns the perturbed parameters and the binary mask M (restricted to `allowed` entries).
    """
    mask = hessian_diag <= noise.abs()
    if allowed is not None:
        mask &= allowed
    return torch.addcmul(w_hat, noise, mask, value=lr), mask


class WBCStep:
    """The stateful FL-WBC step of one round, remembering the previous step.

    It acts on one client's flat parameters [P] or, in the batched engine, on G clients' [G, P]
    at once; each row draws its noise from its own generator, with its own strength (a sweep's
    runs may differ in s).
    """

    def __init__(
        self,
        cfg: WBCConfig,
        lr: float,
        weight_mask: Tensor,
        generator: torch.Generator | list[torch.Generator],
        strengths: list[float] | None = None,
    ):
        self.cfg = cfg
        self.lr = lr
        self.generators = generator if isinstance(generator, list) else [generator]
        s = strengths if strengths is not None else [cfg.s] * len(self.generators)
        self.scales = [laplace_scale(x, cfg.noise) for x in s]
        device = weight_mask.device
        self.active = torch.tensor([sc != 0.0 for sc in self.scales], device=device)
        self.allowed = weight_mask if cfg.params == "weights" else None
        self.numel = weight_mask.numel()
        self.prev: Tensor | None = None
        self.perturbed = torch.zeros(len(self.generators), dtype=torch.float64, device=device)
        self.steps = 0

    def new_epoch(self) -> None:
        if self.cfg.reset_each_epoch:
            self.prev = None

    def __call__(self, w_hat: Tensor, step: Tensor, grad: Tensor) -> Tensor:
        """Apply FL-WBC after the SGD step `w_hat = w + step` taken with gradient `grad`."""
        proxy = step if self.cfg.hessian == "update" else grad
        prev, self.prev = self.prev, proxy
        if prev is None or not any(self.scales):
            return w_hat
        diff = (proxy - prev).abs_()
        if self.cfg.hessian == "update":
            diff.div_(self.lr)
        rows = w_hat.view(len(self.generators), self.numel)
        noise = torch.stack(
            [
                laplace_noise((self.numel,), sc, gen, w_hat.device)
                if sc != 0.0
                else torch.zeros(self.numel, device=w_hat.device)
                for sc, gen in zip(self.scales, self.generators, strict=True)
            ]
        ).to(w_hat.dtype)
        out, mask = wbc_perturb(rows, diff.view_as(rows), noise, self.lr, self.allowed)
        self.perturbed += (mask & self.active.unsqueeze(1)).sum(1)
        self.steps += 1
        return out.view_as(w_hat)

    def perturbed_fractions(self) -> list[float]:
        """Per row, the mean fraction of parameters perturbed per perturbed step."""
        if self.steps == 0:
            return [0.0] * len(self.generators)
        return (self.perturbed / (self.steps * self.numel)).tolist()

    def perturbed_fraction(self) -> float:
        """The same for a single client."""
        return self.perturbed_fractions()[0]
