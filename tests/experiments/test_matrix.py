"""`flwbc matrix`: a tiny matrix end to end on real Fashion-MNIST, each cell checked against the
runs' own records read independently, rerun without redoing anything, and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from flwbc.cli import main
from flwbc.runio import read_jsonl

TINY = {
    "id": "tiny",
    "title": "tiny matrix",
    "settings": ["fmnist-iid-e1"],
    "seeds": [0],
    "base": {
        "data": {"train_fraction": 0.05},
        "federation": {"num_clients": 10, "clients_per_round": 5},
        "attack": {"num_malicious": 2, "source": "test"},
    },
    "branch": {"rounds": 4, "config": {"attack": {"rounds": [1, 2]}}},
    "axes": {
        "attack": {
            "none": {"attack": {"name": "honest"}},
            "sign flipping": {"attack": {"name": "sign_flip", "options": {"c": 3.0}}},
            "eq. 3": {"attack": {"name": "targeted"}},
        },
        "defense": {
            "FedAvg": {},
            "Krum": {"server": {"aggregator": "krum", "options": {"f": 1}}},
        },
    },
    "quick": {"branch_rounds": 4, "attack_rounds": [1, 2]},
}


def _argv(spec: Path, tmp: Path, data: Path, *extra: str) -> list[str]:
    return [
        "matrix",
        str(spec),
        "--quick",
        "--runs",
        str(tmp / "store"),
        "--out",
        str(tmp / "out"),
        "--data-dir",
        str(data),
        "--no-progress",
        "--jobs",
        "2",
        "--threads",
        "1",
        *extra,
    ]


def _branch(store: Path, attack: str, defense: str) -> list[dict]:
    for d in store.iterdir():
        req = d / "request.json"
        if req.exists():
            coords = json.loads(req.read_text())["coords"]
            if coords.get("attack") == attack and coords.get("defense") == defense:
                return read_jsonl(d / "rounds.jsonl")
    raise AssertionError(f"no run for {attack} x {defense}")


@pytest.mark.slow
def test_tiny_matrix_end_to_end(real_data_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    from flwbc.experiments import matrix

    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "out"
    # cells.csv is rewritten while runs finish, so an interrupted matrix leaves its table
    seen: list[int] = []
    real_csv = matrix.cells_csv

    def counting(cells: list) -> str:
        if not (out / "matrix.md").exists():
            seen.append(sum(c.kind is not None for c in cells))
        return real_csv(cells)

    monkeypatch.setattr(matrix, "TABLES_EVERY", 0.0)
    monkeypatch.setattr(matrix, "cells_csv", counting)
    assert main(_argv(spec, tmp_path, real_data_dir)) == 0
    assert seen and seen == sorted(seen) and seen[0] < 6
    for name in ("cells.csv", "matrix.md", "heatmap.png", "heatmap.svg"):
        assert (out / name).stat().st_size > 0
    rows = {(r["attack"], r["defense"]): r for r in csv.DictReader((out / "cells.csv").open())}
    assert len(rows) == 6
    store = tmp_path / "store"
    for defense in ("FedAvg", "Krum"):
        clean = _branch(store, "none", defense)
        flip = _branch(store, "sign flipping", defense)
        eq3 = _branch(store, "eq. 3", defense)
        assert [r["adversarial"] for r in flip] == [True, True, False, False]
        assert [r["adversarial"] for r in clean] == [True, True, False, False]
        # the same participants in every round: only the attack differs
        assert [r["clients"] for r in clean] == [r["clients"] for r in flip]
        assert clean[0]["malicious"] == flip[0]["malicious"] and len(flip[0]["malicious"]) == 2
        # untargeted: the clean run's accuracy minus the attacked one's, at round 2
        row = rows[("sign flipping", defense)]
        assert row["kind"] == "untargeted" and row["window_end"] == "2"
        want = clean[1]["test_acc"] - flip[1]["test_acc"]
        assert float(row["effect"]) == pytest.approx(want, abs=1e-12)
        assert float(row["final_effect"]) == pytest.approx(
            clean[3]["test_acc"] - flip[3]["test_acc"], abs=1e-12
        )
        drops = [clean[i]["test_acc"] - flip[i]["test_acc"] for i in (0, 1)]
        assert float(row["window_mean"]) == pytest.approx(sum(drops) / 2, abs=1e-12)
        # eq. 3: D_M's target probability at round 2; persistence by brute force
        row = rows[("eq. 3", defense)]
        assert row["kind"] == "targeted"
        assert float(row["effect"]) == pytest.approx(eq3[1]["target_conf"], abs=1e-12)
        want = (eq3[0]["target_conf"] + eq3[1]["target_conf"]) / 2
        assert float(row["window_mean"]) == pytest.approx(want, abs=1e-12)
        below = [i for i in (1, 2, 3) if eq3[i]["target_conf"] < 0.5]
        if below:
            assert int(row["persists"]) == below[0] - 1 and row["persists_censored"] == "False"
        else:
            assert int(row["persists"]) == 2 and row["persists_censored"] == "True"
        assert rows[("none", defense)]["kind"] == "clean"
        # detection over the window (rounds 1-2): Krum flags every row it does not select
        for attack, runs in (("none", clean), ("sign flipping", flip), ("eq. 3", eq3)):
            row = rows[(attack, defense)]
            if defense == "FedAvg":
                assert row["flag_tp"] == row["flag_fp"] == row["flag_fn"] == ""
                continue
            bad = [set(r["malicious"]) for r in runs[:2]]
            flagged = [set(r["detection"]["flagged"]) for r in runs[:2]]
            clients = [set(r["clients"]) for r in runs[:2]]
            kept = [len(c - f) for c, f in zip(clients, flagged, strict=True)]
            assert kept == [1, 1]  # Krum selects one update a round
            assert int(row["flag_tp"]) == sum(len(f & b) for f, b in zip(flagged, bad, strict=True))
            assert int(row["flag_fp"]) == sum(len(f - b) for f, b in zip(flagged, bad, strict=True))
            assert int(row["flag_fn"]) == sum(len(b - f) for f, b in zip(flagged, bad, strict=True))
    text = (out / "matrix.md").read_text()
    assert "| sign flipping | untargeted |" in text and "Cells finished: 6 of 6" in text
    krum = rows[("eq. 3", "Krum")]
    want = f"| eq. 3 | {krum['flag_tp']}/{krum['flag_fp']}/{krum['flag_fn']} |"
    assert "attacker rows flagged / benign rows flagged" in text and want in text
    # rerun: nothing is trained again, the outputs are the same
    before = (out / "cells.csv").read_text()
    mtimes = {p: p.stat().st_mtime_ns for p in store.rglob("rounds.jsonl")}
    capsys.readouterr()
    assert main(_argv(spec, tmp_path, real_data_dir)) == 0
    assert "0 failed" in capsys.readouterr().err
    assert (out / "cells.csv").read_text() == before
    assert {p: p.stat().st_mtime_ns for p in store.rglob("rounds.jsonl")} == mtimes
    # a store with fewer finished cells never replaces the table without --overwrite
    empty = tmp_path / "empty"
    argv = _argv(spec, tmp_path, real_data_dir, "--no-run")
    argv[argv.index(str(tmp_path / "store"))] = str(empty)
    assert main(argv) == 2
    assert "holds 6 finished cells" in capsys.readouterr().err
    assert (out / "cells.csv").read_text() == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"axes": {"attack": {"none": {}}}}, "exactly the axes attack and defense"),
        (
            {"axes": {"attack": {"x": {}}, "defense": {"FedAvg": {}}}},
            "needs a point 'none'",
        ),
    ],
)
def test_bad_matrix_specs_give_one_line(tmp_path: Path, capsys, change, message) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({**TINY, **change}))
    assert main(["matrix", str(spec), "--no-run", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_the_bundled_matrix_expands(real_data_dir: Path) -> None:
    from flwbc.experiments.matrix import matrix_spec
    from flwbc.experiments.specs import expand, load_settings

    spec = matrix_spec(None)
    runs = expand(spec, load_settings(), data_dir=str(real_data_dir))
    branches = [r for r in runs if r.role == "branch"]
    assert len(branches) == len(spec.axes["attack"]) * len(spec.axes["defense"])
    assert len({r.parent for r in branches}) == 1  # every cell from one warm model


def test_the_every_defense_matrix_reuses_every_run_of_the_first(real_data_dir: Path) -> None:
    from flwbc.experiments.matrix import bundled_matrices, matrix_spec
    from flwbc.experiments.specs import expand, load_settings

    assert bundled_matrices() == ["defenses", "matrix"]
    first = expand(matrix_spec("matrix"), load_settings(), data_dir=str(real_data_dir))
    every = expand(matrix_spec("defenses"), load_settings(), data_dir=str(real_data_dir))
    assert {r.key for r in first} < {r.key for r in every}
    spec = matrix_spec("defenses")
    assert len(every) == 1 + len(spec.axes["attack"]) * len(spec.axes["defense"])


def test_a_backdoors_baseline_is_its_trigger_on_the_clean_run(tmp_path: Path) -> None:
    """The clean run measures every backdoor's trigger (the `trigger` metric), and a backdoor's
    cell carries that baseline at the window's end and over the window."""
    from flwbc.experiments.matrix import _measure, matrix_runs, matrix_spec, with_baselines
    from flwbc.experiments.specs import RunSpec, expand, load_settings

    spec = matrix_spec("matrix")
    (metric,) = with_baselines(spec).axes["attack"]["none"]["eval"]["metrics"]
    assert metric["name"] == "trigger" and "eval" not in spec.axes["attack"]["none"]
    names = [a["name"] for a in metric["options"]["attacks"]]
    assert names == ["badnets", "dba", "model_replacement", "neurotoxin"]
    # the clean runs also answer to their keys from before, so existing stores are used
    runs = matrix_runs(spec, quick=True)
    before = {r.key for r in expand(spec, load_settings(), quick=True)}
    clean = [r for r in runs if r.coords.get("attack") == "none"]
    assert clean and all(r.key not in before and set(r.aliases) & before for r in clean)
    assert {r.key for r in runs if r.role == "branch" and r not in clean} <= before
    # two backdoors of one name with other options: loaded, without a baseline for them
    third = {"attack": {"name": "badnets", "options": {"target": 3}}}
    attacks = {**spec.axes["attack"], "BadNets 3": third}
    both = spec.model_copy(update={"axes": {**spec.axes, "attack": attacks}})
    (metric,) = with_baselines(both).axes["attack"]["none"]["eval"]["metrics"]
    assert [a["name"] for a in metric["options"]["attacks"]] == names[1:]
    recs = [
        {"round": t, "adversarial": t <= 2, "test_acc": 0.8, "backdoor_acc": s}
        for t, s in ((1, 0.3), (2, 0.6), (3, 0.2))
    ]
    clean = [
        {"round": t, "adversarial": t <= 2, "test_acc": 0.8, "backdoor_acc.badnets": b}
        for t, b in ((1, 0.02), (2, 0.04), (3, 0.01))
    ]
    run = RunSpec("k", "bad", {"attack": {"name": "badnets"}}, 3)
    cell = _measure("BadNets", "FedAvg", run, recs, tmp_path, clean)
    assert cell.kind == "backdoor" and cell.effect == 0.6
    assert cell.baseline == 0.04 and cell.baseline_mean == pytest.approx(0.03)


def test_an_unknown_matrix_name_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["matrix", "nope", "--no-run", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown matrix 'nope'; choose one of defenses, matrix" in err and err.count("\n") == 1


def test_a_wide_matrix_is_drawn_with_defenses_as_rows(tmp_path: Path, monkeypatch) -> None:
    """More defenses than attacks: the heatmap's rows are the defenses, each annotation on its
    own cell; the detection table lists only the rules that flag."""
    import matplotlib.pyplot as plt

    from flwbc.experiments.matrix import Cell, matrix_markdown, matrix_spec, plot_matrix

    wide = {
        **TINY,
        "axes": {
            "attack": {"none": {"attack": {"name": "honest"}}, "gauss": {}},
            "defense": {"A": {}, "B": {}, "C": {}},
        },
    }
    path = tmp_path / "wide.yaml"
    path.write_text(yaml.safe_dump(wide, sort_keys=False))
    spec = matrix_spec(str(path))
    cells = [Cell("none", d, kind="clean", test_acc=0.9) for d in "ABC"]
    cells[1].flag_tp, cells[1].flag_fp, cells[1].flag_fn = 0, 2, 4
    cells += [
        Cell("gauss", "A", kind="untargeted", effect=0.5, test_acc=0.4),
        Cell("gauss", "B", kind="untargeted", effect=0.0, test_acc=0.9),
        Cell("gauss", "C"),  # not run
    ]
    cells[4].flag_tp, cells[4].flag_fp, cells[4].flag_fn = 3, 1, 0
    figures = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to inspect it
    written = plot_matrix(spec, cells, tmp_path / "heat")
    assert all(p.stat().st_size > 0 for p in written)
    ax = figures[0].axes[0]
    assert [t.get_text().split("\n")[0] for t in ax.get_yticklabels()] == ["A", "B", "C"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["gauss [untargeted]"]
    texts = {
        (round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts
    }
    assert texts == {(0, 0): "50.0\nacc 40.0", (1, 0): "0.0\nacc 90.0", (2, 0): "not run"}
    real_close(figures[0])
    md = matrix_markdown(spec, cells, command="x")
    assert "| attack | B |\n|---|---|\n| none | 0/2/4 |\n| gauss | 3/1/0 |" in md


def test_the_heatmap_gives_each_unit_its_own_panel(tmp_path: Path, monkeypatch) -> None:
    """Accuracy drop, backdoor success and D_M confidence never share a colour scale: one
    panel per kind of attack, each with its own colour bar and unit; attacks not run yet in a
    panel of their own, without a scale."""
    import matplotlib.pyplot as plt

    from flwbc.experiments.matrix import PANELS, Cell, matrix_spec, plot_matrix

    mixed = {
        **TINY,
        "axes": {
            "attack": {
                "none": {"attack": {"name": "honest"}},
                "gauss": {}, "flip": {}, "bad": {}, "eq3": {}, "later": {},
            },
            "defense": {"A": {}},
        },
    }  # fmt: skip
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(mixed, sort_keys=False))
    spec = matrix_spec(str(path))
    cells = [
        Cell("none", "A", kind="clean", test_acc=0.9),
        Cell("gauss", "A", kind="untargeted", effect=0.04, test_acc=0.86),
        Cell("bad", "A", kind="backdoor", effect=0.7, test_acc=0.88),
        Cell("flip", "A", kind="untargeted", effect=0.02, test_acc=0.88),
        Cell("eq3", "A", kind="targeted", effect=0.9, test_acc=0.89),
        Cell("later", "A"),
    ]
    figures = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", figures.append)
    plot_matrix(spec, cells, tmp_path / "heat")
    fig = figures[0]
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    rows = [[t.get_text() for t in ax.get_yticklabels()] for ax in panels]
    assert rows == [
        ["gauss [untargeted]", "flip [untargeted]"], ["bad [backdoor]"], ["eq3 [targeted]"],
        ["later [not run]"],
    ]  # fmt: skip
    labels = [b.get_ylabel() for b in bars]
    assert labels == [PANELS[k][0] for k in PANELS]
    # the drop's scale ends at its largest value (4 points), the successes' at 100%
    assert [b.get_ylim()[1] for b in bars] == pytest.approx([4.0, 100.0, 100.0])
    real_close(fig)


@pytest.mark.slow
def test_a_matrix_with_two_seeds_averages_them(real_data_dir: Path, tmp_path: Path) -> None:
    """Each seed's cell is measured against the clean run of that seed, then averaged (before,
    every cell pointed at the last seed's run)."""
    spec_dict = {
        **TINY,
        "seeds": [0, 1],
        "quick": {**TINY["quick"], "seeds": [0, 1]},
        "axes": {
            "attack": {k: TINY["axes"]["attack"][k] for k in ("none", "sign flipping")},
            "defense": {"FedAvg": {}},
        },
    }
    spec = tmp_path / "two.yaml"
    spec.write_text(yaml.safe_dump(spec_dict))
    assert main(_argv(spec, tmp_path, real_data_dir)) == 0
    rows = {
        (r["attack"], r["defense"]): r
        for r in csv.DictReader((tmp_path / "out" / "cells.csv").open())
    }
    drops = []
    for d in (tmp_path / "store").iterdir():
        req = d / "request.json"
        if req.exists() and json.loads(req.read_text())["coords"].get("attack") == "sign flipping":
            seed = json.loads(req.read_text())["coords"]["seed"]
            flip = read_jsonl(d / "rounds.jsonl")
            clean = next(
                read_jsonl(e / "rounds.jsonl")
                for e in (tmp_path / "store").iterdir()
                if (e / "request.json").exists()
                and json.loads((e / "request.json").read_text())["coords"]
                == {**json.loads(req.read_text())["coords"], "attack": "none", "seed": seed}
            )
            drops.append(clean[1]["test_acc"] - flip[1]["test_acc"])
    assert len(drops) == 2
    row = rows[("sign flipping", "FedAvg")]
    assert row["seeds"] == "2" and float(row["effect"]) == pytest.approx(sum(drops) / 2, abs=1e-12)
    assert "means over 2 seeds" in (tmp_path / "out" / "matrix.md").read_text()


def test_a_rejected_plugin_option_leaves_no_run_directory(tmp_path: Path, capsys) -> None:
    """Plug-in options are checked when the spec is expanded, before any run directory."""
    axes = {
        "attack": {"none": {"attack": {"name": "honest"}}},
        "defense": {"K": {"server": {"aggregator": "krum", "options": {"f": -1}}}},
    }
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({**TINY, "axes": axes}))
    store = tmp_path / "store"
    assert main(["matrix", str(spec), "--quick", "--runs", str(store), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "aggregator 'krum': option f = -1" in err and err.count("\n") == 1
    assert not store.exists()
