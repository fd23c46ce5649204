"""The command line: flags map to config fields, user mistakes print one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flwbc.cli import _config_from_args, build_parser, main


def parse(*argv: str):
    return _config_from_args(build_parser().parse_args(["run", *argv]))


def test_flags_reach_nested_fields() -> None:
    cfg = parse(
        "--dataset",
        "cifar10",
        "--local-epochs",
        "3",
        "--wbc-s",
        "0.7",
        "--client-defense",
        "wbc",
        "--attack-rounds",
        "4,9",
        "--attack-target",
        "none",
        "--set",
        "server.options.beta=0.2",
        "--wbc-reset-each-epoch",
        "true",
        "--output-name",
        "yes",
    )
    assert cfg.data.name == "cifar10" and cfg.local.epochs == 3
    assert cfg.defense.client == "wbc" and cfg.defense.wbc.s == 0.7
    assert cfg.defense.wbc.reset_each_epoch is True
    assert cfg.attack.rounds == [4, 9] and cfg.attack.target is None
    assert cfg.server.options == {"beta": 0.2}
    assert cfg.output.name == "yes"
    assert cfg.model_name == "cifar_cnn"


def test_none_is_a_value_where_the_field_allows_it() -> None:
    cfg = parse("--client-defense", "none", "--attack-target", "none", "--data-dir", "null")
    assert cfg.defense.client == "none"
    assert cfg.attack.target is None and cfg.data.dir is None


def test_config_file_then_flags(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("local:\n  epochs: 2\n  batch_size: 32\nattack:\n  num_images: 10\n")
    cfg = parse("--config", str(f), "--local-epochs", "5")
    assert (cfg.local.epochs, cfg.local.batch_size, cfg.attack.num_images) == (5, 32, 10)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--local-lr", "-1"], "local.lr"),
        (["--attack-num-malicious", "11"], "attack.num_malicious"),
        (["--wbc-noise", "gauss"], "defense.wbc.noise"),
        (["--set", "local.nope=1"], "local.nope"),
        (["--aggregator", "krumm"], "krumm"),
        (["--config", "/nonexistent.yaml"], "not found"),
    ],
)
def test_user_mistakes_give_one_line(tmp_path: Path, capsys, argv: list[str], needle: str) -> None:
    code = main(["run", "--no-progress", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("flwbc: error: ") and err.count("\n") == 1 and needle in err
    assert "Traceback" not in err


def test_cli_subprocess_bad_value_has_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flwbc.cli",
            "run",
            "--federation-rounds",
            "0",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "flwbc: error: invalid config: federation.rounds = 0: Input should be greater than or "
        "equal to 1"
    ]


@pytest.mark.slow
def test_cli_run_and_summary(real_data_dir: Path, tmp_path: Path, capsys) -> None:
    argv = [
        "run",
        "--no-progress",
        "--data-dir",
        str(real_data_dir),
        "--out",
        str(tmp_path),
        "--name",
        "cli",
        "--federation-num-clients",
        "10",
        "--federation-clients-per-round",
        "4",
        "--rounds",
        "2",
        "--local-epochs",
        "1",
        "--local-batch-size",
        "64",
        "--data-train-fraction",
        "0.05",
        "--attack-num-malicious",
        "2",
        "--attack-rounds",
        "1",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "adversarial round 1: attack mitigation rounds" in out
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert summary["rounds_done"] == 2
    assert main(argv) == 2  # the directory holds a run already
    assert "--resume" in capsys.readouterr().err
    assert main(["summary", str(tmp_path / "cli")]) == 0


def test_resume_refuses_config_flags(tmp_path: Path, capsys) -> None:
    assert main(["run", "--resume", str(tmp_path), "--rounds", "5"]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "federation.rounds" in err and err.count("\n") == 1


@pytest.mark.slow
def test_ctrl_c_names_the_run_to_resume(
    real_data_dir: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    import dataclasses

    from flwbc.engine import ENGINES

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    batched = dataclasses.replace(ENGINES["batched"], train_rounds=interrupt)
    monkeypatch.setitem(ENGINES, "batched", batched)
    argv = [
        "run",
        "--no-progress",
        "--data-dir",
        str(real_data_dir),
        "--out",
        str(tmp_path),
        "--name",
        "x",
        "--model",
        "mlp",
    ]
    assert main(argv) == 130
    assert f"flwbc run --resume {tmp_path / 'x'}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "options"),
    [
        (["--server-options", "beta=0.2"], {"beta": 0.2}),
        (["--server-options", "beta=0.2, f=1"], {"beta": 0.2, "f": 1}),
        (["--server-options", '{"beta": 0.3}'], {"beta": 0.3}),
        (["--server-options", "{beta: 0.3, f: 2}"], {"beta": 0.3, "f": 2}),
        (["--set", "server.options.sigma=1e38"], {"sigma": 1e38}),
        (["--set", "server.options.beta=.5"], {"beta": 0.5}),
    ],
)
def test_server_options_take_pairs_or_json(argv: list[str], options: dict) -> None:
    assert parse(*argv).server.options == options


def test_attack_rounds_take_a_list_with_or_without_brackets() -> None:
    assert parse("--attack-rounds", "[1,16]").attack.rounds == [1, 16]
    assert parse("--attack-rounds", "1, 16").attack.rounds == [1, 16]


@pytest.mark.parametrize("bad", ["beta", "{beta", "=3"])
def test_bad_server_options_are_one_line(tmp_path: Path, capsys, bad: str) -> None:
    assert main(["run", "--out", str(tmp_path), "--server-options", bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flwbc: error: ") and err.count("\n") == 1 and "KEY=VALUE" in err


def test_help_lists_aggregators_and_formats(capsys) -> None:
    from flwbc.server import AGGREGATORS

    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "one of " + ", ".join(sorted(AGGREGATORS)) in text
    assert "comma-separated, e.g. 1,16" in text and "KEY=VALUE,... or a JSON mapping" in text
