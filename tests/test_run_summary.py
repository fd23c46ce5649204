"""A run's closing lines state what its attack is measured by (backdoor success, D_M
confidence, accuracy drop) and a flagging rule's detection counts; `flwbc compare` shows each
run's own measure and marks each run's adversarial rounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flwbc.cli import compare_table, main


def _run(real_data_dir: Path, out: Path, name: str, *flags: str) -> list[str]:
    argv = [
        "run",
        "--no-progress",
        "--data-dir",
        str(real_data_dir),
        "--out",
        str(out),
        "--name",
        name,
        "--federation-num-clients",
        "10",
        "--federation-clients-per-round",
        "5",
        "--local-epochs",
        "1",
        "--local-batch-size",
        "64",
        "--data-train-fraction",
        "0.05",
        "--attack-num-malicious",
        "2",
        *flags,
    ]
    assert main(argv) == 0
    return []


@pytest.mark.slow
def test_backdoor_run_ends_with_its_success_and_flags(
    real_data_dir: Path, tmp_path: Path, capsys
) -> None:
    _run(
        real_data_dir,
        tmp_path,
        "bd",
        "--rounds",
        "3",
        "--attack-rounds",
        "1,2",
        "--attack-name",
        "badnets",
        "--server-aggregator",
        "flame",
    )
    lines = capsys.readouterr().out.strip().splitlines()
    records = [json.loads(x) for x in (tmp_path / "bd" / "rounds.jsonl").read_text().splitlines()]
    summary = json.loads((tmp_path / "bd" / "summary.json").read_text())
    det = summary["detection"]
    success = 100 * records[-1]["backdoor_acc"]
    assert lines[2] == "attack: badnets (backdoor), adversarial rounds 1-2"
    assert lines[3].startswith(f"backdoor success: {success:.1f}% at round 3 (mean over")
    assert lines[-1] == (
        f"detection (flame, summed over the rounds): attacker rows flagged {det['tp']} of "
        f"{det['tp'] + det['fn']}, benign rows flagged {det['fp']} of {det['fp'] + det['tn']}; "
        + ("precision -" if det["precision"] is None else f"precision {det['precision']:.2f}")
        + f", recall {det['recall']:.2f}"
    )
    assert det["tp"] + det["fn"] == 4  # two attackers in each of the two adversarial rounds
    assert not any("mitigation rounds" in x and "adversarial round" in x for x in lines)

    # compare: the run's own measure, and the round marked adversarial for this run only
    _run(real_data_dir, tmp_path, "clean", "--rounds", "3", "--attack-prob", "0")
    table = compare_table([tmp_path / "bd", tmp_path / "clean"]).splitlines()
    assert table[0] == "| round | bd adv | bd acc | bd backdoor | clean adv | clean acc |"
    row1 = [c.strip() for c in table[2].strip("|").split("|")]
    assert row1[:2] == ["1", "yes"] and row1[4] == ""
    assert row1[3] == f"{records[0]['backdoor_acc']:.4f}"


@pytest.mark.slow
def test_untargeted_run_says_how_to_measure_its_drop(
    real_data_dir: Path, tmp_path: Path, capsys
) -> None:
    _run(
        real_data_dir,
        tmp_path,
        "gauss",
        "--rounds",
        "1",
        "--attack-rounds",
        "1",
        "--attack-name",
        "gaussian",
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[2] == "attack: gaussian (untargeted), adversarial rounds 1"
    assert lines[3].startswith("accuracy drop: not measured (run the same config without")
    assert len(lines) == 4  # FedAvg flags nobody: no detection line
