"""IDX and CIFAR-10 readers on small files written here, including hostile pickles."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from flwbc_data_testutil import cifar_pickle, py2_dumps

from flwbc.data import read_cifar_batch, read_idx
from flwbc.errors import FlwbcError

_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}


def idx_bytes(arr: np.ndarray) -> bytes:
    big = arr.astype(arr.dtype.newbyteorder(">"))
    header = bytes([0, 0, _IDX_CODES[big.dtype], arr.ndim]) + struct.pack(
        f">{arr.ndim}I", *arr.shape
    )
    return header + big.tobytes()


def write_idx(path: Path, arr: np.ndarray, *, gz: bool) -> Path:
    raw = idx_bytes(arr)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


@pytest.mark.parametrize("gz", [True, False])
def test_idx_uint8_3d_and_1d(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7, dtype=np.uint8)
    got_images = read_idx(write_idx(tmp_path / "images", images, gz=gz))
    got_labels = read_idx(write_idx(tmp_path / "labels", labels, gz=gz))
    assert got_images.dtype == np.uint8 and got_images.shape == (7, 5, 4)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_images.flags.writeable and got_images.flags.c_contiguous


@pytest.mark.parametrize("dtype", [np.int32, np.float32])
def test_idx_multibyte_is_native_endian(tmp_path: Path, dtype: type) -> None:
    arr = (np.arange(12).reshape(3, 4) - 5).astype(dtype)
    got = read_idx(write_idx(tmp_path / "a.gz", arr, gz=True))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, arr)


def test_idx_bad_magic(tmp_path: Path) -> None:
    raw = bytearray(idx_bytes(np.zeros((2, 3), np.uint8)))
    raw[2] = 0x42
    (tmp_path / "bad").write_bytes(bytes(raw))
    with pytest.raises(FlwbcError, match="bad magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    with pytest.raises(FlwbcError, match="not an IDX file"):
        read_idx(tmp_path / "png")


@pytest.mark.parametrize("gz", [True, False])
def test_idx_truncated_or_padded(tmp_path: Path, gz: bool) -> None:
    raw = idx_bytes(np.ones((4, 6, 6), np.uint8))
    for name, cut in [("body", raw[:-10]), ("header", raw[:9]), ("padded", raw + b"\0")]:
        (tmp_path / name).write_bytes(gzip.compress(cut) if gz else cut)
        with pytest.raises(FlwbcError, match="truncated|implies"):
            read_idx(tmp_path / name)


def test_idx_damaged_gzip_and_missing_file(tmp_path: Path) -> None:
    good = gzip.compress(idx_bytes(np.ones((50, 50), np.uint8)))
    (tmp_path / "cut.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(FlwbcError, match="damaged gzip"):
        read_idx(tmp_path / "cut.gz")
    with pytest.raises(FlwbcError, match="cannot read"):
        read_idx(tmp_path / "absent.gz")


def _expected(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    return data.reshape(n, 3, 32, 32), rng.integers(0, 10, size=n).astype(np.int64)


@pytest.mark.parametrize("bytes_keys", [True, False])
@pytest.mark.parametrize("legacy_global", [True, False])
def test_cifar_batch_roundtrip(tmp_path: Path, bytes_keys: bool, legacy_global: bool) -> None:
    raw = cifar_pickle(5, bytes_keys=bytes_keys, legacy_global=legacy_global)
    assert (b"cnumpy.core.multiarray\n" in raw) == legacy_global
    (tmp_path / "data_batch_1").write_bytes(raw)
    images, labels = read_cifar_batch(tmp_path / "data_batch_1")
    want_images, want_labels = _expected(5)
    assert images.dtype == np.uint8 and images.shape == (5, 3, 32, 32)
    assert images.flags.c_contiguous
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(labels, want_labels)


def test_cifar_protocol4_str_keys(tmp_path: Path) -> None:
    want_images, want_labels = _expected(3)
    batch = {"data": want_images.reshape(3, -1), "labels": want_labels}
    (tmp_path / "b").write_bytes(pickle.dumps(batch, protocol=4))
    images, labels = read_cifar_batch(tmp_path / "b")
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(labels, want_labels)


class _Evil:
    def __init__(self, func: object, arg: str) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return self.func, (self.arg,)


@pytest.mark.parametrize("how", ["system", "eval", "nested"])
def test_cifar_refuses_malicious_pickle(tmp_path: Path, how: str) -> None:
    sentinel = tmp_path / "pwned"
    command = f"touch {sentinel}"
    if how == "system":
        payload: object = _Evil(os.system, command)
    elif how == "eval":
        payload = _Evil(eval, f"open({str(sentinel)!r}, 'w').close()")
    else:
        payload = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [_Evil(os.system, command)]}
    path = tmp_path / "data_batch_1"
    path.write_bytes(py2_dumps(payload))
    name = "(__builtin__|builtins).eval" if how == "eval" else f"{os.name}.system"
    with pytest.raises(FlwbcError, match=f"refusing to unpickle global {name}") as info:
        read_cifar_batch(path)
    assert "\n" not in str(info.value)
    assert not sentinel.exists()


def test_cifar_wrong_structure(tmp_path: Path) -> None:
    cases = {
        "list": [1, 2, 3],
        "nokey": {b"data": np.zeros((1, 3072), np.uint8)},
        "shape": {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]},
        "count": {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]},
    }
    for name, obj in cases.items():
        (tmp_path / name).write_bytes(pickle.dumps(obj, protocol=4))
        with pytest.raises(FlwbcError):
            read_cifar_batch(tmp_path / name)
    (tmp_path / "junk").write_bytes(b"not a pickle at all")
    with pytest.raises(FlwbcError, match="not a valid CIFAR-10 batch"):
        read_cifar_batch(tmp_path / "junk")
