"""The direction of dependency (docs/architecture.md): the composition root knows every domain and
nothing knows it; plumbing knows no domain; nothing but its dependents knows the feed; no two
packages import each other, however indirectly."""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from roomfeed.settings import REPO_ROOT

# The composition roots: the API's, the worker's (the events and alliance sinks only), the verbs' and the
# CLI on top of them.
ROOT_MODULES = ("roomfeed.assembly", "roomfeed.worker_assembly", "roomfeed.cli_assembly", "roomfeed.cli")
PLUMBING = "roomfeed"
DOMAINS = ("rooms", "events", "ranking", "alliance", "feed", "console", "simulator", "bulk")
# Packages that may import the feed: the domains that depend on it (none: the feed composes the
# others) — the root, the benchmarks, the world evaluation (worlds/), the tests and the developer
# tooling are not domains.
FEED_DEPENDENTS: tuple[str, ...] = ()
PACKAGES = (PLUMBING, *DOMAINS, "devtools", "bench", "worlds", "tests")


def _node(module: str) -> str | None:
    """The package a module belongs to for this check: the root is a node of its own."""
    if module in ROOT_MODULES or any(module.startswith(m + ".") for m in ROOT_MODULES):
        return "root"
    top = module.split(".")[0]
    return top if top in PACKAGES else None


def _module_of(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, dict[str, list[str]]]:
    """node → imported node → where (module:line), over every Python file of the packages."""
    found: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for package in PACKAGES:
        folder = REPO_ROOT / package
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.py")):
            module = _module_of(path)
            source = _node(module)
            if source is None:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
                else:
                    continue
                targets = {_node(name) for name in names} - {None, source}
                for target in targets:
                    assert target is not None
                    found[source][target].append(f"{module}:{node.lineno}")
    return found


IMPORTS = _imports()


def test_no_domain_imports_the_composition_root() -> None:
    offenders = {d: IMPORTS[d]["root"] for d in (PLUMBING, *DOMAINS) if IMPORTS[d].get("root")}
    assert offenders == {}


def test_plumbing_imports_no_domain() -> None:
    offenders = {d: where for d, where in IMPORTS[PLUMBING].items() if d in DOMAINS}
    assert offenders == {}


def test_only_the_feeds_dependents_import_the_feed() -> None:
    offenders = {
        d: IMPORTS[d]["feed"]
        for d in (PLUMBING, *DOMAINS)
        if d != "feed" and d not in FEED_DEPENDENTS and IMPORTS[d].get("feed")
    }
    assert offenders == {}


def test_the_root_is_what_knows_every_domain() -> None:
    # The simulator is a library of the evaluation (worlds/), the demo (devtools/) and the benchmarks:
    # the product is assembled without it.
    assert set(DOMAINS) - {"simulator"} <= set(IMPORTS["root"])


def test_an_api_process_loads_only_what_it_serves() -> None:
    """`roomfeed serve` imports the API's root in every process: the verbs' packages (the world
    evaluation, the bulk import, the demo, the simulator) stay out of it (roomfeed/cli_assembly.py)."""
    probe = "import sys, roomfeed.assembly; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    ).stdout
    assert [p for p in ("worlds", "bulk", "devtools", "simulator") if f"'{p}'" in loaded] == []
    assert "'feed'" in loaded  # the probe saw the API's own domains


def test_no_package_level_cycle() -> None:
    """Any cycle, however long (a → b → c → a), named with the imports that make it."""
    graph = {node: set(targets) for node, targets in IMPORTS.items()}
    cycles: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        for target in sorted(graph.get(node, ())):
            if target == path[0]:
                cycles.append([*path, target])
            elif target not in path and target > path[0]:  # each cycle once, from its smallest node
                walk(target, [*path, target])

    for start in sorted(graph):
        walk(start, [start])
    named = [
        " → ".join(cycle) + "  (" + "; ".join(IMPORTS[a][b][0] for a, b in itertools.pairwise(cycle)) + ")"
        for cycle in cycles
    ]
    assert named == []


# Lua a module templates at import from Python constants (`$SEEN_HOURS` ...): cluster's (issue 19).
TEMPLATED_LUA = {"events/realtime.py"}


def test_lua_lives_in_lua_files() -> None:
    """Scripts are `<package>/lua/*.lua`, read by roomfeed.lua.lua_script (STYLE.md): a Python string
    holding Lua (a `redis.call(`) in the product's packages names its file and line."""
    found = []
    for package in (PLUMBING, *DOMAINS, "devtools"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            where = str(path.relative_to(REPO_ROOT))
            if where in TEMPLATED_LUA:
                continue
            for node in ast.walk(ast.parse(path.read_text(), where)):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and "redis.call(" in node.value
                ):
                    found.append(f"{where}:{node.lineno}")
    assert found == []


def test_who_a_request_acts_for_is_never_an_assert() -> None:
    """A route learns whom it acts for from Principal.own_viewer/own_merchant/own_key (a 403 when the
    credentials are not that kind), never from `assert principal.…`: `python -O` drops asserts, and
    then a wrong kind of credentials would act for None."""
    found = []
    for package in (PLUMBING, *DOMAINS):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            where = str(path.relative_to(REPO_ROOT))
            for node in ast.walk(ast.parse(path.read_text(), where)):
                if isinstance(node, ast.Assert) and any(
                    isinstance(name, ast.Name) and name.id == "principal" for name in ast.walk(node.test)
                ):
                    found.append(f"{where}:{node.lineno}")
    assert found == []
