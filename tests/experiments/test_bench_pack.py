"""`flwbc bench pack` / `unpack`: a bench's runs as one archive of their records, restored into
another store as finished runs the board is rebuilt from and a sweep does not run again."""

from __future__ import annotations

import io
import json
import lzma
import os
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml

from flwbc.cli import main
from flwbc.errors import FlwbcError
from flwbc.experiments import pack
from flwbc.experiments.bench import BenchSpec, bench_runs, collect_bench, expand_bench
from flwbc.experiments.pack import Unpacked, pack_runs, unpack_runs
from flwbc.experiments.store import is_finished, run_dir, run_request
from flwbc.experiments.sweep import run_sweep
from flwbc.runio import RECORDS_ONLY
from tests.experiments.test_bench import TINY


def _store(store: Path, spec: BenchSpec) -> list:
    """Every run of the tiny bench finished with made-up records; each model is its own bytes."""
    runs = expand_bench(spec)
    for i, run in enumerate(runs):
        path = run_dir(store, run)
        path.mkdir(parents=True)
        rounds = spec.regimes[run.coords["regime"]].rounds if run.role == "branch" else 2
        recs = [
            {
                "round": t,
                "adversarial": t <= 2,
                "test_acc": 0.5 + 0.01 * i + 0.001 * t,
                "backdoor_acc": 0.1 * t,
            }
            for t in range(1, rounds + 1)
        ]
        (path / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        (path / "summary.json").write_text(json.dumps({"complete": True, "i": i}))
        (path / "config.json").write_text(json.dumps(run.config))
        (path / "model.safetensors").write_bytes(f"model {i}".encode())
        (path / "checkpoint.safetensors").write_bytes(b"not packed")
    return runs


def test_pack_then_unpack_restores_finished_runs_and_their_cells(tmp_path: Path) -> None:
    spec = BenchSpec.model_validate(TINY)
    a, b = tmp_path / "a", tmp_path / "b"
    runs = _store(a, spec)
    warm = [r for r in runs if r.role == "warmup"]
    assert warm and len(runs) > len(warm)
    archive = tmp_path / "runs.tar.xz"
    assert pack_runs(runs, a, archive) == (len(runs), len(warm))
    first = archive.read_bytes()
    for p in a.rglob("*"):  # other times and modes: the same runs give the same bytes
        os.utime(p, (1e9, 1e9))
        p.chmod(0o700 if p.is_dir() else 0o600)
    pack_runs(runs, a, archive)
    assert archive.read_bytes() == first
    assert unpack_runs(archive, b) == Unpacked(len(runs), 0, 0)
    for run in runs:
        src, dst = run_dir(a, run), run_dir(b, run)
        assert dst.name == src.name and is_finished(dst)
        assert (dst / "rounds.jsonl").read_bytes() == (src / "rounds.jsonl").read_bytes()
        assert not (dst / "checkpoint.safetensors").exists()
        if run.role == "warmup":  # branches start from it: kept, byte for byte
            assert (dst / "model.safetensors").read_bytes() == (
                src / "model.safetensors"
            ).read_bytes()
            assert not (dst / RECORDS_ONLY).exists()
        else:
            assert not (dst / "model.safetensors").exists() and (dst / RECORDS_ONLY).is_file()
    assert collect_bench(spec, runs, b) == collect_bench(spec, runs, a)
    # a sweep over the restored store has nothing left to run
    before = sorted((p, p.stat().st_mtime_ns) for p in b.rglob("*"))
    report = run_sweep(runs, b, progress=False)
    assert sorted(report.finished) == sorted(r.key for r in runs) and not report.failed
    assert sorted((p, p.stat().st_mtime_ns) for p in b.rglob("*")) == before
    assert not list(b.glob(".*.tmp"))
    # a branch still to run starts from the restored warm-up's model
    branch = next(r for r in runs if r.parent is not None)
    shutil.rmtree(run_dir(b, branch))
    by_key = {r.key: r for r in runs}
    init = run_request(b, branch, by_key, threads=1)["config"]["init_model"]
    assert (
        Path(init).read_bytes()
        == (run_dir(a, by_key[branch.parent]) / "model.safetensors").read_bytes()
    )


def test_unpack_keeps_the_runs_a_store_holds(tmp_path: Path) -> None:
    spec = BenchSpec.model_validate(TINY)
    a, b = tmp_path / "a", tmp_path / "b"
    runs = _store(a, spec)
    pack_runs(runs, a, tmp_path / "runs.tar.xz")
    mine = run_dir(b, runs[-1])
    mine.mkdir(parents=True)
    (mine / "rounds.jsonl").write_text("mine\n")
    # held under another label (an earlier version's), finished: found by its key
    other = runs[0]
    held = b / f"oldlabel--{other.key}"
    shutil.copytree(run_dir(a, other), held)
    assert unpack_runs(tmp_path / "runs.tar.xz", b) == Unpacked(len(runs) - 2, 1, 1)
    assert (mine / "rounds.jsonl").read_text() == "mine\n"
    assert not (mine / RECORDS_ONLY).exists()
    assert not (b / other.dir_name()).exists()


def _tar(members: list[tuple[str, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return lzma.compress(buf.getvalue())


RUN = "fmnist-iid-E1B32-sign_flip-none-fedavg-m2n1-s0--0123456789ab"
DONE = json.dumps({"complete": True}).encode()


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([(f"{RUN}/summary.json", DONE), (f"{RUN}/../escape.json", b"{}")], "unexpected member"),
        ([(f"../{RUN}/summary.json", DONE)], "unexpected member"),
        ([(f"{RUN}/summary.json", DONE), (f"{RUN}/rounds.jsonl", None)], "unexpected member"),
        ([(f"{RUN}/summary.json", DONE), (f"{RUN}/state.pkl", b"x")], "unexpected member"),
        ([(f"{RUN}/summary.json", b'{"complete": false}'), (f"{RUN}/rounds.jsonl", b"")], "not a"),
        ([(f"{RUN}/summary.json", DONE)], "lacks summary.json or rounds.jsonl"),
        (
            [(f"{RUN}/summary.json", DONE), (f"{RUN}/rounds.jsonl", b"")]
            + [(f"x--{RUN.split('--')[1]}/summary.json", DONE)]
            + [(f"x--{RUN.split('--')[1]}/rounds.jsonl", b"")],
            "have one key",
        ),
        ([(f"{RUN}/rounds.jsonl", b"0" * 5000)], "larger than a run's files"),
    ],
)
def test_unpack_checks_every_member_before_writing_anything(
    tmp_path: Path, members: list, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = f"fmnist-iid-E1B32-honest-none-fedavg-m2n1-s0--{'f' * 12}"
    archive = tmp_path / "bad.tar.xz"
    archive.write_bytes(
        _tar([(f"{good}/summary.json", DONE), (f"{good}/rounds.jsonl", b"")] + members)
    )
    store = tmp_path / "store"
    monkeypatch.setattr(pack, "MAX_MEMBER", 4096)
    with pytest.raises(FlwbcError, match=why):
        unpack_runs(archive, store)
    assert not store.exists() and not (tmp_path / "escape.json").exists()


def test_the_cli_packs_unpacks_and_says_what_is_wrong_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(yaml.safe_dump(TINY, allow_unicode=True))
    spec = BenchSpec.model_validate(TINY)
    a, b = tmp_path / "a", tmp_path / "b"
    runs = _store(a, spec)
    want, _ = bench_runs(spec, a, run=False)
    archive = tmp_path / "runs.tar.xz"
    assert main(["bench", "pack", str(spec_path), "--runs", str(a), "--out", str(archive)]) == 0
    assert f"{len(runs)} of {len(want)} runs packed" in capsys.readouterr().out
    first = archive.read_bytes()
    wrong = ["bench", "pack", str(spec_path), "--runs", str(tmp_path / "x"), "--out", str(archive)]
    assert main(wrong) == 2 and archive.read_bytes() == first
    assert capsys.readouterr().err.strip() == f"flwbc: error: no run store at {tmp_path / 'x'}"
    assert main(["bench", "unpack", str(archive), "--runs", str(b)]) == 0
    assert f"{len(runs)} runs added" in capsys.readouterr().out
    (tmp_path / "junk.tar.xz").write_bytes(b"not an archive")
    assert main(["bench", "unpack", str(tmp_path / "junk.tar.xz"), "--runs", str(b)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a run archive" in err and "\n" not in err


def _restored_branch(tmp_path: Path) -> Path:
    """A branch run packed from one store and unpacked into another (records only)."""
    spec = BenchSpec.model_validate(TINY)
    runs = _store(tmp_path / "a", spec)
    pack_runs(runs, tmp_path / "a", tmp_path / "runs.tar.xz")
    unpack_runs(tmp_path / "runs.tar.xz", tmp_path / "b")
    return run_dir(tmp_path / "b", next(r for r in runs if r.role == "branch"))


def test_a_records_only_run_refuses_to_load_a_model_in_one_line(tmp_path: Path) -> None:
    from flwbc.api import load_run

    with pytest.raises(FlwbcError, match="restored from an archive of records, without its model"):
        load_run(_restored_branch(tmp_path))


def test_pack_refuses_what_would_lose_runs(tmp_path: Path) -> None:
    spec = BenchSpec.model_validate(TINY)
    a = tmp_path / "a"
    runs = _store(a, spec)
    archive = tmp_path / "runs.tar.xz"
    with pytest.raises(FlwbcError, match="no run store"):
        pack_runs(runs, tmp_path / "elsewhere", archive)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FlwbcError, match="holds no finished run"):
        pack_runs(runs, tmp_path / "empty", archive)
    assert not archive.exists()
    pack_runs(runs, a, archive)
    first = archive.read_bytes()
    shutil.rmtree(run_dir(a, runs[-1]))
    with pytest.raises(FlwbcError, match=f"holds {len(runs)} runs"):
        pack_runs(runs, a, archive)
    assert archive.read_bytes() == first
    assert pack_runs(runs, a, archive, force=True)[0] == len(runs) - 1
    warm = next(r for r in runs if r.role == "warmup")
    (run_dir(a, warm) / "model.safetensors").unlink()
    (run_dir(a, warm) / RECORDS_ONLY).write_text("{}")
    with pytest.raises(FlwbcError, match="a warm-up without its model"):
        pack_runs(runs, a, archive, force=True)


def test_a_restored_run_refuses_to_resume(tmp_path: Path) -> None:
    from flwbc.api import run

    path = _restored_branch(tmp_path)
    files = sorted(p.name for p in path.iterdir())
    with pytest.raises(FlwbcError, match="restored from an archive of its records: nothing to"):
        run(resume=path, progress=False)
    assert sorted(p.name for p in path.iterdir()) == files
