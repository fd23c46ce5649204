"""Counterfactual aggregation on real Fashion-MNIST (tiny runs): the replay is the run, and a
rule's model in the first round is what a real run with that rule makes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flwbc.analysis.rules import RUN, Rule, compare_rules
from flwbc.api import run
from flwbc.cli import main
from flwbc.config import make_config
from flwbc.errors import FlwbcError

pytestmark = pytest.mark.slow

RULES = ["fedavg", "trimmed_mean:beta=0.25", "median"]


def _cfg(data_dir: Path, out: Path, name: str, **over):
    base = {
        "data": {"name": "fmnist", "dir": str(data_dir), "train_fraction": 0.025},
        "federation": {"num_clients": 20, "clients_per_round": 4, "rounds": 2},
        "local": {"epochs": 1, "batch_size": 10},
        "attack": {"num_malicious": 2, "num_images": 2, "rounds": [1], "epochs": 2},
        "server": {"aggregator": "median"},
        "eval": {"batch_size": 2000},
        "output": {"dir": str(out), "name": name},
    }
    return make_config(base, **over)


SCORES = ("target_conf", "target_acc", "test_acc")


@pytest.mark.parametrize("engine", ["sequential", "batched"])
def test_rules_on_the_same_updates(real_data_dir, tmp_path, engine):
    cfg = _cfg(real_data_dir, tmp_path, "median", engine=engine)
    ran = run(cfg, progress=False).records
    recs = compare_rules(cfg, [Rule.parse(r) for r in RULES], progress=False)
    by = {(r["round"], r["rule"]): r for r in recs}
    assert len(recs) == 2 * (1 + len(RULES))
    for t, rec in enumerate(ran, start=1):
        # the replay follows the run's own trajectory, bit for bit
        assert {k: by[(t, RUN)][k] for k in SCORES} == {k: rec[k] for k in SCORES}
        assert by[(t, RUN)]["adversarial"] == rec["adversarial"] == (t == 1)
        # the run's rule applied as an alternative gives the same model
        assert {k: by[(t, "median")][k] for k in SCORES} == {k: rec[k] for k in SCORES}
    # Round 1 starts from the same model for every rule: each rule's model is what a real run
    # with that aggregator makes in its round 1 (same sampling, data order and attack).
    for text, (name, options) in {
        "fedavg": ("fedavg", {}),
        "trimmed_mean:beta=0.25": ("trimmed_mean", {"beta": 0.25}),
    }.items():
        other = _cfg(
            real_data_dir,
            tmp_path,
            name,
            engine=engine,
            **{"server.aggregator": name, "server.options": options, "federation.rounds": 1},
        )
        (first,) = run(other, progress=False).records
        assert {k: by[(1, text)][k] for k in SCORES} == {k: first[k] for k in SCORES}
    # the attack round differs between rules: the plain mean lets the most of it in
    assert by[(1, "fedavg")]["target_conf"] != by[(1, "median")]["target_conf"]


@pytest.fixture()
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_cli_writes_files_and_rejects_bad_rules(real_data_dir, tmp_path, capsys, keep_threads):
    cfg = _cfg(real_data_dir, tmp_path, "r", **{"federation.rounds": 2, "threads": 1})
    run_dir = run(cfg, progress=False).run_dir
    torch.set_num_threads(2)
    assert main(["compare-rules", str(run_dir), "--rule", "fedavg", "--no-progress"]) == 0
    assert torch.get_num_threads() == 1  # the replay runs on the run's thread count
    out = capsys.readouterr().out
    assert "| round | adversarial | run | fedavg |" in out
    lines = [json.loads(x) for x in (run_dir / "rules.jsonl").read_text().splitlines()]
    assert [(r["round"], r["rule"]) for r in lines] == [
        (1, RUN),
        (1, "fedavg"),
        (2, RUN),
        (2, "fedavg"),
    ]
    for suffix in ("md", "png", "svg"):
        assert (run_dir / f"rules.{suffix}").stat().st_size > 0
    before = (run_dir / "rules.jsonl").read_bytes()
    for args, words in [
        (["--rule", "nope"], "unknown aggregator 'nope'"),
        (["--rule", "trimmed_mean:beta"], "rule options are KEY=VALUE"),
        (["--rule", "trimmed_mean:gamma=1"], "has no option gamma"),
        (
            ["--rule", "trimmed_mean:beta=0.7"],
            "aggregator 'trimmed_mean': option beta = 0.7: Input should be less than 0.5",
        ),
        (["--rule", "krum:f=[1"], "is not a value"),
        (["--rule", "fltrust"], "needs the run's root set of 100 images"),
        (["--rule", "fedavg", "--rounds", "3"], "rounds must be 1..2"),
    ]:
        assert main(["compare-rules", str(run_dir), *args]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1
    # a failed call leaves the earlier result, and nothing half-written
    assert (run_dir / "rules.jsonl").read_bytes() == before
    assert not (run_dir / "rules.jsonl.partial").exists()


def test_rules_get_the_runs_checks(real_data_dir, tmp_path):
    # an emulated attacker carries the weight of several: rank-based rules would ignore it
    cfg = _cfg(
        real_data_dir, tmp_path, "e", **{"attack.mode": "emulate", "server.aggregator": "fedavg"}
    )
    with pytest.raises(FlwbcError, match="rank-based aggregator 'median'"):
        compare_rules(cfg, [Rule.parse("median")], progress=False)


def test_labels_must_be_distinct(real_data_dir, tmp_path):
    cfg = _cfg(real_data_dir, tmp_path, "x")
    with pytest.raises(FlwbcError, match="distinct"):
        compare_rules(cfg, [Rule.parse("fedavg"), Rule.parse("fedavg")], progress=False)
