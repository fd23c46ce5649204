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
@pytest.mark.parametrize("name", ["gaussian", "sign_flip", "ipm", "alie", "label_flip"])
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


def test_label_flip_modes_by_hand() -> None:
    from flwbc.attacks.label_flip import LabelFlipOptions, flip_labels

    y = torch.tensor([0, 1, 2, 3, 9, 0])
    got = {
        "all_to_one": flip_labels(y, LabelFlipOptions(mode="all_to_one", target=7), 10),
        "one_to_one": flip_labels(y, LabelFlipOptions(mode="one_to_one", source=0, target=5), 10),
        "shift": flip_labels(y, LabelFlipOptions(mode="shift", shift=3), 10),
    }
    assert got["all_to_one"].tolist() == [7, 7, 7, 7, 7, 7]
    assert got["one_to_one"].tolist() == [5, 1, 2, 3, 9, 5]
    assert got["shift"].tolist() == [3, 4, 5, 6, 2, 3]
    with pytest.raises(ValueError, match="source and target must differ"):
        LabelFlipOptions(mode="one_to_one", source=2, target=2)


@pytest.mark.slow
def test_label_flip_trains_on_flipped_labels(real_data_dir: Path) -> None:
    from flwbc.experiment import Experiment
    from flwbc.rng import torch_generator

    cfg = flwbc.make_config(
        {
            "data": {"dir": str(real_data_dir), "train_fraction": 0.05},
            "federation": {"num_clients": 10, "clients_per_round": 5, "rounds": 1},
            "local": {"epochs": 1, "batch_size": 32},
            "attack": {
                "name": "label_flip",
                "num_malicious": 2,
                "rounds": [1],
                "options": {"mode": "one_to_one", "source": 3, "target": 8},
            },
        }
    )
    exp = Experiment.prepare(cfg)
    c = exp.malicious_ids[0]
    _, plan = exp.attack.plan(exp, 1, c, torch_generator(0, "data", 1, c))
    x, y = exp.client_data(c)
    seen = torch.cat([term.y for epoch in plan for step in epoch for term in step])
    assert sorted(seen.tolist()) == sorted(torch.where(y == 3, 8, y).tolist())
    bad = {**cfg.to_dict(), "attack": {**cfg.to_dict()["attack"], "options": {"target": 12}}}
    with pytest.raises(flwbc.errors.FlwbcError, match="label 12 outside 0..9"):
        e = Experiment.prepare(flwbc.make_config(bad))
        e.attack.plan(e, 1, c, torch_generator(0, "data", 1, c))
