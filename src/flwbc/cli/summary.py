"""`flwbc summary`: a run directory's closing lines (also printed at the end of `flwbc run`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

NAME = "summary"
ORDER = 3
RESUMES: str | None = None
"""What an interruption leaves: 'run' (continue with --resume), 'sweep' (rerun the command)."""


def add_parser(sub: Any) -> None:
    summ = sub.add_parser("summary", help="print the summary of a run directory")
    summ.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")


def _spans(rounds: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    parts: list[list[int]] = []
    for r in rounds:
        if parts and r == parts[-1][1] + 1:
            parts[-1][1] = r
        else:
            parts.append([r, r])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in parts)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def summary_lines(run_dir: Path, summary: dict[str, Any]) -> list[str]:
    """A run's closing lines: its accuracy, the measure its attack is judged by (backdoor
    success, D_M confidence and mitigation rounds, or the accuracy drop against a paired clean
    run) and, when a rule flags clients, its detection counts."""
    from flwbc.config import load_run_config
    from flwbc.metrics import attack_kind
    from flwbc.runio import read_jsonl

    acc = summary.get("final_test_acc")
    lines = [
        f"run directory: {run_dir}",
        f"rounds: {summary['rounds_done']}  final test accuracy: "
        f"{'-' if acc is None else f'{acc:.4f}'}",
    ]
    adversarial = summary.get("adversarial_rounds") or []
    if not adversarial:
        return lines
    cfg = load_run_config(run_dir)
    records = read_jsonl(run_dir / "rounds.jsonl")
    kind, _ = attack_kind(cfg.attack.model_dump(), records)
    named = cfg.attack.name if cfg.attack.name == kind else f"{cfg.attack.name} ({kind})"
    lines.append(f"attack: {named}, adversarial rounds {_spans(adversarial)}")
    last = records[-1] if records else {}
    if kind == "backdoor":
        during = [
            r["backdoor_acc"]
            for r in records
            if r["adversarial"] and r.get("backdoor_acc") is not None
        ]
        mean = sum(during) / len(during) if during else None
        lines.append(
            f"backdoor success: {_pct(last.get('backdoor_acc'))} at round {last.get('round')} "
            f"(mean over the adversarial rounds {_pct(mean)})"
        )
        for level, windows in summary.get("backdoor_mitigation", {}).items():
            for w in windows:
                shown = w["rounds"] if w["rounds"] is not None else f"> {w['observed']}"
                lines.append(
                    f"attack window {w['round']}-{w['last_round']}: backdoor success below "
                    f"{float(level):.0%} after {shown} rounds"
                )
    elif kind == "targeted":
        conf = last.get("target_conf")
        lines.append(
            f"misclassification confidence on D_M: {'-' if conf is None else f'{conf:.4f}'} "
            f"at round {last.get('round')}"
        )
        for m in summary.get("mitigation", []):
            shown = (
                m["rounds"]
                if m["rounds"] is not None
                else f"> {m['observed']} (not within the run)"
            )
            lines.append(f"adversarial round {m['round']}: attack mitigation rounds {shown}")
    elif kind == "untargeted":
        drops = [r["acc_drop"] for r in records if r.get("acc_drop") is not None]
        if drops:
            lines.append(
                f"accuracy drop against the clean run: {100 * drops[-1]:.1f} points at round "
                f"{last.get('round')}"
            )
        else:
            lines.append(
                "accuracy drop: not measured (run the same config without the attack, then add "
                "eval.metrics: [{name: accuracy_drop, options: {clean_run: DIR}}])"
            )
    det = summary.get("detection")
    if det:
        rule = cfg.server.aggregator
        attackers, benign = det["tp"] + det["fn"], det["fp"] + det["tn"]
        prec = "-" if det["precision"] is None else f"{det['precision']:.2f}"
        rec = "-" if det["recall"] is None else f"{det['recall']:.2f}"
        lines.append(
            f"detection ({rule}, summed over the rounds): attacker rows flagged {det['tp']} of "
            f"{attackers}, benign rows flagged {det['fp']} of {benign}; precision {prec}, "
            f"recall {rec}"
        )
    return lines


def print_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    print("\n".join(summary_lines(run_dir, summary)))


def command(args: argparse.Namespace, argv: list[str] | None) -> int:
    from flwbc.runio import read_json

    print_summary(Path(args.run_dir), read_json(Path(args.run_dir) / "summary.json"))
    return 0
