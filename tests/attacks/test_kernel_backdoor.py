"""The kernel-regularised backdoor (`kernel_backdoor`): BadNets bit for bit at λ = 0; with
λ > 0 each attacker step adds 2λ·H·H·(w − W), H the dense Hessian (torch.autograd) of the loss of
`kernel_batch` of its own clean images drawn from the stream (seed, "kernel", t, c) at the
global model W (the penalty's effect on the benign curvature of the update is what the adaptive
spec measures, not a property of a few toy steps)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flwbc.client.local import local_sgd
from flwbc.client.transform import ClientTransform
from flwbc.rng import torch_generator
from flwbc.round import client_plan, client_update
from tests.attacks.test_wbc_aware import ROUND, tiny_exp


def _exp(name: str, **options: object):
    exp = tiny_exp(name, **options)
    x_all = exp.dataset.train_x.double() / 255
    exp.client_data = lambda c: (
        x_all[exp.client_indices[c]],
        exp.dataset.train_y[exp.client_indices[c]],
    )
    return exp


class DensePenalty(ClientTransform):
    """The reference gradient term: 2λ·H·H·(w − W) with a dense H."""

    def __init__(self, h: torch.Tensor, lam: float, w0: torch.Tensor) -> None:
        self.h, self.lam, self.w0 = h, lam, w0

    def grad(self, state: object, w: torch.Tensor) -> torch.Tensor:
        return 2 * self.lam * self.h @ (self.h @ (w - self.w0))


def _dense_hessian(exp, w: torch.Tensor, c: int, batch: int) -> torch.Tensor:
    x, y = exp.client_data(c)
    idx = torch.randperm(len(y), generator=torch_generator(exp.cfg.seed, "kernel", ROUND, c))[
        :batch
    ]
    return torch.autograd.functional.hessian(lambda v: F.nll_loss(exp.model(v, x[idx]), y[idx]), w)


def test_lambda_zero_is_badnets_bit_for_bit() -> None:
    plain, zero = _exp("badnets"), _exp("kernel_backdoor", kernel_reg=0.0)
    w = (
        torch.randn(
            plain.model.num_params, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
        )
        * 0.1
    )
    assert torch.equal(
        client_update(plain, ROUND, 0, True, w)[0], client_update(zero, ROUND, 0, True, w)[0]
    )


def test_each_step_adds_the_dense_kernel_penalty_gradient() -> None:
    lam, batch, c = 0.5, 8, 1
    exp = _exp("kernel_backdoor", kernel_reg=lam, kernel_batch=batch)
    w0 = (
        torch.randn(
            exp.model.num_params, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
        )
        * 0.1
    )
    got = client_update(exp, ROUND, c, True, w0)[0]
    h = _dense_hessian(exp, w0, c, batch)

    _, plan = client_plan(exp, ROUND, c, True)
    loc = exp.cfg.local
    want = local_sgd(
        exp.model,
        w0,
        plan,
        lr=loc.lr,
        momentum=loc.momentum,
        chain=[(DensePenalty(h, lam, w0), None)],
    )
    torch.testing.assert_close(got, want.weights - w0, rtol=1e-9, atol=1e-12)
    plain = client_update(_exp("badnets"), ROUND, c, True, w0)[0]
    assert not torch.allclose(got, plain)
