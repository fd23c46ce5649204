"""scripts/bench_claims.py: each check's verdict on boards built so that the claim holds or
fails by construction."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_claims", ROOT / "scripts/bench_claims.py")
claims = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
sys.modules["bench_claims"] = claims  # its dataclass looks its module up there
spec.loader.exec_module(claims)  # type: ignore[union-attr]

SETTINGS = ["iid/20%", "α=0.5/20%", "α=0.1/20%", "α=0.5/30%"]
ATTACKS = [
    "none", "ALIE", "IPM", "ALIE (adaptive)", "IPM (adaptive)", "Mimic", "label flipping",
    "sign flipping", "Min-Max", "Min-Sum", "Fang (trimmed mean)",
]  # fmt: skip
DEFENSES = [
    "FedAvg", "FLTrust", "DnC", "FLAME", "bucketing + median", "NNM + median", "FL-WBC",
    "LeadFL + median", *claims.CLASSICAL,
]  # fmt: skip
TARGETED = ["iid/20%", "α=0.5/20%", "α=0.5/30%"]
FIELDS = ["regime", "setting", "attack", "defense", "mean", "half_width", "seeds", "persists"]
Values = dict[tuple[str, str, str], tuple[float, float | None]]


def write(path: Path, values: Values, targeted: Values | None = None) -> Path:
    """A summary.csv with every untargeted (setting, attack, defense) at 0.8 (mean, half-width)
    and every targeted one at 0.3, persistence unknown (mean, persistence) unless given."""
    with (path / "summary.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for s in SETTINGS:
            for a in ATTACKS:
                for d in DEFENSES:
                    mean, half = values.get((s, a, d), (0.8, None))
                    w.writerow(dict(regime="untargeted", setting=s, attack=a, defense=d,
                                    mean=mean, half_width="" if half is None else half,
                                    seeds=1, persists=""))  # fmt: skip
        for s in TARGETED:
            for a in [*claims.BACKDOORS, "eq. 3 (paper)"]:
                for d in DEFENSES:
                    mean, persists = (targeted or {}).get((s, a, d), (0.3, None))
                    w.writerow(dict(regime="targeted", setting=s, attack=a, defense=d,
                                    mean=mean, half_width="", seeds=1,
                                    persists="" if persists is None else persists))  # fmt: skip
    return path


def board(path: Path, values: Values, targeted: Values | None = None) -> claims.Board:
    return claims.Board(write(path, values, targeted) / "summary.csv")


def test_every_check_answers_on_a_whole_board(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, {})
    assert claims.main(tmp_path) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| ") and "#" not in r]
    assert [r.split(" | ")[0] for r in rows] == [f"| {i}" for i in range(1, 20)]
    said = {r.rsplit(" | ", 1)[1].rstrip(" |") for r in rows}
    assert "not finished" not in said
    # every rule ties: orderings that need a strict win do not hold, ties held are named
    holds = {i for i, r in enumerate(rows, 1) if r.endswith(" | holds |")}
    assert holds == {5, 13, 16}, rows
    assert said <= {"holds", "does not hold", "not measured", "not measured in its setting"}


def test_krum_last_under_strong_non_iid(tmp_path: Path) -> None:
    low = {
        ("α=0.1/20%", "IPM", "Krum"): (0.3, None),
        ("α=0.1/20%", "ALIE", "Multi-Krum"): (0.4, None),
    }
    assert claims.c1(board(tmp_path, low))[1] == "holds"
    # a classical rule below Multi-Krum: only Krum is last
    low[("α=0.1/20%", "Mimic", "median")] = (0.35, None)
    assert claims.c1(board(tmp_path, low))[1] == "holds in 1 of 2"


def test_a_collapse_is_within_five_points_of_chance(tmp_path: Path) -> None:
    for acc, said in [(0.149, "holds"), (0.151, "does not hold")]:
        got = board(tmp_path, {("iid/20%", "ALIE", "Bulyan (f=1)"): (acc, None)})
        assert claims.c9(got)[1] == said


def test_robust_means_not_below_the_clean_cell_beyond_the_intervals(tmp_path: Path) -> None:
    # FLTrust loses 2 points everywhere: intervals of 1.5 points overlap (robust), of 0.5 do
    # not; gaining 2 points is robust whatever the intervals
    for loss, half, said in [(0.02, 0.015, "holds"), (0.02, 0.005, "does not hold"),
                             (-0.02, 0.005, "holds")]:  # fmt: skip
        values: Values = {}
        for s in SETTINGS:
            values[(s, "none", "FLTrust")] = (0.8, half)
            for a in ATTACKS[1:]:
                values[(s, a, "FLTrust")] = (0.8 - loss, half)
        assert claims.c16(board(tmp_path, values))[1] == said


def test_alie_and_ipm_worst_among_the_logs_attacks_only(tmp_path: Path) -> None:
    # Mimic (not in the logs) is worst for every rule; ALIE hurts more than the flips: holds
    values: Values = {}
    for d in ("median", "trimmed mean", "geometric median"):
        values[("iid/20%", "Mimic", d)] = (0.5, None)
        values[("iid/20%", "ALIE", d)] = (0.7, None)
    assert claims.c6(board(tmp_path, values))[1] == "holds"
    values[("iid/20%", "label flipping", "median")] = (0.65, None)
    assert claims.c6(board(tmp_path, values))[1] == "holds in 2 of 3"


def test_fl_wbc_persistence_against_the_robust_rules(tmp_path: Path) -> None:
    t: Values = {}
    for s in TARGETED:
        for d, rounds in (("FedAvg", 9), ("median", 6), ("trimmed mean", 8), ("FL-WBC", 1)):
            t[(s, "eq. 3 (paper)", d)] = (0.5, rounds)
    assert claims.c17(board(tmp_path, {}, t))[1] == "holds"
    t[("α=0.5/30%", "eq. 3 (paper)", "FL-WBC")] = (0.5, 6)  # a tie with the median
    assert claims.c17(board(tmp_path, {}, t))[1] == "holds in 2 of 3"
    del t[("iid/20%", "eq. 3 (paper)", "FL-WBC")]  # persistence unknown: not counted
    shows, said = claims.c17(board(tmp_path, {}, t))
    assert said == "holds in 1 of 2" and "FL-WBC n/a" in shows


def test_an_unfinished_cell_is_named_not_guessed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, {})
    rows = (tmp_path / "summary.csv").read_text(encoding="utf-8").splitlines()
    kept = [r for r in rows if "α=0.1/20%,Mimic,Krum" not in r and not r.startswith("targeted")]
    (tmp_path / "summary.csv").write_text("\n".join(kept) + "\n", encoding="utf-8")
    with pytest.raises(claims.Missing, match="Mimic Krum"):
        claims.c4(claims.Board(tmp_path / "summary.csv"))
    assert claims.main(tmp_path) == 0
    table = capsys.readouterr().out
    assert "| 4 | needs untargeted α=0.1/20% Mimic Krum | not finished |" in table
    assert "| 17 | needs the targeted regime | not finished |" in table


def test_float_noise_between_collapsed_rules_is_a_tie_not_a_win(tmp_path: Path) -> None:
    # three diverged seeds at 0.1 average to 0.10000000000000002: NNM + median is not above the
    # median and bucketing when all three collapse, and a real 0.1-point lead still counts
    noise = sum([0.1, 0.1, 0.1]) / 3
    assert noise != 0.1
    values: Values = {}
    for s in ("α=0.5/20%", "α=0.1/20%"):
        values[(s, "IPM", "NNM + median")] = (noise, None)
        values[(s, "IPM", "median")] = (0.1, None)
        values[(s, "IPM", "bucketing + median")] = (0.1, None)
    assert claims.c11(board(tmp_path, values))[1] == "does not hold"
    values[("α=0.1/20%", "IPM", "NNM + median")] = (0.101, None)
    assert claims.c11(board(tmp_path, values))[1] == "holds in 2 of 4"


def test_the_targeted_worst_case_follows_the_measure_not_the_regime_name(tmp_path: Path) -> None:
    write(tmp_path, {})
    path = tmp_path / "summary.csv"
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    for r in rows:  # a spec whose targeted regime is named otherwise: its measure says so
        targeted = r["regime"] == "targeted"
        r["regime"], r["measure"] = ("backdoors", "effect") if targeted else ("untargeted", "acc")
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, [*FIELDS, "measure"])
        w.writeheader()
        w.writerows(rows)
    b = claims.Board(path)
    assert b.kinds == {"untargeted": "untargeted", "backdoors": "targeted"}
    b.cells[("backdoors", "iid/20%", claims.BACKDOORS[1], "median")] = claims.Cell(
        0.4, None, 1, None
    )
    assert b.worst("iid/20%", "median", "backdoors")[0] == claims.BACKDOORS[1]


def test_backdoors_beyond_the_baseline_only_where_intervals_say_so(tmp_path: Path) -> None:
    # one seed everywhere: no interval, so the claim is not measured (not "0 of 14")
    assert claims.c19(board(tmp_path, {}))[1] == "not measured"
    b = board(tmp_path, {})
    beyond = set(DEFENSES[1:8])  # 7 of the 14 defenses other than FedAvg: 0.3 ± 0.1
    for key in [k for k in b.cells if k[0] == "targeted" and k[2] == claims.BACKDOORS[0]]:
        b.cells[key] = claims.Cell(0.3, 0.1 if key[3] in beyond else 0.4, 3, None)
    shows, said = claims.c19(b)
    assert said == "does not hold" and "7 of 14" in shows
    beyond.add("median")
    for key in [k for k in b.cells if k[0] == "targeted" and k[2] == claims.BACKDOORS[0]]:
        b.cells[key] = claims.Cell(0.3, 0.1 if key[3] in beyond else 0.4, 3, None)
    assert claims.c19(b)[1] == "holds"
