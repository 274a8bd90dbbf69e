"""The version of an installed distribution, without loading ``importlib.metadata``.

Every build asks for a few versions (uv's, which keys the dependency layer;
slugbuild's and the CycloneDX library's, which key the kept SBOM), and
``importlib.metadata`` (with ``email``, ``zipfile``, ``csv``...) is a sizeable
part of a warm build's start-up. The common case, a ``*.dist-info`` directory in
a directory on ``sys.path``, is read here directly, in ``sys.path`` order as
``importlib.metadata`` searches; anything else (an ``.egg-info``, an egg, a zip
on the path, an unreadable METADATA) is left to ``importlib.metadata`` itself,
so the answer is always the one it gives.
"""

from __future__ import annotations

import functools
import os
import re
import sys

_SEPARATORS = re.compile(r"[-_.]+")


def _normal(name: str) -> str:
    return _SEPARATORS.sub("_", name).lower()


@functools.cache
def installed_version(distribution: str) -> str | None:
    """``importlib.metadata.version(distribution)``, or None when it is not installed."""
    wanted = _normal(distribution)
    for entry in sys.path:
        directory = entry or "."
        try:
            names = os.listdir(directory)
        except NotADirectoryError:
            return _from_importlib(distribution)  # a zip or egg on the path
        except OSError:
            continue  # not there: importlib.metadata skips it too
        for name in names:
            stem, dot, suffix = name.rpartition(".")
            if not dot or suffix not in ("dist-info", "egg-info", "egg"):
                continue
            if _normal(stem.split("-", 1)[0]) != wanted:
                continue
            path = os.path.join(directory, name)
            if suffix == "dist-info":
                version = _metadata_version(os.path.join(path, "METADATA"))
            elif suffix == "egg-info":  # a directory holding PKG-INFO, or that file itself
                version = _metadata_version(os.path.join(path, "PKG-INFO")
                                            if os.path.isdir(path) else path)
            else:
                version = None  # an egg: left to importlib.metadata
            return version if version is not None else _from_importlib(distribution)
    return _from_importlib(distribution)


def _metadata_version(path: str) -> str | None:
    """The ``Version`` header of a METADATA file (the headers end at the first empty line)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    return None
                if line[:8].lower() == "version:":
                    return line[8:].strip() or None
    except OSError:
        return None
    return None


def _from_importlib(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None
