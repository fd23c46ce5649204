"""The static part of an experiment and its per-round plan, shared by every engine.

`Experiment.prepare(cfg)` loads the data, splits it among clients, draws the malicious set D_M
and the attackers, and builds the model and the aggregator. `round_plan(t)` says who takes part
in round t and with which FedAvg weight; it depends only on (seed, t), never on earlier rounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flwbc.attacks import Attack, build_attack
from flwbc.client.local import benign_plan, local_sgd
from flwbc.client.malicious_set import MaliciousSet, choose_malicious_set
from flwbc.config import ExperimentConfig
from flwbc.context import RoundPlan  # noqa: F401 (re-exported: engines import it from here)
from flwbc.data import Dataset, get_dataset, partition
from flwbc.defenses import CLIENT_DEFENSES, ClientDefense, build_client_defenses
from flwbc.errors import FlwbcError
from flwbc.evaluation import Metric, build_metrics
from flwbc.metrics import evaluated_test_indices
from flwbc.models import FlatModel, build_model
from flwbc.postagg import PostAggregator, build_post_aggregators
from flwbc.preagg import PRE_AGGREGATORS, PreAggregator, build_pre_aggregators
from flwbc.registry import Stateful
from flwbc.rng import numpy_rng, torch_generator
from flwbc.schedules import Schedule, build_schedule
from flwbc.server import Aggregator, build_aggregator

AGG_PREFIX = "aggregator_state."
"""Where a checkpoint keeps the rule's state (`Experiment.stateful` lists every plug-in's)."""
ATTACK_PREFIX = "attack_state."


@dataclass(kw_only=True)
class Experiment:
    cfg: ExperimentConfig
    dataset: Dataset
    model: FlatModel
    client_indices: list[np.ndarray]
    malicious_ids: list[int]
    benign_ids: np.ndarray
    malicious_set: MaliciousSet | None
    x_mal: Tensor | None
    y_mal: Tensor | None
    aggregator: Aggregator
    device: torch.device
    root_indices: np.ndarray | None = None
    attack: Attack | None = None
    defenses: list[ClientDefense] = field(default_factory=list)
    """The benign clients' chain of client defenses, in order."""
    pre_steps: list[PreAggregator[Any]] = field(default_factory=list)
    """The server's pre-aggregation steps, in order."""
    metrics: list[Metric] = field(default_factory=list)
    """What is measured on the global model after every round, in record order."""
    schedule: Schedule | None = None
    """When and how many attack (None without an attack)."""
    post_steps: list[PostAggregator[Any]] = field(default_factory=list)
    """The server's post-aggregation steps, in order."""

    @classmethod
    def prepare(cls, cfg: ExperimentConfig) -> Experiment:
        device = torch.device(cfg.device)
        dtype = getattr(torch, cfg.dtype)
        ds = get_dataset(cfg.data.name).load(cfg.data.dir)
        train_labels = ds.train_y.numpy()
        att = cfg.attack

        mset = None
        pool = np.arange(len(train_labels), dtype=np.int64)
        if att.enabled:
            src_labels = train_labels if att.source == "train" else ds.test_y.numpy()
            mset = (
                choose_malicious_set(
                    src_labels,
                    att.num_images,
                    ds.num_classes,
                    numpy_rng(cfg.seed, "malicious-set"),
                    att.source,
                    att.target,
                )
                if att.indices is None
                else pinned_malicious_set(cfg, src_labels, ds.num_classes)
            )
            if att.source == "train":
                pool = np.setdiff1d(pool, mset.indices)

        d = cfg.data
        parts = partition(
            d.partition,
            pool,
            train_labels,
            cfg.federation.num_clients,
            numpy_rng(cfg.seed, "partition"),
            **cfg.data.partition_options,
        )
        if d.train_fraction < 1.0:
            parts = [p[: int(d.train_fraction * len(p))] for p in parts]

        n = cfg.federation.num_clients
        mal_ids: list[int] = []
        if att.enabled:
            mal_ids = sorted(
                numpy_rng(cfg.seed, "attackers")
                .choice(n, att.num_malicious, replace=False)
                .tolist()
            )
        benign_ids = np.setdiff1d(np.arange(n), mal_ids)

        c, h, _ = ds.image_shape
        module = build_model(cfg.model_name, c, h, ds.num_classes, cfg.model_options)
        model = FlatModel(module.to(getattr(torch, cfg.dtype))).to(device)

        x_mal = y_mal = None
        if mset is not None:
            src_x = ds.train_x if mset.source == "train" else ds.test_x
            x_mal = ds.normalize(src_x[torch.from_numpy(mset.indices)]).to(device, dtype)
            y_mal = torch.from_numpy(mset.targets).to(device)

        aggregator = build_aggregator(cfg.server.aggregator, cfg.server.options)
        attack = build_attack(cfg)
        check_aggregator(cfg, aggregator, attack)
        root = None
        root_size = aggregator.root_size
        if root_size is not None:
            # the server's clean root set (FLTrust): drawn from the training pool, D_M excluded;
            # it may overlap clients' data, so the client partition is the same with or without it
            root = np.sort(numpy_rng(cfg.seed, "root-set").choice(pool, root_size, replace=False))
        exp = cls(
            cfg=cfg,
            dataset=ds,
            model=model,
            client_indices=parts,
            malicious_ids=mal_ids,
            benign_ids=benign_ids,
            malicious_set=mset,
            x_mal=x_mal,
            y_mal=y_mal,
            aggregator=aggregator,
            device=device,
            root_indices=root,
            attack=attack,
            defenses=build_client_defenses(cfg),
            pre_steps=build_pre_aggregators(cfg.server.pre),
            metrics=build_metrics(cfg.eval.metrics, attack),
            schedule=build_schedule(cfg),
            post_steps=build_post_aggregators(cfg.server.post),
        )
        if exp.attack is not None:
            exp.attack.check(exp)
        for m in exp.metrics:
            m.check(exp)
        return exp

    def reference_update(self, t: int, w: Tensor) -> Tensor:
        """The server's own update on its root set: one client's local training from w."""
        if self.root_indices is None:
            raise RuntimeError("this experiment has no root set")
        loc = self.cfg.local
        idx = torch.from_numpy(self.root_indices)
        x = self.dataset.normalize(self.dataset.train_x[idx]).to(self.device, self.dtype)
        y = self.dataset.train_y[idx].to(self.device)
        gen = torch_generator(self.cfg.seed, "root", t)
        plan = benign_plan(x, y, loc.batch_size, loc.epochs, gen)
        return local_sgd(self.model, w, plan, lr=loc.lr, momentum=loc.momentum).weights - w

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.cfg.dtype)

    def attackers_in(self, t: int) -> int:
        """How many attackers take part in round t (the attack's schedule; 0 without one)."""
        if self.schedule is None:
            return 0
        n = self.schedule.attackers(t)
        if not 0 <= n <= min(len(self.malicious_ids), self.cfg.federation.clients_per_round):
            raise FlwbcError(
                f"attack schedule '{self.schedule.name}' asked for {n} attackers in round {t}; "
                f"there are {len(self.malicious_ids)} (attack.num_malicious) and "
                f"{self.cfg.federation.clients_per_round} places (federation.clients_per_round)"
            )
        return n

    def is_adversarial(self, t: int) -> bool:
        return self.attackers_in(t) > 0

    def round_plan(self, t: int) -> RoundPlan:
        """Participants of round t: K benign clients, or in an adversarial round the N_m attackers
        (one standing for all when the attack is a `stand_in`, the targeted attack's
        `mode: emulate`; the first N_m of the pool, or with `attack.pool: random` a uniform draw
        from it) and K − N_m benign clients."""
        cfg = self.cfg
        k = cfg.federation.clients_per_round
        rng = numpy_rng(cfg.seed, "participants", t)
        count = self.attackers_in(t)
        adversarial = count > 0
        attackers: list[int] = []
        n_benign = k
        stand_in = self.attack is not None and self.attack.stand_in()
        if adversarial:
            if stand_in:
                attackers = self.malicious_ids[:1]
            elif cfg.attack.pool == "random":
                draw = numpy_rng(cfg.seed, "attackers", t)
                attackers = draw.choice(self.malicious_ids, count, replace=False).tolist()
            else:
                attackers = self.malicious_ids[:count]
            n_benign = k - count
        benign = sorted(rng.choice(self.benign_ids, n_benign, replace=False).tolist())
        clients = sorted(attackers) + benign
        malicious = [c in attackers for c in clients]
        if cfg.federation.weighting == "samples":
            w = [float(len(self.client_indices[c])) for c in clients]
        else:
            w = [1.0] * len(clients)
        if adversarial and stand_in:
            w = [wi * count if m else wi for wi, m in zip(w, malicious, strict=True)]
        weights = torch.tensor(w, dtype=torch.float64)
        if adversarial and self.attack is not None:
            plan = self.attack.plan_round(self, t, clients, malicious, weights, count)
            if plan is not None:
                return plan
        return RoundPlan(t, adversarial, clients, malicious, (weights / weights.sum()).float())

    def stateful(self) -> dict[str, Stateful]:
        """Every plug-in of the run by the prefix its state is saved under in a checkpoint:
        the rule, the attack, the pre- and post-aggregation steps, the client defenses, the
        schedule and the metrics, by position where a kind has several."""
        out: dict[str, Stateful] = {AGG_PREFIX: self.aggregator}
        if self.attack is not None:
            out[ATTACK_PREFIX] = self.attack
        if self.schedule is not None:
            out["schedule_state."] = self.schedule
        for prefix, plugins in (
            ("pre_state", self.pre_steps),
            ("post_state", self.post_steps),
            ("defense_state", self.defenses),
            ("metric_state", self.metrics),
        ):
            out.update({f"{prefix}.{i}.": p for i, p in enumerate(plugins)})
        return out

    def initial_weights(self) -> Tensor:
        seed = int(numpy_rng(self.cfg.seed, "init").integers(2**31))
        return self.model.init_vector(seed).to(self.device, self.dtype)

    def test_subset(self, t: int | None = None) -> Tensor | None:
        """The test images evaluated at round t (`eval.test_size`), or None for the whole test
        set (the last round's, unless `eval.final_on_subset`)."""
        return evaluated_test_indices(self.cfg, len(self.dataset.test_y), t)

    def test_data(self, t: int | None = None) -> tuple[Tensor, Tensor]:
        """The test images (raw) and labels evaluated at round t: the whole test set or
        `test_subset(t)`."""
        ds, idx = self.dataset, self.test_subset(t)
        return (ds.test_x, ds.test_y) if idx is None else (ds.test_x[idx], ds.test_y[idx])

    def client_data(self, c: int) -> tuple[Tensor, Tensor]:
        """Client c's training images (normalised, on the device) and labels."""
        idx = torch.from_numpy(self.client_indices[c])
        x = self.dataset.normalize(self.dataset.train_x[idx]).to(self.device, self.dtype)
        return x, self.dataset.train_y[idx].to(self.device)


def pinned_malicious_set(
    cfg: ExperimentConfig, labels: np.ndarray, num_classes: int
) -> MaliciousSet:
    """D_M pinned to `attack.indices` of the `attack.source` set (`labels`: that set's labels)
    instead of drawn, in the given order, with `attack.targets`, else `attack.target` for all,
    else a random wrong label per image from the stream (seed, "malicious-set"). The authors'
    code draws D_M once with a fixed seed, so pinning its images reproduces their runs; one
    line of error for an index outside the set or a target equal to the true label."""
    att = cfg.attack
    assert att.indices is not None
    idx = np.asarray(att.indices, dtype=np.int64)
    outside = [int(i) for i in idx if i >= len(labels)]
    if outside:
        raise FlwbcError(
            f"attack.indices {outside} outside 0..{len(labels) - 1} (the {att.source} set of "
            f"{cfg.data.name})"
        )
    true = labels[idx].astype(np.int64)
    if att.targets is not None:
        targets = np.asarray(att.targets, dtype=np.int64)
    elif att.target is not None:
        targets = np.full(len(idx), att.target, dtype=np.int64)
    else:
        shift = numpy_rng(cfg.seed, "malicious-set").integers(1, num_classes, size=len(idx))
        targets = (true + shift) % num_classes
    same = [f"{i} (label {y})" for i, y, g in zip(idx, true, targets, strict=True) if y == g]
    if same:
        raise FlwbcError(
            f"attack target equals the true label of {att.source} image {', '.join(same)}; "
            "a target must be a wrong label"
        )
    return MaliciousSet(att.source, idx, true, targets)


def check_plugin_options(cfg: ExperimentConfig) -> None:
    """Build every plug-in the config names that needs no data (rule, pre- and post-aggregation
    steps, attack, client defenses, schedule, metrics), so that a rejected option fails in one line
    before a sweep creates a run directory for it."""
    attack = build_attack(cfg)
    check_aggregator(cfg, build_aggregator(cfg.server.aggregator, cfg.server.options), attack)
    build_pre_aggregators(cfg.server.pre)
    build_post_aggregators(cfg.server.post)
    build_client_defenses(cfg)
    for name, options in cfg.defense.options.items():  # also those of defenses left out
        CLIENT_DEFENSES.options(name, options)
    build_schedule(cfg)
    build_metrics(cfg.eval.metrics, attack)


def check_aggregator(cfg: ExperimentConfig, aggregator: Aggregator, attack: Attack | None) -> None:
    """Reject an aggregator whose combination with the config's attack would silently mean
    something else, or that cannot work with the round's number of updates."""
    att, k = cfg.attack, cfg.federation.clients_per_round
    emulating = attack is not None and attack.stand_in()
    if emulating and aggregator.rank_based:
        raise FlwbcError(
            f"attack.mode=emulate gives one attacker aggregation weight {att.num_malicious}, which "
            f"the rank-based aggregator '{aggregator.name}' ignores; use --attack-mode real "
            "(or boost)"
        )
    aggregator.check(k - att.num_malicious + 1 if emulating else k)
    merging = [s.name for s in cfg.server.pre if not PRE_AGGREGATORS.lookup(s.name).keeps_rows]
    if aggregator.per_client and merging:
        raise FlwbcError(
            f"aggregator '{aggregator.name}' keeps a history per client, which the "
            f"pre-aggregation step '{merging[0]}' breaks by merging or reordering rows"
        )
