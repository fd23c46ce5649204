"""Run-directory files: atomic writes, a flushed JSON-lines log, and safe model files.

Models are safetensors files holding each named parameter (usable as a state_dict) plus
metadata; reading them never unpickles anything.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from flwbc.errors import FlwbcError
from flwbc.models import FlatModel

RECORDS_ONLY = "records-only.json"
"""Marks a finished run restored from an archive of its records, without its final model
(`flwbc.experiments.pack`)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_beside(path: Path) -> str:
    """A temporary file next to `path`, with the permissions a plain `open` would give."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    return tmp


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temporary file in the same directory, fsync, then rename over `path`."""
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def strict_json(obj: Any, path: str = "") -> tuple[Any, list[str]]:
    """`obj` with every non-finite float (NaN, ±Infinity, which strict JSON readers reject)
    replaced by None, and the dotted paths of those values. In a run's files a null metric
    that is listed in a record's `nonfinite` means the value was not finite (e.g. a model that
    diverged under DP noise)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None, [path]
    if isinstance(obj, dict):
        out, bad = {}, []
        for k, v in obj.items():
            out[k], sub = strict_json(v, f"{path}.{k}" if path else str(k))
            bad += sub
        return out, bad
    if isinstance(obj, list | tuple):
        items = [strict_json(v, f"{path}[{i}]") for i, v in enumerate(obj)]
        return [v for v, _ in items], [p for _, sub in items for p in sub]
    return obj, []


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    """JSON text that every reader accepts: non-finite floats become null (`strict_json`)."""
    return json.dumps(strict_json(obj)[0], allow_nan=False, **kwargs)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented strict JSON, atomically; non-finite floats become null."""
    atomic_write_bytes(path, (dumps_strict(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FlwbcError(f"file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise FlwbcError(f"{path} is not valid JSON: {err}") from None


def jsonl_line(record: dict[str, Any]) -> str:
    """One strict-JSON line for a record: non-finite values become null, named in the record's
    `nonfinite` list."""
    clean, bad = strict_json(record)
    if bad:
        clean["nonfinite"] = sorted({*clean.get("nonfinite", []), *bad})
    return json.dumps(clean, allow_nan=False) + "\n"


class JsonlLog:
    """Append-only JSON-lines file, flushed and fsynced after every record. Records are strict
    JSON: a non-finite value is written as null and its field named in the record's
    `nonfinite` list."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(jsonl_line(record))
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def partial_jsonl(path: Path) -> Iterator[JsonlLog]:
    """A `JsonlLog` at `<path>.partial` for the block's records, moved to `path` when the block
    ends; when it fails (or is interrupted) an earlier `path` stays as it was, and the partial
    file too unless it is empty."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    log = JsonlLog(partial)
    try:
        yield log
    except BaseException:
        log.close()
        if partial.stat().st_size == 0:
            partial.unlink()
        raise
    log.close()
    os.replace(partial, path)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; a torn last line (crash mid-write) is ignored. Files
    written before records were strict JSON may hold NaN, which reads as float('nan')."""
    p = Path(path)
    if not p.exists():
        return []
    records = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def save_model(
    path: str | Path,
    model: FlatModel,
    w: Tensor,
    metadata: dict[str, Any],
    extra: dict[str, Tensor] | None = None,
) -> None:
    """Save flat weights `w` as a safetensors state_dict with string metadata, atomically.

    `extra` tensors (e.g. an aggregator's state) are stored beside the parameters under their
    own names, which must not clash with parameter names.
    """
    tensors = {n: t.detach().cpu().contiguous().clone() for n, t in model.unflatten(w).items()}
    for name, t in (extra or {}).items():
        if name in tensors:
            raise ValueError(f"extra tensor name {name} clashes with a parameter")
        tensors[name] = t.detach().cpu().contiguous().clone()
    meta = {k: json.dumps(v) for k, v in metadata.items()}
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def model_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a model or checkpoint file written by `save_model` (e.g. its "round"),
    without reading its tensors."""
    with safe_open(Path(path), framework="pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}


def load_model(path: str | Path, model: FlatModel) -> tuple[Tensor, dict[str, Any]]:
    """Flat weights and metadata from a model file written by `save_model`.

    Also accepts a plain PyTorch state_dict (`.pt`/`.pth`), read with `weights_only=True`.
    The parameter names and shapes must match `model`.
    """
    p = Path(path)
    if not p.is_file():
        raise FlwbcError(f"model file not found: {p}")
    meta: dict[str, Any] = {}
    try:
        if p.suffix in (".pt", ".pth"):
            state = torch.load(p, map_location="cpu", weights_only=True)
        else:
            with safe_open(p, framework="pt") as f:
                meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (
        SafetensorError,
        RuntimeError,
        OSError,
        json.JSONDecodeError,
        pickle.UnpicklingError,
    ) as err:
        raise FlwbcError(f"cannot read model file {p}: {str(err).splitlines()[0]}") from None
    if not isinstance(state, dict):
        raise FlwbcError(f"model file {p} does not hold a state_dict")
    missing = [n for n in model.names if n not in state]
    if missing:
        raise FlwbcError(f"model file {p} lacks parameter(s) {', '.join(missing)}")
    parts = []
    for name, shape in zip(model.names, model.shapes, strict=True):
        t = state[name]
        if tuple(t.shape) != shape:
            raise FlwbcError(
                f"model file {p}: parameter {name} has shape {tuple(t.shape)}, expected {shape}"
            )
        parts.append(t.reshape(-1))
    return torch.cat(parts), meta


def load_extra(path: str | Path, prefix: str) -> dict[str, Tensor]:
    """The tensors of a file written by `save_model` whose names start with `prefix`, keyed by
    the rest of the name."""
    state = load_file(Path(path))
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
