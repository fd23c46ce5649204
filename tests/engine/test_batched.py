"""The batched engine against the sequential reference, and its per-model forward passes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import flwbc
from flwbc.engine import batched, sequential
from flwbc.engine.batched import batched_forward
from flwbc.experiment import Experiment
from flwbc.models import FlatModel, build_model


@pytest.mark.parametrize(
    ("name", "shape"),
    [("fmnist_cnn", (1, 28, 28)), ("cifar_cnn", (3, 32, 32)), ("mlp", (1, 28, 28))],
)
def test_batched_forward_equals_each_clients_module(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = FlatModel(build_model(name, shape[0], shape[1], 10))
    g, b = 4, 7
    w = torch.stack([model.init_vector(s) for s in range(g)])
    x = torch.randn(g, b, *shape)
    out = batched_forward(model)(model, w, x)
    for i in range(g):
        torch.testing.assert_close(out[i], model(w[i], x[i]), rtol=1e-5, atol=1e-5)


def test_unregistered_models_fall_back_to_vmap() -> None:
    module = nn.Sequential(
        nn.Flatten(), nn.Linear(12, 5), nn.Tanh(), nn.Linear(5, 3), nn.LogSoftmax(-1)
    )
    model = FlatModel(module)
    w = torch.randn(3, model.num_params)
    x = torch.randn(3, 4, 12)
    out = batched_forward(model)(model, w, x)
    for i in range(3):
        torch.testing.assert_close(out[i], model(w[i], x[i]))


def test_vmap_fallback_handles_convolutions() -> None:
    module = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.LogSoftmax(-1)
    )
    model = FlatModel(module)
    w = torch.randn(3, model.num_params) * 0.1
    x = torch.randn(3, 2, 3, 8, 8)
    out = batched_forward(model)(model, w, x)
    for i in range(3):
        torch.testing.assert_close(out[i], model(w[i], x[i]), rtol=1e-5, atol=1e-5)


def config(real_data_dir: Path, **over: object) -> flwbc.ExperimentConfig:
    base = {
        "seed": 5,
        "dtype": "float64",
        "data": {"dir": str(real_data_dir), "train_fraction": 0.05},
        "federation": {"num_clients": 20, "clients_per_round": 6},
        "local": {"epochs": 2, "batch_size": 30},
        "attack": {"rounds": [2], "num_malicious": 2, "epochs": 3},
    }
    return flwbc.make_config(base, **over)


CASES = {
    "plain": {},
    "wbc": {"defense.client": "wbc"},
    "wbc-reference": {
        "defense.client": "wbc",
        "defense.wbc.noise": "scale",
        "defense.wbc.params": "weights",
        "defense.wbc.hessian": "gradient",
        "defense.wbc.reset_each_epoch": True,
    },
    "alpha-boost-ldp": {
        "attack.alpha": 0.4,
        "attack.mode": "boost",
        "attack.boost": 2.0,
        "attack.epochs": 1,
        "defense.client": "ldp",
        "defense.ldp.sigma": 0.001,
    },
    "kernel-regularised-attack": {"attack.kernel_reg": 0.5, "attack.kernel_batch": 16},
    "uneven-dirichlet": {
        "data.partition": "dirichlet",
        "data.dirichlet_alpha": 1.0,
        "defense.client": "wbc",
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_engines_give_the_same_global_model(real_data_dir: Path, case: str) -> None:
    """In float64, where rounding cannot flip FL-WBC's masks or ReLU/max-pool ties, both engines
    give the same model after three rounds (an adversarial one among them)."""
    exp = Experiment.prepare(config(real_data_dir, **CASES[case]))
    wa = wb = exp.initial_weights()
    for t in (1, 2, 3):
        plan = exp.round_plan(t)
        a = sequential.train_round(exp, plan, wa)
        b = batched.train_round(exp, plan, wb)
        wa, wb = a.weights, b.weights
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-12)
        if "wbc_perturbed" in a.info:
            assert a.info["wbc_perturbed"] == pytest.approx(b.info["wbc_perturbed"], rel=1e-12)
    assert plan.round == 3
    torch.testing.assert_close(wa, wb, rtol=0, atol=1e-12)
    assert not torch.equal(wa, exp.initial_weights())


@pytest.mark.slow
def test_engines_agree_in_float32_over_one_step(real_data_dir: Path) -> None:
    """In float32 one step of every client agrees to rounding (later steps drift apart through
    discontinuities, which is why the multi-round check runs in float64)."""
    cfg = config(
        real_data_dir,
        dtype="float32",
        **{"local.epochs": 1, "local.batch_size": 200, "defense.client": "wbc"},
    )
    exp = Experiment.prepare(cfg)
    w = exp.initial_weights()
    plan = exp.round_plan(1)
    a = sequential.train_round(exp, plan, w)
    b = batched.train_round(exp, plan, w)
    torch.testing.assert_close(a.weights, b.weights, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_batched_run_is_deterministic_and_the_default(real_data_dir: Path, tmp_path: Path) -> None:
    over = {"dtype": "float32", "federation.rounds": 2, "output.dir": str(tmp_path)}
    a = flwbc.run(config(real_data_dir, **over, **{"output.name": "a"}), progress=False)
    b = flwbc.run(config(real_data_dir, **over, **{"output.name": "b"}), progress=False)
    assert flwbc.make_config({}).engine == "batched"
    assert (a.run_dir / "rounds.jsonl").read_bytes() == (b.run_dir / "rounds.jsonl").read_bytes()
