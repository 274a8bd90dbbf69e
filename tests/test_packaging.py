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
import yaml
from packaging.requirements import Requirement

from .helpers import FIXTURE_APPS, REPO, copy_app

GOLDEN = REPO / "tests" / "golden" / "slugs.json"

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
    _run([sys.executable, "-m", "venv", venv])  # with pip: the action's install step uses it
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
    assert built["sha256"] == _golden("flask-hello")
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


def _unpacked(sdist: Path, target: Path) -> Path:
    with tarfile.open(sdist) as tar:
        tar.extractall(target, **({"filter": "data"} if hasattr(tarfile, "data_filter")
                                  else {}))
    (root,) = target.glob("slugbuild-*")
    return root


def test_the_sdists_own_tests_run_from_it(installed, dists, tmp_path):
    root = _unpacked(dists["sdist"], tmp_path)
    result = _run([installed / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "tests/test_parsers.py", "tests/test_web_processes.py"], cwd=root)
    assert " passed" in result.stdout and "failed" not in result.stdout


def _golden(name: str) -> str:
    sha256: str = json.loads(GOLDEN.read_text())[name]["herokuish"]
    return sha256


def test_the_shell_runner_recipe_of_the_docs(installed, tmp_path, cache_dir):
    text = (REPO / "docs" / "ci.md").read_text().split("## A plain shell runner", 1)[1]
    script = tmp_path / "ci-slug.sh"
    script.write_text(text.split("```sh\n", 1)[1].split("```", 1)[0])
    app = copy_app(FIXTURE_APPS / "flask-hello", tmp_path / "app")
    # Run in the app with the defaults (APP_DIR=., OUTPUT=slug.tgz), so that anything the
    # recipe wrote into the app during the build would change the slug. The venv it keeps
    # between jobs: here the one the wheel was installed in.
    env = {k: v for k, v in os.environ.items() if k not in ("APP_DIR", "OUTPUT")}
    env.update({"SLUGBUILD_VENV": str(installed.parent), "SLUGBUILD_CACHE_DIR": str(cache_dir)})
    result = _run(["bash", script], env=env, cwd=app)
    assert result.stdout.strip() == f"slug: {app / 'slug.tgz'} {_golden('flask-hello')}"


def test_the_github_action_installs_and_compiles(installed, dists, tmp_path, cache_dir):
    """action.yml's own steps, run as a runner would (bash, GITHUB_OUTPUT), the
    actions/setup-python and actions/cache steps played by the venv and the cache;
    the action's checkout is the unpacked sdist (pip builds in the tree it is given)."""
    checkout = _unpacked(dists["sdist"], tmp_path / "action")
    action = yaml.safe_load((checkout / "action.yml").read_text())
    app = copy_app(FIXTURE_APPS / "flask-hello", tmp_path / "app")
    inputs = {name: spec.get("default", "") for name, spec in action["inputs"].items()}
    # The workspace is the app, as after actions/checkout; app-dir and output as defaulted.
    inputs.update({"cache-dir": str(cache_dir), "args": "--max-slug-size 300MB --timeout 600"})
    outputs = tmp_path / "github-output"
    outputs.touch()
    env = {**os.environ, "PATH": f"{installed}{os.pathsep}{os.environ['PATH']}",
           "GITHUB_OUTPUT": str(outputs), "RUNNER_TEMP": str(tmp_path)}

    def expand(value: str) -> str:
        value = value.replace("${{ github.action_path }}", str(checkout))
        for name, given in inputs.items():
            value = value.replace("${{ inputs." + name + " }}", given)
        assert "${{" not in value, value
        return value

    steps = [step for step in action["runs"]["steps"] if "run" in step]
    assert [step["name"] for step in steps] == ["Install slugbuild", "Compile the slug"]
    for step in steps:
        step_env = {**env, **{k: expand(v) for k, v in step.get("env", {}).items()}}
        _run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
             env=step_env, cwd=app)
    produced = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    assert produced["sha256"] == _golden("flask-hello")
    assert produced["slug-path"] == str(app / "slug.tgz")
    assert int(produced["size"]) == (app / "slug.tgz").stat().st_size
    assert set(produced) == {name for name in action["outputs"]}
