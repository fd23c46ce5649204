"""Experiment specs: bundled specs expand into the grid their YAML describes, shared warm-ups,
run identity, config merging and `$var` substitution, and one-line errors for bad specs."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from flwbc.config import make_config
from flwbc.errors import FlwbcError
from flwbc.experiments import specs as specs_mod
from flwbc.experiments.specs import (
    RESULTS,
    RunSpec,
    deep_merge,
    expand,
    load_settings,
    load_spec,
    run_key,
    substitute,
)
from flwbc.legacy import upgrade

SPEC_FILES = Path(specs_mod.__file__).parent / "specs"

# ---------------------------------------------------------------------------------------------
# Independent references, written from the YAML files and the documented semantics
# ---------------------------------------------------------------------------------------------


def raw_yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load((SPEC_FILES / f"{name}.yaml").read_text())


RAW_SETTINGS = raw_yaml("settings")


def leaves(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every leaf of a nested dict (lists are leaves), keyed by its path."""
    out: dict[tuple[str, ...], Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(leaves(v, (*prefix, k)))
        else:
            out[(*prefix, k)] = v
    return out


def overlay(*trees: dict[str, Any]) -> dict[tuple[str, ...], Any]:
    """Leaf-wise "later wins" merge of several trees (a reference for deep_merge), each read in
    the config's current layout (`flwbc.legacy.upgrade`: the paper's attack fields that
    settings.yaml gives as the attack section's are its options)."""
    out: dict[tuple[str, ...], Any] = {}
    for t in trees:
        out.update(leaves(upgrade(t)))
    return out


def subst(tree: Any, variables: dict[str, Any]) -> Any:
    if isinstance(tree, dict):
        return {k: subst(v, variables) for k, v in tree.items()}
    if isinstance(tree, list):
        return [subst(v, variables) for v in tree]
    if isinstance(tree, str) and tree.startswith("$"):
        return variables[tree[1:]]
    return tree


def at(tree: dict[str, Any], path: tuple[str, ...]) -> Any:
    for k in path:
        tree = tree[k]
    return tree


def strings(tree: Any) -> list[str]:
    if isinstance(tree, dict):
        return [s for v in tree.values() for s in strings(v)]
    if isinstance(tree, list):
        return [s for v in tree for s in strings(v)]
    return [tree] if isinstance(tree, str) else []


def expected_grid(raw: dict[str, Any], quick: bool):
    """(settings, seeds, {axis: [point names]}) that the raw spec describes."""
    q = raw.get("quick", {})
    settings = (q.get("settings") or raw["settings"]) if quick else raw["settings"]
    seeds = q.get("seeds", [0]) if quick else raw["seeds"]
    axes = {}
    for ax, pts in raw["axes"].items():
        names = list(pts)
        if quick and ax in q.get("points", {}):
            names = [p for p in names if p in q["points"][ax]]
        axes[ax] = names
    return settings, seeds, axes


def one_line(err: pytest.ExceptionInfo[FlwbcError]) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------------------------------------
# Bundled specs
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def settings():
    return load_settings()


@pytest.fixture(scope="module")
def expanded(settings) -> dict[tuple[str, bool], list[RunSpec]]:
    return {
        (name, quick): expand(load_spec(name, settings), settings, quick=quick)
        for name in RESULTS
        for quick in (False, True)
    }


def test_results_are_the_bundled_yaml_files():
    on_disk = {p.stem for p in SPEC_FILES.glob("*.yaml")} - {"settings"}
    assert set(RESULTS) == on_disk
    for name in RESULTS:
        assert raw_yaml(name)["id"] == name


@pytest.mark.parametrize("quick", [False, True], ids=["full", "quick"])
@pytest.mark.parametrize("name", RESULTS)
def test_bundled_spec_expands_to_its_grid(name, quick, expanded):
    raw = raw_yaml(name)
    runs = expanded[(name, quick)]
    exp_settings, exp_seeds, exp_axes = expected_grid(raw, quick)
    warm = [r for r in runs if r.role == "warmup"]
    branches = [r for r in runs if r.role == "branch"]
    assert len(warm) + len(branches) == len(runs)

    # counts: settings × Π|axis| × seeds branches, one warm-up per (setting, seed)
    n_points = math.prod(len(p) for p in exp_axes.values())
    assert len(branches) == len(exp_settings) * n_points * len(exp_seeds)
    assert len(warm) == len(exp_settings) * len(exp_seeds)
    grid = {
        (s, seed, combo) for s in exp_settings for seed in exp_seeds for combo in _product(exp_axes)
    }
    got = {
        (r.coords["setting"], r.coords["seed"], tuple(r.coords[ax] for ax in exp_axes))
        for r in branches
    }
    assert got == grid
    assert {(r.coords["setting"], r.coords["seed"]) for r in warm} == {
        (s, seed) for s in exp_settings for seed in exp_seeds
    }

    # identities and directory names
    assert len({r.key for r in runs}) == len(runs)
    assert len({r.dir_name() for r in runs}) == len(runs)
    for r in runs:
        assert re.fullmatch(r"[A-Za-z0-9._=-]+", r.dir_name()), r.dir_name()
        assert not any(s.startswith("$") for s in strings(r.config)), r.label

    q = raw.get("quick", {})
    q_global = RAW_SETTINGS.get("quick", {})
    warm_by = {(r.coords["setting"], r.coords["seed"]): r for r in warm}
    for r in warm:
        setting = RAW_SETTINGS["settings"][r.coords["setting"]]
        cfg = make_config(r.config).to_dict()
        rounds = q_global.get("warmup_rounds", 3) if quick else setting["warmup_rounds"]
        assert r.rounds == cfg["federation"]["rounds"] == rounds
        assert r.parent is None
        assert cfg["seed"] == r.coords["seed"]
        assert cfg["attack"]["prob"] == 0.0 and cfg["attack"]["rounds"] is None  # no attack
        inherited = overlay(
            RAW_SETTINGS.get("common", {}),
            setting.get("config", {}),
            raw.get("base", {}),
            q_global.get("config", {}) if quick else {},
            RAW_SETTINGS.get("warmup_config", {}),
        )
        for path, value in inherited.items():
            if path in (("attack", "rounds"), ("attack", "prob")):
                continue
            assert at(cfg, path) == subst(value, setting.get("vars", {})), (r.label, path)

    branch_rounds = q.get("branch_rounds", 4) if quick else raw["branch"]["rounds"]
    for r in branches:
        sname, seed = r.coords["setting"], r.coords["seed"]
        setting = RAW_SETTINGS["settings"][sname]
        variables = setting.get("vars", {})
        cfg = make_config(r.config).to_dict()
        assert r.rounds == cfg["federation"]["rounds"] == branch_rounds
        assert cfg["seed"] == seed
        # each branch starts from the warm-up of its own setting and seed
        parent = warm_by[(sname, seed)]
        assert r.parent == parent.key
        pcfg = make_config(parent.config).to_dict()
        assert cfg["data"] == pcfg["data"] and cfg["model"] == pcfg["model"]
        assert cfg["local"] == pcfg["local"]
        for k in ("num_clients", "clients_per_round"):
            assert cfg["federation"][k] == pcfg["federation"][k]
        # the config: settings, spec base, branch, quick overrides, then the points
        expected = overlay(
            RAW_SETTINGS.get("common", {}),
            setting.get("config", {}),
            raw.get("base", {}),
            q_global.get("config", {}) if quick else {},
            raw["branch"].get("config", {}),
            {"attack": {"rounds": q.get("attack_rounds", [1])}} if quick else {},
            *(raw["axes"][ax][r.coords[ax]] for ax in exp_axes),
        )
        for path, value in expected.items():
            assert at(cfg, path) == subst(value, variables), (r.label, path)
        assert cfg["attack"]["rounds"] is not None


def _product(axes: dict[str, list[str]]) -> list[tuple[str, ...]]:
    combos: list[tuple[str, ...]] = [()]
    for names in axes.values():
        combos = [(*c, n) for c in combos for n in names]
    return combos


def test_explicit_seeds_replace_the_specs(settings):
    spec = load_spec("fig6", settings)
    runs = expand(spec, settings, seeds=[7, 11])
    assert {r.coords["seed"] for r in runs} == {7, 11}
    assert {make_config(r.config).seed for r in runs} == {7, 11}
    n_settings = len(raw_yaml("fig6")["settings"])
    assert sum(r.role == "warmup" for r in runs) == n_settings * 2


def test_data_dir_goes_into_every_config(settings, tmp_path):
    runs = expand(load_spec("fig3", settings), settings, quick=True, data_dir=str(tmp_path))
    assert all(make_config(r.config).data.dir == str(tmp_path) for r in runs)


# ---------------------------------------------------------------------------------------------
# deep_merge and $var substitution
# ---------------------------------------------------------------------------------------------


def test_deep_merge_nested_override_lists_replaced_inputs_untouched():
    a = {"x": 1, "s": {"p": 1, "q": {"r": 2, "t": [1, 2, 3]}}, "keep": [1, {"z": 1}]}
    b = {"s": {"q": {"r": 5, "t": [9]}, "new": 3}, "y": 2}
    c = {"s": {"p": "c"}, "x": {"now": "a dict"}}
    a0, b0, c0 = copy.deepcopy(a), copy.deepcopy(b), copy.deepcopy(c)
    out = deep_merge(a, b, c)
    assert out == {
        "x": {"now": "a dict"},
        "s": {"p": "c", "q": {"r": 5, "t": [9]}, "new": 3},
        "keep": [1, {"z": 1}],
        "y": 2,
    }
    assert (a, b, c) == (a0, b0, c0)
    # the result shares nothing with the inputs
    out["keep"][1]["z"] = 99
    out["s"]["q"]["t"].append(0)
    out["x"]["now"] = "changed"
    assert (a, b, c) == (a0, b0, c0)
    # a later scalar replaces a whole section, a later section replaces a scalar
    assert deep_merge({"s": {"p": 1}}, {"s": None}) == {"s": None}
    assert deep_merge({"s": 3}, {"s": {"p": 1}}) == {"s": {"p": 1}}
    assert deep_merge() == {}
    assert deep_merge(a) == a and deep_merge(a) is not a


def test_deep_merge_matches_leafwise_reference():
    trees = [
        {"a": {"b": {"c": 1, "d": [1]}, "e": 2}, "f": 3},
        {"a": {"b": {"d": [2, 3]}, "g": 4}},
        {"a": {"b": {"c": 7}}, "h": {"i": 1}},
    ]
    assert leaves(deep_merge(*trees)) == overlay(*trees)


def test_substitute_replaces_vars_everywhere():
    tree = {"a": "$clip", "b": ["$clip", {"c": "$k"}], "d": "no$var", "e": 3}
    out = substitute(tree, {"clip": 5, "k": "v"}, "here")
    assert out == {"a": 5, "b": [5, {"c": "v"}], "d": "no$var", "e": 3}
    assert tree["a"] == "$clip"


def test_unknown_var_is_a_one_line_error():
    with pytest.raises(FlwbcError) as ei:
        substitute({"a": [{"b": "$nope"}]}, {"dp_clip": 5}, "spec x")
    msg = one_line(ei)
    assert "$nope" in msg and "dp_clip" in msg and "spec x" in msg


def test_dp_clip_follows_the_dataset(expanded):
    paper_clip = {"fmnist": 5, "cifar10": 10}  # paper §7.1
    seen = set()
    for quick in (False, True):
        for r in expanded[("fig4", quick)]:
            if r.role != "branch":
                continue
            cfg = make_config(r.config)
            point = r.coords["defense"]
            var = RAW_SETTINGS["settings"][r.coords["setting"]]["vars"]["dp_clip"]
            if point.startswith("CDP"):
                assert cfg.server.aggregator == "cdp"
                clip = cfg.server.options["clip"]
            elif point.startswith("LDP"):
                assert cfg.defense.client == "ldp"
                clip = cfg.defense.options["ldp"]["clip"]
            else:
                assert "clip" not in cfg.server.options
                continue
            assert clip == var == paper_clip[cfg.data.name], r.label
            seen.add((cfg.data.name, point[:3]))
    assert seen == {(d, k) for d in paper_clip for k in ("CDP", "LDP")}


def write_spec(tmp_path: Path, spec: dict[str, Any], name: str = "spec.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    return str(path)


def minimal_spec(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "id": "mini",
        "title": "mini",
        "settings": ["fmnist-iid", "cifar-iid"],
        "seeds": [0],
        "base": {"attack": {"num_images": 1}},
        "branch": {"rounds": 5, "config": {"attack": {"rounds": [1]}}},
        "axes": {
            "defense": {
                "none": {},
                "CDP": {"server": {"aggregator": "cdp", "options": {"clip": "$dp_clip"}}},
            }
        },
        "claims": [{"text": "t", "where": {"defense": "none"}, "check": {"kind": "cost_at_most"}}],
    }
    spec.update(over)
    return spec


def test_unknown_var_in_a_spec_fails_at_expand(settings, tmp_path):
    spec = minimal_spec()
    spec["axes"]["defense"]["CDP"]["server"]["options"]["clip"] = "$no_such_var"
    loaded = load_spec(write_spec(tmp_path, spec), settings)
    with pytest.raises(FlwbcError) as ei:
        expand(loaded, settings)
    assert "$no_such_var" in one_line(ei)
    # the same spec with the setting's variable expands, per setting
    runs = expand(load_spec(write_spec(tmp_path, minimal_spec(), "ok.yaml"), settings), settings)
    clips = {
        r.coords["setting"]: make_config(r.config).server.options["clip"]
        for r in runs
        if r.coords.get("defense") == "CDP"
    }
    assert clips == {"fmnist-iid": 5, "cifar-iid": 10}


# ---------------------------------------------------------------------------------------------
# Run identity
# ---------------------------------------------------------------------------------------------

BASE_CFG: dict[str, Any] = {
    "seed": 1,
    "model": "mlp",
    "data": {"name": "fmnist", "train_fraction": 0.1},
    "federation": {"num_clients": 20, "clients_per_round": 4, "rounds": 3},
    "attack": {"num_malicious": 2, "rounds": [1]},
    "defense": {"client": "wbc", "wbc": {"s": 0.4}},
    "output": {"dir": "runs-a", "name": "a"},
}


def test_run_key_identity():
    k = run_key(BASE_CFG, None)
    assert re.fullmatch(r"[0-9a-f]+", k)
    assert run_key(copy.deepcopy(BASE_CFG), None) == k
    # key order and spelled-out defaults do not matter: the key hashes the validated config
    reordered = dict(reversed(list(copy.deepcopy(BASE_CFG).items())))
    assert run_key(reordered, None) == k
    assert run_key(deep_merge(BASE_CFG, {"local": {"lr": 0.01}, "engine": "batched"}), None) == k
    # where the run is written and how many threads it uses do not change it
    same = [
        {"output": {"dir": "elsewhere", "name": "b", "checkpoint_every": 3}},
        {"threads": 1},
        {"threads": 2, "output": {"name": None}},
        {"data": {"dir": "/somewhere/data"}},
    ]
    for over in same:
        assert run_key(deep_merge(BASE_CFG, over), None) == k, over
    # what changes the results changes it
    different = [
        {"seed": 2},
        {"defense": {"wbc": {"s": 0.2}}},
        {"defense": {"client": "ldp"}},
        {"server": {"aggregator": "median"}},
        {"attack": {"rounds": [2]}},
        {"federation": {"rounds": 4}},
    ]
    keys = {k}
    for over in different:
        other = run_key(deep_merge(BASE_CFG, over), None)
        assert other != k, over
        keys.add(other)
    assert len(keys) == len(different) + 1
    # and so does the run it starts from
    assert run_key(BASE_CFG, "abc") != k
    assert run_key(BASE_CFG, "abc") != run_key(BASE_CFG, "abd")
    assert run_key(BASE_CFG, "abc") == run_key(copy.deepcopy(BASE_CFG), "abc")
    # an init_model in the config is replaced by the parent
    assert run_key(deep_merge(BASE_CFG, {"init_model": "/some/file"}), "abc") == run_key(
        BASE_CFG, "abc"
    )


def test_run_key_rejects_invalid_configs():
    with pytest.raises(FlwbcError) as ei:
        run_key(deep_merge(BASE_CFG, {"attack": {"num_malicious": 50}}), None)
    one_line(ei)


def _warmups(runs: list[RunSpec]) -> dict[tuple[str, int], str]:
    return {(r.coords["setting"], r.coords["seed"]): r.key for r in runs if r.role == "warmup"}


@pytest.mark.parametrize("quick", [False, True], ids=["full", "quick"])
def test_specs_share_warmups(expanded, quick):
    w = {name: _warmups(expanded[(name, quick)]) for name in RESULTS}
    # Figs. 3, 4 and 6: one image in D_M, same settings: the same warm-ups
    assert w["fig3"] and w["fig3"] == w["fig4"] == w["fig6"]
    # Fig. 5 and Table 1 (ten images) share theirs, which differ from Fig. 3's
    assert w["fig5"] == w["table1"]
    assert set(w["fig5"]) == set(w["fig3"])
    assert all(w["fig5"][ss] != w["fig3"][ss] for ss in w["fig3"])
    assert not set(w["fig5"].values()) & set(w["fig3"].values())
    # in general: two warm-ups are one run exactly when their configs are the same
    ref = {}
    for name in RESULTS:
        raw = raw_yaml(name)
        for (sname, seed), key in w[name].items():
            ref.setdefault(_reference_warmup(raw, sname, seed, quick), set()).add(key)
    assert all(len(keys) == 1 for keys in ref.values())
    assert len({k for keys in ref.values() for k in keys}) == len(ref)
    if not quick:  # Fig. 2's setting (E=1, B=32) is its own; in quick mode all use E=1, B=32
        assert not set(w["fig2"].values()) & (set(w["fig3"].values()) | set(w["fig5"].values()))


def _reference_warmup(raw: dict[str, Any], sname: str, seed: int, quick: bool) -> str:
    """A warm-up's validated config, built from the raw YAML, as a canonical string."""
    setting = RAW_SETTINGS["settings"][sname]
    flat = overlay(
        RAW_SETTINGS.get("common", {}),
        setting.get("config", {}),
        raw.get("base", {}),
        RAW_SETTINGS["quick"].get("config", {}) if quick else {},
        RAW_SETTINGS.get("warmup_config", {}),
        {
            "seed": seed,
            "attack": {"prob": 0.0, "rounds": None},
            "federation": {
                "rounds": RAW_SETTINGS["quick"]["warmup_rounds"]
                if quick
                else setting["warmup_rounds"]
            },
        },
    )
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = subst(value, setting.get("vars", {}))
    return json.dumps(make_config(tree).to_dict(), sort_keys=True)


@pytest.mark.parametrize("quick", [False, True], ids=["full", "quick"])
def test_fig6_cma_branches_are_fig3s(expanded, quick):
    def cma(name: str, point: str) -> dict[tuple[str, int], str]:
        return {
            (r.coords["setting"], r.coords["seed"]): r.key
            for r in expanded[(name, quick)]
            if r.coords.get("defense") == point
        }

    assert cma("fig3", "CMA") and cma("fig3", "CMA") == cma("fig6", "CMA")
    assert not set(cma("fig6", "CMA + FL-WBC").values()) & set(cma("fig3", "CMA").values())


# ---------------------------------------------------------------------------------------------
# Quick mode
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RESULTS)
def test_quick_mode_is_a_small_version(name, expanded):
    raw = raw_yaml(name)
    q = raw.get("quick", {})
    full, quick = expanded[(name, False)], expanded[(name, True)]
    assert len(quick) < len(full)
    full_warm = {r.coords["setting"]: r.rounds for r in full if r.role == "warmup"}
    quick_b = [r for r in quick if r.role == "branch"]
    full_b = [r for r in full if r.role == "branch"]
    # fewer rounds, everywhere
    for r in quick:
        if r.role == "warmup":
            assert r.rounds == RAW_SETTINGS["quick"]["warmup_rounds"]
            assert r.rounds < full_warm[r.coords["setting"]]
        else:
            assert r.rounds == q.get("branch_rounds", 4) < raw["branch"]["rounds"]
    # only the quick settings, seeds and points
    assert {r.coords["setting"] for r in quick} == set(q.get("settings") or raw["settings"])
    assert {r.coords["seed"] for r in quick} == set(q.get("seeds", [0]))
    for ax, pts in q.get("points", {}).items():
        assert {r.coords[ax] for r in quick_b} == set(pts)
        assert {r.coords[ax] for r in full_b} == set(raw["axes"][ax])
    # attack rounds from the quick section, local training from settings' quick config
    for r in quick_b:
        cfg = make_config(r.config)
        assert cfg.attack.rounds == q.get("attack_rounds", [1])
        for path, value in leaves(upgrade(RAW_SETTINGS["quick"].get("config", {}))).items():
            assert at(cfg.to_dict(), path) == value
    for r in full_b:
        assert make_config(r.config).attack.rounds == raw["branch"]["config"]["attack"]["rounds"]


# ---------------------------------------------------------------------------------------------
# Validation: one-line errors before anything runs
# ---------------------------------------------------------------------------------------------


def _claim_unknown_axis(s):
    s["claims"][0]["where"] = {"defence": "none"}


def _plot_unknown_axis(s):
    s["plot"] = {"kind": "curves", "series": "rule"}


def _table_unknown_axis(s):
    s["table"] = {"rows": "rule"}


def _unknown_setting(s):
    s["settings"] = ["fmnist-iid", "mnist-iid"]


def _unknown_quick_setting(s):
    s["quick"] = {"settings": ["nope"]}


def _unknown_field(s):
    s["rounds"] = 3


def _unknown_branch_field(s):
    s["branch"]["round"] = 3


def _reserved_axis(s):
    s["axes"]["seed"] = {"a": {}}


def _empty_axis(s):
    s["axes"]["defense"] = {}


def _unknown_quick_point(s):
    s["quick"] = {"points": {"defense": ["none", "FL-WBC"]}}


def _unknown_check(s):
    s["claims"][0]["check"] = {"kind": "looks_good"}


def _no_seeds(s):
    s["seeds"] = []


@pytest.mark.parametrize(
    "mutate",
    [
        _claim_unknown_axis,
        _plot_unknown_axis,
        _table_unknown_axis,
        _unknown_setting,
        _unknown_quick_setting,
        _unknown_field,
        _unknown_branch_field,
        _reserved_axis,
        _empty_axis,
        _unknown_quick_point,
        _unknown_check,
        _no_seeds,
    ],
)
def test_invalid_spec_is_a_one_line_error(mutate, settings, tmp_path):
    good = minimal_spec()
    assert load_spec(write_spec(tmp_path, good, "good.yaml"), settings).id == "mini"
    bad = copy.deepcopy(good)
    mutate(bad)
    with pytest.raises(FlwbcError) as ei:
        load_spec(write_spec(tmp_path, bad), settings)
    one_line(ei)


@pytest.mark.parametrize(
    "text",
    [
        "id: mini\ntitle: [unclosed\n",
        "id: mini\n  title: bad indent\n\tx: 1\n",
        "- a\n- list\n",
        "just a string\n",
        "",
    ],
    ids=["unclosed", "indent", "list", "scalar", "empty"],
)
def test_unparsable_spec_is_a_one_line_error(text, settings, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(FlwbcError) as ei:
        load_spec(str(path), settings)
    one_line(ei)


def test_missing_or_unnamed_spec_is_a_one_line_error(settings, tmp_path):
    with pytest.raises(FlwbcError) as ei:
        load_spec(str(tmp_path / "absent.yaml"), settings)
    one_line(ei)
    with pytest.raises(FlwbcError) as ei:
        load_spec("fig7", settings)
    assert "fig3" in one_line(ei)


def test_invalid_point_config_fails_at_expand(settings, tmp_path):
    spec = minimal_spec()
    spec["axes"]["defense"]["many"] = {"attack": {"num_malicious": 50}}
    loaded = load_spec(write_spec(tmp_path, spec), settings)
    with pytest.raises(FlwbcError) as ei:
        expand(loaded, settings)
    assert "num_malicious" in one_line(ei)


def test_invalid_settings_file_is_a_one_line_error(tmp_path):
    good = {"settings": {"a": {"title": "A", "warmup_rounds": 2}}}
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(good))
    assert list(load_settings(path).settings) == ["a"]
    for bad in (
        {**good, "comon": {}},
        {"settings": {"a": {"title": "A", "warmup_rounds": 0}}},
        {"settings": {"a": {"title": "A", "warmup_rounds": 2, "var": {}}}},
    ):
        path.write_text(yaml.safe_dump(bad))
        with pytest.raises(FlwbcError) as ei:
            load_settings(path)
        one_line(ei)
    path.write_text("settings: {a: [\n")
    with pytest.raises(FlwbcError) as ei:
        load_settings(path)
    one_line(ei)


@pytest.mark.parametrize("quick", [False, True], ids=["full", "quick"])
def test_a_shared_run_has_one_directory(expanded, quick):
    dirs: dict[str, set[str]] = {}
    for name in RESULTS:
        for r in expanded[(name, quick)]:
            dirs.setdefault(r.key, set()).add(r.dir_name())
    assert all(len(d) == 1 for d in dirs.values()), {k: d for k, d in dirs.items() if len(d) > 1}


def test_a_store_written_under_the_earlier_keys_is_still_found(settings, tmp_path):
    """Keys once depended on whether a data location was given; such stores stay usable."""
    from flwbc.experiments.sweep import run_dir

    plain = expand(load_spec("fig3", settings), settings, quick=True)
    given = expand(load_spec("fig3", settings), settings, quick=True, data_dir=str(tmp_path))
    assert [r.key for r in plain] == [r.key for r in given]
    assert [r.aliases for r in plain] == [r.aliases for r in given]
    for run in plain:
        assert run.aliases and run.aliases[0] != run.key
        old = tmp_path / f"{run.label}--{run.aliases[0]}"
        old.mkdir()
        assert run_dir(tmp_path, run) == old


def test_spec_file_errors_say_where_and_what_was_meant(settings, tmp_path):
    bad = minimal_spec(descripton="a typo")
    with pytest.raises(FlwbcError) as ei:
        load_spec(write_spec(tmp_path, bad, "typo.yaml"), settings)
    assert one_line(ei).endswith("unknown field 'descripton' (did you mean 'description'?)")
    path = tmp_path / "broken.yaml"
    path.write_text("id: mini\ntitle: [unclosed\n")
    with pytest.raises(FlwbcError) as ei:
        load_spec(str(path), settings)
    assert one_line(ei) == (
        f"cannot parse spec {path}: line 3, column 1: expected ',' or ']', but got "
        "'<stream end>' (while parsing a flow sequence from line 2, column 8)"
    )
