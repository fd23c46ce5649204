"""Counterfactual aggregation: what other rules would have made of a run's own client updates.

The run is replayed round by round along its own trajectory (its own aggregator, so the replayed
global models are the run's). In every round the clients' updates are computed once, and each
rule of `rules` is applied to the same updates from the same global model as well. The model
each rule would have produced is scored on D_M (misclassification confidence and accuracy) and,
optionally, on the test set. With the updates held fixed, a difference between two rules is the
rules' alone: e.g. whether trimming discards the part of the benign updates that undoes an
attack (results/FINDINGS.md, Table 1).

A rule with state (centered clipping's previous aggregate, say) evolves it from its own
aggregates of the run's updates. A rule must suit the run as the run's own aggregator would
(`Experiment.prepare`'s checks); FLTrust as a rule needs a run that drew its root set (an FLTrust
run), and uses that run's root set. A run on the Flower engine is replayed with the sequential
engine, which computes the same rounds up to float32 rounding.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from flwbc.analysis.replay import replay_start
from flwbc.config import ExperimentConfig, load_run_config
from flwbc.engine import replay_engine
from flwbc.errors import FlwbcError
from flwbc.experiment import check_aggregator
from flwbc.metrics import evaluate, target_metrics
from flwbc.round import aggregate_round
from flwbc.runio import JsonlLog, atomic_write_bytes, partial_jsonl
from flwbc.server import build_aggregator

RUN = "run"
"""The label of the run's own aggregator in the records."""


@dataclass(frozen=True)
class Rule:
    """A registered aggregator with options, under a label."""

    label: str
    name: str
    options: dict[str, Any]

    @classmethod
    def parse(cls, text: str) -> Rule:
        """`NAME` or `NAME:KEY=VALUE,...` (values read as YAML scalars), labelled by the text:
        `median`, `trimmed_mean:beta=0.1`."""
        name, _, opts = text.partition(":")
        options: dict[str, Any] = {}
        for item in filter(None, opts.split(",")):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise FlwbcError(f"rule options are KEY=VALUE, got '{item}' in '{text}'")
            try:
                options[key.strip()] = yaml.safe_load(value)
            except yaml.YAMLError:
                raise FlwbcError(f"rule option '{item}' in '{text}' is not a value") from None
        build_aggregator(name.strip(), options)  # unknown names or options: one error line
        return cls(text, name.strip(), options)


def compare_rules(
    cfg: ExperimentConfig,
    rules: list[Rule],
    *,
    rounds: int | None = None,
    test: bool = True,
    log: JsonlLog | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Replay the run of `cfg` for `rounds` rounds (default: all) and return, per round, one
    record for the run's own aggregator (`rule` = "run") and one per rule: the D_M confidence
    and accuracy of the model that rule makes from the round's updates, and its test accuracy
    (None with `test=False`)."""
    if len({r.label for r in rules}) < len(rules) or any(r.label == RUN for r in rules):
        raise FlwbcError(f"rule labels must be distinct and not '{RUN}'")
    total = rounds or cfg.federation.rounds
    if not 1 <= total <= cfg.federation.rounds:
        raise FlwbcError(f"rounds must be 1..{cfg.federation.rounds} (the run's), got {total}")
    if not cfg.attack.enabled:
        raise FlwbcError("this run has no attack (attack.enabled is false): nothing to score")
    aggregators = {r.label: build_aggregator(r.name, r.options) for r in rules}
    exp, w = replay_start(cfg)
    for label, agg in aggregators.items():
        check_aggregator(cfg, agg, exp.attack)
        root_size = agg.root_size
        if root_size is not None and (
            exp.root_indices is None or root_size != len(exp.root_indices)
        ):
            raise FlwbcError(
                f"rule '{label}' needs the run's root set of {root_size} images; only an FLTrust "
                "run with the same root_size has one"
            )
    engine = replay_engine(cfg.engine)
    variants = {RUN: exp} | {
        label: dataclasses.replace(exp, aggregator=agg) for label, agg in aggregators.items()
    }
    records: list[dict[str, Any]] = []
    for t in tqdm(range(1, total + 1), disable=not progress, desc="rules", unit="round"):
        plan = exp.round_plan(t)
        u = engine.round_updates(exp, plan, w)
        following = w
        for label, variant in variants.items():
            out = aggregate_round(variant, plan, w, u.updates, u.mean_loss, u.stats)
            conf, acc = target_metrics(exp.model, out.weights, exp.x_mal, exp.y_mal)
            test_acc = None
            if test:
                ds = exp.dataset
                test_acc, _ = evaluate(
                    exp.model, out.weights, ds.test_x, ds.test_y, ds.normalize, cfg.eval.batch_size
                )
            rec = {
                "round": t,
                "adversarial": plan.adversarial,
                "rule": label,
                "target_conf": conf,
                "target_acc": acc,
                "test_acc": test_acc,
            }
            records.append(rec)
            if log is not None:
                log.write(rec)
            if label == RUN:
                following = out.weights
        w = following
    return records


def rules_table(records: list[dict[str, Any]]) -> str:
    """Markdown: per round, each rule's misclassification confidence (and test accuracy)."""
    labels = list(dict.fromkeys(r["rule"] for r in records))
    by = {(r["round"], r["rule"]): r for r in records}
    head = "| round | adversarial | " + " | ".join(labels) + " |"
    lines = [head, "|" + "---|" * (2 + len(labels))]
    for t in sorted({r["round"] for r in records}):
        cells = []
        for label in labels:
            r = by[(t, label)]
            acc = "" if r["test_acc"] is None else f" ({100 * r['test_acc']:.1f}%)"
            cells.append(f"{r['target_conf']:.3f}{acc}")
        adv = "yes" if by[(t, labels[0])]["adversarial"] else ""
        lines.append(f"| {t} | {adv} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare_rules_run(
    run_dir: str | Path,
    rules: list[Rule],
    *,
    rounds: int | None = None,
    test: bool = True,
    progress: bool = True,
) -> list[Path]:
    """Compare rules on a run directory: write `rules.jsonl` (a record per round and rule;
    `rules.jsonl.partial` while it runs, flushed as it goes), `rules.md` (the table) and
    `rules.png|svg` into it. A failed or interrupted call leaves earlier results in place."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    path = run_dir / "rules.jsonl"
    with partial_jsonl(path) as log:
        records = compare_rules(cfg, rules, rounds=rounds, test=test, log=log, progress=progress)
    caption = (
        f"Misclassification confidence on D_M of the model each rule makes from the same client "
        f"updates, along the run's own trajectory ('{RUN}': {cfg.server.aggregator}); test "
        "accuracy in parentheses.\n\n"
    )
    atomic_write_bytes(run_dir / "rules.md", (caption + rules_table(records)).encode())
    from flwbc.plots import plot_rules

    return [path, run_dir / "rules.md", *plot_rules(records, run_dir / "rules")]
