"""The package's layout holds: what may import what (README, "Architecture"), no import
cycles, and a core with no Kafka, Faust, network or event loop in it.

Imports are read from the source (every `import`, also those inside functions, which the
code uses to keep light commands fast: a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "streams"

# layer -> the layers its modules may import (a layer may always import itself)
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "runtime": {"core"},
    "tools": {"core"},
    "local": set(),
    "commands": {"core", "runtime", "tools", "local"},
}
# third-party packages the core may use; anything else in it must be the standard library
CORE_THIRD_PARTY = {"msgspec", "orjson"}
# modules that must never be loaded by importing the core
NOT_IN_CORE = ("aiokafka", "faust", "mode", "kafka", "aiohttp", "asyncio", "socket", "ssl",
               "rocksdict", "prometheus_client", "uvloop")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, name: str) -> set[str]:
    """Every module `path` imports, absolute, resolved to a module where the name is one."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    """streams module -> the streams modules it imports (names that are not modules dropped)."""
    known = modules()
    return {name: {m for m in imports_of(path, name) if m in known and m != name}
            for name, path in known.items()}


def layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else None


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


def test_cycle_finder_finds_a_cycle_and_ignores_a_chain() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_every_module_is_in_a_layer() -> None:
    # the package's top level holds only its __init__ and the `python -m streams` entry
    loose = [n for n in modules() if layer(n) is None and n not in {"streams", "streams.__main__"}]
    assert loose == []


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_layers_import_only_what_they_may() -> None:
    wrong = []
    for name, targets in graph().items():
        own = layer(name)
        if own is None or name.endswith(".__main__"):
            continue  # `python -m` entry points are fronts: they may start anything
        for target in targets:
            other = layer(target)
            if other is not None and other != own and other not in ALLOWED[own]:
                wrong.append(f"{name} -> {target}")
            if other is None and target != "streams":
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def test_the_core_uses_only_the_standard_library_msgspec_and_orjson() -> None:
    wrong = []
    for name, path in modules().items():
        if layer(name) != "core":
            continue
        for target in imports_of(path, name):
            top = target.split(".")[0]
            if top in ("streams", "__future__") or top in sys.stdlib_module_names:
                if top in NOT_IN_CORE:
                    wrong.append(f"{name} -> {target}")
                continue
            if top not in CORE_THIRD_PARTY:
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def test_importing_the_core_loads_no_kafka_faust_network_or_event_loop() -> None:
    # what the imports pull in transitively, in a fresh interpreter
    core = [n for n in modules() if layer(n) == "core"]
    code = ("import sys\n" + "".join(f"import {n}\n" for n in core)
            + "print('\\n'.join(sorted(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert [m for m in loaded if m.split(".")[0] in NOT_IN_CORE] == []


@pytest.mark.parametrize("folder", ["core", "runtime", "tools", "local", "commands"])
def test_tests_mirror_the_package(folder: str) -> None:
    # every test module of a folder sits in tests/<folder>/
    here = Path(__file__).resolve().parent
    assert (PACKAGE / folder / "__init__.py").is_file()
    assert sorted((here / folder).glob("test_*.py")), f"tests/{folder}/ has no tests"
