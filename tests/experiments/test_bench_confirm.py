"""scripts/bench_confirm.py: the board as screened against the board with its confirming
seeds, on a board built so that the confirmation reverses a ranking and moves worst cases."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_confirm", ROOT / "scripts/bench_confirm.py")
confirm_script = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
sys.modules["bench_confirm"] = confirm_script
spec.loader.exec_module(confirm_script)  # type: ignore[union-attr]

HEADER = ["regime", "setting", "attack", "defense", "seed", "kind", "acc", "effect"]


def report(tmp_path: Path, rows: list[list[object]], capsys: pytest.CaptureFixture[str]) -> str:
    with (tmp_path / "cells.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows(rows)
    assert confirm_script.main("leaderboard", tmp_path) == 0
    return capsys.readouterr().out


def untargeted(attack: str, defense: str, accs: list[float]) -> list[list[object]]:
    kind = "clean" if attack == "none" else "untargeted"
    return [["untargeted", "iid/20%", attack, defense, s, kind, a, ""] for s, a in enumerate(accs)]


def test_an_unlucky_screening_seed_is_corrected_and_the_ranking_reverses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        *untargeted("none", "A", [0.8, 0.8, 0.8]),
        *untargeted("IPM", "A", [0.2, 0.6, 0.7]),  # screened worst; confirmed mean 0.5
        *untargeted("ALIE", "A", [0.4, 0.4, 0.4]),  # the confirmed worst
        *untargeted("none", "B", [0.8, 0.8, 0.8]),
        *untargeted("IPM", "B", [0.3, 0.3, 0.3]),
        *untargeted("ALIE", "B", [0.5]),
        *untargeted("none", "C", [0.8, 0.8, 0.8]),
        *untargeted("IPM", "C", [0.1, 0.1, 0.1]),  # diverged: 0.10000000000000002, no shift
        *untargeted("ALIE", "C", [0.1]),  # a tie: not a change of the worst attack
        ["untargeted", "iid/20%", "Mimic", "B", 1, "untargeted", "", ""],  # unfinished
    ]
    table = report(tmp_path, rows, capsys)
    assert "From the 23 finished runs" in table and "seeds 0, 1, 2" in table
    shifts = [0.5 - 0.2, 0.3 - 0.3, 0.0]
    half = stats.t.ppf(0.975, 2) * stats.tstd(shifts) / 3**0.5
    assert (
        f"mean +10.0 ± {100 * half:.1f} points (95% interval over the 3 pairs), largest +30.0; "
        "1 better once confirmed, 0 worse, 2 the same." in table
    )
    assert "| B | 1 | 30.0 | 2 | 30.0 |" in table
    assert "| A | 2 | 20.0 | 1 | 40.0 |" in table
    assert "| C | 3 | 10.0 | 3 | 10.0 |" in table
    assert "over 3 defenses: 0.33." in table
    assert "- A at iid/20%: IPM 20.0 screened, 50.0 (3 seeds) confirmed → ALIE 40.0 (3 seeds)" in (
        table
    )
    assert "changed: 1." in table


def test_the_targeted_shift_counts_a_lower_success_as_better(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def cell(attack: str, seed: int, effect: float | str) -> list[object]:
        kind = "clean" if attack == "none" else "targeted"
        return ["targeted", "iid/20%", attack, "A", seed, kind, 0.8, effect]

    rows = [
        *(cell("none", s, "") for s in range(3)),
        *(cell("BadNets", s, e) for s, e in enumerate([0.3, 0.1, 0.2])),
        cell("DBA", 0, 0.25),
    ]
    table = report(tmp_path, rows, capsys)
    assert "mean +10.0 points (no interval from 1 pair), largest +10.0" in table
    assert (
        "- A at iid/20%: BadNets 30.0 screened, 20.0 (3 seeds) confirmed → DBA 25.0 (1 seed)"
        in (table)
    )
    assert "No screened worst case has more seeds yet." in table  # the untargeted regime


def test_the_plot_draws_each_confirmed_worst_case_against_its_screening_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        *untargeted("none", "A", [0.8, 0.8, 0.8]),
        *untargeted("IPM", "A", [0.2, 0.6, 0.7]),
        *untargeted("ALIE", "A", [0.4]),
        *untargeted("none", "B", [0.8]),
        *untargeted("IPM", "B", [0.3]),  # not confirmed: not drawn
    ]
    with (tmp_path / "cells.csv").open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([HEADER, *rows])
    drawn: dict[str, tuple[str, list[tuple[float, float, float | None]]]] = {}
    real = confirm_script.plot
    monkeypatch.setattr(confirm_script, "plot", lambda t, p, prefix: drawn.update(p) or [])
    assert confirm_script.main("leaderboard", tmp_path, tmp_path / "confirm") == 0
    assert list(drawn) == ["untargeted"] and drawn["untargeted"][0] == "untargeted"
    ((screened, mean, half),) = drawn["untargeted"][1]
    half_t = stats.t.ppf(0.975, 2) * stats.tstd([0.2, 0.6, 0.7]) / 3**0.5
    assert (screened, mean) == (0.2, pytest.approx(0.5)) and half == pytest.approx(half_t)
    paths = real("leaderboard", drawn, tmp_path / "confirm")
    assert sorted(p.name for p in paths) == ["confirm.png", "confirm.svg"]
    assert all(p.stat().st_size > 0 for p in paths)
    capsys.readouterr()
