"""A plug-in package written into a temporary directory, as a user outside flwbc would write
it: one module per kind, and a distribution with an entry point in the group flwbc.plugins."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

AGGREGATOR = '''
"""A coordinate-wise clipped mean, registered from outside flwbc."""
import torch
from flwbc import register_aggregator
from flwbc.server import Aggregate, Aggregator


@register_aggregator("coord_clip_mean")
class CoordClipMean(Aggregator):
    """Weighted mean of the updates after clipping every coordinate to [-c, c]."""

    def __init__(self, c: float = 0.05) -> None:
        self.c = float(c)

    def aggregate(self, updates, weights, ctx):
        clipped = updates.clamp(-self.c, self.c)
        return Aggregate((weights.to(updates.dtype).unsqueeze(1) * clipped).sum(0))
'''

MODEL = '''
"""A linear softmax classifier, registered from outside flwbc."""
from torch import nn
from flwbc import register_model


@register_model("linear_probe")
def linear_probe(in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    """Flatten, then one linear layer."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, num_classes))
'''

DATASET = '''
"""A small synthetic dataset, registered from outside flwbc: 4 classes of 8x8 grey images,
each class a bright square in its own quadrant, with seeded noise."""
import numpy as np
import torch
from flwbc import register_dataset
from flwbc.data import Dataset


def _split(n: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.integers(0, 60, (n, 1, 8, 8)).astype(np.uint8)
    for i, c in enumerate(y):
        r, q = divmod(int(c), 2)
        x[i, 0, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] += 150
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))


@register_dataset("quadrants", num_classes=4, default_model="linear_probe", image_shape=(1, 8, 8))
def quadrants(data_dir=None) -> Dataset:
    """Four classes of 8x8 images: a bright square in one quadrant."""
    tx, ty = _split(400, 0)
    vx, vy = _split(100, 1)
    return Dataset("quadrants", tx, ty, vx, vy, 4, (0.3,), (0.3,))
'''

ATTACK = '''
"""Label flipping (Fung et al. 2020): attackers train on their own data, labels shifted."""
from pydantic import Field
from flwbc.attacks import Attack, register_attack
from flwbc.client.local import benign_plan
from flwbc.plugin_options import PluginOptions


class FlipOptions(PluginOptions):
    shift: int = Field(1, ge=1, le=3, description="label y becomes (y + shift) mod classes")
    radius: float | None = Field(None, gt=0, description="project each step onto this ball")


@register_attack("label_shift")
class LabelShift(Attack):
    """Train on the attacker's own images with every label shifted by `shift`."""

    Options = FlipOptions

    def plan(self, exp, t, c, generator):
        x, y = exp.client_data(c)
        flipped = (y + self.options.shift) % exp.dataset.num_classes
        loc = self.cfg.local
        return len(y), benign_plan(x, flipped, loc.batch_size, loc.epochs, generator)

    def group_key(self, exp, n):
        return (n, self.cfg.local.batch_size, self.cfg.local.epochs, self.options.shift)

    def after_step(self, state, s):
        """Pull the attacker's weights back into the L2 ball of `radius` around its w0."""
        if self.options.radius is None:
            return s.w_hat
        d = s.w_hat - state.w0
        return state.w0 + d * (self.options.radius / d.norm().clamp_min(1e-12)).clamp(max=1.0)
'''

DEFENSE = '''
"""Weight decay after every local step, as a client defense with per-client state and stats."""
import torch
from pydantic import Field
from flwbc.defenses import ClientDefense, register_client_defense
from flwbc.plugin_options import PluginOptions


class ShrinkOptions(PluginOptions):
    decay: float = Field(0.01, ge=0, lt=1, description="fraction removed from the weights per step")


@register_client_defense("shrink")
class Shrink(ClientDefense):
    """Multiply the local weights by 1 - decay after every SGD step."""

    Options = ShrinkOptions

    def init(self, run):
        return {"calls": 0}

    def after_step(self, state, s):
        state["calls"] += 1
        return s.w_hat * (1 - self.options.decay)

    def stats(self, state):
        return {"shrink_steps": float(state["calls"])}
'''

COLLUDE = '''
"""A colluding attack (omniscient): every attacker sends -scale times the mean benign update."""
from pydantic import Field
from flwbc.attacks import Attack, register_attack
from flwbc.client.local import benign_plan
from flwbc.plugin_options import PluginOptions


class MeanFlipOptions(PluginOptions):
    scale: float = Field(1.0, gt=0)


@register_attack("mean_flip")
class MeanFlip(Attack):
    """Send the negated, scaled mean of the round's benign updates."""

    Options = MeanFlipOptions

    def plan(self, exp, t, c, generator):
        x, y = exp.client_data(c)
        loc = self.cfg.local
        return len(y), benign_plan(x, y, loc.batch_size, loc.epochs, generator)

    def group_key(self, exp, n):
        return (n, self.cfg.local.batch_size, self.cfg.local.epochs)

    def craft(self, exp, t, updates, malicious):
        benign = [i for i, m in enumerate(malicious) if not m]
        attackers = [i for i, m in enumerate(malicious) if m]
        out = updates.clone()
        out[attackers] = -self.options.scale * updates[benign].mean(0)
        return out
'''

METRIC = '''
"""The global model's L2 norm after every round, as a metric plug-in."""
from flwbc import register_metric
from flwbc.evaluation import Metric


@register_metric("weight_norm")
class WeightNorm(Metric):
    """L2 norm of the global weights (weight_norm)."""

    fields = ("weight_norm",)

    def measure(self, exp, w, t):
        return {"weight_norm": float(w.double().norm())}
'''

PARTITION = '''
"""Contiguous blocks of the pool, in order, as a partition plug-in."""
import numpy as np
from flwbc import register_partition


@register_partition("blocks")
def blocks(pool, labels, num_clients, rng, drop: int = 0):
    """The pool cut into equal consecutive blocks after dropping its first `drop` indices."""
    return [np.asarray(b, dtype=np.int64) for b in np.array_split(pool[drop:], num_clients)]
'''

SCHEDULE = '''
"""Attacks in even rounds, with a growing number of attackers (a schedule plug-in)."""
from pydantic import Field
from flwbc import register_schedule
from flwbc.plugin_options import PluginOptions
from flwbc.schedules import Schedule


class EvenOptions(PluginOptions):
    most: int = Field(2, ge=1)


@register_schedule("even_rounds")
class EvenRounds(Schedule):
    """Round t even: min(t // 2, most) attackers; odd rounds are benign."""

    Options = EvenOptions

    def attackers(self, t):
        return min(t // 2, self.options.most) if t % 2 == 0 else 0
'''

PACKAGE = {
    "myplug/__init__.py": '"""A plug-in package: importing it registers every kind."""\n'
    "from myplug import aggregator, attack, collude, dataset, defense, metric, model, partition"
    ", schedule  # noqa: F401\n",
    "myplug/schedule.py": SCHEDULE,
    "myplug/collude.py": COLLUDE,
    "myplug/metric.py": METRIC,
    "myplug/partition.py": PARTITION,
    "myplug/attack.py": ATTACK,
    "myplug/defense.py": DEFENSE,
    "myplug/aggregator.py": AGGREGATOR,
    "myplug/model.py": MODEL,
    "myplug/dataset.py": DATASET,
}


@pytest.fixture()
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """tmp/site with the package `myplug` and an entry-point distribution `myplug_ep` naming
    it; on sys.path and PYTHONPATH (for subprocesses). Registrations are undone afterwards."""
    from flwbc import plugins
    from flwbc.attacks import ATTACKS
    from flwbc.data import DATASETS, PARTITIONS
    from flwbc.defenses import CLIENT_DEFENSES
    from flwbc.evaluation import METRICS
    from flwbc.models import MODELS
    from flwbc.schedules import SCHEDULES
    from flwbc.server import AGGREGATORS

    site = tmp_path / "site"
    for rel, text in PACKAGE.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(textwrap.dedent(text).lstrip())
    info = site / "myplug_ep-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug-ep\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[flwbc.plugins]\nmine = myplug\n")
    registries = (
        AGGREGATORS,
        MODELS,
        DATASETS,
        ATTACKS,
        CLIENT_DEFENSES,
        METRICS,
        PARTITIONS,
        SCHEDULES,
    )
    saved = [dict(r) for r in registries]
    loaded = list(plugins.LOADED)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)  # rescan, with `site` on the path
    importlib.invalidate_caches()
    yield site
    for name in [m for m in sys.modules if m == "myplug" or m.startswith("myplug.")]:
        del sys.modules[name]
    for registry, before in zip(registries, saved, strict=True):
        registry.clear()
        registry.update(before)
    plugins.LOADED[:] = loaded


@pytest.fixture()
def no_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entry points count as loaded: only a config's `plugins:` brings plug-ins in."""
    from flwbc import plugins

    monkeypatch.setattr(plugins, "_entry_points_loaded", True)
