"""What a runtime source is: the protocol, its offers, and the prefix it provides.

A runtime source lists the CPython versions it can provide (``available``),
may search beyond that listing for an exact pin (``find_exact``), and puts one
version on disk as a CPython prefix (``provide``). The sources are in
``local.py`` (installations on this machine) and ``download.py`` (verified
archives from an index); ``resolve.py`` makes one object per configured source,
once per build, and asks them in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..log import Reporter


class _VersionNames:
    """``major_minor`` and the interpreter's name, from a ``version`` attribute."""

    version: str

    @property
    def major_minor(self) -> str:
        return ".".join(self.version.split(".")[:2])

    @property
    def python_name(self) -> str:
        return f"python{self.major_minor}"


@dataclass(frozen=True)
class LocalRuntime(_VersionNames):
    """One CPython installation found on this machine."""

    version: str  # "3.12.1"
    prefix: Path
    origin: str  # "pyenv", "SLUGBUILD_PYTHON_PATH", "running interpreter"


@dataclass(frozen=True)
class RuntimeOffer(_VersionNames):
    """One version a source can provide, and what identifies its bytes."""

    version: str  # "3.12.1"
    source: RuntimeSource = field(compare=False, repr=False)
    origin: str  # human-readable: "pyenv (/root/.pyenv/versions/3.12.1)", a URL…
    identity: dict[str, Any] = field(compare=False)  # keys the runtime layer
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)  # for slug.json
    # What the source needs to provide it again (an archive, a local prefix): only
    # the source that made the offer reads it.
    detail: object = field(default=None, compare=False, repr=False)
    # The installed prefix on this machine the layer is copied from, when the source
    # has one (the local source); None for a runtime still to be fetched. Its
    # interpreter can run before the layer exists, and its path must never leak.
    host_prefix: Path | None = field(default=None, compare=False, repr=False)

    @property
    def source_name(self) -> str:
        return self.source.name

    @property
    def short_origin(self) -> str:
        """For the log: ``pyenv``, or the archive URL, without host paths."""
        return str(self.metadata.get("origin", self.origin))


class RuntimeSource(Protocol):
    """Somewhere runtimes come from."""

    name: str  # as --python-source and slug.json name it
    downloads: bool  # needs the network (for the advice when a version is unavailable)
    offline: bool  # told not to use the network (--offline)

    @property
    def index_origin(self) -> str | None:
        """What the source's listing was read from, for the log (None: nothing read)."""
        ...

    def available(self) -> list[RuntimeOffer]:
        """Every version offered; raise SourceUnavailable when the source cannot be read."""
        ...

    def find_exact(self, version: str) -> RuntimeOffer | None:
        """Exactly ``version``, searched beyond ``available`` (a whole release history),
        or None; raise SourceUnavailable when the source cannot be read."""
        ...

    def provide(self, offer: RuntimeOffer, scratch: Path, reporter: Reporter) -> LocalRuntime:
        """A CPython prefix on disk for ``offer`` (may be placed inside ``scratch``)."""
        ...


class SourceUnavailable(Exception):
    """A source could not list its runtimes (e.g. its index is unreachable)."""
