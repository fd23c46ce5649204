"""`engine: flower`: run a session on Flower's simulation engine (Ray backend).

The ServerApp runs in a thread of this process and owns the run directory; every client is a
virtual SuperNode whose partition id is its client id, its ClientApp running in a Ray actor.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flwbc.errors import FlwbcError
from flwbc.flower import require_flwr
from flwbc.runtime import usable_cpus

if TYPE_CHECKING:
    from flwr.app import Message

    from flwbc.api import RunSession
    from flwbc.flower.strategy import RoundHook


class StoppableGrid:
    """A Grid whose `send_and_receive` gives up as soon as `stop` is set.

    flwr's simulation never stops its ServerApp thread: after Ctrl-C or a runtime failure that
    thread would wait out the round's timeout (an hour by default) in the in-memory Grid's
    polling loop. Here the loop also watches `stop`, and raises `StopRun` between rounds.
    """

    def __init__(self, grid: Any, stop: threading.Event, poll: float = 0.05) -> None:
        self._grid, self._stop, self._poll = grid, stop, poll

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        from flwbc.flower.strategy import StopRun

        pending = set(self._grid.push_messages(messages))
        end = time.monotonic() + (math.inf if timeout is None else timeout)
        replies: list[Message] = []
        while pending and time.monotonic() < end:
            if self._stop.is_set():
                raise StopRun
            got = list(self._grid.pull_messages(pending))
            replies += got
            pending -= {m.metadata.reply_to_message_id for m in got}
            if pending:
                self._stop.wait(self._poll)
        return replies


def run_session(session: RunSession, on_round: RoundHook | None = None) -> None:
    """Run the session's remaining rounds with `flwr.simulation.run_simulation`."""
    require_flwr()
    if importlib.util.find_spec("ray") is None:
        raise FlwbcError("Flower's simulation needs Ray: pip install -e '.[flower]'")
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from flwbc.flower.client_app import app as client_app
    from flwbc.flower.server_app import serve

    cfg = session.cfg
    cpus = usable_cpus()
    if cfg.flower.num_cpus > cpus:
        raise FlwbcError(
            f"flower.num_cpus ({cfg.flower.num_cpus:g}) is more than the {cpus} cores this "
            "process may use: no ClientApp could start"
        )
    stop = threading.Event()
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        serve(StoppableGrid(grid, stop), session, on_round)  # type: ignore[arg-type]

    # the progress bar reports the rounds; flwr's own warnings here are about its API's future
    # (run_simulation is deprecated in favour of `flwr run`, which the deployment path uses)
    flwr_log = logging.getLogger("flwr")
    level = flwr_log.level
    flwr_log.setLevel(logging.ERROR)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    try:
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=cfg.federation.num_clients,
            backend_config={
                "client_resources": {"num_cpus": cfg.flower.num_cpus, "num_gpus": 0.0},
                "init_args": {"num_cpus": cpus, "include_dashboard": False},
            },
        )
    finally:
        stop.set()
        flwr_log.setLevel(level)
