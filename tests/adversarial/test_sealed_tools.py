"""The steps session 9's seal left out, sealed (step_jail.py): the resolution of version
ranges (``uv pip compile`` may build an sdist for its metadata: the package's code
runs), ``slugbuild lock`` (the same), the Pipenv/Poetry tools shared in ``tools/`` and
their lock exports. Before, a package of app A resolved from a range could rewrite the
Pipenv every other app's build runs, or a layer's files with their ``files.json``;
and app A's own index could serve the ``pipenv==...`` that app B then ran."""

from __future__ import annotations

import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from slugbuild import compile_app
from slugbuild.cache import Cache
from slugbuild.installers import InstallJob, InstallPlan
from slugbuild.installers.pipenv import PipenvInstaller
from slugbuild.installers.ranges import resolve_plan
from slugbuild.installers.tools import TOOL_REQUIREMENTS, ensure_tool
from slugbuild.layer_overlay import mechanism
from slugbuild.lock import lock_app
from slugbuild.log import Reporter
from slugbuild.step_jail import CacheSeal

from ..helpers import (
    make_app,
    minimal_wheel,
    planting_setup_py,
    require_seal,
    serve_directory,
    setuptools_sdist,
    write_simple_index,
)

# Tries every kind of file of the cache another app's build reads (a shared tool's
# module above all), and reports what happened to each; run by the sdist's build.
PLANT_SETUP_PY = planting_setup_py("""
targets = glob.glob(cache + "/tools/*/tree/*.py") + glob.glob(cache + "/layers/*/files.json")
targets += [packed + "/part-planted.gz" for packed in glob.glob(cache + "/layers/*/packed")]
targets += [cache + "/history/planted", cache + "/uv/planted-ok"]
""", "\nprint('planted')\n")
PIPENV = TOOL_REQUIREMENTS["pipenv"][0].split("==")[1]
TOOL_FILE = "tools/pipenv-shared/tree/pipenv.py"


def _shared_cache(root: Path) -> Path:
    """A cache holding what other apps' builds read: a tool, a layer and its index."""
    for store in ("history", "uv"):
        (root / store).mkdir(parents=True)
    for path, text in ((TOOL_FILE, "print('the genuine tool')\n"),
                       ("layers/k/files.json", "{}"), ("layers/k/packed/part-1.gz", "")):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def _assert_sealed(cache: Path, report: Path, guarded: bool = False) -> None:
    """``guarded``: the run saw uv's cache through the installer-cache guard's private
    overlay (installers/common.py), so even uv's cache was read-only to it."""
    lines = set(report.read_text().splitlines())  # one line per target and build
    wrote = {line for line in lines if line.startswith("WROTE")}
    # uv's cache: writable to an install, unless the guard shows it privately.
    assert wrote == (set() if guarded else {f"WROTE {cache}/uv/planted-ok"}), lines
    assert len(lines) == 5 and all(line.startswith("DENIED EROFS") for line in lines - wrote), \
        lines
    assert (cache / TOOL_FILE).read_text() == "print('the genuine tool')\n"
    assert (cache / "layers/k/files.json").read_text() == "{}"
    assert not (cache / "layers/k/packed/part-planted.gz").exists()


@pytest.fixture
def plant_index(tmp_path, setuptools_wheel):
    """A loopback index whose ``plantpkg`` is an sdist that tries the cache."""
    index = tmp_path / "index"
    write_simple_index(index, {
        "plantpkg": ("plantpkg-1.0.tar.gz", setuptools_sdist("plantpkg", "1.0", PLANT_SETUP_PY)),
        "setuptools": (setuptools_wheel.name, setuptools_wheel.read_bytes())})
    with serve_directory(index) as base:
        yield f"{base}/simple/"


def test_a_range_resolved_from_an_sdist_cannot_write_the_cache(tmp_path, plant_index):
    require_seal(tmp_path)
    root = _shared_cache(tmp_path / "cache")
    app = make_app(tmp_path / "app", {"requirements.txt": "plantpkg>=1.0\n"})
    report = tmp_path / "report"
    plan = InstallPlan(name="pip", tool="uv", version="uv", key_files=("requirements.txt",),
                       resolves=True)
    resolved = resolve_plan(
        plan, app_dir=app, lock_file="requirements.txt", python_version="3.12",
        config_vars={"PIP_INDEX_URL": plant_index, "SEAL_CACHE": str(root),
                     "SEAL_REPORT": str(report)}, cache=Cache(root),
        reporter=Reporter(quiet=True))
    assert "plantpkg==1.0" in resolved.resolved  # the sdist was built: its code ran
    _assert_sealed(root, report, guarded=mechanism(tmp_path) is not None)


def test_slugbuild_lock_cannot_write_the_cache(tmp_path, plant_index):
    require_seal(tmp_path)
    root = _shared_cache(tmp_path / "cache")
    app = make_app(tmp_path / "app", {"requirements.in": "plantpkg>=1.0\n",
                                      ".python-version": "3.12\n"})
    report = tmp_path / "report"
    lock_app(app, cache_dir=root, reporter=Reporter(quiet=True),
             config_vars={"PIP_INDEX_URL": plant_index, "SEAL_CACHE": str(root),
                          "SEAL_REPORT": str(report)})
    assert "plantpkg==1.0" in (app / "requirements.txt").read_text()
    _assert_sealed(root, report)


def _job(root: Path, tmp_path: Path, name: str, config_vars: dict[str, str],
         seal: CacheSeal | None = None, exports: dict[str, str] | None = None) -> InstallJob:
    cache = Cache(root)
    return InstallJob(python=Path("python3"), python_version="3.12",
                      app_dir=make_app(tmp_path / name, {"Pipfile.lock": '{"default": {}}'}),
                      lock_file="Pipfile.lock", config_vars=config_vars, cache=cache,
                      reporter=Reporter(quiet=True), scratch=cache.scratch_dir("install"),
                      seal=seal, exports=exports or {})


def _tool_index(tmp_path: Path, name: str, main: str) -> Path:
    write_simple_index(tmp_path / name, {"pipenv": (
        f"pipenv-{PIPENV}-py3-none-any.whl", minimal_wheel("pipenv", PIPENV, main))})
    return tmp_path / name


def test_an_apps_index_cannot_choose_the_tool_another_app_runs(tmp_path):
    """The tool's key names the indexes: app A's index serves its own ``pipenv``,
    installed for app A; app B, on another index, gets the one its index serves."""
    root = tmp_path / "cache"
    with serve_directory(_tool_index(tmp_path, "evil", "print('EVIL')\n")) as evil, \
            serve_directory(_tool_index(tmp_path, "good", "print('GOOD')\n")) as good:
        first = ensure_tool("pipenv", _job(root, tmp_path, "a", {
            "PIP_INDEX_URL": f"{evil}/simple/"}))
        second = ensure_tool("pipenv", _job(root, tmp_path, "b", {
            "PIP_INDEX_URL": f"{good}/simple/"}))
    assert "EVIL" in (first / "pipenv.py").read_text()
    assert first != second and "GOOD" in (second / "pipenv.py").read_text()
    # Installed from wheels with its bytecode compiled before it was published: a
    # sealed run of it never needs to write its tree.
    assert list(second.glob("__pycache__/pipenv.*.pyc"))


@pytest.mark.parametrize("variable", ["UV_INDEX", "UV_FIND_LINKS"])
def test_an_exported_index_cannot_choose_the_tool_another_app_runs(tmp_path, variable):
    """An earlier buildpack's export (app A chose the buildpack) that points uv at
    another source: app B, without it, never runs the tool that source served."""
    root = tmp_path / "cache"
    evil_dir = _tool_index(tmp_path, "evil", "print('EVIL')\n")
    with serve_directory(evil_dir) as evil, \
            serve_directory(_tool_index(tmp_path, "good", "print('GOOD')\n")) as good:
        source = f"{evil}/simple/" if variable == "UV_INDEX" else str(evil_dir / "files")
        first = ensure_tool("pipenv", _job(root, tmp_path, "a", {
            "PIP_INDEX_URL": f"{good}/simple/"}, exports={variable: source}))
        second = ensure_tool("pipenv", _job(root, tmp_path, "b", {
            "PIP_INDEX_URL": f"{good}/simple/"}))
    assert "EVIL" in (first / "pipenv.py").read_text()  # the export did reach uv
    assert "GOOD" in (second / "pipenv.py").read_text()


# A tool run that executes code the app chose (a Poetry plugin its pyproject asks for)
# tries to leave a .pyc and its module in the shared tool, then exports nothing.
EXPORTER = '''\
import glob, os, sys
report = open(os.environ["SEAL_REPORT"], "a")
for target in glob.glob(os.environ["SEAL_CACHE"] + "/tools/*/tree/*.py") + [
        os.environ["SEAL_CACHE"] + "/tools/planted.pyc"]:
    try:
        open(target, "a").write("print('planted')\\n")
        report.write("WROTE %s\\n" % target)
    except OSError as exc:
        report.write("DENIED %s %s\\n" % (exc.errno, target))
'''


def test_a_lock_export_cannot_write_the_shared_tool(tmp_path):
    require_seal(tmp_path)
    root = tmp_path / "cache"
    report = tmp_path / "report"
    cache = Cache(root)
    build = cache.scratch_dir("build")
    seal = CacheSeal(root, build, lambda: Path(tempfile.mkdtemp(prefix=cache.lease.token + ".s.",
                                                                dir=root / "tmp")),
                     Reporter(quiet=True))
    with serve_directory(_tool_index(tmp_path, "index", EXPORTER)) as base:
        job = _job(root, tmp_path, "a", {"PIP_INDEX_URL": f"{base}/simple/"}, seal,
                   {"SEAL_REPORT": str(report), "SEAL_CACHE": str(root)})
        tool = ensure_tool("pipenv", job)
        PipenvInstaller()._export_with_pipenv(job)
    lines = report.read_text().splitlines()
    assert len(lines) == 2 and all(line.startswith("DENIED 30 ") for line in lines), lines
    assert (tool / "pipenv.py").read_text() == EXPORTER
    assert not (root / "tools" / "planted.pyc").exists()


# Every script npm runs (a dependency's and the app's install scripts, prepare, the
# build script) tries npm's shared cache, where the next app's `npm ci` reads packages
# and their metadata, and reports it in the build directory.
NPM_ATTACK = r'''
const fs = require("fs"), path = require("path");
const label = process.argv[2];
const target = path.join(process.env.SEAL_CACHE, "npm", "planted-" + label);
let said;
try { fs.appendFileSync(target, "planted"); said = "WROTE"; }
catch (e) { said = "DENIED " + e.code; }
fs.appendFileSync(path.join(__dirname, "npm-report"), label + " " + said + "\n");
'''


@pytest.mark.slow
def test_npm_scripts_cannot_write_npms_shared_cache(tmp_path, runtime_seed):
    from ..helpers import seed_runtimes

    require_seal(tmp_path)
    cache = seed_runtimes(runtime_seed, tmp_path / "cache")
    scripts = {"preinstall": "node attack.js preinstall", "postinstall":
               "node attack.js postinstall", "prepare": "node attack.js prepare",
               "build": "node attack.js build"}
    app = make_app(tmp_path / "app", {
        ".python-version": "3.12\n", "requirements.txt": "six==1.17.0\n",
        "Procfile": "web: python -m http.server $PORT\n", "attack.js": NPM_ATTACK,
        "package.json": json.dumps({"name": "a", "version": "1.0.0", "scripts": scripts,
                                    "dependencies": {"dep": "file:dep"}}),
        "dep/package.json": json.dumps({"name": "dep", "version": "1.0.0", "scripts": {
            "postinstall": "node ../attack.js dependency"}})})
    subprocess.run(["npm", "install", "--package-lock-only", "--ignore-scripts"], cwd=app,
                   check=True, capture_output=True)
    result = compile_app(app, tmp_path / "a.tgz", cache_dir=cache, node_build=True,
                         env={"SEAL_CACHE": str(cache)}, reporter=Reporter(quiet=True))
    with tarfile.open(result.slug_path) as slug:
        report = slug.extractfile("./npm-report").read().decode().splitlines()
    # Every script ran, as under `npm ci`; none could write the shared cache.
    assert sorted(report) == [f"{label} DENIED EROFS" for label in (
        "build", "dependency", "postinstall", "preinstall", "prepare")], report
    assert not list((cache / "npm").rglob("planted-*"))


def test_npm_scripts_are_run_when_npm_ci_would_have_run_some(tmp_path):
    """``npm rebuild`` and ``npm run prepare`` (an npm start each) only when there is
    something for them: a lock (v2+) marking an install script, or the root's scripts."""
    from slugbuild.node_assets import install_scripts_to_run

    def commands(scripts: dict[str, str], packages: dict[str, dict[str, object]],
                 version: int = 3) -> list[list[str]]:
        app = make_app(tmp_path / str(len(list(tmp_path.iterdir()))), {
            "package.json": json.dumps({"name": "a", "scripts": scripts}),
            "package-lock.json": json.dumps({"lockfileVersion": version,
                                             "packages": {"": {}, **packages}})})
        return install_scripts_to_run(app, "package-lock.json")

    plain = {"node_modules/x": {"version": "1.0.0"}}
    assert commands({"build": "b"}, plain) == []
    assert commands({}, {"node_modules/x": {"hasInstallScript": True}}) == [["rebuild"]]
    assert commands({"postinstall": "p"}, plain) == [["rebuild"]]
    assert commands({}, plain, version=1) == [["rebuild"]]  # v1 does not say
    assert commands({"prepare": "p"}, plain) == [["run", "--if-present", "prepare"]]


# On a fresh cache the stores other builds read later (tools/, history/, checks/...)
# do not exist yet: a sealed install may not create them and plant their entries.
PLANT_NEW_STORES_SETUP_PY = planting_setup_py("""
targets = []
for store in ("tools/pipenv-planted/tree", "history", "checks"):
    try:
        os.makedirs(cache + "/" + store, exist_ok=True)
    except OSError:
        pass
    targets.append(cache + "/" + store + "/planted")
""", "\\nprint('planted')\\n")


def test_a_sealed_install_cannot_create_the_stores_a_fresh_cache_lacks(tmp_path,
                                                                       setuptools_wheel):
    require_seal(tmp_path)
    root = tmp_path / "cache"
    cache = Cache(root)
    # A fresh cache: its stores are made when it is opened (cache.TOP_DIRS), so each
    # one is bound read-only in the install's run.
    index = tmp_path / "index"
    write_simple_index(index, {
        "plantpkg": ("plantpkg-1.0.tar.gz",
                     setuptools_sdist("plantpkg", "1.0", PLANT_NEW_STORES_SETUP_PY)),
        "setuptools": (setuptools_wheel.name, setuptools_wheel.read_bytes())})
    app = make_app(tmp_path / "app", {"requirements.txt": "plantpkg>=1.0\n"})
    report = tmp_path / "report"
    plan = InstallPlan(name="pip", tool="uv", version="uv", key_files=("requirements.txt",),
                       resolves=True)
    with serve_directory(index) as base:
        resolve_plan(plan, app_dir=app, lock_file="requirements.txt", python_version="3.12",
                     config_vars={"PIP_INDEX_URL": f"{base}/simple/", "SEAL_CACHE": str(root),
                                  "SEAL_REPORT": str(report)}, cache=cache,
                     reporter=Reporter(quiet=True))
    lines = set(report.read_text().splitlines())
    assert lines and all(line.startswith("DENIED") for line in lines), lines
    assert not list(root.glob("tools/*")) and not list(root.glob("history/*"))
    assert not list(root.glob("checks/*"))
