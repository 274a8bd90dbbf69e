"""End to end: Django collectstatic with config vars, disabled, and failing on a missing one.

The variant app reads SECRET_KEY from the environment and has no Procfile, so
its slug also shows the inferred Django web process serving hashed static files.
"""

from __future__ import annotations

import json
import re
import tarfile

import pytest
import requests

from slugbuild import compile_app
from slugbuild.log import Reporter

from ..helpers import DJANGO_APP, Server, assert_clean_failure, copy_app

pytestmark = pytest.mark.slow

SECRET_KEY = "build-secret-7c41d2-not-in-slug"
DB_PASSWORD = "pw-9f8e-not-printed"


def needs_secret_key(target):
    """django-tutorial without a Procfile, its settings requiring SECRET_KEY."""
    app = copy_app(DJANGO_APP, target)
    (app / "Procfile").unlink()
    settings = app / "mysite" / "settings.py"
    text = settings.read_text()
    start = text.index("SECRET_KEY = os.environ.get(")
    end = text.index(")\n", start) + 2
    settings.write_text(text[:start] + "SECRET_KEY = os.environ['SECRET_KEY']\n" + text[end:])
    return app


@pytest.fixture(scope="module")
def secret_build(tmp_path_factory, cache_dir):
    app = needs_secret_key(tmp_path_factory.mktemp("django-secret") / "app")
    out = tmp_path_factory.mktemp("django-secret-slug") / "slug.tgz"
    return compile_app(app, out, cache_dir=cache_dir, env={"SECRET_KEY": SECRET_KEY},
                       reporter=Reporter(quiet=True))


def test_missing_env_var_fails_collectstatic_and_names_it(tmp_path, cache_dir):
    app = needs_secret_key(tmp_path / "app")
    stderr = assert_clean_failure(
        app, cache_dir, tmp_path, "Django's collectstatic failed",
        "--env", "DEBUG_COLLECTSTATIC=1", "--env", f"DATABASE_URL=postgres://u:{DB_PASSWORD}@h/db",
    )
    assert "Likely cause: settings read the environment variable SECRET_KEY" in stderr
    assert "--env KEY=VALUE" in stderr and "DISABLE_COLLECTSTATIC=1" in stderr
    # DEBUG_COLLECTSTATIC printed the environment, config var values hidden.
    assert f"DATABASE_URL=<hidden, {len(f'postgres://u:{DB_PASSWORD}@h/db')} characters>" \
        in stderr
    assert DB_PASSWORD not in stderr


def test_config_var_reaches_collectstatic_and_inferred_web_serves_hashed_files(secret_build,
                                                                              tmp_path):
    meta_text = secret_build.metadata_path.read_text()
    meta = json.loads(meta_text)
    assert meta["process_types"] == {"web": "gunicorn mysite.wsgi"}
    assert meta["inferred"] is True and meta["inference"]["framework"] == "django"
    assert SECRET_KEY not in meta_text and "SECRET_KEY" not in meta_text
    with tarfile.open(secret_build.slug_path) as tar:
        for member in tar:
            if member.isfile():
                assert SECRET_KEY.encode() not in tar.extractfile(member).read(), member.name
    # At run time the app needs its key again, as a config var of the dyno.
    with Server(secret_build.slug_path,
                extra=("--env", "SECRET_KEY=run-time-key", "--env", "WEB_CONCURRENCY=2")) as server:
        page = requests.get(server.base + "/", timeout=10)
        assert page.status_code == 200
        css = re.search(r'href="(/static/polls/style\.[0-9a-f]{12}\.css)"', page.text)
        assert css, page.text
        static = requests.get(server.base + css.group(1), timeout=10)
        assert static.status_code == 200
        assert "immutable" in static.headers.get("Cache-Control", "")


def test_collectstatic_disabled(tmp_path, cache_dir):
    result = compile_app(DJANGO_APP, tmp_path / "slug.tgz", cache_dir=cache_dir,
                         env={"DISABLE_COLLECTSTATIC": "1"}, reporter=Reporter(quiet=True))
    assert "-----> Skipping Django collectstatic since DISABLE_COLLECTSTATIC is set" in result.log
    assert not any("collectstatic --noinput" in line for line in result.log)
    with tarfile.open(result.slug_path) as tar:
        names = tar.getnames()
    assert "./manage.py" in names
    assert not any(name.startswith("./staticfiles") for name in names)
