"""`slugbuild buildpack path|install`: the buildpack the wheel carries, without a checkout
(the installed wheel itself is checked in tests/test_packaging.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import slugbuild

from ..helpers import FIXTURE_APPS, REPO, run_cli


def test_path_is_the_checkouts_buildpack_in_an_editable_install():
    result = run_cli("buildpack", "path")
    assert result.returncode == 0 and result.stdout.strip() == str(REPO / "buildpacks" / "python")


def test_install_copies_it_set_up_for_this_python_and_refuses_to_overwrite(tmp_path):
    target = tmp_path / "buildpacks" / "00_python"
    assert run_cli("buildpack", "install", target).returncode == 0
    assert (target / "lib" / "slugbuild-python").read_text().strip() == sys.executable
    assert all(os.access(target / "bin" / name, os.X_OK) for name in ("detect", "compile",
                                                                       "release"))
    # bin/detect finds slugbuild through the recorded interpreter, with no python3 on PATH.
    env = {k: v for k, v in os.environ.items() if k != "SLUGBUILD_PYTHON_BIN"}
    env["PATH"] = "/nonexistent:/bin"
    detected = subprocess.run([target / "bin" / "detect", FIXTURE_APPS / "flask-hello"],
                              capture_output=True, text=True, env=env, timeout=120)
    assert detected.returncode == 0 and detected.stdout.strip() == "Python", detected.stderr

    again = run_cli("buildpack", "install", target)
    assert again.returncode == 1 and "Error [buildpack-install-refused]" in again.stderr
    (target / "stray").write_text("left from before\n")
    assert run_cli("buildpack", "install", target, "--force").returncode == 0
    assert not (target / "stray").exists()
    (tmp_path / "file").write_text("")
    try:
        slugbuild.install_buildpack(tmp_path / "file")
    except slugbuild.InputError as error:
        assert error.code == "buildpack-install-refused" and error.variant == "not-a-directory"
    else:
        raise AssertionError("a file was replaced by the buildpack")
