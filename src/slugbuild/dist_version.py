"""The version (or another metadata header) of an installed distribution, without
loading ``importlib.metadata``.

Every build asks for a few versions (uv's, which keys the dependency layer; pip's and
its Requires-Python, which choose the pip a runtime gets; slugbuild's and the CycloneDX
library's, which key the kept SBOM), and ``importlib.metadata`` (with ``email``,
``zipfile``, ``csv``...) is a sizeable part of a warm build's start-up. The common
case, a ``*.dist-info`` directory in a directory on ``sys.path``, is read here
directly, in ``sys.path`` order as ``importlib.metadata`` searches; anything else (an
``.egg-info``, an egg, a zip on the path, an unreadable METADATA, a folded value) is
left to ``importlib.metadata`` itself, so the answer is always the one it gives.
"""

from __future__ import annotations

import functools
import os
import re
import sys

_SEPARATORS = re.compile(r"[-_.]+")


def _normal(name: str) -> str:
    return _SEPARATORS.sub("_", name).lower()


def installed_version(distribution: str) -> str | None:
    """``importlib.metadata.version(distribution)``, or None when it is not installed."""
    return installed_header(distribution, "Version")


@functools.cache
def installed_header(distribution: str, header: str) -> str | None:
    """The first ``header`` of an installed distribution's core metadata, as
    ``importlib.metadata.metadata(distribution).get(header)`` gives it (None: not
    installed, or no such header), e.g. pip's ``Requires-Python``."""
    wanted = _normal(distribution)
    for entry in sys.path:
        directory = entry or "."
        try:
            names = os.listdir(directory)
        except NotADirectoryError:
            return _from_importlib(distribution, header)  # a zip or egg on the path
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
                found = _metadata_header(os.path.join(path, "METADATA"), header)
            elif suffix == "egg-info":  # a directory holding PKG-INFO, or that file itself
                found = _metadata_header(os.path.join(path, "PKG-INFO")
                                         if os.path.isdir(path) else path, header)
            else:
                found = _UNREAD  # an egg: left to importlib.metadata
            return _from_importlib(distribution, header) if isinstance(found, _Unread) \
                else found
    return _from_importlib(distribution, header)


class _Unread:
    """A metadata file this module leaves to ``importlib.metadata`` (unreadable, or a
    Version it lacks)."""


_UNREAD = _Unread()


def _metadata_header(path: str, header: str) -> str | None | _Unread:
    """The first value of ``header`` in a METADATA file (the headers end at the first
    empty line; an empty or folded value is left to ``importlib.metadata``)."""
    key = header.lower() + ":"
    lines = []
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    break
                lines.append(line)
    except OSError:
        return _UNREAD
    for at, line in enumerate(lines):
        if line[:len(key)].lower() == key:
            value = line[len(key):].strip()
            folded = at + 1 < len(lines) and lines[at + 1][:1] in (" ", "\t")
            return _UNREAD if not value or folded else value
    return _UNREAD if header == "Version" else None


def _from_importlib(distribution: str, header: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        found = metadata(distribution).get_all(header)
    except PackageNotFoundError:
        return None
    return str(found[0]) if found else None
