"""Local runtimes on a CI runner: the interpreter running slugbuild counts (as
actions/setup-python's does, under its tool cache), and the Pythons that are
refused are named in the "unavailable" error with the reason."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from slugbuild.runtime.local import LocalInterpreterSource, examine_prefix, refused_interpreters

from ..helpers import make_app, run_cli


def test_the_running_interpreter_is_a_local_runtime_on_its_own(tmp_path):
    # No pyenv, no SLUGBUILD_PYTHON_PATH: what a stock runner with setup-python has.
    env = {**os.environ, "PYENV_ROOT": str(tmp_path / "no-pyenv"), "SLUGBUILD_PYTHON_PATH": ""}
    result = run_cli("runtimes", "--python-source", "local", "--json", env=env)
    assert result.returncode == 0, result.stderr
    offered = json.loads(result.stdout)["runtimes"]
    running = ".".join(map(str, sys.version_info[:3]))
    assert any(r["version"] == running and r["origin"].startswith("running interpreter")
               for r in offered), offered


def test_refused_pythons_are_named_with_the_reason(tmp_path, monkeypatch):
    # A prefix with an interpreter but no standard library, reached through PATH.
    broken = tmp_path / "opt" / "python-broken"
    (broken / "bin").mkdir(parents=True)
    (broken / "bin" / "python3.12").write_text("#!/bin/sh\n")
    (broken / "bin" / "python3.12").chmod(0o755)
    good = Path(sys.base_prefix)
    links = tmp_path / "path"
    links.mkdir()
    (links / "python3.12").symlink_to(broken / "bin" / "python3.12")
    monkeypatch.setenv("PATH", os.pathsep.join([str(links), "/usr/bin"]))
    notes = refused_interpreters([(tmp_path / "empty", "pyenv")])
    assert any(n.startswith(f"{links}/python3.12 (Python 3.12) refused: no standard library")
               for n in notes), notes
    if Path("/usr/bin/python3").exists():  # Debian's: its prefix is the system's
        assert any(n.startswith("/usr/bin/python3") and "shared with the rest of the system" in n
                   for n in notes), notes
    # The running interpreter's prefix is fine, only not searched here: say how to add it.
    assert any(f"add {good.resolve()} to SLUGBUILD_PYTHON_PATH" in n for n in notes), notes
    assert isinstance(examine_prefix(Path("/usr"), "x"), str)


def test_the_unavailable_error_lists_them(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    app = make_app(tmp_path / "app", {".python-version": "3.8\n", "requirements.txt": ""})
    result = run_cli("compile", app, "-o", tmp_path / "s.tgz", "--cache-dir", tmp_path / "c",
                     "--python-source", "local", "--allow-eol-python",
                     env={**os.environ, "PYENV_ROOT": str(tmp_path / "none"),
                          "SLUGBUILD_PYTHON_PATH": ""})
    assert result.returncode == 1
    assert "Error [python-version-unavailable]" in result.stderr
    tried = result.stderr.split("Sources tried: ", 1)[1]
    if Path("/usr/bin/python3").exists():
        assert "/usr/bin/python3" in tried and "refused" in tried
    assert LocalInterpreterSource([]).refused() == refused_interpreters([])


def test_a_venv_of_the_distributions_python_says_why_it_is_not_used(tmp_path, monkeypatch):
    # The running interpreter's prefix is in the search path, and refused: it is named.
    monkeypatch.setenv("PATH", "/nonexistent")
    notes = refused_interpreters([(Path("/usr"), "running interpreter"),
                                  (tmp_path / "no-pyenv", "pyenv")])
    assert any(n.startswith("/usr (running interpreter) refused: its prefix /usr is shared")
               for n in notes), notes
