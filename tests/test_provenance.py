"""Every run records the code that made it: version, git commit, uncommitted changes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from flwbc import __version__
from flwbc.provenance import PACKAGE_DIR, source_info


def _git(where: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(where), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_commit_and_dirty_flag_of_a_checkout(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    pkg = repo / "src" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")
    (repo / "notes.md").write_text("notes\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = _git(repo, "rev-parse", "HEAD")
    assert source_info(pkg) == {"version": __version__, "git_commit": head, "git_dirty": False}
    (repo / "notes.md").write_text("changed elsewhere\n")  # not the package's code
    assert source_info(pkg)["git_dirty"] is False
    (pkg / "new.py").write_text("y = 2\n")  # an untracked module changes what runs
    assert source_info(pkg) == {"version": __version__, "git_commit": head, "git_dirty": True}
    (pkg / "new.py").unlink()
    (pkg / "__init__.py").write_text("x = 2\n")
    assert source_info(pkg)["git_dirty"] is True


def test_outside_a_checkout_only_the_version(tmp_path: Path) -> None:
    pkg = tmp_path / "site-packages" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    assert source_info(pkg) == {"version": __version__, "git_commit": None, "git_dirty": None}


@pytest.mark.slow
def test_a_run_records_the_checkout_it_ran_from(real_data_dir: Path, tmp_path: Path) -> None:
    import flwbc

    cfg = flwbc.make_config(
        {
            "data": {"dir": str(real_data_dir), "train_fraction": 0.02},
            "federation": {"num_clients": 10, "clients_per_round": 4, "rounds": 1},
            "local": {"epochs": 1, "batch_size": 64},
            "attack": {"num_malicious": 2, "rounds": [1]},
            "output": {"dir": str(tmp_path), "name": "r"},
        }
    )
    res = flwbc.run(cfg, progress=False)
    meta = json.loads((res.run_dir / "config.json").read_text())["_meta"]["source"]
    summary = json.loads((res.run_dir / "summary.json").read_text())["source"]
    assert meta == summary
    tracked = subprocess.run(
        ["git", "-C", str(PACKAGE_DIR), "ls-files", "--error-unmatch", "__init__.py"],
        capture_output=True,
    )
    if tracked.returncode != 0:  # an installed copy, not a checkout
        assert meta["git_commit"] is None and meta["version"] == __version__
        return
    assert meta["git_commit"] == _git(PACKAGE_DIR, "rev-parse", "HEAD")
    dirty = _git(PACKAGE_DIR, "status", "--porcelain", "--", ".") != ""
    assert meta["git_dirty"] is dirty
