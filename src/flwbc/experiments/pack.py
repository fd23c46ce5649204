"""A bench's finished runs as one archive of their records: what a committed leaderboard is
computed from, and what lets another machine continue a run store that was lost.

A run's records (`config.json`, `summary.json`, `rounds.jsonl`, `timings.jsonl`, `wall.json`)
are a few kilobytes of JSON; its final model is far larger and no table reads it. The archive
therefore keeps the model of warm-up runs only, which branches start from. A run unpacked
without its model holds `records-only.json` instead (`runio.RECORDS_ONLY`): the store counts it
as finished, so a sweep does not run it again, and `flwbc.api` refuses, in one line, to load a
model from it or to resume it. Its `config.json` still names the paths of the machine that ran
it (`output.dir`, `init_model`).

The archive is a tar file compressed with xz; packing the same runs gives the same bytes (with
one version of liblzma). Unpacking reads JSON and tensors only, checks every member's name,
kind and size before it writes anything, never replaces a run the store already holds under
any of its names, and adds each run whole or not at all. Do not unpack into a store a sweep is
running on.
"""

from __future__ import annotations

import io
import json
import lzma
import os
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from flwbc.errors import FlwbcError
from flwbc.experiments.specs import RunSpec
from flwbc.experiments.store import is_finished, run_dir
from flwbc.runio import RECORDS_ONLY, atomic_write_bytes, atomic_write_json

RECORDS = ("config.json", "summary.json", "rounds.jsonl", "timings.jsonl", "wall.json")
MODEL = "model.safetensors"
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._,=+%-]*--([0-9a-f]{8,64})")
"""A run directory's name, `<label>--<key>`: no separators, no leading dot."""
MAX_MEMBER = 256 << 20
"""Bytes one member may hold (a run's records are kilobytes, a model megabytes)."""
MAX_TOTAL = 4 << 30
"""Bytes an archive may unpack to."""


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def archived_runs(archive: Path) -> set[str]:
    """The run directories an archive holds (names only; nothing is extracted)."""
    try:
        with tarfile.open(archive, mode="r:xz") as tar:
            return {m.name.split("/")[0] for m in tar}
    except (OSError, tarfile.TarError, lzma.LZMAError, EOFError) as err:
        raise FlwbcError(f"{archive} is not a run archive (tar.xz): {err}") from None


def pack_runs(
    runs: list[RunSpec], store: Path, dest: Path, *, force: bool = False
) -> tuple[int, int]:
    """Write the finished runs among `runs` into `dest` (atomically); (runs packed, models
    kept). Runs not finished are left out, so a bench in progress can be packed; an archive
    that would hold fewer runs than the `dest` it replaces is refused unless `force`."""
    if not store.is_dir():
        raise FlwbcError(f"no run store at {store}")
    by_dir: dict[str, tuple[RunSpec, Path]] = {}
    for run in runs:
        path = run_dir(store, run)
        if is_finished(path):
            if RUN_NAME.fullmatch(path.name) is None:
                raise FlwbcError(f"cannot pack {path.name}: not a run directory's name")
            if run.role != "branch" and not (path / MODEL).is_file():
                raise FlwbcError(f"cannot pack {path}: a warm-up without its model")
            by_dir[path.name] = (run, path)
    if not by_dir:
        raise FlwbcError(f"{store} holds no finished run of this bench")
    if dest.is_file() and not force:
        before = len(archived_runs(dest))
        if before > len(by_dir):
            raise FlwbcError(
                f"{dest} holds {before} runs, {store} only {len(by_dir)} finished ones of this "
                "bench: --force to replace it"
            )
    buf = io.BytesIO()
    models = 0
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(by_dir):
            run, path = by_dir[name]
            for rec in RECORDS:
                if (path / rec).is_file():
                    _add(tar, f"{name}/{rec}", (path / rec).read_bytes())
            if run.role != "branch":
                _add(tar, f"{name}/{MODEL}", (path / MODEL).read_bytes())
                models += 1
    try:
        atomic_write_bytes(dest, lzma.compress(buf.getvalue(), preset=9))
    except OSError as err:
        raise FlwbcError(f"cannot write {dest}: {err.strerror}") from None
    return len(by_dir), models


def _read_archive(archive: Path) -> dict[str, dict[str, bytes]]:
    """The archive's runs, each member checked: a regular file `<run>/<record or model>`."""
    runs: dict[str, dict[str, bytes]] = {}
    total = 0
    try:
        with tarfile.open(archive, mode="r:xz") as tar:
            for member in tar:
                parts = member.name.split("/")
                ok = (
                    member.isfile()
                    and len(parts) == 2
                    and RUN_NAME.fullmatch(parts[0]) is not None
                    and parts[1] in (*RECORDS, MODEL)
                )
                if not ok:
                    raise FlwbcError(
                        f"{archive}: unexpected member {member.name!r} (a run archive holds "
                        f"only <run>/{{{', '.join(RECORDS)}, {MODEL}}})"
                    )
                total += member.size
                if member.size > MAX_MEMBER or total > MAX_TOTAL:
                    raise FlwbcError(f"{archive}: {member.name} is larger than a run's files")
                f = tar.extractfile(member)
                assert f is not None
                runs.setdefault(parts[0], {})[parts[1]] = f.read()
    except OSError as err:
        raise FlwbcError(f"cannot read {archive}: {err.strerror or err}") from None
    except (tarfile.TarError, lzma.LZMAError, EOFError) as err:
        raise FlwbcError(f"{archive} is not a run archive (tar.xz): {err}") from None
    keys: dict[str, str] = {}
    for name, files in runs.items():
        if "summary.json" not in files or "rounds.jsonl" not in files:
            raise FlwbcError(f"{archive}: run {name} lacks summary.json or rounds.jsonl")
        try:
            summary = json.loads(files["summary.json"])
        except ValueError:
            summary = None
        if not isinstance(summary, dict) or not summary.get("complete"):
            raise FlwbcError(f"{archive}: run {name} is not a finished run")
        key = _key(name)
        if key in keys:
            raise FlwbcError(f"{archive}: runs {keys[key]} and {name} have one key")
        keys[key] = name
    return runs


def _key(name: str) -> str:
    match = RUN_NAME.fullmatch(name)
    assert match is not None
    return match.group(1)


@dataclass
class Unpacked:
    added: int
    kept: int
    """Runs the store already held, finished."""
    unfinished: int
    """Runs the store already held unfinished, kept as they are: a sweep continues them."""


def unpack_runs(archive: Path, store: Path) -> Unpacked:
    """Add the archive's runs to `store`, keeping every run it already holds (found by key,
    under whatever label). Each run appears at once, complete, or not at all."""
    runs = _read_archive(archive)
    try:
        store.mkdir(parents=True, exist_ok=True)
        held = {_key(p.name): p for p in store.iterdir() if RUN_NAME.fullmatch(p.name)}
        out = Unpacked(0, 0, 0)
        for name in sorted(runs):
            if (path := held.get(_key(name))) is not None:
                if is_finished(path):
                    out.kept += 1
                else:
                    out.unfinished += 1
                continue
            tmp = store / f".{name}.unpack.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                files = runs[name]
                for rec in sorted(files, key=lambda f: f == "summary.json"):  # summary last
                    atomic_write_bytes(tmp / rec, files[rec])
                if MODEL not in files:
                    atomic_write_json(tmp / RECORDS_ONLY, {"archive": archive.name})
                os.rename(tmp, store / name)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            out.added += 1
        fd = os.open(store, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise FlwbcError(f"cannot unpack into {store}: {err.strerror or err}") from None
    return out
