"""The shim between the old config layout (FL-WBC's and local DP's own sections, `defense.wbc`
and `defense.ldp`) and the new one (`defense.options.<name>`, as every client defense)."""

from __future__ import annotations

import copy

import pytest

from flwbc.cli import build_parser
from flwbc.cli.common import config_from_args
from flwbc.config import make_config
from flwbc.errors import FlwbcError
from flwbc.experiment import check_plugin_options
from flwbc.experiments.specs import run_key, run_label
from flwbc.legacy import upgrade

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


def test_upgrade_moves_the_sections_and_the_new_place_wins() -> None:
    old = {
        "defense": {
            "client": "wbc",
            "wbc": {"s": 0.2, "noise": "scale"},
            "options": {"wbc": {"s": 0.3}},
        }
    }
    before = copy.deepcopy(old)
    assert upgrade(old) == {
        "defense": {"client": "wbc", "options": {"wbc": {"s": 0.3, "noise": "scale"}}}
    }
    assert old == before  # the input is left as it was
    plain = {"local": {"lr": 0.1}}
    assert upgrade(plain) is plain
    assert make_config({"defense": {"wbc": None}}).defense.options == {}


def test_a_non_mapping_section_is_one_line() -> None:
    with pytest.raises(FlwbcError, match=r"defense\.wbc must be a mapping of options"):
        make_config({"defense": {"wbc": 0.4}})


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
