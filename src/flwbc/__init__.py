"""flwbc: federated learning under model poisoning, with the FL-WBC client-side defense."""

__version__ = "0.1.0"

from flwbc.api import RunResult, run, run_many  # noqa: E402
from flwbc.config import ExperimentConfig, make_config  # noqa: E402

__all__ = ["ExperimentConfig", "RunResult", "__version__", "make_config", "run", "run_many"]
