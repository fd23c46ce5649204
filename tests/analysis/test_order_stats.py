"""Order statistics of the attackers' values among the benign ones: the per-round statistics
against a numpy brute force, the exchangeable baseline against enumeration, and the command on
a tiny real run."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flwbc.analysis.order_stats import (
    BINS,
    middle_positions,
    null_middle_probability,
    order_statistics,
    order_statistics_replay,
)
from flwbc.api import run
from flwbc.cli import main
from flwbc.config import make_config


def _brute(x: np.ndarray, mal: np.ndarray) -> dict[str, object]:
    """The statistics, one coordinate and one attacker value at a time."""
    k = x.shape[0]
    benign, attackers = x[~mal], x[mal]
    mid = [k // 2] if k % 2 else [k // 2 - 1, k // 2]
    in_middle, quantiles, zs, shifts, spreads = [], [], [], [], []
    for j in range(x.shape[1]):
        order = np.argsort(x[:, j], kind="stable")
        in_middle.append(any(mal[order[p]] for p in mid))
        b = benign[:, j]
        sd = np.std(b, ddof=1)
        spreads.append(sd)
        for a in attackers[:, j]:
            quantiles.append((np.sum(b < a) + 0.5 * np.sum(b == a)) / len(b))
            if sd > 0:
                zs.append(abs(a - np.median(b)) / sd)
        if sd > 0:
            shifts.append(abs(np.median(x[:, j]) - np.median(b)) / sd)
    hist = np.zeros(BINS)
    for q in quantiles:
        hist[min(int(q * BINS), BINS - 1)] += 1
    return {
        "attacker_in_middle": np.mean(in_middle),
        "attacker_quantile_mean": np.mean(quantiles),
        "attacker_quantile_hist": hist / len(quantiles),
        "benign_spread_median": np.median(spreads),
        "attacker_z_median": np.median(zs),
        "median_shift_z_median": np.median(shifts),
    }


@pytest.mark.parametrize("k, m, ties", [(10, 2, False), (9, 3, True), (7, 1, True)])
def test_order_statistics_match_a_brute_force(k: int, m: int, ties: bool) -> None:
    rng = np.random.default_rng(k * 10 + m)
    x = rng.integers(-3, 4, size=(k, 200)).astype(float) if ties else rng.normal(size=(k, 200))
    x[:m] = 0.2 + 0.01 * rng.normal(size=(m, 200))  # consistent attackers, near the centre
    mal = np.arange(k) < m
    coords = torch.tensor(rng.choice(200, 120, replace=False))
    got = order_statistics(torch.tensor(x, dtype=torch.float32), mal.tolist(), coords)
    want = _brute(x.astype(np.float32).astype(float)[:, coords.numpy()], mal)
    assert (got["clients"], got["attackers"], got["coords"]) == (k, m, 120)
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-9, atol=1e-12, err_msg=key)
    assert got["attacker_in_middle_null"] == null_middle_probability(k, m)


def test_a_round_without_attackers_has_only_the_benign_spread() -> None:
    x = torch.randn(5, 30)
    got = order_statistics(x, [False] * 5, torch.arange(30))
    assert set(got) == {"clients", "attackers", "coords", "benign_spread_median"}
    assert got["benign_spread_median"] == pytest.approx(np.median(np.std(x.numpy(), 0, ddof=1)))


@pytest.mark.parametrize("k", range(2, 9))
def test_the_exchangeable_baseline_counts_every_placement(k: int) -> None:
    for m in range(k + 1):
        mid = set(middle_positions(k))
        hits = [bool(mid & set(s)) for s in itertools.combinations(range(k), m)]
        assert null_middle_probability(k, m) == pytest.approx(np.mean(hits), abs=1e-12)


@pytest.mark.slow
def test_the_command_replays_a_run(real_data_dir: Path, tmp_path: Path, capsys) -> None:
    base = {
        "data": {"name": "fmnist", "dir": str(real_data_dir), "train_fraction": 0.025},
        "federation": {"num_clients": 20, "clients_per_round": 5, "rounds": 2},
        "local": {"epochs": 1, "batch_size": 10},
        "attack": {"num_malicious": 2, "num_images": 2, "rounds": [1], "epochs": 2},
        "server": {"aggregator": "median"},
        "threads": 1,
        "output": {"dir": str(tmp_path), "name": "r"},
    }
    before = torch.get_num_threads()
    try:
        run_dir = run(make_config(base), progress=False).run_dir
        assert main(["order-stats", str(run_dir), "--coords", "64", "--no-progress"]) == 0
    finally:
        torch.set_num_threads(before)
    assert str(run_dir) in capsys.readouterr().out
    recs = [json.loads(x) for x in (run_dir / "order_stats.jsonl").read_text().splitlines()]
    assert [(r["round"], r["adversarial"], r["attackers"]) for r in recs] == [
        (1, True, 2),
        (2, False, 0),
    ]
    first = recs[0]
    assert first["coords"] == 64 and first["clients"] == 5
    assert 0 <= first["attacker_in_middle"] <= 1
    assert first["attacker_in_middle_null"] == null_middle_probability(5, 2)
    assert sum(first["attacker_quantile_hist"]) == pytest.approx(1.0)
    summary = json.loads((run_dir / "order_stats.json").read_text())
    assert summary["rounds_with_attackers"] == 1
    assert summary["attacker_in_middle"] == first["attacker_in_middle"]
    assert not (run_dir / "order_stats.jsonl.partial").exists()
    # bad input: one line, exit 2, the earlier result kept
    kept = (run_dir / "order_stats.jsonl").read_bytes()
    for args, words in [
        (["--coords", "0"], "--coords must be positive"),
        (["--rounds", "3"], "rounds must be 1..2"),
    ]:
        assert main(["order-stats", str(run_dir), *args, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1
    assert (run_dir / "order_stats.jsonl").read_bytes() == kept


@pytest.mark.slow
def test_the_replay_sees_a_crafted_attack_as_the_server_receives_it(
    real_data_dir: Path, tmp_path: Path
) -> None:
    """ALIE with z = 50 sends μ − 50σ: below every benign value of each coordinate whose benign
    values differ, so its quantile among them is 0 there (the attackers' honest updates, which
    the replay used to measure, sit among the benign ones)."""
    cfg = make_config(
        {
            "data": {"name": "fmnist", "dir": str(real_data_dir), "train_fraction": 0.025},
            "federation": {"num_clients": 20, "clients_per_round": 6, "rounds": 1},
            "local": {"epochs": 1, "batch_size": 10},
            "attack": {"name": "alie", "options": {"z": 50.0}, "num_malicious": 2, "rounds": [1]},
            "server": {"aggregator": "median"},
            "threads": 1,
            "output": {"dir": str(tmp_path), "name": "r"},
        }
    )
    before = torch.get_num_threads()
    try:
        (rec,) = order_statistics_replay(cfg, coords=200, progress=False)
    finally:
        torch.set_num_threads(before)
    assert rec["attackers"] == 2
    # coordinates without benign spread (a weight no benign client moved) tie at quantile 0.5
    assert rec["attacker_quantile_hist"][0] >= 0.8
    assert sum(rec["attacker_quantile_hist"][1:5]) == 0
    assert rec["attacker_z_median"] == pytest.approx(50, abs=2)
