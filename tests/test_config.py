"""Experiment configuration: paper defaults, one-line errors naming the field, files."""

from __future__ import annotations

import json

import pytest

from flwbc.attacks.targeted import TargetedOptions
from flwbc.client.wbc import WBCOptions
from flwbc.config import ExperimentConfig, load_config_file, make_config
from flwbc.errors import FlwbcError
from flwbc.experiment import check_plugin_options


def test_defaults_are_paper_values():
    cfg = make_config()
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.federation.num_clients == 100
    assert cfg.federation.clients_per_round == 10
    assert cfg.local.lr == 0.01
    assert cfg.local.momentum == 0.5
    assert (cfg.local.epochs, cfg.local.batch_size) == (10, 10)  # reproduction default
    assert cfg.attack.prob == 0.1
    assert cfg.attack.num_malicious == 5
    assert cfg.attack.options == {}
    assert TargetedOptions().epochs == 10 and TargetedOptions().alpha == 0.0
    assert cfg.attack.num_images == 1
    assert cfg.defense.options == {} and WBCOptions().s == 0.4
    assert cfg.data.name == "fmnist" and cfg.model_name == "fmnist_cnn"
    assert make_config({"data": {"name": "cifar10"}}).model_name == "cifar_cnn"


def _error(data=None, **overrides) -> str:
    with pytest.raises(FlwbcError) as ei:
        make_config(data, **overrides)
    msg = str(ei.value)
    assert "\n" not in msg.strip(), msg
    return msg


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"local.lr": -0.1}, "local.lr"),
        ({"local.lr": 0}, "local.lr"),
        ({"local.momentum": 1}, "local.momentum"),
        ({"local.batch_size": 0}, "local.batch_size"),
        ({"attack.num_malicious": 11}, "attack.num_malicious"),
        ({"attack.rounds": [0, 3]}, "attack.rounds"),
        ({"attack.rounds": [51]}, "attack.rounds"),
        ({"federation.rounds": 5, "attack.rounds": [6]}, "attack.rounds"),
        ({"local.foo": 1}, "local.foo"),
        ({"data.name": "svhn"}, "data.name"),
        ({"defense.client": "krum"}, "defense.client"),
        ({"attack.prob": 1.5}, "attack.prob"),
        ({"federation.clients_per_round": 101}, "federation.clients_per_round"),
    ],
)
def test_invalid_values_name_the_field(overrides, field):
    assert field in _error(**overrides)


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ({"defense.wbc.noise": "gauss"}, "client defense 'wbc': option noise = 'gauss'"),
        ({"defense.wbc.s": -1}, "client defense 'wbc': option s = -1"),
        ({"defense.wbc.ss": 0.4}, "client defense 'wbc' has no option ss"),
    ],
)
def test_invalid_client_defense_options_name_the_option(overrides, needle):
    """A client defense's options are checked where the experiment is built (the config knows
    no plug-in), in one line naming the defense and the option, with a guess for a typo."""
    with pytest.raises(FlwbcError) as ei:
        check_plugin_options(make_config(**overrides))
    assert needle in str(ei.value) and "\n" not in str(ei.value)
    if "defense.wbc.ss" in overrides:
        assert "(did you mean 's'?)" in str(ei.value)


def test_valid_edge_values():
    cfg = make_config(
        **{"attack.rounds": [1, 50], "local.momentum": 0.0, "attack.num_malicious": 10}
    )
    assert cfg.attack.rounds == [1, 50]
    cfg = make_config(**{"attack.enabled": False, "attack.num_malicious": 50})
    assert cfg.attack.num_malicious == 50


def test_override_and_nested_dict():
    cfg = make_config(**{"attack.num_images": 10})
    assert cfg.attack.num_images == 10
    cfg = make_config({"attack": {"num_images": 3, "alpha": 0.5}}, **{"attack.num_images": 10})
    assert cfg.attack.num_images == 10 and cfg.attack.options["alpha"] == 0.5
    data = {"local": {"lr": 0.1}}
    make_config(data, **{"local.lr": 0.2})
    assert data == {"local": {"lr": 0.1}}  # the caller's dict is not modified


def test_override_into_non_section():
    msg = _error(**{"seed.x": 1})
    assert "seed" in msg


def test_round_trip_to_dict():
    cfg = make_config(**{"defense.client": "wbc", "attack.rounds": [3]})
    assert make_config(cfg.to_dict()) == cfg
    json.dumps(cfg.to_dict())


def test_load_yaml_and_json(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("local:\n  lr: 0.05\nattack:\n  num_images: 10\n")
    data = load_config_file(y)
    assert data == {"local": {"lr": 0.05}, "attack": {"num_images": 10}}
    assert make_config(data).local.lr == 0.05
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"federation": {"rounds": 7}}))
    assert make_config(load_config_file(j)).federation.rounds == 7
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config_file(empty) == {}


def test_load_config_errors(tmp_path):
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(FlwbcError, match="mapping"):
        load_config_file(lst)
    with pytest.raises(FlwbcError, match="not found"):
        load_config_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\nb: {\n")
    with pytest.raises(FlwbcError) as ei:
        load_config_file(bad)
    assert "\n" not in str(ei.value)
    badj = tmp_path / "bad.json"
    badj.write_text("{")
    with pytest.raises(FlwbcError):
        load_config_file(badj)


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        (
            "broken.yaml",
            "federation: {rounds: 3\nlocal: {epochs: 1}\n",
            "line 2, column 6: expected ',' or '}', but got ':' (while parsing a flow mapping "
            "from line 1, column 13)",
        ),
        (
            "indent.yaml",
            "seed: 1\n  local: 2\n",
            "line 2, column 8: mapping values are not allowed here",
        ),
        (
            "broken.json",
            '{\n  "seed": 1,\n}',
            "line 3, column 1: Expecting property name enclosed in double quotes",
        ),
    ],
)
def test_unparsable_config_file_names_line_and_column(tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(FlwbcError) as ei:
        load_config_file(path)
    assert str(ei.value) == f"cannot parse config file {path}: {where}"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"federation": {"round": 3}}, "'federation.round' (did you mean 'federation.rounds'?)"),
        ({"federaton": {"rounds": 3}}, "'federaton' (did you mean 'federation'?)"),
        (
            {"server": {"pre": [{"name": "clip", "option": {}}]}},
            "'server.pre.0.option' (did you mean 'server.pre.0.options'?)",
        ),
        ({"local": {"nope": 1}}, "'local.nope'"),  # nothing close: no guess
    ],
)
def test_unknown_field_suggests_the_closest_names(data, message):
    with pytest.raises(FlwbcError) as ei:
        make_config(data)
    assert str(ei.value) == f"invalid config: unknown field {message}"
