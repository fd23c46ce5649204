"""The continuous and bursty attack schedules: counts per round by hand and by brute force,
determinism per (seed, t), bounds, and one clear line for every bad option.

Bursty follows LeadFL's evaluation code (chaoyitud/LeadFL `fltk/core/federator.py`): each
round's number of attackers uniform over [0, 0, 2, 2, 5], or hypergeometric when 10 of 100
clients (25 malicious) are sampled, plus forced rounds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import hypergeom

import flwbc
from flwbc.errors import FlwbcError
from flwbc.rng import numpy_rng
from flwbc.schedules import Schedule, build_schedule


def schedule(
    name: str, options: dict[str, Any] | None = None, *, seed: int = 0, rounds: int = 20
) -> Schedule:
    """The schedule `name` of a run of `rounds` rounds with 5 attackers (N = 100, K = 10)."""
    return schedule_n(name, options or {}, 5, seed=seed, rounds=rounds)


def schedule_n(name: str, options: dict[str, Any], num_malicious: int, **fed: Any) -> Schedule:
    rounds = fed.pop("rounds", 20)
    cfg = flwbc.make_config(
        {
            "seed": fed.pop("seed", 0),
            "federation": {"rounds": rounds, **fed},
            "attack": {
                "num_malicious": num_malicious,
                "schedule": {"name": name, "options": options},
            },
        }
    )
    built = build_schedule(cfg)
    assert built is not None
    return built


def counts(s: Schedule, rounds: int) -> list[int]:
    return [s.attackers(t) for t in range(1, rounds + 1)]


def one_line_error(fn: Any, *needles: str) -> str:
    with pytest.raises(FlwbcError) as err:
        fn()
    msg = str(err.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg
    return msg


# --- continuous ---------------------------------------------------------------------------


def test_continuous_by_hand() -> None:
    assert counts(schedule("continuous", rounds=6), 6) == [5] * 6
    s = schedule("continuous", {"start": 3, "end": 6}, rounds=10)
    assert counts(s, 10) == [0, 0, 5, 5, 5, 5, 0, 0, 0, 0]
    s = schedule_n("continuous", {"start": 2, "attackers": 2}, 4, rounds=5)
    assert counts(s, 5) == [0, 2, 2, 2, 2]
    assert counts(schedule("continuous", {"start": 4, "end": 4}, rounds=5), 5) == [0, 0, 0, 5, 0]


def test_continuous_bad_options() -> None:
    one_line_error(lambda: schedule("continuous", {"end": 21}), "'continuous'", "21", "(20)")
    one_line_error(lambda: schedule("continuous", {"start": 5, "end": 4}), "start (5)")
    one_line_error(lambda: schedule("continuous", {"start": 21}), "start (21)")
    one_line_error(lambda: schedule("continuous", {"attackers": 6}), "attackers (6)", "(5)")
    one_line_error(lambda: schedule("continuous", {"attackers": 0}), "attackers")
    one_line_error(lambda: schedule("continuous", {"every": 2}), "no option every")


def test_continuous_drives_the_round_plan(real_data_dir: Path) -> None:
    """The experiment's plan follows the schedule: `attackers` attackers in the window's rounds
    (the first of the malicious clients), none outside."""
    from flwbc.experiment import Experiment

    cfg = flwbc.make_config(
        {
            "data": {"dir": str(real_data_dir), "train_fraction": 0.05},
            "federation": {"num_clients": 10, "clients_per_round": 4, "rounds": 6},
            "attack": {
                "num_malicious": 3,
                "num_images": 1,
                "schedule": {
                    "name": "continuous",
                    "options": {"start": 2, "end": 4, "attackers": 2},
                },
            },
        }
    )
    exp = Experiment.prepare(cfg)
    got = [sum(exp.round_plan(t).malicious) for t in range(1, 7)]
    assert got == [0, 2, 2, 2, 0, 0]
    plan = exp.round_plan(3)
    assert [c for c, m in zip(plan.clients, plan.malicious, strict=True) if m] == (
        exp.malicious_ids[:2]
    )
    assert len(plan.clients) == 4


def test_a_random_pool_draws_each_rounds_attackers_from_it(real_data_dir: Path) -> None:
    """`attack.pool: random` (LeadFL's pool of 25 among 100): a pool larger than a round, each
    round's attackers a uniform draw from it by the stream (seed, "attackers", t), benign
    clients from the others; a round asking for more attackers than places is one line."""
    from flwbc.experiment import Experiment

    def cfg(attackers: int) -> Any:
        return flwbc.make_config(
            {
                "seed": 4,
                "data": {"dir": str(real_data_dir), "train_fraction": 0.05},
                "federation": {"num_clients": 20, "clients_per_round": 4, "rounds": 60},
                "attack": {
                    "num_malicious": 6,
                    "pool": "random",
                    "num_images": 1,
                    "schedule": {"name": "continuous", "options": {"attackers": attackers}},
                },
            }
        )

    exp = Experiment.prepare(cfg(2))
    seen: Counter[int] = Counter()
    for t in range(1, 61):
        plan = exp.round_plan(t)
        mal = [c for c, m in zip(plan.clients, plan.malicious, strict=True) if m]
        want = numpy_rng(4, "attackers", t).choice(exp.malicious_ids, 2, replace=False)
        assert sorted(mal) == sorted(want.tolist()) and len(plan.clients) == 4
        assert not set(plan.clients) - set(mal) & set(exp.malicious_ids)
        seen.update(mal)
    assert set(seen) == set(exp.malicious_ids)  # every pool member takes part
    with pytest.raises(FlwbcError, match="asked for 6 attackers in round 1"):
        Experiment.prepare(cfg(6)).round_plan(1)
    with pytest.raises(Exception, match="attack.pool: random"):
        flwbc.make_config(
            {
                "federation": {"num_clients": 20, "clients_per_round": 4},
                "attack": {"num_malicious": 6},
            }
        )


# --- bursty -------------------------------------------------------------------------------


def test_bursty_default_is_leadfl_choice_per_round_stream() -> None:
    """Default: uniform over LeadFL's [0, 0, 2, 2, 5], one draw from (seed, "bursty", t)."""
    s = schedule("bursty", seed=7, rounds=50)
    expected = [[0, 0, 2, 2, 5][numpy_rng(7, "bursty", t).integers(5)] for t in range(1, 51)]
    assert counts(s, 50) == expected


def test_bursty_choice_frequencies_brute_force() -> None:
    n = 4000
    got = Counter(counts(schedule("bursty", seed=1, rounds=n), n))
    assert set(got) <= {0, 2, 5}
    for value, p in {0: 0.4, 2: 0.4, 5: 0.2}.items():
        sd = (p * (1 - p) / n) ** 0.5
        assert abs(got[value] / n - p) < 5 * sd, (value, got)
    custom = counts(schedule("bursty", {"counts": [1, 3]}, seed=2, rounds=2000), 2000)
    assert set(custom) == {1, 3} and abs(custom.count(3) / 2000 - 0.5) < 0.06


def test_bursty_burst_by_hand_and_brute_force() -> None:
    never = schedule("bursty", {"distribution": "burst", "prob": 0.0}, rounds=100)
    assert counts(never, 100) == [0] * 100
    always = schedule(
        "bursty", {"distribution": "burst", "prob": 1.0, "min": 3, "max": 3}, rounds=100
    )
    assert counts(always, 100) == [3] * 100
    n = 6000
    opts = {"distribution": "burst", "prob": 0.3, "min": 2, "max": 4}
    got = Counter(counts(schedule("bursty", opts, seed=3, rounds=n), n))
    assert set(got) == {0, 2, 3, 4}
    for value, p in {0: 0.7, 2: 0.1, 3: 0.1, 4: 0.1}.items():
        sd = (p * (1 - p) / n) ** 0.5
        assert abs(got[value] / n - p) < 5 * sd, (value, got)
    # max defaults to attack.num_malicious
    top = counts(schedule("bursty", {"distribution": "burst", "prob": 1.0}, rounds=500), 500)
    assert set(top) == {1, 2, 3, 4, 5}


def test_bursty_hypergeometric_matches_leadfl_random_selection() -> None:
    """25 malicious among 100 clients, 10 sampled: the count is hypergeometric (LeadFL's
    template config); compared with scipy's pmf over 5000 rounds."""
    n = 5000
    s = schedule_n(
        "bursty",
        {"distribution": "hypergeometric", "population": 25},
        10,
        num_clients=100,
        clients_per_round=10,
        rounds=n,
        seed=4,
    )
    got = Counter(counts(s, n))
    assert max(got) <= 10 and min(got) >= 0
    pmf = hypergeom(100, 25, 10).pmf
    for value in range(5):
        p = pmf(value)
        sd = (p * (1 - p) / n) ** 0.5
        assert abs(got[value] / n - p) < 5 * sd, (value, got[value] / n, p)


def test_bursty_forced_rounds_and_window() -> None:
    """LeadFL forces 5 attackers in its rounds 0, 10, 12 (1-based 1, 11, 13)."""
    opts = {"distribution": "burst", "prob": 0.0, "forced_rounds": [1, 11, 13]}
    assert [t for t, c in enumerate(counts(schedule("bursty", opts), 20), 1) if c] == [1, 11, 13]
    assert {schedule("bursty", opts).attackers(t) for t in (1, 11, 13)} == {5}
    opts = {**opts, "forced_attackers": 2}
    assert schedule("bursty", opts).attackers(11) == 2
    win = schedule("bursty", {"counts": [4], "start": 5, "end": 8, "forced_rounds": [2]})
    assert counts(win, 10) == [0, 5, 0, 0, 4, 4, 4, 4, 0, 0]


def test_bursty_is_deterministic_per_seed_and_round() -> None:
    """Round t's count depends only on (seed, t): the same in any query order and in a fresh
    instance; another seed gives another sequence."""
    for opts in ({}, {"distribution": "burst", "prob": 0.5}):
        a = schedule("bursty", opts, seed=9, rounds=200)
        forward = counts(a, 200)
        b = schedule("bursty", opts, seed=9, rounds=200)
        backward = [b.attackers(t) for t in range(200, 0, -1)][::-1]
        assert forward == backward
        assert [b.attackers(t) for t in (17, 3, 17)] == [forward[16], forward[2], forward[16]]
        assert counts(schedule("bursty", opts, seed=10, rounds=200), 200) != forward
    # a longer run has the same first rounds
    assert counts(schedule("bursty", seed=9, rounds=400), 200) == counts(
        schedule("bursty", seed=9, rounds=200), 200
    )


def test_bursty_counts_stay_within_num_malicious() -> None:
    s = schedule_n("bursty", {"counts": [0, 1, 3]}, 3, rounds=300)
    assert max(counts(s, 300)) == 3 and min(counts(s, 300)) == 0


@pytest.mark.parametrize(
    ("options", "num_malicious", "fed", "needles"),
    [
        ({}, 4, {}, ("'bursty'", "can put 5 attackers", "num_malicious is 4")),
        ({"counts": [0, 7]}, 5, {}, ("can put 7 attackers",)),
        ({"counts": [-1, 2]}, 5, {}, ("counts",)),
        ({"counts": []}, 5, {}, ("counts",)),
        ({"distribution": "burst", "min": 4, "max": 3}, 5, {}, ("min (4)", "max (3)")),
        ({"distribution": "burst", "max": 6}, 5, {}, ("can put 6 attackers",)),
        ({"distribution": "burst", "prob": 1.5}, 5, {}, ("prob",)),
        ({"distribution": "hypergeometric"}, 5, {}, ("can put 10 attackers",)),
        (
            {"distribution": "hypergeometric", "population": 200},
            10,
            {"num_clients": 100, "clients_per_round": 10},
            ("population (200)", "(100)"),
        ),
        ({"distribution": "poisson"}, 5, {}, ("distribution",)),
        ({"forced_rounds": [0, 21]}, 5, {}, ("forced_rounds [0, 21]",)),
        ({"forced_attackers": 6}, 5, {}, ("forced_attackers (6)",)),
        ({"start": 9, "end": 8}, 5, {}, ("start (9)",)),
        ({"size": 3}, 5, {}, ("no option size",)),
    ],
)
def test_bursty_bad_options_one_line(
    options: dict[str, Any], num_malicious: int, fed: dict[str, Any], needles: tuple[str, ...]
) -> None:
    one_line_error(lambda: schedule_n("bursty", options, num_malicious, **fed), *needles)


def test_bursty_drives_the_round_plan(real_data_dir: Path) -> None:
    from flwbc.experiment import Experiment

    cfg = flwbc.make_config(
        {
            "seed": 5,
            "data": {"dir": str(real_data_dir), "train_fraction": 0.05},
            "federation": {"num_clients": 10, "clients_per_round": 5, "rounds": 40},
            "attack": {
                "num_malicious": 5,
                "num_images": 1,
                "schedule": {"name": "bursty"},
            },
        }
    )
    exp = Experiment.prepare(cfg)
    assert exp.schedule is not None
    per_round = [sum(exp.round_plan(t).malicious) for t in range(1, 41)]
    assert per_round == [exp.schedule.attackers(t) for t in range(1, 41)]
    assert set(per_round) == {0, 2, 5}
    assert all(len(exp.round_plan(t).clients) == 5 for t in range(1, 41))
    assert np.all([exp.is_adversarial(t) == (c > 0) for t, c in enumerate(per_round, 1)])
