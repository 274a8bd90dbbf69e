"""Config vars: what ``--env``, ``--env-file`` and an ENV_DIR give a build or a run.

Parsed and checked before any work (a name no environment can carry, a value
the kernel would refuse, an index URL an installer would crash on, quoting a
piece of its password), and registered as secrets so no log line shows them.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Union

from . import errors, redact

PathLike = Union[str, "os.PathLike[str]"]
_CONFIG_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# One NAME=value environment string may not exceed the kernel's MAX_ARG_STRLEN
# (32 pages); all of them share ARG_MAX (2 MiB) with the tools' arguments.
MAX_CONFIG_VAR_BYTES = 128 * 1024
MAX_CONFIG_TOTAL_BYTES = 1024 * 1024
# Config vars the installers read as index URLs (space-separated lists).
_INDEX_URL_VARS = frozenset({"PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "UV_INDEX_URL",
                             "UV_EXTRA_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX"})




def load_config_vars(
    env: Mapping[str, str] | None = None, env_dir: PathLike | None = None
) -> dict[str, str]:
    """Build config vars: files of ``env_dir`` (Heroku's ENV_DIR), then ``env``.

    Every value is registered as a secret (``redact.register_secrets``), so no
    log line or error message shows it.
    """
    config: dict[str, str] = {}
    if env_dir is not None:
        directory = Path(env_dir)
        if not directory.is_dir():
            raise errors.ENV_DIR_MISSING.error(env_dir=directory)
        try:
            for path in sorted(directory.iterdir()):
                if path.is_file():
                    config[path.name] = path.read_text(errors="replace").rstrip("\n")
        except OSError as exc:
            raise errors.ENV_FILE_UNREADABLE.error(
                path=exc.filename or directory, reason=exc.strerror or exc) from None
    config.update(env or {})
    redact.register_secrets(config.values())
    total = 0
    for name, value in config.items():
        if not _CONFIG_VAR_NAME.match(name):
            raise errors.INVALID_CONFIG_VAR.error(variant="bad-name", value=name)
        if not isinstance(value, str):
            raise errors.INVALID_CONFIG_VAR.error(
                variant="not-a-string", value=name, type=type(value).__name__)
        if "\0" in value:
            raise errors.INVALID_CONFIG_VAR.error(variant="holds-nul", value=name)
        size = len(name) + len(value.encode("utf-8", "surrogateescape")) + 2
        total += size
        if size > MAX_CONFIG_VAR_BYTES:
            raise errors.INVALID_CONFIG_VAR.error(
                variant="too-large", value=name, size=f"{size:,}",
                limit=f"{MAX_CONFIG_VAR_BYTES:,}")
        if name in _INDEX_URL_VARS and not _valid_index_urls(value):
            raise errors.INVALID_CONFIG_VAR.error(variant="bad-index-urls", value=name)
    if total > MAX_CONFIG_TOTAL_BYTES:
        raise errors.INVALID_CONFIG_VAR.error(
            variant="all-too-large", count=len(config), total=f"{total:,}",
            limit=f"{MAX_CONFIG_TOTAL_BYTES:,}")
    return config


def _valid_index_urls(value: str) -> bool:
    """Whether every URL of an index config var parses (an installer would crash on it,
    quoting the piece it choked on: maybe a piece of a password)."""
    for item in value.split():
        url = item.split("=", 1)[1] if "=" in item.split("://", 1)[0] else item  # UV_INDEX
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            return False
        if parts.scheme not in ("http", "https", "file") or \
                (parts.scheme != "file" and not parts.hostname):
            return False
    return True


def parse_env_assignments(assignments: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings (as given to --env) as a dict."""
    result: dict[str, str] = {}
    for number, item in enumerate(assignments, start=1):
        if "=" not in item:
            raise _without_equals(item, number)
        key, value = item.split("=", 1)
        result[key] = value
    redact.register_secrets(result.values())
    return result


def read_env_file(path: PathLike) -> dict[str, str]:
    """``KEY=VALUE`` lines of an env file (``export`` prefixes, quotes, comments allowed)."""
    try:
        if Path(path).is_char_device() or Path(path).is_block_device():  # /dev/zero
            raise OSError("a device, not a file")  # (a pipe, as from <(...), is fine)
        text = Path(path).read_text(errors="replace")
    except (OSError, ValueError) as exc:
        raise errors.ENV_FILE_UNREADABLE.error(
            path=path, reason=getattr(exc, "strerror", None) or exc) from exc
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        if "=" not in line:
            raise _without_equals(line, number, path)
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    redact.register_secrets(values.values())
    return values



def _without_equals(text: str, number: int, path: PathLike | None = None) -> errors.SlugbuildError:
    """The error for an assignment without `=` (on the command line without ``path``).
    The text may be a secret pasted without its name: it is registered as one and
    never echoed (only its length)."""
    redact.register_secrets([text])
    if path is None:
        return errors.INVALID_CONFIG_VAR.error(
            variant="argument-without-equals", number=number, length=len(text))
    return errors.INVALID_CONFIG_VAR.error(
        variant="line-without-equals", number=number, path=path, length=len(text))
