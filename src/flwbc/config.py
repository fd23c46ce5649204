"""Validated experiment configuration.

One `ExperimentConfig` describes a whole run; every field has the paper's (or the reference
code's, where the paper is silent) value as its default, and every default that differs between
the paper and the authors' code is a named option documented on its field. A bad value raises
`FlwbcError` with one line naming the field, the value and the allowed range.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flwbc.errors import FlwbcError, did_you_mean, parse_error_text
from flwbc.legacy import upgrade
from flwbc.plugins import load_plugins, registered


def _known(kind: str, name: str, prefix: str = "") -> str:
    """`name` if a plug-in of `kind` is registered under it, else the one-line error listing
    the registered ones."""
    names = sorted(registered(kind))
    if name not in names:
        raise ValueError(f"unknown {kind} '{name}'; choose {prefix}one of {', '.join(names)}")
    return name


def defense_names(client: str | list[str]) -> list[str]:
    """The chain a config's `defense.client` names ("none" or [] is no defense)."""
    names = [client] if isinstance(client, str) else list(client)
    return [n for n in names if n != "none"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PluginRef(_Section):
    """A plug-in by name, with its options (validated when the experiment is built)."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


class DataConfig(_Section):
    """Which dataset, where it is, and how it is split among clients (paper §7.1, Appendix C)."""

    name: str = Field(
        "fmnist", description="fmnist, mnist, cifar10 or a registered dataset (flwbc list datasets)"
    )
    dir: str | None = Field(
        None, description="dataset root; falls back to $FLWBC_DATA_DIR, the cache, a download"
    )
    partition: str = Field(
        "iid",
        description="iid, shards, dirichlet or a registered partition (flwbc list partitions)",
    )
    partition_options: dict[str, Any] = Field(
        default_factory=dict,
        description="the partition's options (flwbc list partitions), e.g. alpha=0.1 for "
        "dirichlet, num_shards and shards_per_client for shards",
    )

    @field_validator("partition")
    @classmethod
    def _known_partition(cls, name: str) -> str:
        return _known("partition", name)

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        return _known("dataset", name)

    train_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="share of each client's data used for training; the reference code uses 0.8",
    )


class FederationConfig(_Section):
    """FedAvg population and schedule (paper §7.1: N = 100, K = 10)."""

    num_clients: int = Field(100, ge=1)
    clients_per_round: int = Field(10, ge=1)
    rounds: int = Field(50, ge=1)
    weighting: Literal["uniform", "samples"] = Field(
        "uniform", description="FedAvg weights: 1/K each, or proportional to training samples"
    )


class LocalConfig(_Section):
    """Local SGD (paper eq. 2). E=10, B=10: the authors' defaults, and ours for reproduction."""

    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.5, ge=0, lt=1)
    batch_size: int = Field(10, ge=1)
    epochs: int = Field(10, ge=1)


class AttackConfig(_Section):
    """The attack: by default the paper's targeted model poisoning (§4.1 eq. 3, Bhagoji et al.
    2019); every attack (`flwbc list attacks`) takes its options from `options`. The section
    also says how many attack and when, and the malicious set D_M: the eq. 3 attack's images
    and target labels, drawn for every run so that the `target` metric measures them."""

    enabled: bool = True
    name: str = Field("targeted", description="the attack (flwbc list attacks)")
    options: dict[str, Any] = Field(default_factory=dict, description="the attack's options")
    num_malicious: int = Field(
        5, ge=1, description="N_m attackers taking part in each adversarial round"
    )
    pool: Literal["first", "random"] = Field(
        "first",
        description="which of the num_malicious attackers take part in a round that has fewer: "
        "the first ones (default) or a uniform draw from the stream (seed, 'attackers', t), as "
        "LeadFL's code draws its rounds' clients from 100 with a pool of 25 attackers; with "
        "random, num_malicious may exceed clients_per_round",
    )
    num_images: int = Field(1, ge=1, description="size n of the malicious set D_M")
    source: Literal["train", "test"] = Field(
        "train",
        description="draw D_M from the training set (held out of every client) or, as the "
        "reference code does, from the test set",
    )
    target: int | None = Field(
        None,
        ge=0,
        description="target label for all of D_M; default: a random wrong label per image",
    )
    indices: list[int] | None = Field(
        None,
        description="pin D_M to these images of the `source` set instead of drawing it "
        "(num_images defaults to their number; repeats allowed, as in the reference code's "
        "draw with replacement); source test, indices [6892], targets [8] is the image the "
        "authors' code attacks in all its Fashion-MNIST IID runs (np.random.seed(903))",
    )
    targets: list[int] | None = Field(
        None,
        description="target label of each pinned image (with indices; each differs from the "
        "image's true label); default: target, else a random wrong label per image",
    )
    prob: float = Field(0.1, ge=0, le=1, description="chance that a round is adversarial")
    rounds: list[int] | None = Field(
        None, description="explicit adversarial rounds (1-based); overrides prob"
    )
    start_round: int = Field(1, ge=1, description="no random adversarial round before this one")
    schedule: PluginRef | None = Field(
        None,
        description="when and how many attack, {name, options} (flwbc list schedules); "
        "default: fixed when rounds is given, else random with prob from start_round",
    )

    @field_validator("name")
    @classmethod
    def _known_attack(cls, name: str) -> str:
        return _known("attack", name)

    @model_validator(mode="before")
    @classmethod
    def _pinned_size(cls, data: Any) -> Any:
        """Pinned images set num_images unless it is given (then it must match)."""
        if isinstance(data, dict) and isinstance(data.get("indices"), list) and data["indices"]:
            data = {"num_images": len(data["indices"]), **data}
        return data

    @model_validator(mode="after")
    def _pinned_set(self) -> AttackConfig:
        idx, tg = self.indices, self.targets
        if tg is not None and idx is None:
            raise ValueError("targets needs indices (the images they belong to)")
        if idx is None:
            return self
        if not idx:
            raise ValueError("indices must name at least one image")
        if min(idx) < 0:
            raise ValueError(f"indices must be non-negative, got {min(idx)}")
        if len(idx) != self.num_images:
            raise ValueError(
                f"num_images ({self.num_images}) must equal the number of indices ({len(idx)})"
            )
        if tg is not None and len(tg) != len(idx):
            raise ValueError(
                f"targets ({len(tg)} labels) and indices ({len(idx)} images) must have the "
                "same length"
            )
        if tg is not None and self.target is not None:
            raise ValueError("give targets or target, not both")
        return self


class DefenseConfig(_Section):
    """Client-side behaviour of benign clients (attackers never defend)."""

    client: str | list[str] = Field(
        "none",
        description="none or a registered client defense (flwbc list defenses: wbc, ldp, "
        "leadfl, ...); a list chains several, applied in order",
    )
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="options of the client defenses, by name"
    )

    @model_validator(mode="before")
    @classmethod
    def _plugin_forms(cls, data: Any) -> Any:
        """`client: [{name, options}, ...]` is the list of names and their `options`."""
        client = data.get("client") if isinstance(data, dict) else None
        if not isinstance(client, list) or not any(isinstance(c, dict) for c in client):
            return data
        refs = [PluginRef.model_validate(c) for c in client]
        options = {**data.get("options", {}), **{r.name: r.options for r in refs if r.options}}
        return {**data, "client": [r.name for r in refs], "options": options}

    @field_validator("client")
    @classmethod
    def _known_defenses(cls, client: str | list[str]) -> str | list[str]:
        names = [_known("client defense", n, "none or ") for n in defense_names(client)]
        if len(names) > 1:
            return names
        return names[0] if names else "none"  # one defense reads (and is stored) as before

    @property
    def label(self) -> str:
        """The chain's names joined by '+', or 'none'."""
        return "+".join(defense_names(self.client)) or "none"


class ServerConfig(_Section):
    """Aggregation rule, looked up by name in `flwbc.server.aggregators`, after the chain of
    pre-aggregation steps in `pre` and before the chain of post-aggregation steps in `post`."""

    aggregator: str = "fedavg"
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="the aggregator's options, e.g. beta for trimmed_mean, f for krum",
    )
    pre: list[PluginRef] = Field(
        default_factory=list,
        description="pre-aggregation steps applied in order before the rule, each "
        "{name, options} (flwbc list pre)",
    )
    post: list[PluginRef] = Field(
        default_factory=list,
        description="post-aggregation steps applied in order to the rule's aggregate (clip, "
        "noise, ...), each {name, options} (flwbc list post)",
    )

    @field_validator("aggregator")
    @classmethod
    def _known(cls, name: str) -> str:
        return _known("aggregator", name)


class EvalConfig(_Section):
    every: int = Field(
        1, ge=1, description="benign test evaluation every k rounds (D_M metrics: every round)"
    )
    batch_size: int = Field(500, ge=1)
    test_size: int | None = Field(
        None,
        ge=1,
        description="evaluate accuracy and backdoor success on this many test images, a "
        'subset drawn once per seed (stream (seed, "test-subset")); default: the whole test '
        "set",
    )
    final_on_subset: bool = Field(
        False,
        description="with test_size, evaluate the last round on the subset too; default: the "
        "last round on the whole test set, so a run's final numbers carry no subset noise",
    )
    metrics: list[PluginRef] = Field(
        default_factory=list,
        description="metrics measured every round besides accuracy and target, each "
        "{name, options} (flwbc list metrics)",
    )


class OutputConfig(_Section):
    dir: str = "runs"
    name: str | None = Field(None, description="run directory name; default: a timestamp")
    checkpoint_every: int = Field(
        1, ge=0, description="rounds between resumable checkpoints; 0: never"
    )


class FlowerConfig(_Section):
    """The Flower engine (`engine: flower`, needs the `[flower]` extra)."""

    ldp: Literal["client", "mod"] = Field(
        "client",
        description="where local DP runs (defense.client=ldp): inside the client update, or as "
        "a Flower mod on the finished update (same noise stream, same result)",
    )
    num_cpus: float = Field(1.0, gt=0, description="CPU cores Ray gives each ClientApp")
    timeout: float = Field(3600.0, gt=0, description="seconds to wait for a round's replies")
    node_wait: float = Field(
        120.0, gt=0, description="seconds to wait for every client's SuperNode to connect"
    )


class ExperimentConfig(_Section):
    """A whole experiment: one seed determines every random choice in it."""

    plugins: list[str] = Field(
        default_factory=list,
        description="modules to import first, which register plug-ins (aggregators, models, "
        "...); entry points of the group flwbc.plugins load without being named",
    )
    seed: int = Field(0, ge=0)
    data: DataConfig = Field(default_factory=DataConfig)
    model: str = Field(
        "auto",
        description="auto: the paper's CNN for the dataset; fmnist_cnn, cifar_cnn, mlp or a "
        "registered model (flwbc list models)",
    )
    model_options: dict[str, Any] = Field(
        default_factory=dict,
        description="the model's options (flwbc list models); `model: {name, options}` sets both",
    )
    federation: FederationConfig = Field(default_factory=FederationConfig)
    local: LocalConfig = Field(default_factory=LocalConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    defense: DefenseConfig = Field(default_factory=DefenseConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    init_model: str | None = Field(None, description="warm start from a saved model file")
    engine: str = Field(
        "batched",
        description="batched: clients with the same schedule train in lock-step (fast); "
        "sequential: one client after another (the reference); flower: Flower's simulation "
        "engine (Ray), each client a ClientApp; or a registered engine (flwbc list engines)",
    )
    flower: FlowerConfig = Field(default_factory=FlowerConfig)
    device: str = "cpu"
    dtype: Literal["float32", "float64"] = Field(
        "float32", description="float64 for numerical checks (engine equivalence); slower"
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="torch threads; default: torch's choice (engine=flower: the server's; each "
        "ClientApp gets flower.num_cpus)",
    )

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, name: str) -> str:
        return _known("engine", name)

    @model_validator(mode="before")
    @classmethod
    def _plugin_forms(cls, data: Any) -> Any:
        """`model: {name, options}` is model and model_options; an old layout's sections
        move to their new places (`flwbc.legacy`)."""
        if isinstance(data, dict):
            data = upgrade(data)
        if isinstance(data, dict) and isinstance(data.get("model"), dict):
            ref = PluginRef.model_validate(data["model"])
            data = {**data, "model": ref.name, "model_options": ref.options}
        return data

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        return name if name == "auto" else _known("model", name, "auto or ")

    @model_validator(mode="after")
    def _cross_checks(self) -> ExperimentConfig:
        fed, att = self.federation, self.attack
        if fed.clients_per_round > fed.num_clients:
            raise ValueError(
                f"federation.clients_per_round ({fed.clients_per_round}) must be at most "
                f"federation.num_clients ({fed.num_clients})"
            )
        if att.enabled:
            if att.num_malicious > fed.clients_per_round and att.pool == "first":
                raise ValueError(
                    f"attack.num_malicious ({att.num_malicious}) must be at most "
                    f"federation.clients_per_round ({fed.clients_per_round}), or draw each "
                    "round's attackers from the pool with attack.pool: random"
                )
            if fed.num_clients - att.num_malicious < fed.clients_per_round:
                raise ValueError(
                    f"federation.num_clients ({fed.num_clients}) minus attack.num_malicious "
                    f"({att.num_malicious}) must leave at least clients_per_round "
                    f"({fed.clients_per_round}) benign clients"
                )
            if att.rounds is not None:
                bad = [r for r in att.rounds if not 1 <= r <= fed.rounds]
                if bad:
                    raise ValueError(
                        f"attack.rounds {bad} outside 1..federation.rounds ({fed.rounds})"
                    )
            ncls = registered("dataset")[self.data.name].num_classes
            if att.target is not None and att.target >= ncls:
                raise ValueError(f"attack.target ({att.target}) must be in 0..{ncls - 1}")
            bad = [t for t in att.targets or [] if not 0 <= t < ncls]
            if bad:
                raise ValueError(f"attack.targets {bad} outside 0..{ncls - 1}")
        return self

    @property
    def model_name(self) -> str:
        if self.model != "auto":
            return self.model
        return registered("dataset")[self.data.name].default_model

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _section_model(model: type[BaseModel], path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The section of `model` that `path` (a validation error's location, fields and list
    positions) leads to, or None where it leads into something else (a mapping of options)."""
    for part in path:
        if isinstance(part, int):
            continue  # a position in a list of sections: the same section type
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *typing.get_args(ann)]
        candidates += [a for c in candidates for a in typing.get_args(c)]  # list[X] | None
        sections = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not sections:
            return None
        model = sections[0]
    return model


def unknown_field_message(loc: tuple[Any, ...], model: type[BaseModel] | None = None) -> str:
    """`unknown field 'a.b'`, with the section's closest valid field names when any is close
    (`unknown field 'federation.round' (did you mean 'federation.rounds'?)`)."""
    model = model or ExperimentConfig
    dotted = ".".join(str(p) for p in loc)
    section = _section_model(model, loc[:-1])
    if section is None:
        return f"unknown field '{dotted}'"
    prefix = "".join(f"{p}." for p in loc[:-1])
    return f"unknown field '{dotted}'{did_you_mean(str(loc[-1]), section.model_fields, prefix)}"


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        return f"invalid config: {unknown_field_message(tuple(first['loc']))}"
    if first["type"] == "value_error":
        msg = msg.removeprefix("Value error, ")
        return f"invalid config: {loc}: {msg}" if loc else f"invalid config: {msg}"
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" = {value!r}"
    return f"invalid config: {loc}{shown}: {msg}"


def make_config(data: dict[str, Any] | None = None, **overrides: Any) -> ExperimentConfig:
    """Build and validate a config from a nested dict plus dotted overrides.

    `make_config({"data": {"name": "cifar10"}}, **{"attack.num_images": 10})`; raises
    `FlwbcError` with one line on any invalid value.
    """
    merged: dict[str, Any] = json.loads(json.dumps(data or {}))
    for dotted, value in overrides.items():
        set_dotted(merged, dotted, value)
    plugins = merged.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise FlwbcError(f"invalid config: plugins must be a list of module names, got {plugins!r}")
    load_plugins(plugins)
    try:
        return ExperimentConfig.model_validate(merged)
    except ValidationError as err:
        raise FlwbcError(_format_validation_error(err)) from None


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `tree["a"]["b"] = value` for `dotted = "a.b"`, creating sections as needed."""
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise FlwbcError(f"invalid config: '{key}' is not a section (in '{dotted}')")
        node = child
    node[keys[-1]] = value


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict (validation happens in `make_config`)."""
    p = Path(path)
    if not p.is_file():
        raise FlwbcError(f"config file not found: {p}")
    try:
        text = p.read_text()
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise FlwbcError(f"cannot parse config file {p}: {parse_error_text(err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FlwbcError(
            f"config file {p} must hold a mapping of sections, not {type(data).__name__}"
        )
    return data


def load_run_config(run_dir: str | Path, what: str = "not a run directory") -> ExperimentConfig:
    """The validated config a run directory was made with (its `config.json`, without the
    `_meta` block); `what` starts the one-line error when there is none."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FlwbcError(f"{what}: {path} not found")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise FlwbcError(f"cannot parse {path}: {err}") from None
    raw.pop("_meta", None)
    return make_config(raw)
