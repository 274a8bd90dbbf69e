"""Stage sources: copy the app into a fresh build directory.

The user's app directory is only ever read. ``.git`` and paths matched by
``.slugignore`` are left out; a symlink leaving the app, or a special file,
stops the build before anything is copied.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import stat
from pathlib import Path

from . import errors

ALWAYS_EXCLUDED = {".git", ".hg", ".svn", "__pycache__"}


class IgnoreRules:
    """gitignore-style patterns (``*``, ``**``, ``?``, leading and trailing ``/``, ``!``)."""

    def __init__(self, lines: list[str]) -> None:
        self.rules: list[tuple[re.Pattern, bool, bool]] = []
        self.sources: list[str] = []
        for raw in lines:
            line = raw.rstrip("\n").rstrip()
            if not line or line.startswith("#"):
                continue
            self.sources.append(line)
            negate = line.startswith("!")
            if negate:
                line = line[1:]
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            anchored = "/" in line
            line = line.lstrip("/")
            self.rules.append((_compile(line, anchored), negate, dir_only))

    @classmethod
    def from_app(cls, app_dir: Path) -> IgnoreRules:
        path = app_dir / ".slugignore"
        if not path.is_file():
            return cls([])
        return cls(path.read_text(errors="replace").splitlines())

    def ignored(self, rel: str, is_dir: bool) -> bool:
        return self.matching_rule(rel, is_dir) is not None

    def matching_rule(self, rel: str, is_dir: bool) -> str | None:
        """The pattern that leaves ``rel`` out, or None when it is kept."""
        result = None
        for (pattern, negate, dir_only), source in zip(self.rules, self.sources):
            if dir_only and not is_dir:
                continue
            if pattern.match(rel):
                result = None if negate else source
        return result

    def excluding_rule(self, rel: str) -> str | None:
        """The pattern that leaves out the file ``rel`` or one of its parent directories."""
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            rule = self.matching_rule("/".join(parts[:depth]), True)
            if rule is not None:
                return rule
        return self.matching_rule(rel, False)


def _compile(pattern: str, anchored: bool) -> re.Pattern:
    parts = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            parts.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            parts.append(".*")
            i += 2
        else:
            char = pattern[i]
            if char == "*":
                parts.append("[^/]*")
            elif char == "?":
                parts.append("[^/]")
            elif char == "[":
                end = pattern.find("]", i)
                if end == -1:
                    parts.append(re.escape(char))
                else:
                    parts.append(fnmatch.translate(pattern[i:end + 1])[4:-3])
                    i = end
            else:
                parts.append(re.escape(char))
            i += 1
    body = "".join(parts)
    prefix = "" if anchored else "(?:.*/)?"
    return re.compile(f"^{prefix}{body}$")


def stage_sources(app_dir: Path, build_dir: Path) -> list[str]:
    """Copy the app into ``build_dir``; return the relative paths left out by .slugignore."""
    app_dir = app_dir.resolve()
    rules = IgnoreRules.from_app(app_dir)
    plan: list[tuple[str, str]] = []  # (kind, rel)
    skipped: list[str] = []
    # onerror: an unreadable directory stops the build (errors.from_os_error) instead
    # of being left out of the slug in silence, as os.walk does by default.
    for dirpath, dirnames, filenames in os.walk(app_dir, onerror=_raise):
        rel_dir = Path(dirpath).relative_to(app_dir)
        keep_dirs = []
        for name in sorted(dirnames):
            rel = (rel_dir / name).as_posix()
            if name in ALWAYS_EXCLUDED:
                continue
            if rules.ignored(rel, True):
                skipped.append(rel + "/")
                continue
            if os.path.islink(Path(dirpath) / name):
                _check_link(app_dir, Path(dirpath) / name)
                plan.append(("link", rel))
                continue
            keep_dirs.append(name)
            plan.append(("dir", rel))
        dirnames[:] = keep_dirs
        for name in sorted(filenames):
            rel = (rel_dir / name).as_posix()
            if name.endswith(".pyc") or rules.ignored(rel, False):
                if not name.endswith(".pyc"):
                    skipped.append(rel)
                continue
            path = Path(dirpath) / name
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                _check_link(app_dir, path)
                plan.append(("link", rel))
            elif stat.S_ISREG(mode):
                plan.append(("file", rel))
            else:
                raise errors.UNSUPPORTED_FILE_TYPE.error(path=rel, kind=_kind(mode))
    build_dir.mkdir(parents=True, exist_ok=True)
    for kind, rel in plan:
        source, target = app_dir / rel, build_dir / rel
        if kind == "dir":
            target.mkdir(exist_ok=True)
        elif kind == "link":
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    return skipped


def check_top_level_links(app_dir: Path) -> None:
    """Refuse a link at the app's top that leaves the app, before anything reads it.

    Detection and version resolution read top-level files (.python-version,
    Pipfile.lock, .buildpacks...) before staging checks every link: a
    `.python-version -> /etc/passwd` must not be read, let alone quoted in an error.
    """
    app_dir = app_dir.resolve()
    rules = IgnoreRules.from_app(app_dir)
    for path in sorted(app_dir.iterdir()):
        if path.name not in ALWAYS_EXCLUDED and path.is_symlink() \
                and not rules.ignored(path.name, path.is_dir()):
            _check_link(app_dir, path)


def check_not_ignored(app_dir: Path, required: list[str]) -> None:
    """Refuse a .slugignore that would leave out a file the build itself needs."""
    rules = IgnoreRules.from_app(app_dir)
    for rel in required:
        pattern = rules.excluding_rule(rel)
        if pattern is not None:
            raise errors.SLUGIGNORE_EXCLUDES_REQUIRED.error(path=rel, pattern=pattern)


def _raise(error: OSError) -> None:
    raise error


def _check_link(app_dir: Path, link: Path) -> None:
    target = os.readlink(link)
    resolved = (link.parent / target).resolve()
    if os.path.isabs(target) or not resolved.is_relative_to(app_dir):
        raise errors.UNSAFE_SYMLINK.error(path=link.relative_to(app_dir), target=target)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device file"
    return "special file"
