"""Processes that left their group: found by an environment cookie and killed.

Shared by the builder (proc.py: build tools) and the slug readers (slug/run.py: a
slug's processes), which must not import the builder.
"""

from __future__ import annotations

import contextlib
import os
import signal

# Every tool runs with this variable set to a value of its own, which its descendants
# inherit: a process that left the tool's process group and session (``setsid``, a
# daemon's double fork) is still found by it and killed when the tool ends (as
# Jenkins' BUILD_ID cookie does). One that clears its environment is not: a tool runs
# with the builder's rights and is not sandboxed (docs/security.md).
COOKIE_VARIABLE = "SLUGBUILD_TOOL_COOKIE"
_PROC = "/proc"


def kill_marked(cookie: str) -> None:
    """SIGKILL every process of this user whose environment carries ``cookie`` (Linux
    /proc; elsewhere nothing), again until none is left, so one forking as it is
    killed is caught too."""
    marker = f"{COOKIE_VARIABLE}={cookie}".encode()
    own = os.getpid()
    for _ in range(10):
        try:
            pids = [int(name) for name in os.listdir(_PROC) if name.isdigit()]
        except OSError:
            return
        found = False
        for pid in pids:
            if pid == own:
                continue
            try:
                with open(f"{_PROC}/{pid}/environ", "rb") as handle:
                    environment = handle.read()
            except OSError:  # gone, another user's, a kernel thread
                continue
            if marker + b"\0" in environment or environment.endswith(marker):
                found = True
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        if not found:
            return
