"""Which code made a result: the package version and, when flwbc runs from a git checkout, the
commit and whether the package's sources differed from it (uncommitted or untracked files).

Every run records this in `config.json` (`_meta.source`) and `summary.json` (`source`), so a
result can be traced to the exact code; a clean commit is reproducible by checking it out, a
dirty one only approximately, and a released version by installing it.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

from flwbc._version import __version__

PACKAGE_DIR = Path(__file__).resolve().parent


def _git(where: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(where), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def source_info(package_dir: Path = PACKAGE_DIR) -> dict[str, Any]:
    """`{"version", "git_commit", "git_dirty"}` for the code in `package_dir`.

    `git_commit` is the HEAD commit when `package_dir` is tracked in a git work tree (an
    editable install from a clone), else None (an installed release: `version` says which);
    `git_dirty` is whether any file under `package_dir` differs from that commit or is
    untracked (None without a commit). Changes elsewhere in the tree (results, docs) do not
    count: they do not change what the code computes.
    """
    info: dict[str, Any] = {"version": __version__, "git_commit": None, "git_dirty": None}
    if _git(package_dir, "ls-files", "--error-unmatch", "__init__.py") is None:
        return info
    head = _git(package_dir, "rev-parse", "HEAD")
    status = _git(package_dir, "status", "--porcelain", "--", ".")
    if head is None or status is None:
        return info
    info["git_commit"] = head.strip()
    info["git_dirty"] = bool(status.strip())
    return info


@functools.cache
def current_source() -> dict[str, Any]:
    """`source_info()` of the running flwbc, computed once per process."""
    return source_info()
