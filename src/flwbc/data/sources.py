"""Where datasets come from: official files and checksums, and how a local copy is found.

A dataset directory is resolved from, in order: an explicit ``data_dir`` (or ``$FLWBC_DATA_DIR``),
the per-user cache, a fresh download into that cache, and otherwise an error that says which
files to put where.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import tempfile
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from flwbc.data.readers import read_idx_dataset
from flwbc.errors import FlwbcError

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0


class ChecksumWarning(UserWarning):
    """A local dataset file does not match its official MD5 (it is still used)."""


class _DownloadError(FlwbcError):
    """The server could not be reached or the transfer broke off (not a checksum failure)."""


@dataclass(frozen=True)
class Archive:
    """A tarball that unpacks to a dataset's files (CIFAR-10 ships as one)."""

    filename: str
    url: str
    md5: str


@dataclass(frozen=True)
class DatasetSpec:
    """Everything known about one dataset before reading it."""

    name: str
    subdir: str
    files: dict[str, str]
    base_url: str | None
    archive: Archive | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    image_shape: tuple[int, int, int]
    train_size: int
    test_size: int
    read: Callable[[Path], tuple[np.ndarray, ...]]
    """directory -> (train images [N,C,H,W] uint8, train labels, test images, test labels)."""

    def url_for(self, filename: str, mirror: str | None = None) -> str:
        """The URL a file (or the archive) is fetched from: ``<mirror>/<filename>`` if given."""
        if mirror:
            return mirror.rstrip("/") + "/" + filename
        if self.archive is not None and filename == self.archive.filename:
            return self.archive.url
        if self.base_url is None:
            raise FlwbcError(f"dataset {self.name!r} has no URL for {filename}")
        return self.base_url.rstrip("/") + "/" + filename


_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def idx_spec(name: str, subdir: str, md5s: tuple[str, ...], base_url: str) -> DatasetSpec:
    """A 28x28 grey-scale, ten-class dataset in the four gzipped IDX files of MNIST's layout.

    Both MNIST and Fashion-MNIST are normalised with MNIST's (0.1307, 0.3081), as the paper's
    reference code does.
    """
    return DatasetSpec(
        name=name,
        subdir=subdir,
        files=dict(zip(_IDX_FILES, md5s, strict=True)),
        base_url=base_url,
        archive=None,
        mean=(0.1307,),
        std=(0.3081,),
        num_classes=10,
        image_shape=(1, 28, 28),
        train_size=60000,
        test_size=10000,
        read=read_idx_dataset,
    )


SPECS: dict[str, DatasetSpec] = {}
"""The datasets with official files, by canonical name (each added by its module in
`flwbc.data.datasets` with `add_source`)."""
_ALIASES: dict[str, str] = {}


def add_source(spec: DatasetSpec, aliases: tuple[str, ...] = ()) -> DatasetSpec:
    """Make `spec`'s official files known under its name and `aliases` (any case); a name
    already taken by another spec is an error."""
    if SPECS.get(spec.name, spec) != spec:
        raise FlwbcError(f"dataset source '{spec.name}' is already defined")
    SPECS[spec.name] = spec
    for alias in (spec.name, *aliases):
        _ALIASES[alias.lower()] = spec.name
    return spec


def canonical_name(name: str) -> str:
    """Map a dataset name or alias (any case) to its canonical name."""
    key = str(name).strip().lower()
    if key not in _ALIASES:
        raise FlwbcError(
            f"unknown dataset {name!r}: use one of {', '.join(SPECS)} "
            f"(aliases: {', '.join(a for a in _ALIASES if a not in SPECS)})"
        )
    return _ALIASES[key]


def get_spec(name: str) -> DatasetSpec:
    """The spec of a dataset, by name or alias."""
    return SPECS[canonical_name(name)]


def cache_dir() -> Path:
    """The per-user dataset cache: $FLWBC_CACHE_DIR, $XDG_CACHE_HOME/flwbc or ~/.cache/flwbc."""
    if os.environ.get("FLWBC_CACHE_DIR"):
        return Path(os.environ["FLWBC_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "flwbc"
    return Path.home() / ".cache" / "flwbc"


_md5_cache: dict[tuple[str, int, int], str] = {}


def file_md5(path: Path) -> str:
    """MD5 hex digest of a file, remembered per (path, size, mtime) so a file is hashed once."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _md5_cache:
        h = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        _md5_cache[key] = h.hexdigest()
    return _md5_cache[key]


def _has_files(directory: Path, spec: DatasetSpec) -> bool:
    return all((directory / f).is_file() for f in spec.files)


def _check_local(directory: Path, spec: DatasetSpec) -> None:
    for filename, md5 in spec.files.items():
        actual = file_md5(directory / filename)
        if actual != md5:
            warnings.warn(
                f"{directory / filename} has MD5 {actual}, not the official {md5}; using it anyway",
                ChecksumWarning,
                stacklevel=3,
            )


def _candidates(root: Path, spec: DatasetSpec) -> list[Path]:
    out = [root / spec.subdir, root / Path(spec.subdir).name, root]
    return list(dict.fromkeys(out))


def _fetch(url: str, dest: Path, md5: str, progress: bool) -> Path:
    """Download to a temp file beside ``dest``, verify its MD5, then rename it into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        md5_of_download = _stream(url, fd, dest.name, progress)
        if md5_of_download != md5:
            raise FlwbcError(
                f"download of {url} is corrupt (MD5 {md5_of_download}, expected {md5}); "
                f"it was deleted: retry, or put a good copy at {dest}"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _stream(url: str, fd: int, label: str, progress: bool) -> str:
    """Copy ``url`` into the open file ``fd``; return its MD5. Transfer errors: _DownloadError."""
    h = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:
            total = resp.headers.get("Content-Length")
            with tqdm(
                total=int(total) if total else None,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                disable=not progress,
            ) as bar:
                got = 0
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
                    got += len(chunk)
        if total and got != int(total):
            raise _DownloadError(f"connection closed after {got} of {total} bytes")
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise _DownloadError(_reason(e)) from e
    return h.hexdigest()


def download_file(
    url: str, dest: str | os.PathLike[str], md5: str, *, progress: bool = True
) -> Path:
    """Download ``url`` to ``dest`` atomically, with a progress bar; reject a wrong MD5."""
    dest = Path(dest)
    try:
        return _fetch(url, dest, md5, progress)
    except (_DownloadError, OSError) as e:
        raise FlwbcError(f"could not download {url} to {dest}: {_reason(e)}") from e


def _reason(e: BaseException) -> str:
    reason = getattr(e, "reason", None) or e
    return " ".join(str(reason).split()) or type(e).__name__


def _extract(archive: Path, into: Path, spec: DatasetSpec) -> None:
    """Safely unpack the archive and move the dataset's files into place, one rename each."""
    target = into / Path(spec.subdir).name
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=into) as tmp:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError) as e:
            raise FlwbcError(
                f"cannot unpack {archive} ({_reason(e)}); it was deleted: retry, or unpack the "
                f"official archive into {into}"
            ) from e
        src = Path(tmp) / Path(spec.subdir).name
        if not _has_files(src, spec):
            raise FlwbcError(
                f"{archive} does not contain {Path(spec.subdir).name}/ with "
                f"{', '.join(spec.files)}; it was deleted: retry, or unpack the official archive "
                f"into {into}"
            )
        target.mkdir(parents=True, exist_ok=True)
        for item in src.iterdir():
            if item.is_file():
                os.replace(item, target / item.name)


def _download(spec: DatasetSpec, dest: Path, mirror: str | None) -> None:
    if spec.archive is None:
        for filename, md5 in spec.files.items():
            if not (dest / filename).is_file():
                _fetch(spec.url_for(filename, mirror), dest / filename, md5, progress=True)
        return
    into = dest.parent
    tarball = into / spec.archive.filename
    _fetch(spec.url_for(spec.archive.filename, mirror), tarball, spec.archive.md5, progress=True)
    try:
        _extract(tarball, into, spec)
    finally:
        tarball.unlink(missing_ok=True)


def resolve_dataset_dir(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    mirror: str | None = None,
) -> Path:
    """Find (or download) the directory holding a dataset's official files.

    Order: ``data_dir`` (else ``$FLWBC_DATA_DIR``), as ``<dir>/<subdir>`` or ``<dir>``; the cache
    ``<cache>/<subdir>``; a download into the cache from the official URLs (or ``mirror``, else
    ``$FLWBC_MIRROR``). Local files with a wrong MD5 are used with a ChecksumWarning.
    """
    spec = get_spec(name)
    root = data_dir if data_dir is not None else os.environ.get("FLWBC_DATA_DIR") or None
    if root is not None:
        for cand in _candidates(Path(root).expanduser(), spec):
            if _has_files(cand, spec):
                _check_local(cand, spec)
                return cand
    cached = cache_dir() / spec.subdir
    if _has_files(cached, spec):
        _check_local(cached, spec)
        return cached
    mirror = mirror or os.environ.get("FLWBC_MIRROR") or None
    failure = "download disabled"
    if download:
        try:
            _download(spec, cached, mirror)
            return cached
        except (_DownloadError, OSError) as e:
            failure = f"download failed: {_reason(e)}"
    where = f"{Path(root).expanduser() / spec.subdir} or {cached}" if root else str(cached)
    source = f"unpack {spec.archive.url}" if spec.archive else f"get them from {spec.base_url}"
    raise FlwbcError(
        f"dataset {spec.name!r} not found ({failure}): put {', '.join(spec.files)} in {where} "
        f"({source}), or set FLWBC_DATA_DIR to a folder holding {spec.subdir}/"
    )
