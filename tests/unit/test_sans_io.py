"""The STOMP core is sans-I/O: it imports no event loop, network, Redis or clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import stomprelay

FORBIDDEN = frozenset({"asyncio", "websockets", "redis", "time", "socket"})
PACKAGE = Path(stomprelay.__file__).resolve().parent
CORE_FILES = sorted((PACKAGE / "stomp").glob("*.py"))


def imported_modules(path: Path) -> set[str]:
    package = path.parent.relative_to(PACKAGE.parent).parts
    return modules_in(path.read_text(encoding="utf-8"), package)


def modules_in(source: str, package: tuple[str, ...]) -> set[str]:
    """Absolute module names ``source`` imports, dynamic imports by name included."""
    tree = ast.parse(source)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
        ):
            found.add(node.args[0].value)
    return found


def forbidden(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in FORBIDDEN}


def test_core_files_exist() -> None:
    names = {p.name for p in CORE_FILES}
    assert {"frames.py", "parser.py", "session.py"} <= names


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_module_imports_no_io(path: Path) -> None:
    assert forbidden(imported_modules(path)) == set()


def test_core_dependencies_import_no_io() -> None:
    """What the core imports from the rest of the package is sans-I/O too."""
    todo = list(CORE_FILES)
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        modules = imported_modules(path)
        assert forbidden(modules) == set(), path
        for module in modules:
            if module.split(".")[0] != "stomprelay":
                continue
            target = PACKAGE.parent.joinpath(*module.split("."))
            for candidate in (target.with_suffix(".py"), target / "__init__.py"):
                if candidate.is_file():
                    todo.append(candidate)
    assert PACKAGE / "errors.py" in seen
    assert PACKAGE / "settings.py" in seen


def test_checker_catches_forbidden_imports() -> None:
    package = ("stomprelay", "stomp")
    samples = [
        "import asyncio",
        "import time as clock",
        "import os, socket",
        "from socket import socket",
        "from redis.asyncio import Redis",
        "import websockets.asyncio.server",
        "def f():\n    import time\n    return time.monotonic()",
        "__import__('time')",
        "importlib.import_module('asyncio')",
    ]
    for source in samples:
        assert forbidden(modules_in(source, package)), source
    assert forbidden(modules_in("import timeit, sockets_helper", package)) == set()
    assert modules_in("from ..errors import PeerError", package) >= {"stomprelay.errors"}
    assert modules_in("from . import frames", package) >= {"stomprelay.stomp.frames"}
