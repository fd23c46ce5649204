"""The adaptive ALIE and IPM: the line search against brute force, a search of one evaluation
equal to the fixed attack bit for bit (asking the server changes nothing of the round, stateful
rules included), and a search that never does worse than the fixed factor."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from flwbc.api import run
from flwbc.attacks.adaptive import line_maximize


@pytest.mark.parametrize("peak", [0.05, 0.37, 1.0, 3.3, 17.0])
def test_line_maximize_finds_the_peak_of_a_unimodal_function(peak: float) -> None:
    calls: list[float] = []

    def f(x: float) -> float:
        calls.append(x)
        return -((x - peak) ** 2)

    x, value = line_maximize(f, 0.1, 40)
    assert len(calls) == 40 and all(c >= 0 for c in calls)
    grid = np.linspace(0, 40, 400001)
    assert abs(x - grid[np.argmax(-((grid - peak) ** 2))]) < 0.02 * max(peak, 1)
    assert value == max(f(c) for c in calls[: -0 or None][:40])


def test_line_maximize_keeps_the_start_when_nothing_beats_it() -> None:
    x, value = line_maximize(lambda x: -abs(x - 0.5), 0.5, 10)
    assert (x, value) == (0.5, 0.0)
    assert line_maximize(lambda x: math.sin(x), 1.0, 1) == (1.0, math.sin(1.0))


def test_line_maximize_counts_a_nan_value_as_worse_than_any_number() -> None:
    # past x = 2 the aggregate is non-finite: the search stays below it, at the peak 1.5
    def f(x: float) -> float:
        return -((x - 1.5) ** 2) if x <= 2 else math.nan

    x, value = line_maximize(f, 0.1, 40)
    assert abs(x - 1.5) < 0.01 and value == f(x)
    # a NaN start gives way to the first number found
    x, value = line_maximize(lambda x: math.nan if x == 1.0 else -((x - 3) ** 2), 1.0, 40)
    assert abs(x - 3) < 0.01
    assert math.isnan(line_maximize(lambda x: math.nan, 1.0, 5)[1])


BASE = {
    "data": {"name": "fmnist", "train_fraction": 0.05},
    "federation": {"num_clients": 20, "clients_per_round": 8, "rounds": 3},
    "local": {"epochs": 1, "batch_size": 32},
    "attack": {"num_malicious": 2, "schedule": {"name": "continuous"}},
    "threads": 1,
}


def _run(tmp: Path, data: Path, attack: dict, server: dict) -> list[dict]:
    cfg = {
        **BASE,
        "data": {**BASE["data"], "dir": str(data)},
        "attack": {**BASE["attack"], **attack},
        "server": server,
        "output": {"dir": str(tmp), "checkpoint_every": 0},
    }
    return [
        {k: v for k, v in r.items() if k not in ("seconds",)}
        for r in run(cfg, progress=False).records
    ]


@pytest.mark.parametrize(
    ("fixed", "adaptive", "server"),
    [
        (
            {"name": "alie"},
            {"name": "alie_opt", "options": {"evals": 1}},
            {"aggregator": "foolsgold"},
        ),
        (
            {"name": "ipm", "options": {"epsilon": 0.3}},
            {"name": "ipm_opt", "options": {"epsilon": 0.3, "evals": 1}},
            {"aggregator": "median", "pre": [{"name": "bucketing"}]},
        ),
    ],
)
def test_one_evaluation_is_the_fixed_attack(real_data_dir, tmp_path, fixed, adaptive, server):
    a = _run(tmp_path / "a", real_data_dir, fixed, server)
    b = _run(tmp_path / "b", real_data_dir, adaptive, server)
    assert a == b


def test_the_search_moves_fedavg_further_than_the_fixed_factor(real_data_dir, tmp_path) -> None:
    """Under FedAvg the aggregate's distance from the benign mean grows with ε, so the search
    goes past ε = 0.1 and the model ends further from the clean one."""
    clean = _run(tmp_path / "c", real_data_dir, {"name": "honest"}, {"aggregator": "fedavg"})
    fixed = _run(tmp_path / "f", real_data_dir, {"name": "ipm"}, {"aggregator": "fedavg"})
    opt = _run(tmp_path / "o", real_data_dir, {"name": "ipm_opt"}, {"aggregator": "fedavg"})
    assert (
        clean[-1]["test_acc"] - opt[-1]["test_acc"] > clean[-1]["test_acc"] - fixed[-1]["test_acc"]
    )
