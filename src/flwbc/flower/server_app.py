"""The ServerApp: runs an experiment config over whatever nodes the Grid offers.

For a deployment (`flwr run`), the run config names the experiment file (`config`) and, if
wanted, the output directory (`out`) or a run directory to continue (`resume`); the run
directory it writes is the native engines' format.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from flwbc.errors import FlwbcError
from flwbc.flower.common import pack
from flwbc.flower.strategy import FlwbcStrategy, RoundHook, StopRun

if TYPE_CHECKING:
    from flwbc.api import RunSession


def serve(grid: Grid, session: RunSession, on_round: RoundHook | None = None) -> None:
    """Run the session's remaining rounds on `grid` (each round recorded as it ends); a hook
    returning False stops after that round."""
    cfg = session.cfg
    remaining = cfg.federation.rounds - session.next_round + 1
    if remaining <= 0:
        return
    strategy = FlwbcStrategy(session, on_round)
    with contextlib.suppress(StopRun):
        strategy.connect(grid, cfg.flower.node_wait)
        strategy.start(grid, pack(session.w), num_rounds=remaining, timeout=cfg.flower.timeout)


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point of `flwr run`: run config keys `config`, `out`, `resume`."""
    from flwbc.api import RunSession
    from flwbc.config import load_config_file, make_config

    rc = context.run_config
    resume = str(rc.get("resume") or "") or None
    cfg = None
    if resume is not None and not Path(resume).is_absolute():
        raise FlwbcError(
            f"the run directory to resume, '{resume}', is relative, but the ServerApp runs in a "
            "directory of flwr's choosing: give an absolute path"
        )
    if resume is None:
        path = str(rc.get("config") or "")
        if not path:
            raise FlwbcError("the run config needs 'config' (an experiment file) or 'resume'")
        overrides = {"engine": "flower"}
        if rc.get("out"):
            overrides["output.dir"] = str(rc["out"])
        cfg = make_config(load_config_file(path), **overrides)
        if not Path(cfg.output.dir).is_absolute():
            raise FlwbcError(
                f"the output directory '{cfg.output.dir}' is relative, but the ServerApp runs in "
                "a directory of flwr's choosing: give an absolute 'out' in the run config"
            )
    session = RunSession(cfg, resume)
    try:
        serve(grid, session)
    finally:
        session.finish()
