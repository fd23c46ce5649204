"""The round library every engine shares: one client's work in a round (`ClientJob`), training
a lock-step group of jobs, and aggregating the round.

Everything that depends on the algorithm comes from the experiment's plug-ins: an attacker's
plan from its `Attack`, every client's local behaviour from its client transforms
(`flwbc.client.transform`: the attack for an attacker, the chain of `ClientDefense`s for a
benign client), the aggregation from its `Aggregator`. The engines (`flwbc.engine`) only decide
which jobs train together and with which forward pass.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from flwbc.client.local import Chain, Epoch, GroupLoss, benign_plan, local_train, single_loss
from flwbc.client.transform import ClientRun, ClientTransform
from flwbc.context import RoundPlan
from flwbc.experiment import Experiment
from flwbc.rng import torch_generator
from flwbc.server import Aggregate, Aggregator, RoundContext

ClientStats = dict[str, float]
"""Per-client numbers a defense reports for the round record (e.g. FL-WBC's perturbed share),
averaged over the clients that report them."""


@dataclass
class RoundOutput:
    weights: Tensor
    train_loss: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClientJob(ClientRun):
    """One client's local training in one round of one run."""

    exp: Experiment


def client_plan(exp: Experiment, t: int, c: int, malicious: bool) -> tuple[int, Iterator[Epoch]]:
    """Client c's local-training plan for round t, and its number of own training samples.

    Data order comes from the stream (seed, "data", t, c), so it depends neither on other
    clients nor on the defense chosen. Attackers follow their attack's plan; benign clients
    train on their own data.
    """
    cfg, loc = exp.cfg, exp.cfg.local
    gen = torch_generator(cfg.seed, "data", t, c)
    if malicious:
        assert exp.attack is not None
        return exp.attack.plan(exp, t, c, gen)
    x, y = exp.client_data(c)
    return len(y), benign_plan(x, y, loc.batch_size, loc.epochs, gen)


def job_plan(job: ClientJob) -> tuple[Hashable, Iterator[Epoch]]:
    """The job's plan, and a key equal for jobs that can advance in lock-step: same model and
    dtype, the same update rule (lr, momentum) and the same step shapes and loss terms. Each
    client's transforms act on its own row, so they are no part of the key."""
    exp, loc = job.exp, job.exp.cfg.local
    n, plan = client_plan(exp, job.round, job.client, job.malicious)
    model = (exp.cfg.model_name, json.dumps(exp.cfg.model_options, sort_keys=True))
    rule = (*model, exp.cfg.dtype, exp.cfg.device, loc.lr, loc.momentum)
    if job.malicious:
        assert exp.attack is not None
        return (*rule, "attacker", exp.attack.name, exp.attack.group_key(exp, n)), plan
    return (*rule, "benign", n, loc.batch_size, loc.epochs), plan


def transforms(job: ClientJob) -> list[ClientTransform]:
    """The job's client transforms: its attack for an attacker, its run's chain of client
    defenses for a benign client."""
    if job.malicious:
        assert job.exp.attack is not None
        return [job.exp.attack]
    return list(job.exp.defenses)


def job_chain(job: ClientJob) -> Chain:
    """The job's transforms, each with the client's state for the round."""
    return [(t, t.init(job)) for t in transforms(job)]


def finish(chain: Chain, update: Tensor, *, skip: tuple[type, ...] = ()) -> Tensor:
    """What a client sends: its update through its transforms' `final` in order (those of the
    types in `skip` are left to the caller)."""
    for t, state in chain:
        if not isinstance(t, skip):
            update = t.final(state, update)
    return update


def chain_stats(chain: Chain) -> ClientStats:
    """The client's numbers for the round record, from every transform of its chain."""
    return {k: v for t, state in chain for k, v in t.stats(state).items()}


def train_jobs(
    jobs: Sequence[ClientJob],
    plans: Sequence[Iterator[Epoch]],
    loss_fn: GroupLoss = single_loss,
    *,
    skip: tuple[type, ...] = (),
) -> list[tuple[Tensor, float, ClientStats]]:
    """Train jobs of one key together (G = len(jobs)); (update, mean loss, stats) for each."""
    first = jobs[0].exp
    loc = first.cfg.local
    chains = [job_chain(j) for j in jobs]
    weights, losses, _ = local_train(
        first.model,
        torch.stack([j.w0.detach() for j in jobs]),
        plans,
        lr=loc.lr,
        momentum=loc.momentum,
        loss_fn=loss_fn,
        chains=chains,
    )
    return [
        (finish(chains[k], weights[k] - j.w0, skip=skip), losses[k], chain_stats(chains[k]))
        for k, j in enumerate(jobs)
    ]


def client_update(
    exp: Experiment, t: int, c: int, malicious: bool, w: Tensor, *, skip: tuple[type, ...] = ()
) -> tuple[Tensor, float, ClientStats]:
    """Client c's round-t update from global weights w, alone (G = 1): (update, mean loss,
    stats). Defenses of the types in `skip` leave their post-processing to the caller (a
    Flower mod)."""
    job = ClientJob(exp, t, c, malicious, w)
    _, plan = job_plan(job)
    return train_jobs([job], [plan], skip=skip)[0]


@dataclass
class RoundUpdates:
    """A round's client updates [K, P] (rows in `plan.clients` order) before aggregation, the
    mean local training loss and each client's stats."""

    updates: Tensor
    mean_loss: float
    stats: list[ClientStats]

    @classmethod
    def of(cls, results: Sequence[tuple[Tensor, float, ClientStats]]) -> RoundUpdates:
        """From per-client (update, loss, stats) in `plan.clients` order."""
        return cls(
            torch.stack([u for u, _, _ in results]),
            sum(loss for _, loss, _ in results) / len(results),
            [s for _, _, s in results],
        )


def detection_record(plan: RoundPlan, flagged: Sequence[int]) -> dict[str, Any]:
    """The round's `detection` entry: the client ids of the flagged rows (rows in
    `plan.clients` order) and the confusion counts against `plan.malicious` (tp: flagged
    attackers, fp: flagged benign clients, fn: unflagged attackers, tn: unflagged benign).
    Rows are counted, so under `attack.mode: emulate` the one attacker row standing for N_m
    attackers counts once."""
    rows = set(int(r) for r in flagged)
    counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for row, bad in enumerate(plan.malicious):
        hit = row in rows
        counts["tp" if bad and hit else "fp" if hit else "fn" if bad else "tn"] += 1
    return {"flagged": [int(plan.clients[r]) for r in sorted(rows)], **counts}


def _pre_aggregate(
    exp: Experiment,
    steps: Sequence[Any],
    t: int,
    updates: Tensor,
    weights: Tensor,
    ctx: RoundContext,
    simulated: bool = False,
) -> tuple[Tensor, Tensor, dict[str, Any], RoundContext]:
    """The pre-aggregation steps in order: the updates, weights and context the rule gets, and
    each step's info. `simulated`: an attacker's question to the server (its own streams)."""
    info: dict[str, Any] = {}
    for i, step in enumerate(steps):
        key = ("adaptive-pre", t, i) if simulated else ("pre", t, i)
        gen = torch_generator(exp.cfg.seed, *key, device=exp.device)
        updates, weights, got = step.apply(updates, weights, ctx, gen)
        if got:
            info[step.name] = got
        if not step.keeps_rows:
            ctx = replace(ctx, rows_are_clients=False)
    return updates, weights, info, ctx


def _post_aggregate(
    exp: Experiment,
    steps: Sequence[Any],
    t: int,
    update: Tensor,
    ctx: RoundContext,
    simulated: bool = False,
) -> tuple[Tensor, dict[str, Any]]:
    """The post-aggregation steps in order on the rule's aggregate, each with the stream
    (seed, "post", t, position): the update the global model moves by, and each step's info.
    `simulated`: an attacker's question to the server (its own streams)."""
    info: dict[str, Any] = {}
    for i, step in enumerate(steps):
        key = ("adaptive-post", t, i) if simulated else ("post", t, i)
        gen = torch_generator(exp.cfg.seed, *key, device=exp.device)
        update, got = step.apply(update, ctx, gen)
        if got:
            info[step.name] = got
    return update, info


def _aggregate(rule: Aggregator, updates: Tensor, weights: Tensor, ctx: RoundContext) -> Aggregate:
    """`rule.aggregate`, except that a rule failing on non-finite updates (a training that has
    diverged: HDBSCAN, an SVD or a solver refuses NaN) gives a NaN aggregate, recorded as
    `nonfinite_input`, so the run goes on diverged as it would under FedAvg instead of
    crashing. A rule that fails on finite updates still raises."""
    try:
        return rule.aggregate(updates, weights, ctx)
    except Exception:
        if bool(torch.isfinite(updates).all()):
            raise
        nan = torch.full_like(updates[0], float("nan"))
        return Aggregate(nan, {"nonfinite_input": True})


def aggregate_round(
    exp: Experiment,
    plan: RoundPlan,
    w: Tensor,
    updates: Tensor,
    mean_loss: float,
    stats: Sequence[ClientStats],
    received: Callable[[Tensor], None] | None = None,
) -> RoundOutput:
    """Let a colluding attack craft its rows (adversarial rounds), then apply the
    pre-aggregation steps, the aggregator and the post-aggregation steps to the round's
    updates [K, P] (rows in `plan.clients` order); the record's info holds the pre steps', the
    aggregator's and the post steps', then each client stat's mean over its reporters; a rule
    that flags rows (`Aggregate.flagged`) adds `detection` (`detection_record`) when every
    step keeps the rows (`keeps_rows`). The new model is w + the aggregate, or, when the plan
    has a `model_scale` (the reference code's average), model_scale·w + it. `received`, if
    given, is called with the updates as the server receives them (the attack's crafted rows
    in place), before any pre-aggregation step: what an analysis of the round observes."""
    reference = None
    if exp.root_indices is not None:
        cached: list[Tensor] = []

        def reference() -> Tensor:  # the server's own update, computed once per round
            if not cached:
                cached.append(exp.reference_update(plan.round, w))
            return cached[0]

    ctx = RoundContext(
        round=plan.round,
        client_ids=plan.clients,
        generator=torch_generator(exp.cfg.seed, "server", plan.round, device=exp.device),
        global_weights=w,
        reference_update=reference,
    )
    weights = plan.weights.to(w.device)
    if exp.attack is not None and any(plan.malicious):

        def server(candidate: Tensor) -> Tensor:
            """The aggregate the deployed server would compute from `candidate` updates, on
            copies of its stateful steps and rule, with random streams of its own that are the
            same for every candidate (a noisy rule's candidates compare under one draw), so
            nothing of the real round changes."""
            sim = replace(
                ctx,
                generator=torch_generator(
                    exp.cfg.seed, "adaptive-server", plan.round, device=exp.device
                ),
            )
            steps, rule, post = copy.deepcopy((exp.pre_steps, exp.aggregator, exp.post_steps))
            u, wt, _, sim = _pre_aggregate(exp, steps, plan.round, candidate, weights, sim, True)
            update = _aggregate(rule, u, wt, sim).update
            return _post_aggregate(exp, post, plan.round, update, sim, True)[0]

        updates = exp.attack.craft_against(exp, plan.round, updates, plan.malicious, server)
    if received is not None:
        received(updates)
    updates, weights, pre_info, ctx = _pre_aggregate(
        exp, exp.pre_steps, plan.round, updates, weights, ctx
    )
    if updates.shape[0] != len(plan.clients):
        exp.aggregator.check(updates.shape[0])  # checked before the run for a row per client
    agg = _aggregate(exp.aggregator, updates, weights, ctx)
    update, post_info = _post_aggregate(exp, exp.post_steps, plan.round, agg.update, ctx)
    info: dict[str, Any] = {}
    if pre_info:
        info["pre"] = pre_info
    if agg.info:
        info["aggregator"] = agg.info
    if post_info:
        info["post"] = post_info
    if agg.flagged is not None and ctx.rows_are_clients:
        info["detection"] = detection_record(plan, agg.flagged)
    for key in dict.fromkeys(k for s in stats for k in s):
        values = [s[key] for s in stats if key in s]
        info[key] = sum(values) / len(values)
    if plan.model_scale is None:
        return RoundOutput(w + update, mean_loss, info)
    # the reference code's average of models, Σ a_i (w + u_i) = (Σ a_i)·w + Σ a_i u_i
    # (`attack.emulate_average: reference`, `flwbc.attacks.targeted.reference_average_plan`)
    info["model_scale"] = plan.model_scale
    return RoundOutput(w * plan.model_scale + update, mean_loss, info)
