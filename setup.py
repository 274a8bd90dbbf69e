"""Builds the wheel with the herokuish buildpack inside (everything else is in pyproject.toml).

``buildpacks/python`` lives at the top of the repository, where herokuish and a
git URL expect a buildpack; the wheel carries a copy at
``slugbuild/buildpack/python`` (package data can only come from inside a package),
which ``slugbuild buildpack path|install`` find (bundled_buildpack.py).
An editable install reads the checkout's directory instead.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUILDPACK = Path(__file__).resolve().parent / "buildpacks" / "python"


class BuildPyWithBuildpack(build_py):
    """build_py, plus the buildpack's files copied into the package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "slugbuild" / "buildpack" / "python"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(BUILDPACK, target,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithBuildpack})
