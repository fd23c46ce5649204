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


def _module_level_imports(path: Path, known: dict[str, Path]) -> set[str]:
    """flwbc modules imported when `path` is imported (not those under `if TYPE_CHECKING:`
    or inside functions)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flwbc"):
            found |= {f"{node.module}.{a.name}" for a in node.names} & set(known)
            found |= {node.module} & set(known)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names} & set(known)
    return found


def test_no_import_cycles() -> None:
    mods = _modules()
    # a package importing its own submodules (to register them) is not a cycle
    graph = {m: _module_level_imports(p, mods) - {m} for m, p in mods.items()}
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
