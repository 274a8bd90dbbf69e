"""Running build tools: a clean environment and output streamed to the log."""

from __future__ import annotations

import collections
import contextlib
import contextvars
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from .log import Reporter

# Host variables that change what Python or an installer does. Builds never
# inherit them; the build sets what it needs explicitly.
_DROPPED_PREFIXES = ("PYTHON", "PIP_", "UV_", "VIRTUAL_ENV", "CONDA", "PYENV_VERSION")
TAIL_LINES = 30
# Config vars that would break the build tools if exported (as Heroku's buildpack).
UNEXPORTED_CONFIG_VARS = frozenset({
    "PATH", "GIT_DIR", "CPATH", "CPPATH", "LD_PRELOAD", "LIBRARY_PATH", "LD_LIBRARY_PATH",
    "PYTHONHOME", "PYTHONPATH", "PIP_CONFIG_FILE",
})


def exported_config(config_vars: Mapping[str, str]) -> dict[str, str]:
    """The build config vars that build tools (installer, collectstatic, hooks) see."""
    return {k: v for k, v in config_vars.items() if k not in UNEXPORTED_CONFIG_VARS}


# Variables earlier buildpacks exported (their `export` files), for the build
# tools run while the built-in Python stages run after them.
_BUILDPACK_EXPORTS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "buildpack_exports", default=None)


@contextlib.contextmanager
def buildpack_exports(variables: Mapping[str, str]) -> Iterator[None]:
    """Make ``variables`` part of every clean_env() inside the block."""
    token = _BUILDPACK_EXPORTS.set(dict(variables))
    try:
        yield
    finally:
        _BUILDPACK_EXPORTS.reset(token)


def clean_env(extra: Mapping[str, str] | None = None, path_first: Sequence[Path] = ()) -> dict:
    """The host environment minus anything that would steer Python or installers.

    Inside ``buildpack_exports`` the earlier buildpacks' exports are added.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_PREFIXES)}
    env.update(_BUILDPACK_EXPORTS.get() or {})
    env["PYTHONNOUSERSITE"] = "1"
    env.setdefault("LANG", "C.UTF-8")
    if path_first:
        env["PATH"] = os.pathsep.join([*map(str, path_first), env.get("PATH", os.defpath)])
    if extra:
        env.update(extra)
    return env


class ToolFailed(Exception):
    """A build tool exited non-zero; carries its exit code and the tail of its output."""

    def __init__(self, exit_code: int, tail: str, not_started: str | None = None) -> None:
        super().__init__(f"exit code {exit_code}")
        self.exit_code = exit_code
        self.tail = tail
        self.not_started = not_started  # why it could not be started at all


def run_tool(
    argv: Sequence[str | Path],
    reporter: Reporter,
    env: Mapping[str, str],
    cwd: Path | None = None,
    show: bool = True,
) -> str:
    """Run ``argv``, stream its output indented, raise ToolFailed on failure.

    Returns the whole output (stdout and stderr interleaved).
    """
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    lines: list[str] = []
    try:
        process = subprocess.Popen(
            [str(a) for a in argv],
            cwd=str(cwd) if cwd else None,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except (OSError, ValueError) as exc:
        # Not executable, missing, or an environment the kernel refuses (E2BIG):
        # a failed tool as far as the caller goes, with the reason as its output.
        reason = getattr(exc, "strerror", None) or str(exc)
        code = 127 if isinstance(exc, FileNotFoundError) else 126
        raise ToolFailed(code, f"could not start {Path(str(argv[0])).name}: {reason}",
                         not_started=str(reason)) from exc
    with process:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            tail.append(line)
            if show:
                reporter.detail(line)
        exit_code = process.wait()
    if exit_code != 0:
        raise ToolFailed(exit_code, "\n".join(tail))
    return "\n".join(lines)
