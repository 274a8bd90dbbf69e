"""Processes that left their group: found by an environment cookie and killed.

Shared by the builder (proc.py: build tools) and the slug readers (slug/run.py: a
slug's processes), which must not import the builder.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal

# Every tool runs with this variable set to a value of its own, which its descendants
# inherit: a process that left the tool's process group and session (``setsid``, a
# daemon's double fork) is still found by it and killed when the tool ends (as
# Jenkins' BUILD_ID cookie does). One that clears its environment is not: a tool runs
# with the builder's rights and is not sandboxed (docs/security.md).
COOKIE_VARIABLE = "SLUGBUILD_TOOL_COOKIE"
_PROC = "/proc"


def carries(environment: bytes, marker: bytes) -> bool:
    """Whether ``/proc/PID/environ`` content holds the variable ``marker`` (``NAME=value``)
    as one whole entry: not a value that merely ends with or contains the text (a
    process whose ``LOG=SLUGBUILD_TOOL_COOKIE=…`` quotes another's is not ours)."""
    return marker in environment.split(b"\0")


def kill_marked(cookie: str) -> None:
    """SIGKILL every process of this user whose environment carries ``cookie`` (Linux
    /proc; elsewhere nothing), again until none is left, so one forking as it is
    killed is caught too.

    Only processes owned by the same effective user (root included: a root build
    reads every process's environment, and must not kill another user's process
    that carries the text), and through a pidfd taken before the environment is
    read, so a pid that is reused meanwhile is never signalled."""
    marker = f"{COOKIE_VARIABLE}={cookie}".encode()
    own, uid = os.getpid(), os.geteuid()
    for _ in range(10):
        try:
            pids = [int(name) for name in os.listdir(_PROC) if name.isdigit()]
        except OSError:
            return
        found = False
        for pid in pids:
            if pid != own and _kill_if_marked(pid, uid, marker):
                found = True
        if not found:
            return


def _kill_if_marked(pid: int, uid: int, marker: bytes) -> bool:
    """Kill ``pid`` if it is this user's and carries ``marker``; whether it did."""
    handle = _pidfd(pid)
    if handle == _GONE:
        return False
    try:
        try:
            if os.stat(f"{_PROC}/{pid}").st_uid != uid:
                return False
            with open(f"{_PROC}/{pid}/environ", "rb") as source:
                environment = source.read()
        except OSError:  # gone, a kernel thread
            return False
        if not carries(environment, marker):
            return False
        with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
            if handle is not None:
                # The pidfd names the process the pid named before /proc was read: if
                # that one ended and the pid was reused, this fails, nothing is hit.
                signal.pidfd_send_signal(handle, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        return True
    finally:
        if handle is not None:
            os.close(handle)


_GONE = -1


def _pidfd(pid: int) -> int | None:
    """A pidfd for ``pid`` (Linux 5.3+, Python 3.9+); None where pidfds do not exist
    (then a plain kill), ``_GONE`` when the process has ended (nothing to kill)."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None or not hasattr(signal, "pidfd_send_signal"):
        return None
    try:
        fd: int = opener(pid)
        return fd
    except OSError as error:
        return None if error.errno in (errno.ENOSYS, errno.EPERM) else _GONE
