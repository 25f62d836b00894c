"""The layer wall of docs/architecture.md, checked by reading every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "maild"
FRONT_ENDS = {"smtp", "imap", "pop3", "api"}
SERVICES = {"auth", "delivery", "queue", "filters", "mailauth", "search", "replication", "dns"}
BASE = {"config", "util"}


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports() -> list[tuple[str, str, int]]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.extend((module, alias.name, node.lineno) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.extend([(module, node.module, node.lineno)])
    return found


def test_only_the_store_imports_lmdb() -> None:
    offenders = [f"{m}:{line}" for m, target, line in _imports()
                 if target.split(".")[0] == "lmdb" and _area(m) != "store"]
    assert offenders == []


def test_no_layer_imports_upward() -> None:
    offenders = []
    for module, target, line in _imports():
        if not target.startswith("maild."):
            continue
        src, dst = _area(module), _area(target)
        if src in BASE and dst not in BASE:
            offenders.append(f"{module}:{line} imports {target} (config/util import nothing of maild)")
        elif src == "store" and dst not in BASE | {"store"}:
            offenders.append(f"{module}:{line} imports {target} (the store knows nothing above it)")
        elif src in SERVICES and dst in FRONT_ENDS | {"cli", "daemon"}:
            offenders.append(f"{module}:{line} imports {target} (services never import front ends)")
        elif src in FRONT_ENDS and dst in FRONT_ENDS - {src} | {"cli", "daemon"}:
            offenders.append(f"{module}:{line} imports {target} (front ends are independent)")
    assert offenders == []
