"""Threads: OpenMP's idle threads sleep unless the environment says otherwise (a spinning
runtime collapses on a shared machine, benchmarks/bench_threads.py), and a resumed run takes
a thread count without changing its numbers or its config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import flwbc
from flwbc.cli import main


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_import_prefers_sleeping_openmp_threads(given: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    code = "import flwbc, os; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == expected


@pytest.mark.slow
def test_resume_takes_threads(real_data_dir: Path, tmp_path: Path, capsys) -> None:
    cfg = {
        "seed": 3,
        "data": {"dir": str(real_data_dir), "train_fraction": 0.05},
        "federation": {"num_clients": 10, "clients_per_round": 4, "rounds": 2},
        "attack": {"enabled": False},
        "threads": 2,
        "output": {"dir": str(tmp_path), "name": "a"},
    }
    whole = flwbc.run({**cfg, "output": {"dir": str(tmp_path), "name": "whole"}}, progress=False)
    cut = flwbc.run(cfg, progress=False, callback=lambda record: False)
    assert len(cut.records) == 1
    config_before = (cut.run_dir / "config.json").read_bytes()
    saved = torch.get_num_threads()
    try:
        assert main(["run", "--resume", str(cut.run_dir), "--threads", "1", "--no-progress"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(saved)
    assert (cut.run_dir / "config.json").read_bytes() == config_before
    rounds = (cut.run_dir / "rounds.jsonl").read_bytes()
    assert rounds == (whole.run_dir / "rounds.jsonl").read_bytes()
    assert json.loads(rounds.splitlines()[-1])["round"] == 2
    capsys.readouterr()
    assert main(["run", "--resume", str(cut.run_dir), "--threads", "x"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "flwbc: error: --threads must be an integer >= 1, got 'x'"
    )
    assert main(["run", "--resume", str(cut.run_dir), "--rounds", "3"]) == 2
    assert "drop federation.rounds" in capsys.readouterr().err
