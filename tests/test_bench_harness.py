"""The side-by-side bench harness (benchmarks/) still runs: a tiny run against a stub peer.

The stub stands in for ../shared/heroku-peer: a run-peer.sh that only makes the mirror, and
a "buildpack" whose bin/compile records what it was given (its environment, whether /app is
its own), so these tests check how the harness drives a buildpack, not Heroku's timings.
No figure is asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from .helpers import FIXTURE_APPS, REPO

BENCHMARKS = REPO / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import app_changes  # noqa: E402
import heroku_peer  # noqa: E402
import side_by_side  # noqa: E402

needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                reason="the peer runs each compile in a mount namespace")

_COMPILE = """#!/bin/bash
set -euo pipefail
build="$1"
mkdir -p "$build/.heroku/python/lib" /app/.heroku
ln -nsf "$build/.heroku/python" /app/.heroku/python
echo installed > /app/.heroku/python/lib/marker.py
stat -f -c %T /app > "$build/app-fs"
env > "$build/compile-env"
grep -o 'http://127.0.0.1:[0-9]*' lib/python.sh > "$build/mirror-url"
"""


def _stub_peer(root: Path) -> Path:
    peer = root / "heroku-peer"
    (peer / "buildpack" / "bin").mkdir(parents=True)
    (peer / "buildpack" / "lib").mkdir()
    for part in ("requirements", "vendor"):
        (peer / "buildpack" / part).mkdir()
    (peer / "buildpack" / "lib" / "python.sh").write_text(
        'S3_BASE_URL="https://heroku-buildpack-python.s3.us-east-1.amazonaws.com"\n')
    (peer / "buildpack" / "CHANGELOG.md").write_text("## [v351] - 2026-11-01\n")
    (peer / "buildpack" / "bin" / "compile").write_text(_COMPILE)
    (peer / "run-peer.sh").write_text(
        '#!/bin/bash\nwhile [[ "$1" != --work ]]; do shift; done\n'
        'mkdir -p "$2/mirror" && echo archive > "$2/mirror/python.tar.zst"\n')
    for script in (peer / "run-peer.sh", peer / "buildpack" / "bin" / "compile"):
        script.chmod(0o755)
    return peer


def test_ranges_shape_unpins_and_changed_pin_is_new(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "requirements.txt").write_text("Flask==3.1.3\ngunicorn==27.0.1\n")
    side_by_side.SHAPES["ranges"].derive(app)  # type: ignore[misc]
    assert (app / "requirements.txt").read_text() == "Flask>=3.1,<4\ngunicorn>=27.0,<28\n"
    assert app_changes.extra_requirement_for(app) == "six==1.17.0"
    # The data stack already holds six: its changed build adds a package it lacks.
    assert app_changes.extra_requirement_for(FIXTURE_APPS / "django-data-stack") == \
        "tabulate==0.10.0"
    assert all((FIXTURE_APPS / shape.fixture).is_dir() for shape in side_by_side.SHAPES.values())


def test_without_peer_the_heroku_side_is_skipped_with_a_note(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = side_by_side.run([], ["warm"], 1, None, tmp_path)
    assert "HEROKU_PEER" in results["note"] and "HEROKU_PEER" in capsys.readouterr().out
    results = side_by_side.run([], ["warm"], 1, tmp_path / "nowhere", tmp_path)
    assert "run-peer.sh is missing" in results["note"]


@needs_root
def test_peer_compile_runs_alone_on_a_private_app_dir(tmp_path: Path) -> None:
    peer_dir = _stub_peer(tmp_path)
    app_existed = os.path.lexists("/app")
    with heroku_peer.HerokuPeer(peer_dir, tmp_path / "work", tmp_path / "runtime") as peer:
        peer.prepare(FIXTURE_APPS / "flask-hello")
        build = tmp_path / "build"
        seconds = peer.compile(FIXTURE_APPS / "flask-hello", build, tmp_path / "cache",
                               tmp_path / "compile.log")
        url = (build / "mirror-url").read_text().strip()
        with urllib.request.urlopen(f"{url}/python.tar.zst") as answer:
            assert answer.read() == b"archive\n"
        assert peer.version == "v351"
    assert seconds >= 0
    assert (build / "app.py").is_file()
    assert (build / ".heroku" / "python" / "lib" / "marker.py").is_file()
    assert (build / "app-fs").read_text().strip() == "tmpfs"
    env = dict(line.split("=", 1) for line in (build / "compile-env").read_text().splitlines()
               if "=" in line)
    assert env["PIP_CONFIG_FILE"] == "/dev/null" and env["STACK"] == "heroku-24"
    assert not any(name.startswith(("PYTHON", "VIRTUAL_ENV", "PYTEST")) for name in env)
    # Neither the host's /app nor the served mirror outlive the peer.
    assert os.path.lexists("/app") == app_existed
    assert not os.path.lexists("/app/.heroku/python") or app_existed
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/python.tar.zst", timeout=2)


@needs_root
@pytest.mark.slow
def test_make_bench_side_by_side_runs_end_to_end(tmp_path: Path) -> None:
    peer_dir = _stub_peer(tmp_path)
    output = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "run.py"), "--sections", "side-by-side",
         "--shapes", "pinned-pip", "--runs", "1", "--kinds", "cold", "warm",
         "--output", str(output)],
        env={**os.environ, "HEROKU_PEER": str(peer_dir),
             "SLUGBUILD_BENCH_PEER_CACHE": str(tmp_path / "runtime")},
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(output.read_text())["side_by_side"]
    shape = result["shapes"]["pinned-pip"]
    assert shape["failures"] == {}
    assert set(shape["medians"]) == {"slugbuild", "heroku"}
    assert set(shape["medians"]["slugbuild"]) == set(shape["ratios"]) == {"cold", "warm"}
    assert shape["slug_bytes"]["slugbuild"] > 1_000_000
    assert shape["python_files"]["slugbuild"] > 1000 and shape["python_files"]["heroku"] == 1
    assert [row["tool"] for row in result["scaling"]] == ["slugbuild", "heroku"]
    assert "warm" in done.stdout and "scaling" in done.stdout
    assert shape["slugbuild_stages"]["warm"]["total"] > 0
    # Each build's CPU time beside its wall time (what stays put under load).
    assert set(shape["cpu_medians"]["slugbuild"]) == {"cold", "warm"}
    assert shape["cpu_medians"]["slugbuild"]["cold"] > 0


def test_a_changed_build_asked_for_alone_follows_a_build_of_the_app(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--kinds changed` alone: a cold build (not recorded) primes the cache first,
    else the "changed" build would be a cold one."""
    built: list[tuple[str, str]] = []

    def build(self: side_by_side._Builder, kind: str, app: Path) -> float:
        built.append((kind, app.name))
        return 1.0

    monkeypatch.setattr(side_by_side._Builder, "build", build)
    result = side_by_side.bench_shape(side_by_side.SHAPES["pinned-pip"], ["changed"], 1,
                                      None, tmp_path)
    assert built == [("cold", "app"), ("changed", "changed-app")]
    assert result["samples"]["slugbuild"] == {"changed": [1.0]}
    assert list(result["load"]) == ["changed"]
