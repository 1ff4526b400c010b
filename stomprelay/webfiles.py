"""The web pages a relay serves at ``/``: where they are, and what a wheel carries.

In a checkout the pages are ``web/`` beside the package, their third-party code
in ``web/node_modules`` after ``npm ci`` (``make web-deps``). An installed wheel
carries them inside the package, as ``stomprelay/web/``: every file of ``web/``
(a page added there is carried with no list to update) except npm's own files,
plus each ``node_modules`` file that a page, script or style sheet names, with
the licence and ``package.json`` of the npm package it comes from (their
licences ask for it). ``setup.py`` builds the wheel with :func:`wheel_files`.

Standard library only: ``setup.py`` loads this file before the package is installed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

#: The folder inside the package that an installed wheel serves.
PACKAGED = Path(__file__).resolve().parent / "web"
#: A checkout's ``web/``.
CHECKOUT = Path(__file__).resolve().parent.parent / "web"
#: Files of ``web/`` that only npm reads.
NPM_FILES = frozenset({"package.json", "package-lock.json", ".package-lock.json"})
#: Files whose text may name a ``node_modules`` file the browser then loads.
REFERRING = frozenset({".html", ".htm", ".js", ".mjs", ".css", ".svg", ".json"})
#: What a ``node_modules`` path looks like in a page, script or style sheet.
_MODULE_PATH = re.compile(r"node_modules/((?:@[\w.-]+/)?[\w.-]+)/([^\s\"'`()<>?#]+)")
#: An npm package's licence files (npm's own rule for what it always packs).
_LICENCE = re.compile(r"^(licen[cs]e|copying|notice)(\.\w+)?$", re.IGNORECASE)


class WebFilesError(RuntimeError):
    """A page names a ``node_modules`` file that is not there (``npm ci`` not run)."""


def default_root() -> Path:
    """The folder served at ``/`` without ``--web-root``: the installed package's
    pages, else a checkout's ``web/``."""
    return PACKAGED if (PACKAGED / "index.html").is_file() else CHECKOUT


def _own_files(web: Path) -> Iterator[Path]:
    for path in sorted(web.rglob("*")):
        relative = path.relative_to(web)
        if relative.parts[0] == "node_modules" or path.name in NPM_FILES:
            continue
        if path.is_file() and "__pycache__" not in relative.parts:
            yield relative


def module_references(web: Path, pages: list[Path]) -> dict[str, set[str]]:
    """npm package -> the files of it (relative to the package) that ``pages`` name."""
    found: dict[str, set[str]] = {}
    for relative in pages:
        if relative.suffix.lower() not in REFERRING:
            continue
        text = (web / relative).read_text(encoding="utf-8", errors="replace")
        for package, inner in _MODULE_PATH.findall(text):
            found.setdefault(package, set()).add(inner)
    return found


def wheel_files(web: Path) -> list[tuple[Path, str]]:
    """(source file, path under ``stomprelay/web/``) for everything a wheel
    carries of ``web``; WebFilesError naming what is missing."""
    if not (web / "index.html").is_file():
        raise WebFilesError(f"{web / 'index.html'} is missing: build from a checkout or an sdist")
    own = list(_own_files(web))
    files = [(web / relative, relative.as_posix()) for relative in own]
    missing: list[str] = []
    for package, inner in sorted(module_references(web, own).items()):
        root = web / "node_modules" / package
        wanted = set(inner)
        if root.is_dir():
            wanted.add("package.json")
            wanted.update(p.name for p in root.iterdir() if _LICENCE.match(p.name) and p.is_file())
        for name in sorted(wanted):
            source = root / name
            if not source.is_file():
                missing.append(f"node_modules/{package}/{name}")
                continue
            files.append((source, f"node_modules/{package}/{name}"))
    if missing:
        raise WebFilesError(
            f"the pages in {web} load {', '.join(missing)}, which is not there: run "
            "`make web-deps` (npm ci in web/) before building the wheel"
        )
    return files
