"""Golden runs: short configs covering both engines, FL-WBC (paper and reference options),
local DP, every attack mode, random schedules and several robust rules, whose `rounds.jsonl`
recorded before a refactor must come out bit for bit after it (the random streams are keyed,
so a refactor that keeps the computation keeps the numbers).

`python tests/test_golden.py --record DATA_DIR` re-records them: only for a change of numbers
that is intended, named in its commit.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

HERE = Path(__file__).resolve().parent / "golden"
CASES: dict[str, Any] = {
    k: v for k, v in yaml.safe_load((HERE / "cases.yaml").read_text()).items() if k[0] != "_"
}


def run_case(name: str, data_dir: Path, out: Path) -> bytes:
    import flwbc

    cfg = flwbc.make_config(
        {
            **CASES[name],
            "data": {**CASES[name]["data"], "dir": str(data_dir)},
            "output": {"dir": str(out), "name": name},
            "threads": 1,
        }
    )
    threads = torch.get_num_threads()
    try:
        res = flwbc.run(cfg, progress=False)
    finally:
        torch.set_num_threads(threads)
    return (res.run_dir / "rounds.jsonl").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_rounds_bit_for_bit(name: str, real_data_dir: Path, tmp_path: Path) -> None:
    expected = (HERE / f"{name}.rounds.jsonl").read_bytes()
    got = run_case(name, real_data_dir, tmp_path)
    assert got == expected, (
        f"{name}: rounds.jsonl differs from the golden one recorded with torch "
        f"{(HERE / 'torch-version').read_text().strip()} (running {torch.__version__})"
    )


def _record(data_dir: Path) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted(CASES):
            (HERE / f"{name}.rounds.jsonl").write_bytes(run_case(name, data_dir, Path(tmp)))
            print(f"recorded {name}")
    (HERE / "torch-version").write_text(torch.__version__ + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--record":
        sys.exit("usage: python tests/test_golden.py --record DATA_DIR")
    _record(Path(sys.argv[2]))
