"""The package's layering: no import cycles between its modules, the engines and the round
library below them read no attack or defense configuration, and the deployment harness is not
part of the library."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "flwbc"


def _modules() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        name = ".".join(f.relative_to(SRC.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = f
    return out


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """flwbc modules `path` imports anywhere: at module level, inside functions and under
    `if TYPE_CHECKING:` (a type-only import is a dependency too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flwbc"):
            assert node.level == 0, f"{path}: relative import"
            found |= {f"{node.module}.{a.name}" for a in node.names} & set(known)
            found |= {node.module} & set(known)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names} & set(known)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    # a package importing its own submodules (to register them) is not a cycle
    return {m: _imports(p, mods) - {m} for m, p in mods.items()}


LAYERS: tuple[tuple[str, ...], ...] = (
    # what every layer may use: errors, seeds, small helpers, how plug-ins are loaded
    ("_version", "errors", "rng", "runtime", "transforms", "textvalues", "provenance"),
    ("plugin_options", "plugins"),
    ("legacy",),  # the old config layout mapped to the new (one shim)
    ("config",),  # what a config says; it names plug-ins and knows none of them
    ("registry",),
    # what plug-ins are written against: models, data, local SGD, the contexts they are handed
    ("models", "data", "curvature", "metrics", "runio", "client", "context"),
    # the plug-in kinds (built-in and outside plug-ins are loaded by name, not imported here)
    ("attacks", "defenses", "server", "preagg", "postagg", "evaluation", "schedules"),
    ("experiment",),  # builds every plug-in a config names
    ("round",),
    ("engine",),
    ("api",),
    ("analysis", "experiments", "plots", "catalog", "flower"),
    ("cli", ""),  # "" is the package itself (flwbc/__init__.py)
)


def _layer(module: str) -> int:
    rel = module.removeprefix("flwbc").removeprefix(".")
    for i, names in enumerate(LAYERS):
        if any(rel == n or (n and rel.startswith(n + ".")) for n in names):
            return i
    raise AssertionError(f"{module} is in no layer of LAYERS: place it")


def test_no_import_cycles() -> None:
    graph = _graph()
    # depth-first search for a back edge, written out so the failing cycle can be printed
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return [*path[path.index(n) :], n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            assert cycle is None, " -> ".join(cycle)


def test_the_cycle_check_sees_imports_inside_functions_and_type_only_ones(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from flwbc.b import B\n"
    )
    (tmp_path / "b.py").write_text("def f():\n    from flwbc.c import C\n")
    (tmp_path / "c.py").write_text("import flwbc.a\n")
    known = {f"flwbc.{n}": tmp_path / f"{n}.py" for n in "abc"}
    assert {m: _imports(p, known) for m, p in known.items()} == {
        "flwbc.a": {"flwbc.b"},
        "flwbc.b": {"flwbc.c"},
        "flwbc.c": {"flwbc.a"},
    }


def test_no_module_imports_a_layer_above_its_own() -> None:
    up = [
        f"{m} (layer {_layer(m)}) imports {n} (layer {_layer(n)})"
        for m, deps in sorted(_graph().items())
        for n in sorted(deps)
        if _layer(n) > _layer(m)
    ]
    assert up == []


def test_engines_read_no_attack_or_defense_config() -> None:
    below = [*(SRC / "engine").glob("*.py"), SRC / "round.py", SRC / "client" / "local.py"]
    pattern = re.compile(r"cfg\.(attack|defense)\b")  # exp.attack is the plug-in, not config
    for f in below:
        hits = [ln for ln in f.read_text().splitlines() if pattern.search(ln)]
        assert hits == [], f"{f.name} reads algorithm config: {hits}"


def test_deployment_harness_is_outside_the_library() -> None:
    assert not (SRC / "flower" / "deploy.py").exists()
    assert (SRC.parents[1] / "examples" / "flower_deploy.py").is_file()


def test_a_plain_run_does_not_import_the_heavy_optional_libraries() -> None:
    """scikit-learn (and the scipy it pulls in) costs every process 1-2 s to import; only the
    rules that cluster may import it, when they run. Ray (seconds, and a different process
    model) is imported only by a sweep on the Ray backend."""
    import subprocess
    import sys

    code = (
        "import sys, flwbc.cli, flwbc.api, flwbc.experiment, flwbc.server, flwbc.attacks, "
        "flwbc.evaluation, flwbc.preagg, flwbc.defenses, flwbc.engine, flwbc.experiments.sweep, "
        "flwbc.experiments.worker, flwbc.experiments.ray_backend; "
        "print(sorted(m for m in ('sklearn', 'scipy', 'pandas', 'matplotlib', 'ray') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
