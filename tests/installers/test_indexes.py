"""Where packages come from: indexes named by the app, by config vars, and by locks.

Two loopback PEP 503 indexes serve a package of the same name and version
whose module says which index it came from ("private" or "public"); the
private one wants credentials. Whatever the installer path, the index the
app names is the one used, and credentials never show.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import subprocess
import threading
from pathlib import Path

import pytest

from slugbuild import indexes

from ..helpers import make_app, minimal_wheel, run_cli, unpack

NAME, VERSION = "sbprobe", "1.0"
WHEEL = f"{NAME}-{VERSION}-py3-none-any.whl"
USER, TOKEN = "deploy", "s3cret-t0ken"


def build_wheel(origin: str) -> bytes:
    """A minimal valid wheel whose module reports ``origin``."""
    return minimal_wheel(NAME, VERSION, f'ORIGIN = "{origin}"\n')


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        wanted = self.server.auth
        if wanted and self.headers.get("Authorization") != wanted:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="private"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()


def serve_index(root: Path, origin: str, auth: str | None):
    """A PEP 503 index in ``root`` serving the ``origin`` wheel, on 127.0.0.1."""
    data = build_wheel(origin)
    (root / "files").mkdir(parents=True)
    (root / "files" / WHEEL).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    (root / "simple" / NAME).mkdir(parents=True)
    (root / "simple" / "index.html").write_text(f'<a href="{NAME}/">{NAME}</a>\n')
    (root / "simple" / NAME / "index.html").write_text(
        f'<a href="../../files/{WHEEL}#sha256={digest}">{WHEEL}</a>\n')
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: _Handler(*a, directory=str(root)))
    server.requests, server.auth, server.digest = [], auth, digest
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture(scope="module")
def two_indexes(tmp_path_factory):
    """(private, public): servers with .url (private's holding credentials) and .digest."""
    root = tmp_path_factory.mktemp("indexes")
    auth = "Basic " + base64.b64encode(f"{USER}:{TOKEN}".encode()).decode()
    private, private_thread = serve_index(root / "private", "private", auth)
    public, public_thread = serve_index(root / "public", "public", None)
    private.url = f"http://{USER}:{TOKEN}@127.0.0.1:{private.server_address[1]}/simple"
    public.url = f"http://127.0.0.1:{public.server_address[1]}/simple"
    try:
        yield private, public
    finally:
        for server, thread in ((private, private_thread), (public, public_thread)):
            server.shutdown()
            server.server_close()
            thread.join()


# --- quick: the settings, as pip reads them -------------------------------------------

def test_a_files_index_replaces_the_config_vars_index_as_in_pip(tmp_path):
    app = make_app(tmp_path, {
        "requirements.txt": "-r base.txt\n--extra-index-url https://extra.example/simple\n"
                            "x==1\n",
        "base.txt": "--index-url=https://${TOKEN}@private.example/simple\n"
                    "--find-links wheels\n--trusted-host private.example\ny==2\n",
        "wheels/.keep": "",
    })
    settings = indexes.for_requirements(app, "requirements.txt",
                              {"PIP_INDEX_URL": "https://mirror.example/simple",
                               "TOKEN": "abc"})
    assert settings.index_urls == ["https://abc@private.example/simple",
                                   "https://extra.example/simple"]
    assert settings.find_links == [str((app / "wheels").resolve())]
    assert settings.trusted_hosts == ["private.example"]
    env = settings.uv_env()
    assert env["UV_INDEX_URL"] == "https://abc@private.example/simple"
    assert env["UV_EXTRA_INDEX_URL"] == "https://extra.example/simple"
    assert env["UV_INDEX_STRATEGY"] == "first-index"
    record = json.dumps(settings.record())
    assert "abc" not in record and "https://***@private.example/simple" in record
    assert "abc" not in settings.shown()


def test_no_index_wins_over_later_indexes(tmp_path):
    app = make_app(tmp_path, {"requirements.txt": "--no-index\n-i https://x.example/simple\n"
                                                  "--find-links ./w\nx==1\n"})
    settings = indexes.for_requirements(app, "requirements.txt", {})
    assert settings.no_index and settings.index_urls == []
    assert settings.uv_env()["UV_NO_INDEX"] == "1"
    assert "UV_INDEX_URL" not in settings.uv_env()


def test_no_file_options_keep_the_config_vars():
    settings = indexes.from_config({"PIP_EXTRA_INDEX_URL": "https://a.example/simple "
                                                          "https://b.example/simple"})
    assert settings.index_urls == [indexes.DEFAULT_INDEX_URL, "https://a.example/simple",
                                   "https://b.example/simple"]


@pytest.mark.parametrize(("manager", "config", "expected"), [
    ("pipenv", {"PIPENV_PYPI_MIRROR": "https://mirror.example/simple"},
     ["https://mirror.example/simple", "https://private.example/simple"]),
    ("pipenv", {"PIP_INDEX_URL": "https://m2.example/simple"},
     ["https://m2.example/simple", "https://private.example/simple"]),
    ("poetry", {"PIP_EXTRA_INDEX_URL": "https://more.example/simple"},
     ["https://pypi.org/simple", "https://private.example/simple",
      "https://more.example/simple"]),
])
def test_a_mirror_stands_in_for_pypi_in_a_lock(manager, config, expected):
    export = ("-i https://pypi.org/simple\n--extra-index-url https://private.example/simple\n"
              "x==1 --hash=sha256:00\n")
    assert indexes.for_lock_export(export, config, manager).index_urls == expected


def test_a_changed_index_or_its_token_changes_the_layer_key(tmp_path):
    from slugbuild.dependencies import layer_key
    from slugbuild.installers.pip import PipInstaller

    app = make_app(tmp_path, {"requirements.txt": "-i https://${TOKEN}@a.example/simple\nx==1\n"})
    runtime = {"name": "python-3.12", "key": "k"}
    installer = PipInstaller().plan(app, "requirements.txt", {})
    files = list(installer.key_files)
    first, inputs = layer_key(app, files, runtime, installer, {"TOKEN": "one"})
    second, _ = layer_key(app, files, runtime, installer, {"TOKEN": "two"})
    assert first != second and "one" not in json.dumps(inputs)
    (app / "requirements.txt").write_text("-i https://${TOKEN}@b.example/simple\nx==1\n")
    third, _ = layer_key(app, files, runtime, installer, {"TOKEN": "one"})
    assert third not in (first, second)


# --- end to end: real builds against the two loopback indexes --------------------------

def _pipenv_app(directory: Path, pipfile_text: str, package: dict) -> Path:
    """A Pipenv app whose current Pipfile.lock pins ``package`` (its lock entry)."""
    from slugbuild.installers.pipenv import pipfile_hash
    from slugbuild.toml_compat import tomllib

    pipfile = tomllib.loads(pipfile_text)
    lock = {"_meta": {"hash": {"sha256": pipfile_hash(pipfile)}, "pipfile-spec": 6,
                      "requires": {}, "sources": pipfile["source"]},
            "default": {NAME: package}, "develop": {}}
    return make_app(directory, {
        "Pipfile": pipfile_text, "Pipfile.lock": json.dumps(lock, indent=4),
        ".python-version": "3.13\n",
        "Procfile": "web: python -m http.server $PORT --bind 127.0.0.1\n"})


def _compile(tmp_path: Path, app: Path, cache_dir: Path, *env: str):
    slug = tmp_path / f"{app.name}.tgz"
    args = ["compile", app, "-o", slug, "--cache-dir", cache_dir]
    for assignment in env:
        args += ["--env", assignment]
    return run_cli(*args), slug


def _origin(tmp_path: Path, slug: Path) -> str:
    root = unpack(slug, tmp_path / f"{slug.stem}-unpacked")
    python = root / ".heroku" / "python" / "bin" / "python"
    return subprocess.run([str(python), "-c", f"import {NAME}; print({NAME}.ORIGIN)"],
                          capture_output=True, text=True, check=True, cwd=root).stdout.strip()


def _no_secret(result, slug: Path) -> None:
    assert TOKEN not in result.stdout + result.stderr
    if slug.with_suffix(".json").exists():
        assert TOKEN not in slug.with_suffix(".json").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("requirement", [f"{NAME}=={VERSION}", f"{NAME}>={VERSION}",
                                         f"--prefer-binary\n{NAME}>={VERSION}"],
                         ids=["pinned-uv", "ranges-uv", "pip"])
def test_the_index_a_requirements_file_names_is_used(tmp_path, cache_dir, two_indexes,
                                                     requirement):
    private, public = two_indexes
    app = make_app(tmp_path / "app", {
        "requirements.txt": f"-i {private.url}\n{requirement}\n",
        ".python-version": "3.13\n",
        "Procfile": "web: python -m http.server $PORT --bind 127.0.0.1\n",
    })
    # A config var naming another index must not win over the file (pip's rule).
    result, slug = _compile(tmp_path, app, cache_dir, f"PIP_INDEX_URL={public.url}")
    assert result.returncode == 0, result.stderr
    _no_secret(result, slug)
    assert _origin(tmp_path, slug) == "private"
    meta = json.loads(slug.with_suffix(".json").read_text())
    recorded = meta["package_manager"]["sources"]
    assert recorded["indexes"][0]["url"].startswith("http://***@127.0.0.1:")
    assert recorded["packages"][NAME] == recorded["indexes"][0]["url"]


@pytest.mark.slow
def test_extra_index_first_index_strategy_and_a_new_index_never_reuses_a_layer(
        tmp_path, cache_dir, two_indexes):
    private, public = two_indexes
    files = {".python-version": "3.13\n",
             "Procfile": "web: python -m http.server $PORT --bind 127.0.0.1\n"}
    app = make_app(tmp_path / "extra", {
        **files, "requirements.txt": f"--extra-index-url {private.url}\n{NAME}=={VERSION}\n"})
    result, slug = _compile(tmp_path, app, cache_dir, f"PIP_INDEX_URL={public.url}")
    assert result.returncode == 0, result.stderr
    _no_secret(result, slug)
    assert "more than one index" in result.stderr and "first-index" in result.stderr
    assert _origin(tmp_path, slug) == "private"  # an extra index is searched first

    # The same requirement from the public index only: a fresh layer, public content.
    (app / "requirements.txt").write_text(f"-i {public.url}\n{NAME}=={VERSION}\n")
    again, slug_two = _compile(tmp_path, app, cache_dir)
    assert again.returncode == 0, again.stderr
    assert "Restoring dependencies from cache" not in again.stderr
    assert _origin(tmp_path, slug_two) == "public"


@pytest.mark.slow
def test_pipenv_mirror_config_var_replaces_pypi_in_the_lock(tmp_path, cache_dir, two_indexes):
    private, public = two_indexes
    pipfile_text = ('[[source]]\nname = "pypi"\nurl = "https://pypi.org/simple"\n'
                    f'verify_ssl = true\n\n[packages]\n{NAME} = "=={VERSION}"\n')
    app = _pipenv_app(tmp_path / "pipenv", pipfile_text,
                      {"hashes": [f"sha256:{private.digest}"], "version": f"=={VERSION}"})
    result, slug = _compile(tmp_path, app, cache_dir, f"PIPENV_PYPI_MIRROR={private.url}")
    assert result.returncode == 0, result.stderr
    _no_secret(result, slug)
    assert _origin(tmp_path, slug) == "private"

    # The public index's wheel does not match the lock's hash: refused, naming that index.
    failed, failed_slug = _compile(tmp_path, app, cache_dir, f"PIPENV_PYPI_MIRROR={public.url}")
    assert failed.returncode == 1
    _no_secret(failed, failed_slug)
    # The hint names the mirror used (a config var's value, which the log masks), not PyPI.
    assert "package index (" in failed.stderr and "package index (https://pypi.org" \
        not in failed.stderr


@pytest.mark.slow
def test_pipenv_per_package_index_is_searched_alone(tmp_path, cache_dir, two_indexes):
    """A Pipfile.lock entry's ``index`` is the only index for that package, even when
    another source (searched first otherwise) has the same name."""
    private, public = two_indexes
    port = private.server_address[1]
    private_source = f"http://${{IDX_USER}}:${{IDX_TOKEN}}@127.0.0.1:{port}/simple"
    pipfile_text = (f'[[source]]\nname = "public"\nurl = "{public.url}"\nverify_ssl = false\n\n'
                    f'[[source]]\nname = "private"\nurl = "{private_source}"\n'
                    f'verify_ssl = false\n\n'
                    f'[packages]\n{NAME} = {{version = "=={VERSION}", index = "public"}}\n')
    app = _pipenv_app(tmp_path / "per-package", pipfile_text,
                      {"hashes": [f"sha256:{public.digest}"], "index": "public",
                       "version": f"=={VERSION}"})
    result, slug = _compile(tmp_path, app, cache_dir, f"IDX_USER={USER}", f"IDX_TOKEN={TOKEN}")
    assert result.returncode == 0, result.stderr
    _no_secret(result, slug)
    assert _origin(tmp_path, slug) == "public"
    sources = json.loads(slug.with_suffix(".json").read_text())["package_manager"]["sources"]
    assert sources["packages"][NAME] == public.url
    assert [i["url"] for i in sources["indexes"]] == [public.url, f"http://***@127.0.0.1:{port}/simple"]


@pytest.mark.slow
@pytest.mark.parametrize("requirement", ["nosuchpkg-slugbuild==1.0", "nosuchpkg-slugbuild>=1",
                                         "--prefer-binary\nnosuchpkg-slugbuild>=1"],
                         ids=["uv", "ranges-uv", "pip"])
def test_a_failed_install_names_the_index_used_without_credentials(tmp_path, cache_dir,
                                                                   two_indexes, requirement):
    private, _public = two_indexes
    app = make_app(tmp_path / "missing", {
        "requirements.txt": f"--index-url {private.url}\n{requirement}\n",
        ".python-version": "3.13\n",
        "Procfile": "web: python -m http.server $PORT --bind 127.0.0.1\n"})
    result, slug = _compile(tmp_path, app, cache_dir)
    assert result.returncode == 1
    _no_secret(result, slug)
    port = private.server_address[1]
    assert f"package index (http://***@127.0.0.1:{port}/simple)" in result.stderr


@pytest.mark.slow
def test_uv_project_index_with_credentials_from_uvs_config_vars(tmp_path, cache_dir,
                                                                two_indexes):
    """uv.lock ties the package to the project's private index (whose URL holds no
    credentials); UV_INDEX_PRIVATE_USERNAME/_PASSWORD config vars give them, as in uv."""
    import glob
    import os

    private, public = two_indexes
    bare = f"http://127.0.0.1:{private.server_address[1]}/simple"
    app = make_app(tmp_path / "uvproject", {
        "pyproject.toml": (
            '[project]\nname = "app"\nversion = "0"\nrequires-python = ">=3.12"\n'
            f'dependencies = ["{NAME}=={VERSION}"]\n\n'
            f'[[tool.uv.index]]\nname = "public"\nurl = "{public.url}"\ndefault = true\n\n'
            f'[[tool.uv.index]]\nname = "private"\nurl = "{bare}"\nexplicit = true\n\n'
            f'[tool.uv.sources]\n{NAME} = {{ index = "private" }}\n'),
        ".python-version": "3.12\n",
        "Procfile": "web: python -m http.server $PORT --bind 127.0.0.1\n"})
    pythons = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))
    if not pythons:
        pytest.skip("no CPython 3.12 to lock with")
    from uv import find_uv_bin

    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_"))}
    locked = subprocess.run(
        [find_uv_bin(), "lock", "--python", pythons[-1]], cwd=app, capture_output=True,
        text=True, env={**env, "UV_NO_CONFIG": "1", "UV_PYTHON_DOWNLOADS": "never",
                        "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
                        "UV_INDEX_PRIVATE_USERNAME": USER, "UV_INDEX_PRIVATE_PASSWORD": TOKEN})
    assert locked.returncode == 0, locked.stderr
    assert TOKEN not in (app / "uv.lock").read_text()

    result, slug = _compile(tmp_path, app, cache_dir, f"UV_INDEX_PRIVATE_USERNAME={USER}",
                            f"UV_INDEX_PRIVATE_PASSWORD={TOKEN}")
    assert result.returncode == 0, result.stderr
    _no_secret(result, slug)
    assert _origin(tmp_path, slug) == "private"
    sources = json.loads(slug.with_suffix(".json").read_text())["package_manager"]["sources"]
    assert sources["packages"][NAME] == f"http://***@127.0.0.1:{private.server_address[1]}/simple"


@pytest.mark.parametrize(("manager", "files", "config", "expected"), [
    ("uv", {"pyproject.toml": '[[tool.uv.index]]\nname = "corp"\n'
                              'url = "https://corp.example/simple"\n',
            "uv.lock": '[[package]]\nname = "Foo"\nversion = "1"\n'
                       'source = { registry = "https://corp.example/simple" }\n'},
     {"UV_INDEX": "corp=https://mirror.example/corp", "UV_INDEX_CORP_USERNAME": "u",
      "UV_INDEX_CORP_PASSWORD": "p@ss"},
     "https://u:p%40ss@mirror.example/corp"),
    ("poetry", {"poetry.lock": '[[package]]\nname = "foo"\nversion = "1"\n\n'
                               '[package.source]\ntype = "legacy"\n'
                               'url = "https://corp.example/simple"\nreference = "my-corp"\n'},
     {"POETRY_REPOSITORIES_MY_CORP_URL": "https://mirror.example/corp",
      "POETRY_HTTP_BASIC_MY_CORP_USERNAME": "u"},
     "https://u@mirror.example/corp"),
])
def test_named_index_overrides_and_credentials_from_each_tools_config_vars(
        tmp_path, manager, files, config, expected):
    app = make_app(tmp_path, files)
    assert indexes.package_indexes(app, manager, f"{manager}.lock", config) == {"foo": expected}
    record, per_package = indexes.app_sources(app, manager, f"{manager}.lock", config)
    assert "p%40ss" not in json.dumps(record) + json.dumps(per_package)


def test_a_local_find_links_directory_keys_the_layer_and_is_recorded_relative(tmp_path):
    from slugbuild.installers.pip import PipInstaller

    app = make_app(tmp_path / "app", {"requirements.txt": "--find-links wheels\nx==1\n",
                                      "wheels/x-1-py3-none-any.whl": "one"})
    files = PipInstaller().plan(app, "requirements.txt", {}).key_files
    assert "wheels/x-1-py3-none-any.whl" in files
    record, _ = indexes.app_sources(app, "pip", "requirements.txt", {})
    assert [link["url"] for link in record["find_links"]] == ["./wheels"]


@pytest.mark.parametrize("text", [
    "-i https://private.example/simple\n--extra-index-url https://pypi.org/simple\nx==1\n",
    "--extra-index-url https://private.example/simple\nx==1\n",
])
def test_pypi_is_searched_last_however_the_private_index_is_named(tmp_path, text):
    app = make_app(tmp_path, {"requirements.txt": text})
    env = indexes.for_requirements(app, "requirements.txt", {}).uv_env()
    assert env["UV_EXTRA_INDEX_URL"] == "https://private.example/simple"
    assert env["UV_INDEX_URL"] == "https://pypi.org/simple"
