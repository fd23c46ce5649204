"""Hessian-free curvature against the dense Hessian of a tiny model (torch.autograd.functional
and numpy's eigendecomposition as references)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from flwbc.analysis.hessian import (
    batch_loss,
    grad_and_hvp,
    hutchinson_diag,
    hvp,
    spectral_norm,
)
from flwbc.models import FlatModel


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4), nn.LogSoftmax(dim=1)
    ).double()
    model = FlatModel(module)
    x = torch.randn(40, 6, dtype=torch.float64)
    y = torch.randint(0, 4, (40,))
    w = model.get_vector()
    loss = batch_loss(model, x, y, batch_size=7)  # chunks that do not divide 40
    dense = torch.autograd.functional.hessian(loss, w)
    return model, x, y, w, loss, dense


def test_chunked_loss_equals_one_batch(tiny):
    model, x, y, w, loss, _ = tiny
    ref = torch.nn.functional.nll_loss(model(w, x), y)
    assert float(loss(w)) == pytest.approx(float(ref), rel=1e-13)


def test_hvp_matches_dense_hessian(tiny):
    _, _, _, w, loss, dense = tiny
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = torch.randn(w.shape, generator=gen, dtype=torch.float64)
        np.testing.assert_allclose(
            hvp(loss, w, v).numpy(), (dense @ v).numpy(), rtol=1e-10, atol=1e-12
        )
        g, hv = grad_and_hvp(loss, w, v)
        np.testing.assert_allclose(hv.numpy(), (dense @ v).numpy(), rtol=1e-10, atol=1e-12)
        wg = w.clone().requires_grad_(True)
        (ref_grad,) = torch.autograd.grad(loss(wg), wg)
        np.testing.assert_allclose(g.numpy(), ref_grad.numpy(), rtol=1e-12, atol=1e-14)


def test_hutchinson_diag_is_unbiased(tiny):
    _, _, _, w, loss, dense = tiny
    m = 3000
    est = hutchinson_diag(loss, w, m, torch.Generator().manual_seed(2))
    diag = torch.diagonal(dense)
    # z ⊙ Hz = diag(H) + Σ_{k≠j} H_jk z_j z_k: mean 0, variance Σ_{k≠j} H_jk² per sample
    off = (dense**2).sum(1) - diag**2
    bound = 5 * torch.sqrt(off / m) + 1e-12
    assert bool(((est - diag).abs() <= bound).all())
    # and it is not trivially right: a single sample is far off somewhere
    one = hutchinson_diag(loss, w, 1, torch.Generator().manual_seed(3))
    assert float((one - diag).abs().max()) > float(bound.max())


def test_exact_zero_rows_are_found(tiny):
    model, x, y, w, loss, dense = tiny
    # a parameter the loss does not depend on has an all-zero Hessian row: its diagonal
    # estimate is exactly 0 for every sample
    module = nn.Sequential(nn.Linear(6, 4), nn.LogSoftmax(dim=1)).double()
    flat = FlatModel(module)
    w2 = flat.get_vector()
    xz = x.clone()
    xz[:, 0] = 0.0  # input feature 0 never varies: the weights reading it do not matter
    lz = batch_loss(flat, xz, y)
    est = hutchinson_diag(lz, w2, 4, torch.Generator().manual_seed(4))
    weight = est[: 4 * 6].view(4, 6)
    assert bool((weight[:, 0] == 0).all())
    assert bool((weight[:, 1:] != 0).all())


def test_spectral_norm_matches_eigenvalues(tiny):
    _, _, _, w, loss, dense = tiny
    eig = np.linalg.eigvalsh(dense.numpy())
    ref = float(np.abs(eig).max())
    got = spectral_norm(loss, w, torch.Generator().manual_seed(5), iters=2000, tol=1e-12)
    assert got == pytest.approx(ref, rel=1e-6)
