"""Replaying a run: its experiment and the model its first round starts from.

Every random stream is keyed by (seed, purpose, round, client), so a replay from the run's
config gives the run's rounds bit for bit on the same engine, device and thread count (float32
sums depend on how torch splits them between threads, so the run's `threads` is applied).
"""

from __future__ import annotations

import torch
from torch import Tensor

from flwbc.config import ExperimentConfig
from flwbc.experiment import Experiment
from flwbc.runio import load_model


def replay_start(cfg: ExperimentConfig) -> tuple[Experiment, Tensor]:
    """The run's experiment and the weights its round 1 starts from (`init_model` or the
    seed's initial model), with the run's torch thread count where it set one."""
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    exp = Experiment.prepare(cfg)
    if cfg.init_model is not None:
        w, _ = load_model(cfg.init_model, exp.model)
    else:
        w = exp.initial_weights()
    return exp, w.to(exp.device, exp.dtype)
