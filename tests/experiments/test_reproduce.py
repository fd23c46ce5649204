"""`flwbc reproduce`: the end-to-end quick run on real Fashion-MNIST, and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from flwbc.cli import main
from flwbc.runio import read_jsonl


@pytest.mark.slow
def test_reproduce_fig3_quick(real_data_dir: Path, tmp_path: Path, capsys):
    out, store = tmp_path / "results", tmp_path / "store"
    argv = [
        "reproduce",
        "fig3",
        "--quick",
        "--out",
        str(out),
        "--runs",
        str(store),
        "--data-dir",
        str(real_data_dir),
        "--no-progress",
        "--jobs",
        "2",
        "--threads",
        "1",
    ]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == str(out / "REPORT.md")
    for name in ("fig3.png", "fig3.svg", "points.csv", "points.md", "curves.csv"):
        assert (out / "fig3" / name).stat().st_size > 0
    # quick fig3: one setting, four defenses, one seed, each branched from one warm-up
    dirs = sorted(p for p in store.iterdir() if p.is_dir())
    warm = [d for d in dirs if d.name.startswith("warmup-")]
    branches = [d for d in dirs if not d.name.startswith("warmup-")]
    assert len(warm) == 1 and len(branches) == 4
    assert {json.loads((d / "config.json").read_text())["threads"] for d in dirs} == {1}
    warm_model = str(warm[0] / "model.safetensors")
    for d in branches:
        cfg = json.loads((d / "config.json").read_text())
        assert cfg["init_model"] == warm_model
        assert cfg["data"]["dir"] == str(real_data_dir)
    # the points table agrees with the runs' own records
    rows = list(csv.DictReader((out / "fig3" / "points.csv").open()))
    assert sorted(r["defense"] for r in rows) == sorted(["none", "FL-WBC", "CMA", "CTMA"])
    warm_acc = json.loads((warm[0] / "summary.json").read_text())["final_test_acc"]
    for r in rows:
        d = next(
            b
            for b in branches
            if json.loads((b / "request.json").read_text())["coords"]["defense"] == r["defense"]
        )
        recs = read_jsonl(d / "rounds.jsonl")
        mean_acc = sum(x["test_acc"] for x in recs) / len(recs)
        assert r["benign accuracy (%)"].startswith(f"{100 * mean_acc:.1f} ")
        assert r["accuracy cost (points)"].startswith(f"{100 * (warm_acc - mean_acc):.1f} ")
    report = (out / "REPORT.md").read_text()
    assert "fig3/fig3.png" in report and "| fig3 | 5/5 |" in report
    # only what was named and run: no folder or row of another result
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["fig3"]
    assert set(_rows(report)) == {"fig3"}
    # a second call finds everything finished and only rewrites the outputs
    mtimes = {d: (d / "rounds.jsonl").stat().st_mtime_ns for d in dirs}
    assert main(argv) == 0
    assert {d: (d / "rounds.jsonl").stat().st_mtime_ns for d in dirs} == mtimes


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["fig9"], "unknown result 'fig9'"),
        (["fig3", "--jobs", "0"], "--jobs must be at least 1"),
        (["fig3", "--threads", "0"], "--threads must be at least 1"),
        (["fig3", "--seeds", "1,x"], "--seeds takes comma-separated integers"),
        (["missing.yaml"], "spec not found"),
    ],
)
def test_bad_input_is_one_line(args, words, tmp_path, capsys):
    code = main(["reproduce", *args, "--out", str(tmp_path / "o"), "--runs", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2
    assert words in err
    assert err.count("\n") == 1 and "Traceback" not in err


def _report_sections(report: str) -> list[str]:
    return [line[3:] for line in report.splitlines() if line.startswith("## ")]


def test_report_covers_named_spec_files_and_links_findings(tmp_path: Path, capsys):
    spec = Path(__file__).parents[2] / "examples" / "specs" / "fig2-random-schedule.yaml"
    common = ["--runs", str(tmp_path / "s"), "--no-run", "--no-progress"]
    # a user's spec alone: its report has only that spec
    assert main(["reproduce", str(spec), "--out", str(tmp_path / "a"), *common]) == 0
    sections = _report_sections((tmp_path / "a" / "REPORT.md").read_text())
    assert len(sections) == 1 and sections[0].startswith("Supplementary: Fig. 2")
    # its command names the file: the spec's id is not a result `reproduce` knows
    bodies = (tmp_path / "a" / "REPORT.md").read_text().split("\n## ")[1:]
    assert f"Command: `flwbc reproduce {spec}`." in bodies[0]
    assert "FINDINGS.md" not in (tmp_path / "a" / "REPORT.md").read_text()
    # a hand-written FINDINGS.md beside the report is linked from it
    (tmp_path / "a" / "FINDINGS.md").write_text("why\n")
    assert main(["reproduce", str(spec), "--out", str(tmp_path / "a"), *common]) == 0
    assert "[FINDINGS.md](FINDINGS.md)" in (tmp_path / "a" / "REPORT.md").read_text()
    # beside a paper result: the paper results named (and those run in the store), then the spec
    assert main(["reproduce", "fig2", str(spec), "--out", str(tmp_path / "b"), *common]) == 0
    sections = _report_sections((tmp_path / "b" / "REPORT.md").read_text())
    assert len(sections) == 2 and sections[0].startswith("Fig. 2:")
    assert sections[-1].startswith("Supplementary")
    bodies = (tmp_path / "b" / "REPORT.md").read_text().split("\n## ")[1:]
    assert "Command: `flwbc reproduce fig2`." in bodies[0]
    assert f"Command: `flwbc reproduce {spec}`." in bodies[-1]
    assert sorted(p.name for p in (tmp_path / "b").iterdir() if p.is_dir()) == sorted(
        ["fig2", "fig2-random-schedule"]
    )


def _rows(report: str) -> list[str]:
    """The result of each row of REPORT.md's claims table."""
    table = report.split("| result | runs finished |", 1)[1].split("\n\n", 1)[0]
    return [line.split(" | ")[0].removeprefix("| ") for line in table.splitlines()[2:]]


def _fake_finished_branch(store: Path, result: str) -> None:
    """One finished branch of `result` in the store, as a finished run leaves it."""
    from flwbc.experiments.reproduce import plan
    from flwbc.experiments.specs import load_settings

    branch = next(
        r for r in plan([result], load_settings(), quick=False).runs[result] if r.role == "branch"
    )
    d = store / branch.dir_name()
    d.mkdir(parents=True)
    record = {
        "round": 1,
        "adversarial": True,
        "clients": [0],
        "malicious": [0],
        "train_loss": 0.1,
        "test_acc": 0.8,
        "test_loss": 0.5,
        "target_conf": 0.9,
        "target_acc": 1.0,
    }
    (d / "rounds.jsonl").write_text(json.dumps(record) + "\n")
    (d / "timings.jsonl").write_text(json.dumps({"round": 1, "seconds": 1.0}) + "\n")
    (d / "summary.json").write_text(json.dumps({"complete": True, "rounds_done": 1}))
    (d / "model.safetensors").write_bytes(b"")


def test_one_result_writes_only_its_own_outputs(tmp_path: Path, capsys):
    out, store = tmp_path / "out", tmp_path / "store"
    argv = ["reproduce", "fig3", "--no-run", "--no-progress", "--out", str(out)]
    argv += ["--runs", str(store)]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["REPORT.md", "fig3"]
    report = (out / "REPORT.md").read_text()
    assert _report_sections(report) == [_report_sections(report)[0]]
    assert "Fig. 3" in _report_sections(report)[0]
    assert set(_rows(report)) == {"fig3"}
    assert "Runs: 0 of " in report
    # finished runs of another result do not bring it in; naming it once does, and then it
    # stays in the report that builds up
    _fake_finished_branch(store, "fig2")
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["REPORT.md", "fig3"]
    assert main([*argv[:1], "fig2", *argv[2:]]) == 0
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["REPORT.md", "fig2", "fig3"]
    report = (out / "REPORT.md").read_text()
    assert set(_rows(report)) == {"fig2", "fig3"}
    assert "Runs: 1 of " in report


def test_default_output_is_beside_the_store(tmp_path: Path, monkeypatch, capsys):
    """No default command writes into a checkout's committed results/: the outputs go beside
    the run store."""
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "fig2", "--no-run", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(Path("runs/reproduce/results/REPORT.md"))
    assert (tmp_path / "runs" / "reproduce" / "results" / "fig2" / "points.md").is_file()
    assert not (tmp_path / "results").exists()
    assert main(["reproduce", "fig2", "--no-run", "--runs", "store", "--no-progress"]) == 0
    assert (tmp_path / "store" / "results" / "REPORT.md").is_file()


def test_a_report_with_more_finished_runs_is_kept(tmp_path: Path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    committed = "# report\n\nRuns: 549 of 549 distinct runs finished (warm-ups ...).\n"
    (out / "REPORT.md").write_text(committed)
    (out / "fig2").mkdir()
    (out / "fig2" / "points.md").write_text("committed\n")
    argv = ["reproduce", "fig2", "--no-run", "--out", str(out), "--runs", str(tmp_path / "s")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "549 finished runs" in err and "--overwrite" in err
    assert (out / "REPORT.md").read_text() == committed
    assert (out / "fig2" / "points.md").read_text() == "committed\n"
    # it refuses before running anything too: 549 runs can't come from a one-seed quick plan
    assert main([*argv[:2], "--quick", *argv[3:]]) == 2
    assert not (tmp_path / "s").exists()
    capsys.readouterr()
    assert main([*argv, "--overwrite"]) == 0
    assert "Runs: 0 of " in (out / "REPORT.md").read_text()


def test_failed_runs_give_a_nonzero_exit_with_their_error(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("FLWBC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FLWBC_MIRROR", "http://127.0.0.1:9/")  # refused at once: no download
    store = tmp_path / "store"
    argv = ["reproduce", "fig3", "--quick", "--runs", str(store), "--no-progress"]
    argv += ["--data-dir", str(tmp_path / "nodata"), "--jobs", "1", "--threads", "1"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "0 runs finished, 5 failed" in err
    [warm] = [d for d in store.iterdir() if d.name.startswith("warmup-")]
    log = warm / "worker.log"
    lines = [ln for ln in err.splitlines() if ln.strip().startswith("failed ")]
    assert len(lines) == 5
    [warm_line] = [
        ln for ln in lines if ln.strip().startswith(f"failed {warm.name.split('--')[-1]}:")
    ]
    assert "dataset 'fmnist' not found" in warm_line and f"log: {log}" in warm_line
    assert sum("its warm-up" in ln for ln in lines) == 4
