"""The targeted attack's reproduction options: D_M pinned to explicit images and targets
(`attack.indices`, `attack.targets`), and the reference code's weighted average as it runs
(`attack.emulate_average: reference`).

Facts from the authors' code (jeremy313/FL-WBC): `src/fedavg.py` seeds numpy with 903 and draws
D_M once from the test set, which for Fashion-MNIST IID is test image 6892 (true label 5,
target 8, ../shared/references.md); `src/utils.py` `average_weights_ns` starts from the first
client's model without multiplying it by its weight and divides by the sum of all weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import flwbc
from flwbc.engine.sequential import round_updates
from flwbc.errors import FlwbcError
from flwbc.experiment import Experiment, RoundPlan, check_plugin_options
from flwbc.round import aggregate_round


def small(real_data_dir: Path | None, **attack: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"train_fraction": 0.05}
    if real_data_dir is not None:
        data["dir"] = str(real_data_dir)
    return {
        "seed": 2,
        "data": data,
        "federation": {"num_clients": 10, "clients_per_round": 4, "rounds": 3},
        "local": {"epochs": 1, "batch_size": 32},
        "attack": {"num_malicious": 2, "rounds": [2], "epochs": 1, **attack},
    }


def one_line(data: dict[str, Any], *needles: str) -> None:
    with pytest.raises(FlwbcError) as err:  # the config, then its plug-ins' options
        check_plugin_options(flwbc.make_config(data))
    msg = str(err.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg


# --- pinned D_M ---------------------------------------------------------------------------


def test_pinned_config_checks_one_line() -> None:
    cfg = flwbc.make_config(small(None, source="test", indices=[6892], targets=[8]))
    assert (cfg.attack.num_images, cfg.attack.indices, cfg.attack.targets) == (1, [6892], [8])
    assert flwbc.make_config(small(None, indices=[3, 4, 3])).attack.num_images == 3
    one_line(small(None, indices=[1, 2], targets=[3]), "targets (1 labels)", "indices (2")
    one_line(small(None, targets=[3]), "targets needs indices")
    one_line(small(None, indices=[1, 2], num_images=3), "num_images (3)", "indices (2)")
    one_line(small(None, indices=[1], targets=[10]), "attack.targets [10]", "0..9")
    one_line(small(None, indices=[1], targets=[-1]), "attack.targets [-1]")
    one_line(small(None, indices=[-4]), "non-negative")
    one_line(small(None, indices=[]), "at least one image")
    one_line(small(None, indices=[1], targets=[2], target=2), "not both")


def test_pinned_reproduces_the_authors_image(real_data_dir: Path) -> None:
    """source test, indices [6892], targets [8]: x_mal is the normalised test image 6892, whose
    true label is 5, attacked towards 8, as in every Fashion-MNIST IID run of the authors."""
    cfg = flwbc.make_config(small(real_data_dir, source="test", indices=[6892], targets=[8]))
    exp = Experiment.prepare(cfg)
    ds = exp.dataset
    assert exp.malicious_set is not None and exp.x_mal is not None and exp.y_mal is not None
    assert exp.malicious_set.to_dict() == {
        "source": "test",
        "indices": [6892],
        "true_labels": [5],
        "targets": [8],
    }
    assert int(ds.test_y[6892]) == 5
    expected = ds.normalize(ds.test_x[6892:6893]).to(exp.x_mal.dtype)
    assert exp.x_mal.shape == (1, 1, 28, 28)
    assert torch.equal(exp.x_mal, expected)
    # the normalisation is the reference code's (0.1307, 0.3081) on [0, 1] pixels
    raw = ds.test_x[6892].double() / 255.0
    torch.testing.assert_close(
        exp.x_mal[0].double(), ((raw - 0.1307) / 0.3081).view(1, 28, 28), atol=1e-5, rtol=0
    )
    assert exp.y_mal.tolist() == [8]
    # a test-set D_M leaves the training pool whole
    assert sum(len(p) for p in exp.client_indices) == int(0.05 * 6000) * 10


def test_pinned_train_images_are_held_out_and_targets_default(real_data_dir: Path) -> None:
    idx = [20, 30, 21]  # training labels 3, 5, 1, kept in the given order
    exp = Experiment.prepare(flwbc.make_config(small(real_data_dir, indices=idx, target=0)))
    ms = exp.malicious_set
    assert ms is not None and ms.indices.tolist() == idx
    assert ms.true_labels.tolist() == [3, 5, 1]
    assert ms.targets.tolist() == [0, 0, 0]
    assert exp.y_mal is not None and exp.y_mal.tolist() == [0, 0, 0]
    held = np.concatenate(exp.client_indices)
    assert not set(idx) & set(held.tolist())
    # neither targets nor target: a random wrong label per image, the same for the same seed
    a = Experiment.prepare(flwbc.make_config(small(real_data_dir, indices=idx))).malicious_set
    b = Experiment.prepare(flwbc.make_config(small(real_data_dir, indices=idx))).malicious_set
    assert a is not None and b is not None
    assert a.targets.tolist() == b.targets.tolist()
    assert all(t != y for t, y in zip(a.targets, a.true_labels, strict=True))


def test_pinned_bad_index_or_target_one_line(real_data_dir: Path) -> None:
    cfg = flwbc.make_config(small(real_data_dir, source="test", indices=[10000]))
    with pytest.raises(FlwbcError, match=r"attack.indices \[10000\] outside 0..9999 \(the test"):
        Experiment.prepare(cfg)
    cfg = flwbc.make_config(small(real_data_dir, source="test", indices=[6892], targets=[5]))
    with pytest.raises(FlwbcError, match=r"true label of test image 6892 \(label 5\)"):
        Experiment.prepare(cfg)


# --- the reference code's average ---------------------------------------------------------


def reference_average_ns(models: list[np.ndarray], ns: list[float]) -> np.ndarray:
    """`average_weights_ns` of the authors' `src/utils.py`, transcribed in numpy: start from
    the first model (the `* ns[0]` result is discarded), add ns[i]·w_i for the others, divide
    by the sum of all weights."""
    avg = models[0].copy()
    for m, n in zip(models[1:], ns[1:], strict=True):
        avg += n * m
    return avg / sum(ns)


def reference_round(
    plan: RoundPlan, zeroed: int, rng: np.random.Generator, p: int
) -> tuple[list[np.ndarray], list[float], dict[int, int]]:
    """The authors' whole round as their code orders it, given flwbc's reference plan: K
    clients in sampled order with the attacker (weight N_m) at position 0 (if flwbc's plan has
    it first) or a later one, the first `zeroed` benign clients in that order at weight 0, the
    others at 1. The zeroed clients flwbc leaves out get random models: only the first client's
    model may matter. Returns the models, weights and which plan row each model is."""
    n_mal = zeroed + 1
    rows = list(range(len(plan.clients)))
    att = plan.malicious.index(True)
    benign_rows = [r for r in rows if r != att]
    order: list[int | None]
    if att == 0:  # attacker first, then the zeroed, then the kept benign
        order = [att] + [None] * zeroed + benign_rows
    else:  # flwbc's extra client is the first zeroed one; the attacker at position p ≥ 1
        first, kept = benign_rows[0], benign_rows[1:]
        rest: list[int | None] = [None] * (zeroed - 1) + kept
        rest.insert(p - 1, att)
        order = [first, *rest]
    size = 5
    models, ns, row_of = [], [], {}
    for pos, row in enumerate(order):
        if row is None:
            models.append(rng.normal(size=size))
            ns.append(0.0)
            continue
        row_of[pos] = row
        models.append(np.zeros(size))
        if plan.malicious[row]:
            ns.append(float(n_mal))
        elif att != 0 and pos == 0:
            ns.append(0.0)
        else:
            ns.append(1.0)
    return models, ns, row_of


def reference_experiment(real_data_dir: Path, average: str, **over: Any) -> Experiment:
    data = small(real_data_dir, mode="emulate", emulate_average=average, **over)
    data["federation"]["rounds"] = 400
    data["attack"]["rounds"] = list(range(1, 401))
    return Experiment.prepare(flwbc.make_config(data))


def test_reference_average_matches_the_hand_formula(real_data_dir: Path) -> None:
    """On random client models, flwbc's (Σa)·w + Σ a u with the plan's coefficients equals the
    authors' average_weights_ns applied to their whole round (zeroed clients included), in both
    orders: attacker first and benign first."""
    exp = reference_experiment(real_data_dir, "reference")
    intended = reference_experiment(real_data_dir, "intended")
    k, n_mal = 4, 2
    rng = np.random.default_rng(0)
    seen = {True: 0, False: 0}
    for t in range(1, 401):
        plan, base = exp.round_plan(t), intended.round_plan(t)
        attacker_first = plan.malicious[0]
        seen[attacker_first] += 1
        # the same round as the intended one, plus (benign first) one zeroed client in front
        assert plan.clients[-len(base.clients) :] == base.clients
        assert len(plan.clients) == len(base.clients) + (0 if attacker_first else 1)
        assert plan.model_scale == pytest.approx((k - n_mal + 1) / k if attacker_first else 1.25)
        if t > 40:
            continue
        models, ns, row_of = reference_round(plan, n_mal - 1, rng, p=1 + t % (k - 1))
        w = rng.normal(size=5)
        client_models = {row: rng.normal(size=5) for row in range(len(plan.clients))}
        for pos, row in row_of.items():
            models[pos] = client_models[row]
        expected = reference_average_ns(models, ns)
        w_t = torch.from_numpy(w)
        updates = torch.stack(
            [torch.from_numpy(client_models[r] - w) for r in range(len(plan.clients))]
        )
        out = aggregate_round(exp, plan, w_t, updates, 0.0, [{}] * len(plan.clients))
        np.testing.assert_allclose(out.weights.numpy(), expected, rtol=1e-6, atol=1e-6)
        assert out.info["model_scale"] == plan.model_scale
        assert sum(ns[1:]) + 1 == pytest.approx(plan.model_scale * sum(ns))
    # the attacker is first in about 1/K of the rounds (binomial, 400 rounds: 100 ± 8.7)
    assert 65 <= seen[True] <= 135, seen


def test_reference_average_changes_nothing_elsewhere(real_data_dir: Path) -> None:
    """Benign rounds and rounds with one attacker (nothing zeroed) keep the intended plan."""
    data = small(real_data_dir, mode="emulate", emulate_average="reference", rounds=[2])
    ref = Experiment.prepare(flwbc.make_config(data))
    data["attack"]["emulate_average"] = "intended"
    base = Experiment.prepare(flwbc.make_config(data))
    for t in (1, 3):
        a, b = ref.round_plan(t), base.round_plan(t)
        assert a.model_scale is None and a.clients == b.clients
        assert torch.equal(a.weights, b.weights)
    one = {**data, "attack": {**data["attack"], "num_malicious": 1}}
    base = Experiment.prepare(flwbc.make_config(one))
    one["attack"]["emulate_average"] = "reference"
    ref = Experiment.prepare(flwbc.make_config(one))
    a, b = ref.round_plan(2), base.round_plan(2)
    assert a.adversarial and a.model_scale is None and a.clients == b.clients
    assert torch.equal(a.weights, b.weights)


@pytest.mark.parametrize(
    ("over", "needles"),
    [
        ({"attack": {"mode": "real"}}, ("needs attack.mode=emulate",)),
        ({"server": {"aggregator": "median"}}, ("server.aggregator=fedavg", "median")),
        ({"server": {"aggregator": "cdp"}}, ("server.aggregator=fedavg", "cdp")),
        ({"federation": {"weighting": "samples"}}, ("federation.weighting=uniform",)),
        ({"server": {"pre": [{"name": "clip", "options": {"bound": 1.0}}]}}, ("server.pre",)),
    ],
)
def test_reference_average_restrictions_one_line(
    over: dict[str, Any], needles: tuple[str, ...]
) -> None:
    data = small(None, mode="emulate", emulate_average="reference")
    for section, values in over.items():
        data[section] = {**data.get(section, {}), **values}
    one_line(data, *needles)


def test_reference_average_real_run(real_data_dir: Path, tmp_path: Path) -> None:
    """Real Fashion-MNIST updates: the round's new model is Σ a_i (w + u_i) with the reference
    coefficients; a full run records model_scale in its adversarial round only and its benign
    first round is bit for bit the intended run's."""
    data = small(real_data_dir, mode="emulate", emulate_average="reference", source="test")
    data.update(engine="sequential", threads=1)
    data["federation"]["rounds"] = 2
    exp = Experiment.prepare(flwbc.make_config(data))
    w = exp.initial_weights()
    plan = exp.round_plan(2)
    assert plan.model_scale in (0.75, 1.25)
    u = round_updates(exp, plan, w)
    out = aggregate_round(exp, plan, w, u.updates, u.mean_loss, u.stats)
    models = (w.double() + u.updates.double()).numpy()
    a = plan.weights.double().numpy()
    np.testing.assert_allclose(out.weights.double().numpy(), a @ models, rtol=1e-5, atol=1e-6)
    assert plan.model_scale == pytest.approx(float(a.sum()))

    def run(average: str) -> list[dict[str, Any]]:
        cfg = flwbc.make_config(
            {**data, "attack": {**data["attack"], "emulate_average": average}},
            **{"output.dir": str(tmp_path), "output.name": average},
        )
        threads = torch.get_num_threads()
        try:
            return flwbc.run(cfg, progress=False).records
        finally:
            torch.set_num_threads(threads)

    ref, base = run("reference"), run("intended")
    assert [("model_scale" in r) for r in ref] == [False, True]
    assert ref[1]["model_scale"] == plan.model_scale
    assert ref[0]["test_acc"] == base[0]["test_acc"] and ref[0]["clients"] == base[0]["clients"]
    assert ref[1]["test_loss"] != base[1]["test_loss"]
