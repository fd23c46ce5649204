"""LeadFL (Zhu, Roos & Chen, ICML 2023): the regulariser's gradient against autograd of the dense
formula, its per-step term, and end-to-end runs on real Fashion-MNIST in both engines."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import flwbc
from flwbc.client.local import Term, local_sgd
from flwbc.client.transform import ClientRun
from flwbc.defenses.leadfl import (
    CodeStep,
    LeadFL,
    LeadFLOptions,
    LeadFLTerm,
    regulariser_grad,
    weight_segments,
)
from flwbc.engine import batched, sequential
from flwbc.errors import FlwbcError
from flwbc.experiment import Experiment
from flwbc.models import FlatModel

# --------------------------------------------------------------------------- dense reference

P = 20  # a 3-3-2 tanh network: 9 + 3 + 6 + 2 parameters


def _tiny_loss(x: torch.Tensor, y: torch.Tensor):
    def loss(w: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(x @ w[:9].view(3, 3).T + w[9:12])
        return F.nll_loss(F.log_softmax(h @ w[12:18].view(2, 3).T + w[18:20], dim=1), y)

    return loss


def _dense_grad(loss, w, v, lr, alpha, mask):
    """∇ α‖M(I − ηH)Mv‖ with H the full Hessian, differentiated through (third derivatives)."""
    w = w.detach().requires_grad_(True)
    h = torch.autograd.functional.hessian(loss, w, create_graph=True)
    m = mask if mask is not None else torch.ones_like(w)
    r = m * ((torch.eye(P, dtype=w.dtype) - lr * h) @ (m * v))
    (g,) = torch.autograd.grad(alpha * r.norm(), w)
    return g * m


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("masked", [False, True])
def test_regulariser_grad_matches_dense_hessian_formula(seed: int, masked: bool) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (7,), generator=gen)
    w = torch.randn(P, generator=gen, dtype=torch.float64)
    v = torch.randn(P, generator=gen, dtype=torch.float64)
    mask = (torch.rand(P, generator=gen) < 0.6).to(torch.float64) if masked else None
    loss = _tiny_loss(x, y)
    got = regulariser_grad(loss, w, v, 0.3, 0.7, mask)
    want = _dense_grad(loss, w, v, 0.3, 0.7, mask)
    assert want.abs().max() > 1e-4  # not trivially zero
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    if masked:
        assert (got[mask == 0] == 0).all()


def test_regulariser_grad_vanishes_without_curvature_term() -> None:
    """With η = 0 the penalty is α‖v‖, constant in w: zero gradient (third-order terms only)."""
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1])
    w, v = torch.randn(P, dtype=torch.float64), torch.randn(P, dtype=torch.float64)
    assert torch.equal(regulariser_grad(_tiny_loss(x, y), w, v, 0.0, 1.0), torch.zeros(P).double())


# --------------------------------------------------------------------------- the code form


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.fc2(torch.tanh(self.fc1(x))), dim=1)


def _official_loop(net, batches, epochs, lr, momentum, alpha, q, first_half=False):
    """The official client loop's benign branch with defense "LeadFL", written out as that code
    does it: torch SGD, `named_parameters`, the norm on "weight" tensors, the gradient not
    zeroed before the regulariser's backward, clip by value, a second optimiser step."""
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    for epoch in range(epochs):
        old_grad, old_params = {}, {}
        for i, (x, y) in enumerate(batches[epoch]):
            opt.zero_grad()
            F.nll_loss(net(x), y).backward()
            opt.step()
            if first_half and epoch >= epochs // 2:
                continue
            if i != 0:
                loss = None
                for name, p in net.named_parameters():
                    if "weight" in name:
                        r = torch.norm(
                            p - old_params[name] - old_grad[name] - torch.ones_like(p) * lr
                        )
                        loss = loss + r if loss is not None else r
                (alpha * loss).backward()
                torch.nn.utils.clip_grad_value_(net.parameters(), q)
                opt.step()
            for name, p in net.named_parameters():
                if "weight" in name:
                    old_grad[name] = p.grad.detach().clone()
                    old_params[name] = p.detach().clone()
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


@pytest.mark.parametrize(
    ("momentum", "alpha", "q", "epochs", "first_half"),
    [
        (0.0, 0.4, 0.2, 2, False),
        (0.9, 0.4, 0.05, 2, False),
        (0.5, 0.0, 0.2, 1, False),
        (0.5, 1.5, 0.2, 4, True),
    ],
)
def test_code_form_equals_the_official_loop(momentum, alpha, q, epochs, first_half) -> None:
    torch.manual_seed(0)
    net = _Net().double()
    model = FlatModel(net)
    w0 = model.get_vector()
    gen = torch.Generator().manual_seed(1)
    batches = [
        [
            (
                torch.randn(6, 4, generator=gen, dtype=torch.float64),
                torch.randint(0, 3, (6,), generator=gen),
            )
            for _ in range(4)
        ]
        for _ in range(epochs)
    ]
    lr = 0.1
    # the plug-in's hooks around the code form's state, as the engines run them
    leadfl = LeadFL(None, LeadFLOptions(form="code", alpha=alpha, clip=q, first_half=first_half))  # type: ignore[arg-type]
    active = epochs // 2 if first_half else None
    step = CodeStep(weight_segments(model.names, model.numels), alpha, q, active)
    plan = [[[Term(x, y)] for x, y in ep] for ep in batches]
    got = local_sgd(model, w0, plan, lr=lr, momentum=momentum, chain=[(leadfl, step)]).weights
    want = _official_loop(net, batches, epochs, lr, momentum, alpha, q, first_half)
    plain = local_sgd(model, w0, plan, lr=lr, momentum=momentum).weights
    assert (want - plain).abs().max() > 1e-3  # the second step matters on these inputs
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_weight_segments() -> None:
    model = FlatModel(_Net())
    assert weight_segments(model.names, model.numels) == [(0, 20), (25, 40)]
    mask = torch.zeros(model.num_params, dtype=torch.bool)
    for a, b in weight_segments(model.names, model.numels):
        mask[a:b] = True
    assert torch.equal(mask, model.weight_mask)


# --------------------------------------------------------------------------- real data


def config(real_data_dir: Path, **over: object) -> flwbc.ExperimentConfig:
    base = {
        "seed": 3,
        "model": "mlp",
        "data": {"dir": str(real_data_dir), "train_fraction": 0.05},
        "federation": {"num_clients": 10, "clients_per_round": 5, "rounds": 2},
        "local": {"epochs": 1, "batch_size": 100},
        "attack": {"num_malicious": 1, "rounds": [2], "epochs": 1},
        "defense": {"client": "leadfl", "options": {"leadfl": {"hessian_batch": 32}}},
    }
    return flwbc.make_config(base, **over)


def test_term_per_step(real_data_dir: Path) -> None:
    """The closure: clipped to q, none at the round's first step for the step direction, the
    previous step as v afterwards, only weights with params: weights."""
    cfg = config(
        real_data_dir,
        **{
            "defense.options.leadfl.direction": "step",
            "defense.options.leadfl.params": "weights",
            "defense.options.leadfl.clip": 1e-3,
        },
    )
    exp = Experiment.prepare(cfg)
    w0 = exp.initial_weights()
    leadfl = exp.defenses[0]
    term = leadfl.init(ClientRun(exp, 1, 0, False, w0))
    assert isinstance(term, LeadFLTerm)
    leadfl.start_epoch(term, 0)
    assert torch.equal(leadfl.grad(term, w0), torch.zeros_like(w0))
    w1 = w0 + 0.01 * torch.randn(w0.shape, generator=torch.Generator().manual_seed(0))
    g = leadfl.grad(term, w1)
    assert g.abs().max() <= 1e-3 and g.abs().max() > 0
    assert (g[~exp.model.weight_mask] == 0).all()


def _round(exp: Experiment, engine, rounds: int = 1) -> torch.Tensor:
    w = exp.initial_weights()
    for t in range(1, rounds + 1):
        w = engine.train_round(exp, exp.round_plan(t), w).weights
    return w


def test_alpha_zero_is_bit_identical_to_no_defense(real_data_dir: Path) -> None:
    plain = Experiment.prepare(config(real_data_dir, **{"defense.client": "none"}))
    off = Experiment.prepare(config(real_data_dir, **{"defense.options.leadfl.alpha": 0.0}))
    assert off.defenses[0].init(ClientRun(off, 1, 0, False, off.initial_weights())) is None
    assert torch.equal(_round(plain, batched), _round(off, batched))


def test_engines_agree_and_the_defense_acts(real_data_dir: Path) -> None:
    """Two rounds (the second adversarial) give the same model in both engines; LeadFL changes
    it compared with no defense (by little: ∇‖I − ηH‖_F carries a factor η/√P)."""
    exp = Experiment.prepare(config(real_data_dir))
    a, b = _round(exp, sequential, 2), _round(exp, batched, 2)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    plain = Experiment.prepare(config(real_data_dir, **{"defense.client": "none"}))
    assert (a - _round(plain, batched, 2)).abs().max() > 1e-6


def test_composes_with_median_and_chains_with_wbc(real_data_dir: Path, tmp_path: Path) -> None:
    cfg = config(
        real_data_dir,
        **{
            "server.aggregator": "median",
            "federation.rounds": 1,
            "attack.rounds": [1],
            "defense.client": ["leadfl", "wbc"],
            "output.dir": str(tmp_path),
            "output.name": "leadfl-wbc-median",
        },
    )
    res = flwbc.run(cfg, progress=False)
    assert res.summary["complete"] and len(res.records) == 1
    assert torch.isfinite(res.weights).all()
    assert "wbc_perturbed" in res.records[0]


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"alpha": -1.0}, "option alpha = -1.0"),
        ({"clip": 0.0}, "option clip = 0.0"),
        ({"direction": "hessian"}, "option direction = 'hessian'"),
        ({"lam": 0.1}, "has no option lam"),
        ({"form": "code", "direction": "step"}, "not with form: code (direction: form hessian's"),
    ],
)
def test_bad_options_give_one_clear_line(real_data_dir: Path, options: dict, needle: str) -> None:
    with pytest.raises(FlwbcError) as err:
        Experiment.prepare(config(real_data_dir, **{"defense.options.leadfl": options}))
    msg = str(err.value)
    assert "leadfl" in msg and needle in msg and "\n" not in msg


def test_code_form_engines_agree_and_compose(real_data_dir: Path) -> None:
    """The code form through both engines (after every step, advancing the momentum buffer),
    chained with FL-WBC behind median: the same model; and it differs from the Hessian form's."""
    over = {
        "defense.options.leadfl": {"form": "code"},
        "local.momentum": 0.5,
    }
    exp = Experiment.prepare(config(real_data_dir, **over))
    a, b = _round(exp, sequential, 2), _round(exp, batched, 2)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    hess = Experiment.prepare(config(real_data_dir, **{"local.momentum": 0.5}))
    assert (a - _round(hess, batched, 2)).abs().max() > 1e-5
    chained = Experiment.prepare(
        config(
            real_data_dir,
            **over,
            **{"defense.client": ["leadfl", "wbc"], "server.aggregator": "median"},
        )
    )
    c, d = _round(chained, sequential, 2), _round(chained, batched, 2)
    torch.testing.assert_close(c, d, rtol=0, atol=1e-5)
