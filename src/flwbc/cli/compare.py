"""`flwbc compare`: runs side by side, round by round."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flwbc.errors import FlwbcError

NAME = "compare"
ORDER = 4
RESUMES: str | None = None
"""What an interruption leaves: 'run' (continue with --resume), 'sweep' (rerun the command)."""


def add_parser(sub: Any) -> None:
    comp = sub.add_parser("compare", help="per-round confidence and accuracy of runs side by side")
    comp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")


_MEASURE_COLUMNS = {
    "backdoor": ("backdoor", "backdoor_acc"),
    "targeted": ("conf", "target_conf"),
    "untargeted": ("acc drop", "acc_drop"),
}


def compare_table(run_dirs: list[Path]) -> str:
    """A Markdown table: per round and run, whether the round was adversarial in that run, its
    test accuracy and the measure its attack is judged by (backdoor success, D_M confidence, or
    the accuracy drop when recorded); then each targeted run's attack mitigation rounds."""
    from flwbc.config import load_run_config
    from flwbc.metrics import attack_kind, mitigation_rounds
    from flwbc.runio import read_jsonl

    runs = {d.name: read_jsonl(d / "rounds.jsonl") for d in run_dirs}
    kinds: dict[str, str] = {}
    for d in run_dirs:
        recs = runs[d.name]
        if not recs:
            raise FlwbcError(f"no rounds recorded in {d.name}")
        attacked = any(r["adversarial"] for r in recs)
        attack = load_run_config(d).attack.model_dump()
        kinds[d.name] = attack_kind(attack, recs)[0] if attacked else "clean"
    columns: dict[str, list[tuple[str, str]]] = {}
    for n, kind in kinds.items():
        measure = _MEASURE_COLUMNS.get(kind)
        if measure and not any(r.get(measure[1]) is not None for r in runs[n]):
            measure = None  # e.g. an untargeted run without a paired clean run
        columns[n] = [("adv", "adversarial"), ("acc", "test_acc"), *([measure] if measure else [])]
    head = "| round |" + "".join(
        f" {n} {label} |" for n, cols in columns.items() for label, _ in cols
    )
    width = 1 + sum(len(c) for c in columns.values())
    lines = [head, "|" + "---|" * width]
    by_round = {n: {r["round"]: r for r in recs} for n, recs in runs.items()}
    for t in sorted({r["round"] for recs in runs.values() for r in recs}):
        cells = []
        for n, cols in columns.items():
            r = by_round[n].get(t)
            for _, field in cols:
                value = None if r is None else r.get(field)
                if field == "adversarial":
                    cells.append("yes" if value else "")
                else:
                    cells.append("" if value is None else f"{value:.4f}")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines.append("")
    for n, recs in runs.items():
        for m in mitigation_rounds(recs) if kinds[n] == "targeted" else []:
            shown = m["rounds"] if m["rounds"] is not None else f"> {m['observed']}"
            lines.append(f"{n}: adversarial round {m['round']}: mitigation rounds {shown}")
    return "\n".join(lines)


def command(args: argparse.Namespace, argv: list[str] | None) -> int:
    print(compare_table([Path(d) for d in args.run_dirs]))
    return 0
