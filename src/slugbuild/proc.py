"""Running build tools: a clean environment, output streamed to the log, and limits.

Every tool runs in a process group of its own, under the build's deadline
(``build_limits``); on a timeout, an error or a signal the whole group is
killed, so nothing a build started outlives it.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import os
import secrets
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import errors
from .log import Reporter
from .process_cookie import COOKIE_VARIABLE, kill_marked

# Host variables that change what Python or an installer does. Builds never
# inherit them; the build sets what it needs explicitly.
_DROPPED_PREFIXES = ("PYTHON", "PIP_", "UV_", "VIRTUAL_ENV", "CONDA", "PYENV_VERSION")
# A shell's own bookkeeping: where the user's shell was, not where a tool runs (its
# cwd is the build directory), so never passed on. Without them, collectstatic's
# reuse key (which covers its whole environment) does not change with the directory
# slugbuild was started from.
_SHELL_BOOKKEEPING = frozenset({"PWD", "OLDPWD", "SHLVL", "_"})
TAIL_LINES = 30
# Config vars that would break the build tools if exported (as Heroku's buildpack).
UNEXPORTED_CONFIG_VARS = frozenset({
    "PATH", "GIT_DIR", "CPATH", "CPPATH", "LD_PRELOAD", "LIBRARY_PATH", "LD_LIBRARY_PATH",
    "PYTHONHOME", "PYTHONPATH", "PIP_CONFIG_FILE",
})


def exported_config(config_vars: Mapping[str, str]) -> dict[str, str]:
    """The build config vars that build tools (installer, collectstatic, hooks) see."""
    return {k: v for k, v in config_vars.items() if k not in UNEXPORTED_CONFIG_VARS}


def clean_env(extra: Mapping[str, str] | None = None, path_first: Sequence[Path] = (),
              exports: Mapping[str, str] | None = None,
              host: Mapping[str, str] | None = None) -> dict[str, str]:
    """The host environment minus anything that would steer Python or installers.

    ``exports``: what earlier buildpacks exported (their ``export`` files, and the
    Aptfile's variables), passed by the built-in stages that run after them, as
    Heroku sources them before the next buildpack; ``extra`` goes over them.
    ``host``: the host variables to start from instead of all of them
    (``build_base_env``).
    """
    env = {k: v for k, v in (os.environ if host is None else host).items()
           if not k.startswith(_DROPPED_PREFIXES) and k not in _SHELL_BOOKKEEPING}
    env.update(exports or {})
    env["PYTHONNOUSERSITE"] = "1"
    env.setdefault("LANG", "C.UTF-8")
    if path_first:
        env["PATH"] = os.pathsep.join([*map(str, path_first), env.get("PATH", os.defpath)])
    if extra:
        env.update(extra)
    return env


# What a step that runs the app's code with a fixed environment (collectstatic, whose
# output is cached and shared across apps and runners) takes from the host: the
# builder's home, locale and time zone, and how it reaches the network (certificates,
# proxies). Nothing else of a CI runner's environment (its tokens, its run ids).
BUILD_BASE_HOST = ("HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SSL_CERT_FILE",
                   "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTP_PROXY",
                   "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
BUILD_BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def build_base_env() -> dict[str, str]:
    """Heroku's build environment's fixed base: a standard PATH and the few host
    variables of ``BUILD_BASE_HOST``; a step adds the app's config vars and the
    earlier buildpacks' exports (``clean_env(host=build_base_env())``)."""
    base = {name: os.environ[name] for name in BUILD_BASE_HOST if name in os.environ}
    base["PATH"] = BUILD_BASE_PATH
    return base


class ToolFailed(Exception):
    """A build tool exited non-zero; carries its exit code and the tail of its output."""

    def __init__(self, exit_code: int, tail: str, output: str = "",
                 not_started: str | None = None) -> None:
        super().__init__(f"exit code {exit_code}")
        self.exit_code = exit_code
        self.tail = tail
        self.output = output or tail  # everything it printed, for diagnoses
        self.not_started = not_started  # why it could not be started at all


# --- time limits and process groups ---------------------------------------------
# Heroku stops a build after 15 minutes; so does slugbuild unless told otherwise.
DEFAULT_BUILD_TIMEOUT = 15 * 60
# Output a tool's caller keeps in memory (the log gets all of it), and the
# longest line: a tool printing without end must not grow slugbuild's memory.
MAX_KEPT_OUTPUT = 16 * 1024 * 1024
MAX_LINE = 64 * 1024
# How long output is still read after a tool exits: a process it left in the
# background holding its stdout must not stall the build.
EXIT_GRACE = 2.0


@dataclass
class _Limits:
    """The running build's deadline and the process groups of its running tools."""

    deadline: float | None = None  # time.monotonic() value; None: no limit
    timeout: float | None = None
    groups: set[int] = field(default_factory=set)
    cookies: set[str] = field(default_factory=set)  # of the running tools (kill_marked)
    leaders: dict[str, int] = field(default_factory=dict)  # each cookie's tool's pid
    lock: threading.Lock = field(default_factory=threading.Lock)


_BUILD: contextvars.ContextVar[_Limits | None] = contextvars.ContextVar("build_limits",
                                                                      default=None)


def build_timeout_from_env(value: float | None = None) -> float | None:
    """``value``, else SLUGBUILD_BUILD_TIMEOUT, else 15 minutes; 0 means none."""
    if value is None:
        text = os.environ.get("SLUGBUILD_BUILD_TIMEOUT")
        if text is None or not text.strip():  # unset or empty: the default
            return DEFAULT_BUILD_TIMEOUT
        try:
            value = float(text)
        except ValueError:
            value = -1
        if value < 0 or value != value:  # NaN
            raise errors.INVALID_LIMIT.error(variant="seconds", name="SLUGBUILD_BUILD_TIMEOUT",
                                             value=text)
    if not value >= 0:  # negative, or NaN
        raise errors.INVALID_LIMIT.error(variant="seconds", name="--timeout", value=str(value))
    return value if value and value != float("inf") else None


@contextlib.contextmanager
def build_limits(timeout: float | None) -> Iterator[None]:
    """Within the block, tools stop at the deadline; on any way out of it by an
    exception (an error, a timeout, a signal turned into an exception), every
    tool still running is killed with its whole process group.

    Threads started with a copy of the context (``contextvars.copy_context``)
    share the same deadline and registry.
    """
    limits = _Limits(time.monotonic() + timeout if timeout else None, timeout)
    token = _BUILD.set(limits)
    try:
        yield
    except BaseException:
        kill_running_tools()
        raise
    finally:
        _BUILD.reset(token)


def check_deadline(step: str) -> None:
    """Raise BUILD_TIMED_OUT if the build's deadline has passed (between stages)."""
    limits = _BUILD.get()
    if limits is not None and limits.deadline is not None and time.monotonic() > limits.deadline:
        raise _timed_out(step, limits)


def kill_running_tools() -> None:
    """SIGKILL the process group of every tool the current build is running."""
    limits = _BUILD.get()
    if limits is None:
        return
    with limits.lock:
        groups, cookies = list(limits.groups), list(limits.cookies)
        leaders = dict(limits.leaders)
    for group in groups:
        _kill_group(group)
    for cookie in cookies:
        kill_marked(cookie, leaders.get(cookie))


def _kill_group(group: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)


def _timed_out(step: str, limits: _Limits) -> errors.SlugbuildError:
    return errors.BUILD_TIMED_OUT.error(step=step, limit=_seconds(limits.timeout or 0))


def _seconds(value: float) -> str:
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes} min {seconds} s" if minutes and seconds else (
        f"{minutes} min" if minutes else f"{seconds} s")


def _describe(argv: Sequence[str]) -> str:
    return "`" + " ".join([os.path.basename(argv[0]), *argv[1:3]]) + "`"


def wait_for(process: subprocess.Popen[bytes], step: str) -> int:
    """``process.wait()`` under the build's deadline (its group killed at the deadline);
    for a process started apart, in a session of its own, such as a prefetch."""
    limits = _BUILD.get()
    while True:
        try:
            return process.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            if limits is not None and limits.deadline is not None \
                    and time.monotonic() > limits.deadline:
                _kill_group(process.pid)
                process.wait()
                raise _timed_out(step, limits) from None


def run_streaming(
    argv: Sequence[str | Path],
    env: Mapping[str, str],
    cwd: Path | None,
    outputs: Sequence[Callable[[bytes], None]],
    step: str | None = None,
) -> int:
    """Run ``argv`` in a process group of its own; feed its stdout (and, with two
    ``outputs``, its stderr apart) to ``outputs`` as bytes arrive; its exit code.

    The build's deadline applies (BUILD_TIMED_OUT, the group killed). When the
    tool exits, whatever it left running in its group is killed, and output is
    read for at most EXIT_GRACE seconds more: a process that escaped the group
    while holding the pipe does not stall the build.
    """
    args = [str(a) for a in argv]
    limits = _BUILD.get()
    cookie = secrets.token_hex(12)
    try:
        process = subprocess.Popen(
            args, cwd=str(cwd) if cwd else None, env={**env, COOKIE_VARIABLE: cookie},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if len(outputs) > 1 else subprocess.STDOUT,
            start_new_session=True,
        )
    except (OSError, ValueError) as exc:
        # Not executable, missing, or an environment the kernel refuses (E2BIG):
        # a failed tool as far as the caller goes, with the reason as its output.
        reason = getattr(exc, "strerror", None) or str(exc)
        code = 127 if isinstance(exc, FileNotFoundError) else 126
        raise ToolFailed(code, f"could not start {Path(args[0]).name}: {reason}",
                         not_started=str(reason)) from exc
    group = process.pid
    if limits is not None:
        with limits.lock:
            limits.groups.add(group)
            limits.cookies.add(cookie)
            limits.leaders[cookie] = group
    streams = {process.stdout.fileno(): outputs[0]}  # type: ignore[union-attr]
    if process.stderr is not None:
        streams[process.stderr.fileno()] = outputs[1]
    try:
        with selectors.DefaultSelector() as selector:
            for descriptor in streams:
                selector.register(descriptor, selectors.EVENT_READ)
            exited_at: float | None = None
            while streams or exited_at is None:
                now = time.monotonic()
                if limits is not None and limits.deadline is not None and now > limits.deadline:
                    _kill_group(group)
                    kill_marked(cookie, group)
                    raise _timed_out(step or _describe(args), limits)
                if exited_at is None and process.poll() is not None:
                    exited_at = now
                    _kill_group(group)  # what it left behind in its group, or outside it
                    kill_marked(cookie, group)
                if exited_at is not None and now - exited_at > EXIT_GRACE:
                    break  # something outside the group still holds the pipe
                if not streams:  # it closed its output but runs on
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(timeout=0.2)
                    continue
                for key, _ in selector.select(timeout=0.2):
                    chunk = os.read(key.fd, 65536)
                    if chunk:
                        streams[key.fd](chunk)
                    else:
                        selector.unregister(key.fd)
                        del streams[key.fd]
        return process.wait()
    finally:
        if process.poll() is None:
            _kill_group(group)
            process.wait()
        else:
            _kill_group(group)
        kill_marked(cookie, group)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
        if limits is not None:
            with limits.lock:
                limits.groups.discard(group)
                limits.cookies.discard(cookie)
                limits.leaders.pop(cookie, None)


def run_captured(argv: Sequence[str | Path], env: Mapping[str, str],
                 cwd: Path | None = None, step: str | None = None
                 ) -> subprocess.CompletedProcess[bytes]:
    """Like ``subprocess.run(capture_output=True)`` (bytes), under the build's limits;
    each stream's first MAX_KEPT_OUTPUT bytes are kept."""
    stdout, stderr = bytearray(), bytearray()

    def keeper(buffer: bytearray) -> Callable[[bytes], None]:
        return lambda chunk: buffer.extend(chunk[:max(0, MAX_KEPT_OUTPUT - len(buffer))])

    code = run_streaming(argv, env, cwd, [keeper(stdout), keeper(stderr)], step)
    return subprocess.CompletedProcess([str(a) for a in argv], code, bytes(stdout),
                                       bytes(stderr))


def run_tool(
    argv: Sequence[str | Path],
    reporter: Reporter,
    env: Mapping[str, str],
    cwd: Path | None = None,
    show: bool = True,
    step: str | None = None,
    passthrough: bool = False,
) -> str:
    """Run ``argv``, stream its output indented, raise ToolFailed on failure.

    ``show=False``: the output is only in the log with ``--verbose`` (debug lines);
    ``passthrough``: written as the tool printed it, not indented (a third-party
    buildpack's log, whose ``-----> `` headers are its own).

    Returns the output (stdout and stderr interleaved; its first
    MAX_KEPT_OUTPUT characters, lines cut at MAX_LINE bytes). Runs under the
    build's limits (see ``run_streaming``).
    """
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    lines: list[str] = []
    kept = [0]  # characters of output kept for the return value
    pending = bytearray()

    def emit(line: bytes | bytearray) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        if kept[0] < MAX_KEPT_OUTPUT:
            lines.append(text)
            kept[0] += len(text) + 1
        tail.append(text)
        if not show:
            reporter.debug(text)
        elif passthrough:
            reporter.output(text)
        else:
            reporter.detail(text)

    def feed(chunk: bytes) -> None:
        pending.extend(chunk)
        *complete, rest = pending.split(b"\n")
        with reporter.batched():  # the chunk's lines reach the log in one write
            for line in complete:
                emit(line)
            while len(rest) > MAX_LINE:  # a line without end must not grow memory either
                emit(bytes(rest[:MAX_LINE]))
                rest = rest[MAX_LINE:]
        pending[:] = rest

    exit_code = run_streaming(argv, env, cwd, [feed], step)
    if pending:
        emit(bytes(pending))
    if exit_code != 0:
        raise ToolFailed(exit_code, "\n".join(tail), "\n".join(lines))
    return "\n".join(lines)
