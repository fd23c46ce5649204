"""Run a Flower app on a real local deployment: SuperLink + SuperNodes on 127.0.0.1.

This is a test and demo harness beside the examples, outside the library (import it with this
folder on `sys.path`, as `examples/flower_local_deployment.py` and `tests/flower/test_deploy.py`
do) for flwr 1.41.x. It starts every Flower component by hand as
its own process (the same way a user would on separate machines), with TLS and SuperNode
authentication turned on:

* ``make_tls`` writes a throw-away CA and a server certificate/key for ``127.0.0.1`` and
  ``localhost`` (generated with ``cryptography``, no openssl binary needed);
* ``make_node_keys`` writes a SuperNode's EC (P-384) key pair in the OpenSSH formats that
  ``flower-supernode --auth-supernode-private-key`` and ``flwr supernode register`` expect;
* ``LocalDeployment`` starts ``flower-superlink`` (TLS, ``--enable-supernode-auth``,
  ``--isolation subprocess``, runtime dependency installation disabled), registers each
  SuperNode's public key with ``flwr supernode register``, starts one ``flower-supernode``
  per node with the CA as ``--root-certificates``, its private key and its own
  ``--node-config``, and submits apps with ``flwr run``.

In flwr 1.41 the SuperLink serves its Fleet, Control and Runtime APIs over HTTPS on one port
(``--host``/``--port``); each SuperNode additionally serves a local Runtime API on its own
``--port``. The ``flwr`` CLI reads SuperLink connections from ``$FLWR_HOME/config.toml``, so
every process here runs with ``FLWR_HOME`` pointing into the work directory and nothing
touches ``~/.flwr``. The manual recipe is in ``docs/flower-deployment.md``.

Every process gets its own session/process group and a log file under ``<work_dir>/logs``;
``stop()`` (also run by ``__exit__``) sends SIGTERM, then SIGKILL after a grace period, to
them and to every descendant flwr spawned (SuperExec, ServerApp and ClientApp processes,
some of which flwr detaches into sessions of their own), and waits for them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from flwbc.errors import FlwbcError

__all__ = [
    "LocalDeployment",
    "NodeKeys",
    "RunResult",
    "TlsFiles",
    "UnregisteredNodeResult",
    "format_node_config",
    "make_node_keys",
    "make_tls",
]

HOST = "127.0.0.1"
CONNECTION_NAME = "flwbc-local"
#: Run status strings reported by ``flwr ls`` once a run is over.
FINISHED_COMPLETED = "finished:completed"
_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_NODE_ID_RE = re.compile(r"SuperNode ID: (\d+)")
_PORT_ATTEMPTS = 3


# --------------------------------------------------------------------------------------------
# Certificates and keys
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS: the CA that clients trust and the SuperLink's certificate + key."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class NodeKeys:
    """A SuperNode's authentication key pair (OpenSSH formats, EC P-384)."""

    name: str
    private_key: Path
    public_key: Path


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by the owner only."""
    path.write_bytes(data)
    path.chmod(0o600)


def make_tls(directory: str | Path, *, days: int = 7) -> TlsFiles:
    """Write a self-signed CA and a server certificate valid for 127.0.0.1 and localhost.

    Files: ``ca.crt`` (CA certificate), ``server.pem`` (server certificate signed by the CA,
    SANs ``localhost``, ``127.0.0.1``, ``::1``) and ``server.key`` (its unencrypted PKCS#8
    private key). All keys are ECDSA P-384. Existing files are overwritten.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    not_before = now - dt.timedelta(minutes=5)
    not_after = now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flwbc local test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP384R1())
    san = x509.SubjectAlternativeName(
        [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    )
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    files = TlsFiles(out / "ca.crt", out / "server.pem", out / "server.key")
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        files.server_key,
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return files


def make_node_keys(directory: str | Path, name: str) -> NodeKeys:
    """Write a SuperNode key pair ``<name>`` / ``<name>.pub`` into ``directory``.

    The private key is an unencrypted OpenSSH EC P-384 key (what
    ``flower-supernode --auth-supernode-private-key`` loads), the public key the matching
    ``ecdsa-sha2-nistp384`` OpenSSH line (what ``flwr supernode register`` loads); the same
    as ``ssh-keygen -t ecdsa -b 384 -N '' -f <name>``.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not name or not _KEY_RE.match(name):
        raise FlwbcError(f"invalid SuperNode key name {name!r}: use letters, digits, _ . -")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    keys = NodeKeys(name, out / name, out / f"{name}.pub")
    _write_private(
        keys.private_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    keys.public_key.write_bytes(public + f" {name}\n".encode())
    return keys


# --------------------------------------------------------------------------------------------
# Config formatting
# --------------------------------------------------------------------------------------------


def _toml_value(key: str, value: object) -> str:
    """Render one scalar as a TOML value (bool, int, float or str)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string (same escapes).
        return json.dumps(value, ensure_ascii=False)
    raise FlwbcError(
        f"config value for {key!r} must be a bool, int, float or str, not {type(value).__name__}"
    )


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise FlwbcError(f"invalid config key {key!r}: use letters, digits, _ . -")
    return key


def format_node_config(node_config: Mapping[str, object]) -> str:
    """Render a node config as the ``--node-config`` string of ``flower-supernode``.

    ``{"partition-id": 0, "partition-file": "/d/p0.json"}`` becomes
    ``partition-id=0 partition-file="/d/p0.json"``. Strings may not contain ``"`` (flwr's
    parser splits on whitespace outside double quotes and has no escape for them).
    """
    parts = []
    for key, value in node_config.items():
        _check_key(key)
        if isinstance(value, str) and '"' in value:
            raise FlwbcError(f"node config value for {key!r} may not contain a double quote")
        parts.append(f"{key}={_toml_value(key, value)}")
    return " ".join(parts)


def _run_config_toml(run_config: Mapping[str, object]) -> str:
    """Render run-config overrides as a flat TOML document for ``flwr run --run-config``."""
    lines = [
        f"{json.dumps(_check_key(key))} = {_toml_value(key, value)}"
        for key, value in run_config.items()
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Process bookkeeping (Linux /proc; elsewhere only the processes started directly are seen)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ProcInfo:
    ppid: int
    pgid: int
    sid: int
    state: str
    start: int


def _proc_table() -> dict[int, _ProcInfo]:
    """Snapshot of all processes from /proc (empty where /proc is missing)."""
    table: dict[int, _ProcInfo] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return table
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        info = _read_stat(int(entry.name))
        if info is not None:
            table[int(entry.name)] = info
    return table


def _read_stat(pid: int) -> _ProcInfo | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return _ProcInfo(
            ppid=int(fields[1]),
            pgid=int(fields[2]),
            sid=int(fields[3]),
            state=fields[0],
            start=int(fields[19]),
        )
    except (IndexError, ValueError):
        return None


def _pid_alive(pid: int, start: int | None) -> bool:
    """True if ``pid`` is a live (not zombie) process started at ``start`` (if known)."""
    info = _read_stat(pid)
    if info is None:
        if Path("/proc").is_dir():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if start is not None and info.start != start:
        return False  # the pid was reused by an unrelated process
    return info.state not in ("Z", "X", "x")


def _signal_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago (bind to port 0, read it back, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _lost_port_race(log_text: str) -> bool:
    """True if a process log says its listening port was already taken."""
    text = log_text.lower()
    return "address already in use" in text or "runtime http api failed to start" in text


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _parse_json_output(text: str) -> dict[str, Any]:
    """The JSON object printed by a ``flwr ... --format json`` command."""
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object in output")
    obj, _ = json.JSONDecoder().raw_decode(text[start:])
    if not isinstance(obj, dict):
        raise ValueError("JSON output is not an object")
    return obj


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    """Outcome of ``LocalDeployment.run``.

    ``status`` is what ``flwr ls`` reports, e.g. ``finished:completed``,
    ``finished:failed`` or ``finished:stopped``; ``logs`` maps process names
    (``superlink``, ``supernode-0``, ..., ``run``: the streamed ServerApp log) to log files.
    """

    run_id: int
    status: str
    details: str
    elapsed_s: float
    logs: dict[str, Path]

    @property
    def ok(self) -> bool:
        """True if the run finished and completed."""
        return self.status == FINISHED_COMPLETED


@dataclass(frozen=True)
class UnregisteredNodeResult:
    """What happened to a SuperNode whose public key was never registered.

    ``refused`` is true when the SuperNode exited with a non-zero code and its log reports
    the failed activation, and the SuperLink's node list did not grow.
    """

    keys: NodeKeys
    exit_code: int | None
    log: Path
    log_text: str
    registered_node_ids: list[int]
    refused: bool


@dataclass
class _Managed:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    handle: IO[bytes] = field(repr=False)
    offset: int = 0  # where this process's output starts in ``log``

    def text(self) -> str:
        """This process's output so far."""
        try:
            with self.log.open("rb") as fh:
                fh.seek(self.offset)
                return fh.read().decode(errors="replace")
        except OSError:
            return ""


# --------------------------------------------------------------------------------------------
# The deployment
# --------------------------------------------------------------------------------------------


class LocalDeployment:
    """SuperLink + SuperNodes on 127.0.0.1 with TLS and SuperNode authentication (flwr 1.41).

    Use as a context manager::

        with LocalDeployment(tmp, 2, [{"partition-id": 0}, {"partition-id": 1}]) as dep:
            result = dep.run("path/to/app", {"out": "/tmp/out"}, timeout=120)

    ``work_dir`` receives ``tls/`` (certificates), ``keys/`` (node keys), ``logs/`` (one log
    per process and CLI call), ``flwr_home/`` (the ``FLWR_HOME`` of every process, holding the
    ``flwr`` connection file ``config.toml`` and installed FABs) and ``run-configs/``.
    Console scripts are taken from the directory of ``sys.executable``; ``extra_env`` is added
    to the environment of every process (it cannot switch runtime dependency installation on
    or move ``FLWR_HOME``).
    """

    def __init__(
        self,
        work_dir: str | Path,
        num_supernodes: int,
        node_configs: Sequence[Mapping[str, object]] | None = None,
        extra_env: Mapping[str, str] | None = None,
        *,
        startup_timeout: float = 60.0,
        grace_period: float = 5.0,
    ) -> None:
        if num_supernodes < 0:
            raise FlwbcError(f"num_supernodes must be >= 0, got {num_supernodes}")
        configs = [dict(c) for c in node_configs] if node_configs is not None else None
        if configs is None:
            configs = [{} for _ in range(num_supernodes)]
        if len(configs) != num_supernodes:
            raise FlwbcError(f"got {len(configs)} node configs for {num_supernodes} SuperNodes")
        self._node_config_args = [format_node_config(c) for c in configs]
        self.node_configs: list[dict[str, object]] = configs
        self.num_supernodes = num_supernodes
        self.work_dir = Path(work_dir).resolve()
        self.log_dir = self.work_dir / "logs"
        self.flwr_home = self.work_dir / "flwr_home"
        self.startup_timeout = startup_timeout
        self.grace_period = grace_period
        self.bin_dir = Path(sys.executable).parent
        self._extra_env = dict(extra_env or {})

        self.superlink_port = 0
        self.supernode_ports: list[int] = []
        self.tls: TlsFiles | None = None
        self.node_keys: list[NodeKeys] = []
        self.node_ids: list[int] = []
        self._procs: list[_Managed] = []
        self._seen: dict[int, int | None] = {}  # pid -> start time (None where unknown)
        # session id -> start time of its leader (None where unknown): a session counts as ours
        # only while its leader is that process or gone, never after the sid was reused
        self._sessions: dict[int, int | None] = {}
        self._started = False
        self._stopped = False
        self._run_counter = 0
        self._extra_nodes = 0

    # ---- environment and helpers ---------------------------------------------------------

    @property
    def superlink_address(self) -> str:
        """``host:port`` of the SuperLink (Fleet, Control and Runtime APIs share it)."""
        return f"{HOST}:{self.superlink_port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment of every process this deployment starts."""
        env = dict(os.environ)
        env.update(self._extra_env)
        env["PATH"] = os.pathsep.join([str(self.bin_dir), env.get("PATH", "")])
        env["FLWR_HOME"] = str(self.flwr_home)
        env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
        env.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
        env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _script(self, name: str) -> str:
        path = self.bin_dir / name
        if not path.exists():
            raise FlwbcError(
                f"{name} not found next to {sys.executable}: install flwr 1.41.x in this env"
            )
        return str(path)

    def _spawn(self, name: str, argv: list[str]) -> _Managed:
        """Start ``argv`` in a new session with stdout+stderr to ``logs/<name>.log``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        handle = log.open("ab")
        offset = handle.tell()
        handle.write(f"$ {' '.join(argv)}\n".encode())
        handle.flush()
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=self.work_dir,
                env=self.env,
                start_new_session=True,
            )
        except BaseException:
            handle.close()
            raise
        managed = _Managed(name, popen, log, handle, offset)
        self._procs.append(managed)
        info = _read_stat(popen.pid)
        self._seen[popen.pid] = info.start if info else None
        self._sessions[popen.pid] = self._seen[popen.pid]
        return managed

    def flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``flwr <args>`` in this deployment's environment; output is also logged.

        The call is appended to ``logs/flwr-cli.log``. Raises ``FlwbcError`` on timeout.
        """
        argv = [self._script("flwr"), *args]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                cwd=self.work_dir,
                env=self.env,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise FlwbcError(f"`flwr {' '.join(args)}` timed out after {timeout:.0f}s") from err
        with (self.log_dir / "flwr-cli.log").open("a") as log:
            log.write(f"$ flwr {' '.join(args)}  # rc={done.returncode}\n")
            log.write(done.stdout)
            log.write(done.stderr)
        return done

    def _flwr_json(self, *args: str, timeout: float = 120.0) -> dict[str, Any]:
        done = self.flwr(*args, "--format", "json", timeout=timeout)
        try:
            obj = _parse_json_output(done.stdout)
        except ValueError:
            obj = {}
        if done.returncode != 0 or not obj.get("success", False):
            message = obj.get("error-message") or (done.stderr or done.stdout).strip()
            raise FlwbcError(f"`flwr {' '.join(args)}` failed: {message}")
        return obj

    def _write_connection(self) -> None:
        """Write ``$FLWR_HOME/config.toml`` with one TLS connection to the SuperLink."""
        assert self.tls is not None
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text(
            "[superlink]\n"
            f'default = "{CONNECTION_NAME}"\n\n'
            f"[superlink.{CONNECTION_NAME}]\n"
            f'address = "{self.superlink_address}"\n'
            f"root-certificates = {json.dumps(str(self.tls.ca_cert))}\n"
        )

    # ---- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> LocalDeployment:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> LocalDeployment:
        """Generate certificates and keys, start the SuperLink, register and start SuperNodes.

        Returns once every SuperNode has been activated by the SuperLink. On any failure,
        everything started so far is stopped before the error propagates.
        """
        if self._started:
            raise FlwbcError("this LocalDeployment was already started")
        self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.tls = make_tls(self.work_dir / "tls")
        self._start_superlink()

        for i in range(self.num_supernodes):
            keys = make_node_keys(self.work_dir / "keys", f"supernode-{i}")
            self.node_keys.append(keys)
            reply = self._flwr_json("supernode", "register", str(keys.public_key), CONNECTION_NAME)
            self.node_ids.append(int(reply["node-id"]))

        self.supernode_ports = [_free_port() for _ in range(self.num_supernodes)]
        nodes = [
            self._spawn_supernode(f"supernode-{i}", keys, self.supernode_ports[i], args)
            for i, (keys, args) in enumerate(
                zip(self.node_keys, self._node_config_args, strict=True)
            )
        ]
        deadline = time.monotonic() + self.startup_timeout
        for i, expected in enumerate(self.node_ids):
            got = None
            for _attempt in range(_PORT_ATTEMPTS):
                got = self._wait_node_id(nodes[i], deadline)
                if got is not None:
                    break
                # Lost the race for its Runtime API port: try again on another one.
                self.supernode_ports[i] = _free_port()
                nodes[i] = self._spawn_supernode(
                    nodes[i].name,
                    self.node_keys[i],
                    self.supernode_ports[i],
                    self._node_config_args[i],
                )
            if got != expected:
                raise FlwbcError(
                    f"{nodes[i].name} came up as node {got}, but its key was registered as "
                    f"node {expected}; see {nodes[i].log}"
                )

    def _start_superlink(self) -> None:
        """Start ``flower-superlink`` on a free port and wait until it accepts connections."""
        assert self.tls is not None
        deadline = time.monotonic() + self.startup_timeout
        for _attempt in range(_PORT_ATTEMPTS):
            self.superlink_port = _free_port()
            self._write_connection()
            proc = self._spawn(
                "superlink",
                [
                    self._script("flower-superlink"),
                    "--ssl-ca-certfile",
                    str(self.tls.ca_cert),
                    "--ssl-certfile",
                    str(self.tls.server_cert),
                    "--ssl-keyfile",
                    str(self.tls.server_key),
                    "--enable-supernode-auth",
                    "--isolation",
                    "subprocess",
                    "--disable-runtime-dependency-installation",
                    "--host",
                    HOST,
                    "--port",
                    str(self.superlink_port),
                ],
            )
            # Listening means uvicorn logged that it bound the port (a bare connect test
            # would be fooled by whoever else won a race for the port) and it accepts.
            while not (
                "Uvicorn running on" in proc.text() and _port_open(HOST, self.superlink_port)
            ):
                self._refresh_tree()
                if proc.popen.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    raise FlwbcError(
                        f"flower-superlink did not listen within the timeout; see {proc.log}"
                    )
                time.sleep(0.1)
            else:
                self._refresh_tree()
                return
            if not _lost_port_race(proc.text()):
                break
        raise FlwbcError(
            f"flower-superlink exited with code {proc.popen.returncode}; "
            f"see {proc.log}:\n{_tail(proc.log)}"
        )

    def _spawn_supernode(self, name: str, keys: NodeKeys, port: int, node_config: str) -> _Managed:
        assert self.tls is not None
        argv = [
            self._script("flower-supernode"),
            "--superlink",
            self.superlink_address,
            "--root-certificates",
            str(self.tls.ca_cert),
            "--auth-supernode-private-key",
            str(keys.private_key),
            "--isolation",
            "subprocess",
            "--host",
            HOST,
            "--port",
            str(port),
        ]
        if node_config:
            argv += ["--node-config", node_config]
        return self._spawn(name, argv)

    def _wait_node_id(self, node: _Managed, deadline: float) -> int | None:
        """Wait until ``node`` logs its activated node id and return it.

        Returns None if the SuperNode exited because its Runtime API port was taken.
        """
        while True:
            text = node.text()
            match = _NODE_ID_RE.search(text)
            if match:
                self._refresh_tree()
                return int(match.group(1))
            if node.popen.poll() is not None:
                if _lost_port_race(node.text()):
                    return None
                raise FlwbcError(
                    f"{node.name} exited with code {node.popen.returncode} before it was "
                    f"activated; see {node.log}:\n{_tail(node.log)}"
                )
            if time.monotonic() > deadline:
                raise FlwbcError(f"{node.name} was not activated in time; see {node.log}")
            time.sleep(0.1)

    # ---- using the deployment ------------------------------------------------------------

    @property
    def logs(self) -> dict[str, Path]:
        """Log file of every process started so far, by name."""
        return {p.name: p.log for p in self._procs}

    def list_supernodes(self) -> list[dict[str, Any]]:
        """The SuperLink's node list (``flwr supernode list --format json``)."""
        reply = self._flwr_json("supernode", "list", CONNECTION_NAME)
        return list(reply.get("nodes", []))

    def run_status(self, run_id: int) -> tuple[str, str]:
        """``(status, details)`` of a run as reported by ``flwr ls --run-id``."""
        reply = self._flwr_json("ls", CONNECTION_NAME, "--run-id", str(run_id))
        runs = reply.get("runs", [])
        if not runs:
            raise FlwbcError(f"run {run_id} is unknown to the SuperLink")
        return str(runs[0].get("status", "")), str(runs[0].get("status-details", ""))

    def run(
        self,
        app_dir: str | Path,
        run_config: Mapping[str, object] | None = None,
        timeout: float = 300.0,
        *,
        poll_interval: float = 10.0,
    ) -> RunResult:
        """Submit the app in ``app_dir`` with ``flwr run`` and wait until the run is over.

        ``run_config`` overrides keys of the app's ``[tool.flwr.app.config]`` (passed as a
        TOML file to ``--run-config``). Completion is detected by ``flwr log <id> --stream``
        (which the SuperLink closes once the run finished; its output becomes the ``run``
        log) and, as a fallback, by polling ``flwr ls --run-id`` every ``poll_interval``
        seconds. A run still going after ``timeout`` seconds is stopped with ``flwr stop``
        and ``FlwbcError`` is raised. A run that failed is returned, not raised: check
        ``result.ok`` / ``result.status`` and the logs.
        """
        if not self._started or self._stopped:
            raise FlwbcError("start the LocalDeployment before submitting runs")
        app = Path(app_dir).resolve()
        if not (app / "pyproject.toml").is_file():
            raise FlwbcError(f"{app} is not a Flower app (no pyproject.toml)")
        self._run_counter += 1
        args = ["run", str(app), CONNECTION_NAME]
        if run_config:
            cfg_dir = self.work_dir / "run-configs"
            cfg_dir.mkdir(parents=True, exist_ok=True)
            cfg = cfg_dir / f"run-{self._run_counter}.toml"
            cfg.write_text(_run_config_toml(run_config))
            args += ["--run-config", str(cfg)]

        t0 = time.monotonic()
        deadline = t0 + timeout
        reply = self._flwr_json(*args, timeout=min(timeout, 120.0))
        run_id = int(reply["run-id"])
        stream = self._spawn(
            f"run-{run_id}",
            [self._script("flwr"), "log", str(run_id), CONNECTION_NAME, "--stream"],
        )
        status, details = "", ""
        next_poll = time.monotonic() + poll_interval
        while True:
            self._refresh_tree()
            now = time.monotonic()
            if stream.popen.poll() is not None or now >= next_poll:
                status, details = self.run_status(run_id)
                if status.startswith("finished"):
                    break
                next_poll = time.monotonic() + (
                    1.0 if stream.popen.poll() is not None else poll_interval
                )
            if now > deadline:
                with contextlib.suppress(FlwbcError):
                    self.flwr("stop", str(run_id), CONNECTION_NAME, timeout=30.0)
                self._terminate([stream])
                raise FlwbcError(
                    f"run {run_id} did not finish within {timeout:.0f}s (last status "
                    f"{status or 'unknown'!r}); logs in {self.log_dir}"
                )
            time.sleep(0.2)
        # The SuperLink ends the log stream once the run finished; give it a moment.
        with contextlib.suppress(subprocess.TimeoutExpired):
            stream.popen.wait(timeout=10.0)
        self._terminate([stream])
        logs = {p.name: p.log for p in self._procs if not p.name.startswith("run-")}
        logs["run"] = stream.log
        logs["flwr-cli"] = self.log_dir / "flwr-cli.log"
        return RunResult(run_id, status, details, time.monotonic() - t0, logs)

    def start_unregistered_supernode(
        self, name: str = "intruder", timeout: float = 30.0
    ) -> UnregisteredNodeResult:
        """Start a SuperNode whose fresh key was never registered; report how it was refused.

        Waits up to ``timeout`` seconds for the SuperNode to exit (flwr 1.41 exits with code 1
        after logging ``Exit Code: 305`` / ``Failed to activate SuperNode``; the SuperLink
        answers its activation with HTTP 412 and logs ``No SuperNode found with the given
        public key``). A SuperNode still running after ``timeout`` is killed and reported as
        not refused.
        """
        if not self._started or self._stopped:
            raise FlwbcError("start the LocalDeployment before starting SuperNodes")
        assert self.tls is not None
        self._extra_nodes += 1
        label = f"{name}-{self._extra_nodes}"
        keys = make_node_keys(self.work_dir / "keys", label)
        proc = self._spawn_supernode(label, keys, _free_port(), "")
        deadline = time.monotonic() + timeout
        while proc.popen.poll() is None and time.monotonic() < deadline:
            self._refresh_tree()
            time.sleep(0.1)
        exit_code = proc.popen.poll()
        if exit_code is None:
            self._terminate([proc])
        text = proc.text()
        ids = [int(n["node-id"]) for n in self.list_supernodes()]
        refused = (
            exit_code not in (None, 0)
            and "Failed to activate SuperNode" in text
            and _NODE_ID_RE.search(text) is None
            and sorted(ids) == sorted(self.node_ids)
        )
        return UnregisteredNodeResult(keys, exit_code, proc.log, text, ids, refused)

    # ---- stopping ------------------------------------------------------------------------

    def _refresh_tree(self) -> None:
        """Record every descendant of our processes (by parent chain or session id)."""
        table = _proc_table()
        if not table:
            return
        known = {
            pid
            for pid, start in self._seen.items()
            if pid in table and (start is None or table[pid].start == start)
        }

        def ours(sid: int) -> bool:
            if sid not in self._sessions:
                return False
            leader, start = table.get(sid), self._sessions[sid]
            return leader is None or start is None or leader.start == start

        changed = True
        while changed:
            changed = False
            for pid, info in table.items():
                if pid in known:
                    continue
                if info.ppid in known or ours(info.sid):
                    known.add(pid)
                    self._seen.setdefault(pid, info.start)
                    if info.sid not in self._sessions:
                        leader = table.get(info.sid)
                        self._sessions[info.sid] = leader.start if leader is not None else None
                    changed = True

    def tracked_pids(self) -> list[int]:
        """Every pid this deployment started or saw among its processes' descendants."""
        return sorted(self._seen)

    def alive_pids(self) -> list[int]:
        """Tracked pids that are still alive (zombies count as dead)."""
        self._refresh_tree()
        return sorted(pid for pid, start in self._seen.items() if _pid_alive(pid, start))

    def _terminate(self, procs: Sequence[_Managed]) -> None:
        """SIGTERM the process groups of ``procs``, SIGKILL after the grace period."""
        for proc in procs:
            if proc.popen.poll() is None:
                _signal_group(proc.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_period
        while time.monotonic() < deadline and any(p.popen.poll() is None for p in procs):
            time.sleep(0.05)
        for proc in procs:
            if proc.popen.poll() is None:
                _signal_group(proc.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=5.0)
            proc.handle.close()

    def stop(self) -> None:
        """Terminate every process (SIGTERM, SIGKILL after the grace period) and wait.

        Safe to call more than once and after a failed start.
        """
        self._stopped = True
        self._refresh_tree()
        # SuperNodes (and CLI streams) first, the SuperLink last; then stray descendants
        # that flwr put into sessions of their own (e.g. the SuperLink's SuperExec).
        ordered = sorted(self._procs, key=lambda p: p.name == "superlink")
        for proc in ordered:
            if proc.popen.poll() is None:
                _signal_group(proc.popen.pid, signal.SIGTERM)
        for pid, start in self._seen.items():
            if _pid_alive(pid, start):
                _signal_pid(pid, signal.SIGTERM)

        deadline = time.monotonic() + self.grace_period
        while time.monotonic() < deadline:
            for proc in self._procs:
                proc.popen.poll()
            if not self.alive_pids():
                break
            time.sleep(0.1)

        self._refresh_tree()
        for proc in self._procs:
            if proc.popen.poll() is None:
                _signal_group(proc.popen.pid, signal.SIGKILL)
        for pid, start in self._seen.items():
            if _pid_alive(pid, start):
                _signal_pid(pid, signal.SIGKILL)
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=5.0)
            proc.handle.close()
        end = time.monotonic() + 5.0
        while self.alive_pids() and time.monotonic() < end:
            time.sleep(0.05)
