"""End to end: Procfile-less Flask and FastAPI apps, build hooks and .slugignore.

The Flask build carries hooks, a .slugignore and a secret config var, so one
build answers for all of them; each slug is then served with its inferred command.
"""

from __future__ import annotations

import json
import tarfile

import pytest
import requests
import yaml

from slugbuild import compile_app
from slugbuild.log import Reporter

from .helpers import FIXTURE_APPS, MINIMAL, Server, assert_clean_failure, copy_app, make_app

pytestmark = pytest.mark.slow

SECRET = "s3cr3t-hook-value-5f1e"
PRE_COMPILE = """\
#!/usr/bin/env bash
set -euo pipefail
# Only the value's shape is written here: the whole value must not be in the slug.
case "${HOOK_SECRET:-}" in s3cr3t-hook-*) ;; *) echo "no config var"; exit 1 ;; esac
if python -c "import flask" 2>/dev/null; then echo "flask already installed"; exit 1; fi
ls -A > pre_compile_saw.txt
echo "pre_compile ran"
"""
# No #!: run by bash, as Heroku does.
POST_COMPILE = """\
[ -n "$HOOK_SECRET" ] || exit 1
python -c "import flask; print('post_compile sees flask', flask.__name__)" > post_compile.txt
"""
SLUGIGNORE = "docs/\n*.md\n!KEEP.md\n/data/*.bin\n"


@pytest.fixture(scope="module")
def flask_build(tmp_path_factory, cache_dir):
    app = copy_app(FIXTURE_APPS / "flask-hello", tmp_path_factory.mktemp("flask") / "app")
    make_app(app, {
        "bin/pre_compile": PRE_COMPILE, "bin/post_compile": POST_COMPILE,
        ".slugignore": SLUGIGNORE, "docs/guide.txt": "guide\n", "NOTES.md": "notes\n",
        "KEEP.md": "kept\n", "data/blob.bin": "x" * 1000, "data/keep.txt": "kept\n",
    })
    out = tmp_path_factory.mktemp("flask-slug") / "flask.tgz"
    return compile_app(app, out, cache_dir=cache_dir, env={"HOOK_SECRET": SECRET},
                       reporter=Reporter(quiet=True))


@pytest.fixture(scope="module")
def fastapi_build(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("fastapi-slug") / "fastapi.tgz"
    return compile_app(FIXTURE_APPS / "fastapi-hello", out, cache_dir=cache_dir,
                       reporter=Reporter(quiet=True))


def slug_files(slug) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(slug) as tar:
        return {m.name: m for m in tar.getmembers()}


def read_member(slug, name: str) -> str:
    with tarfile.open(slug) as tar:
        return tar.extractfile(name).read().decode()


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
    assert SECRET not in flask_build.metadata_path.read_text()
    with tarfile.open(flask_build.slug_path) as tar:
        for member in tar:
            if member.isfile():
                assert SECRET.encode() not in tar.extractfile(member).read(), member.name


def test_slugignore_applies_before_hooks_and_install(flask_build):
    names = slug_files(flask_build.slug_path)
    for gone in ("./docs", "./docs/guide.txt", "./NOTES.md", "./data/blob.bin"):
        assert gone not in names
    for kept in ("./KEEP.md", "./data/keep.txt", "./app.py", "./.slugignore"):
        assert kept in names
    # pre_compile, the first build step, already saw the app without them.
    seen = read_member(flask_build.slug_path, "./pre_compile_saw.txt").split()
    assert "docs" not in seen and "NOTES.md" not in seen and "KEEP.md" in seen
    assert any("Left out 3 path(s) listed in .slugignore" in line for line in flask_build.log)


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
