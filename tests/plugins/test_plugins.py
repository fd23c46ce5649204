"""Plug-ins from outside the package: loaded through a config's `plugins:` and through an entry
point, in this process, in sweep workers and from the CLI; both engines agree on them; runs
are listed by `flwbc list` and read back by `flwbc.load_run`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import flwbc
from flwbc.cli import main
from flwbc.errors import FlwbcError

pytestmark = pytest.mark.slow

BASE: dict[str, Any] = {
    "data": {"name": "quadrants"},
    "federation": {"num_clients": 10, "clients_per_round": 4, "rounds": 3},
    "local": {"epochs": 1, "batch_size": 8},
    "attack": {"num_malicious": 2, "num_images": 2, "rounds": [2], "epochs": 2},
    "server": {"aggregator": "coord_clip_mean", "options": {"c": 0.05}},
    "threads": 1,
}


def config(out: Path, name: str, **over: Any) -> dict[str, Any]:
    return {**BASE, "output": {"dir": str(out), "name": name}, **over}


def test_the_plugins_field_loads_every_kind(plugin_dir, no_entry_points, tmp_path):
    with pytest.raises(FlwbcError, match="unknown dataset 'quadrants'; choose one of"):
        flwbc.make_config(config(tmp_path, "x"))
    res = flwbc.run(config(tmp_path, "a", plugins=["myplug"]), progress=False)
    assert res.summary["complete"] and len(res.records) == 3
    cfg = res.config
    assert cfg.plugins == ["myplug"] and cfg.model_name == "linear_probe"
    assert res.weights.numel() == 8 * 8 * 4 + 4  # the plug-in model's parameters


def test_an_entry_point_loads_without_being_named(plugin_dir, tmp_path):
    res = flwbc.run(config(tmp_path, "ep"), progress=False)
    assert res.summary["complete"]
    assert "myplug" in flwbc.plugins.LOADED


def test_the_plugin_aggregator_moves_each_coordinate_at_most_c(plugin_dir, tmp_path):
    from flwbc.experiment import Experiment

    cfg = flwbc.make_config(
        config(
            tmp_path,
            "r1",
            federation={**BASE["federation"], "rounds": 1},
            attack={"enabled": False},
        )
    )
    w0 = Experiment.prepare(cfg).initial_weights()
    res = flwbc.run(cfg, progress=False)
    moved = (res.weights - w0).abs().max().item()
    assert 0 < moved <= 0.05 + 1e-6


def test_cli_runs_and_lists_plugins(plugin_dir, no_entry_points, tmp_path, capsys):
    argv = ["run", "--plugins", "myplug", "--dataset", "quadrants", "--no-progress"]
    argv += ["--aggregator", "coord_clip_mean", "--server-options", "c=0.1"]
    argv += ["--federation-num-clients", "10", "--federation-clients-per-round", "4"]
    argv += ["--rounds", "2", "--local-epochs", "1", "--attack-rounds", "1"]
    argv += ["--attack-num-malicious", "2", "--out", str(tmp_path), "--name", "cli"]
    assert main(argv) == 0
    saved = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert saved["plugins"] == ["myplug"] and saved["server"]["options"] == {"c": 0.1}
    capsys.readouterr()
    assert main(["list", "--plugins", "myplug"]) == 0
    out = capsys.readouterr().out
    for needle in (
        "  coord_clip_mean: Weighted mean of the updates after clipping every coordinate",
        "      c: float = 0.05",
        "  quadrants: Four classes of 8x8 images",
        "[4 classes; model auto: linear_probe]",
        "  linear_probe: Flatten, then one linear layer.",
    ):
        assert needle in out
    assert main(["list", "models"]) == 0
    assert "linear_probe" in capsys.readouterr().out


def test_sweep_workers_load_plugins(plugin_dir, no_entry_points, tmp_path):
    from flwbc.experiments.specs import RunSpec, run_key
    from flwbc.experiments.sweep import run_dir, run_sweep

    runs = []
    for seed in (0, 1):
        # every kind at once: dataset, model, aggregator, attack, defense chain, metric
        extra = {"eval": {"metrics": ["weight_norm"]}}
        cfg = {**BASE, **PLUGGED, **extra, "seed": seed, "plugins": ["myplug"]}
        runs.append(RunSpec(run_key(cfg, None), f"plug-s{seed}", cfg, rounds=3))
    report = run_sweep(runs, tmp_path / "store", jobs=2, threads=1, progress=False)
    assert report.failed == {} and sorted(report.finished) == sorted(r.key for r in runs)
    for r in runs:
        swept = (run_dir(tmp_path / "store", r) / "rounds.jsonl").read_bytes()
        alone = flwbc.run(config(tmp_path, r.label, **r.config), progress=False)
        assert swept == (alone.run_dir / "rounds.jsonl").read_bytes()


def test_both_engines_agree_and_run_many_honours_each(plugin_dir, tmp_path):
    seq = flwbc.run(config(tmp_path, "seq", engine="sequential"), progress=False)
    bat = flwbc.run(config(tmp_path, "bat", engine="batched"), progress=False)
    assert torch.allclose(seq.weights, bat.weights, atol=1e-5)
    for a, b in zip(seq.records, bat.records, strict=True):
        assert a["clients"] == b["clients"] and a["malicious"] == b["malicious"]
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=0.011)
    many = flwbc.run_many(
        [config(tmp_path, "m-seq", engine="sequential"), config(tmp_path, "m-bat")],
        progress=False,
    )
    assert [json.loads((r.run_dir / "config.json").read_text())["engine"] for r in many] == [
        "sequential",
        "batched",
    ]
    assert torch.equal(many[0].weights, seq.weights) and torch.equal(many[1].weights, bat.weights)
    with pytest.raises(FlwbcError, match="engine 'flower' drives its own runs"):
        flwbc.run_many([config(tmp_path, "fl", engine="flower")], progress=False)


def test_load_run_gives_what_run_gave(plugin_dir, tmp_path):
    res = flwbc.run(config(tmp_path, "lr"), progress=False)
    back = flwbc.load_run(res.run_dir)
    assert back.records == res.records and back.summary == res.summary
    assert torch.equal(back.weights, res.weights)
    cols = back.columns()
    assert cols["round"] == [1, 2, 3] and cols["adversarial"] == [False, True, False]
    frame = back.to_pandas()
    assert list(frame.index) == [1, 2, 3]
    assert list(frame["test_acc"]) == [r["test_acc"] for r in res.records]


PLUGGED: dict[str, Any] = {
    "attack": {**BASE["attack"], "name": "label_shift", "options": {"shift": 2}},
    "defense": {"client": ["shrink", "wbc"], "options": {"shrink": {"decay": 0.02}}},
}


def test_plugin_attack_and_defense_chain_run_on_both_engines(plugin_dir, tmp_path):
    seq = flwbc.run(config(tmp_path, "s", engine="sequential", **PLUGGED), progress=False)
    bat = flwbc.run(config(tmp_path, "b", engine="batched", **PLUGGED), progress=False)
    assert torch.allclose(seq.weights, bat.weights, atol=1e-5)
    for a, b in zip(seq.records, bat.records, strict=True):
        assert a["clients"] == b["clients"] and a["malicious"] == b["malicious"]
        # every benign client of 39-40 images takes ceil(n / 8) = 5 steps of the shrink hook
        assert a["shrink_steps"] == b["shrink_steps"] == 5.0
        assert a["wbc_perturbed"] == pytest.approx(b["wbc_perturbed"], abs=1e-3)
    assert seq.config.defense.client == ["shrink", "wbc"]


def test_plugin_attack_trains_on_shifted_labels(plugin_dir, tmp_path):
    from flwbc.client.local import benign_plan
    from flwbc.experiment import Experiment
    from flwbc.rng import torch_generator

    exp = Experiment.prepare(flwbc.make_config(config(tmp_path, "p", **PLUGGED)))
    c = exp.malicious_ids[0]
    n, plan = exp.attack.plan(exp, 2, c, torch_generator(0, "data", 2, c))
    x, y = exp.client_data(c)
    honest = benign_plan(x, y, 8, 1, torch_generator(0, "data", 2, c))
    assert n == len(y)
    for (step,), (ref,) in zip(next(iter(plan)), next(iter(honest)), strict=True):
        assert torch.equal(step.x, ref.x) and torch.equal(step.y, (ref.y + 2) % 4)


@pytest.mark.parametrize(
    ("over", "message"),
    [
        (
            {"attack": {**BASE["attack"], "name": "label_shift", "options": {"shift": 7}}},
            "attack 'label_shift': option shift = 7: Input should be less than or equal to 3",
        ),
        (
            {"attack": {**BASE["attack"], "name": "label_shift", "options": {"flip": 1}}},
            "attack 'label_shift' has no option flip (it takes: shift, radius)",
        ),
        (
            {"attack": {**BASE["attack"], "name": "nope"}},
            "unknown attack 'nope'; choose one of alie, alie_opt, badnets, dba, fang_krum, "
            "fang_trmean, gaussian, honest, ipm, ipm_opt, kernel_backdoor, label_flip, "
            "label_shift, mean_flip, mimic, min_max, min_sum, model_replacement, neurotoxin, "
            "sign_flip, targeted",
        ),
        (
            {"defense": {"client": "shrink", "options": {"shrink": {"decay": 1}}}},
            "client defense 'shrink': option decay = 1: Input should be less than 1",
        ),
        ({"defense": {"client": ["wbc", "nope"]}}, "unknown client defense 'nope'; choose none"),
    ],
)
def test_plugin_options_are_checked(plugin_dir, tmp_path, over, message):
    from flwbc.experiment import Experiment

    with pytest.raises(FlwbcError) as err:
        Experiment.prepare(flwbc.make_config(config(tmp_path, "bad", **over)))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_selects_plugin_attack_and_defenses(plugin_dir, tmp_path, capsys):
    argv = ["run", "--plugins", "myplug", "--dataset", "quadrants", "--no-progress"]
    argv += ["--federation-num-clients", "10", "--federation-clients-per-round", "4"]
    argv += ["--rounds", "2", "--local-batch-size", "8", "--attack-rounds", "1"]
    argv += ["--attack-num-malicious", "2", "--out", str(tmp_path), "--name", "cli2"]
    argv += ["--attack-name", "label_shift", "--attack-options", "shift=3"]
    argv += ["--client-defense", "shrink,wbc", "--set", "defense.options.shrink.decay=0.05"]
    assert main(argv) == 0
    saved = json.loads((tmp_path / "cli2" / "config.json").read_text())
    assert saved["attack"]["name"] == "label_shift" and saved["attack"]["options"] == {"shift": 3}
    assert saved["defense"]["client"] == ["shrink", "wbc"]
    assert saved["defense"]["options"] == {"shrink": {"decay": 0.05}}
    capsys.readouterr()
    assert main(["list", "attacks", "--plugins", "myplug"]) == 0
    out = capsys.readouterr().out
    assert "  label_shift: Train on the attacker's own images" in out
    assert "      shift: int = 1 (>= 1, <= 3): label y becomes (y + shift) mod classes" in out
    assert main(["list", "defenses", "--plugins", "myplug"]) == 0
    assert "      decay: float = 0.01 (>= 0, < 1)" in capsys.readouterr().out


def test_colluding_attack_metric_and_partition_plugins(plugin_dir, tmp_path):
    from flwbc.experiment import Experiment

    over = {
        "attack": {**BASE["attack"], "name": "mean_flip", "options": {"scale": 2.0}},
        "data": {"name": "quadrants", "partition": "blocks", "partition_options": {"drop": 18}},
        "eval": {"metrics": [{"name": "weight_norm"}]},
        "server": {"aggregator": "fedavg", "pre": [{"name": "clip", "options": {"bound": 0.5}}]},
    }
    cfg = flwbc.make_config(config(tmp_path, "c", **over))
    exp = Experiment.prepare(cfg)
    # the partition: consecutive blocks of the pool after dropping 18 indices (D_M is 2 of 400)
    pool = [i for i in range(400) if i not in set(exp.malicious_set.indices.tolist())][18:]
    assert [len(p) for p in exp.client_indices] == [38] * 10
    assert sum((p.tolist() for p in exp.client_indices), []) == pool
    # the colluding hook: attackers' rows become -2 x the benign rows' mean
    updates = torch.arange(12.0).view(4, 3)
    crafted = exp.attack.craft(exp, 2, updates, [True, False, True, False])
    benign_mean = (updates[1] + updates[3]) / 2
    assert torch.equal(crafted[0], -2 * benign_mean) and torch.equal(crafted[2], -2 * benign_mean)
    assert torch.equal(crafted[1], updates[1]) and torch.equal(crafted[3], updates[3])
    res = flwbc.run(cfg, progress=False)
    for rec in res.records:
        assert set(rec["pre"]["clip"]) == {"clipped"}
    assert res.records[-1]["weight_norm"] == pytest.approx(float(res.weights.double().norm()))
    # both engines agree with every kind plugged in
    bat = flwbc.run(config(tmp_path, "c-seq", engine="sequential", **over), progress=False)
    assert torch.allclose(bat.weights, res.weights, atol=1e-5)


def test_schedule_plugin_decides_when_and_how_many(plugin_dir, tmp_path):
    schedule = {"name": "even_rounds", "options": {"most": 2}}
    over = {
        "federation": {**BASE["federation"], "rounds": 6},
        "attack": {"num_malicious": 2, "num_images": 2, "epochs": 2, "schedule": schedule},
    }
    res = flwbc.run(config(tmp_path, "sched", **over), progress=False)
    # round t even: min(t // 2, 2) attackers beside 4 - that many benign clients
    assert [len(r["malicious"]) for r in res.records] == [0, 1, 0, 2, 0, 2]
    assert [r["adversarial"] for r in res.records] == [False, True, False, True, False, True]
    assert all(len(r["clients"]) == 4 for r in res.records)
    too_many = {
        **over,
        "attack": {**over["attack"], "schedule": {**schedule, "options": {"most": 3}}},
    }
    with pytest.raises(FlwbcError, match="asked for 3 attackers in round 6; there are 2"):
        flwbc.run(config(tmp_path, "sched3", **too_many), progress=False)


def test_name_and_options_forms(plugin_dir, tmp_path):
    over = {
        "model": {"name": "mlp", "options": {"hidden": 7}},
        "defense": {"client": [{"name": "shrink", "options": {"decay": 0.03}}, {"name": "wbc"}]},
    }
    res = flwbc.run(config(tmp_path, "forms", **over), progress=False)
    cfg = res.config
    assert (cfg.model, cfg.model_options) == ("mlp", {"hidden": 7})
    assert cfg.defense.client == ["shrink", "wbc"]
    assert cfg.defense.options == {"shrink": {"decay": 0.03}}
    assert res.weights.numel() == 64 * 7 + 7 + 7 * 4 + 4  # 8x8 images, 4 classes
    with pytest.raises(FlwbcError, match="model 'mlp': option hidden = 'x': Input should be"):
        flwbc.run(config(tmp_path, "bad", model={"name": "mlp", "options": {"hidden": "x"}}))


@pytest.mark.parametrize("engine", ["sequential", "batched"])
def test_attack_after_step_projects_every_step(plugin_dir, tmp_path, engine):
    from flwbc.engine import get_engine
    from flwbc.experiment import Experiment

    attack = {**BASE["attack"], "name": "label_shift", "options": {"shift": 1, "radius": 0.05}}
    cfg = flwbc.make_config(config(tmp_path, "proj", attack=attack, engine=engine))
    exp = Experiment.prepare(cfg)
    plan = exp.round_plan(2)
    u = get_engine(engine).round_updates(exp, plan, exp.initial_weights())
    norms = u.updates.norm(dim=1)
    attackers = [i for i, m in enumerate(plan.malicious) if m]
    assert attackers and all(norms[i] <= 0.05 + 1e-6 for i in attackers)
    assert all(norms[i] > 0.05 for i in range(len(norms)) if i not in attackers)


def test_run_many_mixes_defense_chains_and_model_options(plugin_dir, tmp_path):
    """Runs whose defense chains or model options differ never share a lock-step group in a way
    that mixes their settings: each equals its solo run."""
    variants = {
        "ldp-wbc": {"defense": {"client": ["ldp", "wbc"]}},
        "wbc": {"defense": {"client": "wbc", "wbc": {"s": 0.8}}},
        "shrink-wbc": {"defense": {**PLUGGED["defense"]}},
        "h5": {"model": {"name": "mlp", "options": {"hidden": 5}}},
        "h9": {"model": {"name": "mlp", "options": {"hidden": 9}}},
    }
    many = flwbc.run_many(
        [config(tmp_path / "many", n, **v) for n, v in variants.items()], progress=False
    )
    for res, (name, v) in zip(many, variants.items(), strict=True):
        alone = flwbc.run(config(tmp_path / "solo", name, **v), progress=False)
        torch.testing.assert_close(res.weights, alone.weights, rtol=0, atol=1e-12)
        assert [r.get("wbc_perturbed") for r in res.records] == pytest.approx(
            [r.get("wbc_perturbed") for r in alone.records], abs=1e-9
        )


def test_one_process_never_runs_one_directory_twice(plugin_dir, tmp_path):
    with pytest.raises(FlwbcError, match="several configs write"):
        flwbc.run_many([config(tmp_path, "same"), config(tmp_path, "same", seed=3)])
    from flwbc.api import RunSession

    first = RunSession(flwbc.make_config(config(tmp_path, "held")), None)
    try:
        with pytest.raises(FlwbcError, match="is in use by another run"):
            RunSession(flwbc.make_config(config(tmp_path, "held")), None)
        assert (tmp_path / "held" / "config.json").is_file()  # the first session's, untouched
    finally:
        first.close()
    # released: the directory (no finished round) can be run now
    assert flwbc.run(config(tmp_path, "held"), progress=False).summary["complete"]


def test_a_plugin_cannot_take_a_builtin_name(plugin_dir):
    from flwbc.defenses import ClientDefense, register_client_defense

    with pytest.raises(FlwbcError, match="a client defense named 'wbc' is already registered"):

        @register_client_defense("wbc")
        class Impostor(ClientDefense):
            """Not FL-WBC."""


@pytest.mark.slow
def test_bench_evaluate_places_a_plugin_defense_with_one_command(
    plugin_dir, no_entry_points, real_data_dir, tmp_path
):
    """A rule from a plug-in package outside flwbc gets its report card from one command,
    `flwbc bench evaluate --plugins PACKAGE --defense ...`, against stored results that it
    does not recompute."""
    import csv

    import yaml

    from tests.experiments.test_bench import TINY, _argv, _records

    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY, allow_unicode=True))
    board = tmp_path / "board"
    assert main(_argv(["run"], spec, tmp_path / "runs", board, real_data_dir)) == 0
    argv = _argv(["evaluate"], spec, tmp_path / "runs2", tmp_path / "card", real_data_dir)
    argv += ["--plugins", "myplug", "--name", "clipped mean", "--against", str(board)]
    argv += ["--defense", "{server: {aggregator: coord_clip_mean, options: {c: 0.01}}}"]
    assert main(argv) == 0
    assert {d for _, _, d in _records(tmp_path / "runs2")} == {"clipped mean"}
    card = (tmp_path / "card" / "report.md").read_text()
    assert "# Report card: clipped mean" in card and " of 2 " in card
    rows = list(csv.DictReader((tmp_path / "card" / "cells.csv").open()))
    assert {r["defense"] for r in rows} == {"FedAvg", "clipped mean"}
    ran = [r for r in rows if r["defense"] == "clipped mean"]
    assert len(ran) == 4 and all(r["acc"] for r in ran)
    # the defense's runs name the package, so they resume and reproduce outside this test;
    # the warm-up, which no defense touches, does not, and is the stored board's own run
    for path in (tmp_path / "runs2").iterdir():
        saved = json.loads((path / "config.json").read_text())
        branch = json.loads((path / "request.json").read_text())["role"] == "branch"
        assert saved["plugins"] == (["myplug"] if branch else [])
        assert branch or (tmp_path / "runs" / path.name).is_dir()


def test_a_bench_regime_of_all_attacks_includes_a_plugins(plugin_dir: Path) -> None:
    """`attacks: all` is every registered attack of the regime's kind at the time the spec is
    expanded, a plug-in's too, and no attack of the other kind."""
    from flwbc.attacks import ATTACKS
    from flwbc.experiments.bench import CLEAN, Regime, attack_kind_of, regime_attacks
    from flwbc.plugins import load_plugins

    untargeted = Regime.model_validate({"kind": "untargeted", "rounds": 3, "attacks": "all"})
    before, registered = regime_attacks(untargeted), set(ATTACKS)
    assert "label_shift" not in before
    load_plugins(["myplug.attack"])
    after = regime_attacks(untargeted)
    assert list(after) == [CLEAN, *sorted(n for n in ATTACKS if ATTACKS[n].goal == "untargeted")]
    new = {n for n in ATTACKS if n not in registered and ATTACKS[n].goal == "untargeted"}
    assert "label_shift" in new and set(after) - set(before) == new
    assert after["label_shift"] == {"attack": {"name": "label_shift"}}
    targeted = Regime.model_validate(
        {"kind": "targeted", "rounds": 3, "warmup_rounds": 1, "attacks": "all"}
    )
    names = set(regime_attacks(targeted)) - {CLEAN}
    assert names and all(attack_kind_of(n) == "targeted" for n in names)
    assert "label_shift" not in names and "badnets" in names
