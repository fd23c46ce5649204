"""The Flower apps against the native engines: in-process (a Grid that calls the ClientApp
directly) and on Flower's real simulation engine (Ray)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("flwr")

from flwr.app import Context, Error, Message, RecordDict  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

import flwbc  # noqa: E402
from flwbc.api import RunSession  # noqa: E402
from flwbc.engine.sequential import client_update  # noqa: E402
from flwbc.errors import FlwbcError  # noqa: E402
from flwbc.experiment import Experiment  # noqa: E402
from flwbc.flower.client_app import app as client_app  # noqa: E402
from flwbc.flower.common import ARRAYS, pack  # noqa: E402
from flwbc.flower.partitions import export_partitions, partition_experiment  # noqa: E402
from flwbc.flower.server_app import serve  # noqa: E402
from flwbc.flower.simulation import StoppableGrid  # noqa: E402
from flwbc.flower.strategy import StopRun  # noqa: E402
from flwbc.runio import read_jsonl  # noqa: E402

ROUND_KEYS = ("round", "adversarial", "clients", "malicious")
VALUE_KEYS = ("train_loss", "test_acc", "test_loss", "target_conf", "target_acc", "wbc_perturbed")


def tiny(data_dir: Path, out: Path, name: str, **over: Any) -> flwbc.ExperimentConfig:
    """Five clients of 150 images (three a round), one attacker in round 2, float64, the test
    set evaluated after the last round only."""
    base = {
        "seed": 5,
        "data": {"dir": str(data_dir), "train_fraction": 0.025},
        "federation": {"num_clients": 5, "clients_per_round": 3, "rounds": 2},
        "local": {"epochs": 1, "batch_size": 32},
        "attack": {"num_malicious": 1, "num_images": 2, "rounds": [2], "epochs": 2},
        "defense": {"client": "wbc"},
        "eval": {"every": 2},
        "output": {"dir": str(out), "name": name},
        "dtype": "float64",
    }
    return flwbc.make_config(base, **over)


class LocalGrid:
    """A Grid whose nodes are ClientApp calls in this process (node id = 100 + client id).

    As in Flower, an exception in a ClientApp comes back as an error reply. `fail` makes chosen
    clients' train calls fail; `tamper` may rewrite a train reply."""

    def __init__(
        self,
        node_configs: list[dict[str, Any]],
        fail: set[int] | None = None,
        tamper: Callable[[Message], None] | None = None,
    ) -> None:
        # what Flower's runtime sets for a ServerApp's process before messages are made
        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
        self.configs = {100 + i: cfg for i, cfg in enumerate(node_configs)}
        self.fail, self.tamper = fail or set(), tamper
        self.sampled: list[list[int]] = []

    def get_node_ids(self) -> Iterable[int]:
        return list(self.configs)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None):
        msgs = list(messages)
        train = bool(msgs) and msgs[0].metadata.message_type == "train"
        if train:
            self.sampled.append([m.metadata.dst_node_id - 100 for m in msgs])
        replies = []
        for m in msgs:
            nid = m.metadata.dst_node_id
            ctx = Context(1, nid, dict(self.configs[nid]), RecordDict(), {})
            try:
                if train and nid - 100 in self.fail:
                    raise RuntimeError("out of memory")
                reply = client_app(m, ctx)
            except Exception as err:
                reply = Message(Error(0, f"Traceback ...\n{type(err).__name__}: {err}"), reply_to=m)
            if train and self.tamper is not None and not reply.has_error():
                self.tamper(reply)
            replies.append(reply)
        return replies


def run_local(
    cfg: flwbc.ExperimentConfig, node_configs: list[dict[str, Any]], **grid_options: Any
) -> Any:
    sess = RunSession(cfg, None)
    grid = LocalGrid(node_configs, **grid_options)
    serve(grid, sess)  # type: ignore[arg-type]
    return sess.finish(), grid


def assert_same_run(a: Any, b: Any, atol: float = 1e-12) -> None:
    assert len(a.records) == len(b.records) == a.summary["rounds_done"]
    for ra, rb in zip(a.records, b.records, strict=True):
        for k in ROUND_KEYS:
            assert ra[k] == rb[k], k
        for k in VALUE_KEYS:
            if ra.get(k) is None:
                assert rb.get(k) is None, k
            else:
                assert ra[k] == pytest.approx(rb[k], abs=atol), k
    assert torch.allclose(a.weights, b.weights, rtol=0, atol=atol)


@pytest.fixture(scope="module")
def native(real_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("native")
    return flwbc.run(tiny(real_data_dir, out, "seq", engine="sequential"), progress=False)


def test_strategy_and_client_app_equal_the_sequential_engine(
    real_data_dir: Path, tmp_path: Path, native: Any
) -> None:
    nodes = [{"partition-id": c} for c in range(5)]
    res, grid = run_local(tiny(real_data_dir, tmp_path, "flower", engine="flower"), nodes)
    assert_same_run(res, native)
    # the seeded plan, not Flower's sampler: exactly K clients, the attacker in round 2
    assert grid.sampled == [r["clients"] for r in native.records]
    assert all(len(s) == 3 for s in grid.sampled)
    assert native.records[1]["malicious"] and native.records[1]["malicious"][0] in grid.sampled[1]
    files = {p.name for p in res.run_dir.iterdir()}
    assert {"config.json", "rounds.jsonl", "summary.json", "model.safetensors"} <= files
    assert read_jsonl(res.run_dir / "rounds.jsonl") == res.records


def test_nodes_holding_only_their_partition_file_give_the_same_run(
    real_data_dir: Path, tmp_path: Path, native: Any
) -> None:
    cfg = tiny(real_data_dir, tmp_path, "parts", engine="flower")
    paths = export_partitions(cfg, tmp_path / "parts")
    assert [p.name for p in paths] == [f"client-{c}.safetensors" for c in range(5)]
    nodes = [{"partition-id": c, "partition-file": str(p)} for c, p in enumerate(paths)]
    res, _ = run_local(cfg, nodes)
    assert_same_run(res, native)


def test_flower_run_stopped_after_a_round_resumes_to_the_same_result(
    real_data_dir: Path, tmp_path: Path, native: Any
) -> None:
    nodes = [{"partition-id": c} for c in range(5)]
    sess = RunSession(tiny(real_data_dir, tmp_path, "cut", engine="flower"), None)
    serve(LocalGrid(nodes), sess, on_round=lambda record: False)  # type: ignore[arg-type]
    first = sess.finish()
    assert [r["round"] for r in first.records] == [1] and not first.summary["complete"]
    sess = RunSession(None, first.run_dir)
    serve(LocalGrid(nodes), sess)  # type: ignore[arg-type]
    assert_same_run(sess.finish(), native)


def test_partition_file_holds_exactly_the_clients_data(real_data_dir: Path, tmp_path: Path) -> None:
    cfg = tiny(real_data_dir, tmp_path, "x")
    full = Experiment.prepare(cfg)
    paths = export_partitions(cfg, tmp_path / "parts")
    w = full.initial_weights()
    for c in (full.malicious_ids[0], int(full.benign_ids[0])):
        part = partition_experiment(cfg, paths[c])
        xa, ya = part.client_data(c)
        xb, yb = full.client_data(c)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        mal = c in full.malicious_ids
        ua = client_update(part, 2, c, mal, w)[0]
        ub = client_update(full, 2, c, mal, w)[0]
        assert torch.equal(ua, ub)
    with pytest.raises(FlwbcError, match="holds client 0's data, but this node plays client 1"):
        partition_experiment(cfg, paths[0], 1)
    other = tiny(real_data_dir, tmp_path, "x", seed=6)
    with pytest.raises(FlwbcError, match="another experiment"):
        partition_experiment(other, paths[0])


def test_ldp_as_a_flower_mod_equals_the_client_option(real_data_dir: Path, tmp_path: Path) -> None:
    over = {"defense.client": "ldp", "defense.ldp.clip": 1.0, "defense.ldp.sigma": 0.01}
    ref = flwbc.run(
        tiny(real_data_dir, tmp_path, "seq", engine="sequential", **over), progress=False
    )
    # the client option inside client_update is the sequential engine's own code (the first
    # test); here the mod must add the same clipping and noise from outside
    cfg = tiny(real_data_dir, tmp_path, "mod", engine="flower", **over, **{"flower.ldp": "mod"})
    res, _ = run_local(cfg, [{"partition-id": c} for c in range(5)])
    assert_same_run(res, ref)


def test_missing_or_misconfigured_nodes_give_one_line_errors(
    real_data_dir: Path, tmp_path: Path
) -> None:
    nodes = [{"partition-id": c} for c in range(5)]
    cfg = tiny(real_data_dir, tmp_path, "a", engine="flower", **{"flower.node_wait": 0.1})
    with pytest.raises(FlwbcError, match=r"4 of 5 clients connected .* missing client ids \[4\]"):
        run_local(cfg, nodes[:4])
    cfg = tiny(real_data_dir, tmp_path, "b", engine="flower")
    with pytest.raises(FlwbcError, match="two nodes play client 1"):
        run_local(cfg, [{"partition-id": c} for c in (0, 1, 1, 2, 3)])
    cfg = tiny(real_data_dir, tmp_path, "c", engine="flower")
    with pytest.raises(FlwbcError, match="node 100 cannot take part: .*no 'partition-id'"):
        run_local(cfg, [{} for _ in range(5)])
    # another client's partition file is refused when the node connects, not in its first round
    paths = export_partitions(cfg, tmp_path / "parts")
    swapped = [{"partition-id": c, "partition-file": str(paths[(c + 1) % 5])} for c in range(5)]
    cfg = tiny(real_data_dir, tmp_path, "d", engine="flower")
    with pytest.raises(FlwbcError, match="cannot take part: .*holds client 1's data, but this"):
        run_local(cfg, swapped)


def test_failed_or_malformed_replies_stop_the_run_with_one_line(
    real_data_dir: Path, tmp_path: Path
) -> None:
    nodes = [{"partition-id": c} for c in range(5)]
    cfg = tiny(real_data_dir, tmp_path, "fail", engine="flower", dtype="float32")
    plan = Experiment.prepare(cfg).round_plan(1)
    victim = plan.clients[1]
    with pytest.raises(FlwbcError, match=f"round 1: client {victim} failed: .*out of memory"):
        run_local(cfg, nodes, fail={victim})

    def short(reply: Message) -> None:
        reply.content[ARRAYS] = pack(torch.zeros(3))

    cfg = tiny(real_data_dir, tmp_path, "short", engine="flower", dtype="float32")
    with pytest.raises(FlwbcError, match=r"round 1: client \d sent \(3,\) values, expected"):
        run_local(cfg, nodes, tamper=short)


@pytest.mark.parametrize(
    "over",
    [
        {"attack.mode": "emulate"},
        {
            "attack.mode": "boost",
            "attack.boost": 3.0,
            "server.aggregator": "fltrust",
            "server.options": {"root_size": 20},
        },
    ],
    ids=["emulate", "boost-fltrust"],
)
def test_attack_modes_and_server_side_reference_match_the_sequential_engine(
    real_data_dir: Path, tmp_path: Path, over: dict[str, Any]
) -> None:
    base = {"dtype": "float32", "attack.num_malicious": 2, **over}
    ref = flwbc.run(
        tiny(real_data_dir, tmp_path, "seq", engine="sequential", **base), progress=False
    )
    res, grid = run_local(
        tiny(real_data_dir, tmp_path, "flower", engine="flower", **base),
        [{"partition-id": c} for c in range(5)],
    )
    assert_same_run(res, ref, atol=0.0)  # same process, same threads: bit for bit
    assert grid.sampled[1][: len(ref.records[1]["malicious"])] == ref.records[1]["malicious"]


def test_stoppable_grid_gives_up_when_the_runtime_ends() -> None:
    """flwr never stops the simulation's ServerApp thread; the grid must notice instead."""

    class SilentGrid:
        def push_messages(self, messages: Iterable[Message]) -> list[str]:
            return ["m1", "m2"]

        def pull_messages(self, ids: Iterable[str]) -> list[Message]:
            return []

    stop = threading.Event()
    grid = StoppableGrid(SilentGrid(), stop)
    assert grid.send_and_receive([], timeout=0.2) == []  # a timeout still ends the wait
    threading.Timer(0.2, stop.set).start()
    t0 = time.monotonic()
    with pytest.raises(StopRun):
        grid.send_and_receive([], timeout=3600)
    assert time.monotonic() - t0 < 5


@pytest.mark.slow
def test_flower_simulation_engine_three_clients_two_rounds(
    real_data_dir: Path, tmp_path: Path
) -> None:
    """`engine: flower` on Flower's Ray simulation: 3 clients, 2 a round, an attacker in round 2,
    FL-WBC and central DP; same run directory and model as the sequential engine."""
    over = {
        "federation.num_clients": 3,
        "federation.clients_per_round": 2,
        "server.aggregator": "cdp",
        "server.options": {"clip": 5.0, "sigma": 0.001},
    }
    ref = flwbc.run(
        tiny(real_data_dir, tmp_path, "seq", engine="sequential", **over), progress=False
    )
    res = flwbc.run(tiny(real_data_dir, tmp_path, "ray", engine="flower", **over), progress=False)
    assert_same_run(res, ref, atol=1e-10)
    assert res.summary["complete"]
    summary = json.loads((res.run_dir / "summary.json").read_text())
    assert summary["adversarial_rounds"] == [2]


def test_cli_writes_the_app_and_the_partitions(
    real_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import tomllib

    from flwbc.cli import main

    assert main(["flower", "app", str(tmp_path / "app")]) == 0
    app = tomllib.loads((tmp_path / "app" / "pyproject.toml").read_text())
    assert app["tool"]["flwr"]["app"]["components"] == {
        "serverapp": "flwbc.flower.server_app:app",
        "clientapp": "flwbc.flower.client_app:app",
    }
    assert set(app["tool"]["flwr"]["app"]["config"]) == {"config", "out", "resume"}
    cfg = tiny(real_data_dir, tmp_path, "x")
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    argv = ["flower", "partitions", str(tmp_path / "parts"), "--config", str(tmp_path / "cfg.json")]
    assert main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == [
        f"client-{c}.safetensors" for c in range(5)
    ]
    assert main(["flower", "partitions", str(tmp_path / "p2"), "--config", "nope.yaml"]) == 2
    assert "config file not found: nope.yaml" in capsys.readouterr().err


def test_server_app_entry_point_runs_the_config_file(
    real_data_dir: Path, tmp_path: Path, native: Any
) -> None:
    """What `flwr run` calls: the run config names the experiment file and an absolute `out`."""
    from flwbc.flower.server_app import main as server_main

    cfg = tiny(real_data_dir, tmp_path, "deployed")
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    grid = LocalGrid([{"partition-id": c} for c in range(5)])

    def context(**run_config: str) -> Context:
        return Context(1, 0, {}, RecordDict(), run_config)

    with pytest.raises(FlwbcError, match="needs 'config'"):
        server_main(grid, context())  # type: ignore[arg-type]
    with pytest.raises(FlwbcError, match="is relative"):
        server_main(grid, context(config=str(tmp_path / "cfg.json"), out="runs"))  # type: ignore[arg-type]
    out = tmp_path / "served"
    server_main(grid, context(config=str(tmp_path / "cfg.json"), out=str(out)))  # type: ignore[arg-type]
    records = read_jsonl(out / "deployed" / "rounds.jsonl")
    assert [r["clients"] for r in records] == [r["clients"] for r in native.records]
    assert records[-1]["test_acc"] == pytest.approx(native.records[-1]["test_acc"], abs=1e-12)
    saved = json.loads((out / "deployed" / "config.json").read_text())
    assert saved["engine"] == "flower"


def test_simulation_asking_more_cores_than_usable_is_one_error(
    real_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("ray")
    import flwbc.flower.simulation as simulation

    monkeypatch.setattr(simulation, "usable_cpus", lambda: 1)
    cfg = tiny(real_data_dir, tmp_path, "cores", engine="flower", **{"flower.num_cpus": 2.0})
    with pytest.raises(FlwbcError, match=r"flower.num_cpus \(2\) is more than the 1 cores"):
        flwbc.run(cfg, progress=False)


@pytest.mark.parametrize(
    "attack",
    [
        {"name": "sign_flip"},
        {"name": "alie"},
        {"name": "min_max"},
        {"name": "mimic", "options": {"knowledge": "partial"}},
        {"name": "fang_trmean"},
        {"name": "label_flip"},
        {"name": "dba"},
        {"name": "model_replacement", "options": {"norm_bound": 1.0}},
        {"name": "neurotoxin", "options": {"mask": "clean_gradient"}},
    ],
    ids=lambda a: a["name"],
)
def test_every_kind_of_attack_runs_in_the_flower_path_as_natively(
    real_data_dir: Path, tmp_path: Path, attack: dict[str, Any]
) -> None:
    """Data and training attacks run in the ClientApps, colluding crafting in the strategy
    (simulated collusion); the run equals the sequential engine's bit for bit."""
    over = {
        "dtype": "float32",
        "model": "mlp",
        "attack.num_malicious": 2,
        "federation.num_clients": 6,
        "federation.clients_per_round": 4,
        "attack.name": attack["name"],
        "attack.options": attack.get("options", {}),
        "server.aggregator": "median",
    }
    ref = flwbc.run(
        tiny(real_data_dir, tmp_path, "seq", engine="sequential", **over), progress=False
    )
    res, _ = run_local(
        tiny(real_data_dir, tmp_path, "flower", engine="flower", **over),
        [{"partition-id": c} for c in range(6)],
    )
    assert len(ref.records[1]["malicious"]) == 2
    assert_same_run(res, ref, atol=0.0)


@pytest.mark.parametrize("form", ["hessian", "code"])
def test_leadfl_runs_in_the_client_apps_as_natively(
    real_data_dir: Path, tmp_path: Path, form: str
) -> None:
    """LeadFL, in both forms, trains in the ClientApps exactly as in the sequential engine."""
    over = {
        "dtype": "float32",
        "model": "mlp",
        "federation.num_clients": 6,
        "federation.clients_per_round": 4,
        "defense.client": "leadfl",
        "defense.options": {"leadfl": {"form": form}},
    }
    ref = flwbc.run(
        tiny(real_data_dir, tmp_path, "seq", engine="sequential", **over), progress=False
    )
    res, _ = run_local(
        tiny(real_data_dir, tmp_path, "flower", engine="flower", **over),
        [{"partition-id": c} for c in range(6)],
    )
    assert_same_run(res, ref, atol=0.0)
