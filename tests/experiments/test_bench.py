"""`flwbc bench`: the statistics against scipy and brute force, the bundled protocol's expansion,
and a tiny bench end to end on real Fashion-MNIST (each measure read back from the runs'
records), then one more defense placed on it by `bench evaluate` without rerunning the others."""

from __future__ import annotations

import csv
import itertools
import json
import os
import random
import shutil
from pathlib import Path

import pytest
import yaml
from scipy import stats

from flwbc.cli import main
from flwbc.config import make_config
from flwbc.experiments.bench import (
    CLEAN,
    BenchSpec,
    Summary,
    confirm_cells,
    expand_bench,
    load_bench,
    ranking,
    summarize,
    t_interval,
    worst_cases,
)
from flwbc.runio import read_jsonl


def test_t_interval_is_scipys() -> None:
    rng = random.Random(3)
    for n in (2, 3, 5, 9):
        values = [rng.uniform(0, 1) for _ in range(n)]
        mean, half = t_interval(values)
        lo, hi = stats.t.interval(0.95, n - 1, loc=stats.tmean(values), scale=stats.sem(values))
        assert mean == pytest.approx((lo + hi) / 2, abs=1e-12)
        assert half == pytest.approx((hi - lo) / 2, rel=1e-9)
    assert t_interval([0.4]) == (0.4, None)


def test_a_one_seed_cell_gets_its_defenses_pooled_spread() -> None:
    """summarize: cells of several seeds keep their own t-interval; a one-seed cell gets
    t(df) · s_pooled of its regime and defense, computed here with numpy; a defense without any
    cell of several seeds gives its one-seed cells no interval."""
    import numpy as np

    from flwbc.experiments.bench import BenchCell, summarize

    def cell(attack: str, defense: str, seed: int, acc: float) -> BenchCell:
        kind = "clean" if attack == CLEAN else "untargeted"
        return BenchCell("untargeted", "s", attack, defense, seed, kind, acc=acc)

    a, b = [0.61, 0.55, 0.70], [0.30, 0.42]
    cells = [cell("a", "A", i, v) for i, v in enumerate(a)]
    cells += [cell(CLEAN, "A", i, v) for i, v in enumerate(b)]
    cells += [cell("c", "A", 0, 0.5), cell("a", "B", 0, 0.4)]
    got = {(x.attack, x.defense): x for x in summarize(cells)}
    assert not got[("a", "A")].pooled
    assert got[("a", "A")].half_width == pytest.approx(t_interval(a)[1])
    df = len(a) + len(b) - 2
    sd = np.sqrt((np.var(a, ddof=0) * len(a) + np.var(b, ddof=0) * len(b)) / df)
    one = got[("c", "A")]
    assert one.pooled and one.seeds == 1 and one.mean == 0.5
    assert one.half_width == pytest.approx(stats.t.ppf(0.975, df) * sd, rel=1e-12)
    assert got[("a", "B")].half_width is None and not got[("a", "B")].pooled


def test_throughput_counts_each_run_once() -> None:
    from flwbc.experiments.bench import BenchCell, throughput

    def cell(run: str | None, wall: float | None, seconds: float) -> BenchCell:
        return BenchCell("u", "s", "a", "d", 0, "untargeted", run=run, wall=wall, seconds=seconds)

    ratios = [1.1, 1.5, 1.2, 3.0, 1.05]
    cells = [cell(f"r{i}", 10 * q, 10.0) for i, q in enumerate(ratios)]
    cells += [cell("r0", 11.0, 10.0), cell("r9", None, 10.0), cell(None, None, 0.0)]
    got = throughput(cells)
    assert got is not None and got.runs == 5
    assert got.ratio_median == 1.2 and got.ratio_p90 == 3.0
    assert got.runs_per_worker_hour == pytest.approx(5 / (sum(ratios) * 10 / 3600))
    assert throughput([cell("r9", None, 10.0)]) is None


def _summaries(rng: random.Random) -> list[Summary]:
    out = []
    for regime, setting, attack, defense in itertools.product(
        ("untargeted", "targeted"), ("s1", "s2", "s3"), (CLEAN, "a", "b", "c"), ("d1", "d2", "d3")
    ):
        out.append(Summary(regime, setting, attack, defense, "acc", rng.random(), None, 1, None))
    return out


def test_worst_cases_ranking_and_confirmed_cells_by_brute_force() -> None:
    spec = load_bench("leaderboard")
    regimes = {"untargeted": spec.regimes["untargeted"], "targeted": spec.regimes["targeted"]}
    rng = random.Random(7)
    for _ in range(20):
        summaries = _summaries(rng)
        worst = worst_cases(summaries, regimes)
        value = {(s.regime, s.setting, s.attack, s.defense): s.mean for s in summaries}
        pick = {"untargeted": min, "targeted": max}
        for w in worst:
            attacks = ["a", "b", "c"]
            want = pick[w.regime](attacks, key=lambda a: value[(w.regime, w.setting, a, w.defense)])
            assert w.attack == want
        ranks = ranking(worst, regimes)
        for regime in regimes:
            scores = {
                d: sum(
                    pick[regime](value[(regime, s, a, d)] for a in ("a", "b", "c"))
                    for s in ("s1", "s2", "s3")
                )
                / 3
                for d in ("d1", "d2", "d3")
            }
            order = sorted(scores, key=scores.get, reverse=regime == "untargeted")
            got = [r for r in ranks if r.regime == regime]
            assert [r.defense for r in got] == order
            assert [r.rank for r in got] == [1, 2, 3]
            assert [r.score for r in got] == pytest.approx([scores[d] for d in order])
        chosen = confirm_cells(spec, summaries, 2)
        for regime, setting, defense in itertools.product(
            regimes, ("s1", "s2", "s3"), ("d1", "d2", "d3")
        ):
            ordered = sorted(
                ("a", "b", "c"),
                key=lambda a: value[(regime, setting, a, defense)],
                reverse=regime == "targeted",
            )
            got = {a for r, s, a, d in chosen if (r, s, d) == (regime, setting, defense)}
            assert got == {CLEAN, *ordered[:2]}


def test_the_bundled_leaderboard_expands() -> None:
    spec = load_bench("leaderboard")
    runs = expand_bench(spec)
    branches = [r for r in runs if r.role == "branch"]
    settings = spec.all_settings()
    untargeted = len(settings) * (len(spec.regimes["untargeted"].attacks) + 1)
    targeted = len(spec.regimes["targeted"].settings or []) * (
        len(spec.regimes["targeted"].attacks) + 1
    )
    assert len(branches) == (untargeted + targeted) * len(spec.defenses)
    # the targeted regime's warm-ups: one per data split, shared by its attacker settings
    warm = [r for r in runs if r.role == "warmup"]
    assert len(warm) == 2 and all(r.rounds == 30 for r in warm)
    for r in branches:
        cfg = make_config(r.config)
        # every run's directory names its attack
        assert f"-{cfg.attack.name}-" in r.dir_name()
        if r.coords["defense"] == "Krum":
            want = {"10%": 1, "20%": 2, "30%": 3}[settings[r.coords["setting"]][1]["attackers"]]
            assert cfg.server.options == {"f": want}
        if r.coords["regime"] == "untargeted":
            assert r.parent is None and cfg.federation.rounds == 20
            sched = cfg.attack.schedule
            assert sched is not None and (sched.options["start"], sched.options["end"]) == (1, 20)
        else:
            assert r.parent is not None
            if r.coords["attack"] == CLEAN:
                [metric] = cfg.eval.metrics
                names = [a["name"] for a in metric.options["attacks"]]
                assert names == ["badnets", "dba", "model_replacement", "neurotoxin"]


TINY = {
    "id": "tiny",
    "title": "tiny bench",
    "common": {
        "data": {"name": "fmnist", "train_fraction": 0.05, "partition": "iid"},
        "federation": {"num_clients": 10, "clients_per_round": 5},
        "local": {"epochs": 1, "batch_size": 32},
        "eval": {"test_size": 500},
        "attack": {"num_malicious": 2, "source": "test", "schedule": {"name": "continuous"}},
    },
    "settings": {"iid/40%": {"vars": {"f": 1}}},
    "regimes": {
        "untargeted": {"kind": "untargeted", "rounds": 3, "attacks": ["sign_flip"]},
        "targeted": {
            "kind": "targeted",
            "warmup_rounds": 2,
            "rounds": 3,
            "window": [1, 2],
            "attacks": ["badnets"],
        },
    },
    "defenses": {"FedAvg": {}},
    "seeds": [0],
}


def _argv(cmd: list[str], spec: Path, runs: Path, out: Path, data: Path) -> list[str]:
    return [
        "bench",
        *cmd,
        str(spec),
        "--runs",
        str(runs),
        "--out",
        str(out),
        "--data-dir",
        str(data),
        "--no-progress",
        "--jobs",
        "2",
        "--threads",
        "1",
    ]


def _records(store: Path) -> dict[tuple[str, str, str], list[dict]]:
    out = {}
    for d in store.iterdir():
        req = d / "request.json"
        if req.exists() and json.loads(req.read_text())["role"] == "branch":
            c = json.loads(req.read_text())["coords"]
            out[(c["regime"], c["attack"], c["defense"])] = read_jsonl(d / "rounds.jsonl")
    return out


@pytest.mark.slow
def test_tiny_bench_and_evaluate_end_to_end(
    real_data_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    from flwbc.cli import bench as cli_bench
    from flwbc.experiments import bench_report

    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY, allow_unicode=True))
    runs, out = tmp_path / "runs", tmp_path / "out"
    # cells.csv is rewritten while runs finish, so an interrupted bench leaves its table
    seen: list[int] = []
    real_write = bench_report.write_bench_cells

    def counting(spec, cells, out):  # noqa: ANN001, ANN202
        seen.append(sum(c.run is not None for c in cells))
        return real_write(spec, cells, out)

    monkeypatch.setattr(cli_bench, "TABLES_EVERY", 0.0)
    monkeypatch.setattr(bench_report, "write_bench_cells", counting)
    assert main(_argv(["run"], spec, runs, out, real_data_dir)) == 0
    assert seen and seen == sorted(seen) and seen[0] < 4
    rows = list(csv.DictReader((out / "cells.csv").open()))
    assert len(rows) == 4
    recs = _records(runs)
    by = {(r["regime"], r["attack"]): r for r in rows}
    clean_u, flip = (
        recs[("untargeted", CLEAN, "FedAvg")],
        recs[("untargeted", "sign_flip", "FedAvg")],
    )
    assert float(by[("untargeted", "sign_flip")]["acc"]) == flip[-1]["test_acc"]
    assert float(by[("untargeted", "sign_flip")]["acc_drop"]) == pytest.approx(
        clean_u[-1]["test_acc"] - flip[-1]["test_acc"], abs=1e-12
    )
    bad, clean_t = recs[("targeted", "badnets", "FedAvg")], recs[("targeted", CLEAN, "FedAvg")]
    success = (bad[0]["backdoor_acc"] + bad[1]["backdoor_acc"]) / 2
    baseline = (clean_t[0]["backdoor_acc.badnets"] + clean_t[1]["backdoor_acc.badnets"]) / 2
    row = by[("targeted", "badnets")]
    assert float(row["success"]) == pytest.approx(success, abs=1e-12)
    assert float(row["effect"]) == pytest.approx(success - baseline, abs=1e-12)
    assert float(row["acc"]) == bad[1]["test_acc"]
    md = (out / "leaderboard.md").read_text()
    assert "| 1 | FedAvg |" in md and "(1 seed)" in md
    # each run's wall time, as the sweep saw it, covers its own compute; the page says how much
    assert all(float(r["wall"]) >= float(r["seconds"]) > 0 for r in rows)
    assert "runs per worker-hour over the 4 runs" in md
    for name in ("heatmap-untargeted.png", "heatmap-targeted.svg", "ranking.csv", "worst.csv"):
        assert (out / name).stat().st_size > 0

    runs2, out2 = tmp_path / "runs2", tmp_path / "out2"
    argv = _argv(["evaluate"], spec, runs2, out2, real_data_dir)
    argv += ["--defense", "{server: {aggregator: krum, options: {f: $f}}}", "--name", "Krum"]
    argv += ["--against", str(out)]
    assert main(argv) == 0
    # only the new defense ran; FedAvg's cells came from the stored results
    assert {d for _, _, d in _records(runs2)} == {"Krum"}
    card = (out2 / "report.md").read_text()
    assert "# Report card: Krum" in card and " of 2 " in card
    merged = {r["defense"] for r in csv.DictReader((out2 / "cells.csv").open())}
    assert merged == {"FedAvg", "Krum"}
    # a second evaluation under a name already on the board is one line, exit 2
    assert main(argv[:-4] + ["--name", "FedAvg", "--against", str(out)]) == 2


def test_a_run_shared_by_two_cells_stands_for_both(tmp_path: Path) -> None:
    """Settings that differ only in a variable FedAvg ignores give FedAvg one run, which is
    the cell of both settings; Krum, which reads it, gets one run per setting."""
    from flwbc.experiments.bench import BenchSpec, collect_bench

    raw = {
        **TINY,
        "settings": {"f0": {"vars": {"f": 0}}, "f1": {"vars": {"f": 1}}},
        "regimes": {"untargeted": TINY["regimes"]["untargeted"]},
        "defenses": {
            "FedAvg": {},
            "Krum": {"server": {"aggregator": "krum", "options": {"f": "$f"}}},
        },
    }
    spec = BenchSpec.model_validate(raw)
    runs = expand_bench(spec)
    fedavg = [r for r in runs if r.coords["defense"] == "FedAvg"]
    krum = [r for r in runs if r.coords["defense"] == "Krum"]
    assert len(fedavg) == 2 and len(krum) == 4  # (clean, sign_flip) x one run / per setting
    assert all(r.also and r.also[0]["setting"] == "f1" for r in fedavg)
    cells = collect_bench(spec, runs, tmp_path)
    assert {(c.setting, c.attack) for c in cells if c.defense == "FedAvg"} == {
        (s, a) for s in ("f0", "f1") for a in (CLEAN, "sign_flip")
    }


def test_ranking_uses_the_settings_every_defense_finished() -> None:
    spec = load_bench("leaderboard")
    regimes = {"untargeted": spec.regimes["untargeted"]}
    worst = [
        Summary("untargeted", "easy", "a", "A", "acc", 0.9, None, 1, None),
        Summary("untargeted", "hard", "a", "A", "acc", 0.1, None, 1, None),
        Summary("untargeted", "easy", "a", "B", "acc", 0.8, None, 1, None),
    ]
    ranks = ranking(worst, regimes)
    # B has no "hard" cell yet: both are scored on "easy" alone, and A stays ahead
    assert [(r.defense, r.score, r.settings) for r in ranks] == [("A", 0.9, 1), ("B", 0.8, 1)]


def _write_tiny_page(out: Path) -> Path:
    """A leaderboard of two defenses (Krum ahead of FedAvg) written to `out`; its index.html."""
    from flwbc.experiments.bench import BenchCell, BenchSpec
    from flwbc.experiments.bench_report import write_bench

    spec = BenchSpec.model_validate(TINY)
    cells = [
        BenchCell("untargeted", "iid/40%", a, d, s, "clean" if a == CLEAN else "untargeted",
                  acc=acc, run="r")
        for a, d, s, acc in [
            (CLEAN, "FedAvg", 0, 0.8), ("sign_flip", "FedAvg", 0, 0.5),
            ("sign_flip", "FedAvg", 1, 0.7), (CLEAN, "Krum", 0, 0.75),
            ("sign_flip", "Krum", 0, 0.74),
        ]
    ]  # fmt: skip
    write_bench(spec, cells, out, command="test")
    return out / "index.html"


def test_the_static_page_sorts_and_embeds_its_heatmaps(tmp_path: Path) -> None:
    """index.html: sortable tables per regime (ranking, worst case per setting) whose cells
    carry their sort values, and the heatmaps inline (no file beside it needed)."""
    from html.parser import HTMLParser

    index = _write_tiny_page(tmp_path)

    class Page(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tables: list[list[list[str]]] = []
            self.svgs = self.scripts = 0

        def handle_starttag(self, tag: str, attrs: list) -> None:
            a = dict(attrs)
            if tag == "table":
                assert "sortable" in a["class"]
                self.tables.append([])
            elif tag == "tr":
                self.tables[-1].append([])
            elif tag == "td":
                self.tables[-1][-1].append(a["data-value"])
            self.svgs += tag == "svg"
            self.scripts += tag == "script"

    page = Page()
    page.feed(index.read_text())
    assert page.svgs == 1 and page.scripts == 1 and len(page.tables) == 2
    rows = [r for r in page.tables[0] if r]
    # Krum's worst (0.74) beats FedAvg's mean of 0.5 and 0.7 (0.6, with its interval)
    assert [r[1] for r in rows] == ["Krum", "FedAvg"]
    assert float(rows[1][5]) == pytest.approx(0.6) and float(rows[1][6]) > 0
    # the worst case per setting: a row per ranked defense, its one setting's worst value
    worst = [r for r in page.tables[1] if r]
    assert [(r[0], float(r[1])) for r in worst] == [
        ("Krum", pytest.approx(0.74)),
        ("FedAvg", pytest.approx(0.6)),
    ]


BROWSER_WANTED = os.environ.get("FLWBC_BROWSER_TESTS") == "1"
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(
    not (BROWSER and DRIVER) and not BROWSER_WANTED,
    reason="no chromium and chromedriver here (CI installs them and sets FLWBC_BROWSER_TESTS=1)",
)
def test_the_static_page_renders_and_sorts_in_a_headless_browser(tmp_path: Path) -> None:
    """index.html opened from disk in headless Chromium: the heatmap is drawn, a click on a
    column header sorts the rows by that column's values, a second click reverses them, and the
    page logs no script error."""
    assert BROWSER and DRIVER, "FLWBC_BROWSER_TESTS=1 but chromium or chromedriver is missing"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    index = _write_tiny_page(tmp_path / "board")
    opts = webdriver.ChromeOptions()
    opts.binary_location = BROWSER
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-quic", f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,900",
    ):  # fmt: skip
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=DRIVER))
    try:
        driver.get(index.as_uri())
        table = driver.find_element(By.CSS_SELECTOR, "table.sortable")
        heads = table.find_elements(By.TAG_NAME, "th")
        names = [h.text for h in heads]

        def column(name: str) -> list[str]:
            i = names.index(name)
            rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
            return [r.find_elements(By.TAG_NAME, "td")[i].text for r in rows]

        assert column("defense") == ["Krum", "FedAvg"]
        heads[names.index("defense")].click()
        assert column("defense") == ["FedAvg", "Krum"]
        heads[names.index("defense")].click()
        assert column("defense") == ["Krum", "FedAvg"]
        heads[names.index("value")].click()  # numerically, by data-value: 0.6 before 0.74
        assert column("defense") == ["FedAvg", "Krum"]
        svg = driver.find_element(By.TAG_NAME, "svg")
        assert svg.size["width"] > 100 and svg.size["height"] > 100
        assert driver.find_elements(By.CSS_SELECTOR, "svg image, svg path, svg rect")
        png = driver.get_screenshot_as_png()
        assert png.startswith(b"\x89PNG") and len(png) > 5000
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
    finally:
        driver.quit()


def _finished(store: Path, run, recs: list[dict]) -> None:  # noqa: ANN001
    from flwbc.experiments.store import run_dir

    path = run_dir(store, run)
    path.mkdir(parents=True)
    (path / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (path / "summary.json").write_text(json.dumps({"complete": True}))
    (path / "model.safetensors").write_bytes(b"")


def test_a_clean_cell_that_diverged_leaves_its_drops_and_baselines_unmeasured(
    tmp_path: Path,
) -> None:
    """A defense whose clean run diverges has no baseline: the attacked cells keep their own
    accuracy and success but get no drop and no effect, and the board lists the divergence."""
    from flwbc.experiments.bench import collect_bench
    from flwbc.experiments.bench_report import leaderboard_markdown

    defenses = {"FedAvg": {}, "A": {"server": {"aggregator": "median"}}}
    spec = BenchSpec.model_validate({**TINY, "defenses": defenses})
    runs = [r for r in expand_bench(spec) if r.role == "branch"]
    nan = {"train_loss": None, "nonfinite": ["train_loss"]}
    for run in runs:
        c = run.coords
        rounds = range(1, spec.regimes[c["regime"]].rounds + 1)
        broken = c["defense"] == "A" and c["attack"] == CLEAN
        recs = [
            {
                "round": t,
                "adversarial": c["attack"] != CLEAN and t <= 2,
                "train_loss": 0.5,
                "test_acc": 0.1 if broken else 0.8 - 0.1 * (c["attack"] != CLEAN),
                "backdoor_acc": 0.6,
                "backdoor_acc.badnets": 0.1,
                **(nan if broken and t == 2 else {}),
            }
            for t in rounds
        ]
        if c["defense"] == "FedAvg" and c["attack"] == "sign_flip":
            recs[0]["train_loss"] = 1e7  # exploding, not non-finite
        _finished(tmp_path, run, recs)
    cells = {(c.regime, c.attack, c.defense): c for c in collect_bench(spec, runs, tmp_path)}
    ok, bad = cells[("untargeted", "sign_flip", "FedAvg")], cells[("untargeted", "sign_flip", "A")]
    assert ok.diverged and not ok.clean_diverged and ok.acc_drop == pytest.approx(0.1)
    assert not bad.diverged and bad.clean_diverged and bad.acc_drop is None
    assert bad.acc == pytest.approx(0.7)
    assert cells[("untargeted", CLEAN, "A")].diverged
    t_ok, t_bad = cells[("targeted", "badnets", "FedAvg")], cells[("targeted", "badnets", "A")]
    assert t_ok.effect == pytest.approx(0.5) and t_bad.success == pytest.approx(0.6)
    assert t_bad.baseline is None and t_bad.effect is None
    summaries = summarize(list(cells.values()))
    worst = worst_cases(summaries, spec.regimes)
    md = leaderboard_markdown(
        spec, list(cells.values()), summaries, worst, ranking(worst, spec.regimes), command="x"
    )
    assert "## Runs that diverged" in md and "3 of 8 finished runs" in md
    assert "2 of them are clean cells" in md and "clean 10.0 (1 seed) (1 of 1 seeds diverged)" in md


def test_a_clean_run_keeps_the_specs_own_metrics_beside_the_trigger_baseline() -> None:
    """A spec's eval.metrics reach every run, its clean cells too, where the trigger baseline
    is added after them (the baseline once replaced the spec's list)."""
    from flwbc.experiments.bench import BenchSpec

    own = {"name": "lockdown_cf", "options": {"theta": 3}}
    common = {**TINY["common"], "eval": {"test_size": 500, "metrics": [own]}}
    spec = BenchSpec.model_validate({**TINY, "common": common})
    branches = [r for r in expand_bench(spec) if r.role == "branch"]
    for run in branches:
        names = [m["name"] for m in run.config["eval"]["metrics"]]
        clean_targeted = run.coords["attack"] == CLEAN and run.coords["regime"] == "targeted"
        assert names == (["lockdown_cf", "trigger"] if clean_targeted else ["lockdown_cf"])
    assert any(r.coords["attack"] == CLEAN and r.coords["regime"] == "targeted" for r in branches)


def _fake_runs(store: Path, runs: list, records) -> None:  # noqa: ANN001
    """Each of `runs` finished in `store` (records only) with `records(run)` as its rounds."""
    from flwbc.experiments.store import run_dir
    from flwbc.runio import RECORDS_ONLY, atomic_write_json

    for run in runs:
        path = run_dir(store, run)
        path.mkdir(parents=True, exist_ok=True)
        recs = records(run)
        (path / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        (path / RECORDS_ONLY).write_text("")
        atomic_write_json(path / "summary.json", {"complete": True})


def test_eq3_and_backdoors_share_one_unit_the_share_hitting_the_target(tmp_path: Path) -> None:
    """The targeted regime scores eq. 3 by D_M's share classified as the target (target_acc), a
    success rate like a backdoor's, not by D_M's mean target probability (target_conf): the two
    attacks share one colour scale and one worst case."""
    from flwbc.experiments.bench import collect_bench

    regime = {**TINY["regimes"]["targeted"], "attacks": ["badnets", "targeted"]}
    spec = BenchSpec.model_validate({**TINY, "regimes": {"targeted": regime}})
    rng = random.Random(5)
    written: dict[str, list[dict]] = {}

    def records(run) -> list[dict]:  # noqa: ANN001
        recs = [
            {
                "round": t,
                "adversarial": t <= 2 and run.coords["attack"] != CLEAN,
                "test_acc": rng.uniform(0.5, 0.9),
                "train_loss": 0.5,
                "target_conf": rng.uniform(0, 1),
                "target_acc": rng.uniform(0, 1),
                "backdoor_acc": rng.uniform(0, 1),
                "backdoor_acc.badnets": rng.uniform(0, 1),
            }
            for t in (1, 2, 3)
        ]
        written[run.coords["attack"]] = recs
        return recs

    _fake_runs(tmp_path, [r for r in expand_bench(spec) if r.role == "branch"], records)
    cells = {c.attack: c for c in collect_bench(spec, expand_bench(spec), tmp_path)}
    in_window = [0, 1]  # rounds 1-2 of the window [1, 2]
    for attack, got, base in (
        ("targeted", "target_acc", "target_acc"),
        ("badnets", "backdoor_acc", "backdoor_acc.badnets"),
    ):
        success = sum(written[attack][i][got] for i in in_window) / 2
        baseline = sum(written[CLEAN][i][base] for i in in_window) / 2
        assert cells[attack].success == pytest.approx(success, abs=1e-12)
        assert cells[attack].effect == pytest.approx(success - baseline, abs=1e-12)


def test_the_heatmap_prints_a_negative_effect_as_measured(tmp_path: Path, monkeypatch) -> None:
    """An attack that succeeds less than on the clean cell has a negative effect: its colour is
    the scale's lowest, and its printed number is the measured one, not 0."""
    import matplotlib.pyplot as plt

    from flwbc.experiments.bench_report import plot_regime

    spec = BenchSpec.model_validate(TINY)
    summaries = [
        Summary("targeted", "iid/40%", "badnets", "FedAvg", "effect", -0.031, None, 1, None),
        Summary("targeted", "iid/40%", "dba", "FedAvg", "effect", 0.42, None, 1, None),
    ]
    figures = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", figures.append)
    plot_regime(spec, "targeted", summaries, tmp_path / "heat")
    fig = figures[0]
    panel = next(ax for ax in fig.axes if ax.get_label() != "<colorbar>")
    assert sorted(t.get_text() for t in panel.texts) == ["-3", "42"]
    image = panel.get_images()[0]
    cmap, norm = image.get_cmap(), image.norm
    assert image.get_clim() == (0.0, 100.0)
    assert cmap(norm(-3.1)) == cmap(norm(0.0))  # below the scale: its lowest colour
    real_close(fig)


def test_evaluate_against_a_folder_without_a_bench_is_one_line(tmp_path: Path, capsys) -> None:
    """--against a matrix's results (its cells.csv has no regime, setting or seed) is refused in
    one line with exit 2, and nothing is left behind."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY, allow_unicode=True))
    matrix = tmp_path / "matrix"
    matrix.mkdir()
    (matrix / "cells.csv").write_text("attack,defense,kind,test_acc\nnone,A,clean,0.9\n")
    runs, out = tmp_path / "runs", tmp_path / "out"
    argv = _argv(["evaluate"], spec, runs, out, tmp_path)
    argv += ["--defense", "{server: {aggregator: median}}", "--against", str(matrix)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a bench's cells.csv" in err, err
    assert "regime" in err and "Traceback" not in err
    assert not runs.exists() and not out.exists()


def test_the_report_card_names_each_attack_it_loses_to() -> None:
    """Beside its worst case, the card lists every attack under which the defense does worse
    than the median defense under that same attack, the largest gap first."""
    from flwbc.experiments.bench import BenchCell
    from flwbc.experiments.bench_report import report_card

    spec = BenchSpec.model_validate(TINY)
    acc = {  # defense: (clean, gauss, flip, ipm)
        "A": (0.90, 0.80, 0.70, 0.60),
        "B": (0.90, 0.78, 0.68, 0.58),
        "C": (0.90, 0.76, 0.66, 0.56),
        "D": (0.90, 0.60, 0.50, 0.42),
        "N": (0.90, 0.62, 0.69, 0.55),
    }
    cells = [
        BenchCell("untargeted", "iid/40%", a, d, 0, "clean" if a == CLEAN else "untargeted",
                  acc=v)
        for d, values in acc.items()
        for a, v in zip((CLEAN, "gauss", "flip", "ipm"), values, strict=True)
    ]  # fmt: skip

    def row(name: str) -> str:
        card = report_card(spec, name, cells, command="x")
        return next(line for line in card.splitlines() if line.startswith("| iid/40% |"))

    # the median defense under each attack (5 defenses): gauss 76, flip 68, ipm 56
    assert row("N").endswith("| gauss (62.0 / 76.0), ipm (55.0 / 56.0) |"), row("N")
    assert row("A").endswith("| none |")
    assert row("D").endswith("| flip (50.0 / 68.0), gauss (60.0 / 76.0), ipm (42.0 / 56.0) |")


def test_the_report_card_does_not_count_float_noise_as_a_loss() -> None:
    """A defense at 0.1 beside peers whose three diverged seeds average to 0.10000000000000002
    holds: it is not worse than the median defense."""
    from flwbc.experiments.bench import BenchCell
    from flwbc.experiments.bench_report import report_card

    spec = BenchSpec.model_validate(TINY)
    cells = [
        BenchCell("untargeted", "iid/40%", a, d, seed, "clean" if a == CLEAN else "untargeted",
                  acc=0.9 if a == CLEAN else 0.1)
        for d, seeds in (("A", 3), ("B", 3), ("C", 3), ("N", 1))
        for seed in range(seeds)
        for a in (CLEAN, "ipm")
    ]  # fmt: skip
    card = report_card(spec, "N", cells, command="x")
    row = next(line for line in card.splitlines() if line.startswith("| iid/40% |"))
    assert row.endswith("| 10.0 | holds | none |"), row


def test_rewriting_a_board_from_a_smaller_store_is_refused(tmp_path: Path, capsys) -> None:
    """`--no-run` pointed at a store that holds fewer finished runs than the board at --out
    leaves the board as it is (one line, exit 2); --overwrite replaces it."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY, allow_unicode=True))
    out = tmp_path / "board"
    out.mkdir()
    header = "regime,setting,attack,defense,seed,kind,acc,run\n"
    rows = "".join(f"untargeted,iid/40%,{a},FedAvg,0,x,0.8,r{a}\n" for a in (CLEAN, "sign_flip"))
    (out / "cells.csv").write_text(header + rows)
    before = (out / "cells.csv").read_bytes()
    argv = _argv(["run"], spec, tmp_path / "empty", out, tmp_path) + ["--no-run"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds 2 finished runs" in err and "with 0" in err
    assert (out / "cells.csv").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["cells.csv"]
    assert not (tmp_path / "empty").exists()
    assert main([*argv, "--overwrite"]) == 0
    assert (out / "cells.csv").read_bytes() != before
    # a cells.csv that is not a bench's is replaced with --overwrite, not read
    (out / "cells.csv").write_text("attack,defense,kind,test_acc\nnone,A,clean,0.9\n")
    assert main([*argv, "--overwrite"]) == 0
    assert (out / "cells.csv").read_text().startswith("regime,setting,")


def test_the_score_carries_the_interval_of_a_mean_of_its_settings() -> None:
    """A score is the mean of k settings' worst cases; its interval covers the mean of their
    true values 95% of the time when each cell is a t-interval over few seeds of unequal
    spread (simulated); a setting without an interval leaves the score without one."""
    import numpy as np

    regimes = {"untargeted": load_bench("leaderboard").regimes["untargeted"]}
    rng = np.random.default_rng(0)
    truth = {"s1": (0.70, 0.02, 3), "s2": (0.55, 0.06, 3), "s3": (0.40, 0.03, 5)}
    target = sum(m for m, _, _ in truth.values()) / len(truth)
    trials, covered = 4000, 0
    for _ in range(trials):
        worst = []
        for setting, (mu, sd, n) in truth.items():
            mean, half = t_interval(list(rng.normal(mu, sd, n)))
            worst.append(Summary("untargeted", setting, "a", "A", "acc", mean, half, n, None,
                                 df=n - 1))  # fmt: skip
        (rank,) = ranking(worst, regimes)
        covered += abs(rank.score - target) <= rank.half_width
    assert 0.935 <= covered / trials <= 0.965, covered / trials
    one_seed = Summary("untargeted", "s4", "a", "A", "acc", 0.6, None, 1, None)
    (rank,) = ranking([*worst, one_seed], regimes)
    assert rank.half_width is None


def test_cross_gives_every_combination_with_its_coordinates_and_merged_config() -> None:
    """`cross` settings are the product of its dimensions' points, named `a/b`, each with its
    coordinate on every dimension, the points' configs merged and their `vars` taken out."""
    het = {
        "iid": {"data": {"partition": "iid"}},
        "α=0.5": {"data": {"partition": "dirichlet", "dirichlet_alpha": 0.5}},
    }
    frac = {"10%": {"vars": {"f": 1}, "attack": {"num_malicious": 1}},
            "30%": {"vars": {"f": 3}, "attack": {"num_malicious": 3}}}  # fmt: skip
    listed = {"mine": {"vars": {"f": 0}, "config": {"seed": 1}, "coords": {"het": "x"}}}
    spec = BenchSpec.model_validate(
        {**TINY, "settings": listed, "cross": {"het": het, "frac": frac}}
    )
    got = spec.all_settings()
    assert list(got) == ["mine", "iid/10%", "iid/30%", "α=0.5/10%", "α=0.5/30%"]
    for (h, hc), (f, fc) in itertools.product(het.items(), frac.items()):
        setting, coords = got[f"{h}/{f}"]
        assert coords == {"het": h, "frac": f}
        assert setting.vars == fc["vars"]
        assert setting.config == {**hc, "attack": fc["attack"]}
    assert got["mine"][1] == {"het": "x"} and got["mine"][0].vars == {"f": 0}


def test_a_defense_grid_expands_into_named_variants() -> None:
    """`grid: {dotted.path: [values]}` gives one defense per combination of values, its options
    set at the path, named by the path's last key (the whole path where two end alike)."""
    grid = {"server.options.beta": [0.1, 0.2], "server.options.f": ["$f", 3]}
    point = {"server": {"aggregator": "trimmed_mean", "options": {"beta": 0.5}}, "grid": grid}
    spec = BenchSpec.model_validate({**TINY, "defenses": {"FedAvg": {}, "trimmed mean": point}})
    names = [f"trimmed mean [beta={b}, f={f}]" for b in (0.1, 0.2) for f in ("$f", 3)]
    assert list(spec.defenses) == ["FedAvg", *names]
    for name, (b, f) in zip(names, itertools.product((0.1, 0.2), ("$f", 3)), strict=True):
        assert spec.defenses[name] == {
            "server": {"aggregator": "trimmed_mean", "options": {"beta": b, "f": f}}
        }
    assert spec.families == {n: "trimmed mean" for n in names}
    same_end = {"server.options.s": [1], "defense.options.s": [2]}
    spec = BenchSpec.model_validate({**TINY, "defenses": {"x": {"grid": same_end}}})
    assert list(spec.defenses) == ["x [server.options.s=1, defense.options.s=2]"]
    with pytest.raises(ValueError, match="non-empty lists"):
        BenchSpec.model_validate({**TINY, "defenses": {"x": {"grid": {"a.b": []}}}})
    for defenses in (
        {"A": {"grid": {"server.options.k": [1]}}, "A [k=1]": {}},
        {"A": {"grid": {"server.options.k": [0.1, "0.1"]}}},
    ):
        with pytest.raises(ValueError, match="two defenses are named 'A \\[k="):
            BenchSpec.model_validate({**TINY, "defenses": defenses})


def test_the_ranking_keeps_each_grids_best_variant() -> None:
    """Of one defense's grid variants the ranking keeps the one with the best score (mean worst
    case over settings), under its variant name; other defenses are ranked as before."""
    regimes = {"untargeted": load_bench("leaderboard").regimes["untargeted"]}
    worst = {  # defense: worst case in settings s1, s2
        "A [k=1]": (0.50, 0.70),
        "A [k=2]": (0.65, 0.60),
        "A [k=3]": (0.40, 0.90),
        "B": (0.55, 0.58),
    }
    summaries = [
        Summary("untargeted", s, "a", d, "acc", v, None, 1, None)
        for d, values in worst.items()
        for s, v in zip(("s1", "s2"), values, strict=True)
    ]
    families = {f"A [k={k}]": "A" for k in (1, 2, 3)}
    ranks = ranking(summaries, regimes, families)
    # scores: k=1 0.60, k=2 0.625, k=3 0.65 (kept), B 0.565
    assert [(r.defense, r.rank) for r in ranks] == [("A [k=3]", 1), ("B", 2)]
    assert ranks[0].score == pytest.approx(0.65)
    assert len(ranking(summaries, regimes)) == 4
    # a defense outside the grid that bears the grid's name is not one of its variants
    lone = [Summary("untargeted", s, "a", "A", "acc", 0.3, None, 1, None) for s in ("s1", "s2")]
    assert [r.defense for r in ranking([*summaries, *lone], regimes, families)] == [
        "A [k=3]",
        "B",
        "A",
    ]
    # leaderboard.md names the kept variant, out of how many
    from flwbc.experiments.bench_report import _grid_lines

    defenses = {"A": {"grid": {"server.options.k": [1, 2, 3]}}, "B": {}}
    spec = BenchSpec.model_validate({**TINY, "defenses": defenses})
    assert spec.families == families
    (line, _) = _grid_lines(spec, ranks)
    assert line.endswith("A: [k=3] of 3 variants.")
    assert _grid_lines(spec, ranks[1:]) == []


@pytest.mark.parametrize(
    ("row", "says"),
    [
        ("untargeted,α=0.1/20%,sign_flip,FedAvg,0,untargeted,0.8,r", "setting α=0.1/20%"),
        ("untargeted,iid/40%,ipm,FedAvg,0,untargeted,0.8,r", "attack ipm"),
        ("fig3,iid/40%,sign_flip,FedAvg,0,untargeted,0.8,r", "regime fig3"),
        (None, "no stored board"),
    ],
)
def test_evaluate_against_another_specs_board_is_one_line(
    tmp_path: Path, capsys, row: str | None, says: str
) -> None:
    """A stored board with a cell the spec does not define (another spec's board), or none at
    all, is refused in one line with exit 2 before anything runs or is written."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY, allow_unicode=True))
    board = tmp_path / "board"
    if row is not None:
        board.mkdir()
        (board / "cells.csv").write_text(
            "regime,setting,attack,defense,seed,kind,acc,run\n"
            "untargeted,iid/40%,sign_flip,FedAvg,0,untargeted,0.8,r\n" + row + "\n"
        )
    runs, out = tmp_path / "runs", tmp_path / "out"
    argv = _argv(["evaluate"], spec, runs, out, tmp_path)
    argv += ["--defense", "{server: {aggregator: median}}", "--against", str(board)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err, err
    assert not runs.exists() and not out.exists()


def test_an_unknown_quick_setting_or_regime_names_quick() -> None:
    from flwbc.errors import FlwbcError

    spec = BenchSpec.model_validate({**TINY, "quick": {"settings": ["nope"]}})
    with pytest.raises(FlwbcError, match=r"quick\.settings: unknown setting 'nope'.*iid/40%"):
        expand_bench(spec, quick=True)
    spec = BenchSpec.model_validate({**TINY, "quick": {"regimes": ["nada"]}})
    with pytest.raises(FlwbcError, match=r"quick\.regimes: unknown regime 'nada'"):
        expand_bench(spec, quick=True)


def test_confirmation_follows_the_worst_case_when_the_confirmed_mean_moves(
    tmp_path: Path,
) -> None:
    """The screening seed makes sign_flip FedAvg's worst attack (0.50 against gaussian's 0.60);
    its confirming seeds lift its mean to 0.70, so gaussian becomes the worst case, and gets the
    confirming seeds too: every worst case rests on all three seeds."""
    from flwbc.experiments.bench import bench_runs, collect_bench

    regime = {**TINY["regimes"]["untargeted"], "attacks": ["sign_flip", "gaussian"]}
    spec = BenchSpec.model_validate(
        {**TINY, "regimes": {"untargeted": regime}, "confirm": {"seeds": [1, 2], "worst": 1}}
    )
    acc = {(CLEAN, 0): 0.8, ("sign_flip", 0): 0.5, ("gaussian", 0): 0.6}
    acc |= {(CLEAN, s): 0.8 for s in (1, 2)} | {("sign_flip", s): 0.8 for s in (1, 2)}
    acc |= {("gaussian", s): 0.62 for s in (1, 2)}

    def records(run) -> list[dict]:  # noqa: ANN001
        a = acc[(run.coords["attack"], run.coords["seed"])]
        return [{"round": 3, "adversarial": True, "test_acc": a, "train_loss": 0.5}]

    every = expand_bench(spec, seeds=[0, 1, 2])
    _fake_runs(tmp_path, [r for r in every if r.role == "branch"], records)
    runs, reports = bench_runs(spec, tmp_path, run=False)
    assert reports == []
    seeds = {}
    for c in collect_bench(spec, runs, tmp_path):
        seeds.setdefault(c.attack, set()).add(c.seed)
    assert seeds == {CLEAN: {0, 1, 2}, "sign_flip": {0, 1, 2}, "gaussian": {0, 1, 2}}
    (worst,) = worst_cases(summarize(collect_bench(spec, runs, tmp_path)), spec.regimes)
    assert (worst.attack, worst.seeds) == ("gaussian", 3)
    assert worst.mean == pytest.approx((0.6 + 0.62 + 0.62) / 3)


def test_a_tie_but_for_float_rounding_keeps_the_confirmed_worst_case() -> None:
    """Three diverged seeds at 0.1 average to 0.10000000000000002: a one-seed cell at 0.1 ties
    with that mean, and the cell with more seeds stays the worst case (a real difference, 0.0999,
    still wins); a bench whose confirmation followed float noise would confirm every tied
    attack in turn."""
    spec = load_bench("leaderboard")
    mean3, effect3 = sum([0.1, 0.1, 0.1]) / 3, sum([0.01, 0.01, 0.58]) / 3
    assert mean3 > 0.1 and effect3 < 0.2  # the float noise this is about

    def cells(other: float) -> list[Summary]:
        return [
            Summary("untargeted", "s", CLEAN, "d", "acc", 0.8, None, 3, None),
            Summary("untargeted", "s", "a", "d", "acc", 0.1, None, 1, None),
            Summary("untargeted", "s", "b", "d", "acc", mean3, None, 3, None),
            Summary("untargeted", "s", "c", "d", "acc", other, None, 1, None),
            Summary("targeted", "s", "a", "d", "effect", 0.2, None, 1, None),
            Summary("targeted", "s", "b", "d", "effect", effect3, None, 3, None),
        ]

    (u, t) = sorted(worst_cases(cells(0.5), spec.regimes), key=lambda w: w.regime, reverse=True)
    assert (u.attack, u.seeds, t.attack, t.seeds) == ("b", 3, "b", 3)
    assert confirm_cells(spec, cells(0.5), 1) == {
        ("untargeted", "s", CLEAN, "d"),
        ("untargeted", "s", "b", "d"),
        ("targeted", "s", CLEAN, "d"),
        ("targeted", "s", "b", "d"),
    }
    (u, _) = sorted(worst_cases(cells(0.0999), spec.regimes), key=lambda w: w.regime, reverse=True)
    assert (u.attack, u.seeds) == ("c", 1)


def test_confirmation_stops_at_a_tie_between_diverged_attacks(tmp_path: Path) -> None:
    """Both attacks drive FedAvg to 0.1 in every seed: the screening picks one, its confirming
    seeds give it the same value, and the other attack is not confirmed."""
    from flwbc.experiments.bench import bench_runs, collect_bench

    regime = {**TINY["regimes"]["untargeted"], "attacks": ["sign_flip", "gaussian"]}
    spec = BenchSpec.model_validate(
        {**TINY, "regimes": {"untargeted": regime}, "confirm": {"seeds": [1, 2], "worst": 1}}
    )

    def records(run) -> list[dict]:  # noqa: ANN001
        a = 0.8 if run.coords["attack"] == CLEAN else 0.1
        return [{"round": 3, "adversarial": True, "test_acc": a, "train_loss": 0.5}]

    every = expand_bench(spec, seeds=[0, 1, 2])
    _fake_runs(tmp_path, [r for r in every if r.role == "branch"], records)
    runs, _ = bench_runs(spec, tmp_path, run=False)
    seeds: dict[str, set[int]] = {}
    for c in collect_bench(spec, runs, tmp_path):
        seeds.setdefault(c.attack, set()).add(c.seed)
    assert seeds[CLEAN] == {0, 1, 2}
    assert sorted([seeds["sign_flip"], seeds["gaussian"]], key=len) == [{0}, {0, 1, 2}]
    (worst,) = worst_cases(summarize(collect_bench(spec, runs, tmp_path)), spec.regimes)
    assert worst.seeds == 3 and seeds[worst.attack] == {0, 1, 2}


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--name", "median"], "a defense named 'median' is on the leaderboard"),
        (["--defense", "{server: {aggregator: krum}, grid: {server.options.f: [0, 1]}}"],
         "a grid belongs in a bench spec"),
    ],
)  # fmt: skip
def test_evaluate_refuses_a_grids_name_and_a_grid(
    tmp_path: Path, capsys, extra: list[str], says: str
) -> None:
    """The new defense cannot take the name of a grid declared in the spec (it would join the
    grid's variants in the ranking), and --defense is one config, not a grid."""
    raw = {
        **TINY,
        "defenses": {
            "FedAvg": {},
            "median": {"server": {"aggregator": "median"}, "grid": {"server.options.x": [1]}},
        },
    }
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(raw, allow_unicode=True))
    board = tmp_path / "board"
    board.mkdir()
    (board / "cells.csv").write_text(
        "regime,setting,attack,defense,seed,kind,acc,run\n"
        "untargeted,iid/40%,sign_flip,FedAvg,0,untargeted,0.8,r\n"
    )
    runs, out = tmp_path / "runs", tmp_path / "out"
    argv = _argv(["evaluate"], spec, runs, out, tmp_path) + ["--against", str(board)]
    argv += ["--defense", "{server: {aggregator: trimmed_mean}}", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err, err
    assert not runs.exists() and not out.exists()


def test_a_cell_confirmed_late_on_a_shared_run_gets_that_runs_seeds(tmp_path: Path) -> None:
    """Two attack names with one config share their runs. When the second becomes the worst
    case after the first was confirmed, the confirming runs stand for it too (three seeds),
    and the true worst case (gaussian) is confirmed in turn."""
    from flwbc.experiments.bench import bench_runs, collect_bench

    attacks = {
        "sf": {"attack": {"name": "sign_flip"}},
        "sf again": {"attack": {"name": "sign_flip"}},
        "gauss": {"attack": {"name": "gaussian"}},
    }
    regime = {**TINY["regimes"]["untargeted"], "attacks": attacks}
    spec = BenchSpec.model_validate(
        {**TINY, "regimes": {"untargeted": regime}, "confirm": {"seeds": [1, 2], "worst": 1}}
    )
    acc = {("honest", 0): 0.8, ("sign_flip", 0): 0.5, ("gaussian", 0): 0.6}
    acc |= {("honest", s): 0.8 for s in (1, 2)} | {("sign_flip", s): 0.8 for s in (1, 2)}
    acc |= {("gaussian", s): 0.62 for s in (1, 2)}

    def records(run) -> list[dict]:  # noqa: ANN001
        a = acc[(run.config["attack"]["name"], run.config["seed"])]
        return [{"round": 3, "adversarial": True, "test_acc": a, "train_loss": 0.5}]

    every = expand_bench(spec, seeds=[0, 1, 2])
    _fake_runs(tmp_path, [r for r in every if r.role == "branch"], records)
    runs, _ = bench_runs(spec, tmp_path, run=False)
    summaries = {s.attack: s for s in summarize(collect_bench(spec, runs, tmp_path))}
    assert {a: s.seeds for a, s in summaries.items()} == {
        CLEAN: 3,
        "sf": 3,
        "sf again": 3,
        "gauss": 3,
    }
    (worst,) = worst_cases(list(summaries.values()), spec.regimes)
    assert (worst.attack, worst.seeds) == ("gauss", 3)
