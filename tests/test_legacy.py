"""The shim between the old config layout (FL-WBC's and local DP's own sections, `defense.wbc`
and `defense.ldp`; the targeted attack's options as the `attack` section's fields) and the new
one (every plug-in's `options`)."""

from __future__ import annotations

import copy

import pytest

from flwbc.cli import build_parser
from flwbc.cli.common import config_from_args
from flwbc.config import AttackConfig, make_config
from flwbc.errors import FlwbcError
from flwbc.experiment import check_plugin_options
from flwbc.experiments.specs import run_key, run_label
from flwbc.legacy import TARGETED, upgrade

# Keys computed by flwbc before the move (commit 0f87844), from the old layout.
OLD_KEYS = [
    (
        {"defense": {"client": "wbc", "wbc": {"s": 0.2, "noise": "scale"}}, "seed": 3},
        "60f96aad4a83",
        "f18264a1ff55",
    ),
    (
        {"defense": {"client": "ldp", "ldp": {"sigma": 0.01, "clip": 1}}},
        "af55bb50d7ce",
        "9c67e4cecaf7",
    ),
    ({"defense": {"client": ["wbc", "ldp"], "wbc": {"s": 0.4}}}, "3b66fa08c784", "2f3cb9643de4"),
    ({"defense": {"client": "none", "wbc": {"s": 0.3}}}, "c34178f70050", "3fa946ce0aa7"),
    ({"defense": {"client": "wbc"}}, "95946e1fd6c3", "0f24b0123f5e"),
]


# Keys of configs in the old attack layout, computed by flwbc before the move (commit 0f87844).
OLD_ATTACK_KEYS = [
    ({"attack": {"epochs": 3, "mode": "boost", "boost": 2}}, "1903d5208f8c", "2ba54045a84d"),
    (
        {"attack": {"name": "badnets", "epochs": 1, "num_images": 1, "source": "test"}},
        "4d1db7b45b00",
        "66ba6133164d",
    ),
    (
        {
            "attack": {
                "mode": "emulate",
                "emulate_average": "reference",
                "num_malicious": 2,
                "kernel_reg": 0.01,
            },
            "federation": {"weighting": "uniform"},
        },
        "c00ae283fe1c",
        "0e2e5a65bb4d",
    ),
    (
        {"attack": {"name": "ipm", "alpha": 0.5, "options": {"epsilon": 0.5}}},
        "f87642fffb96",
        "43ac8355100f",
    ),
    ({"attack": {"epochs": 10, "alpha": 0}}, "2f7f49fcfdde", "650f23579364"),
]


@pytest.mark.parametrize(("old", "key", "child"), OLD_ATTACK_KEYS)
def test_the_attack_layouts_keep_their_keys(old, key, child) -> None:
    assert run_key(old, None) == key and run_key(old, "abc") == child
    att = old["attack"]
    if att.get("name", "targeted") == "targeted":
        moved = {k: v for k, v in att.items() if k not in ("num_images", "num_malicious")}
        new = {**old, "attack": {**{k: att[k] for k in att if k not in moved}, "options": moved}}
        assert run_key(new, None) == key and make_config(new) == make_config(old)
        assert run_label(new, "branch") == run_label(old, "branch")


def test_the_targeted_attacks_fields_move_into_its_options(tmp_path) -> None:
    cfg = make_config({"attack": {"epochs": 3, "mode": "boost", "options": {"alpha": 0.1}}})
    assert cfg.attack.options == {"epochs": 3, "mode": "boost", "alpha": 0.1}
    # another attack never read these: they are dropped, its own options untouched
    cfg = make_config({"attack": {"name": "ipm", "alpha": 0.5, "options": {"epsilon": 0.5}}})
    assert cfg.attack.options == {"epsilon": 0.5}
    # but the round plan read mode and emulate_average for every attack: not silently dropped
    for field, value in (("mode", "emulate"), ("emulate_average", "reference")):
        with pytest.raises(FlwbcError, match=f"attack.{field} = '{value}' is an option of the"):
            make_config({"attack": {"name": "badnets", field: value}})
    assert make_config({"attack": {"name": "badnets", "mode": "real"}}).attack.options == {}
    args = build_parser().parse_args(["run", "--attack-epochs", "2", "--attack-mode", "boost"])
    assert config_from_args(args).attack.options == {"epochs": 2, "mode": "boost"}
    args = build_parser().parse_args(["run", "--set", "attack.kernel_reg=0.1"])
    assert config_from_args(args).attack.options == {"kernel_reg": 0.1}
    # a flag overrides the config file's option
    f = tmp_path / "c.yaml"
    f.write_text("attack: {options: {epochs: 10, mode: real}}\n")
    args = build_parser().parse_args(
        ["run", "--config", str(f), "--attack-epochs", "3", "--attack-mode", "boost"]
    )
    assert config_from_args(args).attack.options == {"epochs": 3, "mode": "boost"}


def test_a_bad_targeted_option_is_one_line_where_the_experiment_is_built() -> None:
    with pytest.raises(FlwbcError, match=r"attack 'targeted': option mode = 'fake'"):
        check_plugin_options(make_config(**{"attack.mode": "fake"}))


def _new_layout(old: dict) -> dict:
    new = copy.deepcopy(old)
    d = new["defense"]
    d["options"] = {n: d.pop(n) for n in ("wbc", "ldp") if n in d}
    return new


@pytest.mark.parametrize(("old", "key", "child"), OLD_KEYS)
def test_old_and_new_layouts_keep_the_keys_runs_were_stored_under(old, key, child) -> None:
    new = _new_layout(old)
    assert run_key(old, None) == run_key(new, None) == key
    assert run_key(old, "abc") == run_key(new, "abc") == child
    assert make_config(old) == make_config(new)
    assert run_label(old, "branch") == run_label(new, "branch")


def test_upgrade_merges_both_places_and_a_clash_is_one_line() -> None:
    wbc = {"s": 0.2, "noise": "scale"}
    old = {
        "defense": {"client": "wbc", "wbc": wbc, "options": {"wbc": {"s": 0.2, "params": "all"}}}
    }
    before = copy.deepcopy(old)
    merged = {"s": 0.2, "noise": "scale", "params": "all"}
    assert upgrade(old) == {"defense": {"client": "wbc", "options": {"wbc": merged}}}
    assert old == before  # the input is left as it was
    old["defense"]["options"]["wbc"]["s"] = 0.3
    with pytest.raises(FlwbcError, match=r"defense\.wbc\.s and defense\.options\.wbc\.s are"):
        make_config(old)
    with pytest.raises(FlwbcError, match=r"attack\.epochs and attack\.options\.epochs"):
        make_config({"attack": {"epochs": 3, "options": {"epochs": 4}}})
    plain = {"local": {"lr": 0.1}}
    assert upgrade(plain) is plain
    assert make_config({"defense": {"wbc": None}}).defense.options == {}


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"defense": {"wbc": 0.4}}, "defense.wbc must be a mapping of options"),
        ({"defense": {"wbc": {"s": 1}, "options": {"wbc": 3}}}, "defense.options.wbc must be"),
        ({"defense": 5}, "defense"),
        ({"defense": True, "attack": {"epochs": 2}}, "defense"),
        ({"attack": {"epochs": 2, "options": 3}}, "attack.options must be a mapping"),
    ],
)
def test_a_malformed_section_is_one_line(data: dict, needle: str) -> None:
    with pytest.raises(FlwbcError) as ei:
        make_config(data)
    assert needle in str(ei.value) and "\n" not in str(ei.value)


def test_the_default_attack_is_the_one_whose_fields_moved() -> None:
    assert AttackConfig.model_fields["name"].default == TARGETED


def test_old_dotted_overrides_and_flags_reach_the_options() -> None:
    cfg = make_config(**{"defense.client": "wbc", "defense.wbc.s": 0.7, "defense.ldp.sigma": 0.2})
    assert cfg.defense.options == {"wbc": {"s": 0.7}, "ldp": {"sigma": 0.2}}
    args = build_parser().parse_args(["run", "--client-defense", "wbc", "--wbc-s", "0.5"])
    assert config_from_args(args).defense.options == {"wbc": {"s": 0.5}}
    args = build_parser().parse_args(["run", "--set", "defense.wbc.hessian=gradient"])
    assert config_from_args(args).defense.options == {"wbc": {"hessian": "gradient"}}


def test_options_of_a_defense_outside_the_chain_are_still_checked() -> None:
    with pytest.raises(FlwbcError, match=r"client defense 'wbc': option s = -1"):
        check_plugin_options(make_config(**{"defense.wbc.s": -1}))


# Keys of configs in the old data layout (the built-in partitions' options as fields of the data
# section), computed by flwbc before they moved (commit d6a4359).
OLD_DATA_KEYS = [
    ({"data": {"partition": "dirichlet", "dirichlet_alpha": 0.1}}, "f8f589ac2e0f", "ccfe6f227889"),
    ({"data": {"partition": "dirichlet", "dirichlet_alpha": 0.5}}, "3c19778a0b2c", "e827217b189b"),
    ({"data": {"partition": "iid", "dirichlet_alpha": 0.3}}, "ab40e5c93493", "5a2ddfa65f12"),
    (
        {"data": {"partition": "shards", "num_shards": 40, "shards_per_client": 2}},
        "594a42675f3d",
        "53b4f723123d",
    ),
    (
        {
            "data": {
                "partition": "dirichlet",
                "dirichlet_alpha": 0.2,
                "partition_options": {"min_size": 5},
            }
        },
        "058f966a6c27",
        "cf208891cb4a",
    ),
]


@pytest.mark.parametrize(("old", "key", "child"), OLD_DATA_KEYS)
def test_the_data_layouts_keep_their_keys(old, key, child) -> None:
    assert run_key(old, None) == key and run_key(old, "abc") == child
    d = old["data"]
    moved = {"dirichlet_alpha": "alpha", "num_shards": "num_shards"}
    moved["shards_per_client"] = "shards_per_client"
    if d["partition"] != "iid":  # the new layout is the same experiment: the same key
        opts = {moved[k]: v for k, v in d.items() if k in moved}
        new_data = {k: v for k, v in d.items() if k not in moved}
        new_data["partition_options"] = {**d.get("partition_options", {}), **opts}
        assert run_key({"data": new_data}, None) == key


def test_the_partitions_fields_move_into_their_options() -> None:
    cfg = make_config({"data": {"partition": "dirichlet", "dirichlet_alpha": 0.1}})
    assert cfg.data.partition_options == {"alpha": 0.1}
    cfg = make_config({"data": {"partition": "shards", "num_shards": 40}})
    assert cfg.data.partition_options == {"num_shards": 40}
    # a partition that never read the field: dropped
    assert make_config({"data": {"dirichlet_alpha": 0.3}}).data.partition_options == {}
    with pytest.raises(Exception, match="data.dirichlet_alpha and data.partition_options.alpha"):
        make_config(
            {
                "data": {
                    "partition": "dirichlet",
                    "dirichlet_alpha": 0.1,
                    "partition_options": {"alpha": 0.2},
                }
            }
        )
    args = build_parser().parse_args(
        ["run", "--data-partition", "dirichlet", "--data-dirichlet-alpha", "0.1"]
    )
    assert config_from_args(args).data.partition_options == {"alpha": 0.1}
