"""Flower integration: the project's clients, attacks and aggregators as Flower apps.

Optional: install with `pip install -e .[flower]` (flwr 1.41.x). The core loads only
`flwbc.flower.engine`, as a built-in plug-in, which imports no flwr; `require_flwr()` turns a
missing flwr into a one-line error.
"""

from __future__ import annotations

import os

from flwbc.errors import FlwbcError


def require_flwr() -> None:
    """Raise a one-line FlwbcError when flwr is not installed. The commands that start flwr
    processes (the simulation, `flwbc flower`) call it first; it also keeps those processes from
    installing dependencies at run time (the deployment harness says so explicitly too; a
    SuperLink started elsewhere needs --disable-runtime-dependency-installation)."""
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    try:
        import flwr  # noqa: F401
    except ImportError:
        raise FlwbcError(
            "the Flower engine needs flwr: pip install -e '.[flower]' (flwr 1.41.x)"
        ) from None
