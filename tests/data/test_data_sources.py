"""Finding datasets: data dir, cache, download from a local mirror, and the errors in between."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import shutil
import socket
import tarfile
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from flwbc_data_testutil import FileServer, cifar_pickle

from flwbc.data import (
    DATASET_NAMES,
    ChecksumWarning,
    Dataset,
    canonical_name,
    download_file,
    load_dataset,
    read_cifar_batch,
    resolve_dataset_dir,
    sources,
)
from flwbc.errors import FlwbcError

MNIST_FILES = list(sources.SPECS["mnist"].files)
FMNIST_LABELS = "t10k-labels-idx1-ubyte.gz"


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_canonical_names() -> None:
    assert DATASET_NAMES == ("fmnist", "mnist", "cifar10")
    for alias, name in [
        ("fmnist", "fmnist"),
        ("Fashion-MNIST", "fmnist"),
        ("fashion_mnist", "fmnist"),
        ("mnist", "mnist"),
        ("cifar10", "cifar10"),
        ("CIFAR-10", "cifar10"),
    ]:
        assert canonical_name(alias) == name
    with pytest.raises(FlwbcError, match="fmnist, mnist, cifar10"):
        canonical_name("imagenet")


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FLWBC_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert sources.cache_dir() == tmp_path / "home" / ".cache" / "flwbc"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sources.cache_dir() == tmp_path / "xdg" / "flwbc"
    monkeypatch.setenv("FLWBC_CACHE_DIR", str(tmp_path / "mine"))
    assert sources.cache_dir() == tmp_path / "mine"


def test_download_file_good(file_server: FileServer, real_data_dir: Path, tmp_path: Path) -> None:
    src = real_data_dir / "fashion-mnist" / FMNIST_LABELS
    shutil.copy(src, file_server.root / FMNIST_LABELS)
    dest = tmp_path / "out" / FMNIST_LABELS
    md5 = sources.SPECS["fmnist"].files[FMNIST_LABELS]
    assert download_file(file_server.url + FMNIST_LABELS, dest, md5, progress=False) == dest
    assert dest.read_bytes() == src.read_bytes()
    assert _leftovers(dest.parent) == []


def test_download_file_corrupt_is_deleted(
    file_server: FileServer, real_data_dir: Path, tmp_path: Path
) -> None:
    raw = bytearray((real_data_dir / "fashion-mnist" / FMNIST_LABELS).read_bytes())
    raw[100] ^= 0xFF
    (file_server.root / FMNIST_LABELS).write_bytes(bytes(raw))
    dest = tmp_path / "out" / FMNIST_LABELS
    md5 = sources.SPECS["fmnist"].files[FMNIST_LABELS]
    with pytest.raises(FlwbcError, match="corrupt") as info:
        download_file(file_server.url + FMNIST_LABELS, dest, md5, progress=False)
    assert "\n" not in str(info.value)
    assert not dest.exists()
    assert _leftovers(dest.parent) == []


def test_download_file_missing_on_server(file_server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(FlwbcError, match="could not download"):
        download_file(file_server.url + "nope.gz", tmp_path / "nope.gz", "0" * 32, progress=False)
    assert not (tmp_path / "nope.gz").exists()
    assert _leftovers(tmp_path) == []


class _BrokenTransfer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"x" * 1000)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_download_broken_off_and_bad_url(tmp_path: Path, isolated_env: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BrokenTransfer)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        with pytest.raises(FlwbcError, match="closed after 1000 of 100000 bytes"):
            download_file(url + "f.gz", tmp_path / "f.gz", "0" * 32, progress=False)
        with pytest.raises(FlwbcError, match="not found .download failed: connection closed"):
            resolve_dataset_dir("fmnist", mirror=url)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    with pytest.raises(FlwbcError, match="unknown url type"):
        download_file("no-scheme", tmp_path / "g.gz", "0" * 32, progress=False)
    with pytest.raises(FlwbcError, match="download failed: unknown url type"):
        resolve_dataset_dir("mnist", mirror="no-scheme")
    assert _leftovers(tmp_path) == []
    assert not (tmp_path / "f.gz").exists()


def test_resolve_downloads_mnist_from_mirror(
    file_server: FileServer,
    real_data_dir: Path,
    isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    mnist: Dataset,
) -> None:
    for name in MNIST_FILES:
        shutil.copy(real_data_dir / "mnist" / name, file_server.root / name)
    monkeypatch.setenv("FLWBC_MIRROR", file_server.url)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ChecksumWarning)
        ds = load_dataset("mnist")
    cached = isolated_env / "mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(MNIST_FILES)
    assert ds is not mnist
    assert torch.equal(ds.train_x, mnist.train_x) and torch.equal(ds.test_y, mnist.test_y)
    x = ds.normalize(ds.train_x[:8])
    assert x.shape == (8, 1, 28, 28) and x.dtype == torch.float32
    monkeypatch.setenv("FLWBC_MIRROR", _closed_port_url())
    assert resolve_dataset_dir("mnist") == cached


def test_resolve_rejects_corrupt_download(
    file_server: FileServer, real_data_dir: Path, isolated_env: Path
) -> None:
    for name in MNIST_FILES:
        shutil.copy(real_data_dir / "mnist" / name, file_server.root / name)
    bad = file_server.root / MNIST_FILES[-1]
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(FlwbcError, match=f"corrupt.*{MNIST_FILES[-1]}"):
        resolve_dataset_dir("mnist", mirror=file_server.url)
    assert not (isolated_env / "mnist" / MNIST_FILES[-1]).exists()


def test_resolve_nothing_anywhere(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLWBC_MIRROR", _closed_port_url())
    with pytest.raises(FlwbcError) as info:
        resolve_dataset_dir("mnist")
    msg = str(info.value)
    assert "\n" not in msg and "download failed" in msg
    assert all(name in msg for name in MNIST_FILES)
    assert str(isolated_env / "mnist") in msg
    with pytest.raises(FlwbcError, match="download disabled") as info:
        resolve_dataset_dir("cifar10", isolated_env.parent / "nodata", download=False)
    msg = str(info.value)
    assert all(name in msg for name in sources.SPECS["cifar10"].files)
    assert "cifar-10-python.tar.gz" in msg and str(isolated_env.parent / "nodata") in msg


def test_resolve_data_dir_layouts(
    real_data_dir: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in MNIST_FILES:
        (flat / name).symlink_to(real_data_dir / "mnist" / name)
    assert resolve_dataset_dir("mnist", flat, download=False) == flat
    assert resolve_dataset_dir("mnist", real_data_dir, download=False) == real_data_dir / "mnist"
    monkeypatch.setenv("FLWBC_DATA_DIR", str(real_data_dir))
    assert resolve_dataset_dir("fashion-mnist", download=False) == real_data_dir / "fashion-mnist"
    assert resolve_dataset_dir("mnist", flat, download=False) == flat


def test_local_md5_mismatch_warns_once_per_file_and_hashes_once(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = isolated_env / "mnist"
    local.mkdir(parents=True)
    for name in MNIST_FILES:
        (local / name).write_bytes(b"not the official bytes " + name.encode())
    calls = []
    real_md5 = hashlib.md5

    def counting_md5(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real_md5(*args, **kwargs)

    monkeypatch.setattr(sources.hashlib, "md5", counting_md5)
    for _ in range(2):
        with pytest.warns(ChecksumWarning) as record:
            assert resolve_dataset_dir("mnist", download=False) == local
        assert sorted(Path(str(w.message).split()[0]).name for w in record) == sorted(MNIST_FILES)
    assert len(calls) == len(MNIST_FILES)


def _fake_cifar_tarball(path: Path, members: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.md5(path.read_bytes()).hexdigest()


def _patch_cifar_md5(monkeypatch: pytest.MonkeyPatch, md5: str) -> None:
    spec = sources.SPECS["cifar10"]
    archive = dataclasses.replace(spec.archive, md5=md5)
    monkeypatch.setitem(sources.SPECS, "cifar10", dataclasses.replace(spec, archive=archive))


def test_resolve_downloads_and_unpacks_cifar(
    file_server: FileServer, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = cifar_pickle(4)
    names = [*sources.SPECS["cifar10"].files, "batches.meta"]
    members = {f"cifar-10-batches-py/{n}": batch for n in names}
    md5 = _fake_cifar_tarball(file_server.root / "cifar-10-python.tar.gz", members)
    _patch_cifar_md5(monkeypatch, md5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ChecksumWarning)
        got = resolve_dataset_dir("cifar10", mirror=file_server.url)
    assert got == isolated_env / "cifar-10" / "cifar-10-batches-py"
    assert sorted(p.name for p in got.iterdir()) == sorted(names)
    assert sorted(p.name for p in got.parent.iterdir()) == ["cifar-10-batches-py"]
    images, labels = read_cifar_batch(got / "test_batch")
    assert images.shape == (4, 3, 32, 32) and labels.shape == (4,)


def test_cifar_tarball_path_traversal_is_refused(
    file_server: FileServer, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    md5 = _fake_cifar_tarball(
        file_server.root / "cifar-10-python.tar.gz",
        {"cifar-10-batches-py/data_batch_1": b"x", "../../escaped": b"gotcha"},
    )
    _patch_cifar_md5(monkeypatch, md5)
    with pytest.raises(FlwbcError, match="cannot unpack"):
        resolve_dataset_dir("cifar10", mirror=file_server.url)
    assert not list(isolated_env.parent.rglob("escaped"))
    assert list((isolated_env / "cifar-10").iterdir()) == []
