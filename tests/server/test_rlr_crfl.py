"""RLR against a per-coordinate numpy brute force, CRFL's clipping of the global model and its
seeded noise by hand, bad options, and an end-to-end run of both on real data with both
in-process engines."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import flwbc
from flwbc.errors import FlwbcError
from flwbc.server import Aggregate, Aggregator, RoundContext, build_aggregator


def _ctx(w: np.ndarray, round_: int = 1, seed: int = 0) -> RoundContext:
    return RoundContext(
        round=round_,
        client_ids=list(range(100)),
        generator=torch.Generator().manual_seed(seed),
        global_weights=torch.from_numpy(w),
    )


def _aggregate(
    agg: Aggregator,
    x: np.ndarray,
    weights: np.ndarray | None = None,
    w: np.ndarray | None = None,
    round_: int = 1,
    seed: int = 0,
) -> Aggregate:
    k, p = x.shape
    a = np.full(k, 1.0 / k) if weights is None else weights
    w = np.zeros(p) if w is None else w
    out = agg.aggregate(torch.from_numpy(x), torch.from_numpy(a), _ctx(w, round_, seed))
    json.dumps(out.info)
    assert out.flagged is None
    return out


# ---------------------------------------------------------------- RLR


def _rlr_ref(x: np.ndarray, a: np.ndarray, theta: float, eta: float) -> np.ndarray:
    """Per coordinate: the sign vote, the learning rate, the weighted mean, with loops."""
    k, p = x.shape
    out = np.zeros(p)
    for j in range(p):
        votes = 0
        for i in range(k):
            votes += 1 if x[i, j] > 0 else -1 if x[i, j] < 0 else 0
        lr = -eta if abs(votes) < theta else eta
        out[j] = lr * sum(a[i] * x[i, j] for i in range(k))
    return out


def _votes_matrix() -> np.ndarray:
    """6 updates whose columns have sign sums 6, 5, 4, -4, 3, -3, 2, 0, 4, -5, some with zero
    entries (abstentions), at varied magnitudes."""
    rng = np.random.default_rng(0)
    cols = [
        [1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, -1],
        [-1, -1, -1, -1, -1, 1],
        [1, 1, 1, 1, 0, -1],
        [-1, -1, -1, 0, 0, 0],
        [1, 1, 1, 1, -1, -1],
        [1, -1, 1, -1, 1, -1],
        [1, 1, 1, 1, 0, 0],
        [-1, -1, -1, -1, -1, 0],
    ]
    signs = np.array(cols, dtype=np.float64).T
    return signs * rng.uniform(0.1, 2.0, size=signs.shape)


def test_rlr_matches_the_brute_force_at_and_around_the_threshold() -> None:
    x = _votes_matrix()
    rng = np.random.default_rng(1)
    a = rng.uniform(0.5, 2.0, size=6)
    a /= a.sum()
    sums = np.abs(np.sign(x).sum(axis=0))
    assert sums.tolist() == [6, 5, 4, 4, 3, 3, 2, 0, 4, 5]
    for theta, eta in [(4, 1.0), (4.0, 0.5), (3.5, 2.0), (5, 1.0), (0, 1.0), (6, 0.1)]:
        out = _aggregate(
            build_aggregator("rlr", {"threshold": theta, "server_lr": eta}), x, weights=a
        )
        ref = _rlr_ref(x, a, theta, eta)
        np.testing.assert_allclose(out.update.numpy(), ref, rtol=1e-12, atol=1e-15)
        assert out.info["reversed"] == pytest.approx(np.mean(sums < theta))
    # exactly at θ = 4 the rate is +η: columns 2, 3 and 8 (with two abstentions) keep the mean
    out = _aggregate(build_aggregator("rlr"), x, weights=a).update.numpy()
    mean = a @ x
    np.testing.assert_allclose(out[[0, 1, 2, 3, 8, 9]], mean[[0, 1, 2, 3, 8, 9]], rtol=1e-12)
    np.testing.assert_allclose(out[[4, 5, 6, 7]], -mean[[4, 5, 6, 7]], rtol=1e-12)


def test_rlr_on_random_updates_and_float32() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 500)) + 0.3
    x[:, ::7] = 0.0  # every update abstains there: the vote is 0 < θ
    a = rng.uniform(size=10)
    a /= a.sum()
    out = _aggregate(build_aggregator("rlr"), x, weights=a)
    np.testing.assert_allclose(out.update.numpy(), _rlr_ref(x, a, 4, 1.0), rtol=1e-12)
    x32 = torch.from_numpy(x).float()
    got = build_aggregator("rlr").aggregate(
        x32, torch.from_numpy(a), _ctx(np.zeros(500, dtype=np.float32))
    )
    assert got.update.dtype == torch.float32
    np.testing.assert_allclose(got.update.numpy(), _rlr_ref(x, a, 4, 1.0), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- CRFL


def test_crfl_clip_bound_schedule() -> None:
    agg = build_aggregator("crfl")  # the official EMNIST schedule
    assert [agg.clip_bound(t) for t in (1, 10, 384, 500)] == pytest.approx([4.25, 6.5, 100, 100])
    mnist = build_aggregator("crfl", {"rho": 15.0, "rho_slope": 0.1, "rho_start": 2.0})
    assert mnist.clip_bound(1) == pytest.approx(2.1) and mnist.clip_bound(200) == 15
    fixed = build_aggregator("crfl", {"rho_slope": 0.0, "rho_start": 7.0})
    assert fixed.clip_bound(1) == fixed.clip_bound(99) == 7.0


def test_crfl_clips_the_new_global_model_above_rho_only() -> None:
    rng = np.random.default_rng(3)
    p = 50
    x = rng.normal(size=(4, p)) * 0.1
    a = np.array([0.1, 0.2, 0.3, 0.4])
    agg = build_aggregator("crfl", {"sigma": 0.0, "rho": 5.0, "rho_slope": 0.0, "rho_start": 3.0})
    # above: ‖w + mean‖ > 3, the new model is scaled onto the sphere of radius 3
    w = rng.normal(size=p)
    w *= 10 / math.sqrt(sum(v * v for v in w))
    model = w + sum(a[i] * x[i] for i in range(4))
    norm = math.sqrt(sum(v * v for v in model))
    out = _aggregate(agg, x, weights=a, w=w)
    np.testing.assert_allclose(w + out.update.numpy(), model * 3 / norm, rtol=1e-10, atol=1e-12)
    assert np.linalg.norm(w + out.update.numpy()) == pytest.approx(3.0, rel=1e-12)
    assert out.info == {"clip_bound": 3.0, "norm": pytest.approx(norm), "clipped": True}
    # below: the update is plain FedAvg
    w_small = w * 0.1
    out = _aggregate(agg, x, weights=a, w=w_small)
    np.testing.assert_allclose(out.update.numpy(), a @ x, rtol=1e-9, atol=1e-12)
    assert out.info["clipped"] is False
    # the round sets the bound: round 4 of the default schedule gives 5
    out = _aggregate(build_aggregator("crfl", {"sigma": 0.0}), x, weights=a, w=w, round_=4)
    assert np.linalg.norm(w + out.update.numpy()) == pytest.approx(5.0, rel=1e-12)


def test_crfl_noise_is_seeded_with_std_sigma() -> None:
    p, sigma = 200_000, 0.05
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, p)) * 1e-3
    w = rng.normal(size=p) * 1e-3  # ‖w + mean‖ < 4.25: no clipping
    agg = build_aggregator("crfl", {"sigma": sigma})
    a = _aggregate(agg, x, w=w, seed=7)
    b = _aggregate(agg, x, w=w, seed=7)
    c = _aggregate(agg, x, w=w, seed=8)
    assert not a.info["clipped"]
    assert torch.equal(a.update, b.update) and not torch.equal(a.update, c.update)
    # update = new model − w, new model = w + mean + ε with ε the generator's N(0, σ²) draw
    eps = torch.randn(p, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * sigma
    new_model = w + x.mean(axis=0) + eps.numpy()
    np.testing.assert_allclose(a.update.numpy(), new_model - w, rtol=1e-9, atol=1e-12)
    clean = _aggregate(build_aggregator("crfl", {"sigma": 0.0}), x, w=w).update
    noise = (a.update - clean).numpy()
    assert abs(noise.mean()) < 5 * sigma / math.sqrt(p)
    assert noise.std() == pytest.approx(sigma, rel=0.01)


# ---------------------------------------------------------------- options and bounds


@pytest.mark.parametrize(
    ("name", "options", "field"),
    [
        ("rlr", {"threshold": -1}, "threshold"),
        ("rlr", {"threshold": float("nan")}, "threshold"),
        ("rlr", {"server_lr": 0}, "server_lr"),
        ("rlr", {"theta": 4}, "theta"),
        ("crfl", {"rho": 0}, "rho"),
        ("crfl", {"rho_slope": -0.1}, "rho_slope"),
        ("crfl", {"rho_start": 0}, "rho_start"),
        ("crfl", {"sigma": -1}, "sigma"),
        ("crfl", {"clip": 5}, "clip"),
    ],
)
def test_bad_options_say_so_in_one_line(name: str, options: dict, field: str) -> None:
    with pytest.raises(FlwbcError) as err:
        build_aggregator(name, options)
    msg = str(err.value)
    assert "\n" not in msg and f"'{name}'" in msg and field in msg


def test_rlr_refuses_a_threshold_above_n() -> None:
    agg = build_aggregator("rlr", {"threshold": 5})
    agg.check(5)
    with pytest.raises(FlwbcError, match=r"needs threshold <= n.*\(threshold=5, n=4\)") as err:
        agg.check(4)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["rlr", "crfl"])
def test_rlr_and_crfl_run_on_both_engines(real_data_dir: Path, tmp_path: Path, rule: str) -> None:
    def run(engine: str) -> flwbc.RunResult:
        return flwbc.run(
            {
                "seed": 4,
                "engine": engine,
                "model": "mlp",
                "data": {"dir": str(real_data_dir), "train_fraction": 0.02},
                "federation": {"num_clients": 12, "clients_per_round": 8, "rounds": 2},
                "local": {"epochs": 1, "batch_size": 32},
                "attack": {"name": "badnets", "num_malicious": 2, "rounds": [1, 2]},
                "server": {"aggregator": rule},
                "output": {"dir": str(tmp_path), "name": f"{rule}-{engine}"},
                "threads": 1,
            },
            progress=False,
        )

    seq, bat = run("sequential"), run("batched")
    assert len(seq.records) == len(bat.records) == 2
    for s, b in zip(seq.records, bat.records, strict=True):
        assert s["clients"] == b["clients"] and s["malicious"] == b["malicious"]
        assert sum(s["malicious"]) > 0 and "detection" not in s
        got = s["aggregator"]
        if rule == "rlr":
            assert 0.0 <= got["reversed"] <= 1.0
            assert got["reversed"] == pytest.approx(b["aggregator"]["reversed"], abs=1e-3)
        else:
            assert got["clip_bound"] == pytest.approx(0.25 * s["round"] + 4)
            assert got["clipped"] == b["aggregator"]["clipped"]
    assert torch.isfinite(seq.weights).all()
    assert torch.allclose(seq.weights, bat.weights, atol=1e-5)
    if rule == "crfl":  # the final model is the clipped model plus noise of std 0.01
        assert float(seq.weights.norm()) <= 4.5 + 5 * 0.01 * math.sqrt(seq.weights.numel())
