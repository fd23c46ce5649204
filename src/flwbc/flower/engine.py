"""`engine: flower`: each client a Flower ClientApp on Flower's simulation engine (Ray). The
session runs in `flwbc.flower.simulation`, imported only when a run uses this engine (it needs
the `[flower]` extra); analyses replay its rounds on the sequential engine, which computes the
same thing within float32 rounding (its ClientApps may run on other thread counts).

It lives with the Flower integration, a layer above the run session it drives, and is loaded as
a built-in plug-in (`flwbc.plugins.BUILTINS`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flwbc.engine.registry import Engine, register_engine

if TYPE_CHECKING:
    from flwbc.api import RunSession


def _drive(session: RunSession, after_round: Callable[[dict[str, Any]], bool]) -> None:
    from flwbc.flower.simulation import run_session

    run_session(session, after_round)


ENGINE = register_engine(
    Engine(
        "flower",
        "Flower's simulation engine (Ray), each client a ClientApp; needs the [flower] extra",
        drive=_drive,
        replay="sequential",
        no_past_models="Flower's ClientApps do not see them: each builds its own experiment",
    )
)
