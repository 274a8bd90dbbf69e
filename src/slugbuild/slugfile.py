"""Reading slug tarballs safely: every entry checked before anything is used.

A slug may come from anywhere (a CI artefact, another machine), so ``run``,
``inspect`` and ``publish`` refuse tarballs with absolute paths, ``..``,
links that leave the slug, paths through a symlink entry of the same tarball,
or anything but files, directories and symlinks. ``run`` then extracts with
tarfile's "data" filter where Python has it.
"""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath

from . import errors
from .cache import file_sha256

# Raised by tarfile's extraction filters (Python 3.12+ and security releases).
_FILTER_ERROR = getattr(tarfile, "FilterError", ())


def check_member(member: tarfile.TarInfo) -> None:
    """Raise UNSAFE_SLUG when ``member`` could write or point outside the slug."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise errors.UNSAFE_SLUG.error(member=member.name, problem="its path leaves the slug")
    if not (member.isfile() or member.isdir() or member.issym()):
        raise errors.UNSAFE_SLUG.error(
            member=member.name, problem="only files, directories and symlinks are allowed"
        )
    if member.issym():
        target = PurePosixPath(member.linkname)
        if target.is_absolute() or _net_climb(target.parts) > len(name.parent.parts):
            raise errors.UNSAFE_SLUG.error(
                member=member.name, problem=f"its link target {member.linkname} leaves the slug"
            )


def check_no_entry_below_a_link(members: list[tarfile.TarInfo]) -> None:
    """Refuse an entry whose path goes through a symlink entry of the same tarball.

    Each link on its own may stay inside the slug, yet a chain of them
    (``a/b -> ..``, then ``a/b/c -> ..``, then a file ``a/b/c/x``) writes
    outside it; a slug made by slugbuild never needs a path through a link.
    """
    links = {_normal(m.name) for m in members if m.issym()}
    if not links:
        return
    for member in members:
        parts = PurePosixPath(_normal(member.name)).parts
        for depth in range(1, len(parts)):
            ancestor = "/".join(parts[:depth])
            if ancestor in links:
                raise errors.UNSAFE_SLUG.error(
                    member=member.name,
                    problem=f"its path goes through the symlink {ancestor}")


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
    """A slug tarball whose entries have all been checked."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise errors.SLUG_NOT_FOUND.error(path=self.path)
        try:
            with tarfile.open(self.path, "r:*") as tar:
                self.members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise errors.SLUG_NOT_FOUND.error(path=self.path) from exc
        for member in self.members:
            check_member(member)
        check_no_entry_below_a_link(self.members)
        self._by_name = {_normal(m.name): m for m in self.members}
        self.layout = "heroku" if "app/.profile.d" in self._by_name or (
            "app/Procfile" in self._by_name and "Procfile" not in self._by_name) else "herokuish"
        self.root = "app/" if self.layout == "heroku" else ""

    def names(self) -> list[str]:
        """Entry paths relative to the app root."""
        prefix = self.root
        return [n[len(prefix):] for n in self._by_name if n.startswith(prefix) and n != prefix]

    def read(self, rel: str) -> bytes | None:
        """Content of the file at ``rel`` (relative to the app root), or None."""
        member = self._by_name.get(_normal(self.root + rel))
        if member is None or not member.isfile():
            return None
        with tarfile.open(self.path, "r:*") as tar:
            handle = tar.extractfile(member)
            return handle.read() if handle else None

    def read_many(self, wanted: set[str]) -> dict[str, bytes]:
        """Contents of several files in one pass over the tarball."""
        full = {_normal(self.root + rel): rel for rel in wanted}
        found: dict[str, bytes] = {}
        with tarfile.open(self.path, "r:*") as tar:
            for member in tar:
                rel = full.get(_normal(member.name))
                if rel is not None and member.isfile():
                    handle = tar.extractfile(member)
                    if handle:
                        found[rel] = handle.read()
        return found

    def sha256(self) -> str:
        return file_sha256(self.path)

    def extract(self, target: Path) -> Path:
        """Unpack into ``target``; return the app root inside it."""
        # Every entry was checked above; the "data" filter (where Python has it)
        # checks again as it writes, so extraction never depends on one check.
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        try:
            with tarfile.open(self.path, "r:*") as tar:
                tar.extractall(target, members=self.members, **kwargs)
        except _FILTER_ERROR as exc:
            raise errors.UNSAFE_SLUG.error(member=exc.tarinfo.name, problem=str(exc)) from exc
        return Path(target) / self.root if self.root else Path(target)


def _normal(name: str) -> str:
    text = str(PurePosixPath(name))
    return "" if text == "." else text
