"""Post-aggregation steps: noise and clipping of the aggregate against hand computations, the
rules built on them (cdp, crfl) equal to the steps behind FedAvg, and central DP behind the
median as one config line whose noise is the stream (seed, "post", t, position)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from flwbc.api import run
from flwbc.config import make_config
from flwbc.context import RoundContext
from flwbc.errors import FlwbcError
from flwbc.experiment import check_plugin_options
from flwbc.postagg import build_post_aggregators
from flwbc.rng import torch_generator
from flwbc.server import build_aggregator
from flwbc.transforms import laplace_noise


def _step(name: str, **options: object):
    (step,) = build_post_aggregators([SimpleNamespace(name=name, options=options)])
    return step


def _ctx(w: torch.Tensor, round_: int = 1, seed: int = 0) -> RoundContext:
    return RoundContext(round_, [0, 1, 2], torch.Generator().manual_seed(seed), w)


def test_noise_adds_the_generators_draw() -> None:
    u = torch.linspace(-1, 1, 1000, dtype=torch.float64)
    got, info = _step("noise", sigma=0.3, distribution="gaussian").apply(
        u, _ctx(u), torch.Generator().manual_seed(4)
    )
    draw = torch.randn(1000, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert torch.equal(got, u + draw * 0.3) and info == {}
    got, _ = _step("noise", sigma=0.3).apply(u, _ctx(u), torch.Generator().manual_seed(4))
    # Laplace with std σ has scale σ/√2
    lap = laplace_noise((1000,), 0.3 / math.sqrt(2), torch.Generator().manual_seed(4), "cpu")
    assert torch.equal(got, u + lap.double())


def test_clip_scales_the_aggregate_only_above_the_bound() -> None:
    step = _step("clip", bound=2.0)
    w = torch.zeros(2)
    got, info = step.apply(torch.tensor([3.0, 4.0]), _ctx(w), torch.Generator())
    np.testing.assert_allclose(got.numpy(), [1.2, 1.6], rtol=1e-6)
    assert info == {"norm": pytest.approx(5.0), "clipped": True}
    got, info = step.apply(torch.tensor([0.6, 0.8]), _ctx(w), torch.Generator())
    assert torch.equal(got, torch.tensor([0.6, 0.8])) and info["clipped"] is False


def test_cdp_and_crfl_are_their_steps_behind_fedavg() -> None:
    """The rules apply the same steps with the round's server stream: clipping each update
    (numpy), the weighted mean, then the post step with a generator seeded alike."""
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(5, 40)) * rng.uniform(0.2, 3, size=(5, 1)))
    a = torch.from_numpy(rng.dirichlet(np.ones(5)))
    w = torch.from_numpy(rng.normal(size=40))
    norms = np.linalg.norm(x.numpy(), axis=1, keepdims=True)
    clipped = torch.from_numpy(x.numpy() * np.minimum(1.0, 1.5 / norms))
    cdp = build_aggregator("cdp", {"clip": 1.5, "sigma": 0.2}).aggregate(x, a, _ctx(w, seed=9))
    noise, _ = _step("noise", sigma=0.2).apply(
        a @ clipped, _ctx(w), torch.Generator().manual_seed(9)
    )
    np.testing.assert_allclose(cdp.update.numpy(), noise.numpy(), rtol=1e-12, atol=1e-12)
    opts = {"rho": 3.0, "rho_slope": 0.0, "rho_start": 2.0, "sigma": 0.05}
    crfl = build_aggregator("crfl", opts).aggregate(x, a, _ctx(w, round_=3, seed=2))
    smooth, info = _step("model_clip", **opts).apply(
        a @ x, _ctx(w, round_=3), torch.Generator().manual_seed(2)
    )
    assert torch.equal(crfl.update, smooth) and crfl.info == info
    assert np.linalg.norm((w + smooth).numpy()) != pytest.approx(2.0)  # the noise is on top


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("noise", {}, "post-aggregation step 'noise': option sigma"),
        ("noise", {"sigma": -1.0}, "post-aggregation step 'noise': option sigma = -1.0"),
        ("clip", {"bound": 0.0}, "post-aggregation step 'clip': option bound = 0.0"),
        ("noise", {"sigma": 1.0, "std": 2.0}, "post-aggregation step 'noise' has no option std"),
        ("nois", {}, "unknown post-aggregation step 'nois'; choose one of clip, model_clip, noise"),
    ],
)
def test_bad_steps_are_one_line(name: str, options: dict, message: str) -> None:
    with pytest.raises(FlwbcError) as err:
        _step(name, **options)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_central_dp_behind_the_median_is_one_config_line(
    real_data_dir: Path, tmp_path: Path
) -> None:
    """median after per-update clipping, with Laplace noise after it: the run's model is the
    same run's without noise plus the draw of the stream (seed, "post", t, 0) in every round
    (one round here, so both start from the same model)."""
    base = {
        "data": {"name": "fmnist", "train_fraction": 0.02, "dir": str(real_data_dir)},
        "federation": {"num_clients": 6, "clients_per_round": 5, "rounds": 1},
        "local": {"epochs": 1, "batch_size": 32},
        "attack": {"enabled": False},
        "threads": 1,
        "seed": 3,
    }
    server = {"aggregator": "median", "pre": [{"name": "clip", "options": {"bound": 0.5}}]}
    noisy = {**server, "post": [{"name": "noise", "options": {"sigma": 0.01}}]}
    plain = run({**base, "server": server, "output": {"dir": str(tmp_path / "a")}}, progress=False)
    dp = run({**base, "server": noisy, "output": {"dir": str(tmp_path / "b")}}, progress=False)
    gen = torch_generator(3, "post", 1, 0)
    draw = laplace_noise(tuple(plain.weights.shape), 0.01 / math.sqrt(2), gen, "cpu")
    np.testing.assert_allclose(
        (dp.weights - plain.weights).double().numpy(), draw.double().numpy(), atol=1e-6
    )
    # the same updates were clipped in both; the noise step records nothing of its own
    assert dp.records[0]["pre"] == plain.records[0]["pre"] and "post" not in dp.records[0]
    with pytest.raises(FlwbcError, match="server.pre or server.post"):
        check_plugin_options(make_config(
            {**base, "server": {"post": noisy["post"]}, "attack": {
                "num_malicious": 2, "mode": "emulate", "emulate_average": "reference",
            }, "federation": {**base["federation"], "num_clients": 10, "weighting": "uniform"}}
        ))  # fmt: skip
