"""Pre-aggregation steps: static clipping against a hand computation, chained in front of a
rule through the round library."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flwbc.errors import FlwbcError
from flwbc.preagg import build_pre_aggregators
from flwbc.server import RoundContext


class Ref:
    def __init__(self, name: str, **options: float) -> None:
        self.name, self.options = name, options


def _ctx() -> RoundContext:
    return RoundContext(1, [7, 8, 9], torch.Generator(), torch.zeros(2))


def test_clip_scales_only_updates_above_the_bound() -> None:
    (clip,) = build_pre_aggregators([Ref("clip", bound=2.0)])
    updates = torch.tensor([[3.0, 4.0], [0.6, 0.8], [0.0, -10.0]])
    weights = torch.tensor([0.2, 0.3, 0.5])
    out, w, info = clip.apply(updates, weights, _ctx(), torch.Generator())
    expected = np.array([[1.2, 1.6], [0.6, 0.8], [0.0, -2.0]])  # norms 5, 1, 10 -> 2, 1, 2
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)
    assert torch.equal(w, weights) and info == {"clipped": [7, 9]}


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (
            Ref("clip", bound=0.0),
            "pre-aggregation step 'clip': option bound = 0.0: Input should be greater than 0",
        ),
        (Ref("clip", limit=1.0), "pre-aggregation step 'clip' has no option limit"),
        (
            Ref("bucket"),
            "unknown pre-aggregation step 'bucket'; choose one of bucketing, clip, nnm",
        ),
    ],
)
def test_bad_steps_are_one_line(ref: Ref, message: str) -> None:
    with pytest.raises(FlwbcError) as err:
        build_pre_aggregators([ref])
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("k", [5, 6, 9])
def test_norm_floor_drops_what_a_brute_force_drops(k: int) -> None:
    """Against numpy: norms below fraction × the lower-middle norm are dropped, the kept
    weights rescaled to the round's total; an FL-WBC-like round (noisy benign rows, two quiet
    attacker rows) loses exactly its attackers."""
    (floor,) = build_pre_aggregators([Ref("norm_floor", fraction=0.5)])
    gen = torch.Generator().manual_seed(k)
    updates = torch.randn(k, 50, generator=gen, dtype=torch.float64) * 3.0
    updates[:2] *= 0.1  # the quiet rows
    weights = torch.rand(k, generator=gen, dtype=torch.float64)
    ids = list(range(100, 100 + k))
    ctx = RoundContext(1, ids, torch.Generator(), torch.zeros(50))
    out, w, info = floor.apply(updates, weights, ctx, torch.Generator())
    norms = np.linalg.norm(updates.numpy(), axis=1)
    lower_middle = np.sort(norms)[(k - 1) // 2]
    keep = norms >= 0.5 * lower_middle
    assert info == {"dropped": [c for c, kept in zip(ids, keep, strict=True) if not kept]}
    assert info["dropped"] == [100, 101]
    np.testing.assert_array_equal(out.numpy(), updates.numpy()[keep])
    want = weights.numpy()[keep] * weights.numpy().sum() / weights.numpy()[keep].sum()
    np.testing.assert_allclose(w.numpy(), want, rtol=1e-12)


def test_norm_floor_drops_non_finite_updates_and_takes_the_median_of_the_rest() -> None:
    """An attacker whose training diverged sends NaN or inf: that row is dropped, and the
    floor is computed from the finite rows' norms as if it were absent."""
    (floor,) = build_pre_aggregators([Ref("norm_floor", fraction=0.5)])
    gen = torch.Generator().manual_seed(3)
    finite = torch.randn(7, 20, generator=gen, dtype=torch.float64)
    finite[0] *= 0.1
    weights = torch.ones(9, dtype=torch.float64)
    bad = torch.full((2, 20), float("nan"), dtype=torch.float64)
    bad[1, 0] = float("inf")
    updates = torch.cat([bad, finite])
    ctx = RoundContext(1, list(range(9)), torch.Generator(), torch.zeros(20))
    out, w, info = floor.apply(updates, weights, ctx, torch.Generator())
    ref_out, ref_w, ref_info = floor.apply(
        finite,
        weights[2:],
        RoundContext(1, list(range(2, 9)), torch.Generator(), torch.zeros(20)),
        torch.Generator(),
    )
    assert info["dropped"] == [0, 1, *ref_info["dropped"]] == [0, 1, 2]
    assert torch.equal(out, ref_out)
    np.testing.assert_allclose(w.numpy(), ref_w.numpy() * 9 / 7, rtol=1e-12)
    two = RoundContext(1, [4, 5], torch.Generator(), torch.zeros(20))
    out, w, info = floor.apply(bad, weights[:2], two, torch.Generator())
    assert len(out) == 0 and info["dropped"] == [4, 5]
