"""`leadfl_bulyan` against a transcription of the official LeadFL code's `bulyan` on random
state_dict-like client models (several named tensors each), at the template's n = 10 and at
other n with f = n - 8; exact ties broken as the official code's stable sort breaks them; the
options, the bound `check` enforces, and the record."""

from __future__ import annotations

import json
from typing import Dict  # noqa: UP035 (the transcription keeps the official signature)

import numpy as np
import pytest
import torch

from flwbc.errors import FlwbcError
from flwbc.server import AGGREGATORS, RoundContext, build_aggregator

# ---------------------------------------------------------------- the official function

# Transcribed from chaoyitud/LeadFL at 06ecc989de259eea4402c154ed4599a1a20fd3bd,
# fltk/strategy/aggregation/bulyan.py:8-35 (comments and docstring dropped).


def official_bulyan(
    parameters: Dict[str, Dict[str, torch.Tensor]],  # noqa: UP006
    sizes: Dict[str, int],  # noqa: UP006
) -> Dict[str, torch.Tensor]:  # noqa: UP006
    multi_krum = 5
    candidate_num = 7
    distances = {}
    tmp_parameters = {}
    for idx, parameter in parameters.items():
        distance = []
        for _idx, _parameter in parameters.items():
            dis = [
                torch.norm((parameter[name].data - _parameter[name].data).float()) ** 2
                for name in parameter.keys()  # noqa: SIM118
            ]
            distance.append(sum(dis))
            tmp_parameters[idx] = parameter
        distance.sort()
        distances[idx] = sum(distance[:candidate_num])

    sorted_distance = dict(sorted(distances.items(), key=lambda item: item[1]))
    candidate_parameters = [tmp_parameters[idx] for idx in sorted_distance.keys()][  # noqa: SIM118
        1 : multi_krum - 1
    ]
    new_params = {}
    for name in candidate_parameters[0].keys():  # noqa: SIM118
        new_params[name] = sum([param[name].data for param in candidate_parameters]) / len(
            candidate_parameters
        )

    return new_params


# ---------------------------------------------------------------- helpers

SHAPES = {"conv.weight": (4, 1, 3, 3), "conv.bias": (4,), "fc.weight": (3, 8), "fc.bias": (3,)}


def _models(seed: int, n: int, spread: float = 1.0) -> list[dict[str, torch.Tensor]]:
    """n state_dict-like models around a common centre, each with its own scale (so scores are
    spread out), some far away like attackers."""
    gen = torch.Generator().manual_seed(seed)
    centre = {k: torch.randn(s, generator=gen) for k, s in SHAPES.items()}
    scales = 0.1 + torch.rand(n, generator=gen) * spread
    return [
        {k: centre[k] + scales[i] * torch.randn(s, generator=gen) for k, s in SHAPES.items()}
        for i in range(n)
    ]


def _flat(model: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([model[k].reshape(-1) for k in SHAPES])


def _ours(models: list[dict[str, torch.Tensor]], global_model: torch.Tensor, **options):
    n = len(models)
    updates = torch.stack([_flat(m) for m in models]) - global_model
    ctx = RoundContext(
        round=1,
        client_ids=[100 + i for i in range(n)],
        generator=torch.Generator().manual_seed(0),
        global_weights=global_model,
    )
    weights = torch.rand(n, dtype=updates.dtype)  # ignored: rank-based
    agg = build_aggregator("leadfl_bulyan", options)
    return agg.aggregate(updates, weights / weights.sum(), ctx)


def _official_ranks(models: list[dict[str, torch.Tensor]]) -> list[int]:
    """The order in which the official code sorts the models (its score, stable)."""
    params = {str(i): m for i, m in enumerate(models)}
    scores = {}
    for idx, p in params.items():
        d = sorted(sum(torch.norm((p[k] - q[k]).float()) ** 2 for k in p) for q in params.values())
        scores[idx] = sum(d[:7])
    return [int(i) for i, _ in sorted(scores.items(), key=lambda item: item[1])]


# ---------------------------------------------------------------- against the official code


@pytest.mark.parametrize("seed", range(6))
def test_defaults_equal_the_official_code_at_n_10(seed: int) -> None:
    models = _models(seed, 10)
    glob = torch.randn(sum(int(np.prod(s)) for s in SHAPES.values()), dtype=torch.float64)
    want = official_bulyan({str(i): m for i, m in enumerate(models)}, {})
    out = _ours([{k: v.double() for k, v in m.items()} for m in models], glob)
    got = glob + out.update
    torch.testing.assert_close(got.float(), _flat(want), rtol=1e-5, atol=1e-6)
    ranks = _official_ranks(models)
    assert out.info["selected_pos"] == ranks[1:4]
    assert out.info["dropped_pos"] == ranks[:1]
    assert out.info["selected"] == [100 + r for r in ranks[1:4]]
    assert out.flagged == sorted(set(range(10)) - set(ranks[1:4]))
    json.dumps(out.info)


@pytest.mark.parametrize("n", [8, 9, 12, 15])
def test_f_n_minus_8_equals_the_official_code_at_other_n(n: int) -> None:
    models = _models(40 + n, n)
    glob = torch.zeros(sum(int(np.prod(s)) for s in SHAPES.values()))
    want = _flat(official_bulyan({str(i): m for i, m in enumerate(models)}, {}))
    got = _ours(models, glob, f=n - 8).update
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_exact_ties_go_to_the_lower_row_as_the_official_stable_sort() -> None:
    # integer coordinates: every distance and score is exact; rows 2k and 2k+1 are identical,
    # so their scores tie exactly and only the sort's tie rule orders them
    gen = torch.Generator().manual_seed(3)
    base = [torch.randint(-3, 4, (6,), generator=gen).double() for _ in range(5)]
    rows = [b for b in base for _ in range(2)]
    models = [{"w": r.reshape(2, 3)} for r in rows]
    want = official_bulyan({str(i): m for i, m in enumerate(models)}, {})["w"].reshape(-1)
    updates = torch.stack(rows)
    ctx = RoundContext(
        round=1,
        client_ids=list(range(10)),
        generator=torch.Generator().manual_seed(0),
        global_weights=torch.zeros(6, dtype=torch.float64),
    )
    out = build_aggregator("leadfl_bulyan").aggregate(updates, torch.full((10,), 0.1), ctx)
    torch.testing.assert_close(out.update, want)
    params = {str(i): m for i, m in enumerate(models)}
    scores = {
        i: sum(sorted(float(((p["w"] - q["w"]) ** 2).sum()) for q in params.values())[:7])
        for i, p in params.items()
    }
    ranks = [int(i) for i, _ in sorted(scores.items(), key=lambda item: item[1])]
    assert out.info["dropped_pos"] + out.info["selected_pos"] == ranks[:4]
    # the best pair ties: the official code keeps the later row of it, drops the earlier
    assert scores[str(ranks[0])] == scores[str(ranks[1])] and ranks[0] < ranks[1]


# ---------------------------------------------------------------- options and bounds


def test_skip_and_keep_select_those_ranks() -> None:
    models = _models(9, 10)
    glob = torch.zeros(sum(int(np.prod(s)) for s in SHAPES.values()))
    updates = torch.stack([_flat(m) for m in models])
    ranks = _official_ranks(models)
    out = _ours(models, glob, skip=0, keep=3)  # multikrum's f = 2, m = 3
    assert out.info["selected_pos"] == ranks[:3] and out.info["dropped_pos"] == []
    torch.testing.assert_close(out.update, updates[ranks[:3]].mean(0))
    mk = build_aggregator("multikrum", {"f": 2, "m": 3}).aggregate(
        updates,
        torch.full((10,), 0.1),
        RoundContext(
            round=1, client_ids=list(range(10)), generator=torch.Generator(), global_weights=glob
        ),
    )
    torch.testing.assert_close(out.update, mk.update)
    out = _ours(models, glob, skip=2, keep=5)
    assert out.info["selected_pos"] == ranks[2:7]


def test_defaults_and_flags() -> None:
    agg = build_aggregator("leadfl_bulyan")
    assert (agg.f, agg.skip, agg.keep) == (2, 1, 3)
    assert AGGREGATORS["leadfl_bulyan"].rank_based
    assert agg.krum_f is None  # it does not keep Krum's choice: Fang's simulation must not
    agg.check(10)
    agg.check(5)


@pytest.mark.parametrize(
    ("options", "n"), [({}, 4), ({"f": 6}, 8), ({"skip": 5, "keep": 6}, 10), ({"f": 0}, 2)]
)
def test_check_refuses_too_few_updates(options: dict, n: int) -> None:
    agg = build_aggregator("leadfl_bulyan", options)
    with pytest.raises(FlwbcError) as err:
        agg.check(n)
    msg = str(err.value)
    assert "\n" not in msg and "'leadfl_bulyan'" in msg and f"n={n}" in msg


@pytest.mark.parametrize("options", [{"f": -1}, {"keep": 0}, {"skip": -1}, {"f": 1.5}])
def test_bad_options_are_one_line(options: dict) -> None:
    with pytest.raises(FlwbcError) as err:
        build_aggregator("leadfl_bulyan", options)
    assert "\n" not in str(err.value) and next(iter(options)) in str(err.value)
