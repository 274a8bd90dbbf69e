"""Checking the arguments of the public functions: one error for a bad one.

A library caller who passes a wrong value (an int where a path goes, a layout
that does not exist) gets ``invalid-argument`` (``InvalidArgumentError``, an
``InputError`` and a ``ValueError``) naming the function and the argument,
never a ``TypeError`` from deep inside the build.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Union

from . import errors

#: What every public function takes where a path goes.
PathArg = Union[str, "os.PathLike[str]"]


def invalid(function: str, argument: str, value: object, problem: str,
            expected: str) -> errors.SlugbuildError:
    """The ``invalid-argument`` error for ``function(argument=value)``."""
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:79] + "…"
    return errors.INVALID_ARGUMENT.error(function=function, argument=argument, value=shown,
                                         problem=problem, expected=expected)


def as_path(value: object, function: str, argument: str) -> Path:
    """``value`` (a str or an os.PathLike of str) as a Path; anything else is refused."""
    if isinstance(value, Path):
        return value
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if isinstance(text, str) and text:
            return Path(text)
    raise invalid(function, argument, value, "is not a path",
                  "a non-empty str or os.PathLike (e.g. pathlib.Path)")


def optional_path(value: object, function: str, argument: str) -> Path | None:
    """As ``as_path``, with None passed through."""
    return None if value is None else as_path(value, function, argument)


def one_of(value: object, choices: Iterable[str], function: str, argument: str) -> str:
    """``value`` when it is one of ``choices``."""
    allowed = sorted(choices)
    if isinstance(value, str) and value in allowed:
        return value
    raise invalid(function, argument, value, "is not allowed",
                  "one of " + ", ".join(repr(c) for c in allowed))


def port_number(value: object, function: str, argument: str = "port") -> int:
    """A TCP port, 1-65535."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return value
    raise invalid(function, argument, value, "is not a TCP port", "an int from 1 to 65535")


def positive_seconds(value: object, function: str, argument: str) -> float:
    """A number of seconds above 0."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    raise invalid(function, argument, value, "is not a number of seconds above 0",
                  "a positive int or float")


def buildpack_list(value: object, function: str, argument: str) -> list[str] | None:
    """Buildpack references (paths, git URLs, names) as strings; one alone is a list of one."""
    if value is None:
        return None
    items = [value] if isinstance(value, (str, os.PathLike)) else value
    if not isinstance(items, Iterable):
        raise invalid(function, argument, value, "is not a list of buildpacks",
                      "a sequence of paths, git URLs or names (str or os.PathLike)")
    listed = []
    for item in items:
        text = os.fspath(item) if isinstance(item, (str, os.PathLike)) else None
        if not isinstance(text, str) or not text:
            raise invalid(function, argument, value, f"holds {item!r}, not a buildpack",
                          "a sequence of paths, git URLs or names (str or os.PathLike)")
        listed.append(text)
    return listed


def of_type(value: object, types: type | tuple[type, ...], function: str, argument: str,
            expected: str, *, optional: bool = True) -> None:
    """Refuse ``value`` unless it is an instance of ``types`` (or None when
    ``optional``); a bool is no number here."""
    if value is None and optional:
        return
    wanted = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in wanted:
        raise invalid(function, argument, value, "has the wrong type", expected)
    if not isinstance(value, wanted):
        raise invalid(function, argument, value, "has the wrong type", expected)


# What "no limit" is for a socket: a timeout above the platform's time_t range (inf,
# 1e10) is an OverflowError where the socket is made.
NO_REQUEST_LIMIT = 1e6


def request_timeout(value: object) -> float:
    """``--registry-timeout`` checked: seconds above 0, or 0 for no limit (as
    ``--timeout``); negative or NaN is ``invalid-limit`` (requests raised ValueError),
    and a limit past NO_REQUEST_LIMIT is that one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise errors.INVALID_LIMIT.error(variant="seconds", name="--registry-timeout",
                                         value=str(value))
    return min(float(value) or NO_REQUEST_LIMIT, NO_REQUEST_LIMIT)
