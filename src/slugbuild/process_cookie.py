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


def kill_marked(cookie: str, leader: int | None = None) -> None:
    """SIGKILL every process the tool whose environment carries ``cookie`` started
    (Linux /proc; elsewhere nothing), again until none is left, so one forking as it
    is killed is caught too. ``leader``: the tool's own pid.

    A process of this effective user carrying the cookie is the tool's. One of
    another user (root reads every process's environment; a tool running as root
    may drop to another uid: ``setuid``, ``setpriv``, a daemon dropping privileges)
    is the tool's when it still descends from it (``_descends``): through processes
    carrying the cookie, to the tool itself, to a carrier of this user, or, orphaned,
    to an ancestor of the builder (where the kernel moves orphans: pid 1 or a
    subreaper above it). A process of another user started apart from the build,
    carrying the text (handed over, or copied from a log), is not. Every signal goes
    through a pidfd taken before the environment is read, so a pid that is reused
    meanwhile is never signalled."""
    marker = f"{COOKIE_VARIABLE}={cookie}".encode()
    own, uid = os.getpid(), os.geteuid()
    above = _ancestors(own)
    for _ in range(10):
        try:
            pids = [int(name) for name in os.listdir(_PROC) if name.isdigit()]
        except OSError:
            return
        found = False
        for pid in pids:
            if pid != own and _kill_if_marked(pid, uid, marker, leader, above):
                found = True
        if not found:
            return


def _kill_if_marked(pid: int, uid: int, marker: bytes, leader: int | None = None,
                    above: frozenset[int] = frozenset()) -> bool:
    """Kill ``pid`` if it is the tool's (``kill_marked``); whether it did."""
    handle = _pidfd(pid)
    if handle == _GONE:
        return False
    try:
        try:
            owner = os.stat(f"{_PROC}/{pid}").st_uid
            with open(f"{_PROC}/{pid}/environ", "rb") as source:
                environment = source.read()
        except OSError:  # gone, a kernel thread
            return False
        if not carries(environment, marker):
            return False
        if owner != uid and not _descends(pid, uid, marker, leader, above):
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


def _descends(pid: int, uid: int, marker: bytes, leader: int | None,
              above: frozenset[int]) -> bool:
    """Whether ``pid`` (another user's, carrying the marker) came from the tool: its
    parents, each carrying the marker, lead to the tool (``leader``), to a carrier
    owned by ``uid``, or to an ancestor of the builder (``above``: it was orphaned)."""
    parent = _parent(pid)
    for _ in range(4096):
        if parent is None or parent == 0:
            return False
        if parent == leader or parent in above:
            return True
        try:
            owner = os.stat(f"{_PROC}/{parent}").st_uid
            with open(f"{_PROC}/{parent}/environ", "rb") as source:
                environment = source.read()
        except OSError:
            return False
        if not carries(environment, marker):
            return False  # started apart from the build (its parent is not the tool's)
        if owner == uid:
            return True
        parent = _parent(parent)
    return False


def _parent(pid: int) -> int | None:
    """``pid``'s parent (field 4 of /proc/PID/stat, after the command's parentheses)."""
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as source:
            text = source.read()
        return int(text[text.rindex(b")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _ancestors(pid: int) -> frozenset[int]:
    """The builder's ancestors (not itself): where the kernel reparents an orphan of a
    tool (pid 1, or a subreaper above the builder)."""
    found: set[int] = set()
    parent = _parent(pid)
    while parent and parent not in found:
        found.add(parent)
        parent = _parent(parent)
    return frozenset(found)


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
