"""What a wheel carries of web/ (stomprelay.webfiles): every page, found with no list,
and the node_modules files the pages name, with their packages' licences."""

from __future__ import annotations

from pathlib import Path

import pytest

from stomprelay.webfiles import WebFilesError, wheel_files


def _write(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def web(tmp_path: Path) -> Path:
    root = tmp_path / "web"
    _write(root / "index.html", '<script src="node_modules/@stomp/stompjs/bundles/s.js"></script>')
    _write(root / "app.js")
    _write(root / "package.json", "{}")
    _write(root / "package-lock.json", "{}")
    stomp = root / "node_modules" / "@stomp" / "stompjs"
    _write(stomp / "bundles" / "s.js")
    _write(stomp / "bundles" / "unused.js")
    _write(stomp / "LICENSE", "Apache License")
    _write(stomp / "package.json", "{}")
    _write(stomp / "README.md")
    return root


def test_pages_and_the_named_module_files_with_their_licence(web: Path) -> None:
    carried = dict((name, source) for source, name in wheel_files(web))
    assert set(carried) == {
        "index.html",
        "app.js",
        "node_modules/@stomp/stompjs/bundles/s.js",
        "node_modules/@stomp/stompjs/LICENSE",
        "node_modules/@stomp/stompjs/package.json",
    }
    assert carried["app.js"] == web / "app.js"


def test_a_page_added_later_is_carried_with_what_it_loads(web: Path) -> None:
    """A dashboard in a subfolder whose script imports a charting library from npm."""
    _write(web / "admin.html", '<link rel="stylesheet" href="admin/admin.css">')
    _write(web / "admin" / "admin.css", "body {}")
    _write(web / "admin" / "admin.js", 'import "../node_modules/tiny-chart/dist/chart.mjs";')
    chart = web / "node_modules" / "tiny-chart"
    _write(chart / "dist" / "chart.mjs")
    _write(chart / "LICENCE.txt", "MIT")
    _write(chart / "package.json", "{}")
    names = {name for _, name in wheel_files(web)}
    assert {
        "admin.html",
        "admin/admin.css",
        "admin/admin.js",
        "node_modules/tiny-chart/dist/chart.mjs",
        "node_modules/tiny-chart/LICENCE.txt",
        "node_modules/tiny-chart/package.json",
    } <= names


def test_a_missing_module_file_stops_the_build_saying_what_to_run(web: Path) -> None:
    (web / "node_modules" / "@stomp" / "stompjs" / "bundles" / "s.js").unlink()
    with pytest.raises(WebFilesError, match=r"@stomp/stompjs/bundles/s\.js.*make web-deps"):
        wheel_files(web)


def test_without_npm_ci_at_all_the_build_stops_too(web: Path) -> None:
    import shutil

    shutil.rmtree(web / "node_modules")
    with pytest.raises(WebFilesError, match="npm ci in web/"):
        wheel_files(web)


def test_without_the_pages_the_build_stops(tmp_path: Path) -> None:
    with pytest.raises(WebFilesError, match=r"index\.html is missing"):
        wheel_files(tmp_path / "web")
