"""Readers for the official on-disk formats: IDX (MNIST, Fashion-MNIST) and CIFAR-10 pickles."""

from __future__ import annotations

import gzip
import os
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from flwbc.errors import FlwbcError

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise FlwbcError(f"{path} is a damaged gzip file ({e}); replace it with a good copy") from e


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzipped or plain) into a native-endian, writable numpy array."""
    path = Path(path)
    try:
        raw = _read_bytes(path)
    except OSError as e:
        raise FlwbcError(f"cannot read {path}: {e.strerror or e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise FlwbcError(f"{path} is not an IDX file (bad magic {raw[:4].hex()}); replace it")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise FlwbcError(f"{path} is truncated inside its IDX header; replace it with a good copy")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise FlwbcError(
            f"{path} has {len(raw)} bytes after decompression but its IDX header {dims} "
            f"implies {expected}; replace it with a good copy"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct as fn
    except ImportError:
        from numpy.core.multiarray import _reconstruct as fn
    return fn


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals an array needs; anything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise FlwbcError(
                f"refusing to unpickle global {module}.{name}: a CIFAR-10 batch only holds numpy "
                "arrays; replace the file with the official one"
            )
        if name == "_reconstruct":
            return _reconstruct()
        return np.ndarray if name == "ndarray" else np.dtype

    def persistent_load(self, pid: Any) -> Any:
        raise FlwbcError("refusing to unpickle a persistent id; replace the file with a good copy")


def _get(batch: dict[Any, Any], key: str) -> Any:
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise KeyError(key)


def read_cifar_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch safely: images uint8 [N,3,32,32] and labels int64 [N]."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            batch = _RestrictedUnpickler(f, encoding="bytes").load()
    except OSError as e:
        raise FlwbcError(f"cannot read {path}: {e.strerror or e}") from e
    except FlwbcError as e:
        raise FlwbcError(f"{path}: {e}") from None
    except Exception as e:
        raise FlwbcError(
            f"{path} is not a valid CIFAR-10 batch ({type(e).__name__}: {e}); replace it"
        ) from e
    if not isinstance(batch, dict):
        raise FlwbcError(f"{path} holds a {type(batch).__name__}, not a CIFAR-10 batch dict")
    try:
        data, labels = _get(batch, "data"), _get(batch, "labels")
    except KeyError as e:
        raise FlwbcError(f"{path} lacks the key {e}; replace it with an official batch") from None
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise FlwbcError(
            f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072); replace it"
        )
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise FlwbcError(
            f"{path}: 'labels' is {labels.dtype} {labels.shape}, expected {len(data)} integers"
        )
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32))
    return images, labels.astype(np.int64)


def _read_idx_pair(directory: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(directory / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(directory / f"{prefix}-labels-idx1-ubyte.gz")
    if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1:
        raise FlwbcError(
            f"{directory}/{prefix}-*: got images {images.dtype} {images.shape} and labels "
            f"{labels.shape}, expected uint8 [N,H,W] and [N]; replace these files"
        )
    return images[:, None], labels


def read_idx_dataset(directory: Path) -> tuple[np.ndarray, ...]:
    """(train images [N,1,H,W], train labels, test images, test labels) from MNIST's layout of
    four gzipped IDX files."""
    train_x, train_y = _read_idx_pair(directory, "train")
    test_x, test_y = _read_idx_pair(directory, "t10k")
    return train_x, train_y, test_x, test_y


def read_cifar10(directory: Path) -> tuple[np.ndarray, ...]:
    """(train images [N,3,32,32], train labels, test images, test labels) from CIFAR-10's five
    training batches and its test batch."""
    train = [read_cifar_batch(directory / f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = read_cifar_batch(directory / "test_batch")
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    return train_x, train_y, test_x, test_y
