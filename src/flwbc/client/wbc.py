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


def laplace_scale(s: float, noise: str) -> float:
    """Laplace scale b for strength s: the paper draws Υ with std s (b = s/√2), the reference
    code passes s as the scale (std √2·s)."""
    if noise == "std":
        return s / math.sqrt(2.0)
    if noise == "scale":
        return s
    raise ValueError(f"unknown Laplace parametrisation '{noise}'")


def laplace_noise(
    shape: tuple[int, ...], scale: float, generator: torch.Generator, device: torch.device | str
) -> Tensor:
    """Laplace(0, scale) samples from a single uniform draw by inverse CDF.

    torch.rand gives k·2⁻²⁴; u = (2k + 1)·2⁻²⁴ − 1 is computed exactly in float32, lies strictly
    inside (−1, 1) (no infinite samples) and is exactly symmetric about 0.
    """
    u = torch.rand(shape, generator=generator, device=device).mul_(2.0).add_(2.0**-24 - 1.0)
    return torch.log1p(-u.abs()).mul_(-scale).mul_(torch.sign(u))


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
    """The stateful FL-WBC step of one client in one round: remembers the previous step."""

    def __init__(
        self,
        cfg: WBCConfig,
        lr: float,
        weight_mask: Tensor,
        generator: torch.Generator,
    ):
        self.cfg = cfg
        self.lr = lr
        self.scale = laplace_scale(cfg.s, cfg.noise)
        self.allowed = weight_mask if cfg.params == "weights" else None
        self.generator = generator
        self.prev: Tensor | None = None
        self.perturbed = torch.zeros((), dtype=torch.float64, device=weight_mask.device)
        self.steps = 0

    def new_epoch(self) -> None:
        if self.cfg.reset_each_epoch:
            self.prev = None

    def __call__(self, w_hat: Tensor, step: Tensor, grad: Tensor) -> Tensor:
        """Apply FL-WBC after the SGD step `w_hat = w + step` taken with gradient `grad`."""
        proxy = step if self.cfg.hessian == "update" else grad
        prev, self.prev = self.prev, proxy
        if prev is None or self.scale == 0.0:
            return w_hat
        diff = (proxy - prev).abs_()
        if self.cfg.hessian == "update":
            diff.div_(self.lr)
        noise = laplace_noise(tuple(w_hat.shape), self.scale, self.generator, w_hat.device).to(
            w_hat.dtype
        )
        out, mask = wbc_perturb(w_hat, diff, noise, self.lr, self.allowed)
        self.perturbed += mask.sum()
        self.steps += 1
        return out

    def perturbed_fraction(self) -> float:
        """Mean fraction of parameters perturbed per perturbed step."""
        if self.steps == 0:
            return 0.0
        return float(self.perturbed) / (self.steps * self.prev.numel())
