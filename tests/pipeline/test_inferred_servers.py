"""End to end: Procfile-less Flask and FastAPI apps and build hooks.

The Flask build (``flask_build`` in conftest.py) carries hooks, a .slugignore and a
secret config var, so one build answers for all of them (its .slugignore is checked in
test_slugignore.py); each slug is then served with its inferred command.
"""

from __future__ import annotations

import json
import tarfile

import pytest
import requests
import yaml

from slugbuild import compile_app
from slugbuild.log import Reporter

from ..helpers import (
    FIXTURE_APPS,
    HOOK_SECRET,
    MINIMAL,
    Server,
    assert_clean_failure,
    make_app,
    read_member,
)

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def fastapi_build(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("fastapi-slug") / "fastapi.tgz"
    return compile_app(FIXTURE_APPS / "fastapi-hello", out, cache_dir=cache_dir,
                       reporter=Reporter(quiet=True))


def test_flask_without_procfile_serves_with_inferred_gunicorn(flask_build):
    meta = json.loads(flask_build.metadata_path.read_text())
    assert meta["process_types"] == {"web": "gunicorn app:app"}
    assert meta["inferred"] is True
    assert meta["inference"] == {"process_type": "web", "framework": "flask",
                                 "server": "gunicorn", "source": "app.py",
                                 "server_installed": True}
    assert any("inferred the web process of the Flask app" in line for line in flask_build.log)
    release = yaml.safe_load(read_member(flask_build.slug_path, "./.release"))
    assert release["default_process_types"] == {"web": "gunicorn app:app"}
    with Server(flask_build.slug_path, extra=("--env", "WEB_CONCURRENCY=2")) as server:
        response = requests.get(server.base + "/", timeout=10)
        assert response.status_code == 200
        assert response.text == "Hello from Flask\n"


def test_hooks_run_in_order_with_config_vars_that_stay_out_of_the_slug(flask_build):
    log = "\n".join(flask_build.log)
    deps = min(log.find(step) for step in ("Installing requirements", "Restoring dependencies")
               if step in log)
    assert log.index("Running pre_compile hook") < deps < log.index("Running post_compile hook")
    assert "pre_compile ran" in log
    post = read_member(flask_build.slug_path, "./post_compile.txt")
    assert post == "post_compile sees flask flask\n"
    assert HOOK_SECRET not in flask_build.metadata_path.read_text()
    with tarfile.open(flask_build.slug_path) as tar:
        for member in tar:
            if member.isfile():
                assert HOOK_SECRET.encode() not in tar.extractfile(member).read(), member.name


def test_fastapi_without_procfile_serves_with_inferred_uvicorn(fastapi_build):
    meta = json.loads(fastapi_build.metadata_path.read_text())
    command = "uvicorn main:app --host ${HOST:-0.0.0.0} --port $PORT"
    assert meta["process_types"] == {"web": command}
    assert meta["inferred"] is True and meta["inference"]["server"] == "uvicorn"
    # WEB_CONCURRENCY from profile.d also sets uvicorn's worker count.
    with Server(fastapi_build.slug_path) as server:
        response = requests.get(server.base + "/", timeout=10)
        assert response.status_code == 200
        assert response.json() == {"hello": "fastapi"}
    code, output = server.stop()
    # `slugbuild run` sets HOST=127.0.0.1, so the dyno default 0.0.0.0 was not used.
    assert f"Uvicorn running on http://127.0.0.1:{server.port}" in output, output


def test_failing_hook_fails_the_build_with_its_output(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", {
        **MINIMAL,
        "bin/post_compile": "#!/bin/sh\necho 'cannot reach the asset CDN' >&2\nexit 3\n",
    })
    stderr = assert_clean_failure(app, cache_dir, tmp_path, "The app's post_compile hook failed")
    assert "exited with code 3" in stderr
    assert "cannot reach the asset CDN" in stderr
