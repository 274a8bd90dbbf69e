"""A build tool (hook, buildpack, collectstatic, installer) that starts a process in a
session of its own (``setsid``, a daemon's double fork) does not leave it running:
not when the tool exits, not when the build times out. The process group kill alone
missed it, since ``setsid`` leaves the group."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from slugbuild import errors
from slugbuild.log import Reporter
from slugbuild.proc import build_limits, run_tool
from slugbuild.slug.run import run_slug

from ..helpers import crafted_tar


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, killed but not yet reaped by init, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def gone(pid: int, within: float = 5.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


ESCAPE = {
    # the pid is written once the child is in its own session
    "setsid": "setsid sh -c 'echo $$ > {pids}; exec sleep 300' </dev/null >/dev/null 2>&1 &",
    # setsid --fork: the daemon's parent exits at once, so it is reparented to init
    "double-fork": "setsid --fork sh -c 'echo $$ > {pids}; exec sleep 300' "
                   "</dev/null >/dev/null 2>&1",
}


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="Linux /proc")
@pytest.mark.parametrize("how", sorted(ESCAPE))
def test_an_escaped_process_dies_when_its_tool_exits(tmp_path: Path, how: str) -> None:
    pids = tmp_path / "pids"
    script = ESCAPE[how].format(pids=pids) + "\nwhile [ ! -s {0} ]; do sleep 0.05; done"
    with build_limits(60):
        run_tool(["bash", "-c", script.format(pids)], Reporter(), dict(os.environ))
    pid = int(pids.read_text())
    assert gone(pid), f"the {how} child {pid} outlived its tool"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="Linux /proc")
@pytest.mark.parametrize("how", sorted(ESCAPE))
def test_an_escaped_process_dies_with_a_timed_out_tool(tmp_path: Path, how: str) -> None:
    pids = tmp_path / "pids"
    script = ESCAPE[how].format(pids=pids) + "\nsleep 300"
    with pytest.raises(errors.SlugbuildError) as raised, build_limits(2):
        run_tool(["bash", "-c", script], Reporter(), dict(os.environ))
    assert raised.value.code == errors.BUILD_TIMED_OUT.code
    pid = int(pids.read_text())
    assert gone(pid), f"the {how} child {pid} outlived the build's timeout"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="Linux /proc")
def test_a_slug_process_that_escapes_its_session_stops_with_it(tmp_path: Path) -> None:
    # `run SLUG -- CMD` (and start_slug, the boot check): everything the process started
    # stops when it ends, as everything in a dyno stops with the dyno.
    pids = tmp_path / "pids"
    slug = crafted_tar(tmp_path / "app.tgz", [("./Procfile", None, "web: true\n")])
    command = (ESCAPE["double-fork"].format(pids=pids)
               + f"; while [ ! -s {pids} ]; do sleep 0.05; done")
    assert run_slug(slug, command=command, forward_signals=False) == 0
    pid = int(pids.read_text())
    assert gone(pid), f"the slug's escaped child {pid} outlived `run`"
