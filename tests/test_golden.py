"""Golden runs: short configs covering both engines, FL-WBC (paper and reference options),
local DP, every attack mode, random schedules and several robust rules, whose `rounds.jsonl`
recorded before a refactor must come out bit for bit after it (the random streams are keyed,
so a refactor that keeps the computation keeps the numbers).

`python tests/test_golden.py --record DATA_DIR` re-records them: only for a change of numbers
that is intended, named in its commit.

Float sums depend on the kernels the CPU selects (AVX-512, AVX2 or none in torch's own
kernels, MKL's code path, oneDNN's and NNPACK's JIT), so each case runs in a child process
pinned to kernels that every x86-64 CPU runs the same way (`PINNED`): torch's kernels without
vectorisation beyond the baseline (ATEN_CPU_CAPABILITY=default), MKL's conditional numerical
reproducibility (MKL_CBWR=COMPATIBLE), oneDNN and NNPACK off, one thread. The golden files are
those pinned runs; without the pin, runs on CPUs of different instruction sets differ from the
first round on (`python tests/test_golden.py --isa-check DATA_DIR` shows it on this machine).
"""

from __future__ import annotations

import json
import os
import subprocess
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


PINNED = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def run_pinned(
    name: str, data_dir: Path, out: Path, env: dict[str, str] | None = None, pinned: bool = True
) -> bytes:
    """`run_case` in a child process with `env` added to its environment and, if `pinned`, its
    kernels pinned (`PINNED`, over `env`); returns the run's rounds.jsonl."""
    child_env = {**os.environ, **(env or {}), **(PINNED if pinned else {})}
    args = [sys.executable, __file__, "--case", name, str(data_dir), str(out)]
    if pinned:
        args.append("--pinned")
    done = subprocess.run(args, env=child_env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"golden case {name} failed:\n{done.stderr[-3000:]}")
    return (out / f"{name}.golden").read_bytes()


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
    got = run_pinned(name, real_data_dir, tmp_path)
    assert got == expected, (
        f"{name}: rounds.jsonl differs from the golden one recorded with torch "
        f"{(HERE / 'torch-version').read_text().strip()} (running {torch.__version__})"
    )


def _record(data_dir: Path) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted(CASES):
            got = run_pinned(name, data_dir, Path(tmp) / name)
            (HERE / f"{name}.rounds.jsonl").write_bytes(got)
            print(f"recorded {name}")
    (HERE / "torch-version").write_text(torch.__version__ + "\n")


ISAS: dict[str, dict[str, str]] = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "sse4.2": {
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
    },
}


def _isa_check(data_dir: Path) -> None:
    """Each case unpinned under two forced instruction sets, then pinned under each: whether
    the rounds.jsonl bytes agree, as JSON lines."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted(CASES):
            free = {
                isa: run_pinned(
                    name,
                    data_dir,
                    Path(tmp) / f"{name}-{isa}",
                    {**env, "OMP_NUM_THREADS": "1"},
                    pinned=False,
                )
                for isa, env in ISAS.items()
            }
            pinned = {
                isa: run_pinned(name, data_dir, Path(tmp) / f"{name}-{isa}-pinned", env)
                for isa, env in ISAS.items()
            }
            golden = (HERE / f"{name}.rounds.jsonl").read_bytes()
            print(
                json.dumps(
                    {
                        "case": name,
                        "unpinned_isas_agree": len(set(free.values())) == 1,
                        "pinned_isas_agree": len(set(pinned.values())) == 1,
                        "pinned_equals_golden": all(v == golden for v in pinned.values()),
                    }
                ),
                flush=True,
            )


def _child(name: str, data_dir: Path, out: Path, pinned: bool) -> None:
    if pinned:
        torch.backends.mkldnn.enabled = False
        torch.backends.nnpack.set_flags(False)
    got = run_case(name, data_dir, out)
    (out / f"{name}.golden").write_bytes(got)


if __name__ == "__main__":
    argv = sys.argv[1:]
    if len(argv) == 2 and argv[0] == "--record":
        _record(Path(argv[1]))
    elif len(argv) == 2 and argv[0] == "--isa-check":
        _isa_check(Path(argv[1]))
    elif len(argv) in (4, 5) and argv[0] == "--case":
        _child(argv[1], Path(argv[2]), Path(argv[3]), argv[4:] == ["--pinned"])
    else:
        sys.exit("usage: python tests/test_golden.py --record DATA_DIR | --isa-check DATA_DIR")
