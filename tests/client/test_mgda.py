"""MGDA's two-task balancing (`flwbc.client.mgda`) against a brute force and against the
official blind-backdoor step written out with torch's own modules and optimiser."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flwbc.attacks.backdoor import blind_plan
from flwbc.client.local import Balanced, local_sgd
from flwbc.client.mgda import mgda_scales, min_norm_gamma
from flwbc.models import FlatModel, build_model


def _official_from2(v1v1: float, v1v2: float, v2v2: float) -> float:
    """`MGDASolver._min_norm_element_from2`'s γ (LeadFL at 06ecc98,
    backdoors/utils/min_norm_solvers.py), written out."""
    if v1v2 >= v1v1:
        return 0.999
    if v1v2 >= v2v2:
        return 0.001
    return -1.0 * ((v1v2 - v2v2) / (v1v1 + v2v2 - 2 * v1v2))


def test_gamma_is_the_min_norm_point_inside_and_the_official_ends_outside() -> None:
    rng = np.random.default_rng(0)
    cs = np.linspace(0.0, 1.0, 200001)
    inside = 0
    for _ in range(300):
        v1, v2 = rng.normal(size=(2, 7)) * rng.uniform(0.1, 3.0, size=(2, 1))
        if rng.random() < 0.3:
            v2 = v1 * rng.uniform(0.2, 2.0) + 0.05 * rng.normal(size=7)
        d = [float(v1 @ v1), float(v1 @ v2), float(v2 @ v2)]
        got = float(min_norm_gamma(*torch.tensor(d, dtype=torch.float64)))
        assert got == pytest.approx(_official_from2(*d), rel=1e-12, abs=1e-12)
        if d[1] < min(d[0], d[2]):
            inside += 1
            norms = ((cs[:, None] * v1 + (1 - cs[:, None]) * v2) ** 2).sum(1)
            assert got == pytest.approx(cs[norms.argmin()], abs=1e-5)
    assert inside > 100


def test_scales_normalise_each_gradient_by_its_loss_capped_at_ten() -> None:
    g = torch.randn(2, 3, 11, dtype=torch.float64)
    losses = torch.tensor([[0.5, 12.0, 3.0], [20.0, 0.1, 3.0]], dtype=torch.float64)
    scales = mgda_scales(g, losses)
    for j in range(3):
        v = [g[t, j] / (min(float(losses[t, j]), 10.0) + 1e-5) for t in range(2)]
        gamma = _official_from2(float(v[0] @ v[0]), float(v[0] @ v[1]), float(v[1] @ v[1]))
        assert scales[:, j].tolist() == pytest.approx([gamma, 1 - gamma], rel=1e-12)
    with pytest.raises(ValueError, match="two tasks"):
        mgda_scales(torch.randn(3, 1, 4), torch.ones(3, 1))


def _official_blind_steps(
    module: torch.nn.Module, batches: list[tuple[torch.Tensor, ...]], lr: float, mom: float
) -> torch.Tensor:
    """The official attacker's loop (fltk/core/client.py, Backdoor branch, with
    `compute_blind_loss`): per batch, each task's loss and gradient over every parameter, the
    scales from loss-normalised gradients (backdoor task first), the scaled loss backward and
    one torch SGD step."""
    params = list(module.parameters())
    opt = torch.optim.SGD(params, lr=lr, momentum=mom)
    for xb, yb, xc, yc in batches:
        opt.zero_grad()
        lb = F.nll_loss(module(xb), yb)
        ln = F.nll_loss(module(xc), yc)
        gb = torch.autograd.grad(lb, params, retain_graph=True)
        gn = torch.autograd.grad(ln, params, retain_graph=True)
        nb, nn_ = min(lb.item(), 10.0) + 1e-5, min(ln.item(), 10.0) + 1e-5

        def dot(
            a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...], sa: float, sb: float
        ) -> float:
            return sum(float((u / sa * (v / sb)).sum()) for u, v in zip(a, b, strict=True))

        gamma = _official_from2(dot(gb, gb, nb, nb), dot(gb, gn, nb, nn_), dot(gn, gn, nn_, nn_))
        (gamma * lb + (1 - gamma) * ln).backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in params])


def test_balanced_local_sgd_equals_the_official_blind_loop() -> None:
    torch.manual_seed(0)
    module = build_model("mlp", 1, 28, 10)
    model = FlatModel(module)
    x = torch.randn(24, 1, 28, 28)
    y = torch.randint(0, 10, (24,))
    xt = x.clone()
    xt[:, :, :3, :3] = 2.8
    gen = torch.Generator().manual_seed(1)
    plan = list(blind_plan(x, y, xt, 8, 1.0, 8, 2, gen))
    steps = [s for epoch in plan for s in epoch]
    assert all(isinstance(s, Balanced) and len(s) == 2 for s in steps)
    assert all((s[0].y == 8).all() for s in steps)
    w0 = model.get_vector()
    got = local_sgd(model, w0, plan, lr=0.05, momentum=0.5).weights
    ref = _official_blind_steps(
        module, [(s[0].x, s[0].y, s[1].x, s[1].y) for s in steps], 0.05, 0.5
    )
    torch.testing.assert_close(got, ref, atol=2e-6, rtol=1e-5)


def test_a_partial_fraction_triggers_the_first_round_fB_images_of_the_copy() -> None:
    x = torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1)
    y = torch.zeros(10, dtype=torch.long)
    xt = -x
    gen = torch.Generator().manual_seed(0)
    (epoch,) = list(blind_plan(x, y, xt, 3, 0.25, 10, 1, gen))
    ((back, clean),) = epoch
    assert sorted(clean.x.flatten().tolist()) == list(range(10))
    assert back.y.tolist() == [3, 3] + [0] * 8  # round(2.5) = 2, Python's rounding
    assert torch.equal(back.x[:2], -clean.x[:2]) and torch.equal(back.x[2:], clean.x[2:])


@pytest.mark.parametrize("name", ["fmnist_cnn", "fmnist_cnn_bn"])
def test_balanced_steps_in_the_batched_engine_equal_each_client_alone(name: str) -> None:
    """Three clients' blind-backdoor steps trained in lock-step through the grouped forward
    equal each client trained alone through the model (the reference path)."""
    from flwbc.client.local import local_train
    from flwbc.engine.batched import batched_forward, grouped_loss

    torch.manual_seed(1)
    model = FlatModel(build_model(name, 1, 28, 10))
    w0 = model.get_vector()
    plans = []
    for c in range(3):
        x = torch.rand(20, 1, 28, 28)
        y = torch.randint(0, 10, (20,))
        xt = x.clone()
        xt[:, :, 3:8, 23:26] = 2.8
        gen = torch.Generator().manual_seed(c)
        plans.append(list(blind_plan(x, y, xt, 8, 1.0, 8, 1, gen)))
    alone = torch.stack([local_sgd(model, w0, p, lr=0.05, momentum=0.1).weights for p in plans])
    together, _, steps = local_train(
        model,
        w0.expand(3, -1),
        [iter(p) for p in plans],
        lr=0.05,
        momentum=0.1,
        loss_fn=grouped_loss(batched_forward(model)),
    )
    assert steps == 3
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
