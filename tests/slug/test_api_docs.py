"""docs/api.md's deployer example, run as it is written, on a real fixture app: a real
build, a real boot answering HTTP, a one-off command, and the kept release."""

from __future__ import annotations

import importlib.util
import logging
import os
import re

import pytest

from ..helpers import FIXTURE_APPS, REPO, copy_app

pytestmark = pytest.mark.slow


def _example_module(tmp_path):
    text = (REPO / "docs" / "api.md").read_text()
    section = text.split("## A complete deployer", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    path = tmp_path / "deploy.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("deploy_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_documented_deployer_builds_boots_and_keeps_the_release(tmp_path, cache_dir, caplog):
    deploy = _example_module(tmp_path).deploy
    app = copy_app(FIXTURE_APPS / "flask-hello", tmp_path / "flask-hello")
    releases = tmp_path / "releases"
    releases.mkdir()
    with caplog.at_level(logging.DEBUG, logger="deployer"):
        result = deploy(str(app), releases, cache_dir=cache_dir)
    kept = releases / f"{result.sha256[:12]}.tgz"
    assert kept.is_file() and kept.with_name(kept.name + ".json").is_file()
    assert not (releases / "candidate.tgz").exists()
    messages = caplog.text
    assert "answered 200" in messages and f"release {kept.name} ready" in messages
    # The build's lines reached the logger as structured records.
    steps = [r for r in caplog.records if getattr(r, "kind", None) == "step"]
    assert steps and any(r.stage for r in steps)


def test_the_documented_deployer_reports_a_rejected_app(tmp_path, cache_dir, caplog):
    import slugbuild

    deploy = _example_module(tmp_path).deploy
    app = tmp_path / "not-an-app"
    app.mkdir()
    (app / "README").write_text("hello\n")
    with pytest.raises(slugbuild.InputError) as caught:
        deploy(app, tmp_path, cache_dir=cache_dir)
    assert caught.value.code == "not-a-python-app"


def test_the_documented_deployer_type_checks_strictly(tmp_path):
    # The public API is typed: a user's `mypy --strict` accepts the example as written.
    import subprocess
    import sys

    text = (REPO / "docs" / "api.md").read_text().split("## A complete deployer", 1)[1]
    (tmp_path / "deploy.py").write_text(re.search(r"```python\n(.*?)```", text, re.S).group(1))
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", os.devnull,
                             "--no-error-summary", "deploy.py"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
