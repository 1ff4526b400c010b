"""The wheel carries the web pages: ``build_py`` copies ``web/`` into the package as
``stomprelay/web/`` (what :mod:`stomprelay.webfiles` chooses), and an sdist carries
the same files under ``web/`` so that a wheel built from it has them too. Everything
else is in pyproject.toml. An editable install serves the checkout's ``web/`` instead."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent


def _webfiles() -> ModuleType:
    """stomprelay/webfiles.py, loaded by path: the package is not installed yet."""
    path = HERE / "stomprelay" / "webfiles.py"
    spec = importlib.util.spec_from_file_location("_webfiles", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildWithWeb(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "stomprelay" / "web"
        shutil.rmtree(target, ignore_errors=True)
        for source, name in _webfiles().wheel_files(HERE / "web"):
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)


class SdistWithWeb(sdist):
    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        for source, name in _webfiles().wheel_files(HERE / "web"):
            destination = Path(base_dir) / "web" / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)


setup(cmdclass={"build_py": BuildWithWeb, "sdist": SdistWithWeb})
