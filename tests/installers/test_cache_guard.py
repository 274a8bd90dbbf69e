"""installers/cache_guard.py on a directory tree: what a run wrote is found (an edit
in place keeping size and mtime too) and discarded only after package code ran."""

from __future__ import annotations

import os
from pathlib import Path

from slugbuild.installers.built_wheels import from_source
from slugbuild.installers.cache_guard import CacheGuard
from slugbuild.log import Reporter

DISCARDED = "installer cache entries written during a package build were discarded"


def _cache(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "cache"
    unpacked = root / "uv" / "archive-v0" / "abc"
    unpacked.mkdir(parents=True)
    (unpacked / "pkg.py").write_text("VALUE = 1\n")
    (root / "uv" / "wheels-v5").mkdir()
    scratch = root / "tmp" / "t.install.x"
    scratch.mkdir(parents=True)
    return root, scratch


def test_writes_after_a_package_build_are_moved_out_of_the_shared_cache(tmp_path):
    root, scratch = _cache(tmp_path)
    module = root / "uv" / "archive-v0" / "abc" / "pkg.py"
    guard = CacheGuard(root, scratch)
    before = os.stat(module)
    with open(module, "r+b") as handle:
        handle.write(b"VALUE = 2\n")
    os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns))
    (root / "uv" / "wheels-v5" / "planted").write_text("x")
    reporter = Reporter(quiet=True)
    assert guard.settle(True, reporter) == 2
    assert not (root / "uv" / "archive-v0" / "abc").exists()  # the unpacked wheel, whole
    assert not (root / "uv" / "wheels-v5" / "planted").exists()
    assert (root / "uv" / "wheels-v5").is_dir()
    assert [line.strip() for line in reporter.lines if DISCARDED in line] == [
        f"2 {DISCARDED}"]


def test_downloads_of_a_run_that_built_nothing_are_kept(tmp_path):
    root, scratch = _cache(tmp_path)
    guard = CacheGuard(root, scratch)
    (root / "uv" / "archive-v0" / "def").mkdir()
    (root / "uv" / "archive-v0" / "def" / "other.py").write_text("VALUE = 3\n")
    reporter = Reporter(quiet=True)
    assert guard.settle(False, reporter) == 0
    assert (root / "uv" / "archive-v0" / "def" / "other.py").is_file()
    assert not any(DISCARDED in line for line in reporter.lines)


def test_the_empty_buckets_uv_makes_in_a_fresh_cache_are_not_a_build(tmp_path):
    root, scratch = _cache(tmp_path)
    guard = CacheGuard(root, scratch)
    bucket = scratch / "installer-caches" / "uv" / "sdists-v11"
    bucket.mkdir(parents=True)
    (bucket / ".gitignore").write_text("*")
    assert guard.settle(False, Reporter(quiet=True)) == 0
    assert (bucket / ".gitignore").is_file()
    assert not from_source(scratch, tmp_path / "site-packages")


def test_a_built_wheel_counts_as_package_code_though_the_output_did_not_say(tmp_path):
    root, scratch = _cache(tmp_path)
    guard = CacheGuard(root, scratch)
    (root / "built-wheels" / "uv" / "env" / "sdists-v9" / "pypi").mkdir(parents=True)
    (root / "uv" / "archive-v0" / "abc" / "planted.py").write_text("x")
    assert guard.settle(False, Reporter(quiet=True)) == 5
    assert not (root / "uv" / "archive-v0" / "abc").exists()
    assert not (root / "built-wheels" / "uv").exists()
    # The layer still records its build environment (built_wheels.from_source).
    assert from_source(scratch, tmp_path / "site-packages")
