"""Reproducible slugs: cold builds agree, cold and warm agree, local packages build apart.

The slow tests build real apps with real runtimes: fixtures with local packages
(a directory, an editable C extension, the app itself) for every package
manager, an sdist-only package with a C extension from PyPI, a Python 3.10
app, and every fixture app cold (twice when recording its slug).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import requests

from slugbuild import compile_app, errors
from slugbuild.log import Reporter
from slugbuild.marshal_canon import (
    CODE_LAYOUT_3_8,
    CODE_LAYOUT_3_11,
    canonical_marshal,
    code_layout,
)
from slugbuild.plan import BuildPlan, plan_app

from ..helpers import (
    FIXTURE_APPS,
    FIXTURES_NOT_BOOTING,
    RECORDING_GOLDEN,
    Server,
    assert_plan_agrees,
    check_golden,
    copy_app,
    fixture_build_options,
    fixture_names,
    local_interpreter,
    make_app,
    slug_differences,
    xdist_worker,
)

LOCAL_FIXTURES = {
    # fixture -> what its web process answers (local packages, and the extra ones)
    "pip-local-packages": "hello 5 fastsum 1.0 localapp 2.0 crcmod 1.7",
    "pipenv-local-packages": "hello 5 fastsum 1.0 localapp 2.0",
    "poetry-local-packages": "hello 5 fastsum 1.0",
    "uv-local-packages": "hello 5 fastsum 1.0",
}


def _build(app, out, cache_dir, **kwargs):
    return compile_app(app, out, cache_dir=cache_dir, reporter=Reporter(quiet=True), **kwargs)


def _host_path_warnings(result) -> list[str]:
    return [line for line in result.log if "name the build directory" in line]


# --- bytecode -------------------------------------------------------------------------

# Compiles one module alone, then again while the code of many other modules is
# kept alive (their strings and constants raise reference counts marshal looks
# at); prints both streams as hex.
HISTORIES = r"""
import glob, marshal, os, sys
target = sys.argv[1]
source = open(target, "rb").read()
alone = marshal.dumps(compile(source, "/app/mod.py", "exec", dont_inherit=True))
kept = []
for path in sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py")))[:80]:
    try:
        kept.append(compile(open(path, "rb").read(), path, "exec", dont_inherit=True))
    except SyntaxError:
        pass
after = marshal.dumps(compile(source, "/app/mod.py", "exec", dont_inherit=True))
print(alone.hex(), after.hex())
"""


@pytest.mark.parametrize("version", [
    pytest.param("3.8", marks=pytest.mark.slow), "3.10",
    "3.12", pytest.param("3.13", marks=pytest.mark.slow)])
def test_canonical_bytecode_does_not_depend_on_what_the_process_compiled_before(
        tmp_path, version):
    python = local_interpreter(version)
    stdlib = Path(subprocess.run([python, "-c", "import os; print(os.__file__)"],
                                 capture_output=True, text=True, check=True).stdout.strip())
    layout = code_layout(tuple(int(p) for p in version.split(".")))
    differed = 0
    for module in ("ftplib.py", "typing.py"):
        alone, after = subprocess.run(
            [python, "-c", HISTORIES, str(stdlib.parent / module)], capture_output=True,
            text=True, check=True).stdout.split()
        alone, after = bytes.fromhex(alone), bytes.fromhex(after)
        differed += alone != after
        canonical = canonical_marshal(alone, layout)
        assert canonical_marshal(after, layout) == canonical
        assert canonical_marshal(canonical, layout) == canonical  # a fixed point
        # The canonical stream loads as the same code.
        (tmp_path / "alone").write_bytes(alone)
        (tmp_path / "canonical").write_bytes(canonical)
        check = ("import marshal, sys; a, b = (open(x, 'rb').read() for x in sys.argv[1:]); "
                 "print(marshal.loads(a) == marshal.loads(b))")
        equal = subprocess.run([python, "-c", check, tmp_path / "alone", tmp_path / "canonical"],
                               capture_output=True, text=True, check=True).stdout.strip()
        assert equal == "True"
    if version == "3.12":
        assert differed  # the problem this solves shows on 3.12


# Set constants of every kind the compiler folds, strings among them that the
# standard library's modules also hold (so interning finds them already there).
SET_CONSTANTS = """
def method(verb, code, value, pair, raw):
    if verb in {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "x-y"}:
        return code in {200, 201, 204, 301, 302, 2 ** 70, -1}
    if value in {0.5, 1.5, -0.0, 1e300, 2j, None, True, "a", b"a"}:
        return pair in {(1, "a"), (2, "b"), ("c", (3, 4)), ()}
    return raw not in {b"", b"\\x00", b"abc", "path", "name", "self", "__init__", "é"}
"""

# Prints each target's marshal stream as hex, twice: compiled first, then again
# after the targets and a seeded random choice of the standard library were
# compiled and kept alive (their interned strings and constants shared).
SEEDED_HISTORIES = r"""
import glob, marshal, os, random, sys
order_seed, targets = int(sys.argv[1]), sys.argv[2:]

def compiled(path):
    return compile(open(path, "rb").read(), "/app/mod.py", "exec", dont_inherit=True)

first = [marshal.dumps(compiled(target)).hex() for target in targets]
others = sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py")))
random.Random(order_seed).shuffle(others)
kept = []
for path in targets + others[:80]:
    try:
        kept.append(compiled(path))
    except SyntaxError:
        pass
again = [marshal.dumps(compiled(target)).hex() for target in targets]
print(" ".join(first))
print(" ".join(again))
"""

# Modules with many set constants (and typing, a large one) on 3.8 to 3.13.
SET_MODULES = ("ftplib.py", "difflib.py", "hashlib.py", "_markupbase.py", "typing.py")


@pytest.mark.parametrize("version", [
    pytest.param("3.8", marks=pytest.mark.slow), pytest.param("3.9", marks=pytest.mark.slow),
    "3.10", pytest.param("3.11", marks=pytest.mark.slow), "3.12",
    pytest.param("3.13", marks=pytest.mark.slow)])
def test_canonical_bytecode_does_not_depend_on_hash_seed_or_compile_history(
        tmp_path, version):
    python = local_interpreter(version)
    stdlib = Path(subprocess.run([python, "-c", "import os; print(os.__file__)"],
                                 capture_output=True, text=True, check=True).stdout.strip())
    (tmp_path / "sets.py").write_text(SET_CONSTANTS)
    targets = [str(stdlib.parent / module) for module in SET_MODULES] + [str(tmp_path / "sets.py")]
    layout = code_layout(tuple(int(p) for p in version.split(".")))
    streams: list[list[bytes]] = [[] for _ in targets]
    for hash_seed, order_seed in (("0", 1), ("4242", 2), ("random", 3)):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        lines = subprocess.run([python, "-W", "ignore", "-c", SEEDED_HISTORIES,
                                str(order_seed), *targets], capture_output=True, text=True,
                               check=True, env=env).stdout.split("\n")
        for line in lines[:2]:
            for found, stream in zip(streams, line.split()):
                found.append(bytes.fromhex(stream))
    for target, found in zip(targets, streams):
        canonical = {canonical_marshal(stream, layout) for stream in found}
        assert len(canonical) == 1, f"{target}: {len(canonical)} canonical forms"
        (only,) = canonical
        assert canonical_marshal(only, layout) == only  # a fixed point
        (tmp_path / f"{Path(target).stem}.raw").write_bytes(found[0])
        (tmp_path / f"{Path(target).stem}.canonical").write_bytes(only)
    if layout == CODE_LAYOUT_3_8:  # marshal wrote these sets in other orders
        assert any(len(set(found)) > 1 for found in streams)
    # Each canonical stream loads as the code it was made from.
    check = ("import marshal, pathlib, sys\n"
             "for raw in sorted(pathlib.Path(sys.argv[1]).glob('*.raw')):\n"
             "    print(raw.stem, marshal.loads(raw.read_bytes())"
             " == marshal.loads(raw.with_suffix('.canonical').read_bytes()))\n")
    loaded = subprocess.run([python, "-c", check, tmp_path], capture_output=True, text=True,
                            check=True).stdout.split()
    assert loaded == [word for target in sorted(Path(t).stem for t in targets)
                      for word in (target, "True")]


def test_set_constants_are_ordered_by_value_before_3_11_and_kept_as_written_after():
    import marshal

    elements = ["GET", "POST", 7, b"x", (1, "a"), None]
    orders = [elements, elements[::-1], elements[2:] + elements[:2]]

    def frozenset_stream(order: list) -> bytes:  # marshal's frozenset, elements in this order
        return b">" + len(order).to_bytes(4, "little") + b"".join(
            marshal.dumps(element) for element in order)

    old = {canonical_marshal(frozenset_stream(order), CODE_LAYOUT_3_8) for order in orders}
    assert len(old) == 1
    assert marshal.loads(old.pop()) == frozenset(elements)
    # 3.11 and later write sets sorted themselves: the written order stays.
    new = [canonical_marshal(frozenset_stream(order), CODE_LAYOUT_3_11) for order in orders]
    assert len(set(new)) == len(orders)
    assert all(marshal.loads(stream) == frozenset(elements) for stream in new)


def test_canonicalising_leaves_no_reference_cycles_behind():
    """The compile script runs with the cyclic collector off (compile_bytecode): the
    canonicaliser's garbage, on success and on a refused stream, must go by reference
    counting alone."""
    import gc
    import marshal

    stream = marshal.dumps(compile(
        "def f(a, b=('x', 'y', frozenset({1, 2}))):\n    return {a: [b, 1.5, 2**70]}\n",
        "m.py", "exec"))
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            assert marshal.loads(canonical_marshal(stream, code_layout())) is not None
            with pytest.raises(ValueError):
                canonical_marshal(stream[:-3], code_layout())
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_marshal_streams_it_does_not_read_are_refused():
    with pytest.raises(ValueError):
        canonical_marshal(b"\x99", code_layout())
    with pytest.raises(ValueError):
        canonical_marshal(b"r\x05\x00\x00\x00", code_layout())  # a reference to nothing
    with pytest.raises(ValueError):
        canonical_marshal(b"N" + b"N", code_layout())  # bytes after the object


# --- ELF files built on this machine ------------------------------------------------

EXTENSION_C = "int answer(void) { return 42; }\n"


def _compile_extension(tmp_path: Path, build_dir: Path, host_prefix: Path) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("no gcc")
    build_dir.mkdir(parents=True)
    (build_dir / "ext.c").write_text(EXTENSION_C)
    target = tmp_path / "site-packages" / "pkg" / "_ext.so"
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["gcc", "-g", "-shared", "-fPIC", str(build_dir / "ext.c"), "-o",
                    str(target), f"-Wl,-rpath,{host_prefix}/lib:/usr/lib/extra"],
                   check=True, cwd=build_dir)
    return target


def test_an_extension_built_here_loses_its_host_paths_and_keeps_its_links(tmp_path):
    from slugbuild.relocate import patchelf_command, settle_built_elf_files

    cache, prefix = tmp_path / "cache", tmp_path / "pyenv" / "3.12.1"
    built = []
    for attempt in ("a1b2", "c3d4"):  # an installer's random build directory
        target = _compile_extension(tmp_path / attempt, cache / "sdists" / attempt / "src",
                                    prefix)
        installer_copy = tmp_path / attempt / "uv-cache-copy.so"
        os.link(target, installer_copy)  # the layer's file is a hard link into a cache
        before = installer_copy.read_bytes()
        home = tmp_path / attempt / "home"
        changed = settle_built_elf_files(target.parent.parent, [str(cache), str(prefix)],
                                         str(prefix), home / "lib")
        assert changed == [target]
        assert installer_copy.read_bytes() == before  # the installer's cache is untouched
        data = target.read_bytes()
        assert str(cache).encode() not in data and str(prefix).encode() not in data
        rpath = subprocess.run([patchelf_command(), "--print-rpath", str(target)],
                               capture_output=True, text=True, check=True).stdout.strip()
        relative = os.path.relpath(home / "lib", target.parent)
        assert rpath == f"$ORIGIN/{relative}:/usr/lib/extra"
        built.append(data)
    assert built[0] == built[1]  # the build directory no longer shows


def test_wheels_from_an_index_keep_their_bytes(tmp_path):
    from slugbuild.relocate import settle_built_elf_files

    target = _compile_extension(tmp_path, tmp_path / "elsewhere", Path("/opt/py"))
    before = target.read_bytes()
    assert settle_built_elf_files(target.parent.parent, [str(tmp_path / "cache")],
                                  "/opt/py", tmp_path / "lib") == []
    assert target.read_bytes() == before


# --- local packages -------------------------------------------------------------------

@pytest.mark.parametrize("requirements, local", [
    ("six==1.17.0\n-r more.txt\n", False),
    ("six==1.17.0\n./vendor/pkg\n", True),
    ("-e git+https://example.invalid/x.git#egg=x\n", True),  # the -e is rewritten
    ("-e .\n", True),
])
def test_only_installs_that_build_the_apps_own_files_need_a_copy(tmp_path, requirements,
                                                                  local):
    from slugbuild.dependencies import builds_local_packages, copy_for_install
    from slugbuild.installers import installer_for

    app = make_app(tmp_path / "app", {"requirements.txt": requirements, "more.txt": "",
                                      "vendor/pkg/setup.py": "", "app.py": "",
                                      ".heroku/python/bin/python3.12": ""})
    installer = installer_for("pip")
    files = list(installer.plan(app, "requirements.txt", {}).key_files)
    assert builds_local_packages(app, "requirements.txt", installer, files) == local
    copy = copy_for_install(app, tmp_path / "copy")
    assert sorted(p.name for p in copy.iterdir()) == [
        "app.py", "more.txt", "requirements.txt", "vendor"]



def test_every_local_shape_of_a_pipfile_lock_keys_the_layer(tmp_path):
    from slugbuild.installers.locks import local_source_files

    lock = {"default": {"a": {"file": "file:libs/a"}, "b": {"file": "https://x.invalid/b.tgz"},
                        "c": {"path": ".", "editable": True}, "d": {"path": "./libs/d"}}}
    app = make_app(tmp_path, {"Pipfile.lock": json.dumps(lock), "libs/a/setup.py": "",
                              "libs/d/pyproject.toml": "", "app.py": "",
                              ".heroku/python/bin/python3.12": ""})
    # The app itself ({editable = true, path = "."}) is installed: all its files count.
    assert local_source_files(app, "Pipfile.lock") == [
        "Pipfile.lock", "app.py", "libs/a/setup.py", "libs/d/pyproject.toml"]


def test_unhashed_version_control_references_are_installed_apart_from_the_hashed_pins():
    # A lock pins them by commit or URL: --require-hashes would refuse the export.
    from slugbuild.installers.requirements import split_unhashed_urls

    hashed, direct = split_unhashed_urls(
        "six==1.17.0 \\\n    --hash=sha256:ab\n"
        'bottle @ git+https://example.invalid/bottle@abc ; python_version >= "3.8"\n'
        "-e git+https://example.invalid/x.git@123#egg=x\n"
        "y @ https://example.invalid/y-1.0.tar.gz --hash=sha256:cd\n./libs/a\n")
    assert direct == ['bottle @ git+https://example.invalid/bottle@abc ; python_version >= "3.8"',
                      "git+https://example.invalid/x.git@123#egg=x"]
    assert hashed == ("six==1.17.0 \\\n    --hash=sha256:ab\n"
                      "y @ https://example.invalid/y-1.0.tar.gz --hash=sha256:cd\n./libs/a\n")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LOCAL_FIXTURES))
def test_local_packages_install_apart_and_serve_from_the_slug(tmp_path, cache_dir, name):
    # The session's cache has the runtime; no other test builds this app's
    # dependency layer: the first build makes it, the second restores it.
    app = copy_app(FIXTURE_APPS / name, tmp_path / name)
    cold = _build(app, tmp_path / "cold.tgz", cache_dir)
    warm = _build(app, tmp_path / "warm.tgz", cache_dir)
    assert not any("Restoring dependencies from cache" in line for line in cold.log)
    assert any("Restoring dependencies from cache" in line for line in warm.log)
    assert cold.sha256 == warm.sha256, slug_differences(cold.slug_path, warm.slug_path)
    assert not _host_path_warnings(cold) and not _host_path_warnings(warm)
    with tarfile.open(cold.slug_path) as tar:
        names = tar.getnames()
    app_files = [n for n in names if not n.startswith("./.heroku/")]
    assert not [n for n in app_files if "/build/" in n or ".egg-info" in n]
    # The install never wrote into the app either.
    assert sorted(p.name for p in (app / "vendor" / "fastsum").iterdir()) == [
        "fastsum", "pyproject.toml", "setup.py", "src"]
    assert any(n.endswith("/site-packages/greeting/__init__.py") for n in names)
    with Server(cold.slug_path) as server:
        assert requests.get(server.base + "/", timeout=10).text.strip() == \
            LOCAL_FIXTURES[name]


@pytest.mark.slow
def test_a_local_package_that_does_not_build_is_named(tmp_path, cache_dir):
    from slugbuild.installers.pipenv import pipfile_hash
    from slugbuild.toml_compat import tomllib

    broken = {"vendor/broken/setup.py": "raise SystemExit('setup.py: this package is broken')\n"}
    pip_app = make_app(tmp_path / "pip", {**broken, ".python-version": "3.12\n",
                                          "requirements.txt": "six==1.17.0\n./vendor/broken\n"})
    pipfile = ('[[source]]\nurl = "https://pypi.org/simple"\nverify_ssl = true\n'
               'name = "pypi"\n\n[packages]\nbroken = {path = "./vendor/broken"}\n\n'
               '[requires]\npython_version = "3.12"\n')
    lock = json.dumps({
        "_meta": {"hash": {"sha256": pipfile_hash(tomllib.loads(pipfile))}, "pipfile-spec": 6,
                  "requires": {"python_version": "3.12"},
                  "sources": [{"name": "pypi", "url": "https://pypi.org/simple",
                               "verify_ssl": True}]},
        "default": {"broken": {"path": "./vendor/broken"}}, "develop": {}})
    pipenv_app = make_app(tmp_path / "pipenv", {**broken, "Pipfile": pipfile,
                                                "Pipfile.lock": lock})
    for app in (pip_app, pipenv_app):
        with pytest.raises(errors.SlugbuildError) as caught:
            _build(app, tmp_path / "out.tgz", cache_dir)
        error = caught.value
        assert error.code == "local-package-failed", error.render()
        assert "./vendor/broken" in error.title
        assert "this package is broken" in (error.output or "")
        assert "against the package index" not in error.render()
        assert not (tmp_path / "out.tgz").exists()


# --- cold builds agree ------------------------------------------------------------------

@pytest.mark.slow
def test_a_python_310_app_is_the_same_in_two_cold_builds(tmp_path):
    local_interpreter("3.10")
    files = {
        ".python-version": "3.10\n",
        "requirements.txt": "flask==3.1.0\ngunicorn==23.0.0\n",
        "Procfile": "web: gunicorn app:app\n",
        "app.py": "from flask import Flask\napp = Flask(__name__)\n",
    }
    one = _build(make_app(tmp_path / "a" / "app", files), tmp_path / "one.tgz",
                 tmp_path / "cache-one")
    two = _build(make_app(tmp_path / "b" / "app", files), tmp_path / "two.tgz",
                 tmp_path / "cache-two")
    assert one.runtime["resolved"].startswith("3.10.")
    assert one.sha256 == two.sha256, slug_differences(one.slug_path, two.slug_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", fixture_names())
def test_every_fixture_builds_cold_to_its_recorded_slug(tmp_path_factory, name):
    """A cold build with a cache of its own gives the recorded slug
    (tests/golden/slugs.json) in both layouts, its web process answers HTTP, and the
    plan agrees with a cold and a warm build.

    The record was made by two cold builds, each with a cache of its own, from two
    app directories (``a/<name>``, ``b/elsewhere``), which had to agree
    (``SLUGBUILD_RECORD_GOLDEN=1``: then both are built again). So outside recording
    one cold build, from ``b/elsewhere``, is the second build of that pair, made on
    another day in another session directory: a slug that depended on the cache, the
    app's path or name, the clock or chance would differ from the record, as it would
    from a second build now, and a second cold build would only repeat the
    comparison (it cost a fifth of the suite).

    When recording, the installers' download caches are shared (hard-linked copies of
    the first build's), so only what a build makes itself is made twice: the
    dependency layer (sdists and local packages built again: pip-local-packages has
    crcmod, published as an sdist only, and a local package, each with a C
    extension), the slug, and the runtime layer (its bytecode) the first time a
    Python version is built: later fixtures start from copies of the runtime layers
    their sides built (``_RUNTIME_SEEDS``), so every pair still compares two runtimes
    built apart. The heroku layout's slug comes from a warm build on the first
    build's cache.
    """
    with contextlib.ExitStack() as stack:
        options = fixture_build_options(name, stack, tmp_path_factory.mktemp(f"nltk-{name}"))
        _cold_builds(tmp_path_factory, name, options, twice=RECORDING_GOLDEN)


def _planned(app: Path, cache_dir: Path, options: dict) -> BuildPlan:
    """The plan of a build of ``app`` with the fixture's ``options``."""
    return plan_app(app, cache_dir=cache_dir, **{
        k: v for k, v in options.items() if k in ("env", "app_base", "node_build")})


# The runtime layers the two sides of earlier pairs built, one directory per side
# (cache/runtimes entries): a Python version's layer is built cold twice a session,
# not twice per fixture (each cold build of it compiles the standard library). Under
# xdist the workers' pairs share them too: each side's layers are named in a directory
# of the run (``_shared_seeds``), one file per layer holding its path.
_RUNTIME_SEEDS: tuple[dict[str, Path], dict[str, Path]] = ({}, {})


def _shared_seeds(tmp_path_factory, side: int) -> Path | None:
    if xdist_worker() is None:
        return None
    shared = tmp_path_factory.getbasetemp().parent / "cold-runtime-seeds" / str(side)
    shared.mkdir(parents=True, exist_ok=True)
    return shared


def _seed_runtimes(cache: Path, side: int, shared: Path | None = None) -> None:
    """Copies (not links: nothing a build does may reach another pair's cache) of the
    runtime layers side ``side`` of earlier pairs built."""
    seeds = dict(_RUNTIME_SEEDS[side])
    for record in sorted(shared.glob("*.path")) if shared is not None else []:
        seeds.setdefault(record.stem, Path(record.read_text()))
    for entry, source in seeds.items():
        shutil.copytree(source, cache / "runtimes" / entry, symlinks=True)


def _keep_runtimes(cache: Path, side: int, shared: Path | None = None) -> None:
    for layer in sorted((cache / "runtimes").iterdir()):
        _RUNTIME_SEEDS[side].setdefault(layer.name, layer)
        if shared is not None and not (shared / f"{layer.name}.path").exists():
            partial = shared / f"{layer.name}.{xdist_worker()}.partial"
            partial.write_text(str(layer))
            partial.replace(shared / f"{layer.name}.path")


def _cold_builds(tmp_path_factory, name: str, options: dict, twice: bool) -> None:
    """The fixture built cold (from ``b/elsewhere`` when built once, see the test),
    warm in the heroku layout on the same cache, and, ``twice``, cold again from
    another directory on a second cache: both slugs compared with the record."""
    root = tmp_path_factory.mktemp(f"cold-{name}")
    started = time.perf_counter()
    boots = name not in FIXTURES_NOT_BOOTING
    first_app = copy_app(FIXTURE_APPS / name, root / "a" / name if twice
                         else root / "b" / "elsewhere")
    first_cache = root / "cache-one"
    _seed_runtimes(first_cache, 0, _shared_seeds(tmp_path_factory, 0))
    cold_plan = _planned(first_app, first_cache, options)
    one = _build(first_app, root / "one.tgz", first_cache,
                 boot_check=60 if boots and not twice else False, **options)
    warm_plan = _planned(first_app, first_cache, options)
    assert_plan_agrees(cold_plan, one, warm_plan)
    # The other layout, warm: every layer comes from the first build's cache.
    heroku = _build(first_app, root / "heroku.tgz", first_cache, layout="heroku", **options)
    assert_plan_agrees(warm_plan, heroku, _planned(first_app, first_cache, options))
    if twice:
        second_cache = root / "cache-two"
        second_cache.mkdir()
        _seed_runtimes(second_cache, 1, _shared_seeds(tmp_path_factory, 1))
        _share_downloads(first_cache, second_cache)
        # The second build also proves the slug boots: its web process answers HTTP.
        two = _build(copy_app(FIXTURE_APPS / name, root / "b" / "elsewhere"),
                     root / "two.tgz", second_cache, boot_check=60 if boots else False,
                     **options)
        assert one.sha256 == two.sha256, slug_differences(one.slug_path, two.slug_path)
        _keep_runtimes(second_cache, 1, _shared_seeds(tmp_path_factory, 1))
    check_golden(name, "herokuish", one.sha256)
    check_golden(name, "heroku", heroku.sha256)
    with tarfile.open(one.slug_path) as tar:
        for member in tar:
            if member.name.endswith(".so") and "site-packages" in member.name:
                data = tar.extractfile(member).read()
                assert b"cache-one" not in data and b"/.pyenv/" not in data, member.name
    _keep_runtimes(first_cache, 0, _shared_seeds(tmp_path_factory, 0))
    print(f"{name}: {'two cold builds' if twice else 'a cold build'} in "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)


def _share_downloads(first_cache: Path, second_cache: Path) -> None:
    """Hard-linked copies of the first cache's finished downloads (uv's, pip's, the
    tools'): sdists are built again (uv's builds and pip's wheels are left out)."""
    for download_cache in ("uv", "pip", "tools"):
        source = first_cache / download_cache
        if not source.is_dir():
            continue

        def built_here(directory: str, names: list[str], top: Path = source) -> list[str]:
            if Path(directory) != top:
                return []
            return [n for n in names if n.startswith(("sdists-v", "built-wheels-v"))
                    or n == "wheels"]

        shutil.copytree(source, second_cache / download_cache, symlinks=True,
                        copy_function=os.link, ignore=built_here)
