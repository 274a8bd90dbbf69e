"""npm's semver ranges (``engines.node``), read as node-semver reads them.

Heroku's Node.js buildpack resolves ``engines.node`` with node-semver's rules,
so an app's ``"node": "^20.11 || 22.x"`` means here what it means there. Node.js
releases have no prerelease tags, so a prerelease part in a range
(``>=20.0.0-0``, a common "any 20 and later" idiom) is read as its version.

Supported: ``*``/``x``/empty, partial versions (``20``, ``20.11``, ``20.x``),
``=``, ``<``, ``<=``, ``>``, ``>=``, ``~``, ``~>``, ``^``, hyphen ranges
(``18 - 20``), space-separated intersections, ``||`` unions and a leading
``v``. Anything else is refused as not a range (``latest``, ``lts/*``, tags),
as Heroku refuses it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Version = tuple[int, int, int]

_PARTIAL = (r"v?(?P<major>0|[1-9]\d*|[xX*])"
            r"(?:\.(?P<minor>0|[1-9]\d*|[xX*])(?:\.(?P<patch>0|[1-9]\d*|[xX*]))?)?"
            r"(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")
_COMPARATOR = re.compile(rf"^(?P<op><=|>=|<|>|=|~>|~|\^)?{_PARTIAL}$")
_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")
_WILD = {"x", "X", "*"}


class RangeInvalid(ValueError):
    """The text is not a semver range; the message says which part."""


@dataclass(frozen=True)
class Comparator:
    """One bound: ``op`` is ``>=``, ``>``, ``<``, ``<=`` or ``==``."""

    op: str
    version: Version

    def allows(self, version: Version) -> bool:
        if self.op == ">=":
            return version >= self.version
        if self.op == ">":
            return version > self.version
        if self.op == "<":
            return version < self.version
        if self.op == "<=":
            return version <= self.version
        return version == self.version


@dataclass(frozen=True)
class NodeRange:
    """A union of intersections of comparators (an empty intersection allows all)."""

    text: str
    alternatives: tuple[tuple[Comparator, ...], ...]

    def allows(self, version: Version) -> bool:
        return any(all(bound.allows(version) for bound in conjunction)
                   for conjunction in self.alternatives)


def parse_version(text: str) -> Version:
    """``v20.11.1`` or ``20.11.1`` as a tuple (ValueError for anything else)."""
    match = _VERSION.match(text.strip())
    if not match:
        raise ValueError(f"not a version: {text!r}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def format_version(version: Version) -> str:
    return ".".join(map(str, version))


def parse_range(text: str) -> NodeRange:
    """The range ``text`` means; RangeInvalid names the part that is not one."""
    alternatives = []
    for alternative in text.split("||"):
        alternatives.append(_parse_conjunction(alternative.strip()))
    return NodeRange(text.strip(), tuple(alternatives))


def _parse_conjunction(text: str) -> tuple[Comparator, ...]:
    hyphen = re.fullmatch(r"(\S+)\s+-\s+(\S+)", text)
    if hyphen:
        low, high = (_partial(part, part) for part in hyphen.groups())
        return (*_bounds(">=", low), *_bounds("<=", high))
    # node-semver joins an operator and the version after it: ">= 1.2" is ">=1.2".
    words = re.sub(r"(<=|>=|<|>|=|~>|~|\^)\s+", r"\1", text).split()
    bounds: list[Comparator] = []
    for word in words:
        match = _COMPARATOR.match(word)
        if not match:
            raise RangeInvalid(f"{word!r} is not a version or a comparator")
        parts = _partial_parts(match)
        bounds.extend(_bounds(match.group("op") or "=", parts))
    return tuple(bounds)


def _partial(word: str, whole: str) -> tuple[int | None, ...]:
    match = re.fullmatch(_PARTIAL, word)
    if not match:
        raise RangeInvalid(f"{whole!r} is not a version")
    return _partial_parts(match)


def _partial_parts(match: re.Match[str]) -> tuple[int | None, ...]:
    """Major, minor, patch up to the first wildcard or missing part (None after it)."""
    parts: list[int | None] = []
    for name in ("major", "minor", "patch"):
        value = match.group(name)
        if value is None or value in _WILD or (parts and parts[-1] is None):
            parts.append(None)
        else:
            parts.append(int(value))
    return tuple(parts)


def _bounds(op: str, parts: tuple[int | None, ...]) -> list[Comparator]:
    """The comparators one operator and one partial version stand for."""
    major, minor, patch = parts
    if major is None:  # *, x, >=*: everything; <*, >*: nothing
        return [] if op in ("=", ">=", "<=", "~", "~>", "^") else [Comparator("<", (0, 0, 0))]
    low: Version = (major, minor or 0, patch or 0)
    if minor is None:
        next_up: Version = (major + 1, 0, 0)
    elif patch is None:
        next_up = (major, minor + 1, 0)
    else:
        next_up = low
    exact = patch is not None
    if op == "=":
        return [Comparator("==", low)] if exact else [Comparator(">=", low),
                                                     Comparator("<", next_up)]
    if op in ("~", "~>"):
        upper = (major + 1, 0, 0) if minor is None else (major, minor + 1, 0)
        return [Comparator(">=", low), Comparator("<", upper)]
    if op == "^":
        if major > 0 or minor is None:
            upper = (major + 1, 0, 0)
        elif minor > 0 or patch is None:
            upper = (0, minor + 1, 0)
        else:
            upper = (0, 0, patch + 1)
        return [Comparator(">=", low), Comparator("<", upper)]
    if op == ">":
        return [Comparator(">", low)] if exact else [Comparator(">=", next_up)]
    if op == ">=":
        return [Comparator(">=", low)]
    if op == "<":
        return [Comparator("<", low)]
    return [Comparator("<=", low)] if exact else [Comparator("<", next_up)]  # <=
