"""``slugbuild run``: start a process type from a slug, the way a dyno would.

A tarball is unpacked (after every entry is checked to stay inside the target,
see archive.py)
into a temporary directory that is removed afterwards; a directory is used as
it is. The process gets HOME set to the app root, PORT, the slug's
``.profile.d/*.sh`` sourced, ``.release``'s config vars as defaults under the
given ones, and the process type's command (``.release``, then the Procfile,
see read_release) run as herokuish and Heroku run it: ``bash -c COMMAND``, so
``a && b``, ``cd dir && cmd``, ``VAR=x cmd``, pipes and ``${PORT:-5000}``
behave as in a shell. The process runs in a process group of its own; signals
sent to slugbuild are forwarded to the whole group, as a dyno manager does,
and whatever is left of the group when the command ends is stopped. A ``web``
process that exits before it ever listened on ``$PORT`` is an error
(WEB_PROCESS_EXITED), not a success.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .. import errors
from ..arguments import (
    PathArg,
    as_path,
    invalid,
    of_type,
    optional_path,
    port_number,
    positive_seconds,
)
from ..process_cookie import COOKIE_VARIABLE, kill_marked
from ..release import ReleaseInfo, slug_release
from ..textfiles import best_effort_decode, decimal
from .archive import SlugArchive, SlugLimits

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)
# Forwarded signals that ask the process to end (SIGHUP reloads gunicorn, but
# ends most processes); SIGUSR1/2 do not.
_STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_KEPT_HOST_VARS = ("PATH", "TERM", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR")


def app_root(directory: Path) -> Path:
    """The app root inside an unpacked slug: ./app for the Heroku layout."""
    nested = directory / "app"
    if not (directory / ".profile.d").exists() and (nested / ".profile.d").exists():
        return nested
    return directory


def read_release(root: Path) -> ReleaseInfo:
    """Process types and config var defaults of an unpacked slug (see slug_release)."""

    limit = SlugLimits.from_env().max_metadata_bytes

    def text(name: str) -> str | None:
        path = root / name
        if not path.is_file():
            return None
        with open(path, "rb") as handle:  # an unpacked slug directory is not checked
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise errors.SLUG_LIMIT_EXCEEDED.error(
                variant="metadata-file-over", path=root, file=name, limit=limit,
                variable="SLUGBUILD_MAX_METADATA_SIZE")
        # The Procfile as the build read it: a BOM (UTF-16 from a Windows editor) honoured.
        return best_effort_decode(data, name) if name == "Procfile" else data.decode(
            "utf-8", "replace")

    return slug_release(text(".release"), text("Procfile"))


@errors.user_errors
def run_slug(
    slug: PathArg,
    process: str = "web",
    *,
    port: int = 5000,
    host: str = "127.0.0.1",
    env: Mapping[str, str] | None = None,
    unpack_to: PathArg | None = None,
    command: str | Sequence[str] | None = None,
    forward_signals: bool | None = None,
) -> int:
    """Run ``process`` from ``slug`` (tarball or directory) to its end; return its exit code.

    ``command`` runs a one-off command instead of a process type (``heroku run``):
    a string is a shell line, a sequence an argv (quoted for the shell). Signals
    sent to this process are forwarded to the process group when
    ``forward_signals`` is true; by default only when called on the main thread,
    the only one Python lets set signal handlers, so a deployer's worker thread
    can call this too and keep its own handlers.
    """
    port = port_number(port, "run_slug")
    if forward_signals is None:
        forward_signals = threading.current_thread() is threading.main_thread()
    slug, unpack_to = _paths("run_slug", slug, unpack_to, process, host)
    directory, cleanup = _unpack(slug, unpack_to)
    try:
        root, name, line, config = _what_to_run("run_slug", directory, process, command, env)
        return _run_process(root, name, line, port, host, config, forward_signals)
    finally:
        # Every way out (a refused slug, a full disk, a signal) removes the unpacked
        # tree, after the process group is gone (_run_process stops it).
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)


#: The process name of one-off commands, as Heroku's one-off dynos (``run.1``).
ONE_OFF = "run"


def _paths(function: str, slug: object, unpack_to: object, process: object,
           host: object) -> tuple[Path, Path | None]:
    of_type(process, str, function, "process", "a process type's name", optional=False)
    of_type(host, str, function, "host", "an address such as '127.0.0.1'", optional=False)
    path = as_path(slug, function, "slug")
    if not path.is_dir() and not path.is_file():
        raise errors.SLUG_NOT_FOUND.error(path=path)
    return path, optional_path(unpack_to, function, "unpack_to")


def _unpack(slug: Path, unpack_to: Path | None,
            work: Path | None = None) -> tuple[Path, Path | None]:
    """The slug's directory, and what to remove afterwards (None: nothing).

    A directory is used as it is; a tarball is checked and unpacked into
    ``unpack_to`` (kept), else into ``work/slug`` or a new temporary directory.
    """
    if slug.is_dir():
        return slug, None
    cleanup: Path | None = None
    try:
        archive = SlugArchive(slug)  # checked (and its limits applied) before unpacking
        if unpack_to is not None:
            directory = unpack_to
            if not directory.exists():
                cleanup = directory  # ours until it is unpacked
            else:
                _check_empty(directory)
            directory.mkdir(parents=True, exist_ok=True)
        elif work is not None:
            directory = cleanup = work / "slug"
        else:
            directory = cleanup = Path(tempfile.mkdtemp(prefix="slugbuild-run-"))
        archive.extract(directory)
    except BaseException:
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        raise
    return directory, None if unpack_to is not None else cleanup


def _check_empty(directory: Path) -> None:
    """Refuse an ``unpack_to`` that holds anything: a slug is never merged into other files."""
    if not directory.is_dir():
        raise errors.UNPACK_TARGET_NOT_EMPTY.error(variant="not-directory", path=directory)
    with os.scandir(directory) as listing:  # unreadable: user_errors maps the OSError
        entry = next(iter(listing), None)
    if entry is not None:
        raise errors.UNPACK_TARGET_NOT_EMPTY.error(path=directory, entry=entry.name)


def _what_to_run(function: str, directory: Path, process: str,
                 command: str | Sequence[str] | None,
                 env: Mapping[str, str] | None) -> tuple[Path, str, str, dict[str, str]]:
    """(app root, process name, command line, config vars) for a process type or a
    one-off ``command``; the slug's ``.release`` config vars under ``env``."""
    root = app_root(directory.absolute())
    declared = read_release(root)
    if env is not None and not (isinstance(env, Mapping) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
        raise invalid(function, "env", env, "is not a mapping of strings to strings",
                      "a dict of config vars, e.g. {'DEBUG': '0'}")
    if command is not None:
        if not isinstance(command, str) and not (
                isinstance(command, Sequence) and all(isinstance(a, str) for a in command)):
            raise invalid(function, "command", command, "is not a command",
                          "a command line (str) or an argv (a sequence of str)")
        line = command if isinstance(command, str) else shlex.join(command)
        if not line.strip():
            raise invalid(function, "command", command, "is empty",
                          "a command line or a non-empty argv")
        name = ONE_OFF
    else:
        types = declared.default_process_types
        if process not in types:
            raise errors.PROCESS_TYPE_UNKNOWN.error(
                process=process, available=", ".join(sorted(types)) or "none"
            )
        name, line = process, types[process]
    return root, name, line, {**declared.config_vars, **(env or {})}


def dyno_env(root: Path, process: str, port: int, host: str,
             config: Mapping[str, str]) -> dict[str, str]:
    """The environment a process starts with: little from the host, the rest as a dyno."""
    env = {k: os.environ[k] for k in _KEPT_HOST_VARS if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({
        "HOME": str(root),
        "PORT": str(port),
        "DYNO": f"{process}.1",
        # gunicorn binds 0.0.0.0:$PORT when PORT is set; a laptop run stays local.
        "GUNICORN_CMD_ARGS": f"--bind {host}:{port}",
        "HOST": host,
    })
    env.update(config)
    return env


# Sources the slug's profile scripts, then runs the command (passed as "$1")
# the way herokuish's procfile-exec does: a fresh `bash -c`, which execs a
# simple command (so the server is the process that gets the signals) and
# runs a compound one (`a && b`, `cd x && y`, pipes) in full.
PROCESS_SCRIPT = (
    'for f in "$HOME"/.profile.d/*.sh; do [ -r "$f" ] && . "$f"; done; '
    'exec bash -c "$1"'
)
# How long a process group has to exit after SIGTERM (Heroku gives dynos 30 s).
STOP_GRACE_SECONDS = 30.0
LEFTOVER_GRACE_SECONDS = 10.0


def shorten(command: str, most: int = 300) -> str:
    """A command as messages show it: one line, at most ``most`` characters."""
    line = " ".join(command.split())
    return line if len(line) <= most else line[:most - 1] + "…"


def process_argv(command: str) -> list[str]:
    """The argv that runs a process type's ``command`` in an unpacked slug."""
    return ["bash", "-c", PROCESS_SCRIPT, "slugbuild-process", command]


# The environment cookie of each process started (process_cookie.COOKIE_VARIABLE), by its group:
# what it started in a session of its own (``setsid``) is stopped with the group, as
# everything in a dyno stops with the dyno.
_COOKIES: dict[int, str] = {}


def start_process(root: Path, process: str, command: str, port: int, host: str,
                  config: Mapping[str, str], **popen: Any) -> subprocess.Popen[bytes]:
    """Start ``command`` as a dyno would, in a new session (its own process group)."""
    cookie = secrets.token_hex(12)
    env = {**dyno_env(root, process, port, host, config), COOKIE_VARIABLE: cookie}
    child = subprocess.Popen(process_argv(command), cwd=root, start_new_session=True,
                             env=env, **popen)
    _COOKIES[child.pid] = cookie
    return child


def group_alive(pgid: int) -> bool:
    """True while any process of the group is still running (zombies do not count)."""
    members = group_members(pgid)
    if members is not None:
        return bool(members)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pgid: int, grace: float, *, terminate: bool = True) -> None:
    """SIGTERM the process group (unless ``terminate`` is False), wait up to
    ``grace`` seconds for it to exit, then SIGKILL what is left, and whatever its
    processes started outside it (``setsid``)."""
    try:
        _stop_group(pgid, grace, terminate)
    finally:
        cookie = _COOKIES.pop(pgid, None)
        if cookie is not None:
            kill_marked(cookie, pgid)


def _stop_group(pgid: int, grace: float, terminate: bool) -> None:
    if not group_alive(pgid):
        return
    if terminate:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on TCP ``port``: read from /proc/net/tcp{,6}
    where it exists (no connection the server would see), else by connecting."""
    inodes = listening_sockets(port)
    if inodes is not None:
        return bool(inodes)
    probe = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    try:
        with socket.create_connection((probe, port), timeout=0.2):
            return True
    except OSError:
        return False


def listening_sockets(port: int) -> set[str] | None:
    """The inodes of the sockets listening on TCP ``port`` (/proc/net/tcp{,6}), or
    None where /proc does not tell."""
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not any(t.exists() for t in tables):
        return None
    wanted, found = f":{port:04X}", set()
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[1].endswith(wanted) and fields[3] == "0A":
                found.add(fields[9])
    return found


def group_listening(pgid: int, port: int, host: str = "127.0.0.1") -> bool:
    """Whether a process of group ``pgid`` itself listens on ``port``: not merely
    something else on the machine (where /proc tells; elsewhere, anything)."""
    inodes = listening_sockets(port)
    if inodes is None:
        return listening(port, host)
    if not inodes:
        return False
    sockets = {f"socket:[{inode}]" for inode in inodes}
    for pid in group_members(pgid) or []:
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for descriptor in descriptors:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{descriptor}") in sockets:
                    return True
    return False


def group_members(pgid: int) -> list[int] | None:
    """The live processes of group ``pgid`` (zombies do not count), from /proc; None
    where /proc cannot be listed."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    members = []
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(name))
    return members


def _run_process(root: Path, process: str, command: str, port: int, host: str,
                 config: Mapping[str, str], forward_signals: bool = True) -> int:
    child: subprocess.Popen[bytes] | None = None
    pending: list[int] = []  # signals that came before the process existed
    previous: dict[signal.Signals, Any] = {}
    signalled = False

    def forward(signum: int, _frame: object) -> None:
        # The child has its own session, so a terminal's Ctrl-C reaches only
        # slugbuild: every signal is passed on to the whole group.
        nonlocal signalled
        signalled = signalled or signum in _STOPPING_SIGNALS
        if child is None:
            pending.append(signum)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signum)

    for sig in FORWARDED_SIGNALS if forward_signals else ():
        previous[sig] = signal.signal(sig, forward)
    try:
        child = start_process(root, process, command, port, host, config)
    except BaseException:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        raise
    for signum in pending:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signum)
    served = process != "web"
    # A PORT config var (--env PORT=...) overrides --port: watch that one.
    watched = decimal(config.get("PORT", ""), 5) or port
    try:
        while True:
            try:
                code = child.wait(timeout=None if served else 0.2)
                break
            except subprocess.TimeoutExpired:
                served = listening(watched, host)
            except InterruptedError:
                continue
    finally:
        stop_group(child.pid, STOP_GRACE_SECONDS if signalled else LEFTOVER_GRACE_SECONDS,
                   terminate=not signalled)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    # Killed by a signal: report it the way a shell does (128 + N).
    code = 128 - code if code < 0 else code
    if not served and not signalled:
        raise errors.WEB_PROCESS_EXITED.error(command=shorten(command), exit_code=code,
                                              port=watched)
    return code


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _finish(child: subprocess.Popen[bytes], work: Path, grace: float) -> None:
    """Stop what is left of ``child``'s process group, reap it, then remove ``work``
    (the unpacked slug and the output file): never the other way round."""
    stop_group(child.pid, grace)
    with contextlib.suppress(ChildProcessError):
        child.wait()
    shutil.rmtree(work, ignore_errors=True)


class SlugProcess:
    """A process started from a slug by ``start_slug``, running beside the caller.

    Its process group is stopped, and its temporary directory (the unpacked
    slug, the output file) removed, by ``stop()``, at the end of a ``with``
    block, when the handle is garbage collected, or when the interpreter
    exits: whichever comes first, and always the process group before the
    directory. ``wait()`` returns when the process ends and then stops whatever
    it left running in its group, as ``slugbuild run`` does.
    """

    def __init__(self, child: subprocess.Popen[bytes], *, process: str, command: str,
                 port: int, host: str, directory: Path, work: Path) -> None:
        self._child = child
        #: The process type (``web``, ...), or ``run`` for a one-off command.
        self.process = process
        #: The command line, run as ``bash -c`` after ``.profile.d`` is sourced.
        self.command = command
        self.port = port
        self.host = host
        #: The app root the process runs in (HOME); gone once the handle is finished.
        self.directory = directory
        self._log_path = work / "output.log"
        self._saved_log: bytes | None = None
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _finish, child, work, LEFTOVER_GRACE_SECONDS)

    @property
    def pid(self) -> int:
        """The process id, also the id of its process group."""
        return self._child.pid

    @property
    def returncode(self) -> int | None:
        """The exit code (128 + N when killed by signal N), or None while it runs."""
        code = self._child.poll()
        return None if code is None else _shell_code(code)

    @property
    def running(self) -> bool:
        return self._child.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to end; return its exit code. Raises
        ``subprocess.TimeoutExpired`` (the process still running) after ``timeout``."""
        code = self._child.wait(timeout=timeout)
        self._finish(LEFTOVER_GRACE_SECONDS)
        return _shell_code(code)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> int:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds; return the
        exit code. Calling it again, or after ``wait()``, only returns the code."""
        grace = positive_seconds(grace, "SlugProcess.stop", "grace") if grace else 0.0
        self._finish(grace)
        return _shell_code(self._child.wait())

    def wait_for_port(self, timeout: float = 30.0) -> None:
        """Return once something listens on ``port``; raise ``web-process-exited``
        when the process ends first, ``slug-process-not-listening`` after ``timeout``."""
        deadline = time.monotonic() + positive_seconds(timeout, "wait_for_port", "timeout")
        while True:
            code = self._child.poll()
            if code is not None:
                raise errors.WEB_PROCESS_EXITED.error(
                    command=shorten(self.command), exit_code=_shell_code(code), port=self.port)
            if group_listening(self.pid, self.port, self.host):
                return
            if time.monotonic() >= deadline:
                raise errors.SLUG_PROCESS_NOT_LISTENING.error(
                    command=shorten(self.command), pid=self.pid, port=self.port,
                    seconds=f"{timeout:g}")
            time.sleep(0.05)

    def logs(self) -> str:
        """Everything the process printed so far (stdout and stderr, in order)."""
        with self._lock:
            if self._saved_log is not None:
                data = self._saved_log
            else:
                try:
                    data = self._log_path.read_bytes()
                except FileNotFoundError:
                    data = b""
        return data.decode("utf-8", "replace")

    def _finish(self, grace: float) -> None:
        with self._lock:
            if not self._finalizer.alive:
                return
            stop_group(self.pid, grace)
            with contextlib.suppress(ChildProcessError):
                self._child.wait()
            try:
                self._saved_log = self._log_path.read_bytes()
            except OSError:
                self._saved_log = b""
            self._finalizer()  # the group is gone: now the directory goes

    def __enter__(self) -> SlugProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.returncode}"
        return (f"<SlugProcess {self.process} pid={self.pid} port={self.port} {state}: "
                f"{shorten(self.command, 60)}>")


def _shell_code(code: int) -> int:
    """A Popen return code as a shell reports it: 128 + N when killed by signal N."""
    return 128 - code if code < 0 else code


@errors.user_errors
def start_slug(
    slug: PathArg,
    process: str = "web",
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    env: Mapping[str, str] | None = None,
    unpack_to: PathArg | None = None,
    command: str | Sequence[str] | None = None,
) -> SlugProcess:
    """Start ``process`` (or a one-off ``command``) from ``slug`` and return at once.

    The process runs as ``run_slug`` runs it (``.profile.d`` sourced, ``bash -c``,
    its own process group, the slug's config vars under ``env``), with stdin
    closed and its output kept for ``SlugProcess.logs()``. ``port`` defaults to
    a free one. No signal handler is touched, so any thread may call this. A
    tarball is unpacked into a private temporary directory (or ``unpack_to``,
    which is kept) that lives as long as the process.
    """
    slug_path, unpack_path = _paths("start_slug", slug, unpack_to, process, host)
    port = free_port() if port is None else port_number(port, "start_slug")
    work = Path(tempfile.mkdtemp(prefix="slugbuild-start-"))
    try:
        directory, _ = _unpack(slug_path, unpack_path, work)
        root, name, line, config = _what_to_run("start_slug", directory, process, command, env)
        if config.get("PORT", "").isdigit():  # a PORT config var wins, as in run_slug
            port = int(config["PORT"])
        with open(work / "output.log", "wb") as log:
            child = start_process(root, name, line, port, host, config,
                                  stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return SlugProcess(child, process=name, command=line, port=port, host=host,
                       directory=root, work=work)
