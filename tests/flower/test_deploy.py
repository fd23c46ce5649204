"""End-to-end: a real local Flower deployment (SuperLink + 2 SuperNodes, TLS + node auth)."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("flwr")

import flwbc  # noqa: E402
from flwbc.errors import FlwbcError  # noqa: E402
from flwbc.flower.appdir import write_app  # noqa: E402

# the deployment harness is a demo tool beside the examples, not part of the library
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from flower_deploy import (  # noqa: E402
    LocalDeployment,
    format_node_config,
    make_node_keys,
    make_tls,
)

from flwbc.flower.partitions import export_partitions  # noqa: E402
from flwbc.models import FlatModel, build_model  # noqa: E402
from flwbc.runio import load_model, read_jsonl  # noqa: E402


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _processes_mentioning(needles: list[str]) -> list[str]:
    """Command lines of live (non-zombie) processes that mention any of ``needles``."""
    found: list[str] = []
    if not Path("/proc").is_dir():  # not Linux: rely on LocalDeployment.alive_pids()
        return found
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if stat[stat.rfind(")") + 2] in "ZXx":
            continue
        if any(n in cmdline for n in needles):
            found.append(f"{entry.name}: {cmdline}")
    return found


def test_make_tls_and_keys_are_loadable(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (
        load_pem_private_key,
        load_ssh_private_key,
        load_ssh_public_key,
    )

    tls = make_tls(tmp_path / "tls")
    ca = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(tls.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    load_pem_private_key(tls.server_key.read_bytes(), None)

    keys = make_node_keys(tmp_path / "keys", "node-a")
    private = load_ssh_private_key(keys.private_key.read_bytes(), None)
    public = load_ssh_public_key(keys.public_key.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp384r1"
    assert private.public_key().public_numbers() == public.public_numbers()
    assert keys.private_key.stat().st_mode & 0o077 == 0


def test_node_config_formatting() -> None:
    text = format_node_config({"partition-id": 1, "frac": 0.5, "ok": True, "f": "/a b/p.json"})
    assert text == 'partition-id=1 frac=0.5 ok=true f="/a b/p.json"'
    with pytest.raises(FlwbcError):
        format_node_config({"bad key": 1})
    with pytest.raises(FlwbcError):
        format_node_config({"f": 'quote"inside'})
    with pytest.raises(FlwbcError):
        LocalDeployment(Path("/nonexistent"), 2, [{"partition-id": 0}])


@pytest.mark.slow
def test_experiment_on_a_local_deployment_with_tls_and_node_auth(
    real_data_dir: Path, tmp_path: Path
) -> None:
    """flwbc's apps on SuperLink + 2 SuperNodes (TLS, node auth), each node holding only its own
    partition file: one round of the benign client under FL-WBC, then one of the attacker
    (whose file carries D_M); the run directory equals the sequential engine's run."""
    base = {
        "seed": 2,
        "data": {"dir": str(real_data_dir), "train_fraction": 0.005},
        "federation": {"num_clients": 2, "clients_per_round": 1, "rounds": 2},
        "local": {"epochs": 1, "batch_size": 32},
        "attack": {"num_malicious": 1, "num_images": 2, "rounds": [2], "epochs": 2},
        "defense": {"client": "wbc"},
        "eval": {"every": 2},
        "output": {"name": "deployed"},
        "dtype": "float64",
    }
    cfg = flwbc.make_config(base, engine="flower")
    cfg_file = tmp_path / "experiment.json"
    cfg_file.write_text(json.dumps(cfg.to_dict()))
    paths = export_partitions(cfg, tmp_path / "partitions")
    node_configs = [{"partition-id": c, "partition-file": str(p)} for c, p in enumerate(paths)]
    app = write_app(tmp_path / "app").parent
    out = tmp_path / "out"
    work = tmp_path / "deploy"

    with LocalDeployment(work, 2, node_configs, startup_timeout=45.0) as dep:
        ports = [dep.superlink_port, *dep.supernode_ports]
        assert all(_listening(p) for p in ports)
        # The connection file lives in the private FLWR_HOME, never in ~/.flwr.
        assert (work / "flwr_home" / "config.toml").is_file()
        assert len(set(dep.node_ids)) == 2

        result = dep.run(app, {"config": str(cfg_file), "out": str(out)}, timeout=90.0)
        assert result.ok, (result.status, result.details, result.logs)

        outcome = dep.start_unregistered_supernode(timeout=20.0)
        assert outcome.exit_code not in (None, 0)
        assert outcome.refused, outcome.log_text
        assert sorted(outcome.registered_node_ids) == sorted(dep.node_ids)
        superlink_log = dep.logs["superlink"].read_text(errors="replace")
        assert f"Uvicorn running on https://127.0.0.1:{dep.superlink_port}" in superlink_log
        assert "No SuperNode found with the given public key" in superlink_log

    # After the context: nothing it started is alive, the ports are free.
    assert dep.alive_pids() == []
    needles = [str(work), *(f"127.0.0.1:{p}" for p in ports)]
    assert _processes_mentioning(needles) == []
    assert not any(_listening(p) for p in ports)

    run_dir = out / "deployed"
    records = read_jsonl(run_dir / "rounds.jsonl")
    assert json.loads((run_dir / "summary.json").read_text())["complete"]
    ref = flwbc.run(
        flwbc.make_config(base, engine="sequential", **{"output.dir": str(tmp_path / "ref")}),
        progress=False,
    )
    (attacker,) = ref.summary["malicious_clients"]
    # both nodes took part: the benign one in round 1, the attacker in round 2
    assert [r["clients"] for r in records] == [[1 - attacker], [attacker]]
    assert [r["malicious"] for r in records] == [[], [attacker]]
    for a, b in zip(records, ref.records, strict=True):
        for key in ("train_loss", "target_conf"):
            assert a[key] == pytest.approx(b[key], abs=1e-12)
    assert records[0]["wbc_perturbed"] == pytest.approx(ref.records[0]["wbc_perturbed"], abs=1e-12)
    assert records[-1]["test_acc"] == pytest.approx(ref.records[-1]["test_acc"], abs=1e-12)
    model = FlatModel(build_model(cfg.model_name, 1, 28, 10).double())
    w, meta = load_model(run_dir / "model.safetensors", model)
    assert meta["round"] == 2
    assert torch.allclose(w, ref.weights, rtol=0, atol=1e-12)


@pytest.mark.slow
def test_local_deployment_retries_taken_port_and_stops_when_body_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flower_deploy as deploy

    # Someone else grabs the first "free" port before the SuperLink binds it.
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real_free_port = deploy._free_port
    handed_out = iter([taken])
    monkeypatch.setattr(deploy, "_free_port", lambda: next(handed_out, None) or real_free_port())

    work = tmp_path / "deploy"
    dep = LocalDeployment(work, 1, [{"partition-id": 0}], grace_period=3.0)
    try:
        with pytest.raises(RuntimeError, match="boom"), dep:
            assert dep.superlink_port != taken
            assert "address already in use" in dep.logs["superlink"].read_text()
            assert len(dep.node_ids) == 1
            assert dep.alive_pids()
            raise RuntimeError("boom")
    finally:
        squatter.close()
    assert dep.alive_pids() == []
    assert _processes_mentioning([str(work)]) == []


def test_a_reused_session_id_is_not_adopted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a session leader exits, its id may lead an unrelated session: stop() must not
    signal that session's processes."""
    import flower_deploy as deploy

    Info = deploy._ProcInfo
    dep = LocalDeployment(tmp_path, 0, [])
    dep._sessions = {500: 111}  # our leader 500 started at tick 111 and has exited
    # our session ended; pid 500 was reused by an unrelated session leader with a child
    table = {
        500: Info(ppid=1, pgid=500, sid=500, state="S", start=999),
        700: Info(ppid=500, pgid=500, sid=500, state="S", start=1000),
    }
    monkeypatch.setattr(deploy, "_proc_table", lambda: table)
    dep._refresh_tree()
    assert dep.tracked_pids() == []
    # whereas a process left in our session after its leader exited is ours
    table.clear()
    table[600] = Info(ppid=1, pgid=500, sid=500, state="S", start=112)
    dep._refresh_tree()
    assert dep.tracked_pids() == [600]
