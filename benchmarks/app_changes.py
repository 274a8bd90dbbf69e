"""The "changed" build's input: the app with one more pinned requirement, as its manager writes it.

Shared by the floors bench (run.py) and the side-by-side bench (side_by_side.py), so that
slugbuild and the Heroku buildpack are given byte-identical changed apps.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from slugbuild.installers.pipenv import pipfile_hash
from slugbuild.installers.poetry import content_hash
from slugbuild.toml_compat import tomllib

# The one pin a "changed" build adds: the first of these the app does not already name.
EXTRA_REQUIREMENTS = ("six==1.17.0", "tabulate==0.10.0")
EXTRA_REQUIREMENT = EXTRA_REQUIREMENTS[0]
_MANIFESTS = ("requirements.txt", "Pipfile", "Pipfile.lock", "pyproject.toml", "uv.lock",
              "poetry.lock")


def extra_requirement_for(app: Path) -> str:
    """The pin to add: one the app does not hold yet (adding a held one would change nothing)."""
    text = "\n".join((app / name).read_text().lower() for name in _MANIFESTS
                     if (app / name).is_file())
    for requirement in EXTRA_REQUIREMENTS:
        name = requirement.split("==")[0]
        if not re.search(rf"(^|[^a-z0-9_.-]){re.escape(name)}([^a-z0-9_.-]|$)", text, re.M):
            return requirement
    raise SystemExit(f"{app.name}: already holds every candidate extra requirement")


def add_requirement(app: Path, tmp_path: Path, requirement: str = EXTRA_REQUIREMENT) -> str:
    """Change the app's locked requirements the way its package manager would; say how.

    requirements.txt gets one more pinned package; so do Pipfile and
    Pipfile.lock (with the package's hashes, and the lock's Pipfile hash as
    Pipenv computes it); uv.lock is re-locked by uv after the package is added
    to pyproject.toml. Poetry cannot re-lock here (its resolver needs the
    index's JSON API), so the package goes into pyproject.toml and, as a
    main-group package with its hashes, into poetry.lock, whose content-hash
    is recomputed as Poetry computes it.
    """
    name, version = requirement.split("==")
    if (app / "requirements.txt").is_file():
        path = app / "requirements.txt"
        path.write_text(path.read_text().rstrip("\n") + "\n" + requirement + "\n")
        return f"{requirement} appended to requirements.txt"
    if (app / "Pipfile.lock").is_file():
        lock = json.loads((app / "Pipfile.lock").read_text())
        lock["default"][name] = {"hashes": _hashes(requirement, tmp_path),
                                 "index": "pypi", "version": f"=={version}"}
        pipfile = app / "Pipfile"
        pipfile.write_text(pipfile.read_text().replace(
            "[packages]\n", f'[packages]\n{name} = "=={version}"\n'))
        # Pipenv's own hash (tests/installers/test_managers_e2e.py checks it against Pipenv).
        lock["_meta"]["hash"]["sha256"] = pipfile_hash(tomllib.loads(pipfile.read_text()))
        (app / "Pipfile.lock").write_text(json.dumps(lock, indent=4, sort_keys=True) + "\n")
        return f"{requirement} added to Pipfile and Pipfile.lock (with hashes)"
    if (app / "uv.lock").is_file():
        pyproject = app / "pyproject.toml"
        pyproject.write_text(pyproject.read_text().replace(
            "dependencies = [\n", f'dependencies = [\n    "{requirement}",\n', 1))
        _uv(["lock"], app, tmp_path, python=_python_of(app))
        return f"{requirement} added to pyproject.toml, then `uv lock`"
    if (app / "poetry.lock").is_file():
        pyproject = app / "pyproject.toml"
        pyproject.write_text(pyproject.read_text().replace(
            "[tool.poetry.dependencies]\n",
            f'[tool.poetry.dependencies]\n{name} = "=={version}"\n', 1))
        files = ", ".join(f'{{file = "{name}-{version}", hash = "{h}"}}'
                          for h in _hashes(requirement, tmp_path))
        lock = app / "poetry.lock"
        text = lock.read_text().replace("\n[metadata]\n", (
            f'\n[[package]]\nname = "{name}"\nversion = "{version}"\ndescription = ""\n'
            f'optional = false\npython-versions = "*"\ngroups = ["main"]\n'
            f"files = [{files}]\n\n[metadata]\n"), 1)
        old_hash = tomllib.loads(text)["metadata"]["content-hash"]
        # Poetry's own content-hash (tests/installers/test_managers_e2e.py checks the lock
        # it vouches for).
        new_hash = content_hash(tomllib.loads(pyproject.read_text()))
        lock.write_text(text.replace(old_hash, new_hash))
        return (f"{requirement} added to pyproject.toml and to poetry.lock "
                "(with hashes and Poetry's content-hash; Poetry cannot re-lock from here)")
    raise SystemExit(f"{app.name}: no lock file the benchmark knows how to change")


def _hashes(requirement: str, tmp_path: Path) -> list[str]:
    """sha256 of every file of a pinned release, as uv reads them from the index."""
    (tmp_path / "one.in").write_text(requirement + "\n")
    output = _uv(["pip", "compile", "--generate-hashes", "--no-header", "--quiet",
                  str(tmp_path / "one.in")], tmp_path, tmp_path)
    return sorted(set(re.findall(r"--hash=(sha256:[0-9a-f]{64})", output)))


def _python_of(app: Path) -> str:
    """A local interpreter of the version the app asks for (uv lock checks requires-python)."""
    from slugbuild.runtime.local import LocalInterpreterSource

    wanted = (app / ".python-version").read_text().strip() \
        if (app / ".python-version").is_file() else ""
    for runtime in LocalInterpreterSource().runtimes():
        if wanted and (runtime.version == wanted or runtime.version.startswith(wanted + ".")):
            return str(runtime.prefix / "bin" / runtime.python_name)
    return sys.executable


def _uv(args: list[str], cwd: Path, tmp_path: Path, python: str = sys.executable) -> str:
    from slugbuild.installers.common import DEFAULT_INDEX_URL, trusted_ca_bundle
    from slugbuild.installers.uv import uv_binary

    env = {**clean_env(), "UV_NO_CONFIG": "1", "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
           "UV_INDEX_URL": DEFAULT_INDEX_URL, "UV_PYTHON_DOWNLOADS": "never",
           "UV_PYTHON": python}
    cert = trusted_ca_bundle()
    if cert:
        env["SSL_CERT_FILE"] = cert
    return subprocess.run([uv_binary(), *args], cwd=cwd, env=env, check=True,
                          capture_output=True, text=True).stdout


def clean_env() -> dict[str, str]:
    """The caller's environment without pip's and Python's own variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
