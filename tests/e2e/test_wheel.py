"""A wheel that works alone: built from the checkout, installed into a fresh virtual
environment, started from an empty folder, it serves every page of web/ and every
file those pages load (the @stomp/stompjs bundle included, its licence beside it).

The fresh environment sees the project environment's packages through a .pth file
(the wheel is installed with ``--no-deps``): nothing is downloaded. The wheel is
built from a copy of the sources, so the checkout gets no build/ folder.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from e2ehelpers import ROOT, WEB
from procs import RelayProcess

#: What the build reads of the checkout.
SOURCES = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "stomprelay", "web")


class Assets(HTMLParser):
    """The URLs a page loads by itself: scripts, style sheets, icons, images."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag in ("script", "img", "source", "iframe") and named.get("src"):
            self.urls.append(str(named["src"]))
        elif tag == "link" and named.get("href"):
            rel = set((named.get("rel") or "").lower().split())
            if rel & {"stylesheet", "icon", "preload", "modulepreload", "manifest"}:
                self.urls.append(str(named["href"]))

    @classmethod
    def of(cls, html: str) -> list[str]:
        parser = cls()
        parser.feed(html)
        return [url for url in parser.urls if not url.startswith("data:")]


def web_pages() -> set[str]:
    """Every page of web/ (a dashboard's too), as paths under it."""
    found = WEB.rglob("*.html")
    return {p.relative_to(WEB).as_posix() for p in found if "node_modules" not in p.parts}


def fetch(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return reply.status, reply.read()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def copy_sources(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    return source


def build_wheel(tmp_path: Path, source: Path | None = None) -> Path:
    """``pip wheel`` of a copy of the checkout (or of ``source``, an sdist)."""
    out = tmp_path / "dist"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-build-isolation"),
            *("--no-deps", "--no-index", "--wheel-dir", str(out)),
            str(source or copy_sources(tmp_path)),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = out.glob("stomprelay-*.whl")
    return wheel


def web_files_of(wheel: Path) -> set[str]:
    prefix = "stomprelay/web/"
    with zipfile.ZipFile(wheel) as archive:
        return {n.removeprefix(prefix) for n in archive.namelist() if n.startswith(prefix)}


def fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    """A new environment with the wheel installed; the project's packages (but not
    its stomprelay, an editable install's finder is not run) reachable."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (Path(site) / "project-packages.pth").write_text("\n".join(sorted(ours)) + "\n")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"),
            *("--no-deps", "--no-index", str(wheel)),
        ],
        check=True,
        timeout=300,
    )
    return venv


@pytest.mark.usefixtures("web_deps")
def test_the_wheel_serves_every_page_and_asset_from_an_empty_folder(tmp_path: Path) -> None:
    started = time.monotonic()
    wheel = build_wheel(tmp_path)
    built = time.monotonic()
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    web_names = web_files_of(wheel)
    assert "node_modules/@stomp/stompjs/LICENSE" in web_names
    # the project's own licence, as pyproject.toml declares it
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    assert not any(n.endswith("package-lock.json") for n in names)

    venv = fresh_venv(tmp_path, wheel)
    installed = time.monotonic()
    empty = tmp_path / "empty"
    empty.mkdir()
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import stomprelay; print(stomprelay.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=empty,
    ).stdout.strip()
    package = Path(where).parent
    assert package.is_relative_to(venv), f"stomprelay was imported from {where}"
    licence = (package / "web" / "node_modules" / "@stomp" / "stompjs" / "LICENSE").read_text()
    assert "Apache License" in licence

    relay = RelayProcess(
        tmp_path, "wheel-1", command=[str(venv / "bin" / "stomprelay")], cwd=empty
    ).start()
    try:
        pages = sorted(web_pages())
        assert "index.html" in pages
        fetched: dict[str, str] = {}
        for page in pages:
            status, body = fetch(f"{relay.http}/{page}")
            assert status == 200
            assert body == (WEB / page).read_bytes()
            urls = Assets.of(body.decode("utf-8"))
            assert urls, f"{page} loads nothing?"
            for url in urls:
                absolute = urljoin(f"{relay.http}/{page}", url)
                assert urlsplit(absolute).netloc == urlsplit(relay.http).netloc, (
                    f"{page} loads {url} from elsewhere: the wheel cannot carry it"
                )
                status, data = fetch(absolute)
                assert status == 200, absolute
                relative = urlsplit(absolute).path.lstrip("/")
                assert digest(data) == digest((WEB / relative).read_bytes()), relative
                fetched[relative] = f"{len(data)} B"
        assert "node_modules/@stomp/stompjs/bundles/stomp.umd.min.js" in fetched
        status, root = fetch(f"{relay.http}/")
        assert root == (WEB / "index.html").read_bytes()
    finally:
        relay.stop()
    served = time.monotonic()
    print(
        f"\nwheel {wheel.name}: {wheel.stat().st_size} bytes, {len(names)} files "
        f"({len(web_names)} web); build {built - started:.1f} s, venv + install "
        f"{installed - built:.1f} s, serve + fetch {served - installed:.1f} s; "
        f"assets {fetched}"
    )


@pytest.mark.usefixtures("web_deps")
def test_a_wheel_built_from_the_sdist_carries_the_same_pages(tmp_path: Path) -> None:
    """The release path (``python -m build``: an sdist, then a wheel from it)."""
    source = copy_sources(tmp_path)
    sdists = tmp_path / "sdist"
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"from setuptools import build_meta; build_meta.build_sdist({str(sdists)!r})",
        ],
        cwd=source,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (sdist,) = sdists.glob("stomprelay-*.tar.gz")
    from_sdist = web_files_of(build_wheel(tmp_path / "from-sdist", sdist))
    direct = web_files_of(build_wheel(tmp_path / "direct", source))
    assert from_sdist == direct
    assert web_pages() <= from_sdist
    assert "node_modules/@stomp/stompjs/bundles/stomp.umd.min.js" in from_sdist
