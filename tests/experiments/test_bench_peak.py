"""scripts/bench_peak.py: ByzFL's measure (peak accuracy over training) against the board's
(last round), on runs built so that the two rank two defenses in opposite orders."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_peak", ROOT / "scripts/bench_peak.py")
peak_script = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
sys.modules["bench_peak"] = peak_script
spec.loader.exec_module(peak_script)  # type: ignore[union-attr]


def run(store: Path, name: str, accs: list[float | None]) -> str:
    (store / name).mkdir(parents=True)
    lines = [json.dumps({"round": i + 1, "test_acc": a}) for i, a in enumerate(accs)]
    (store / name / "rounds.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return name


def test_peak_is_the_highest_evaluated_accuracy(tmp_path: Path) -> None:
    assert peak_script.peak(tmp_path / run(tmp_path, "r", [None, 0.5, None, 0.7, 0.6])) == 0.7
    assert peak_script.peak(tmp_path / run(tmp_path, "s", [None, None])) is None


def report(tmp_path: Path, rows: list[list[object]], capsys: pytest.CaptureFixture[str]) -> str:
    """The script's output on a board of these cells.csv rows (runs under tmp_path/store)."""
    out = tmp_path / "out"
    out.mkdir()
    with (out / "cells.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["regime", "setting", "attack", "defense", "seed", "kind", "acc", "run"])
        w.writerows(rows)
    assert peak_script.main("leaderboard", tmp_path / "store", out) == 0
    return capsys.readouterr().out


def test_a_late_collapse_ranks_last_by_last_round_and_first_by_peak(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    # A: steady at 0.7; B: reaches 0.9 and is broken to 0.2 at the last round
    curves = {"A": [0.6, 0.7], "B": [0.9, 0.2]}
    rows: list[list[object]] = []
    for d, curve in curves.items():
        for attack, kind in (("none", "clean"), ("IPM", "untargeted")):
            got = curve if attack == "IPM" else [0.5, 0.8]
            name = run(store, f"{d}-{attack}", got)
            rows.append(["untargeted", "iid/20%", attack, d, 0, kind, got[-1], name])
    table = report(tmp_path, rows, capsys)
    assert "| A | 1 | 70.0 | 2 | 70.0 |" in table
    assert "| B | 2 | 20.0 | 1 | 90.0 |" in table
    assert "Kendall τ between the two scores over 2 defenses: -1.00." in table


def test_the_worst_attack_that_changes_and_a_run_without_evaluations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    curves = {"IPM": [0.9, 0.2], "ALIE": [0.4, 0.4], "Mimic": [None, None]}
    rows: list[list[object]] = []
    for attack, got in curves.items():
        name = run(store, attack, got)
        last = got[-1] if got[-1] is not None else 0.5
        rows.append(["untargeted", "iid/20%", attack, "C", 0, "untargeted", last, name])
    table = report(tmp_path, rows, capsys)
    assert "1 without an evaluated round left out" in table
    assert "over 1 defenses: n/a." in table
    # last round: Mimic's recorded 0.5 > ALIE 0.4 > IPM 0.2; peak: Mimic is left out
    assert "- C at iid/20%: IPM (20.0 last, 90.0 peak) → ALIE (40.0 last, 40.0 peak)" in table
