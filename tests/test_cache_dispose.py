"""Scratch deleted off the build's critical path (Cache.dispose), never left behind."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

from slugbuild import cache as cache_module
from slugbuild.cache import Cache


def _fill(directory: Path, count: int = 200) -> None:
    for index in range(count):
        sub = directory / f"d{index % 20}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{index}").write_text("x")


def _gone_within(path: Path, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not os.path.lexists(path):
            return True
        time.sleep(0.05)
    return False


def test_a_disposed_directory_leaves_tmp_at_once_and_is_deleted_in_the_background(tmp_path):
    cache = Cache(tmp_path / "c")
    scratch = cache.scratch_dir("build")
    _fill(scratch)
    cache.dispose(scratch)
    assert not scratch.exists()
    assert list((cache.root / "tmp").iterdir()) == []
    trash = cache.trash_dir()
    assert trash is not None and not trash.is_relative_to(cache.root)
    disposed = list(trash.iterdir())
    assert len(disposed) <= 1
    assert all(_gone_within(entry) for entry in disposed)
    assert _gone_within(trash)  # the cache's trash directory goes once empty
    # The deleter's lease goes with it: only this process's own is left.
    leases = cache.root / "locks" / "leases"
    assert all(_gone_within(lease) for lease in leases.iterdir()
               if lease.name != f"{cache.lease.token}.lease")


def test_trash_whose_deleter_died_is_removed_by_the_next_build(tmp_path):
    """A deleter killed half way (its lease is free) leaves nothing for long: the next
    process that opens the cache removes the entry and the lease."""
    root = tmp_path / "c"
    trash = Cache(root).trash_dir(create=True)
    assert trash is not None
    token, lease, fd = cache_module._new_lease(root)
    entry = trash / f"{token}.abc.build.xyz"
    _fill(entry)
    os.close(fd)  # the deleter is gone
    subprocess.run([sys.executable, "-c",
                    f"from slugbuild.cache import Cache; Cache({str(root)!r})"], check=True)
    assert not entry.exists()
    assert not lease.exists()


def test_trash_being_deleted_is_left_to_its_deleter(tmp_path):
    root = tmp_path / "c"
    trash = Cache(root).trash_dir(create=True)
    assert trash is not None
    token, lease, fd = cache_module._new_lease(root)
    try:
        entry = trash / f"{token}.abc.build.xyz"
        _fill(entry, 10)
        subprocess.run([sys.executable, "-c",
                        f"from slugbuild.cache import Cache; Cache({str(root)!r})"], check=True)
        assert entry.is_dir() and lease.exists()
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def test_without_a_shell_the_directory_is_deleted_in_place(tmp_path, monkeypatch):
    cache = Cache(tmp_path / "c")
    scratch = cache.scratch_dir("build")
    _fill(scratch, 20)

    def no_shell(*args, **kwargs):
        raise FileNotFoundError("sh")

    monkeypatch.setattr(cache_module.subprocess, "run", no_shell)
    cache.dispose(scratch)
    assert not scratch.exists()
    assert list(cache.trash_dir(create=True).iterdir()) == []
    assert [p.name for p in (cache.root / "locks" / "leases").iterdir()] == [
        f"{cache.lease.token}.lease"]


def test_a_planted_trash_directory_is_not_used(tmp_path, monkeypatch):
    """Someone else's directory (or a symlink) where the trash goes: the scratch is
    deleted where it is, never moved into it."""
    monkeypatch.setattr(cache_module.tempfile, "gettempdir", lambda: str(tmp_path / "t"))
    (tmp_path / "t").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "t" / f"slugbuild-trash-{os.getuid()}")
    cache = Cache(tmp_path / "c")
    assert cache.trash_dir(create=True) is None
    scratch = cache.scratch_dir("build")
    _fill(scratch, 20)
    cache.dispose(scratch)
    assert _gone_within(scratch)
    assert list((tmp_path / "elsewhere").iterdir()) == []
