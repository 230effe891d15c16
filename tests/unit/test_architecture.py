"""The shape of the package, read from its source: the pure core imports no I/O, and no module of
`sidecar` is on an import cycle (imports under TYPE_CHECKING included)."""

from __future__ import annotations

import ast
from pathlib import Path

import sidecar

ROOT = Path(sidecar.__file__).parent
# The functional core (DESIGN.md): decisions and values, no sockets, no event loop, no TLS stack.
PURE_CORE = (
    "sidecar.config",
    "sidecar.errors",
    "sidecar.outcome",
    "sidecar.pesit",
    "sidecar.stats",
    "sidecar.tls.peer",
    "sidecar.yamlsource",
    *(f"sidecar.policy.{path.stem}" for path in (ROOT / "policy").glob("*.py") if path.stem != "__init__"),
)
IO_MODULES = {"asyncio", "ssl", "socket", "selectors", "aiohttp", "OpenSSL", "uvloop", "prometheus_client"}


def _module_files() -> dict[str, Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


MODULES = _module_files()


def _imports(name: str) -> tuple[set[str], set[str]]:
    """(sidecar modules, top-level outside packages) imported anywhere in the module's source."""
    path = MODULES[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    inside: set[str] = set()
    outside: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            if target.split(".")[0] != "sidecar":
                outside.add(target.split(".")[0])
                continue
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target not in (name, "sidecar"):
                inside.add(target)
    return inside, outside


GRAPH = {name: _imports(name) for name in MODULES}


def _reachable(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for module in GRAPH[todo.pop()][0]:
            if module not in seen:
                seen.add(module)
                todo.append(module)
    return seen


def test_the_pure_core_reaches_no_io_module() -> None:
    for name in PURE_CORE:
        closure = {name} | _reachable(name)
        impure = sorted(module for module in closure if module not in PURE_CORE)
        assert not impure, f"{name} reaches {impure}"
        outside = set().union(*(GRAPH[module][1] for module in closure))
        assert not outside & IO_MODULES, f"{name} (through {sorted(closure)}) imports {sorted(outside & IO_MODULES)}"


def test_no_module_is_on_an_import_cycle() -> None:
    cycles = sorted(name for name in MODULES if name in _reachable(name))
    assert not cycles


def test_the_graph_is_read() -> None:
    # A walker that found nothing would pass the tests above: check it sees known edges.
    assert "sidecar.policy.verdict" in _reachable("sidecar.proxy.inbound")
    assert "asyncio" in GRAPH["sidecar.runtime"][1]
