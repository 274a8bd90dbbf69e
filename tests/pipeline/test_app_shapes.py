"""App shapes beyond one Python app at the root: monorepos (APP_BASE), nltk.txt,
assets built by Node beside the Python app."""

from __future__ import annotations

import json
import os
import re
import tarfile
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import pytest
import requests

from slugbuild import compile_app, errors
from slugbuild.app_base import choose_app_base, resolve_app_base
from slugbuild.buildpack_lists import expand_spec, listed_buildpacks
from slugbuild.buildpack_runner import buildpacks_for
from slugbuild.cache import Cache
from slugbuild.detect import detect, python_subdirectories
from slugbuild.log import Reporter
from slugbuild.nltk_data import expand, parse_index, provide_nltk_data, read_nltk_list
from slugbuild.node_assets import build_script, node_assets_warning, run_node_build

from ..helpers import FIXTURE_APPS, Server, copy_app, make_app, run_cli, serve_directory
from ..helpers import nltk_package_zip as _package_zip
from ..helpers import write_nltk_index as _write_index

MONOREPO = FIXTURE_APPS / "monorepo-backend"


# --- apps in a subdirectory (APP_BASE) ----------------------------------------------------


def test_app_base_parameter_wins_over_the_config_var() -> None:
    assert choose_app_base("api", {"APP_BASE": "backend"}) == ("api", "--app-base")
    assert choose_app_base(None, {"APP_BASE": "backend"}) == (
        "backend", "the APP_BASE config var")
    assert choose_app_base(None, {"APP_BASE": " "}) is None
    assert choose_app_base(None, {}) is None


@pytest.mark.parametrize("value", ["backend", "./backend/", "backend/"])
def test_app_base_resolves_inside_the_app(tmp_path: Path, value: str) -> None:
    (tmp_path / "backend").mkdir()
    assert resolve_app_base(tmp_path, value, "--app-base") == tmp_path / "backend"


def test_app_base_dot_is_the_root(tmp_path: Path) -> None:
    assert resolve_app_base(tmp_path, ".", "--app-base") == tmp_path


def test_app_base_symlink_inside_the_app_is_the_directory_it_names(tmp_path: Path) -> None:
    (tmp_path / "services" / "api").mkdir(parents=True)
    (tmp_path / "api").symlink_to("services/api")
    assert resolve_app_base(tmp_path, "api", "--app-base") == tmp_path / "services" / "api"


@pytest.mark.parametrize("value, problem", [
    ("../elsewhere", "`..`"),
    ("backend/../../x", "`..`"),
    ("/etc", "absolute"),
    ("~/app", "absolute"),
    ("missing", "does not exist"),
    ("file.txt", "not a directory"),
    ("escape", "outside the app root"),
])
def test_app_base_refuses_what_is_not_a_directory_of_the_app(tmp_path: Path, value: str,
                                                             problem: str) -> None:
    root = tmp_path / "app"
    root.mkdir()
    (root / "file.txt").write_text("x")
    (tmp_path / "outside").mkdir()
    (root / "escape").symlink_to(tmp_path / "outside")
    with pytest.raises(errors.SlugbuildError) as caught:
        resolve_app_base(root, value, "--app-base")
    assert caught.value.code == "app-base-invalid"
    assert problem in caught.value.found
    assert repr(value) in caught.value.found


def test_not_a_python_app_names_the_one_subdirectory_that_is(tmp_path: Path) -> None:
    copy_app(MONOREPO, tmp_path / "repo")
    with pytest.raises(errors.SlugbuildError) as caught:
        detect(tmp_path / "repo")
    assert caught.value.code == "not-a-python-app"
    assert "`backend/` holds a Python app" in caught.value.found
    assert "--app-base backend" in caught.value.found


def test_not_a_python_app_lists_several_subdirectories(tmp_path: Path) -> None:
    make_app(tmp_path, {"api/requirements.txt": "", "services/worker/Pipfile.lock": "{}",
                        "frontend/main.py": "", "node_modules/x/requirements.txt": "",
                        ".hidden/requirements.txt": ""})
    assert python_subdirectories(tmp_path) == ["api", "services/worker"]
    with pytest.raises(errors.SlugbuildError) as caught:
        detect(tmp_path)
    assert "`api/`, `services/worker/`" in caught.value.found


def test_not_a_python_app_without_subdirectories_says_nothing_more(tmp_path: Path) -> None:
    make_app(tmp_path, {"frontend/main.py": "", "README.md": ""})
    with pytest.raises(errors.SlugbuildError) as caught:
        detect(tmp_path)
    assert "subdirector" not in caught.value.found


def test_cli_refuses_an_escaping_app_base(tmp_path: Path) -> None:
    copy_app(MONOREPO, tmp_path / "repo")
    result = run_cli("compile", tmp_path / "repo", "-o", tmp_path / "slug.tgz",
                     "--env", "APP_BASE=../..")
    assert result.returncode == 1
    assert "The app base is not a directory inside the app" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "slug.tgz").exists()


def test_cli_detect_with_app_base() -> None:
    result = run_cli("detect", MONOREPO, "--app-base", "backend", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["package_manager"] == "pip"


@pytest.mark.slow
def test_monorepo_backend_builds_from_app_base_and_serves(tmp_path: Path, cache_dir: Path
                                                          ) -> None:
    """APP_BASE=backend: the slug is backend/'s content only, and its web process runs."""
    slug = tmp_path / "slug.tgz"
    result = compile_app(MONOREPO, slug, cache_dir=cache_dir, env={"APP_BASE": "backend"},
                         reporter=Reporter(quiet=True))
    assert result.process_types == {"web": "gunicorn app:app"}
    with tarfile.open(slug) as tar:
        names = set(tar.getnames())
    assert "./app.py" in names and "./Procfile" in names
    assert not any(name.startswith(("./frontend", "./backend")) or name == "./README.md"
                   for name in names)
    with Server(slug) as server:
        answer = requests.get(server.base + "/", timeout=10)
    assert answer.text == "Hello from the backend; frontend shipped: False\n"
    # The parameter gives the same bytes as the config var.
    again = compile_app(MONOREPO, tmp_path / "again.tgz", cache_dir=cache_dir,
                        app_base="backend", reporter=Reporter(quiet=True),
                        source_date_epoch=None)
    assert again.sha256 == result.sha256
    assert os.path.getsize(slug) == again.size


# --- nltk.txt -------------------------------------------------------------------------------

NLTK_APP = FIXTURE_APPS / "flask-nltk"
STOPWORDS = "slugbuild\nthe\nand\n"


@pytest.fixture()
def nltk_mirror(tmp_path: Path):
    """A loopback HTTP server over a directory laid out like NLTK's data index."""
    root = tmp_path / "mirror"
    root.mkdir()
    with serve_directory(root, _QuietHandler) as base:
        yield root, f"{base}/index.xml"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_nltk_list_is_words_without_comments(tmp_path: Path) -> None:
    assert read_nltk_list(tmp_path) is None
    (tmp_path / "nltk.txt").write_text("# corpora\r\npunkt stopwords\n\n  wordnet\npunkt\n")
    assert read_nltk_list(tmp_path) == ["punkt", "stopwords", "wordnet"]
    (tmp_path / "nltk.txt").write_text("punkt\n../../etc\n")
    with pytest.raises(errors.SlugbuildError) as caught:
        read_nltk_list(tmp_path)
    assert caught.value.code == "nltk-list-invalid" and "line 2" in caught.value.found


def test_nltk_index_expands_collections_and_refuses_unknown_names() -> None:
    index = parse_index(
        '<nltk_data><packages><package id="a" url="a.zip" subdir="corpora" checksum="x"/>'
        '<package id="b" url="http://h/b.zip" subdir="tokenizers" unzip="0"/></packages>'
        '<collections><collection id="all"><item ref="b"/><item ref="a"/></collection>'
        '<collection id="loop"><item ref="loop"/></collection></collections></nltk_data>',
        "http://mirror/nltk/index.xml")
    assert index.packages["a"].url == "http://mirror/nltk/a.zip"
    assert not index.packages["b"].unzip
    assert [p.id for p in expand(["all", "a"], index)] == ["a", "b"]
    assert expand(["loop"], index) == []
    with pytest.raises(errors.SlugbuildError) as caught:
        expand(["alll"], index)
    assert caught.value.code == "nltk-corpus-unavailable" and "(close: all)" in caught.value.found


@pytest.mark.parametrize("xml", ["not xml", "<nltk_data/>",
                                 '<x><package id="a" url="a.zip" subdir="../up"/></x>'])
def test_nltk_index_unusable(xml: str) -> None:
    with pytest.raises(errors.SlugbuildError) as caught:
        parse_index(xml, "http://mirror/index.xml")
    assert caught.value.code == "nltk-index-unusable"


def test_nltk_data_from_a_mirror_is_cached_as_a_layer(tmp_path: Path, nltk_mirror) -> None:
    root, url = nltk_mirror
    _write_index(root, {"stopwords": ("corpora", _package_zip("stopwords",
                                                              {"english": STOPWORDS}))},
                 collections={"popular": ["stopwords"]})
    build = make_app(tmp_path / "app", {"nltk.txt": "popular\n"})
    cache = Cache(tmp_path / "cache")
    layer = provide_nltk_data(build, True, {"NLTK_INDEX_URL": url}, cache, Reporter(quiet=True))
    assert (layer.tree / "corpora" / "stopwords.zip").is_file()
    assert (layer.tree / "corpora" / "stopwords" / "english").read_text() == STOPWORDS
    # Warm: the same layer, without fetching the packages again.
    (root / "packages" / "corpora" / "stopwords.zip").unlink()
    again = provide_nltk_data(build, True, {"NLTK_INDEX_URL": url}, cache,
                              Reporter(quiet=True))
    assert again.path == layer.path
    # Without nltk installed nothing is downloaded (Heroku), but the user is told.
    reporter = Reporter(quiet=True)
    assert provide_nltk_data(build, False, {"NLTK_INDEX_URL": url}, cache, reporter) is None
    assert any("nltk package is not installed" in line for line in reporter.lines)


@pytest.mark.parametrize("case, problem", [
    ("checksum", "md5 checksum"),
    ("missing", "HTTP 404"),
    ("escape", "outside `stopwords/`"),
    ("notzip", "not a zip archive"),
])
def test_nltk_corpus_that_cannot_be_had_is_one_clear_error(tmp_path: Path, nltk_mirror,
                                                           case: str, problem: str) -> None:
    root, url = nltk_mirror
    data = _package_zip("stopwords", {"english": STOPWORDS,
                                      **({"../evil": "x"} if case == "escape" else {})})
    if case == "notzip":
        data = b"not a zip"
    _write_index(root, {"stopwords": ("corpora", data)},
                 checksum={"stopwords": "0" * 32} if case == "checksum" else None)
    if case == "missing":
        (root / "packages" / "corpora" / "stopwords.zip").unlink()
    build = make_app(tmp_path / "app", {"nltk.txt": "stopwords\n"})
    cache = Cache(tmp_path / "cache")
    with pytest.raises(errors.SlugbuildError) as caught:
        provide_nltk_data(build, True, {"NLTK_INDEX_URL": url}, cache, Reporter(quiet=True))
    assert caught.value.code == "nltk-corpus-unavailable"
    assert problem in caught.value.found and "'stopwords'" in caught.value.found
    assert not list((tmp_path / "cache" / "layers").iterdir())  # nothing cached


def test_nltk_index_that_cannot_be_fetched(tmp_path: Path, nltk_mirror) -> None:
    _root, url = nltk_mirror
    build = make_app(tmp_path / "app", {"nltk.txt": "stopwords\n"})
    with pytest.raises(errors.SlugbuildError) as caught:
        provide_nltk_data(build, True, {"NLTK_INDEX_URL": url}, Cache(tmp_path / "cache"),
                          Reporter(quiet=True))
    assert caught.value.code == "nltk-index-unusable" and "HTTP 404" in caught.value.found


@pytest.mark.slow
def test_flask_nltk_app_serves_a_corpus_from_the_slug(tmp_path: Path, cache_dir: Path,
                                                      nltk_mirror) -> None:
    root, url = nltk_mirror
    _write_index(root, {"stopwords": ("corpora", _package_zip("stopwords",
                                                              {"english": STOPWORDS}))})
    slug = tmp_path / "slug.tgz"
    result = compile_app(NLTK_APP, slug, cache_dir=cache_dir, env={"NLTK_INDEX_URL": url},
                         reporter=Reporter(quiet=True))
    assert any("Downloading NLTK packages: stopwords" in line for line in result.log)
    with tarfile.open(slug) as tar:
        names = set(tar.getnames())
        profile = tar.extractfile("./.profile.d/python-nltk.sh").read().decode()
    assert "./.heroku/python/nltk_data/corpora/stopwords/english" in names
    assert "./.heroku/python/nltk_data/corpora/stopwords.zip" in names
    assert "NLTK_DATA" in profile
    with Server(slug) as server:
        answer = requests.get(server.base + "/", timeout=10)
    assert answer.status_code == 200, server.stop()[1]
    assert answer.text == "3 English stopwords, first: slugbuild\n"


# --- buildpack lists and assets built by Node ----------------------------------------------

NODE_APP = FIXTURE_APPS / "flask-node-assets"
FAKE_NODE_DETECT = '#!/bin/sh\n[ -f "$1/package.json" ] && echo Node.js\n'
# Runs the app's build script with the machine's node, as heroku-buildpack-nodejs would.
FAKE_NODE_COMPILE = '#!/bin/sh\nset -e\ncd "$1"\nnpm run build\n'


def _fake_node_buildpack(directory: Path) -> Path:
    make_app(directory, {"bin/detect": FAKE_NODE_DETECT, "bin/compile": FAKE_NODE_COMPILE})
    for script in ("detect", "compile"):
        (directory / "bin" / script).chmod(0o755)
    return directory


@pytest.mark.parametrize("spec, expanded", [
    ("heroku/nodejs", "https://github.com/heroku/heroku-buildpack-nodejs"),
    ("heroku-community/apt#v2", "https://github.com/heroku/heroku-buildpack-apt#v2"),
    ("someone/thing", "https://github.com/someone/heroku-buildpack-thing.git"),
    ("someone/heroku-buildpack-thing", "https://github.com/someone/heroku-buildpack-thing.git"),
    ("heroku/python", "heroku/python"),
    ("https://git.example.invalid/bp.git#v1", "https://git.example.invalid/bp.git#v1"),
    ("./local-bp", "./local-bp"),
])
def test_buildpack_shorthands_expand_as_heroku_and_dokku_do(tmp_path: Path, spec: str,
                                                            expanded: str) -> None:
    assert expand_spec(spec, tmp_path, ".buildpacks") == expanded


def test_buildpack_shorthand_that_is_a_directory_stays_a_path(tmp_path: Path) -> None:
    (tmp_path / "vendor" / "bp").mkdir(parents=True)
    assert expand_spec("vendor/bp", tmp_path, ".buildpacks") == "vendor/bp"


def test_subdir_form_is_refused_naming_it(tmp_path: Path) -> None:
    make_app(tmp_path, {".buildpacks": "heroku/nodejs\napi=heroku/python\n"})
    with pytest.raises(errors.SlugbuildError) as caught:
        listed_buildpacks(tmp_path)
    assert caught.value.code == "buildpack-form-unsupported"
    assert "heroku-buildpack-subdir" in caught.value.found
    assert "--app-base api" in caught.value.action


def test_buildpacks_file_wins_over_app_json(tmp_path: Path) -> None:
    make_app(tmp_path, {"app.json": '{"buildpacks": [{"url": "heroku/nodejs"}, '
                                    '{"url": "heroku/python"}]}'})
    assert listed_buildpacks(tmp_path) == (
        ["https://github.com/heroku/heroku-buildpack-nodejs", "heroku/python"], "app.json")
    (tmp_path / ".buildpacks").write_text("# comment\nhttps://x.invalid/bp.git#main\n")
    assert listed_buildpacks(tmp_path) == (["https://x.invalid/bp.git#main"], ".buildpacks")


@pytest.mark.parametrize("text, problem", [
    ("{", "is not JSON"),
    ("[]", "not a JSON object"),
    ('{"buildpacks": "heroku/python"}', "not a list"),
    ('{"buildpacks": [{"name": "x"}]}', "buildpacks[0] without a `url`"),
])
def test_app_json_that_cannot_be_read_is_refused(tmp_path: Path, text: str,
                                                 problem: str) -> None:
    make_app(tmp_path, {"app.json": text})
    with pytest.raises(errors.SlugbuildError) as caught:
        listed_buildpacks(tmp_path)
    assert caught.value.code == "buildpack-list-invalid" and problem in caught.value.found


def test_app_json_without_buildpacks_lists_none(tmp_path: Path) -> None:
    make_app(tmp_path, {"app.json": '{"name": "x", "env": {}}'})
    assert listed_buildpacks(tmp_path) == ([], None)


def test_monorepo_buildpack_is_what_app_base_does(tmp_path: Path) -> None:
    make_app(tmp_path, {".buildpacks": "https://github.com/lstoll/heroku-buildpack-monorepo\n"
                                       "heroku/python\n"})
    (tmp_path / "backend").mkdir()
    refs = buildpacks_for(tmp_path, None, repo_root=tmp_path)
    assert [ref.spec for ref in refs] == ["heroku/python"]
    with pytest.raises(errors.SlugbuildError) as caught:
        buildpacks_for(tmp_path, None)
    assert caught.value.code == "monorepo-buildpack-without-app-base"
    # Heroku's convention: the root lists the monorepo buildpack, then those that build
    # the app base (paths relative to the root).
    (tmp_path / ".buildpacks").write_text(
        "heroku/nodejs\nlstoll/heroku-buildpack-monorepo\nvendor/bp\nheroku/python\n")
    (tmp_path / "vendor" / "bp").mkdir(parents=True)
    refs = buildpacks_for(tmp_path / "backend", None, repo_root=tmp_path)
    assert [(ref.spec, ref.base) for ref in refs] == [("vendor/bp", tmp_path),
                                                      ("heroku/python", tmp_path)]
    # The app base's own list wins; a root list without the monorepo buildpack is ignored.
    (tmp_path / "backend" / ".buildpacks").write_text("python\n")
    assert [r.spec for r in buildpacks_for(tmp_path / "backend", None, tmp_path)] == ["python"]
    (tmp_path / "backend" / ".buildpacks").unlink()
    (tmp_path / ".buildpacks").write_text("api=heroku/python\n")
    assert buildpacks_for(tmp_path / "backend", None, repo_root=tmp_path) == []


def test_node_build_script_is_found(tmp_path: Path) -> None:
    assert build_script(tmp_path) is None
    (tmp_path / "package.json").write_text('{"scripts": {"start": "node x"}}')
    assert build_script(tmp_path) is None
    (tmp_path / "package.json").write_text('{"scripts": {"build": "vite build", '
                                           '"heroku-postbuild": "npm run build"}}')
    assert build_script(tmp_path) == "heroku-postbuild"
    (tmp_path / "package.json").write_text("{not json")
    assert build_script(tmp_path) is None


def test_node_warning_depends_on_where_a_node_buildpack_runs(tmp_path: Path) -> None:
    make_app(tmp_path, {"package.json": '{"scripts": {"build": "x"}}'})
    assert "no Node.js buildpack runs" in node_assets_warning(tmp_path, [], [])
    assert node_assets_warning(tmp_path, [("./bp", "Node.js")], []) is None
    assert node_assets_warning(
        tmp_path, [], [("https://github.com/heroku/heroku-buildpack-nodejs",)]
    ).endswith("List the Node.js buildpack first.")


@pytest.mark.slow
def test_node_assets_warning_without_a_node_step(tmp_path: Path, cache_dir: Path) -> None:
    app = copy_app(NODE_APP, tmp_path / "app")
    (app / "app.json").unlink()
    result = compile_app(app, tmp_path / "slug.tgz", cache_dir=cache_dir,
                         reporter=Reporter(quiet=True))
    assert any("`build` script, but no Node.js buildpack runs" in line
               for line in result.log)


@pytest.mark.slow
def test_node_buildpack_from_app_json_builds_assets_before_python(tmp_path: Path,
                                                                 cache_dir: Path) -> None:
    """app.json lists a Node.js buildpack (here a local one running `npm run build` with
    the machine's node) before heroku/python: the built stylesheet is served from the slug."""
    app = copy_app(NODE_APP, tmp_path / "app")
    node_bp = _fake_node_buildpack(tmp_path / "node-buildpack")
    (app / "app.json").write_text(json.dumps(
        {"buildpacks": [{"url": str(node_bp)}, {"url": "heroku/python"}]}))
    slug = tmp_path / "slug.tgz"
    result = compile_app(app, slug, cache_dir=cache_dir, reporter=Reporter(quiet=True))
    assert not any("Node.js buildpack" in line for line in result.log)
    assert [b["description"] for b in result.metadata["buildpacks"]][0] == "Node.js"
    with Server(slug) as server:
        page = requests.get(server.base + "/", timeout=10)
        css = requests.get(server.base + "/static/app.css", timeout=10)
    assert "stylesheet built: True" in page.text
    assert css.status_code == 200 and css.text.startswith("/* built by node */")


# --- the built-in Node step (--node-build) ---------------------------------------------------


def test_node_step_refuses_other_package_managers_locks(tmp_path: Path) -> None:
    make_app(tmp_path, {"package.json": '{"scripts": {"build": "x"}}', "yarn.lock": ""})
    with pytest.raises(errors.SlugbuildError) as caught:
        run_node_build(tmp_path, {}, tmp_path / "npm", Reporter(quiet=True))
    assert caught.value.code == "node-build-unsupported" and "Yarn" in caught.value.found


def test_node_step_failure_is_one_error_and_leaves_no_node_modules(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app", {
        "package.json": '{"name": "x", "private": true, "scripts": {"build": '
                        '"node -e \\"require(\'fs\').mkdirSync(\'node_modules/y\', '
                        '{recursive: true}); process.exit(3)\\""}}'})
    with pytest.raises(errors.SlugbuildError) as caught:
        run_node_build(app, {}, tmp_path / "npm", Reporter(quiet=True))
    assert caught.value.code == "node-build-failed"
    assert caught.value.found == "`npm run build` exited with code 3."
    assert not (app / "node_modules").exists()


def test_node_step_without_node_on_path(tmp_path: Path) -> None:
    app = copy_app(NODE_APP, tmp_path / "app")
    env = {**os.environ, "PATH": str(tmp_path / "empty")}
    result = run_cli("compile", app, "-o", tmp_path / "slug.tgz", "--node-build", env=env)
    assert result.returncode == 1
    assert "The built-in Node step needs node and npm" in result.stderr
    assert "apt-get install nodejs npm" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "slug.tgz").exists()


@pytest.mark.slow
def test_node_build_step_builds_assets_and_leaves_node_modules_out(tmp_path: Path,
                                                                   cache_dir: Path) -> None:
    """--node-build stands in for heroku/nodejs from app.json: npm runs the build with the
    machine's node, the stylesheet is served from the slug, node_modules is not in it."""
    app = copy_app(NODE_APP, tmp_path / "app")
    (app / "node_modules" / "stale").mkdir(parents=True)  # committed by mistake
    (app / "node_modules" / "stale" / "index.js").write_text("")
    slug = tmp_path / "slug.tgz"
    result = compile_app(app, slug, cache_dir=cache_dir, node_build=True,
                         reporter=Reporter(quiet=True))
    assert [b["buildpack"] for b in result.metadata["buildpacks"]] == [
        "slugbuild:node", "heroku/python"]
    assert not any("Node.js buildpack" in line for line in result.log)
    with tarfile.open(slug) as tar:
        names = set(tar.getnames())
    assert "./static/app.css" in names
    assert not any(name.startswith("./node_modules") for name in names)
    with Server(slug) as server:
        css = requests.get(server.base + "/static/app.css", timeout=10)
    assert css.status_code == 200 and css.text.startswith("/* built by node */")


def test_nltk_package_larger_than_its_index_entry_is_refused(tmp_path: Path,
                                                             nltk_mirror) -> None:
    root, url = nltk_mirror
    _write_index(root, {"stopwords": ("corpora", _package_zip("stopwords",
                                                              {"english": STOPWORDS}))})
    index = (root / "index.xml").read_text()
    (root / "index.xml").write_text(re.sub(r' size="\d+"', ' size="10"', index))
    build = make_app(tmp_path / "app", {"nltk.txt": "stopwords\n"})
    with pytest.raises(errors.SlugbuildError) as caught:
        provide_nltk_data(build, True, {"NLTK_INDEX_URL": url}, Cache(tmp_path / "cache"),
                          Reporter(quiet=True))
    assert caught.value.code == "nltk-corpus-unavailable"
    assert "larger than 10 bytes" in caught.value.found


DJANGO_NODE_APP = FIXTURE_APPS / "django-node-assets"


@pytest.mark.slow
def test_django_assets_built_by_node(tmp_path: Path, cache_dir: Path) -> None:
    """Issue 19's case: without a Node step the build warns and every page is a 500
    (the manifest lacks the stylesheet); with --node-build the page and its CSS serve."""
    without = compile_app(DJANGO_NODE_APP, tmp_path / "without.tgz", cache_dir=cache_dir,
                          reporter=Reporter(quiet=True))
    assert any("`build` script, but no Node.js buildpack runs" in line
               for line in without.log)
    with Server(without.slug_path) as server:
        assert requests.get(server.base + "/", timeout=10).status_code == 500

    built = compile_app(DJANGO_NODE_APP, tmp_path / "with.tgz", cache_dir=cache_dir,
                        node_build=True, reporter=Reporter(quiet=True))
    assert not any("Node.js buildpack" in line for line in built.log)
    with Server(built.slug_path) as server:
        page = requests.get(server.base + "/", timeout=10)
        assert page.status_code == 200, server.stop()[1]
        css_url = re.search(r'href="(/static/app\.[0-9a-f]+\.css)"', page.text).group(1)
        css = requests.get(server.base + css_url, timeout=10)
    assert css.status_code == 200 and css.text.startswith("/* built by node */")
