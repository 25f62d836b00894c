"""The layer wall of docs/architecture.md, checked by reading every module's imports.

The packages are read from disk (every ``maild/*/`` directory and ``maild/*.py`` module);
each must be assigned to a layer in ``LAYERS`` below, so a new package fails this test until
someone decides where it sits. Every import form counts: ``import maild.x``, ``from maild.x
import y``, ``from maild import x`` and relative imports, including those under
``TYPE_CHECKING`` (a type-only import is still a dependency a reader has to follow).

The rules:
- a package imports only packages of its own layer or below;
- base packages (config, util) import nothing of maild above the base;
- front ends are independent of each other;
- the package import graph has no cycle (one named package per step in the message).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "maild"

# Lowest first. A package may import its own layer and the layers below it.
LAYERS: dict[str, int] = {}
BASE, STORE, SERVICES, CONTEXT, FRONT_ENDS, WIRING = range(6)
for _layer, _names in (
    (BASE, {"config", "util", "__init__"}),
    (STORE, {"store"}),
    (SERVICES, {"auth", "delivery", "queue", "filters", "mailauth", "dns", "transfer", "replication",
               "search"}),
    (CONTEXT, {"context"}),  # the ServerContext the wiring hands to every front end
    (FRONT_ENDS, {"smtp", "imap", "pop3", "api"}),
    (WIRING, {"cli", "daemon", "supervisor", "shutdown", "reload"}),
):
    LAYERS.update(dict.fromkeys(_names, _layer))
LAYER_NAMES = {BASE: "base", STORE: "store", SERVICES: "services", CONTEXT: "context",
               FRONT_ENDS: "front ends", WIRING: "wiring"}

# Cycles present today, each to be broken by moving the shared types below both packages
# (issue 16 item 3). The test fails when one of these no longer exists, so the entry goes.
KNOWN_CYCLES: set[frozenset[str]] = set()


def packages(root: Path) -> set[str]:
    """The top-level packages and modules under root, as found on disk."""
    names = {p.name for p in root.iterdir() if p.is_dir() and any(p.rglob("*.py"))}
    names |= {p.stem for p in root.glob("*.py")}
    return names


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    rel = path.relative_to(root.parent).with_suffix("")
    is_package = rel.name == "__init__"
    return ".".join(rel.parts).removesuffix(".__init__"), is_package


def imports(root: Path) -> list[tuple[str, str, int]]:
    """(importing module, imported module, line) for every import under root, resolved."""
    top = root.name
    found = []
    for path in sorted(root.rglob("*.py")):
        module, is_package = _module_name(path, root)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.extend((module, alias.name, node.lineno) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    # Relative: level 1 is the importing module's own package.
                    parts = module.split(".") if is_package else module.split(".")[:-1]
                    parts = parts[:len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                if base == top:
                    # `from maild import x`: each name is a package or module of maild.
                    found.extend((module, f"{top}.{alias.name}", node.lineno) for alias in node.names)
                else:
                    found.append((module, base, node.lineno))
    return found


def area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def package_graph(edges: Iterable[tuple[str, str, int]], top: str) -> dict[str, dict[str, str]]:
    """package -> {imported package: "module:line" of one import that makes the edge}."""
    graph: dict[str, dict[str, str]] = {}
    for module, target, line in edges:
        if target.split(".")[0] != top:
            continue
        src, dst = area(module), area(target)
        if src != dst:
            graph.setdefault(src, {}).setdefault(dst, f"{module}:{line}")
    return graph


def cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one package (Tarjan), each as one cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_one_cycle(graph, component) for component in components]


def _one_cycle(graph: dict[str, dict[str, str]], component: set[str]) -> list[str]:
    """A shortest closed walk inside the component, from its first member back to it."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph.get(node, {})):
            if nxt == start:
                return paths[node] + [start]
            if nxt in component and nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    raise AssertionError("unreachable: a component is strongly connected")


def describe_cycle(graph: dict[str, dict[str, str]], cycle: list[str]) -> str:
    steps = [f"{a} -> {b} ({graph[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False)]
    return "cycle " + " -> ".join(cycle) + ": " + "; ".join(steps)


def layer_offences(root: Path) -> list[str]:
    """Every import that breaks a rule of the module docstring, one line each."""
    top = root.name
    found = packages(root)
    offences = [f"maild/{name}: not assigned to a layer; add it to LAYERS in tests/test_layers.py "
                "(and to docs/architecture.md)" for name in sorted(found - set(LAYERS))]
    for module, target, line in imports(root):
        if target.split(".")[0] != top:
            continue
        src, dst = area(module), area(target)
        if src == dst or src not in LAYERS or dst not in LAYERS:
            continue
        where = f"{module}:{line} imports {target}"
        if LAYERS[dst] > LAYERS[src]:
            offences.append(f"{where} ({LAYER_NAMES[LAYERS[src]]} never import "
                            f"{LAYER_NAMES[LAYERS[dst]]})")
        elif LAYERS[src] == FRONT_ENDS == LAYERS[dst]:
            offences.append(f"{where} (front ends are independent)")
    return offences


def test_only_the_store_imports_lmdb() -> None:
    offenders = [f"{m}:{line}" for m, target, line in imports(PACKAGE)
                 if target.split(".")[0] == "lmdb" and area(m) != "store"]
    assert offenders == []


def test_no_layer_imports_upward() -> None:
    assert layer_offences(PACKAGE) == []


def test_layers_name_only_packages_that_exist() -> None:
    assert sorted(set(LAYERS) - packages(PACKAGE)) == [], "remove these from LAYERS: no such package"


def test_no_cycle_between_packages() -> None:
    graph = package_graph(imports(PACKAGE), PACKAGE.name)
    found = cycles(graph)
    unknown = [describe_cycle(graph, c) for c in found if frozenset(c) not in KNOWN_CYCLES]
    assert unknown == []
    gone = KNOWN_CYCLES - {frozenset(c) for c in found}
    assert not gone, f"remove from KNOWN_CYCLES, no longer a cycle: {sorted(map(sorted, gone))}"


# The checker checked: synthetic trees where one import breaks one rule.

def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "maild"
    for name, text in {"__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_checker_reports_from_maild_import_in_the_store(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"store/__init__.py": "from maild import imap\n",
                            "imap/__init__.py": "", "util/__init__.py": "from maild import util\n"})
    assert layer_offences(root) == ["maild.store:1 imports maild.imap (store never import front ends)"]


def test_checker_resolves_relative_imports(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"store/__init__.py": "", "store/shard.py": "from ..smtp import server\n",
                            "store/types.py": "from . import shard\nfrom .shard import x\n",
                            "smtp/__init__.py": "", "smtp/server.py": "from ...maild import x\n"})
    edges = {(m, t) for m, t, _ in imports(root)}
    assert ("maild.store.shard", "maild.smtp") in edges
    assert ("maild.store.types", "maild.store") in edges
    assert ("maild.store.types", "maild.store.shard") in edges
    assert layer_offences(root) == ["maild.store.shard:1 imports maild.smtp (store never import front ends)"]


def test_checker_reports_front_end_to_front_end_and_unknown_packages(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"pop3/__init__.py": "import maild.imap.server\n", "imap/server.py": "",
                            "webmail/__init__.py": "", "util.py": ""})
    assert layer_offences(root) == [
        "maild/webmail: not assigned to a layer; add it to LAYERS in tests/test_layers.py "
        "(and to docs/architecture.md)",
        "maild.pop3:1 imports maild.imap.server (front ends are independent)"]


def test_checker_names_a_cycle(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"queue/__init__.py": "from maild.filters import x\n",
                            "filters/__init__.py": "from maild.delivery import y\n",
                            "delivery/__init__.py": "if True:\n    from maild import queue\n",
                            "dns/__init__.py": "from maild import queue\n"})
    graph = package_graph(imports(root), "maild")
    found = cycles(graph)
    assert found == [["delivery", "queue", "filters", "delivery"]]
    assert describe_cycle(graph, found[0]) == (
        "cycle delivery -> queue -> filters -> delivery: delivery -> queue (maild.delivery:2); "
        "queue -> filters (maild.queue:1); filters -> delivery (maild.filters:1)")
