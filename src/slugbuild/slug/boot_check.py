"""The opt-in boot check: prove the packed slug's web process answers HTTP.

``compile --boot-check`` (``compile_app(boot_check=...)``) unpacks the slug
just packed, before it is renamed to the output path, starts its ``web``
process exactly as ``slugbuild run`` would (``.profile.d`` sourced, ``bash -c``,
``.release`` config vars under the build's config vars) on 127.0.0.1 and a
free port, and waits for any HTTP response. A process that exits first, or
that has not answered when the timeout ends, fails the build with the last
lines of its output (BOOT_CHECK_FAILED); the slug is then not written. The
process group is always stopped and the unpacked copy removed.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import errors
from ..arguments import positive_seconds
from .archive import SlugArchive
from .run import (
    LEFTOVER_GRACE_SECONDS,
    app_root,
    free_port,
    read_release,
    shorten,
    start_process,
    stop_group,
)

DEFAULT_TIMEOUT_SECONDS = 30.0
OUTPUT_TAIL_LINES = 40
OUTPUT_TAIL_CHARS = 6000
_POLL_SECONDS = 0.2
_SET_BY_THE_CHECK = frozenset({"PORT", "HOST", "DYNO"})
_REQUEST = b"GET / HTTP/1.0\r\nHost: localhost\r\nUser-Agent: slugbuild-boot-check\r\n\r\n"


@dataclass(frozen=True)
class BootResult:
    """What the boot check saw: the first line of the answer and how long it took."""

    status_line: str
    seconds: float


def timeout_of(boot_check: bool | float | None) -> float | None:
    """The timeout in seconds a ``boot_check`` argument asks for; None: no check."""
    if boot_check is None or boot_check is False:
        return None
    if boot_check is True:
        return DEFAULT_TIMEOUT_SECONDS
    return positive_seconds(boot_check, "compile_app", "boot_check")


def check_boot(slug: Path, *, config_vars: Mapping[str, str], timeout: float, workdir: Path,
               reported_as: Path | None = None) -> BootResult:
    """Boot ``slug``'s web process in ``workdir`` (removed afterwards); raise
    BOOT_CHECK_FAILED unless it answers HTTP within ``timeout`` seconds.

    ``reported_as`` is the output path the error message names.
    """
    shown = reported_as or slug
    workdir.mkdir(parents=True, exist_ok=True)
    unpacked = workdir / "slug"
    log_path = workdir / "web.log"
    try:
        SlugArchive(slug).extract(unpacked)
        root = app_root(unpacked.absolute())
        declared = read_release(root)
        command = declared.default_process_types.get("web")
        if command is None:
            raise errors.BOOT_CHECK_FAILED.error(variant="no-web-process", slug=shown)
        port = free_port()
        address = f"127.0.0.1:{port}"
        # The check's own PORT and HOST win, as the platform's do on a dyno.
        config = {k: v for k, v in {**declared.config_vars, **config_vars}.items()
                  if k not in _SET_BY_THE_CHECK}
        with open(log_path, "wb") as log:
            child = start_process(root, "web", command, port, "127.0.0.1", config,
                                  stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            failure, answer, seconds = _wait_for_http(child, port, timeout)
        finally:
            stop_group(child.pid, LEFTOVER_GRACE_SECONDS)
            child.wait()
        if failure is not None:
            variant, values = failure
            raise errors.BOOT_CHECK_FAILED.error(
                variant=variant, output=_tail(log_path) or "(the web process printed nothing)",
                address=address, command=shorten(command), slug=shown, **values)
        return BootResult(answer, seconds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# How the wait failed: the variant of BOOT_CHECK_FAILED and its values.
_Failure = tuple[str, dict[str, Any]]


def _wait_for_http(child: subprocess.Popen[bytes], port: int, timeout: float
                   ) -> tuple[_Failure | None, str, float]:
    """(failure or None, first line of the answer, seconds waited)."""
    started = time.monotonic()
    deadline = started + timeout
    connection: socket.socket | None = None
    received = b""
    try:
        while True:
            code = child.poll()
            if code is not None:
                exited: _Failure = ("killed", {"signal": -code}) if code < 0 else (
                    "exited", {"exit_code": code})
                return exited, "", 0.0
            now = time.monotonic()
            if now >= deadline:
                return ("timed-out", {"seconds": f"{timeout:g}"}), "", 0.0
            if connection is None:
                try:
                    connection = socket.create_connection(("127.0.0.1", port), timeout=1)
                    connection.sendall(_REQUEST)
                    received = b""
                except OSError:
                    connection = _close(connection)
                    time.sleep(_POLL_SECONDS)
                    continue
            try:
                connection.settimeout(min(_POLL_SECONDS * 2, max(deadline - now, 0.01)))
                data = connection.recv(256)
            except socket.timeout:
                continue
            except OSError:
                connection = _close(connection)
                time.sleep(_POLL_SECONDS)
                continue
            if not data:  # closed without a word: not ready yet, try again
                connection = _close(connection)
                time.sleep(_POLL_SECONDS)
                continue
            received += data
            if len(received) < 5 and b"HTTP/".startswith(received):
                continue
            if not received.startswith(b"HTTP/"):
                return ("not-http", {"answer": received[:60]}), "", 0.0
            if b"\n" not in received and len(received) < 200:
                continue
            line = received.split(b"\n", 1)[0].decode("latin-1").strip()
            return None, line, time.monotonic() - started
    finally:
        _close(connection)


def _close(connection: socket.socket | None) -> socket.socket | None:
    """Close ``connection`` (if any); None, the connection it leaves."""
    if connection is not None:
        with contextlib.suppress(OSError):
            connection.close()
    return None


def _tail(log_path: Path) -> str:
    """The last lines the process wrote, bounded in size, after the first
    traceback when that is older: a server that fails to boot often ends with
    its own traceback (gunicorn's HaltServer) below the app's, which names the
    cause."""
    try:
        with open(log_path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 256 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = text.rstrip("\n").splitlines()
    tail = lines[-OUTPUT_TAIL_LINES:]
    first = _first_traceback(lines[:-OUTPUT_TAIL_LINES])
    if first:
        tail = [*first, "...", *lines[-(OUTPUT_TAIL_LINES // 2):]]
    return "\n".join(line[:500] for line in tail)[-OUTPUT_TAIL_CHARS:]


def _first_traceback(lines: list[str]) -> list[str]:
    """The first Python traceback in ``lines``, shortened to its last frames."""
    starts = [i for i, line in enumerate(lines)
              if line.lstrip().startswith("Traceback (most recent call last):")]
    if not starts:
        return []
    start = starts[0]
    for end in range(start + 1, len(lines)):
        text = lines[end]
        if text.strip() and not text.startswith((" ", "\t")) and ":" in text:
            block = lines[start:end + 1]
            return block if len(block) <= 16 else [block[0], "  ...", *block[-14:]]
    return []
