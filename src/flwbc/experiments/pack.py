"""A bench's finished runs as one archive of their records: what a committed leaderboard is
computed from, and what lets another machine continue a run store that was lost.

A run's records (`config.json`, `summary.json`, `rounds.jsonl`, `timings.jsonl`, `wall.json`)
are a few kilobytes of JSON; its final model is far larger and no table reads it. The archive
therefore keeps the model of warm-up runs only, which branches start from. A run unpacked
without its model holds `records-only.json` instead (`runio.RECORDS_ONLY`): the store counts it
as finished, so a sweep does not run it again, and `flwbc.api` refuses, in one line, to load a
model from it. The archive is a tar file compressed with xz; packing the same runs gives the same
bytes. Unpacking reads JSON and tensors only, checks every member's name and kind before it
writes anything, and never replaces a run the store already holds.
"""

from __future__ import annotations

import io
import json
import lzma
import os
import re
import shutil
import tarfile
from pathlib import Path

from flwbc.errors import FlwbcError
from flwbc.experiments.specs import RunSpec
from flwbc.experiments.store import is_finished, run_dir
from flwbc.runio import RECORDS_ONLY, atomic_write_bytes, atomic_write_json

RECORDS = ("config.json", "summary.json", "rounds.jsonl", "timings.jsonl", "wall.json")
MODEL = "model.safetensors"
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._,=+%-]*--[0-9a-f]{8,64}")
"""A run directory's name, `<label>--<key>`: no separators, no leading dot."""


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def pack_runs(runs: list[RunSpec], store: Path, dest: Path) -> tuple[int, int]:
    """Write the finished runs among `runs` into `dest` (atomically); (runs packed, models
    kept). Runs not finished are left out, so a bench in progress can be packed."""
    by_dir: dict[str, tuple[RunSpec, Path]] = {}
    for run in runs:
        path = run_dir(store, run)
        if is_finished(path):
            by_dir[path.name] = (run, path)
    buf = io.BytesIO()
    models = 0
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(by_dir):
            run, path = by_dir[name]
            for rec in RECORDS:
                if (path / rec).is_file():
                    _add(tar, f"{name}/{rec}", (path / rec).read_bytes())
            if run.role != "branch" and (path / MODEL).is_file():
                _add(tar, f"{name}/{MODEL}", (path / MODEL).read_bytes())
                models += 1
    atomic_write_bytes(dest, lzma.compress(buf.getvalue(), preset=9))
    return len(by_dir), models


def _read_archive(archive: Path) -> dict[str, dict[str, bytes]]:
    """The archive's runs, each member checked: a regular file `<run>/<record or model>`."""
    runs: dict[str, dict[str, bytes]] = {}
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
                f = tar.extractfile(member)
                assert f is not None
                runs.setdefault(parts[0], {})[parts[1]] = f.read()
    except FileNotFoundError:
        raise FlwbcError(f"{archive}: no such file") from None
    except (tarfile.TarError, lzma.LZMAError, EOFError) as err:
        raise FlwbcError(f"{archive} is not a run archive (tar.xz): {err}") from None
    for name, files in runs.items():
        if "summary.json" not in files or "rounds.jsonl" not in files:
            raise FlwbcError(f"{archive}: run {name} lacks summary.json or rounds.jsonl")
        try:
            summary = json.loads(files["summary.json"])
        except ValueError:
            summary = None
        if not isinstance(summary, dict) or not summary.get("complete"):
            raise FlwbcError(f"{archive}: run {name} is not a finished run")
    return runs


def unpack_runs(archive: Path, store: Path) -> tuple[int, int]:
    """Add the archive's runs to `store`; (runs added, runs the store already held, which
    are kept as they are). Each run appears at once, complete, or not at all."""
    runs = _read_archive(archive)
    store.mkdir(parents=True, exist_ok=True)
    added = kept = 0
    for name in sorted(runs):
        final = store / name
        if final.exists():
            kept += 1
            continue
        tmp = store / f".{name}.unpack.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            for rec, data in runs[name].items():
                (tmp / rec).write_bytes(data)
            if MODEL not in runs[name]:
                atomic_write_json(tmp / RECORDS_ONLY, {"archive": archive.name})
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        added += 1
    return added, kept
