"""Release metadata: process types from the app's Procfile."""

from __future__ import annotations

import re
from pathlib import Path

from . import errors

_LINE = re.compile(r"^(?P<name>[^:]*?)\s*:\s*(?P<command>.*)$")
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def parse_procfile(text: str) -> dict[str, str]:
    """Process types in file order; a malformed line raises PROCFILE_MALFORMED."""
    processes: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            _fail(number, raw, "expected `name: command`")
        name, command = match.group("name"), match.group("command").strip()
        if not _NAME.match(name):
            _fail(number, raw, f"{name!r} is not a valid process type name")
        if not command:
            _fail(number, raw, f"process type {name!r} has no command")
        if name in processes:
            _fail(number, raw, f"process type {name!r} is declared twice")
        processes[name] = command
    return processes


def _fail(number: int, raw: str, problem: str) -> None:
    raise errors.PROCFILE_MALFORMED.error(line=number, problem=problem, text=raw.strip()[:200])


def read_procfile(app_dir: Path) -> dict[str, str]:
    """Process types of the app, or {} when it has no Procfile."""
    path = app_dir / "Procfile"
    if not path.is_file():
        return {}
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise errors.PROCFILE_MALFORMED.error(
            line=1, problem="the file is not UTF-8 text", text=""
        ) from None
    return parse_procfile(text)
