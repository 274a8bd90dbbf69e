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
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import errors
from ..release import ReleaseInfo, slug_release
from ..textfiles import best_effort_decode
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


def run_slug(
    slug: Path,
    process: str = "web",
    *,
    port: int = 5000,
    host: str = "127.0.0.1",
    env: Mapping[str, str] | None = None,
    unpack_to: Path | None = None,
) -> int:
    """Run ``process`` from ``slug`` (tarball or directory); return its exit code."""
    slug = Path(slug)
    cleanup: Path | None = None
    if not slug.is_dir() and not slug.is_file():
        raise errors.SLUG_NOT_FOUND.error(path=slug)
    try:
        if slug.is_dir():
            directory = slug
        else:
            archive = SlugArchive(slug)  # checked (and its limits applied) before unpacking
            if unpack_to is not None:
                directory = Path(unpack_to)
                if not directory.exists():
                    cleanup = directory  # ours until the process starts
                directory.mkdir(parents=True, exist_ok=True)
            else:
                directory = cleanup = Path(tempfile.mkdtemp(prefix="slugbuild-run-"))
            archive.extract(directory)
            if unpack_to is not None:
                cleanup = None  # --unpack-to keeps what it unpacked
        root = app_root(directory.absolute())
        declared = read_release(root)
        types = declared.default_process_types
        if process not in types:
            raise errors.PROCESS_TYPE_UNKNOWN.error(
                process=process, available=", ".join(sorted(types)) or "none"
            )
        config = {**declared.config_vars, **(env or {})}
        return _run_process(root, process, types[process], port, host, config)
    finally:
        # Every way out (a refused slug, a full disk, a signal) removes the unpacked tree.
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)


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


def start_process(root: Path, process: str, command: str, port: int, host: str,
                  config: Mapping[str, str], **popen: Any) -> subprocess.Popen[bytes]:
    """Start ``command`` as a dyno would, in a new session (its own process group)."""
    return subprocess.Popen(process_argv(command), cwd=root, start_new_session=True,
                            env=dyno_env(root, process, port, host, config), **popen)


def group_alive(pgid: int) -> bool:
    """True while any process of the group is still running (zombies do not count)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        entries = None
    if entries is None:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
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
            return True
    return False


def stop_group(pgid: int, grace: float, *, terminate: bool = True) -> None:
    """SIGTERM the process group (unless ``terminate`` is False), wait up to
    ``grace`` seconds for it to exit, then SIGKILL what is left."""
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
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if any(t.exists() for t in tables):
        wanted = f":{port:04X}"
        for table in tables:
            try:
                lines = table.read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) > 3 and fields[1].endswith(wanted) and fields[3] == "0A":
                    return True
        return False
    probe = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    try:
        with socket.create_connection((probe, port), timeout=0.2):
            return True
    except OSError:
        return False


def _run_process(root: Path, process: str, command: str, port: int, host: str,
                 config: Mapping[str, str]) -> int:
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

    for sig in FORWARDED_SIGNALS:
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
    watched = int(config["PORT"]) if config.get("PORT", "").isdigit() else port
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
