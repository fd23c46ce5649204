"""Lockdown's mask arithmetic (`flwbc.defenses.lockdown_masks`) against a transcription of the
authors' functions (github.com/git-disl/Lockdown at commit 147ec87642a4f61dea87a2e1685947efaa7fdc44,
files under `src/`), compared exactly, plus the worked examples and known totals of the
specification (store notes, lockdown-spec.md sections 1.1 and 6)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from flwbc.defenses.lockdown_masks import (
    consensus,
    erk_densities,
    init_masks,
    masked_update,
    prune,
    prune_rate,
    regrow,
    weighted_mean,
)
from flwbc.models import build_model

# --------------------------------------------------------------------------- transcription
# The official functions, adapted only to take plain arguments instead of `args`/`self`
# (dense_ratio, anneal_factor, rounds, agent_data_sizes), with logging/print dropped and the
# `.to(args.device)` moves left out (CPU). Reference only, never imported by the library.


def official_init_masks(params, sparsities):
    # utils.py:341-352 at 147ec87
    masks = {}
    for name in params:
        masks[name] = torch.zeros_like(params[name])
        dense_numel = int((1 - sparsities[name]) * torch.numel(masks[name]))
        if dense_numel > 0:
            temp = masks[name].view(-1)
            perm = torch.randperm(len(temp))
            perm = perm[:dense_numel]
            temp[perm] = 1
        masks[name] = masks[name].to("cpu")
    return masks


def official_calculate_sparsities(dense_ratio, params, tabu=(), distribution="ERK"):
    # utils.py:370-444 at 147ec87
    spasities = {}
    if distribution == "uniform":
        for name in params:
            if name not in tabu:
                spasities[name] = 1 - dense_ratio
            else:
                spasities[name] = 0
    elif distribution == "ERK":
        total_params = 0
        for name in params:
            total_params += params[name].numel()
        is_epsilon_valid = False
        dense_layers = set()

        density = dense_ratio
        while not is_epsilon_valid:
            divisor = 0
            rhs = 0
            raw_probabilities = {}
            for name in params:
                if name in tabu or "running" in name or "track" in name:
                    dense_layers.add(name)
                n_param = np.prod(params[name].shape)
                n_zeros = n_param * (1 - density)
                n_ones = n_param * density

                if name in dense_layers:
                    rhs -= n_zeros
                else:
                    rhs += n_ones
                    raw_probabilities[name] = (
                        np.sum(params[name].shape) / np.prod(params[name].shape)
                    ) ** 1
                    divisor += raw_probabilities[name] * n_param
            epsilon = rhs / divisor
            max_prob = np.max(list(raw_probabilities.values()))
            max_prob_one = max_prob * epsilon
            if max_prob_one > 1:
                is_epsilon_valid = False
                for mask_name, mask_raw_prob in raw_probabilities.items():
                    if mask_raw_prob == max_prob:
                        dense_layers.add(mask_name)
            else:
                is_epsilon_valid = True

        for name in params:
            if name in dense_layers:
                spasities[name] = 0
            else:
                spasities[name] = 1 - epsilon * raw_probabilities[name]
    return spasities


def official_update_mask(masks, num_remove, gradient=None):
    # agent_sparse.py:64-75 at 147ec87, the default (not --dis_check_gradient) branch
    for name in gradient:
        temp = torch.where(
            masks[name] == 0, torch.abs(gradient[name]), -100000 * torch.ones_like(gradient[name])
        )
        sort_temp, idx = torch.sort(temp.view(-1), descending=True)
        masks[name].view(-1)[idx[: num_remove[name]]] = 1
    return masks


def official_fire_mask(weights, masks, round, anneal_factor, rounds):
    # agent_sparse.py:85-101 at 147ec87
    drop_ratio = anneal_factor / 2 * (1 + np.cos((round * np.pi) / (rounds)))

    num_remove = {}
    for name in masks:
        num_non_zeros = torch.sum(masks[name])
        num_remove[name] = math.ceil(drop_ratio * num_non_zeros)

    for name in masks:
        if num_remove[name] > 0 and "track" not in name and "running" not in name:
            temp_weights = torch.where(
                masks[name] > 0, torch.abs(weights[name]), 100000 * torch.ones_like(weights[name])
            )
            x, idx = torch.sort(temp_weights.view(-1))
            masks[name].view(-1)[idx[: num_remove[name]]] = 0
    return masks, num_remove


def official_update(mask_vec, after_train, initial_global_model_params):
    # agent_sparse.py:162 at 147ec87
    return mask_vec * (after_train - initial_global_model_params)


def official_agg_avg(agent_updates_dict, agent_data_sizes):
    # aggregation.py:109-117 at 147ec87
    sm_updates, total_data = 0, 0
    for _id, update in agent_updates_dict.items():
        n_agent_data = agent_data_sizes[_id]
        sm_updates += n_agent_data * update
        total_data += n_agent_data
    return sm_updates / total_data


def official_consensus(params, old_mask, theta):
    # federated.py:182-187 at 147ec87 (`test_model.named_parameters()` -> a dict of copies)
    out = {}
    for name, param in params.items():
        mask = 0
        for id in range(len(old_mask)):
            mask += old_mask[id][name]
        out[name] = torch.where(mask >= theta, param, torch.zeros_like(param))
    return out


# --------------------------------------------------------------------------- shapes


def _conv_block(prefix, cin, cout, track=False):
    # resnet9.py:7-12 at 147ec87: conv3x3 (no bias) + BatchNorm2d (+ buffers when tracked)
    shapes = {
        f"{prefix}.0.weight": (cout, cin, 3, 3),
        f"{prefix}.1.weight": (cout,),
        f"{prefix}.1.bias": (cout,),
    }
    if track:
        shapes[f"{prefix}.1.running_mean"] = (cout,)
        shapes[f"{prefix}.1.running_var"] = (cout,)
        shapes[f"{prefix}.1.num_batches_tracked"] = ()
    return shapes


def resnet9_shapes(track=False):
    """ResNet9 (resnet9.py:14-28) / ResNet9_trackbn (resnet9.py:40-54), CIFAR-10, state_dict."""
    shapes = {}
    for prefix, cin, cout in [
        ("conv1", 3, 64),
        ("conv2", 64, 128),
        ("res1.0", 128, 128),
        ("res1.1", 128, 128),
        ("conv3", 128, 256),
        ("conv4", 256, 512),
        ("res2.0", 512, 512),
        ("res2.1", 512, 512),
    ]:
        shapes.update(_conv_block(prefix, cin, cout, track))
    shapes["classifier.2.weight"] = (10, 512)
    return shapes


# CNN_MNIST (models.py:66-87 at 147ec87): conv5x5 1->32 pad 2, BN(32, no running stats),
# conv3x3 32->64 pad 2, BN(64), fc 4096->4096, fc 4096->10.
CNN_MNIST = {
    "cnn1.weight": (32, 1, 5, 5),
    "cnn1.bias": (32,),
    "norm1.weight": (32,),
    "norm1.bias": (32,),
    "cnn2.weight": (64, 32, 3, 3),
    "cnn2.bias": (64,),
    "norm2.weight": (64,),
    "norm2.bias": (64,),
    "fc1.weight": (4096, 4096),
    "fc1.bias": (4096,),
    "fc2.weight": (10, 4096),
    "fc2.bias": (10,),
}

# several 2-D/4-D tensors of one score, a tracked BN, a 0-dim tensor
TOY = {
    "a.weight": (3, 3, 3, 3),
    "b.weight": (6, 3),
    "c.weight": (3, 6),
    "bn.weight": (6,),
    "bn.running_mean": (6,),
    "bn.num_batches_tracked": (),
    "d.weight": (40, 50),
    "scale": (),
}


def flwbc_shapes(name, channels, side):
    module = build_model(name, channels, side, 10)
    return {n: tuple(p.shape) for n, p in module.named_parameters()}


def random_shapes(seed):
    gen = torch.Generator().manual_seed(seed)
    shapes = {}
    for i in range(int(torch.randint(1, 7, (1,), generator=gen))):
        ndim = int(torch.randint(1, 5, (1,), generator=gen))
        shape = tuple(int(v) for v in torch.randint(1, 10, (ndim,), generator=gen))
        kind = ["weight", "bias", "running_var"][int(torch.randint(0, 3, (1,), generator=gen))]
        shapes[f"l{i}.{kind}"] = shape
    return shapes


SHAPE_SETS = {
    "cnn_mnist": CNN_MNIST,
    "resnet9": resnet9_shapes(),
    "resnet9_trackbn": resnet9_shapes(track=True),
    "toy": TOY,
    "small_trackbn": {
        **_conv_block("conv1", 3, 8, track=True),
        **_conv_block("res.0", 8, 8, track=True),
        "classifier.weight": (10, 8),
    },
    "fmnist_cnn": flwbc_shapes("fmnist_cnn", 1, 28),
    "cifar_cnn": flwbc_shapes("cifar_cnn", 3, 32),
    "mlp": flwbc_shapes("mlp", 1, 28),
    **{f"random{s}": random_shapes(s) for s in range(8)},
}


def meta(shapes):
    """Tensors of the given shapes that hold no memory (the official only reads shapes)."""
    return {n: torch.empty(s, device="meta") for n, s in shapes.items()}


def distinct(shape, gen, scale=1.0):
    """A tensor of `shape` whose magnitudes are pairwise distinct (random signs and order)."""
    n = math.prod(shape)
    mags = (torch.randperm(n, generator=gen) + 1).float() * (scale / n)
    signs = torch.randint(0, 2, (n,), generator=gen).float() * 2 - 1
    return (mags * signs).view(shape)


def random_state(shapes, seed, p_active=0.6):
    gen = torch.Generator().manual_seed(seed)
    weights = {n: distinct(s, gen) for n, s in shapes.items()}
    masks = {n: torch.bernoulli(torch.full(s, p_active), generator=gen) for n, s in shapes.items()}
    grads = {n: distinct(s, gen, scale=3.0) for n, s in shapes.items()}
    return weights, masks, grads


# --------------------------------------------------------------------------- erk_densities


@pytest.mark.parametrize("distribution", ["ERK", "uniform"])
@pytest.mark.parametrize("density", [0.01, 0.1, 0.25, 0.5, 0.75, 0.9])
def test_densities_equal_official(distribution, density):
    for label, shapes in SHAPE_SETS.items():
        try:
            with np.errstate(divide="ignore", invalid="ignore"):  # all dense: x/0, then raise
                sparsity = official_calculate_sparsities(density, meta(shapes), (), distribution)
        except ValueError:  # np.max([]): no tensor left to sparsify
            with pytest.raises(ValueError):
                erk_densities(shapes, density, distribution)
            continue
        got = erk_densities(shapes, density, distribution)
        assert list(got) == list(shapes), label
        for name, shape in shapes.items():
            numel = math.prod(shape)
            assert got[name] == 1 - sparsity[name], (label, name)
            assert int(got[name] * numel) == int((1 - sparsity[name]) * numel), (label, name)


def test_erk_cnn_mnist_only_fc1_weight_sparse():
    got = erk_densities(CNN_MNIST, 0.25)
    sparse = {n: d for n, d in got.items() if d != 1.0}
    assert list(sparse) == ["fc1.weight"]
    assert 1 - sparse["fc1.weight"] == 0.7528872191905975
    assert sum(math.prod(s) for s in CNN_MNIST.values()) == 16_841_802
    assert int(sparse["fc1.weight"] * 4096 * 4096) == 4_145_864


def test_erk_resnet9_total_active():
    shapes = resnet9_shapes()
    got = erk_densities(shapes, 0.25)
    assert sum(math.prod(s) for s in shapes.values()) == 6_573_120
    assert sum(int(got[n] * math.prod(s)) for n, s in shapes.items()) == 1_643_278
    assert got["conv1.0.weight"] == got["conv2.0.weight"] == got["classifier.2.weight"] == 1.0
    assert all(got[n] == 1.0 for n, s in shapes.items() if len(s) == 1)
    assert round(got["res1.0.0.weight"], 4) == 0.7387
    assert round(got["conv3.0.weight"], 4) == 0.5498
    assert round(got["conv4.0.weight"], 4) == 0.2728
    assert round(got["res2.1.0.weight"], 4) == 0.1815


def test_erk_max_loop_and_buffers():
    # pass 1 makes every 1-D tensor dense (score 1), pass 2 "b"/"c" (one score, 9/18), then
    # eps is valid; buffers are dense under ERK but not under uniform
    got = erk_densities(TOY, 0.25)
    assert [n for n, d in got.items() if d == 1.0] == [
        "b.weight",
        "c.weight",
        "bn.weight",
        "bn.running_mean",
        "bn.num_batches_tracked",
    ]
    assert got["scale"] == 0.0 and 0 < got["d.weight"] < got["a.weight"] < 1
    assert set(erk_densities(TOY, 0.25, "uniform").values()) == {1 - (1 - 0.25)}
    with pytest.raises(ValueError, match="unknown"):
        erk_densities(TOY, 0.25, "erk")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- init_masks


@pytest.mark.parametrize("seed", [0, 1, 7, 12345])
def test_init_masks_equal_official(seed):
    for label in ["fmnist_cnn", "mlp", "toy", "small_trackbn", "random3", "random5"]:
        shapes = SHAPE_SETS[label]
        for distribution, density in [("ERK", 0.25), ("uniform", 0.1), ("ERK", 0.05)]:
            sparsity = official_calculate_sparsities(density, meta(shapes), (), distribution)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                params = {n: torch.zeros(s) for n, s in shapes.items()}
                want = official_init_masks(params, sparsity)
            densities = erk_densities(shapes, density, distribution)
            got = init_masks(shapes, densities, torch.Generator().manual_seed(seed))
            assert list(got) == list(want)
            for name in shapes:
                assert got[name].dtype == torch.float32 and got[name].shape == shapes[name]
                assert torch.equal(got[name], want[name]), (label, distribution, name)


def test_init_masks_counts_truncate_and_skip_empty_draws():
    # uniform 0.1: the official density is 1 - 0.9 = 0.09999999999999998, so 40 entries keep 3
    # (not 4) and 5 entries keep 0, drawing no permutation (the next tensor's draw is the first)
    shapes = {"a": (5,), "b": (40,), "c": (2, 3)}
    densities = erk_densities(shapes, 0.1, "uniform")
    got = init_masks(shapes, densities, torch.Generator().manual_seed(3))
    assert [int(m.sum()) for m in got.values()] == [0, 3, 0]
    first = torch.randperm(40, generator=torch.Generator().manual_seed(3))[:3]
    assert torch.equal(got["b"].nonzero().flatten(), first.sort().values)
    dense = init_masks({"d": (4, 2)}, {"d": 1.0}, torch.Generator().manual_seed(0))
    assert torch.equal(dense["d"], torch.ones(4, 2))


# --------------------------------------------------------------------------- prune_rate


def test_prune_rate_equals_official_and_examples():
    for rounds in [1, 2, 50, 200, 333]:
        for r in range(rounds + 1):
            for anneal in [1e-4, 0.3]:
                want = anneal / 2 * (1 + np.cos((r * np.pi) / rounds))
                assert prune_rate(r, rounds, anneal) == want
    assert prune_rate(1, 200, 1e-4) == 9.999383162408304e-05
    assert prune_rate(100, 200, 1e-4) == 5e-05
    assert prune_rate(199, 200, 1e-4) == pytest.approx(6.168e-09, rel=1e-3)
    assert prune_rate(200, 200, 1e-4) == 0.0


# --------------------------------------------------------------------------- prune / regrow


def test_prune_and_regrow_worked_example():
    w = {"w": torch.tensor([0.5, -0.1, 0.3, 0.05, -0.9, 0.2])}
    m = {"w": torch.tensor([1.0, 1, 1, 0, 1, 1])}
    rate = prune_rate(1, 2, 0.5)
    assert rate == pytest.approx(0.25)
    pruned, removed = prune(w, m, rate)
    assert removed == {"w": 2}  # ceil(0.25 * 5); a floor would give 1
    assert pruned["w"].tolist() == [1, 0, 1, 0, 1, 0]
    assert m["w"].tolist() == [1, 1, 1, 0, 1, 1]  # input untouched
    g = {"w": torch.tensor([0.0, 0.3, 9, 0.7, 5, 0.1])}
    grown = regrow(pruned, removed, g)
    assert grown["w"].tolist() == [1, 1, 1, 1, 1, 0]  # zeros ranked 0.7, 0.3, 0.1
    assert pruned["w"].tolist() == [1, 0, 1, 0, 1, 0]


def test_prune_count_is_float32():
    # 7/13 * 13 is 7.0 in float64 but the official sum is a float32 tensor: ceil(7.0000005) = 8
    w = {"w": torch.arange(1.0, 14.0)}
    m = {"w": torch.ones(13)}
    pruned, removed = prune(w, m, 7 / 13)
    assert removed == {"w": 8} == official_fire_mask(w, copy.deepcopy(m), 1, 14 / 13, 2)[1]
    assert pruned["w"].tolist() == [0] * 8 + [1] * 5


def test_prune_skips_buffers_but_counts_them():
    w = {"bn.running_mean": torch.tensor([3.0, 1.0, 2.0]), "x": torch.tensor([3.0, 1.0, 2.0])}
    m = {n: torch.ones(3) for n in w}
    pruned, removed = prune(w, m, 0.5)
    assert removed == {"bn.running_mean": 2, "x": 2}
    assert pruned["bn.running_mean"].tolist() == [1, 1, 1]
    assert pruned["x"].tolist() == [1, 0, 0]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_prune_regrow_equal_official(seed):
    for label in ["fmnist_cnn", "toy", "small_trackbn", "random1", "random4", "random6"]:
        shapes = SHAPE_SETS[label]
        weights, masks, grads = random_state(shapes, seed)
        before = {n: m.clone() for n, m in masks.items()}
        for anneal, rounds, r in [(1e-4, 200, 1), (0.6, 10, 1), (0.6, 10, 4), (0.6, 10, 10)]:
            want, want_n = official_fire_mask(weights, copy.deepcopy(masks), r, anneal, rounds)
            got, got_n = prune(weights, masks, prune_rate(r, rounds, anneal))
            assert got_n == want_n, (label, r)
            assert all(type(v) is int for v in got_n.values())
            for name in shapes:
                assert torch.equal(got[name], want[name]), (label, name, r)
            # regrow over the parameters only (buffers have no gradient), as the official
            params = {n: g for n, g in grads.items() if "running" not in n and "track" not in n}
            want_g = official_update_mask(copy.deepcopy(want), want_n, params)
            got_g = regrow(got, got_n, params)
            for name in shapes:
                assert torch.equal(got_g[name], want_g[name]), (label, name, r)
            for name in params:  # ceil(rate * active) <= active: the density comes back
                assert torch.equal(got_g[name].sum(), masks[name].sum()), (label, name, r)
        assert all(torch.equal(masks[n], before[n]) for n in shapes)


def test_regrow_takes_largest_inactive_gradients_only():
    m = {"w": torch.tensor([0.0, 1, 0, 1, 0]), "b": torch.tensor([0.0, 1])}
    g = {"w": torch.tensor([-2.0, 50, 3, -60, 1])}
    grown = regrow(m, {"w": 2, "b": 1}, g)
    assert grown["w"].tolist() == [1, 1, 1, 1, 0]
    assert grown["b"].tolist() == [0, 1]  # no gradient: unchanged


# --------------------------------------------------------------------------- update, mean, CF


def test_masked_update_and_weighted_mean_equal_official():
    gen = torch.Generator().manual_seed(5)
    glob = torch.randn(50, generator=gen)
    updates, sizes = [], [1500, 1250, 7, 1500]
    for _ in sizes:
        mask = torch.bernoulli(torch.full((50,), 0.3), generator=gen)
        trained = torch.randn(50, generator=gen)
        u = masked_update(mask, trained, glob)
        assert torch.equal(u, official_update(mask, trained, glob))
        assert torch.equal(u[mask == 0], torch.zeros(int((mask == 0).sum())))
        updates.append(u)
    want = official_agg_avg(dict(enumerate(updates)), dict(enumerate(sizes)))
    assert torch.equal(weighted_mean(updates, sizes), want)
    one = masked_update(torch.tensor([1.0, 0]), torch.tensor([3.0, 5]), torch.tensor([1.0, 2]))
    assert one.tolist() == [2, 0]


def test_consensus_worked_example():
    w = {"w": torch.tensor([0.5, -0.75, 0.25])}
    masks = [{"w": torch.tensor(m)} for m in ([1.0, 1, 0], [1.0, 0, 0], [1.0, 1, 1])]
    got = consensus(w, masks, 2)
    assert got["w"].tolist() == [0.5, -0.75, 0.0]  # 2 votes keep (>=), 1 vote drops
    assert w["w"].tolist() == [0.5, -0.75, 0.25]
    assert consensus(w, masks, 3)["w"].tolist() == [0.5, 0.0, 0.0]


@pytest.mark.parametrize("theta", [1, 2, 3, 5, 20])
def test_consensus_equal_official(theta):
    shapes = SHAPE_SETS["fmnist_cnn"]
    gen = torch.Generator().manual_seed(theta)
    weights = {n: torch.randn(s, generator=gen) for n, s in shapes.items()}
    clients = [
        {n: torch.bernoulli(torch.full(s, 0.3), generator=gen) for n, s in shapes.items()}
        for _ in range(6)
    ]
    want = official_consensus(weights, clients, theta)
    got = consensus(weights, clients, theta)
    assert all(torch.equal(got[n], want[n]) for n in shapes)
