"""A Flower app directory for `flwr run`: flwbc's apps by reference, no code of its own.

The ServerApp and ClientApp are imported from the installed flwbc (so SuperLink and SuperNodes
need `pip install flwbc[flower]`); the FAB that `flwr run` builds holds only this pyproject.
Its run config: `config` (the experiment file, as the ServerApp's machine sees it), `out`
(an absolute directory for the run directory; default: the config's output.dir, which must
then be absolute) and `resume` (a run directory to continue instead).
"""

from __future__ import annotations

from pathlib import Path

from flwbc._version import __version__
from flwbc.runio import atomic_write_bytes

PYPROJECT = """\
[project]
name = "flwbc-app"
version = "{version}"
description = "flwbc's ServerApp and ClientApp (imported from the installed flwbc[flower])"
license = "MIT"
# empty on purpose: nodes run the flwbc[flower] they have installed, and nothing is installed
# at run time (FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1)
dependencies = []

[tool.flwr.app]
publisher = "flwbc"

[tool.flwr.app.components]
serverapp = "flwbc.flower.server_app:app"
clientapp = "flwbc.flower.client_app:app"

[tool.flwr.app.config]
config = ""
out = ""
resume = ""
"""


def write_app(directory: str | Path) -> Path:
    """Write `directory/pyproject.toml` (creating the directory); return its path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "pyproject.toml"
    atomic_write_bytes(path, PYPROJECT.format(version=__version__).encode())
    return path
