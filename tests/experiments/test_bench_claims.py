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
ATTACKS = ["none", "ALIE", "IPM", "Mimic", "label flipping", "sign flipping"]
DEFENSES = ["FedAvg", "FLTrust", *claims.CLASSICAL]
FIELDS = ["regime", "setting", "attack", "defense", "mean", "half_width", "seeds", "persists"]


def write(path: Path, values: dict[tuple[str, str, str], tuple[float, float | None]]) -> Path:
    """A summary.csv with every (setting, attack, defense) at 0.8 ± none unless given."""
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
    return path


def test_krum_last_under_strong_non_iid(tmp_path: Path) -> None:
    low = {
        ("α=0.1/20%", "IPM", "Krum"): (0.3, None),
        ("α=0.1/20%", "ALIE", "Multi-Krum"): (0.4, None),
    }
    assert claims.c1(claims.Board(write(tmp_path, low) / "summary.csv"))[1] == "holds"
    # a classical rule below Multi-Krum: only Krum is last
    low[("α=0.1/20%", "Mimic", "median")] = (0.35, None)
    assert claims.c1(claims.Board(write(tmp_path, low) / "summary.csv"))[1] == "holds in 1 of 2"


def test_a_collapse_is_within_five_points_of_chance(tmp_path: Path) -> None:
    for acc, said in [(0.149, "holds"), (0.151, "does not hold")]:
        board = claims.Board(
            write(tmp_path, {("iid/20%", "ALIE", "Bulyan (f=1)"): (acc, None)}) / "summary.csv"
        )
        assert claims.c9(board)[1] == said


def test_robust_means_within_the_clean_cells_interval(tmp_path: Path) -> None:
    # FLTrust loses 2 points everywhere: intervals of 1.5 points overlap (robust), of 0.5 do not
    for half, said in [(0.015, "holds"), (0.005, "does not hold")]:
        values = {}
        for s in SETTINGS:
            values[(s, "none", "FLTrust")] = (0.8, half)
            values[(s, "IPM", "FLTrust")] = (0.78, half)
        board = claims.Board(write(tmp_path, values) / "summary.csv")
        assert claims.c16(board)[1] == said


def test_an_unfinished_cell_is_named_not_guessed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, {})
    rows = (tmp_path / "summary.csv").read_text(encoding="utf-8").splitlines()
    kept = [r for r in rows if "α=0.1/20%,Mimic,Krum" not in r]
    (tmp_path / "summary.csv").write_text("\n".join(kept) + "\n", encoding="utf-8")
    board = claims.Board(tmp_path / "summary.csv")
    with pytest.raises(claims.Missing, match="Mimic Krum"):
        claims.c4(board)
    assert claims.main(tmp_path) == 0
    table = capsys.readouterr().out
    assert "| 4 | needs untargeted α=0.1/20% Mimic Krum | not finished |" in table
    assert "| 17 | needs the targeted regime | not finished |" in table
