"""BEYOND.md's statistics and verdicts (`flwbc.experiments.beyond`): the paired difference
against scipy's t interval computed by hand, each verdict at its boundary, and the report on a
store without runs (every cell empty, nothing invented)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from scipy import stats

from flwbc.experiments.bench import BenchCell
from flwbc.experiments.beyond import MARGIN, Paired, beyond_markdown, paired, verdict_not_worse

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
