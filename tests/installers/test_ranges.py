"""Version ranges in requirements.txt: uv resolves them, the layer is keyed by what they
resolve to, and what only pip does as pip does falls back to pip, saying why (issue 20).
"""

from __future__ import annotations

import hashlib
import http.server
import json
from pathlib import Path

import pytest
import requests

from slugbuild import compile_app
from slugbuild.dependencies import rebuild_reasons
from slugbuild.installers.baseline import SETUPTOOLS_VERSION
from slugbuild.installers.pip import PipInstaller
from slugbuild.installers.ranges import changed_pins, constraints_text, key_inputs
from slugbuild.installers.requirements import pip_only_reason, requirements_files
from slugbuild.log import Reporter
from slugbuild.plan import plan_app

from ..helpers import FIXTURE_APPS, Server, copy_app, make_app, minimal_wheel, serve_directory

NAME = "sbrange"
WEB = "web: python -m http.server $PORT --bind 127.0.0.1\n"


def _reason(tmp_path: Path, files: dict[str, str]) -> str | None:
    app = make_app(tmp_path / "app", files)
    return pip_only_reason(app, requirements_files(app, "requirements.txt"))


# --- quick: which files uv takes, and what keys the layer ------------------------------

@pytest.mark.parametrize("text", [
    "flask>=3,<4\nclick\n",
    "requests[socks]~=2.31 ; python_version >= '3.9'\n",
    "-r base.txt\n-c constraints.txt\n--extra-index-url https://extra.example/simple\n",
    "x @ https://files.example/x-1.0-py3-none-any.whl\ngit+https://example.invalid/y.git\n",
    "six==1.17.0 --hash=sha256:abc\nidna==3.10 --hash=sha256:def\n",
])
def test_ranges_extras_markers_includes_and_urls_go_to_uv(tmp_path, text):
    files = {"requirements.txt": text, "base.txt": "six>=1\n", "constraints.txt": "six<2\n"}
    assert _reason(tmp_path, files) is None


@pytest.mark.parametrize("text, named", [
    ("--pre\nflask>=3\n", "--pre"),
    ("--find-links ./wheels\nflask\n", "--find-links"),
    ("--no-binary=:all:\nflask\n", "--no-binary"),
    ("--prefer-binary\nflask\n", "--prefer-binary"),
    ("flask\n-e ./lib\n", "./lib as editable"),
    ("./vendor/pkg\n", "local package (./vendor/pkg)"),
    ("six>=1 --hash=sha256:abc\n", "hashes are given but requirements.txt line 1"),
])
def test_what_only_pip_does_stays_with_pip_naming_the_line(tmp_path, text, named):
    reason = _reason(tmp_path, {"requirements.txt": text})
    assert reason is not None and named in reason, reason
    plan = PipInstaller().plan(tmp_path / "app", "requirements.txt", {})
    assert plan.tool == "pip" and not plan.resolves
    assert named in plan.installer_reason and plan.installer_reason.endswith("as on Heroku")


def test_a_ranged_plan_is_resolved_and_keyed_apart_from_a_pinned_one(tmp_path):
    app = make_app(tmp_path / "app", {"requirements.txt": "flask>=3\n"})
    ranged = PipInstaller().plan(app, "requirements.txt", {})
    assert (ranged.tool, ranged.resolves) == ("uv", True)
    assert ranged.version.endswith("ranges resolved")
    assert "version ranges" in ranged.installer_reason
    (app / "requirements.txt").write_text("flask==3.1.3\n")
    pinned = PipInstaller().plan(app, "requirements.txt", {})
    assert (pinned.tool, pinned.resolves) == ("uv", False)
    assert pinned.version.endswith("every requirement pinned")


def test_a_declined_pre_release_falls_back_to_pip_and_other_failures_are_errors(
        tmp_path, monkeypatch):
    from slugbuild import errors
    from slugbuild.cache import Cache
    from slugbuild.installers import ranges
    from slugbuild.proc import ToolFailed

    app = make_app(tmp_path / "app", {"requirements.txt": "flask>=3\n"})
    plan = PipInstaller().plan(app, "requirements.txt", {})
    hint = ("hint: Pre-releases are available for `x` in the requested range (e.g., 2.0b1), "
            "but pre-releases weren't enabled (try: `--prerelease=allow`)")

    def failing(output: str):
        def compile_(job, baseline):
            raise ToolFailed(1, output)
        return compile_

    def resolve():
        return ranges.resolve_plan(plan, app_dir=app, lock_file="requirements.txt",
                                   python_version="3.12.1", config_vars={},
                                   cache=Cache(tmp_path / "cache"), reporter=Reporter(quiet=True))

    monkeypatch.setattr(ranges, "_compile", failing(hint))
    fallback = resolve()
    assert (fallback.tool, fallback.resolves, fallback.resolved) == ("pip", False, "")
    assert fallback.version == fallback.installer_version == plan.pip_version
    assert "pre-release" in fallback.installer_reason
    monkeypatch.setattr(ranges, "_compile", failing("No solution found: x>=9 is unavailable"))
    with pytest.raises(errors.SlugbuildError) as caught:
        resolve()
    assert caught.value.code == "dependency-install-failed"
    assert not list((tmp_path / "cache" / "tmp").iterdir())  # its scratch is removed


def test_key_inputs_name_versions_and_hide_urls():
    text = "flask==3.1.3\nprivate @ https://user:tok@host.example/p.whl\nsix==1.17.0\n"
    inputs = key_inputs(text)
    assert inputs["resolved_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    shown = json.dumps(inputs)
    assert "tok" not in shown and "host.example" not in shown
    assert inputs["resolved"]["flask"] == "3.1.3"
    assert constraints_text(text) == "flask==3.1.3\nsix==1.17.0\n"
    assert changed_pins({"flask": "3.1.2", "six": "1.17.0"}, {"flask": "3.1.3", "six": "1.17.0",
                                                               "idna": "3.10"}) == [
        "flask 3.1.2 -> 3.1.3", "idna none -> 3.10"]


def test_the_rebuild_reason_names_the_versions_that_moved():
    before = {"files": {"requirements.txt": "a"}, "runtime": "cpython-3.12.1",
              **key_inputs("flask==3.1.2\n")}
    after = {**before, **key_inputs("flask==3.1.3\n")}
    assert rebuild_reasons(before, after) == [
        "The versions the requirements' ranges resolve to changed (flask 3.1.2 -> 3.1.3)"]
    # An edited file says so itself; the resolution moving with it is no extra reason.
    edited = {**after, "files": {"requirements.txt": "b"}}
    assert rebuild_reasons(before, edited) == ["The contents of requirements.txt changed"]


# --- end to end: real builds --------------------------------------------------------------

def _publish(root: Path, versions: list[str]) -> None:
    """The index at ``root/simple`` lists these releases of ``sbrange``."""
    links = []
    for version in versions:
        wheel = f"{NAME}-{version}-py3-none-any.whl"
        data = minimal_wheel(NAME, version, f'VERSION = "{version}"\n')
        (root / "files").mkdir(parents=True, exist_ok=True)
        (root / "files" / wheel).write_bytes(data)
        links.append(f'<a href="../../files/{wheel}#sha256={hashlib.sha256(data).hexdigest()}">'
                     f'{wheel}</a>')
    (root / "simple" / NAME).mkdir(parents=True, exist_ok=True)
    (root / "simple" / NAME / "index.html").write_text("\n".join(links) + "\n")


class _Uncached(http.server.SimpleHTTPRequestHandler):
    """An index whose pages are revalidated on every request (PyPI's last 10 minutes)."""

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _build(app: Path, out: Path, cache_dir: Path, **options):
    return compile_app(app, out, cache_dir=cache_dir, reporter=Reporter(quiet=True), **options)


@pytest.mark.slow
def test_a_newer_release_inside_the_range_is_installed_not_a_stale_layer(tmp_path, cache_dir):
    root = tmp_path / "index"
    _publish(root, ["1.0"])
    with serve_directory(root, _Uncached) as base:
        app = make_app(tmp_path / "app", {
            "requirements.txt": f"--index-url {base}/simple\n{NAME}>=1,<2\n",
            ".python-version": "3.13\n", "Procfile": WEB})
        first = _build(app, tmp_path / "one.tgz", cache_dir)
        manager = first.metadata["package_manager"]
        assert (manager["installer"], manager["tools"][0].split("==")[0]) == ("uv", "uv")
        assert "version ranges" in manager["installer_reason"]
        assert {p["name"]: p["version"] for p in first.packages} == {NAME: "1.0"}
        assert any(line.startswith("-----> Installing requirements with pip-compatible uv")
                   and "version ranges resolved" in line for line in first.log)
        assert any("Installing with uv: uv resolves the version ranges" in line
                   for line in first.log)

        _publish(root, ["1.0", "1.1", "2.0"])  # 2.0 is outside the range
        second = _build(app, tmp_path / "two.tgz", cache_dir)
        assert {p["name"]: p["version"] for p in second.packages} == {NAME: "1.1"}
        assert any(line.endswith(f"- The versions the requirements' ranges resolve to "
                                 f"changed ({NAME} 1.0 -> 1.1)") for line in second.log), \
            second.log

        third = _build(app, tmp_path / "three.tgz", cache_dir)  # nothing new: from cache
        assert third.sha256 == second.sha256
        assert any("Restoring dependencies from cache" in line for line in third.log)
        # The plan resolves the ranges as the build does: the same key, found cached.
        planned = plan_app(app, cache_dir=cache_dir).layer("dependencies")
        assert planned is not None and planned.cached, planned

        # What only pip does as pip does: pip installs, and says why.
        (app / "requirements.txt").write_text(
            f"--index-url {base}/simple\n--prefer-binary\n{NAME}>=1,<2\n")
        fallback = _build(app, tmp_path / "pip.tgz", cache_dir)
        manager = fallback.metadata["package_manager"]
        assert manager["installer"] == "pip" and "--prefer-binary" in manager["installer_reason"]
        assert any(line.startswith("       Installing with pip: requirements.txt line 2 uses "
                                   "--prefer-binary") for line in fallback.log), fallback.log
        assert {p["name"]: p["version"] for p in fallback.packages} == {NAME: "1.1"}

        # Only a pre-release satisfies the range: pip takes it, and so does uv.
        _publish(root, ["1.0", "1.1", "3.0b1"])
        (app / "requirements.txt").write_text(f"--index-url {base}/simple\n{NAME}>2\n")
        prerelease = _build(app, tmp_path / "pre.tgz", cache_dir)
        assert prerelease.metadata["package_manager"]["installer"] == "uv"
        assert {p["name"]: p["version"] for p in prerelease.packages} == {NAME: "3.0b1"}

        # A direct reference (a wheel's URL) is resolved and installed by uv as well.
        (app / "requirements.txt").write_text(
            f"{NAME} @ {base}/files/{NAME}-1.0-py3-none-any.whl\n")
        direct = _build(app, tmp_path / "url.tgz", cache_dir)
        assert direct.metadata["package_manager"]["installer"] == "uv"
        assert {p["name"]: p["version"] for p in direct.packages} == {NAME: "1.0"}

    # The index is gone: the ranges resolve from uv's cache of it, said so, and the
    # layer of that resolution is reused.
    (app / "requirements.txt").write_text(f"--index-url {base}/simple\n{NAME}>=1,<2\n")
    offline = _build(app, tmp_path / "offline.tgz", cache_dir)
    assert offline.sha256 == second.sha256
    assert any("could not be reached" in line and "from uv's cache" in line
               for line in offline.log), offline.log


@pytest.mark.slow
def test_a_ranged_gunicorn_20_keeps_the_baseline_and_serves(tmp_path, cache_dir):
    """uv resolves gunicorn's `setuptools>=3.0` to the baseline Heroku installs first (as
    pip does against an installed setuptools), so gunicorn 20 still finds pkg_resources."""
    app = copy_app(FIXTURE_APPS / "gunicorn20-py312", tmp_path / "app")
    (app / "requirements.txt").write_text("gunicorn>=20,<21\n")
    result = _build(app, tmp_path / "g.tgz", cache_dir)
    assert result.metadata["package_manager"]["installer"] == "uv"
    versions = {p["name"]: p["version"] for p in result.packages}
    assert versions == {"gunicorn": "20.1.0", "setuptools": SETUPTOOLS_VERSION}
    with Server(result.slug_path) as server:
        response = requests.get(server.base + "/", timeout=10)
    assert response.status_code == 200 and b"gunicorn 20.1.0" in response.content
