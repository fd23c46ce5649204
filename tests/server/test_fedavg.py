"""FedAvg (paper eq. 4) through the aggregator registry, against numpy's weighted average."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flwbc.errors import FlwbcError
from flwbc.server import Aggregate, RoundContext, build_aggregator


def _ctx(k: int, p: int, global_weights: torch.Tensor | None = None) -> RoundContext:
    return RoundContext(
        round=1,
        client_ids=list(range(k)),
        generator=torch.Generator().manual_seed(0),
        global_weights=torch.zeros(p) if global_weights is None else global_weights,
    )


def _random_round(seed: int, k: int, p: int, dtype=np.float64):
    rng = np.random.default_rng(seed)
    updates = rng.normal(size=(k, p)).astype(dtype)
    raw = rng.random(k) + 0.05
    return updates, raw / raw.sum()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fedavg_is_weighted_mean(dtype):
    updates, weights = _random_round(0, 10, 37, dtype)
    agg = build_aggregator("fedavg")
    out = agg.aggregate(torch.from_numpy(updates), torch.from_numpy(weights), _ctx(10, 37))
    assert isinstance(out, Aggregate)
    assert out.update.shape == (37,)
    assert out.update.dtype == torch.from_numpy(updates).dtype
    ref = np.average(updates.astype(np.float64), axis=0, weights=weights)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out.update.numpy(), ref, rtol=tol, atol=tol)


def test_fedavg_uniform_weights_is_plain_mean():
    updates, _ = _random_round(1, 4, 9)
    out = build_aggregator("fedavg", {}).aggregate(
        torch.from_numpy(updates), torch.full((4,), 0.25, dtype=torch.float64), _ctx(4, 9)
    )
    np.testing.assert_allclose(out.update.numpy(), updates.mean(0), rtol=1e-12)


def test_global_plus_aggregate_is_weighted_average_of_client_models():
    rng = np.random.default_rng(2)
    k, p = 6, 25
    global_w = rng.normal(size=p)
    models = global_w + rng.normal(scale=0.1, size=(k, p))
    weights = np.array([0.1, 0.3, 0.0, 0.2, 0.25, 0.15])
    updates = models - global_w
    gw = torch.from_numpy(global_w)
    out = build_aggregator("fedavg").aggregate(
        torch.from_numpy(updates), torch.from_numpy(weights), _ctx(k, p, gw)
    )
    new_global = gw + out.update
    np.testing.assert_allclose(
        new_global.numpy(), np.average(models, axis=0, weights=weights), rtol=1e-12, atol=1e-12
    )


def test_float32_updates_with_float64_weights():
    updates, weights = _random_round(3, 5, 11, np.float32)
    out = build_aggregator("fedavg").aggregate(
        torch.from_numpy(updates), torch.from_numpy(weights), _ctx(5, 11)
    )
    assert out.update.dtype == torch.float32
    np.testing.assert_allclose(
        out.update.numpy(), np.average(updates, axis=0, weights=weights), rtol=1e-5, atol=1e-6
    )


def test_unknown_aggregator():
    with pytest.raises(FlwbcError, match="nosuchrule"):
        build_aggregator("nosuchrule")


def test_unexpected_option():
    with pytest.raises(FlwbcError, match="beta"):
        build_aggregator("fedavg", {"beta": 0.1})


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(1, 12),
    p=st.integers(1, 30),
    perm_seed=st.integers(0, 2**32 - 1),
)
def test_fedavg_permutation_invariant(seed, k, p, perm_seed):
    updates, weights = _random_round(seed, k, p)
    perm = np.random.default_rng(perm_seed).permutation(k)
    agg = build_aggregator("fedavg")
    a = agg.aggregate(torch.from_numpy(updates), torch.from_numpy(weights), _ctx(k, p))
    b = agg.aggregate(
        torch.from_numpy(updates[perm].copy()), torch.from_numpy(weights[perm].copy()), _ctx(k, p)
    )
    np.testing.assert_allclose(a.update.numpy(), b.update.numpy(), rtol=1e-12, atol=1e-12)
