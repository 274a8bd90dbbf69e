"""End to end: the Django fixture compiled, unpacked elsewhere, served by gunicorn."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
import requests

from slugbuild import compile_app
from slugbuild.log import Reporter

from ..helpers import DJANGO_APP, Server

pytestmark = pytest.mark.slow


def test_slug_serves_pages_and_hashed_static_files(django_unpacked):
    with Server(django_unpacked) as server:
        page = requests.get(server.base + "/", timeout=10)
        assert page.status_code == 200
        assert "polls" in page.text.lower()
        css = re.search(r'href="(/static/polls/style\.[0-9a-f]{12}\.css)"', page.text)
        assert css, page.text
        static = requests.get(server.base + css.group(1), timeout=10)
        assert static.status_code == 200
        assert "immutable" in static.headers.get("Cache-Control", "")
        admin_css = requests.get(server.base + "/static/admin/css/base.css", timeout=10)
        assert admin_css.status_code == 200
    # slugbuild run forwarded SIGTERM; gunicorn shut down cleanly.
    code, output = server.stop()
    assert code == 0, output
    assert "Shutting down" in output


def test_run_accepts_the_tarball_and_runs_release_process(django_build):
    completed = subprocess.run(
        [os.sys.executable, "-m", "slugbuild", "run", str(django_build.slug_path), "release"],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Applying polls.0001_initial" in completed.stdout


def test_interpreter_loads_libpython_from_inside_the_slug(django_unpacked):
    root = django_unpacked
    python = root / ".heroku" / "python" / "bin" / "python3.12"
    probe = (
        "import sys, ssl, sqlite3, django\n"
        "maps = open('/proc/self/maps').read().split()\n"
        "print([p for p in maps if 'libpython' in p][0])\n"
        "print(sys.prefix)\n"
        "print(django.__file__)\n"
    )
    # No LD_LIBRARY_PATH, no PYTHONHOME: the binary must find everything itself.
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin"}, cwd="/")
    assert result.returncode == 0, result.stderr
    libpython, prefix, django_file = result.stdout.split()
    assert Path(libpython).resolve().is_relative_to(root.resolve())
    assert Path(prefix).resolve() == (root / ".heroku" / "python").resolve()
    assert Path(django_file).resolve().is_relative_to(root.resolve())


def test_console_scripts_run_from_anywhere(django_unpacked):
    root = django_unpacked
    gunicorn = root / ".heroku" / "python" / "bin" / "gunicorn"
    result = subprocess.run([str(gunicorn), "--version"], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin"}, cwd="/")
    assert result.returncode == 0, result.stderr
    assert "gunicorn" in (result.stdout + result.stderr)


def test_nothing_in_the_slug_points_at_the_build_machine(django_build, cache_dir):
    host_prefixes = {os.path.realpath(p) for p in (
        Path.home() / ".pyenv" / "versions" / "3.12.1", os.sys.base_prefix)}
    needles = [str(cache_dir).encode(), *(p.encode() for p in host_prefixes),
               str(DJANGO_APP).encode()]
    with tarfile.open(django_build.slug_path) as tar:
        for member in tar:
            for needle in needles:
                assert needle not in member.name.encode()
                assert needle not in member.linkname.encode()
            if member.isfile():
                data = tar.extractfile(member).read()
                for needle in needles:
                    assert needle not in data, f"{member.name} names {needle!r}"


def test_slug_json_and_tarball_format(django_build):
    meta = json.loads(django_build.metadata_path.read_text())
    assert meta["process_types"] == {
        "web": "gunicorn mysite.wsgi --log-file -",
        "release": "python manage.py migrate --noinput",
    }
    assert meta["release_command"] == "python manage.py migrate --noinput"
    assert meta["checksum"] == f"SHA256:{django_build.sha256}"
    assert meta["size"] == django_build.slug_path.stat().st_size
    assert meta["runtime"]["requested"] == "3.12"
    assert meta["runtime"]["resolved"].startswith("3.12.")
    assert meta["runtime"]["source_file"] == ".python-version"
    names = {p["name"].lower() for p in meta["packages"]}
    assert {"django", "gunicorn", "whitenoise"} <= names
    assert meta["package_manager"]["name"] == "pip"
    assert meta["buildpack_provided_description"] == "Python"
    with tarfile.open(django_build.slug_path) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[0] == "."
    # Every directory first (sorted), then the runtime's and the packages' files
    # (the cached layer parts), then the app's.
    is_dir = [m.isdir() for m in members]
    assert is_dir == sorted(is_dir, reverse=True)
    directories = names[:sum(is_dir)]
    assert directories == sorted(directories, key=lambda n: n.split("/"))
    files = names[len(directories):]
    in_layers = sum(n.startswith("./.heroku/python/") for n in files)
    assert all(n.startswith("./.heroku/python/") for n in files[:in_layers])
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)
    assert all(m.mode in (0o644, 0o755, 0o777) for m in members)
    assert len({m.mtime for m in members}) == 1
    assert "./.profile.d/python.sh" in names
    assert "./Procfile" in names
    assert not any("/__pycache__/" in n and not n.startswith("./.heroku/") for n in names)
    assert not any(n.startswith("./.heroku/python/lib/python3.12/test/") for n in names)
    assert not any(n.endswith("libpython3.12.a") for n in names)
    assert not any("/site-packages/pip/" in n for n in names)


def test_warm_build_restores_layer_and_is_byte_identical(django_build, cache_dir, tmp_path):
    reporter = Reporter(quiet=True)
    again = compile_app(DJANGO_APP, tmp_path / "again.tgz", cache_dir=cache_dir,
                        reporter=reporter)
    log = "\n".join(again.log)
    assert "Restoring Python 3.12" in log
    assert "Restoring dependencies from cache" in log
    assert "Installing requirements" not in log
    assert again.sha256 == django_build.sha256
    assert again.slug_path.read_bytes() == django_build.slug_path.read_bytes()
    assert again.metadata_path.read_text() == django_build.metadata_path.read_text()
