"""Reading slug tarballs safely: every entry checked before anything is used.

A slug may come from anywhere (a CI artefact, another machine), so ``run``,
``inspect`` and ``publish`` refuse tarballs with absolute paths, ``..``,
links that leave the slug, paths through a symlink entry of the same tarball,
or anything but files, directories and symlinks (sparse entries included:
slugbuild never writes them). ``run`` then extracts with tarfile's "data"
filter where Python has it.

Reading is bounded (``SlugLimits``, docs/security.md#limits-and-timeouts): the
number of entries, their total unpacked size and the size of the metadata
files read into memory are capped before anything is unpacked or read, and the
headers tarfile itself would read into memory (long names, pax records) are
capped as they are met.
"""

from __future__ import annotations

import os
import posixpath
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .. import errors
from ..digests import file_sha256

# Raised by tarfile's extraction filters (Python 3.12+ and security releases).
_FILTER_ERROR = getattr(tarfile, "FilterError", ())
# Header entries whose data tarfile reads into memory (GNU long names, pax records).
_HEADER_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                 tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
_MAX_HEADER_DATA = 1 << 20
_LINK = object()  # marks a symlink's own node in check_no_entry_below_a_link's tree
# Longer paths cannot be unpacked on Linux (PATH_MAX) and slugbuild never writes them.
MAX_PATH_BYTES = 4096
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)


def parse_size(text: str, name: str) -> int:
    """``123``, ``64K``, ``1M``, ``4G`` (binary units) as a number of bytes."""
    match = _SIZE.match(text)
    if not match:
        raise errors.INVALID_LIMIT.error(variant="size", name=name, value=text)
    number: int = int(match.group(1)) * 1024 ** " KMGT".index((match.group(2) or " ").upper())
    return number


@dataclass(frozen=True)
class SlugLimits:
    """What a slug from elsewhere may hold before ``run``/``inspect``/``publish`` refuse it.

    Defaults are far above any real slug (Heroku caps compressed slugs at
    500 MB); each is overridable by an environment variable of the same name.
    """

    max_entries: int = 200_000                   # SLUGBUILD_MAX_SLUG_ENTRIES
    max_unpacked_bytes: int = 8 * 1024 ** 3      # SLUGBUILD_MAX_UNPACKED_SIZE
    max_metadata_bytes: int = 1024 ** 2          # SLUGBUILD_MAX_METADATA_SIZE

    @classmethod
    def from_env(cls) -> SlugLimits:
        defaults = cls()
        entries = os.environ.get("SLUGBUILD_MAX_SLUG_ENTRIES")
        if entries is not None and not entries.strip().isdigit():
            raise errors.INVALID_LIMIT.error(variant="count", name="SLUGBUILD_MAX_SLUG_ENTRIES",
                                             value=entries)
        unpacked = os.environ.get("SLUGBUILD_MAX_UNPACKED_SIZE")
        metadata = os.environ.get("SLUGBUILD_MAX_METADATA_SIZE")
        return cls(
            int(entries) if entries is not None else defaults.max_entries,
            parse_size(unpacked, "SLUGBUILD_MAX_UNPACKED_SIZE") if unpacked is not None
            else defaults.max_unpacked_bytes,
            parse_size(metadata, "SLUGBUILD_MAX_METADATA_SIZE") if metadata is not None
            else defaults.max_metadata_bytes,
        )


class _BoundedInfo(tarfile.TarInfo):
    """A TarInfo that refuses, before tarfile reads it, header data over 1 MiB."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:  # tarfile's hook
        if self.type in _HEADER_TYPES and self.size > _MAX_HEADER_DATA:
            raise errors.UNSAFE_SLUG.error(
                variant="header-too-large", member=self.name or "(header)", size=self.size,
                limit=_MAX_HEADER_DATA)
        member: tarfile.TarInfo = super()._proc_member(tarfile_)  # type: ignore[misc]
        return member


def open_slug(path: Path) -> tarfile.TarFile:
    """The slug as a tarfile whose header reads are bounded."""
    return tarfile.open(path, "r:*", tarinfo=_BoundedInfo)


def link_problem(name: str, target: str) -> str | None:
    """How a symlink at ``name`` (relative to the slug root) pointing at ``target``
    leaves the slug (``"link-absolute"`` or ``"link-leaves"``: the variant of
    UNSAFE_SLUG and SYMLINK_LEAVES_SLUG that says so), or None when it stays
    inside. Compile and every reader use it."""
    link = PurePosixPath(target)
    if link.is_absolute():
        return "link-absolute"
    if _net_climb(link.parts) > len(PurePosixPath(name).parent.parts):
        return "link-leaves"
    return None


def check_member(member: tarfile.TarInfo) -> None:
    """Raise UNSAFE_SLUG when ``member`` could write or point outside the slug."""
    if len(member.name.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES or len(
            member.linkname.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        shown = member.name if len(member.name) <= 200 else member.name[:200] + "..."
        raise errors.UNSAFE_SLUG.error(variant="path-too-long", member=shown,
                                       limit=MAX_PATH_BYTES)
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise errors.UNSAFE_SLUG.error(variant="path-leaves", member=member.name)
    if not (member.isfile() or member.isdir() or member.issym()) or member.issparse():
        raise errors.UNSAFE_SLUG.error(variant="entry-type", member=member.name)
    if member.issym():
        problem = link_problem(member.name, member.linkname)
        if problem is not None:
            raise errors.UNSAFE_SLUG.error(variant=problem, member=member.name,
                                           target=member.linkname)


def check_no_entry_below_a_link(members: list[tarfile.TarInfo]) -> None:
    """Refuse an entry whose path goes through a symlink entry of the same tarball.

    Each link on its own may stay inside the slug, yet a chain of them
    (``a/b -> ..``, then ``a/b/c -> ..``, then a file ``a/b/c/x``) writes
    outside it; a slug made by slugbuild never needs a path through a link.
    """
    # The links' paths as a tree of components: each entry's path is walked down
    # it once, in time linear in its length (joining every prefix would be
    # quadratic in a hostile path's depth).
    tree: dict[object, Any] = {}
    for member in members:
        if member.issym():
            node = tree
            for part in PurePosixPath(_normal(member.name)).parts:
                node = node.setdefault(part, {})
            node[_LINK] = True
    if not tree:
        return
    for member in members:
        parts = PurePosixPath(_normal(member.name)).parts
        node = tree
        for depth, part in enumerate(parts[:-1], start=1):
            below = node.get(part)
            if below is None:
                break
            node = below
            if _LINK in node:
                raise errors.UNSAFE_SLUG.error(
                    variant="below-link", member=member.name, link="/".join(parts[:depth]))


def _net_climb(parts: tuple[str, ...]) -> int:
    """How far above its own directory a relative link ever reaches."""
    level = worst = 0
    for part in parts:
        if part == "..":
            level += 1
            worst = max(worst, level)
        elif part not in ("", "."):
            level -= 1
    return worst


class SlugArchive:
    """A slug tarball whose entries have all been checked (and counted)."""

    def __init__(self, path: Path, limits: SlugLimits | None = None) -> None:
        self.path = Path(path)
        self.limits = limits or SlugLimits.from_env()
        if not self.path.is_file():
            raise errors.SLUG_NOT_FOUND.error(path=self.path)
        self.members: list[tarfile.TarInfo] = []
        unpacked = 0
        try:
            with open_slug(self.path) as tar:
                # One header at a time: a limit stops the reading before tarfile
                # decompresses past a huge entry or lists millions of them.
                for member in tar:
                    check_member(member)
                    unpacked += member.size if member.isfile() else 0
                    self._within(len(self.members) + 1, self.limits.max_entries,
                                 "entries", "SLUGBUILD_MAX_SLUG_ENTRIES")
                    self._within(unpacked, self.limits.max_unpacked_bytes,
                                 "unpacked", "SLUGBUILD_MAX_UNPACKED_SIZE")
                    self.members.append(member)
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            raise errors.SLUG_UNREADABLE.error(path=self.path, reason=_reason(exc)) from exc
        check_no_entry_below_a_link(self.members)
        self.unpacked_size = unpacked
        self._by_name: dict[str, tarfile.TarInfo] = {}
        for member in self.members:
            name = _normal(member.name)
            earlier = self._by_name.get(name)
            if earlier is not None and not (earlier.isdir() and member.isdir()):
                # Readers that take the first entry and extractors that keep the last
                # would disagree on what the slug holds (inspect vs run).
                raise errors.UNSAFE_SLUG.error(variant="duplicate", member=member.name)
            self._by_name[name] = member
        self.layout = "heroku" if "app/.profile.d" in self._by_name or (
            "app/Procfile" in self._by_name and "Procfile" not in self._by_name) else "herokuish"
        self.root = "app/" if self.layout == "heroku" else ""

    def _within(self, value: int, limit: int, variant: str, variable: str) -> None:
        if value > limit:
            raise errors.SLUG_LIMIT_EXCEEDED.error(
                variant=variant, path=self.path, limit=limit, variable=variable)

    def names(self) -> list[str]:
        """Entry paths relative to the app root."""
        prefix = self.root
        return [n[len(prefix):] for n in self._by_name if n.startswith(prefix) and n != prefix]

    def read(self, rel: str) -> bytes | None:
        """Content of the file at ``rel`` (relative to the app root), or None."""
        member = self._by_name.get(self._resolved(_normal(self.root + rel)))
        if member is None or not member.isfile():
            return None
        return self.read_many({rel}).get(rel)

    def _resolved(self, name: str) -> str:
        """``name`` with symlink entries of the slug followed (each stays inside it,
        as checked), as ``run`` sees the file once the slug is unpacked."""
        for _ in range(40):  # the kernel's own limit on a chain of links
            member = self._by_name.get(name)
            if member is None or not member.issym():
                return name
            name = _normal(posixpath.normpath(posixpath.join(posixpath.dirname(name),
                                                             member.linkname)))
        return name

    def read_many(self, wanted: set[str], heads: frozenset[str] | set[str] = frozenset()
                  ) -> dict[str, bytes]:
        """Contents of several files in one pass over the tarball.

        A file over the metadata limit is refused; those in ``heads`` (files of
        which only the beginning is needed, such as a METADATA's headers) are
        read up to the limit instead. What is read in all is capped at 64 times it.
        """
        full: dict[str, list[str]] = {}
        for rel in wanted:
            full.setdefault(self._resolved(_normal(self.root + rel)), []).append(rel)
        found: dict[str, bytes] = {}
        limit = self.limits.max_metadata_bytes
        budget = 64 * limit
        try:
            with open_slug(self.path) as tar:
                for member in tar:
                    rels = full.get(_normal(member.name))
                    if rels is None or not member.isfile():
                        continue
                    rel = rels[0]
                    if member.size > limit and rel not in heads:
                        raise errors.SLUG_LIMIT_EXCEEDED.error(
                            variant="metadata-file", path=self.path, file=rel,
                            size=member.size, limit=limit,
                            variable="SLUGBUILD_MAX_METADATA_SIZE")
                    handle = tar.extractfile(member)
                    if handle:
                        found[rel] = handle.read(min(limit, member.size))
                        for alias in rels[1:]:
                            found[alias] = found[rel]
                        budget -= len(found[rel])
                        if budget < 0:
                            raise errors.SLUG_LIMIT_EXCEEDED.error(
                                variant="metadata-total", path=self.path, total=64 * limit,
                                variable="SLUGBUILD_MAX_METADATA_SIZE")
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            raise errors.SLUG_UNREADABLE.error(path=self.path, reason=_reason(exc)) from exc
        return found

    def sha256(self) -> str:
        return file_sha256(self.path)

    def extract(self, target: Path) -> Path:
        """Unpack into ``target``; return the app root inside it."""
        # Every entry was checked above; the "data" filter (where Python has it)
        # checks again as it writes, so extraction never depends on one check.
        kwargs: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        try:
            with open_slug(self.path) as tar:
                tar.extractall(target, members=self.members, **kwargs)
        except _FILTER_ERROR as exc:
            raise errors.UNSAFE_SLUG.error(variant="refused-by-filter", member=exc.tarinfo.name,
                                           reason=exc) from exc
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            raise errors.SLUG_UNREADABLE.error(path=self.path, reason=_reason(exc)) from exc
        return Path(target) / self.root if self.root else Path(target)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or exc.__class__.__name__


def _normal(name: str) -> str:
    text = str(PurePosixPath(name))
    return "" if text == "." else text
