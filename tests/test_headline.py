"""`examples/headline.sh`, the README's main job, reruns cleanly after a failed or interrupted
first attempt and writes its figure (shrunk to seconds through $FLAGS)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "headline.sh"
TINY = (
    "--federation-num-clients 10 --federation-clients-per-round 4 --local-epochs 1 "
    "--local-batch-size 64 --data-train-fraction 0.05 --attack-num-malicious 2 "
    "--attack-epochs 1 --no-progress"
)


def _headline(tmp_path: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "FLWBC_DATA_DIR": str(data_dir),  # the README's one line for offline use
        "FLWBC_CACHE_DIR": str(tmp_path / "cache"),
        "FLWBC_MIRROR": "http://127.0.0.1:9/",  # no download: refused at once
        "OUT": str(tmp_path / "hl"),
        "WARMUP": "1",
        "AFTER": "2",
        "FLAGS": TINY,
    }
    return subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600
    )


def test_headline_reruns_after_failure_and_interruption(real_data_dir: Path, tmp_path: Path):
    first = _headline(tmp_path, tmp_path / "no-data")
    assert first.returncode != 0 and "not found" in first.stderr
    assert (tmp_path / "hl" / "warmup-s0" / "config.json").is_file()  # left by the failure

    second = _headline(tmp_path, real_data_dir)
    assert second.returncode == 0, second.stderr
    runs = {n: tmp_path / "hl" / f"{n}-s0" for n in ("warmup", "none", "wbc")}
    for d in runs.values():
        assert json.loads((d / "summary.json").read_text())["complete"]
    assert (tmp_path / "hl" / "confidence.png").stat().st_size > 0
    assert "| round | none-s0 adv | none-s0 acc | none-s0 conf | wbc-s0 adv |" in second.stdout

    # an interruption after the last round's checkpoint, before the summary: resumed, the
    # finished runs kept as they are
    (runs["wbc"] / "summary.json").unlink()
    (runs["wbc"] / "model.safetensors").unlink()
    kept = {n: (d / "rounds.jsonl").read_bytes() for n, d in runs.items()}
    mtimes = {
        n: (d / "model.safetensors").stat().st_mtime_ns for n, d in runs.items() if n != "wbc"
    }
    third = _headline(tmp_path, real_data_dir)
    assert third.returncode == 0, third.stderr
    assert "warmup-s0: finished earlier, kept" in third.stdout
    assert json.loads((runs["wbc"] / "summary.json").read_text())["complete"]
    assert {n: (d / "rounds.jsonl").read_bytes() for n, d in runs.items()} == kept
    assert {
        n: (d / "model.safetensors").stat().st_mtime_ns for n, d in runs.items() if n != "wbc"
    } == mtimes
