"""The paper's models (architectures of the authors' code) and the flat-parameter view."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import vector_to_parameters

from flwbc.errors import FlwbcError
from flwbc.models import MLP, FlatModel, build_model


def conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


def linear(fin: int, fout: int) -> int:
    return fin * fout + fout


# FMNIST: conv 1->16 5x5 pad 2 (28x28, pool -> 14), conv 16->32 5x5 pad 2 (14, pool -> 7),
# linear 32*7*7 = 1568 -> 10
FMNIST_PARAMS = conv(1, 16, 5) + conv(16, 32, 5) + linear(1568, 10)
# CIFAR: conv 3->6 5x5 (32 -> 28, pool 14), conv 6->16 5x5 (14 -> 10, pool 5),
# linear 16*5*5 = 400 -> 120 -> 84 -> 10
CIFAR_PARAMS = conv(3, 6, 5) + conv(6, 16, 5) + linear(400, 120) + linear(120, 84) + linear(84, 10)


@pytest.mark.parametrize(
    "name,shape,count",
    [("fmnist_cnn", (1, 28, 28), FMNIST_PARAMS), ("cifar_cnn", (3, 32, 32), CIFAR_PARAMS)],
)
def test_paper_models(name, shape, count):
    torch.manual_seed(0)
    module = build_model(name, shape[0], shape[1], 10)
    assert sum(p.numel() for p in module.parameters()) == count
    flat = FlatModel(module)
    assert flat.num_params == count == sum(flat.numels)
    x = torch.randn(3, *shape)
    out = module(x)
    assert out.shape == (3, 10)
    assert (out <= 0).all()
    torch.testing.assert_close(out.exp().sum(1), torch.ones(3))


def test_hand_counts():
    assert FMNIST_PARAMS == 416 + 12832 + 15690
    assert CIFAR_PARAMS == 456 + 2416 + 48120 + 10164 + 850


def test_fmnist_cnn_layer_shapes():
    module = build_model("fmnist_cnn", 1, 28, 10)
    shapes = {n: tuple(p.shape) for n, p in module.named_parameters()}
    assert sorted(shapes.values()) == sorted(
        [(16, 1, 5, 5), (16,), (32, 16, 5, 5), (32,), (10, 1568), (10,)]
    )


def test_mlp_and_other_sizes():
    module = build_model("mlp", 3, 8, 7)
    assert isinstance(module, MLP)
    assert sum(p.numel() for p in module.parameters()) == linear(3 * 8 * 8, 200) + linear(200, 7)
    out = module(torch.randn(2, 3, 8, 8))
    assert out.shape == (2, 7)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(2))


def test_build_model_unknown_name():
    with pytest.raises(FlwbcError, match="resnet"):
        build_model("resnet", 3, 32, 10)


@pytest.mark.parametrize("name,shape", [("fmnist_cnn", (1, 28, 28)), ("cifar_cnn", (3, 32, 32))])
def test_flat_call_equals_module_with_vector(name, shape):
    torch.manual_seed(1)
    module = build_model(name, shape[0], shape[1], 10)
    flat = FlatModel(module)
    v = torch.randn(flat.num_params, generator=torch.Generator().manual_seed(2)) * 0.05
    ref = copy.deepcopy(module)
    vector_to_parameters(v, ref.parameters())
    x = torch.randn(2, *shape)
    torch.testing.assert_close(flat(v, x), ref(x), rtol=1e-5, atol=1e-6)
    # the module's own parameters are not changed by evaluating at v
    assert not torch.equal(flat.get_vector(), v)


def test_flat_call_gradients_flow_to_vector():
    lin = nn.Linear(3, 2)
    flat = FlatModel(nn.Sequential(lin, nn.LogSoftmax(dim=1)))
    v = flat.get_vector().requires_grad_(True)
    x = torch.randn(4, 3)
    flat(v, x).sum().backward()
    ref = copy.deepcopy(lin)
    ref.zero_grad()
    torch.log_softmax(ref(x), 1).sum().backward()
    torch.testing.assert_close(v.grad, torch.cat([ref.weight.grad.reshape(-1), ref.bias.grad]))


def test_unflatten_layout_and_get_vector():
    module = build_model("cifar_cnn", 3, 32, 10)
    flat = FlatModel(module)
    v = torch.arange(flat.num_params, dtype=torch.float32)
    parts = flat.unflatten(v)
    assert list(parts) == [n for n, _ in module.named_parameters()]
    offset = 0
    for (name, p), (key, t) in zip(module.named_parameters(), parts.items(), strict=True):
        assert key == name and t.shape == p.shape
        assert t.reshape(-1)[0] == offset
        offset += p.numel()
    torch.testing.assert_close(
        flat.get_vector(), torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    )


@pytest.mark.parametrize("name,shape", [("fmnist_cnn", (1, 28, 28)), ("cifar_cnn", (3, 32, 32))])
def test_weight_mask(name, shape):
    module = build_model(name, shape[0], shape[1], 10)
    flat = FlatModel(module)
    expected = torch.cat(
        [
            torch.full((p.numel(),), n.endswith(".weight"), dtype=torch.bool)
            for n, p in module.named_parameters()
        ]
    )
    assert flat.weight_mask.dtype == torch.bool
    assert torch.equal(flat.weight_mask, expected)
    biases = sum(p.numel() for n, p in module.named_parameters() if n.endswith(".bias"))
    assert int((~flat.weight_mask).sum()) == biases > 0


def test_init_vector_deterministic_and_isolated():
    flat = FlatModel(build_model("cifar_cnn", 3, 32, 10))
    torch.manual_seed(99)
    state = torch.get_rng_state()
    a = flat.init_vector(5)
    assert torch.equal(torch.get_rng_state(), state), "init_vector disturbed the global RNG"
    draw_after = torch.rand(5)
    torch.set_rng_state(state)
    assert torch.equal(torch.rand(5), draw_after)

    b = flat.init_vector(5)
    c = flat.init_vector(6)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == (flat.num_params,)
    # the module now holds the last initialisation
    assert torch.equal(flat.get_vector(), c)


def test_init_vector_is_torch_default_init_under_seed():
    """Same as constructing the module right after torch.manual_seed(seed)."""
    torch.manual_seed(7)
    ref = build_model("fmnist_cnn", 1, 28, 10)
    ref_v = torch.cat([p.detach().reshape(-1) for p in ref.parameters()])
    other = FlatModel(build_model("fmnist_cnn", 1, 28, 10))
    torch.testing.assert_close(other.init_vector(7), ref_v, rtol=0, atol=0)
