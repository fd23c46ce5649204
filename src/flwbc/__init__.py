"""flwbc: federated learning under model poisoning, with the FL-WBC client-side defense."""

from flwbc.runtime import prefer_passive_openmp

prefer_passive_openmp()  # before torch is imported (flwbc.runtime's docstring says why)

from flwbc._version import __version__  # noqa: E402
from flwbc.api import RunResult, load_run, run, run_many  # noqa: E402
from flwbc.attacks import register_attack  # noqa: E402
from flwbc.config import ExperimentConfig, make_config  # noqa: E402
from flwbc.data import register_dataset, register_partition  # noqa: E402
from flwbc.defenses import register_client_defense  # noqa: E402
from flwbc.engine import register_engine  # noqa: E402
from flwbc.evaluation import register_metric  # noqa: E402
from flwbc.models import register_model  # noqa: E402
from flwbc.plugins import load_builtins  # noqa: E402
from flwbc.postagg import register_post_aggregator  # noqa: E402
from flwbc.preagg import register_pre_aggregator  # noqa: E402
from flwbc.schedules import register_schedule  # noqa: E402
from flwbc.server import register_aggregator  # noqa: E402

load_builtins()  # every built-in registered before any plug-in (the Flower engine among them)

__all__ = [
    "ExperimentConfig",
    "RunResult",
    "__version__",
    "load_run",
    "make_config",
    "register_aggregator",
    "register_attack",
    "register_client_defense",
    "register_dataset",
    "register_engine",
    "register_metric",
    "register_model",
    "register_partition",
    "register_post_aggregator",
    "register_pre_aggregator",
    "register_schedule",
    "run",
    "run_many",
]
