"""`engine: flower`: run a session on Flower's simulation engine (Ray backend).

The ServerApp runs in a thread of this process and owns the run directory; every client is a
virtual SuperNode whose partition id is its client id, its ClientApp running in a Ray actor.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from flwbc.flower import require_flwr

if TYPE_CHECKING:
    from flwbc.api import RunSession
    from flwbc.flower.strategy import RoundHook


def run_session(session: RunSession, on_round: RoundHook | None = None) -> None:
    """Run the session's remaining rounds with `flwr.simulation.run_simulation`."""
    require_flwr()
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from flwbc.flower.client_app import app as client_app
    from flwbc.flower.server_app import serve

    cfg = session.cfg
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        serve(grid, session, on_round)

    # the progress bar reports the rounds; flwr's own warnings here are about its API's future
    # (run_simulation is deprecated in favour of `flwr run`, which the deployment path uses)
    logging.getLogger("flwr").setLevel(logging.ERROR)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    cpus = os.cpu_count() or 1
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=cfg.federation.num_clients,
        backend_config={
            "client_resources": {"num_cpus": cfg.flower.num_cpus, "num_gpus": 0.0},
            "init_args": {"num_cpus": cpus, "include_dashboard": False},
        },
    )
