"""Process inference, collectstatic diagnoses, the web profile.d script and bin/release.

Fast tests: no build gets past staging here (the end-to-end ones are in
pipeline/test_inferred_servers.py and pipeline/test_django_static.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from slugbuild.collectstatic import collectstatic_disabled, diagnose, masked_environment
from slugbuild.detect import detect
from slugbuild.errors import SlugbuildError
from slugbuild.hooks import run_hook
from slugbuild.importcheck import diagnose_missing_module
from slugbuild.inference import discover_process_types, infer_web_process
from slugbuild.log import Reporter
from slugbuild.profile import MB_PER_WORKER, WEB_PROFILE_SCRIPT, write_profile
from slugbuild.release import RELEASE_COPY, write_release_files

from .helpers import DJANGO_APP, FIXTURE_APPS, copy_app, make_app

BUILDPACK_RELEASE = Path(__file__).resolve().parent.parent / "buildpacks/python/bin/release"
SERVERS = ("gunicorn", "uvicorn")
MANAGE_PY = (
    "import os\n"
    "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'proj.settings')\n"
)


def infer(app: Path, installed=SERVERS):
    return infer_web_process(app, detect(app), installed)


def test_django_command_comes_from_wsgi_application():
    found = infer(DJANGO_APP)
    assert found.command == "gunicorn mysite.wsgi"
    assert found.framework == "django" and found.server_installed
    assert found.source == "WSGI_APPLICATION in mysite/settings.py"


def test_django_custom_wsgi_object_and_nested_manage_py(tmp_path):
    app = make_app(tmp_path / "app", {
        "requirements.txt": "Django==5.2.19\n",
        "src/manage.py": MANAGE_PY,
        "src/proj/__init__.py": "",
        "src/proj/settings/__init__.py": "from .base import *\n",
        "src/proj/settings/base.py": "WSGI_APPLICATION = 'proj.server.app'\n",
    })
    assert infer(app).command == "gunicorn --chdir src proj.server:app"


def test_django_without_wsgi_application_uses_wsgi_py_beside_settings(tmp_path):
    app = make_app(tmp_path / "app", {
        "requirements.txt": "Django==5.2.19\n",
        "manage.py": MANAGE_PY,
        "proj/__init__.py": "",
        "proj/settings.py": "DEBUG = False\n",
        "proj/wsgi.py": "application = None\n",
    })
    found = infer(app)
    assert found.command == "gunicorn proj.wsgi"
    assert found.source == "proj/wsgi.py beside the settings"
    # manage.py that does not name its settings: the one settings.py beside it.
    (app / "manage.py").write_text("import sys\n")
    assert infer(app).command == "gunicorn proj.wsgi"


def test_flask_object_factory_and_fastapi(tmp_path):
    flask = make_app(tmp_path / "flask", {
        "requirements.txt": "flask\n",
        "helpers.py": "X = 1\n",
        "web/__init__.py": "import flask\n\ndef create_app():\n    return flask.Flask('x')\n",
    })
    assert infer(flask).command == "gunicorn 'web:create_app()'"
    fastapi = make_app(tmp_path / "fastapi", {
        "requirements.txt": "fastapi\n",
        "main.py": "from fastapi import FastAPI\napi: FastAPI = FastAPI()\n",
    })
    found = infer(fastapi, installed=["gunicorn"])
    assert found.command == "uvicorn main:api --host ${HOST:-0.0.0.0} --port $PORT"
    assert (found.server, found.server_installed) == ("uvicorn", False)
    assert infer(FIXTURE_APPS / "flask-hello").command == "gunicorn app:app"


def test_nothing_to_infer_and_broken_sources(tmp_path):
    app = make_app(tmp_path / "app", {
        "requirements.txt": "six\n",
        "app.py": "def broken(:\n",
        "main.py": "print('no framework')\n",
    })
    assert infer(app) is None


def test_procfile_always_wins_and_missing_server_warns(tmp_path):
    app = copy_app(FIXTURE_APPS / "flask-hello", tmp_path / "app")
    reporter = Reporter(quiet=True)
    types, inferred = discover_process_types(app, detect(app), ["Flask"], reporter)
    assert types == {"web": "gunicorn app:app"} and inferred is not None
    log = "\n".join(reporter.lines)
    assert "No Procfile: inferred the web process of the Flask app (app.py)" in log
    assert "needs gunicorn, which is not installed: add `gunicorn` to requirements.txt" in log

    (app / "Procfile").write_text("worker: python worker.py\nrelease: ./migrate\n")
    reporter = Reporter(quiet=True)
    types, inferred = discover_process_types(app, detect(app), SERVERS, reporter)
    assert types == {"worker": "python worker.py", "release": "./migrate"}
    assert inferred is None
    assert "Release command: ./migrate" in reporter.lines[-1]


def test_collectstatic_diagnoses_name_the_cause():
    assert "environment variable SECRET_KEY" in diagnose(
        "Traceback ...\n    SECRET_KEY = os.environ['SECRET_KEY']\nKeyError: 'SECRET_KEY'")
    assert "DATABASE_URL" in diagnose(
        "django.core.exceptions.ImproperlyConfigured: Set the DATABASE_URL environment variable")
    assert "STATIC_ROOT" in diagnose(
        "ImproperlyConfigured: You're using the staticfiles app without having set the "
        "STATIC_ROOT setting to a filesystem path.")
    assert "css/missing.png" in diagnose(
        "whitenoise.storage.MissingFileError: The file 'css/missing.png' could not be found "
        "with <whitenoise.storage.CompressedManifestStaticFilesStorage object>.")
    assert diagnose("something else entirely") is None


def test_environment_printout_hides_every_value_the_build_did_not_set(monkeypatch):
    monkeypatch.delenv("SLUGBUILD_SHOW_SECRETS", raising=False)
    config = {
        "SECRET_KEY": "abc123", "AWS_SECRET_ACCESS_KEY": "zzz", "API_TOKEN": "tok",
        "DATABASE_URL": "postgres://user:hunter2@db:5432/app", "DEBUG": "1", "EMPTY_KEY": "",
        "DB_PASS": "pa55word", "MYSQL_PWD": "my-pwd-9", "STRIPE_SK": "sk_live_4242",
    }
    lines = masked_environment({**config, "PATH": "/usr/bin", "LANG": "C.UTF-8"}, config)
    text = "\n".join(lines)
    for secret in ("abc123", "zzz", "tok", "hunter2", "db:5432", "pa55word", "my-pwd-9",
                   "sk_live_4242"):
        assert secret not in text
    assert "DATABASE_URL=<hidden, 35 characters>" in lines
    assert "DEBUG=<hidden, 1 characters>" in lines and "EMPTY_KEY=" in lines
    assert "PATH=/usr/bin" in lines and "LANG=C.UTF-8" in lines
    # A config var named like a build variable is still a config var.
    assert "PATH=<hidden, 9 characters>" in masked_environment({"PATH": "/secret/x"},
                                                                {"PATH": "/secret/x"})
    monkeypatch.setenv("SLUGBUILD_SHOW_SECRETS", "1")
    assert "DATABASE_URL=postgres://***@db:5432/app" in masked_environment(config, config)


def _expected_web_concurrency() -> int:
    """The same rule as the profile script, computed independently from the host."""
    limit = None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        if os.path.exists(path):
            value = Path(path).read_text().strip()
            limit = int(value) if value.isdigit() and len(value) < 16 else None
            break
    if limit is None:
        kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text()
                   .splitlines() if line.startswith("MemTotal:"))
        megabytes = kib // 1024
    else:
        megabytes = limit // (1024 * 1024)
    cpus = len(os.sched_getaffinity(0))
    return max(1, min(cpus * 2 + 1, megabytes // MB_PER_WORKER))


def _source_profile(root: Path, env: dict[str, str]) -> list[str]:
    script = (f'HOME={root}; for f in "$HOME"/.profile.d/*.sh; do . "$f"; done; '
              'printf "%s\\n" "$WEB_CONCURRENCY" "$FORWARDED_ALLOW_IPS" "$GUNICORN_CMD_ARGS"')
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", **env}, check=True)
    return result.stdout.splitlines()


def test_profile_sets_heroku_web_defaults_and_user_values_win(tmp_path):
    write_profile(tmp_path)
    assert (tmp_path / WEB_PROFILE_SCRIPT).is_file()
    assert _source_profile(tmp_path, {}) == [
        str(_expected_web_concurrency()), "*", "--access-logfile -"]
    # What `slugbuild run` or a config var sets is kept.
    assert _source_profile(tmp_path, {
        "WEB_CONCURRENCY": "3", "FORWARDED_ALLOW_IPS": "10.0.0.1",
        "GUNICORN_CMD_ARGS": "--bind 127.0.0.1:5000",
    }) == ["3", "10.0.0.1", "--bind 127.0.0.1:5000"]


def test_bin_release_keeps_inferred_types_when_herokuish_empties_release(tmp_path):
    write_release_files(tmp_path, {"web": "uvicorn main:app --host ${HOST:-0.0.0.0}"})
    assert (tmp_path / RELEASE_COPY).read_text() == (tmp_path / ".release").read_text()
    # herokuish: `bin/release BUILD_DIR CACHE_DIR > BUILD_DIR/.release`
    with open(tmp_path / ".release", "w") as release:
        subprocess.run([str(BUILDPACK_RELEASE), str(tmp_path), str(tmp_path / "cache")],
                       stdout=release, check=True, timeout=30,
                       env={**os.environ, "SLUGBUILD_PYTHON_BIN": sys.executable})
    text = (tmp_path / ".release").read_text()
    assert yaml.safe_load(text)["default_process_types"] == {
        "web": "uvicorn main:app --host ${HOST:-0.0.0.0}"}


def test_collectstatic_disabled_only_by_a_real_value():
    assert not collectstatic_disabled({})
    assert not collectstatic_disabled({"DISABLE_COLLECTSTATIC": "0"})
    assert not collectstatic_disabled({"DISABLE_COLLECTSTATIC": " "})
    assert collectstatic_disabled({"DISABLE_COLLECTSTATIC": "1"})
    assert collectstatic_disabled({"DISABLE_COLLECTSTATIC": "true"})


def test_hooks_run_with_or_without_shebang_and_fail_clearly(tmp_path):
    make_app(tmp_path, {
        "bin/pre_compile": "echo \"pre sees $GREETING\" > pre.txt\n",
        "bin/post_compile": "#!/no/such/interpreter\n",
    })
    reporter = Reporter(quiet=True)
    python = Path(sys.executable)
    assert run_hook("pre_compile", tmp_path, python, {"GREETING": "hello"}, reporter)
    assert (tmp_path / "pre.txt").read_text() == "pre sees hello\n"
    assert not run_hook("no_such_hook", tmp_path, python, {}, reporter)
    with pytest.raises(SlugbuildError) as bad_shebang:
        run_hook("post_compile", tmp_path, python, {}, reporter)
    assert bad_shebang.value.code == "hook-failed"
    assert "could not be started" in bad_shebang.value.found
    (tmp_path / "bin/post_compile").write_text("#!/bin/sh\necho broken >&2\nexit 4\n")
    with pytest.raises(SlugbuildError) as failed:
        run_hook("post_compile", tmp_path, python, {}, reporter)
    assert failed.value.title == "The app's post_compile hook failed"
    assert failed.value.found == "`bin/post_compile` exited with code 4."
    assert failed.value.output == "broken"




def test_a_hooks_pip_is_not_the_hosts_and_says_pip_is_not_in_the_slug(tmp_path):
    # The slug's bin/ has no pip; the host's next on PATH (pyenv's shims, /usr/bin/pip)
    # would install into the host's Python and leave the slug without the package.
    slug_bin = tmp_path / ".heroku/python/bin"
    slug_bin.mkdir(parents=True)
    make_app(tmp_path, {"bin/post_compile": "#!/bin/sh\nset -e\npip --version\npip3 --version\n"
                                            "echo reached > reached.txt\n"})
    reporter = Reporter(quiet=True)
    with pytest.raises(SlugbuildError) as failed:
        run_hook("post_compile", tmp_path, slug_bin / "python", {}, reporter, "3.12.1")
    assert not (tmp_path / "reached.txt").exists()
    assert "No module named 'pip' in the slug's Python" in failed.value.output
    assert "pip is not in the slug's Python" in failed.value.found
    assert "list the package in requirements.txt" in failed.value.found
    for name in ("pip3", "pip3.12"):
        (tmp_path / "bin/post_compile").write_text(f"#!/bin/sh\n{name} install six\n")
        with pytest.raises(SlugbuildError) as versioned:
            run_hook("post_compile", tmp_path, slug_bin / "python", {}, reporter, "3.12.1")
        assert "pip is not in the slug's Python" in versioned.value.found


def test_python_dash_m_pip_without_pip_is_explained():
    output = "Collecting nothing\n/app/.heroku/python/bin/python: No module named pip\n"
    cause = diagnose_missing_module(output, "3.12.1", "Pipfile.lock")
    assert cause is not None and cause.startswith("pip is not in the slug's Python")
    assert "list the package in Pipfile.lock" in cause
    assert "the module requests cannot be imported" in str(
        diagnose_missing_module("python3.12: No module named requests.\n", "3.12.1"))
