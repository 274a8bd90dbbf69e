"""The herokuish buildpack (``buildpacks/python``) that ships inside the wheel.

herokuish and Dokku run buildpacks from a directory; a user who installed
slugbuild with pip needs no git checkout to get one: ``slugbuild buildpack
path`` prints where the installed copy is, ``slugbuild buildpack install DIR``
copies it into ``DIR`` and records the Python that runs slugbuild there
(``lib/slugbuild-python``), so its scripts find slugbuild without
``SLUGBUILD_PYTHON_BIN``.

The wheel carries it as package data at ``slugbuild/buildpack/python`` (setup.py
copies it in); an editable install or a source checkout uses
``buildpacks/python`` of the checkout.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

from . import errors
from .arguments import PathArg, as_path

#: Where the wheel's copy lives, relative to the slugbuild package.
PACKAGED = Path("buildpack") / "python"
#: The file ``install`` writes: the interpreter that has slugbuild (lib/python.sh reads it).
PYTHON_POINTER = Path("lib") / "slugbuild-python"
_SCRIPTS = ("bin/detect", "bin/compile", "bin/release")


def buildpack_dir() -> Path:
    """The bundled buildpack's directory (packaged copy, else the source checkout's)."""
    package = Path(__file__).resolve().parent
    for candidate in (package / PACKAGED, package.parent.parent / "buildpacks" / "python"):
        if all((candidate / script).is_file() for script in _SCRIPTS):
            return candidate
    raise errors.BUILDPACK_NOT_BUNDLED.error(package=package)


@errors.user_errors
def install_buildpack(target: PathArg, *, force: bool = False) -> Path:
    """Copy the bundled buildpack into ``target`` (created; an existing non-empty
    directory only with ``force``, replacing it); return ``target``."""
    destination = as_path(target, "install_buildpack", "target").absolute()
    source = buildpack_dir()
    if destination.exists() or destination.is_symlink():
        if not destination.is_dir() or destination.is_symlink():
            raise errors.BUILDPACK_INSTALL_REFUSED.error(variant="not-a-directory",
                                                         target=destination)
        if any(destination.iterdir()):
            if not force:
                raise errors.BUILDPACK_INSTALL_REFUSED.error(variant="not-empty",
                                                             target=destination)
            # A typo (`install ~ --force`) must not empty a directory of other files.
            pointer = destination / PYTHON_POINTER
            if not pointer.is_file() or pointer.is_symlink():
                raise errors.BUILDPACK_INSTALL_REFUSED.error(variant="not-a-buildpack",
                                                             target=destination)
            shutil.rmtree(destination)
    partial = destination.with_name(f".{destination.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        shutil.copytree(source, partial, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for script in _SCRIPTS:  # a wheel's unpacker may not keep the executable bits
            path = partial / script
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        (partial / PYTHON_POINTER).write_text(sys.executable + "\n")
        if destination.exists():
            destination.rmdir()  # empty: checked above
        os.replace(partial, destination)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return destination
