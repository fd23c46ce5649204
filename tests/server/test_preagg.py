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
