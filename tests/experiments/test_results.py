"""Result analysis on a hand-built run store: metrics, aggregation, claim verdicts, tables and
figures, checked against values computed by hand from the synthetic records."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

import pytest
import yaml

from flwbc.experiments.results import collect, judge, pivot_table, points_table, to_csv
from flwbc.experiments.specs import expand, load_settings, load_spec
from flwbc.experiments.sweep import run_dir

SETTINGS = {
    "common": {"local": {"epochs": 1, "batch_size": 32}},
    "settings": {
        "a": {"title": "Setting A", "warmup_rounds": 2, "config": {"data": {"name": "fmnist"}}},
        "b": {
            "title": "Setting B",
            "warmup_rounds": 2,
            "config": {"data": {"name": "fmnist", "partition": "shards"}},
        },
    },
}
SPEC = {
    "id": "toy",
    "title": "Toy",
    "settings": ["a", "b"],
    "seeds": [0, 1],
    "branch": {"rounds": 6, "config": {"attack": {"rounds": [1, 4]}}},
    "axes": {
        "defense": {
            "none": {},
            "W s=1": {"defense": {"client": "wbc"}},
            "W s=2": {"defense": {"client": "wbc", "wbc": {"s": 0.8}}},
        }
    },
    "plot": {"kind": "tradeoff", "series": "defense"},
    "table": {"rows": "defense"},
    "paper_values": {"none": {"a": "2", "b": ">10"}},
    "claims": [
        {
            "text": "none persists",
            "where": {"defense": "none"},
            "check": {"kind": "mitigation_more_than", "value": 1},
        },
        {
            "text": "W fast",
            "where": {"series": "W"},
            "check": {"kind": "mitigation_at_most", "value": 1},
        },
        {
            "text": "W frontier",
            "where": {"series": "W"},
            "check": {"kind": "frontier", "cost": 3, "value": 1},
        },
        {"text": "paper", "where": {}, "check": {"kind": "paper_table", "tolerance": 0.5}},
        {"text": "cheap", "where": {"series": "W"}, "check": {"kind": "cost_at_most", "value": 3}},
    ],
}

# Per (setting, defense): the confidence trace after the warm-up (rounds 1..6, attacks at 1, 4).
CONF = {
    ("a", "none"): [1.0, 0.9, 0.4, 1.0, 0.3, 0.2],  # mitigated after 2, then 1 round
    ("a", "W s=1"): [1.0, 0.2, 0.7, 1.0, 0.4, 0.1],  # 1 (then back above 0.5), 1
    ("a", "W s=2"): [0.4, 0.1, 0.1, 0.3, 0.1, 0.1],  # 0, 0
    ("b", "none"): [1.0, 0.9, 0.9, 1.0, 0.9, 0.9],  # >2, >2 (censored)
    ("b", "W s=1"): [1.0, 0.9, 0.2, 1.0, 0.2, 0.1],  # 2, 1
    ("b", "W s=2"): [1.0, 0.3, 0.1, 1.0, 0.4, 0.1],  # 1, 1
}
WARM_ACC = {0: 0.90, 1: 0.80}
ACC_DROP = {"none": 0.0, "W s=1": 0.02, "W s=2": 0.05}  # accuracy below the warm model


def _write_run(path: Path, records: list[dict], final_acc: float | None = None) -> None:
    path.mkdir(parents=True)
    (path / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (path / "timings.jsonl").write_text(
        "".join(json.dumps({"round": r["round"], "seconds": 1.5}) + "\n" for r in records)
    )
    (path / "summary.json").write_text(json.dumps({"complete": True, "final_test_acc": final_acc}))
    (path / "model.safetensors").write_bytes(b"")


@pytest.fixture()
def toy(tmp_path: Path):
    (tmp_path / "settings.yaml").write_text(yaml.safe_dump(SETTINGS))
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(SPEC, allow_unicode=True, sort_keys=False))
    settings = load_settings(tmp_path / "settings.yaml")
    spec = load_spec(str(tmp_path / "toy.yaml"), settings)
    runs = expand(spec, settings)
    store = tmp_path / "store"
    for r in runs:
        seed = r.coords["seed"]
        if r.role == "warmup":
            recs = [
                {
                    "round": 1,
                    "adversarial": False,
                    "target_conf": 0.0,
                    "target_acc": 0.0,
                    "test_acc": WARM_ACC[seed],
                }
            ]
            _write_run(run_dir(store, r), recs, WARM_ACC[seed])
            continue
        conf = CONF[(r.coords["setting"], r.coords["defense"])]
        acc = WARM_ACC[seed] - ACC_DROP[r.coords["defense"]]
        recs = [
            {
                "round": i + 1,
                "adversarial": i + 1 in (1, 4),
                "target_conf": c,
                "target_acc": float(c > 0.5),
                "test_acc": acc,
            }
            for i, c in enumerate(conf)
        ]
        _write_run(run_dir(store, r), recs)
    return spec, runs, store


def _point(res, setting, defense):
    return next(p for p in res.points if p.coords == {"setting": setting, "defense": defense})


def test_metrics_and_aggregates(toy):
    spec, runs, store = toy
    res = collect(spec, runs, store)
    assert res.runs_finished == res.runs_total == len(runs)
    assert res.seconds == pytest.approx(1.5 * (2 * 2 * 1 + 2 * 2 * 3 * 6))
    p = _point(res, "a", "none")
    assert [(e.rounds, e.censored) for e in p.events] == [(2, False), (1, False)] * 2
    assert p.mitigation() == (1.5, False)
    b = _point(res, "b", "none")
    # windows are rounds 1-3 and 4-6: two rounds observed after each attack, never mitigated
    assert [(e.rounds, e.censored) for e in b.events] == [(3, True)] * 4
    assert [str(e) for e in b.events] == [">2"] * 4
    # mitigated after 1 round, back in the next: still 1 round by §7.1, marked as returned
    w1 = _point(res, "a", "W s=1")
    assert [str(e) for e in w1.events] == ["1†", "1"] * 2
    assert w1.mitigation() == (1.0, False)
    w = _point(res, "a", "W s=2")
    cost_mean, cost_sd = w.cost()
    assert cost_mean == pytest.approx(5.0)
    assert cost_sd == pytest.approx(0.0, abs=1e-9)
    acc_mean, acc_sd = w.accuracy()
    assert acc_mean == pytest.approx(statistics.mean([0.85, 0.75]))
    assert acc_sd == pytest.approx(statistics.stdev([0.85, 0.75]))


def test_claim_verdicts(toy):
    spec, runs, store = toy
    res = collect(spec, runs, store)
    v = {c.text: judge(res, c) for c in spec.claims}
    # none: a's attacks mitigated in 2 and 1 rounds (2 of 4 events > 1), b's censored at > 2
    assert v["none persists"].verdict == "partly"
    assert "a: 2/4" in v["none persists"].measured and "b: 4/4" in v["none persists"].measured
    # W events ≤ 1: a: 1,1,0,0 per seed (8/8); b: 2,1,1,1 per seed (6/8) → 14/16
    assert v["W fast"].verdict == "partly"
    assert "a: 8/8" in v["W fast"].measured and "b: 6/8" in v["W fast"].measured
    # frontier with cost ≤ 3: only s=1 qualifies (cost 2): a mean 1.0 → pass; b mean 1.5 → fail
    assert v["W frontier"].verdict == "partly"
    # paper table (tolerance 0.5): a none 1.5 vs 2 → pass; b none >3 vs >10 → fail
    assert v["paper"].verdict == "partly"
    # costs 2 (s=1, 4 runs) pass, 5 (s=2, 4 runs) fail → 4/8
    assert v["cheap"].verdict == "partly"
    assert "4/8" not in v["cheap"].measured  # reported per setting
    assert "a: 2/4 runs" in v["cheap"].measured


def test_verdict_extremes(toy):
    spec, runs, store = toy
    res = collect(spec, runs, store)
    from flwbc.experiments.specs import Claim

    always = Claim.model_validate(
        {
            "text": "x",
            "where": {"setting": "a", "defense": "W s=2"},
            "check": {"kind": "mitigation_at_most", "value": 0},
        }
    )
    never = Claim.model_validate(
        {
            "text": "y",
            "where": {"setting": "b", "defense": "none"},
            "check": {"kind": "mitigation_at_most", "value": 5},
        }
    )
    empty = Claim.model_validate(
        {
            "text": "z",
            "where": {"defense": "nothing"},
            "check": {"kind": "mitigation_at_most", "value": 5},
        }
    )
    assert judge(res, always).verdict == "reproduced"
    assert judge(res, never).verdict == "not reproduced"
    assert judge(res, empty).verdict == "not run"


def test_tables(toy):
    spec, runs, store = toy
    res = collect(spec, runs, store)
    rows = points_table(res)
    assert len(rows) == 6
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    row = next(r for r in parsed if r["setting"] == "b" and r["defense"] == "none")
    assert row["mean mitigation rounds"] == ">3.0"
    assert row["seeds"] == "2"
    pivot = pivot_table(res)
    assert [r["defense"] for r in pivot] == ["none", "W s=1", "W s=2"]
    assert pivot[0]["a"] == "1.5 (paper 2)"
    assert pivot[1]["b"] == "1.5"


def test_unfinished_runs_are_ignored(toy):
    spec, runs, store = toy
    branch = next(r for r in runs if r.role == "branch")
    (run_dir(store, branch) / "model.safetensors").unlink()
    res = collect(spec, runs, store)
    assert res.runs_finished == len(runs) - 1
    p = _point(res, branch.coords["setting"], branch.coords["defense"])
    assert len(p.runs) == 1


def test_figures_written(toy, tmp_path):
    from flwbc.plots import plot_curves, plot_tradeoff

    spec, runs, store = toy
    res = collect(spec, runs, store)
    for fn in (plot_curves, plot_tradeoff):
        files = fn(res, tmp_path / "fig" / fn.__name__)
        assert sorted(f.suffix for f in files) == [".png", ".svg"]
        assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in files[1].read_bytes()[:2000]


def test_report_compute_counts_shared_runs_once(toy):
    from flwbc.experiments.reproduce import _compute_line

    spec, runs, store = toy
    branch = next(r for r in runs if r.role == "branch")
    (run_dir(store, branch) / "model.safetensors").unlink()
    res = collect(spec, runs, store)
    # The same runs reached through two results (as Fig. 3 and Fig. 6 share theirs).
    line = _compute_line([res, res])
    rounds = 2 * 2 * 1 + 2 * 2 * 3 * 6 - 6  # warm-ups' and branches' rounds, one branch unfinished
    assert line.startswith(f"Runs: {len(runs) - 1} of {len(runs)} distinct runs finished")
    assert f"{1.5 * rounds / 60:.1f} min of compute" in line


def _captured_axes(monkeypatch, res, tmp_path):
    """plot_curves' axes, captured before the figure is closed."""
    import flwbc.plots as plots

    seen = []

    def save(fig, prefix):
        seen.extend(fig.axes)
        return []

    monkeypatch.setattr(plots, "_save", save)
    plots.plot_curves(res, tmp_path / "c")
    return seen


def test_curves_mean_seeds_with_one_schedule(toy, monkeypatch, tmp_path):
    spec, runs, store = toy
    res = collect(spec, runs, store)
    ax = _captured_axes(monkeypatch, res, tmp_path)[0]  # panel: setting a
    lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    assert sorted(lines) == ["W s=1", "W s=2", "none"]
    # both seeds have the same trace per point, so the mean is that trace
    assert list(lines["none"].get_ydata()) == pytest.approx(CONF[("a", "none")])


def test_curves_draw_each_seed_when_schedules_differ(toy, monkeypatch, tmp_path):
    spec, runs, store = toy
    for r in runs:  # seed 1 attacked in rounds 2 and 5 instead of 1 and 4
        if r.role == "branch" and r.coords["seed"] == 1:
            path = run_dir(store, r) / "rounds.jsonl"
            recs = [json.loads(x) for x in path.read_text().splitlines()]
            for rec in recs:
                rec["adversarial"] = rec["round"] in (2, 5)
            path.write_text("".join(json.dumps(x) + "\n" for x in recs))
    res = collect(spec, runs, store)
    ax = _captured_axes(monkeypatch, res, tmp_path)[0]
    labels = [ln.get_label() for ln in ax.get_lines() if not ln.get_label().startswith("_")]
    assert "none, seed 0" in labels and "none, seed 1" in labels and "none" not in labels
    circles = [sorted(ln.get_xdata()) for ln in ax.get_lines() if ln.get_marker() == "o"]
    assert [1, 4] in circles and [2, 5] in circles


def test_report_counts_attacks_that_came_back(toy, tmp_path):
    from flwbc.experiments.reproduce import report, write_result

    spec, runs, store = toy
    res = collect(spec, runs, store)
    out = tmp_path / "out"
    write_result(res, out)
    text = report([res], out, command="flwbc reproduce toy", quick=False, store=store)
    # 6 points x 2 seeds x 2 attacks; only ("a", "W s=1")'s first attack came back, in both seeds
    assert "Attacks mitigated and then back without a new attack (†): 2 of 24." in text
    assert "| a | W s=1 | 2 | 1† 1 1† 1 |" in text
