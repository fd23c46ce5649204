"""Central DP and FLTrust against numpy references; DP noise statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flwbc.errors import FlwbcError
from flwbc.server import RoundContext, build_aggregator


def ctx(reference: torch.Tensor | None = None, seed: int = 0) -> RoundContext:
    return RoundContext(
        round=1,
        client_ids=list(range(10)),
        generator=torch.Generator().manual_seed(seed),
        global_weights=torch.zeros(1),
        reference_update=(lambda: reference) if reference is not None else None,
    )


def numpy_clip(x: np.ndarray, bound: float) -> np.ndarray:
    out = x.copy()
    for i, row in enumerate(x):
        n = np.linalg.norm(row)
        if n > bound:
            out[i] = row * bound / n
    return out


def test_cdp_without_noise_is_the_clipped_weighted_mean() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 30)) * rng.uniform(0.1, 3, size=(7, 1))
    w = rng.uniform(size=7)
    w /= w.sum()
    agg = build_aggregator("cdp", {"clip": 2.0, "sigma": 0.0})
    out = agg.aggregate(torch.tensor(x), torch.tensor(w), ctx())
    expected = w @ numpy_clip(x, 2.0)
    np.testing.assert_allclose(out.update.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert out.info["clipped"] == int(sum(np.linalg.norm(x, axis=1) > 2.0))


@pytest.mark.parametrize("kind", ["laplace", "gaussian"])
def test_cdp_noise_has_the_stated_std(kind: str) -> None:
    p, sigma = 400_000, 0.7
    agg = build_aggregator("cdp", {"clip": 1.0, "sigma": sigma, "noise": kind})
    out = agg.aggregate(torch.zeros(3, p), torch.full((3,), 1 / 3), ctx(seed=5)).update.double()
    assert abs(out.mean().item()) < 5 * sigma / math.sqrt(p)
    assert out.std().item() == pytest.approx(sigma, rel=0.01)
    mean_abs = out.abs().mean().item()
    # E|X| is b = σ/√2 for Laplace and σ·√(2/π) for a Gaussian: tells the two apart
    expected_abs = sigma / math.sqrt(2) if kind == "laplace" else sigma * math.sqrt(2 / math.pi)
    assert mean_abs == pytest.approx(expected_abs, rel=0.01)


def test_cdp_options_are_validated() -> None:
    for bad in ({"clip": 0}, {"sigma": -1}, {"noise": "uniform"}, {"epsilon": 1}):
        with pytest.raises(FlwbcError, match="cdp"):
            build_aggregator("cdp", bad)


def test_fltrust_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    g0 = rng.normal(size=20)
    x = rng.normal(size=(6, 20))
    x[2] = -3 * g0  # opposite direction: no trust
    agg = build_aggregator("fltrust", {"root_size": 10})
    out = agg.aggregate(
        torch.tensor(x), torch.full((6,), 1 / 6, dtype=torch.float64), ctx(torch.tensor(g0))
    )
    cos = x @ g0 / (np.linalg.norm(x, axis=1) * np.linalg.norm(g0))
    ts = np.maximum(cos, 0)
    scaled = x * (np.linalg.norm(g0) / np.linalg.norm(x, axis=1))[:, None]
    expected = (ts[:, None] * scaled).sum(0) / ts.sum()
    np.testing.assert_allclose(out.update.numpy(), expected, rtol=1e-10)
    assert out.info["trust"][2] == 0.0


def test_fltrust_with_no_trusted_update_keeps_the_model() -> None:
    g0 = torch.ones(5, dtype=torch.float64)
    agg = build_aggregator("fltrust")
    out = agg.aggregate(
        -torch.rand(4, 5, dtype=torch.float64) - 0.1, torch.full((4,), 0.25), ctx(g0)
    )
    assert torch.equal(out.update, torch.zeros(5, dtype=torch.float64))
