"""Flower integration: the project's clients, attacks and aggregators as Flower apps.

Optional: install with `pip install -e .[flower]` (flwr 1.41.x). Nothing in the core imports
this package; `require_flwr()` turns a missing flwr into a one-line error.
"""

from __future__ import annotations

import os

from flwbc.errors import FlwbcError

# for flwr processes started from this one (the deployment harness passes it explicitly too);
# a SuperLink started elsewhere needs --disable-runtime-dependency-installation
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")


def require_flwr() -> None:
    """Raise a one-line FlwbcError when flwr is not installed."""
    try:
        import flwr  # noqa: F401
    except ImportError:
        raise FlwbcError(
            "the Flower engine needs flwr: pip install -e '.[flower]' (flwr 1.41.x)"
        ) from None
