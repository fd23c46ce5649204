"""Run-directory files: atomic JSON, the JSON-lines log, and safe model files."""

from __future__ import annotations

import json
import math
import os
import pickle
import stat
from pathlib import Path

import pytest
import torch
from torch import nn

from flwbc.errors import FlwbcError
from flwbc.models import FlatModel
from flwbc.runio import (
    JsonlLog,
    atomic_write_json,
    load_model,
    read_json,
    read_jsonl,
    save_model,
)


def _flat() -> FlatModel:
    torch.manual_seed(0)
    return FlatModel(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


# --------------------------------------------------------------------------- JSON


def test_atomic_json_round_trip(tmp_path):
    obj = {"a": 1, "b": [1.5, None, "x"], "nested": {"ü": True}}
    p = tmp_path / "summary.json"
    atomic_write_json(p, obj)
    assert read_json(p) == obj
    assert json.loads(p.read_text()) == obj
    atomic_write_json(p, [1, 2])
    assert read_json(p) == [1, 2]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["summary.json"]


def test_atomic_json_failure_keeps_previous_file(tmp_path, monkeypatch):
    p = tmp_path / "summary.json"
    atomic_write_json(p, {"old": True})

    def boom(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_json(p, {"new": True})
    monkeypatch.undo()
    assert read_json(p) == {"old": True}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["summary.json"]


def test_atomic_json_unserialisable_keeps_previous_file(tmp_path):
    p = tmp_path / "s.json"
    atomic_write_json(p, {"old": 1})
    with pytest.raises(TypeError):
        atomic_write_json(p, {"bad": object()})
    assert read_json(p) == {"old": 1}
    assert [x.name for x in tmp_path.iterdir()] == ["s.json"]


def test_read_json_errors(tmp_path):
    with pytest.raises(FlwbcError):
        read_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(FlwbcError) as ei:
        read_json(bad)
    assert "\n" not in str(ei.value)


# --------------------------------------------------------------------------- JSON lines


def test_jsonl_append_and_torn_line(tmp_path):
    p = tmp_path / "rounds.jsonl"
    assert read_jsonl(p) == []
    with JsonlLog(p) as log:
        log.write({"round": 1, "acc": 0.5})
        log.write({"round": 2, "acc": None})
        # flushed: readable while still open
        assert read_jsonl(p) == [{"round": 1, "acc": 0.5}, {"round": 2, "acc": None}]
    with JsonlLog(p) as log:  # appends, does not truncate
        log.write({"round": 3})
    assert [r["round"] for r in read_jsonl(p)] == [1, 2, 3]
    with open(p, "a") as f:
        f.write('{"round": 4, "ac')  # crash mid-write
    assert [r["round"] for r in read_jsonl(p)] == [1, 2, 3]


# --------------------------------------------------------------------------- models


def test_model_round_trip_with_metadata(tmp_path):
    flat = _flat()
    w = torch.randn(flat.num_params, generator=torch.Generator().manual_seed(1))
    meta = {"round": 7, "dataset": "fmnist", "acc": 0.91, "ids": [1, 2], "none": None}
    p = tmp_path / "model.safetensors"
    save_model(p, flat, w, meta)
    w2, meta2 = load_model(p, flat)
    assert torch.equal(w2, w)
    assert meta2 == meta
    assert [x.name for x in tmp_path.iterdir()] == ["model.safetensors"]
    # usable as a state_dict of the module
    other = _flat()
    from safetensors.torch import load_file

    other.module.load_state_dict(load_file(p))
    assert torch.equal(other.get_vector(), w)


def test_save_model_failure_keeps_previous(tmp_path, monkeypatch):
    flat = _flat()
    p = tmp_path / "ckpt.safetensors"
    w_old = flat.get_vector()
    save_model(p, flat, w_old, {"round": 1})
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("nope")))
    with pytest.raises(OSError):
        save_model(p, flat, w_old + 1, {"round": 2})
    monkeypatch.undo()
    w, meta = load_model(p, flat)
    assert torch.equal(w, w_old) and meta == {"round": 1}
    assert [x.name for x in tmp_path.iterdir()] == ["ckpt.safetensors"]


def test_load_plain_state_dict(tmp_path):
    flat = _flat()
    p = tmp_path / "m.pt"
    torch.save(flat.module.state_dict(), p)
    w, meta = load_model(p, flat)
    assert torch.equal(w, flat.get_vector()) and meta == {}


def test_load_model_shape_mismatch(tmp_path):
    flat = _flat()
    p = tmp_path / "m.safetensors"
    save_model(p, flat, flat.get_vector(), {})
    other = FlatModel(nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)))
    with pytest.raises(FlwbcError, match="shape"):
        load_model(p, other)


def test_load_model_missing_parameter_and_file(tmp_path):
    flat = _flat()
    p = tmp_path / "m.pt"
    sd = flat.module.state_dict()
    del sd["2.bias"]
    torch.save(sd, p)
    with pytest.raises(FlwbcError, match="2.bias"):
        load_model(p, flat)
    with pytest.raises(FlwbcError):
        load_model(tmp_path / "nope.safetensors", flat)


def test_load_model_garbage_file(tmp_path):
    flat = _flat()
    for name in ("junk.safetensors", "junk.pt"):
        p = tmp_path / name
        p.write_bytes(b"\x00\x01 this is not a model file" * 10)
        with pytest.raises(FlwbcError) as ei:
            load_model(p, flat)
        assert "\n" not in str(ei.value)


class _Evil:
    sentinel = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_load_model_refuses_pickled_code(tmp_path, writer):
    flat = _flat()
    sentinel = tmp_path / "SENTINEL"
    evil = _Evil()
    evil.sentinel = str(sentinel)
    payload = {"0.weight": evil}
    p = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(payload, p)
    else:
        with open(p, "wb") as f:
            pickle.dump(payload, f)
    assert not sentinel.exists()
    raised = None
    try:
        load_model(p, flat)
    except Exception as err:  # checked below, after the security property
        raised = err
    assert not sentinel.exists(), "load_model executed code from a pickle"
    assert isinstance(raised, FlwbcError), f"expected FlwbcError, got {raised!r}"
    assert "\n" not in str(raised)


def test_evil_payload_is_live(tmp_path):
    """Guards the test above: unrestricted unpickling of _Evil does create the sentinel."""
    sentinel = tmp_path / "SENTINEL"
    evil = _Evil()
    evil.sentinel = str(sentinel)
    pickle.loads(pickle.dumps(evil))
    assert sentinel.exists()


def _write_json(p: Path) -> None:
    atomic_write_json(p, {"x": 1})


def _write_jsonl(p: Path) -> None:
    with JsonlLog(p) as log:
        log.write({"x": 1})


def _write_model(p: Path) -> None:
    flat = _flat()
    save_model(p, flat, flat.get_vector(), {"round": 1})


@pytest.mark.parametrize(
    "writer,name",
    [(_write_json, "a.json"), (_write_jsonl, "a.jsonl"), (_write_model, "a.safetensors")],
    ids=["json", "jsonl", "model"],
)
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)], ids=["022", "027"])
def test_created_file_modes_follow_umask(tmp_path, writer, name, umask, mode):
    """Files get the permissions a plain open() would give: 0o666 & ~umask."""
    old = os.umask(umask)
    try:
        writer(tmp_path / name)
    finally:
        os.umask(old)
    assert oct(_mode(tmp_path / name)) == oct(mode)


# --------------------------------------------------------------------------- strict JSON


def _strict_loads(text: str):
    """Python's json with NaN/Infinity refused, as jq and JavaScript's JSON.parse do."""

    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_values_are_written_as_null_and_named(tmp_path):
    p = tmp_path / "rounds.jsonl"
    with JsonlLog(p) as log:
        log.write({"round": 1, "target_conf": float("nan"), "test_loss": float("inf"), "ok": 1.5})
        log.write({"round": 2, "target_conf": 0.25, "info": {"norms": [1.0, -float("inf")]}})
        log.write({"round": 3, "target_conf": 0.5})
    lines = [_strict_loads(line) for line in p.read_text().splitlines()]
    assert lines[0] == {
        "round": 1,
        "target_conf": None,
        "test_loss": None,
        "ok": 1.5,
        "nonfinite": ["target_conf", "test_loss"],
    }
    assert lines[1] == {
        "round": 2,
        "target_conf": 0.25,
        "info": {"norms": [1.0, None]},
        "nonfinite": ["info.norms[1]"],
    }
    assert lines[2] == {"round": 3, "target_conf": 0.5}  # finite records are unchanged
    atomic_write_json(tmp_path / "s.json", {"final_target_conf": float("nan"), "n": 2})
    assert _strict_loads((tmp_path / "s.json").read_text()) == {"final_target_conf": None, "n": 2}


def test_old_files_with_nan_still_read(tmp_path):
    p = tmp_path / "rounds.jsonl"
    p.write_text('{"round": 1, "target_conf": NaN, "target_acc": 0.0}\n')
    [rec] = read_jsonl(p)
    assert rec["round"] == 1 and math.isnan(rec["target_conf"])
