"""buildpacks/python driven exactly as herokuish drives a buildpack.

bin/detect BUILD_DIR, bin/compile BUILD_DIR CACHE_DIR ENV_DIR and
bin/release BUILD_DIR CACHE_DIR run as subprocesses, with slugbuild found
through SLUGBUILD_PYTHON_BIN.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..helpers import REPO

BUILDPACK = REPO / "buildpacks" / "python"
SCRIPTS = ("detect", "compile", "release")
PROCFILE = "web: python -m http.server $PORT --bind 127.0.0.1\n"


def run_bin(script: str, *args: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "SLUGBUILD_PYTHON_BIN": sys.executable}
    return subprocess.run(
        [str(BUILDPACK / "bin" / script), *map(str, args)],
        capture_output=True, text=True, env=env, timeout=timeout,
    )


def make_app(path: Path, requirements: str) -> Path:
    path.mkdir(parents=True)
    (path / "requirements.txt").write_text(requirements)
    (path / ".python-version").write_text("3.12\n")
    (path / "Procfile").write_text(PROCFILE)
    return path


@pytest.fixture
def env_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "env"
    directory.mkdir()
    (directory / "FOO").write_text("bar")
    return directory


def test_scripts_follow_the_buildpack_contract() -> None:
    for name in SCRIPTS:
        script = BUILDPACK / "bin" / name
        assert os.access(script, os.X_OK), f"bin/{name} is not executable"
        lines = script.read_text().splitlines()
        assert lines[0] == "#!/usr/bin/env bash"
        assert "set -euo pipefail" in lines


def test_detect_rejects_an_empty_dir(tmp_path: Path) -> None:
    result = run_bin("detect", tmp_path)
    assert result.returncode == 1
    assert result.stdout.strip() == ""


def test_detect_accepts_a_requirements_txt(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("six\n")
    result = run_bin("detect", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Python"


def test_detect_says_when_slugbuild_cannot_be_found(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("six\n")
    env = {**os.environ, "SLUGBUILD_PYTHON_BIN": str(tmp_path / "no-such-python")}
    result = subprocess.run([str(BUILDPACK / "bin" / "detect"), str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "SLUGBUILD_PYTHON_BIN" in result.stderr


def test_release_without_a_compiled_app(tmp_path: Path) -> None:
    result = run_bin("release", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "--- {}\n"


@pytest.mark.slow
def test_compile_builds_in_place_and_release_reports_web(
    tmp_path: Path, buildpack_cache_dir: Path, env_dir: Path
) -> None:
    app = make_app(tmp_path / "app", "six==1.17.0\n")
    build = tmp_path / "build"
    shutil.copytree(app, build)
    inode = build.stat().st_ino

    result = run_bin("compile", build, buildpack_cache_dir, env_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "-----> " in result.stdout  # the build log is on stdout, for herokuish

    assert build.stat().st_ino == inode  # the same directory, filled in place
    python = build / ".heroku" / "python" / "bin" / "python3.12"
    assert python.is_file()
    assert (build / ".profile.d" / "python.sh").is_file()
    assert (build / "requirements.txt").read_text() == "six==1.17.0\n"
    assert (build / "Procfile").read_text() == PROCFILE
    site_packages = build / ".heroku" / "python" / "lib" / "python3.12" / "site-packages"
    assert (site_packages / "six.py").is_file()
    assert not list(tmp_path.glob(".slugbuild-*")), "scratch left beside BUILD_DIR"

    clean = subprocess.run(
        ["env", "-i", f"PATH={os.environ['PATH']}", str(python), "-c",
         "import six; print(six.__file__)"],
        capture_output=True, text=True, timeout=60,
    )
    assert clean.returncode == 0, clean.stderr
    assert Path(clean.stdout.strip()).resolve() == (site_packages / "six.py").resolve()

    release = run_bin("release", build, buildpack_cache_dir)
    assert release.returncode == 0, release.stderr
    assert release.stdout.startswith("---\n")
    assert "default_process_types:" in release.stdout
    assert "  web: " in release.stdout
    assert "http.server" in release.stdout

    # herokuish: `bin/release BUILD_DIR CACHE_DIR > BUILD_DIR/.release` empties
    # the file before bin/release reads it; the process types must survive.
    herokuish = subprocess.run(
        ["bash", "-c", '"$0" "$1" "$2" > "$1/.release"',
         str(BUILDPACK / "bin" / "release"), str(build), str(buildpack_cache_dir)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "SLUGBUILD_PYTHON_BIN": sys.executable},
    )
    assert herokuish.returncode == 0, herokuish.stderr
    assert (build / ".release").read_text() == release.stdout


@pytest.mark.slow
def test_failed_compile_leaves_build_dir_untouched(
    tmp_path: Path, buildpack_cache_dir: Path, env_dir: Path
) -> None:
    requirements = "slugbuild-no-such-package-xyz==1.0\n"
    build = make_app(tmp_path / "build", requirements)
    before = sorted(p.name for p in build.iterdir())

    result = run_bin("compile", build, buildpack_cache_dir, env_dir)
    assert result.returncode != 0
    assert "Error [" in result.stdout
    assert (build / "requirements.txt").read_text() == requirements
    assert not (build / ".heroku").exists()
    assert sorted(p.name for p in build.iterdir()) == before
    assert not list(tmp_path.glob(".slugbuild-*")), "scratch left beside BUILD_DIR"
