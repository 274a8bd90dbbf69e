"""Stage sources: copy the app into a fresh build directory.

The user's app directory is only ever read. ``.git``, paths matched by
``.slugignore`` and the build's own files (its cache directory and outputs,
when they lie inside the app) are left out; a symlink leaving the app, or a
special file, stops the build before anything is copied. As on Heroku, this
happens before anything else looks at the app: detection and everything after
see the tree without the ignored files.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from . import errors
from .tree import walk_sorted

ALWAYS_EXCLUDED = {".git", ".hg", ".svn", "__pycache__"}


class IgnoreRules:
    """gitignore-style patterns (``*``, ``**``, ``?``, leading and trailing ``/``, ``!``)."""

    def __init__(self, lines: list[str]) -> None:
        self.rules: list[tuple[_Glob, bool, bool]] = []
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
            self.rules.append((_Glob(line, anchored), negate, dir_only))

    @classmethod
    def from_app(cls, app_dir: Path) -> IgnoreRules:
        path = app_dir / ".slugignore"
        if not path.is_file():
            return cls([])
        from .textfiles import read_text_like_pip

        # Saved by a Windows editor (UTF-16 with a BOM, CRLF), it still means its patterns.
        return cls(read_text_like_pip(path).splitlines())

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


# Tokens of a compiled pattern. Each consumes characters as its regex would.
_LITERAL, _ONE, _CLASS, _STAR, _ANY, _GROUP = range(6)
# Above this many unbounded tokens (`*`, `**`, the unanchored prefix) a
# backtracking regex may take exponential time on a long name: such a pattern
# is matched by simulating all its states at once instead (linear in the name).
_MAX_UNBOUNDED_FOR_REGEX = 2


class _Glob:
    """One gitignore-style pattern, matched in time linear in the name's length."""

    def __init__(self, pattern: str, anchored: bool,
                 max_unbounded_for_regex: int = _MAX_UNBOUNDED_FOR_REGEX) -> None:
        # (kind, value): a _LITERAL's character, a _CLASS's compiled class, else None.
        self.tokens: list[tuple[int, str | re.Pattern[str] | None]] = (
            [] if anchored else [(_GROUP, None)])
        regex = [] if anchored else ["(?:.*/)?"]
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                self.tokens.append((_GROUP, None))
                regex.append("(?:.*/)?")
                i += 3
                continue
            if pattern.startswith("**", i):
                self.tokens.append((_ANY, None))
                regex.append(".*")
                i += 2
                continue
            char = pattern[i]
            end = pattern.find("]", i) if char == "[" else -1
            if char == "*":
                self.tokens.append((_STAR, None))
                regex.append("[^/]*")
            elif char == "?":
                self.tokens.append((_ONE, None))
                regex.append("[^/]")
            elif end != -1:
                body = fnmatch.translate(pattern[i:end + 1])[4:-3]
                self.tokens.append((_CLASS, re.compile(body, re.DOTALL)))
                regex.append(body)
                i = end
            else:
                self.tokens.append((_LITERAL, char))
                regex.append(re.escape(char))
            i += 1
        unbounded = sum(kind in (_STAR, _ANY, _GROUP) for kind, _ in self.tokens)
        self.regex = (re.compile("^" + "".join(regex) + "$", re.DOTALL)
                      if unbounded <= max_unbounded_for_regex else None)

    def match(self, name: str) -> bool:
        if self.regex is not None:
            return self.regex.match(name) is not None
        return self._simulate(name)

    def _closure(self, states: set[int]) -> set[int]:
        """States reachable without consuming: `*`, `**` and `**/` may match nothing.

        A `_GROUP` at position p has two states: p (before it) and -p-1 (inside
        it, after some characters and before its `/`)."""
        pending = list(states)
        while pending:
            state = pending.pop()
            if 0 <= state < len(self.tokens) and self.tokens[state][0] in (_STAR, _ANY, _GROUP):
                if state + 1 not in states:
                    states.add(state + 1)
                    pending.append(state + 1)
        return states

    def _simulate(self, name: str) -> bool:
        states = self._closure({0})
        for char in name:
            following: set[int] = set()
            for state in states:
                if state < 0:  # inside a `**/` group: any character, or its closing `/`
                    position = -state - 1
                    following.add(state)
                    if char == "/":
                        following.add(position + 1)
                    continue
                if state == len(self.tokens):
                    continue
                kind, value = self.tokens[state]
                if kind == _LITERAL and char == value or kind == _ONE and char != "/":
                    following.add(state + 1)
                elif isinstance(value, re.Pattern) and value.fullmatch(char):  # a _CLASS
                    following.add(state + 1)
                elif kind == _STAR and char != "/" or kind == _ANY:
                    following.add(state)
                elif kind == _GROUP:
                    following.add(-state - 1)
                    if char == "/":
                        following.add(state + 1)
            if not following:
                return False
            states = self._closure(following)
        return len(self.tokens) in states


# The standard mark of a cache directory (https://bford.info/cachedir/): the
# slugbuild cache has one, and `tar --exclude-caches` skips them too.
CACHEDIR_TAG = "CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"
# What a build writes before renaming it into place (outputs.SlugTarball.write), and
# the probe that checks an output directory is writable (build.check_output_paths).
_PARTIAL_OUTPUT = re.compile(r"^\..+\.\d+\.partial$|^\.slugbuild-probe-")


@dataclass
class Staged:
    """What staging left out: ``.slugignore`` matches, and the build's own files
    (a cache directory, the outputs of this or another build) found in the app."""

    ignored: list[str] = field(default_factory=list)
    build_files: list[str] = field(default_factory=list)


def stage_sources(app_dir: Path, build_dir: Path, leave_out: Iterable[Path] = ()) -> Staged:
    """Copy the app into ``build_dir``, minus .slugignore matches and build files.

    ``leave_out`` are absolute paths never copied whatever .slugignore says
    (the cache directory, the slug and its json, when they are in the app);
    directories tagged as caches and outputs still being written are left out
    too. Sparse files stay sparse where the filesystem allows.
    """
    app_dir = app_dir.resolve()
    rules = IgnoreRules.from_app(app_dir)
    never = {os.path.abspath(path) for path in leave_out}
    plan: list[tuple[str, str]] = []  # (kind, rel)
    staged = Staged()
    # onerror: an unreadable directory stops the build (errors.from_os_error) instead
    # of being left out of the slug in silence, as a walk does by default.
    for directory, dirnames, filenames in walk_sorted(app_dir, on_error=_raise):
        dirpath = str(directory)
        rel_dir = directory.relative_to(app_dir)
        keep_dirs = []
        for name in dirnames:
            rel = (rel_dir / name).as_posix()
            path = os.path.join(dirpath, name)
            if name in ALWAYS_EXCLUDED:
                continue
            if path in never or _is_tagged_cache(path):
                staged.build_files.append(rel + "/")
                continue
            if rules.ignored(rel, True):
                staged.ignored.append(rel + "/")
                continue
            if os.path.islink(path):
                _check_link(app_dir, Path(path))
                plan.append(("link", rel))
                continue
            keep_dirs.append(name)
            plan.append(("dir", rel))
        dirnames[:] = keep_dirs
        for name in filenames:
            rel = (rel_dir / name).as_posix()
            path = os.path.join(dirpath, name)
            if name.endswith(".pyc"):
                continue
            if path in never or _PARTIAL_OUTPUT.match(name):
                staged.build_files.append(rel)
                continue
            if rules.ignored(rel, False):
                staged.ignored.append(rel)
                continue
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                _check_link(app_dir, Path(path))
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
            copy_file(source, target)
    return staged


def _is_tagged_cache(directory: str) -> bool:
    try:
        with open(os.path.join(directory, CACHEDIR_TAG), "rb") as handle:
            return handle.read(len(CACHEDIR_SIGNATURE)) == CACHEDIR_SIGNATURE
    except OSError:
        return False


def copy_file(source: Path, target: Path) -> None:
    """``shutil.copy2``, except that a sparse file's holes stay holes.

    A plain copy writes every zero of a hole: a 3 GiB sparse file in the app
    would take 3 GiB of disk in the build directory.
    """
    info = os.stat(source)
    if info.st_blocks * 512 >= info.st_size or not hasattr(os, "SEEK_DATA"):
        shutil.copy2(source, target)
        return
    with open(source, "rb") as reader, open(target, "wb") as writer:
        offset = 0
        while offset < info.st_size:
            try:
                start = os.lseek(reader.fileno(), offset, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = os.lseek(reader.fileno(), start, os.SEEK_HOLE)
            reader.seek(start)
            writer.seek(start)
            remaining = end - start
            while remaining:
                chunk = reader.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                writer.write(chunk)
                remaining -= len(chunk)
            offset = end
        writer.truncate(info.st_size)
    shutil.copystat(source, target)


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


def _raise(error: OSError) -> NoReturn:
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
