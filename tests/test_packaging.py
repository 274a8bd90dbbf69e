"""slugbuild as a user installs it: the wheel and the sdist, built from this tree.

The wheel goes into a fresh venv outside the repository (its dependencies
pinned to the versions of the development venv, so the slug it builds can be
compared with the recorded one), compiles a fixture app and boots it; its
bundled buildpack is found and installed with `slugbuild buildpack`. The sdist
carries the tests, their fixtures and the docs, and its tests run from it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from importlib.metadata import requires, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from .helpers import FIXTURE_APPS, REPO, copy_app

pytestmark = pytest.mark.slow


def _uv() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def _run(argv: list[object], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                            timeout=600, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{argv}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist, and the wheel uv builds from that sdist (as pip would from PyPI)."""
    out = tmp_path_factory.mktemp("dist")
    _run([_uv(), "build", "--out-dir", out, REPO], env={**os.environ, "UV_NO_CONFIG": "1"})
    (sdist,) = out.glob("slugbuild-*.tar.gz")
    (wheel,) = out.glob("slugbuild-*.whl")
    return {"sdist": sdist, "wheel": wheel}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, dists: dict[str, Path],
              cache_dir: Path) -> Path:
    """A venv outside the repository with the wheel (and pytest) installed; its bin/."""
    venv = tmp_path_factory.mktemp("elsewhere") / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    # The dependencies at the development venv's versions: pip and uv versions key layers.
    names = [Requirement(r).name for r in requires("slugbuild") or [] if "extra ==" not in r]
    constraints = venv.parent / "constraints.txt"
    constraints.write_text("".join(f"{n}=={version(n)}\n" for n in [*names, "pytest"]
                                   if _installed(n)))
    _run([_uv(), "pip", "install", "--python", venv / "bin" / "python", "-c", constraints,
          dists["wheel"], "pytest"],
         env={**os.environ, "UV_NO_CONFIG": "1", "UV_CACHE_DIR": str(cache_dir / "uv")})
    return venv / "bin"


def _installed(name: str) -> bool:
    try:
        version(name)
    except Exception:  # noqa: BLE001 - not installed here: left unconstrained
        return False
    return True


def test_the_wheel_carries_the_buildpack_and_the_type_marker(dists):
    names = zipfile.ZipFile(dists["wheel"]).namelist()
    for script in ("bin/detect", "bin/compile", "bin/release", "lib/python.sh",
                   "lib/slugbuild_compile.py"):
        assert f"slugbuild/buildpack/python/{script}" in names
    assert "slugbuild/py.typed" in names
    assert not any(n.startswith(("tests/", "fixtures/")) for n in names)


def test_the_sdist_carries_tests_fixtures_and_docs(dists):
    with tarfile.open(dists["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for name in ("tests/conftest.py", "tests/helpers.py", "docs/api.md", "docs/ci.md",
                 "fixtures/apps/flask-hello/requirements.txt", "buildpacks/python/bin/compile",
                 "setup.py", "action.yml"):
        assert name in names, name
    assert not any("__pycache__" in n for n in names)


def test_the_installed_wheel_builds_the_same_slug_and_it_boots(installed, tmp_path, cache_dir):
    app = copy_app(FIXTURE_APPS / "flask-hello", tmp_path / "flask-hello")
    result = _run([installed / "slugbuild", "compile", app, "-o", tmp_path / "slug.tgz",
                   "--cache-dir", cache_dir, "--boot-check", "--json"], cwd=tmp_path)
    built = json.loads(result.stdout)
    recorded = json.loads((REPO / "tests" / "golden" / "slugs.json").read_text())
    assert built["sha256"] == recorded["flask-hello"]["herokuish"]
    # The library it runs is the installed one, not this checkout's.
    where = _run([installed / "python", "-c", "import slugbuild; print(slugbuild.__file__)"],
                 cwd=tmp_path).stdout
    assert not where.startswith(str(REPO)) and "site-packages" in where


def test_the_bundled_buildpack_is_found_and_installed(installed, tmp_path):
    path = Path(_run([installed / "slugbuild", "buildpack", "path"]).stdout.strip())
    assert "site-packages" in str(path) and (path / "bin" / "compile").is_file()
    target = tmp_path / "buildpacks" / "00_python"
    _run([installed / "slugbuild", "buildpack", "install", target])
    # The installed scripts find the venv's slugbuild without SLUGBUILD_PYTHON_BIN.
    env = {k: v for k, v in os.environ.items() if k != "SLUGBUILD_PYTHON_BIN"}
    env["PATH"] = "/usr/bin:/bin"
    detected = _run([target / "bin" / "detect", FIXTURE_APPS / "flask-hello"], env=env)
    assert detected.stdout.strip() == "Python"


def test_the_sdists_own_tests_run_from_it(installed, dists, tmp_path):
    with tarfile.open(dists["sdist"]) as tar:
        tar.extractall(tmp_path, **({"filter": "data"} if hasattr(tarfile, "data_filter")
                                    else {}))
    (root,) = tmp_path.glob("slugbuild-*")
    result = _run([installed / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "tests/test_parsers.py", "tests/slug/test_library_api.py"], cwd=root)
    assert " passed" in result.stdout and "failed" not in result.stdout
