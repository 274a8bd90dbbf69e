"""Docker credential helpers named by a config file the build may not control (a CI
image's ~/.docker/config.json, REGISTRY_AUTH_FILE): the program run is found only
in PATH's absolute directories, its output is bounded, and no failure shows what
it answered (docs/security.md, Registries)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slugbuild import errors
from slugbuild.oci import credentials
from slugbuild.oci.credentials import find_credentials
from slugbuild.redact import mask

from ..helpers import docker_home, fake_credential_helper

HOST = "127.0.0.1:5000"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return docker_home(tmp_path, monkeypatch.setenv,
                       lambda name: monkeypatch.delenv(name, raising=False))


def _helper_named(home: Path, name: str) -> None:
    (home / ".docker" / "config.json").write_text(json.dumps({"credHelpers": {HOST: name}}))


def _refused(variant: str) -> str:
    with pytest.raises(errors.REGISTRY_CREDENTIALS_INVALID.exception) as raised:
        find_credentials(HOST)
    assert raised.value.fields["variant"] == variant
    return raised.value.render()


@pytest.mark.parametrize("path_entry", [".", "", "bin", "./bin"])
def test_a_helper_found_through_a_relative_path_entry_is_not_run(
        home: Path, monkeypatch: pytest.MonkeyPatch, path_entry: str) -> None:
    # The current directory (often the app being built) must not supply the program
    # handed the registry's secrets: Go's exec.LookPath, and so Docker, refuse it too.
    workdir = home / "app"
    fake_credential_helper(workdir / "bin", "planted", {HOST: ("u", "stolen")})
    (workdir / "docker-credential-planted").symlink_to(workdir / "bin/docker-credential-planted")
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("PATH", f"{path_entry}:/usr/bin:/bin")
    _helper_named(home, "planted")
    _refused("helper-missing")
    assert not (workdir / "bin" / "planted.asked").exists()  # never run


@pytest.mark.parametrize("name", ["../../../bin/sh", "x/../../y", "a\0b", "/bin/true"])
def test_a_helper_name_that_is_not_a_program_name_is_refused(home: Path, name: str) -> None:
    _helper_named(home, name)
    assert "registry-credentials-invalid" in _refused("helper-missing")


def test_a_helper_printing_without_end_is_killed(home: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(credentials, "HELPER_OUTPUT_LIMIT", 64 * 1024)
    fake_credential_helper(home / "bin", "flood", {}, body="exec yes '{\"Secret\": \"x\"}'\n")
    _helper_named(home, "flood")
    assert "printed more than 64 KiB" in _refused("helper-failed")


def test_a_helper_flooding_stderr_while_it_hangs_is_killed(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(credentials, "HELPER_TIMEOUT", 1.0)
    fake_credential_helper(home / "bin", "slow", {},
                           body="head -c 100000 /dev/zero >&2\nsleep 30 & wait\n")
    _helper_named(home, "slow")
    assert "did not answer within 1 s" in _refused("helper-failed")


def test_a_failing_helper_that_printed_its_answer_does_not_show_it(home: Path) -> None:
    answer = json.dumps({"Username": "u", "Secret": "hunter2-registry-token"})
    fake_credential_helper(home / "bin", "leaky", {}, body=f"echo '{answer}'\nexit 1\n")
    _helper_named(home, "leaky")
    shown = _refused("helper-failed")
    assert "hunter2" not in shown and "not shown" in shown
    assert "hunter2" not in mask("the token hunter2-registry-token")  # registered anyway
