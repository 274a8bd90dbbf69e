"""The kill of escaped processes (process_cookie.py) hits only processes that are
ours: this user's, carrying the cookie as a variable of their own, and the very
process whose environment was read (not one that got its pid later)."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from slugbuild import process_cookie
from slugbuild.process_cookie import COOKIE_VARIABLE, carries, kill_marked

# This run's own cookie (of the length a build's has): kill_marked scans every process
# of the user, so a fixed one would kill another test run's sleepers, or another
# pytest-xdist worker's running these tests at the same time.
COOKIE = secrets.token_hex(12)


@contextmanager
def sleeper(env: dict[str, str], user: int | None = None) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(["/bin/sleep", "60"],
                               env=env, user=user)
    try:
        time.sleep(0.2)  # its environment is in /proc once it runs
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_process_quoting_the_cookie_in_a_value_is_not_killed() -> None:
    quoted = {"PATH": os.environ["PATH"], "LOG": f"{COOKIE_VARIABLE}={COOKIE}",
              "OTHER": f"x{COOKIE_VARIABLE}={COOKIE}"}
    with sleeper(quoted) as bystander, sleeper({COOKIE_VARIABLE: COOKIE}) as ours:
        kill_marked(COOKIE)
        assert ours.wait(timeout=5) == -9
        assert bystander.poll() is None  # only an entry of its own marks a process


def test_carries_matches_whole_entries() -> None:
    marker = f"{COOKIE_VARIABLE}={COOKIE}".encode()
    assert carries(b"A=1\0" + marker + b"\0", marker)
    assert carries(marker, marker)
    assert not carries(b"A=" + marker + b"\0", marker)
    assert not carries(marker + b"0\0", marker)  # a longer cookie is another one


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start another user's process")
def test_another_users_process_is_not_killed_by_a_root_build() -> None:
    # Root reads every process's environment: a process of another user carrying the
    # text (handed over, or guessed from a log) must not be killed by root's build.
    with sleeper({COOKIE_VARIABLE: COOKIE}, user=65534) as foreign:
        kill_marked(COOKIE)
        assert foreign.poll() is None


def test_a_pid_reused_after_the_environment_was_read_is_not_signalled(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The pidfd is taken before /proc is read: the signal goes to that process or to
    # none. Simulated: the process the pidfd names ends before the signal is sent.
    with sleeper({COOKIE_VARIABLE: COOKIE}) as ours, sleeper({"PATH": "/bin"}) as other:
        real_open = process_cookie._pidfd

        def pidfd_of_a_dead_process(pid: int) -> int | None:
            if pid != ours.pid:
                return real_open(pid)
            doomed = subprocess.Popen(["true"])
            handle = real_open(doomed.pid)
            doomed.wait()  # reaped: the pidfd now names a process that is gone
            return handle

        monkeypatch.setattr(process_cookie, "_pidfd", pidfd_of_a_dead_process)
        sent: list[int] = []
        real_kill = os.kill
        monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append(pid) or real_kill(pid, sig))
        process_cookie._kill_if_marked(ours.pid, os.geteuid(),
                                       f"{COOKIE_VARIABLE}={COOKIE}".encode())
        assert ours.poll() is None and other.poll() is None and not sent


def _left(mark: str) -> list[int]:
    """Processes still running whose command line holds ``mark``."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as source:
                    if mark.encode() in source.read():
                        found.append(int(name))
            except OSError:
                pass
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="only root's tools can change their uid")
@pytest.mark.parametrize("how", ["child", "orphaned daemon", "the tool itself"])
def test_a_tool_process_that_changed_uid_is_killed_with_the_tool(how: str) -> None:
    """As root (CI), a hook may drop to another uid (setpriv, setuid, a daemon dropping
    privileges) and leave its session: it still came from the build and must not
    outlive it (review finding 13). It used to escape the owner check."""
    from slugbuild.log import Reporter
    from slugbuild.proc import run_tool

    mark = f"{time.monotonic_ns() % 10**6 + 7}.25"  # sleep's seconds: unique per run
    drop = "setpriv --reuid=65534 --regid=65534 --clear-groups"
    script = {
        "child": f"{drop} setsid sleep {mark} & sleep 0.3",
        "orphaned daemon": f"( {drop} setsid sleep {mark} & ) ; sleep 0.3",
        "the tool itself": f"exec {drop} setsid sh -c 'sleep {mark} & sleep 0.3'",
    }[how]
    try:
        run_tool(["sh", "-c", script], Reporter(quiet=True),
                 {"PATH": os.environ["PATH"]})
        time.sleep(0.2)
        assert _left(mark) == []
    finally:
        for pid in _left(mark):
            os.kill(pid, 9)
