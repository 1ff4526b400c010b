"""docs/architecture.md names modules and classes; each of them exists.

The page's table says which module holds which names, and its diagram names the
classes data flows through: a rename or a move that the page does not follow fails
here, so the page stays true.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
#: Words of the diagram that are not code names.
PROSE = {"GET", "Redis"}


@cache
def defined(path: Path) -> frozenset[str]:
    """Top-level classes, functions and assignments of a module."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return frozenset(names)


def every_name() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "stomprelay").rglob("*.py"):
        names |= defined(path)
    return names


def table_rows() -> list[tuple[list[str], list[str]]]:
    rows = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[1].startswith("`stomprelay/"):
            continue
        modules = re.findall(r"`([^`]+\.py)`", cells[1])
        names = re.findall(r"`([^`]+)`", cells[2])
        rows.append((modules, names))
    return rows


def test_the_table_names_modules_that_exist_and_what_they_hold() -> None:
    rows = table_rows()
    assert len(rows) > 30, "the table was not found"
    problems = []
    for modules, names in rows:
        paths = [ROOT / m for m in modules]
        problems += [f"no module {p.relative_to(ROOT)}" for p in paths if not p.exists()]
        held = set().union(*(defined(p) for p in paths if p.exists()))
        problems += [f"{n} is not in {', '.join(modules)}" for n in names if n not in held]
    assert not problems, problems


def test_every_module_of_the_package_has_its_row() -> None:
    listed = {m for modules, _ in table_rows() for m in modules}
    skipped = {"__init__.py", "__main__.py"}
    helpers = {"bounded.py", "buckets.py", "clock.py", "errors.py", "notify.py", "redis_io.py"}
    missing = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "stomprelay").rglob("*.py")
        if p.name not in skipped | helpers and str(p.relative_to(ROOT)) not in listed
    )
    assert not missing, f"modules docs/architecture.md does not place: {missing}"


def test_the_diagram_names_classes_that_exist() -> None:
    text = DOC.read_text()
    diagram = text.split("```", 2)[1]
    words = set(re.findall(r"\b[A-Z][A-Za-z]+\b", diagram)) - PROSE
    assert len(words) > 15, "the diagram was not found"
    unknown = sorted(words - every_name())
    assert not unknown, f"the diagram names what the code does not have: {unknown}"


#: The size past which a module is split by concern (docs/architecture.md, "Size").
MAX_LINES = 750


def test_no_module_passes_the_size_limit() -> None:
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines())
        for p in (ROOT / "stomprelay").rglob("*.py")
    }
    over = {path: n for path, n in sizes.items() if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines: {over}"


def test_every_public_class_says_its_job() -> None:
    missing = []
    for path in sorted((ROOT / "stomprelay").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if (
                isinstance(node, ast.ClassDef)
                and not node.name.startswith("_")
                and not ast.get_docstring(node)
            ):
                missing.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert not missing, f"public classes without a docstring: {missing}"
