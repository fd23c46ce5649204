"""Summarise branch runs made from a common warm start, one row per (run kind, seed).

usage: python examples/summarize.py RUNS_DIR KIND [KIND ...]
where RUNS_DIR holds `warmup-s<seed>` and `<kind>-s<seed>` run directories (as written by
examples/headline.sh). Prints a Markdown table: accuracy before the attack, mean accuracy over
the rounds after it, the cost, the confidence one round after the attack, and the attack
mitigation rounds.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

from flwbc.metrics import mitigation_rounds
from flwbc.runio import read_jsonl


def main(runs: Path, kinds: list[str]) -> None:
    print(
        "| run | seed | acc before | mean acc after (rounds 2-12) | cost (points) "
        "| conf round 1 | conf round 2 | mitigation rounds |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind in kinds:
        costs, mits = [], []
        for d in sorted(runs.glob(f"{kind}-s*")):
            m = re.fullmatch(rf"{re.escape(kind)}-s(\d+)", d.name)
            recs = read_jsonl(d / "rounds.jsonl")
            warm = read_jsonl(runs / f"warmup-s{m.group(1)}" / "rounds.jsonl") if m else []
            summary = d / "summary.json"
            done = summary.is_file() and json.loads(summary.read_text()).get("complete", False)
            if not m or not done or len(recs) < 2 or not warm:
                continue
            before = warm[-1]["test_acc"]
            after = statistics.mean(r["test_acc"] for r in recs[1:])
            mit = mitigation_rounds(recs)[0]
            shown = mit["rounds"] if mit["rounds"] is not None else f"> {mit['observed']}"
            mits.append(shown)
            cost = 100 * (before - after)
            costs.append(cost)
            print(
                f"| {kind} | {m.group(1)} | {before:.4f} | {after:.4f} | {cost:.1f} "
                f"| {recs[0]['target_conf']:.3f} | {recs[1]['target_conf']:.3f} | {shown} |"
            )
        if costs:
            print(
                f"| **{kind}** | all | | | **{statistics.mean(costs):.1f}** | | "
                f"| {', '.join(str(v) for v in mits)} |"
            )


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), sys.argv[2:])
