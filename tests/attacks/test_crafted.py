"""Untargeted attacks crafted from what the colluding attackers see, against their papers'
formulas computed by hand in numpy/scipy on small inputs, then end to end on both engines.

ByzFL (PyPI `byzfl`) is not used as a reference: it requires torchvision, which has no CPU
build here and would replace the CPU torch, so the references are written out below."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm

import flwbc
from flwbc.attacks import ATTACKS
from flwbc.attacks.alie import alie_z

UPDATES = torch.tensor(
    [[1.0, -2.0, 0.5], [3.0, 0.0, 1.5], [-1.0, 2.0, 2.5], [0.5, 1.0, -0.5], [2.0, 2.0, 2.0]],
    dtype=torch.float64,
)
MALICIOUS = [False, True, False, True, False]
BAD, GOOD = [1, 3], [0, 2, 4]


def attack(name: str, **options: object):
    cfg = flwbc.make_config({"attack": {"name": name, "options": options}})
    cls = ATTACKS[name]
    return cls(cfg, cls.Options.model_validate(options))


def crafted(name: str, **options: object) -> np.ndarray:
    out = attack(name, **options).craft(None, 1, UPDATES, MALICIOUS)
    assert torch.equal(out[GOOD], UPDATES[GOOD])  # benign rows are untouched
    return out[BAD].numpy()


@pytest.mark.parametrize("knowledge", ["omniscient", "partial"])
def test_ipm_sends_minus_epsilon_times_the_seen_mean(knowledge: str) -> None:
    x = UPDATES.numpy()
    seen = x[GOOD] if knowledge == "omniscient" else x[BAD]
    want = np.tile(-0.5 * seen.mean(0), (2, 1))
    np.testing.assert_allclose(crafted("ipm", epsilon=0.5, knowledge=knowledge), want)


def test_sign_flip_negates_each_own_update() -> None:
    np.testing.assert_allclose(crafted("sign_flip", c=2.0), -2.0 * UPDATES.numpy()[BAD])


@pytest.mark.parametrize(("n", "f"), [(10, 2), (5, 2), (25, 5), (50, 24)])
def test_alie_z_follows_the_paper(n: int, f: int) -> None:
    s = np.floor(n / 2 + 1) - f
    assert alie_z(n, f) == pytest.approx(norm.ppf((n - s) / n), abs=1e-12)
    assert alie_z(n, f, "benign") == pytest.approx(norm.ppf((n - f - s) / (n - f)), abs=1e-12)


@pytest.mark.parametrize("knowledge", ["omniscient", "partial"])
def test_alie_sends_mean_minus_z_std(knowledge: str) -> None:
    x = UPDATES.numpy()
    seen = x[GOOD] if knowledge == "omniscient" else x[BAD]
    z = norm.ppf((5 - (np.floor(5 / 2 + 1) - 2)) / 5)  # n = 5 clients, f = 2 attackers
    want = np.tile(seen.mean(0) - z * seen.std(0, ddof=1), (2, 1))
    np.testing.assert_allclose(crafted("alie", knowledge=knowledge), want)
    np.testing.assert_allclose(
        crafted("alie", z=1.5, knowledge=knowledge),
        np.tile(seen.mean(0) - 1.5 * seen.std(0, ddof=1), (2, 1)),
    )


def test_gaussian_rows_are_seeded_normal_noise() -> None:
    big = torch.zeros(4, 200_000, dtype=torch.float64)
    mal = [True, False, True, False]
    a = attack("gaussian", mu=0.3, sigma=2.0)
    out = a.craft(None, 7, big, mal)
    for r in (0, 2):
        assert out[r].mean().item() == pytest.approx(0.3, abs=0.02)
        assert out[r].std().item() == pytest.approx(2.0, rel=0.01)
    assert not torch.equal(out[0], out[2])  # each attacker its own stream
    assert torch.equal(out, a.craft(None, 7, big, mal))  # the same round: the same noise
    assert not torch.equal(out[0], a.craft(None, 8, big, mal)[0])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gaussian", "sign_flip", "ipm", "alie"])
def test_crafted_attacks_run_on_both_engines(name: str, real_data_dir: Path, tmp_path: Path):
    def run(engine: str) -> flwbc.RunResult:
        return flwbc.run(
            {
                "seed": 4,
                "engine": engine,
                "data": {"dir": str(real_data_dir), "train_fraction": 0.05},
                "federation": {"num_clients": 10, "clients_per_round": 5, "rounds": 1},
                "local": {"epochs": 1, "batch_size": 32},
                "attack": {"name": name, "num_malicious": 2, "rounds": [1]},
                "server": {"aggregator": "median"},
                "output": {"dir": str(tmp_path), "name": f"{name}-{engine}"},
                "threads": 1,
            },
            progress=False,
        )

    # one round: later rounds train from the poisoned model, where the engines' float
    # rounding differences grow (to 1e-4 after two rounds, more under Gaussian noise)
    seq, bat = run("sequential"), run("batched")
    assert seq.records[0]["adversarial"] and len(seq.records[0]["malicious"]) == 2
    assert torch.allclose(seq.weights, bat.weights, atol=1e-5)
