"""Helpers for the data tests: a local HTTP file server and official-format test files."""

from __future__ import annotations

import functools
import io
import pickle
import struct
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class FileServer:
    """A ThreadingHTTPServer serving one folder on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = functools.partial(_QuietHandler, directory=str(root))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 str opcodes, as the official CIFAR-10 pickles were written."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_str(self, obj: bytes) -> None:
        n = len(obj)
        op = (
            pickle.SHORT_BINSTRING + bytes([n])
            if n < 256
            else pickle.BINSTRING + struct.pack("<i", n)
        )
        self.write(op + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_str


def py2_dumps(obj: object) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def cifar_pickle(n: int, *, bytes_keys: bool = True, legacy_global: bool = True) -> bytes:
    """A protocol-2 batch in the official structure, plus the arrays it holds."""
    rng = np.random.default_rng(n)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    k = (lambda s: s.encode()) if bytes_keys else (lambda s: s)
    batch = {k("batch_label"): k("testing batch 1 of 1"), k("labels"): labels, k("data"): data}
    raw = py2_dumps(batch)
    if legacy_global:
        raw = raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    return raw
