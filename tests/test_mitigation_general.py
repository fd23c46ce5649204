"""Attack mitigation generalised to any metric and threshold (`flwbc.metrics.rounds_until`):
windows of consecutive adversarial rounds, censoring, came-back marks and null values, by hand
on small record lists, and against `mitigation_rounds` (paper §7.1) where both apply."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import pytest

from flwbc.errors import FlwbcError
from flwbc.metrics import attack_windows, mitigation_rounds, rounds_until


def recs(adv: str, values: list[Any], field: str = "backdoor_acc") -> list[dict[str, Any]]:
    """Records of rounds 1.. with `adv` a string of 'A' (adversarial) and '.' (benign)."""
    assert len(adv) == len(values)
    return [
        {"round": i + 1, "adversarial": a == "A", field: v}
        for i, (a, v) in enumerate(zip(adv, values, strict=True))
    ]


def test_windows_are_maximal_runs_of_adversarial_rounds() -> None:
    r = recs(".AA.A..AAA", [0] * 10)
    assert attack_windows(r) == [(1, 2), (4, 4), (7, 9)]
    assert attack_windows(recs("....", [0] * 4)) == []
    assert attack_windows(recs("AAAA", [0] * 4)) == [(0, 3)]


def test_continuous_window_counts_from_its_last_attack() -> None:
    r = recs("AAA...", [0.9, 0.9, 0.9, 0.8, 0.4, 0.3])
    assert rounds_until(r, "backdoor_acc", 0.5) == [
        {
            "round": 1,
            "last_round": 3,
            "attack_rounds": 3,
            "rounds": 2,
            "sustained": 2,
            "observed": 3,
        }
    ]
    # the stricter threshold of the same records: never reached, censored after 3 rounds
    (m,) = rounds_until(r, "backdoor_acc", 0.1)
    assert (m["rounds"], m["sustained"], m["observed"]) == (None, None, 3)


def test_zero_when_already_below_and_threshold_is_strict() -> None:
    (m,) = rounds_until(recs("A..", [0.2, 0.9, 0.1]), "backdoor_acc", 0.5)
    assert (m["rounds"], m["sustained"]) == (0, 2)  # came back at r = 1
    (m,) = rounds_until(recs("A..", [0.5, 0.5, 0.49]), "backdoor_acc", 0.5)
    assert (m["rounds"], m["sustained"]) == (2, 2)


def test_next_window_cuts_the_span_and_censors() -> None:
    r = recs(".AA..A.A..", [0.1, 0.9, 0.9, 0.8, 0.7, 0.9, 0.3, 0.9, 0.4, 0.6])
    got = rounds_until(r, "backdoor_acc", 0.5)
    assert [(m["round"], m["last_round"], m["attack_rounds"]) for m in got] == [
        (2, 3, 2),
        (6, 6, 1),
        (8, 8, 1),
    ]
    # window 1: rounds 3-5 examined (r = 0..2), none below: censored, observed 2
    assert (got[0]["rounds"], got[0]["sustained"], got[0]["observed"]) == (None, None, 2)
    # window 2: rounds 6-7, below at r = 1
    assert (got[1]["rounds"], got[1]["sustained"], got[1]["observed"]) == (1, 1, 1)
    # window 3: rounds 8-10, below at r = 1, back above at r = 2 (came back)
    assert (got[2]["rounds"], got[2]["sustained"], got[2]["observed"]) == (1, None, 2)


def test_came_back_marks() -> None:
    r = recs("A.....", [0.9, 0.3, 0.8, 0.2, 0.1, 0.05])
    (m,) = rounds_until(r, "backdoor_acc", 0.5)
    assert (m["rounds"], m["sustained"]) == (1, 3)
    (m,) = rounds_until(r, "backdoor_acc", 0.1)
    assert (m["rounds"], m["sustained"]) == (5, 5)


def test_above_threshold() -> None:
    r = recs("AA...", [0.2, 0.3, 0.6, 0.85, 0.9], field="test_acc")
    (m,) = rounds_until(r, "test_acc", 0.8, below=False)
    assert (m["round"], m["rounds"], m["sustained"], m["observed"]) == (1, 2, 2, 3)
    (m,) = rounds_until(r, "test_acc", 0.9, below=False)
    assert (m["rounds"], m["sustained"]) == (None, None)


def test_null_values() -> None:
    """None (or NaN) never meets the criterion and breaks `sustained`; with skip_missing it is
    passed over but still counted in r."""
    r = recs("A....", [0.9, None, 0.3, None, 0.2])
    (m,) = rounds_until(r, "backdoor_acc", 0.5)
    assert (m["rounds"], m["sustained"], m["observed"]) == (2, 4, 4)
    (m,) = rounds_until(r, "backdoor_acc", 0.5, skip_missing=True)
    assert (m["rounds"], m["sustained"], m["observed"]) == (2, 2, 4)
    r = recs("A...", [0.9, math.nan, 0.3, math.nan])
    (m,) = rounds_until(r, "backdoor_acc", 0.5)
    assert (m["rounds"], m["sustained"]) == (2, None)
    (m,) = rounds_until(r, "backdoor_acc", 0.5, skip_missing=True)
    assert (m["rounds"], m["sustained"]) == (2, 2)
    # a record without the field reads as null
    r = recs("A..", [0.9, 0.1, 0.1])
    del r[1]["backdoor_acc"]
    (m,) = rounds_until(r, "backdoor_acc", 0.5)
    assert (m["rounds"], m["sustained"]) == (2, 2)


def test_unknown_field_is_an_error_and_no_attack_is_empty() -> None:
    with pytest.raises(FlwbcError, match="no round record has the field 'backdoor_ac'"):
        rounds_until(recs("A.", [0.9, 0.1]), "backdoor_ac", 0.5)
    assert rounds_until(recs("...", [0.9, 0.1, 0.1]), "anything", 0.5) == []


def _brute_windows(adv: list[bool]) -> list[tuple[int, int]]:
    out, pos = [], 0
    for is_adv, group in itertools.groupby(adv):
        n = len(list(group))
        if is_adv:
            out.append((pos, pos + n - 1))
        pos += n
    return out


def test_against_mitigation_rounds_and_brute_force() -> None:
    """On random runs: the windows equal a groupby brute force; where every window is a single
    round, `rounds_until(target_conf < 0.5)` is `mitigation_rounds`' by_confidence (same round,
    same censoring); and a brute-force scan gives the same rounds and sustained marks."""
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(1, 14)
        adv = [rng.random() < 0.3 for _ in range(n)]
        conf = [rng.choice([None, 0.1, 0.4, 0.6, 0.9]) for _ in range(n)]
        r = [
            {
                "round": i + 1,
                "adversarial": a,
                "target_conf": c,
                "target_acc": 1.0,
                "test_acc": 0.5,
            }
            for i, (a, c) in enumerate(zip(adv, conf, strict=True))
        ]
        assert attack_windows(r) == _brute_windows(adv)
        got = rounds_until(r, "target_conf", 0.5)
        for m, (first, last) in zip(got, _brute_windows(adv), strict=True):
            nxt = [i for i in range(last + 1, n) if adv[i]]
            span = conf[last : nxt[0] if nxt else n]
            ok = [c is not None and c < 0.5 for c in span]
            assert m["rounds"] == (ok.index(True) if any(ok) else None)
            tail = [r for r in range(len(ok)) if all(ok[r:])]
            assert m["sustained"] == (tail[0] if tail else None)
            assert m["observed"] == len(span) - 1
            assert m["attack_rounds"] == last - first + 1
        if not any(adv[i] and adv[i + 1] for i in range(n - 1)):  # single-round windows
            old = mitigation_rounds(r)  # target_acc 1.0 never meets the accuracy criterion
            assert [m["round"] for m in got] == [m["round"] for m in old]
            assert [m["rounds"] for m in got] == [m["by_confidence"] for m in old]
            assert [m["sustained"] for m in got] == [m["sustained"] for m in old]
            assert [m["observed"] for m in got] == [m["observed"] for m in old]
