"""BEYOND.md's statistics and verdicts (`flwbc.experiments.beyond`): the paired difference
against scipy's t interval computed by hand, each verdict at its boundary, and the report on a
store without runs (every cell empty, nothing invented)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from flwbc.experiments.bench import BenchCell
from flwbc.experiments.beyond import (
    MARGIN,
    Paired,
    beyond_markdown,
    bursty_section,
    load_spec,
    paired,
    verdict_not_worse,
    verdict_threshold,
)

ROOT = Path(__file__).resolve().parents[2]


def _cells(a: list[float | None], b: list[float | None]) -> list[BenchCell]:
    out = []
    for defense, values in (("median", a), ("FL-WBC + median", b)):
        for seed, v in enumerate(values):
            out.append(BenchCell("targeted", "iid", "BadNets", defense, seed, "targeted", effect=v))
    return out


def test_paired_difference_is_the_t_interval_of_per_seed_differences() -> None:
    a, b = [0.02, 0.03, 0.01, 0.05], [0.6, 0.4, 0.55, 0.5]
    d = paired(_cells(a, b), "median", "FL-WBC + median")
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / (n - 1))
    assert d is not None and d.seeds == 4
    assert d.mean == pytest.approx(mean)
    assert d.half_width == pytest.approx(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))


def test_paired_uses_only_seeds_both_defenses_finished() -> None:
    d = paired(_cells([0.1, None, 0.3], [0.2, 0.9, 0.5]), "median", "FL-WBC + median")
    assert d is not None and d.seeds == 2 and d.mean == pytest.approx(0.15)
    assert paired(_cells([None], [0.2]), "median", "FL-WBC + median") is None


@pytest.mark.parametrize(
    ("mean", "half", "want"),
    [
        (0.5, 0.1, "refuted here"),  # wholly worse beyond the margin
        (MARGIN + 0.02, 0.01, "refuted here"),
        (MARGIN - 0.01, 0.005, "holds here"),  # within the margin
        (-0.3, 0.1, "holds here"),  # better
        (0.2, 0.3, "open"),  # straddles
        (0.2, None, "open (one seed)"),
    ],
)
def test_verdicts(mean: float, half: float | None, want: str) -> None:
    assert verdict_not_worse(Paired(mean, half, 1 if half is None else 3)) == want
    # higher-is-better measures read the same difference the other way round
    flipped = verdict_not_worse(Paired(-mean, half, 3), lower_is_better=False)
    assert flipped == (want if half is not None else "open (one seed)")


def test_report_on_an_empty_store_claims_nothing(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    for f in (ROOT / "results" / "beyond").glob("*.yaml"):
        shutil.copy(f, specs)
    (tmp_path / "store").mkdir()
    text = beyond_markdown(specs, tmp_path / "store")
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows and not any("refuted" in r or "holds" in r or "open" in r for r in rows)
    assert "composition 0 of" in text and "lockdown 0 of" in text
    assert "Not measured yet (no `order_stats.json` in the store)." in text
    assert "written by hand)" not in text
    (specs / "findings.md").write_text("Evidence: none yet.")
    assert text + "\n## Findings (written by hand)\n\nEvidence: none yet.\n" == beyond_markdown(
        specs, tmp_path / "store"
    )


def test_clean_baselines_merge_refs_that_share_a_trigger() -> None:
    """Two wbc_aware attacks differing only in mode carry one trigger: the clean run measures
    it once (options outside BackdoorOptions dropped); a different target stays ambiguous, and
    a name given once keeps every option (run keys of existing specs unchanged)."""
    from flwbc.evaluation.trigger import baseline_metric

    eot = {"name": "wbc_aware", "options": {"mode": "eot", "target": 3}}
    off = {"name": "wbc_aware", "options": {"mode": "offmask", "target": 3}}
    got = baseline_metric([{"name": "badnets"}, eot, off])
    assert got is not None
    assert got["options"]["attacks"] == [
        {"name": "badnets", "options": {}},
        {"name": "wbc_aware", "options": {"target": 3}},
    ]
    alone = baseline_metric([eot])
    assert alone is not None and alone["options"]["attacks"] == [eot]
    other = {"name": "wbc_aware", "options": {"mode": "eot", "target": 5}}
    skipped = baseline_metric([eot, other], skip_ambiguous=True)
    assert skipped is None


def test_backdoors_differing_only_in_how_they_train_share_a_baseline() -> None:
    """The training objective, the poisoned share and the epochs do not shape the trigger: the
    blind (MGDA) backdoor and plain BadNets on one trigger share one clean baseline; the
    `levels` of the trigger do shape it."""
    from flwbc.evaluation.trigger import baseline_metric

    trig = {"target": 8, "pattern": "nine_pixel", "x": 23, "y": 3}
    blind = {"name": "badnets", "options": {**trig, "objective": "mgda", "poison_fraction": 1.0}}
    plain = {"name": "badnets", "options": {**trig, "epochs": 2}}
    got = baseline_metric([blind, plain])
    assert got is not None and got["options"]["attacks"] == [{"name": "badnets", "options": trig}]
    bright = {"name": "badnets", "options": {**trig, "levels": [2.8, -0.4]}}
    assert baseline_metric([blind, bright], skip_ambiguous=True) is None


def test_the_clean_baseline_scores_the_images_the_backdoor_metric_scores() -> None:
    """A spec whose backdoor metric counts the target class's images (LeadFL's measure) gets a
    clean baseline that counts them too; the others are unchanged."""
    from flwbc.evaluation.trigger import baseline_metric

    every = [{"name": "backdoor", "options": {"include_target": True}}]
    got = baseline_metric([{"name": "badnets"}], metrics=every)
    assert got is not None and got["options"]["include_target"] is True
    got = baseline_metric([{"name": "badnets"}], metrics=["test_acc"])
    assert got is not None and "include_target" not in got["options"]
    spec = load_spec(ROOT / "results" / "beyond" / "leadfl-template.yaml")
    from flwbc.experiments.bench import expand_bench

    clean = [r for r in expand_bench(spec) if r.coords.get("attack") == "none"]
    assert clean
    for run in clean:
        (trigger,) = [m for m in run.config["eval"]["metrics"] if m["name"] == "trigger"]
        assert trigger["options"]["include_target"] is True


def test_dba_refs_with_different_parts_keep_their_own_baselines() -> None:
    """DBA's trigger depends on `parts` (beyond BackdoorOptions): two part counts are two
    triggers, never merged; an option written at its default equals one left out."""
    from flwbc.evaluation.trigger import baseline_metric

    two = {"name": "dba", "options": {"parts": 2}}
    four = {"name": "dba", "options": {"parts": 4, "scale": 2.0}}
    with pytest.raises(Exception, match="names must differ"):
        from flwbc.evaluation.base import METRICS

        got = baseline_metric([two, four])
        METRICS.options("trigger", got["options"])  # type: ignore[index]
    default = {"name": "dba", "options": {"scale": 3.0}}
    got = baseline_metric([four, default])
    assert got is not None and got["options"]["attacks"] == [
        {"name": "dba", "options": {"parts": 4}}
    ]


def test_quantile_histograms_average_rounds_with_attackers_then_seeds(tmp_path: Path) -> None:
    from flwbc.experiments.beyond import quantile_hists

    def run(name: str, hists: list[list[float] | None]) -> None:
        (tmp_path / name).mkdir()
        recs = [
            {"round": t, "attackers": 0 if h is None else 2, "attacker_quantile_hist": h}
            for t, h in enumerate(hists, 1)
        ]
        (tmp_path / name / "order_stats.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in recs)
        )

    one = [1.0] + [0.0] * 9
    mid = [0.0] * 5 + [1.0] + [0.0] * 4
    run("a", [one, None, mid])  # seed 0: rounds with attackers average to one/2 + mid/2
    run("b", [mid])  # seed 1
    cells = [
        BenchCell("targeted", "iid", "BadNets", "median", s, "targeted", run=r)
        for s, r in ((0, "a"), (1, "b"))
    ]
    got = quantile_hists(cells, tmp_path)
    want = [0.25] + [0.0] * 4 + [0.75] + [0.0] * 4
    assert got == {("iid", "BadNets", "median"): pytest.approx(want)}


@pytest.mark.parametrize(
    ("values", "threshold", "above", "want"),
    [
        ([0.9, 0.92, 0.88], 0.75, True, "holds here"),
        ([0.5, 0.6, 0.55], 0.75, True, "refuted here"),
        ([0.5, 0.95, 0.8], 0.75, True, "open"),
        ([0.05, 0.06, 0.04], 0.10, False, "holds here"),
        ([0.5, 0.6, 0.4], 0.10, False, "refuted here"),
        ([0.02, 0.3, 0.1], 0.10, False, "open"),
        ([0.05], 0.10, False, "open (one seed)"),
        ([], 0.10, False, "not measured"),
    ],
)
def test_threshold_verdicts_read_the_t_interval(
    values: list[float], threshold: float, above: bool, want: str
) -> None:
    assert verdict_threshold(values, threshold, above) == want
    if len(values) > 1:
        lo, hi = stats.t.interval(
            0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values)
        )
        side = lo > threshold if above else hi < threshold
        assert (want == "holds here") == side


def test_bursty_section_reads_leadfl_summary_numbers_from_the_records(tmp_path: Path) -> None:
    spec = load_spec(ROOT / "results" / "beyond" / "leadfl-template.yaml")
    rng = np.random.default_rng(0)
    cells, means = [], {}
    for defense, level in (("Bulyan", 0.9), ("Bulyan + LeadFL", 0.3), ("FedAvg", 0.95)):
        for seed in range(3):
            for kind in ("targeted", "clean"):
                bd = rng.uniform(level - 0.05, level + 0.05, 4) if kind == "targeted" else [0.1] * 4
                run = f"{defense}-{seed}-{kind}".replace(" ", "_")
                (tmp_path / run).mkdir()
                # a clean run records its baseline under the trigger metric's field only
                field = "backdoor_acc" if kind == "targeted" else "backdoor_acc.badnets"
                recs = [
                    {"round": t + 1, "backdoor_acc": None, field: float(b), "test_acc": 0.8}
                    for t, b in enumerate(bd)
                ]
                (tmp_path / run / "rounds.jsonl").write_text(
                    "".join(json.dumps(r) + "\n" for r in recs)
                )
                attack = "blind 9-pixel" if kind == "targeted" else "none"
                cells.append(
                    BenchCell("targeted", "template", attack, defense, seed, kind, run=run)
                )
                means[(defense, seed, kind)] = float(np.mean(bd))
    text = "\n".join(bursty_section(spec, cells, tmp_path, "CMD"))
    bulyan = [means[("Bulyan", s, "targeted")] for s in range(3)]
    leadfl = [means[("Bulyan + LeadFL", s, "targeted")] for s in range(3)]
    row = next(line for line in text.splitlines() if line.startswith("| Bulyan |"))
    assert f"| {np.mean(bulyan):.3f} ±" in row and "| 0.100 ± 0.000 (3) |" in row
    assert "| Bulyan alone lets it through: above 0.75 |" in text
    assert "above 0.75 | " + f"{np.mean(bulyan):.3f}" in text
    check = next(line for line in text.splitlines() if "above 0.75" in line)
    assert check.endswith("| holds here |")
    check = next(line for line in text.splitlines() if "below 0.10" in line)
    assert check.endswith("| refuted here |")
    diff = np.mean(np.array(leadfl) - np.array(bulyan))
    row = next(
        line for line in text.splitlines() if line.startswith("| Bulyan + LeadFL | Bulyan |")
    )
    assert f"{diff:+.3f} ±" in row and row.endswith("| holds here |")
    assert "Bulyan + FL-WBC | Bulyan | backdoor, mean of rounds | – | not measured" in text


def test_adaptive_rows_count_diverged_runs_and_leave_them_out() -> None:
    from flwbc.experiments.beyond import ADAPTIVE_PAIRS, adaptive_section

    spec = load_spec(ROOT / "results" / "beyond" / "adaptive.yaml")
    a, b = ADAPTIVE_PAIRS[2]
    cells = []
    for seed, (ea, eb, dead) in enumerate([(0.5, 0.9, False), (0.6, 0.5, True), (0.4, 0.6, False)]):
        for attack, effect, div in ((a, ea, False), (b, eb, dead)):
            cells.append(
                BenchCell(
                    "targeted",
                    "iid/20%",
                    attack,
                    "FL-WBC",
                    seed,
                    "targeted",
                    effect=effect,
                    acc=0.1 if div else 0.8,
                    diverged=div,
                    run=f"r{seed}{attack}",
                )
            )
    text = "\n".join(adaptive_section(spec, cells, "CMD", ADAPTIVE_PAIRS, "H", None))
    row = next(r for r in text.splitlines() if r.startswith("| iid/20% | FL-WBC | " + b + " |"))
    assert f"| {b} | 1 |" in row
    assert "+0.300 ± " in row and "(2 seeds)" in row
    assert "| 0.800 ± 0.000 (2) |" in row  # the diverged seed's accuracy is left out


def test_bursty_figure_draws_each_defense_over_rounds(tmp_path: Path) -> None:
    from flwbc.experiments.beyond import plot_bursty

    recs = [{"round": t, "backdoor_acc": 0.1 * t, "test_acc": 0.5} for t in range(1, 6)]
    values = {
        (d, k, s): {"records": recs}
        for d in ("Bulyan", "Bulyan + LeadFL")
        for k in ("targeted", "clean")
        for s in range(2)
    }
    paths = plot_bursty(values, tmp_path / "bursty")
    assert sorted(p.suffix for p in paths) == [".png", ".svg"]
    svg = (tmp_path / "bursty.svg").read_text()
    assert "Bulyan + LeadFL" in svg and "backdoor accuracy" in svg


def test_bursty_mean_over_rounds_spans_the_records_rounds_not_their_count(tmp_path: Path) -> None:
    """Records of rounds 2, 4, 6, 8 (a run evaluated every 2 rounds): LeadFL's mean over rounds
    takes all four values, not those of rounds 1..4."""
    from flwbc.experiments.beyond import _bursty_values

    spec = load_spec(ROOT / "results" / "beyond" / "leadfl-template.yaml")
    values = [0.2, 0.4, 0.6, 1.0]
    (tmp_path / "r").mkdir()
    recs = [
        {"round": 2 * (i + 1), "backdoor_acc": v, "test_acc": 0.8} for i, v in enumerate(values)
    ]
    (tmp_path / "r" / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    cell = BenchCell("targeted", "template", "blind 9-pixel", "Bulyan", 0, "targeted", run="r")
    got = _bursty_values(spec, [cell], tmp_path)[("Bulyan", "targeted", 0)]
    means = [v for column, v in got.items() if column.endswith("mean of rounds")]
    assert means == [pytest.approx(np.mean(values))]
