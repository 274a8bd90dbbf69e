"""A package build run by an installer must not change what another app installs
through the shared installer caches (installers/common.py, the cache guard).

An install must write uv's cache, and an sdist's setup.py runs inside it. Before the
guard, the setup.py of app A's sdist rewrote, in uv's shared cache, the unpacked
wheel of a package A does not even install (its module and its RECORD line, so uv's
RECORD check after the install saw nothing wrong), and app B, which installs that
package from a wheel and builds nothing, shipped the poisoned module.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from slugbuild import compile_app
from slugbuild.log import Reporter
from slugbuild.proc import run_captured
from slugbuild.step_jail import CacheSeal, PrivateView

from ..helpers import (
    make_app,
    minimal_wheel,
    require_seal,
    seed_runtimes,
    serve_directory,
    setuptools_sdist,
    write_simple_index,
)

CLEAN = "VALUE = 'clean'\n"
# The attack: every unpacked wheel of plainpkg in uv's cache (found by UV_CACHE_DIR
# and by the cache root above TMPDIR, the install's scratch) gets another module and
# a RECORD line that vouches for it; and a bogus unpacked wheel is planted beside them.
EVIL_SETUP = r'''
import base64, glob, hashlib, os
from setuptools import setup
poison = b"VALUE = 'poisoned'\n"
digest = base64.urlsafe_b64encode(hashlib.sha256(poison).digest()).rstrip(b"=").decode()
roots = {os.environ.get("UV_CACHE_DIR", ""),
         os.path.realpath(os.path.join(os.environ.get("TMPDIR", "/"), "../../..", "uv"))}
for root in filter(None, roots):
    for unpacked in glob.glob(os.path.join(root, "archive-v*", "*")):
        module = os.path.join(unpacked, "plainpkg.py")
        if not os.path.isfile(module):
            continue
        try:
            with open(module, "wb") as handle:  # in place: the same inode
                handle.write(poison)
            for record in glob.glob(os.path.join(unpacked, "*.dist-info", "RECORD")):
                lines = [f"plainpkg.py,sha256={digest},{len(poison)}"
                         if line.startswith("plainpkg.py,") else line
                         for line in open(record).read().splitlines()]
                with open(record, "w") as handle:
                    handle.write("\n".join(lines) + "\n")
            print("POISONED", module)
        except OSError as error:
            print("DENIED", module, error)
    try:
        os.makedirs(os.path.join(root, "archive-v0", "planted-by-evilpkg"), exist_ok=True)
    except OSError:
        pass
setup(name="evilpkg", version="1.0", py_modules=[])
'''
FILES = {"Procfile": "web: python -m http.server $PORT\n", ".python-version": "3.13\n"}


@pytest.fixture
def poisoning_index(tmp_path: Path, setuptools_wheel: Path) -> Iterator[dict[str, str]]:
    """A loopback index: plainpkg and otherpkg (wheels), evilpkg (an sdist whose build
    poisons plainpkg in uv's cache), setuptools (the backend)."""
    write_simple_index(tmp_path / "index", {
        "plainpkg": ("plainpkg-1.0-py3-none-any.whl",
                     minimal_wheel("plainpkg", "1.0", CLEAN)),
        "otherpkg": ("otherpkg-1.0-py3-none-any.whl",
                     minimal_wheel("otherpkg", "1.0", "OTHER = 1\n")),
        "evilpkg": ("evilpkg-1.0.tar.gz", setuptools_sdist("evilpkg", "1.0", EVIL_SETUP)),
        "setuptools": (setuptools_wheel.name, setuptools_wheel.read_bytes())})
    with serve_directory(tmp_path / "index") as base:
        yield {"PIP_INDEX_URL": f"{base}/simple/"}


def _module(slug: Path) -> str:
    with tarfile.open(slug) as tar:
        for member in tar:
            if member.name.endswith("site-packages/plainpkg.py"):
                extracted = tar.extractfile(member)
                assert extracted is not None
                return extracted.read().decode()
    raise AssertionError("plainpkg.py is not in the slug")


@pytest.mark.slow
def test_a_package_build_cannot_poison_another_apps_install_through_uvs_cache(
        tmp_path, poisoning_index, runtime_seed):
    require_seal(tmp_path, overlays=True)
    env = dict(poisoning_index)
    cache = seed_runtimes(runtime_seed, tmp_path / "cache", "3.13")
    # plainpkg's wheel unpacked in uv's shared cache by a first app.
    first = make_app(tmp_path / "first", {**FILES, "requirements.txt": "plainpkg==1.0\n"})
    compile_app(first, tmp_path / "first.tgz", cache_dir=cache, env=env)
    assert _module(tmp_path / "first.tgz") == CLEAN
    # The attacking app builds evilpkg from source: its setup.py runs.
    attacker = make_app(tmp_path / "attacker", {**FILES, "requirements.txt": "evilpkg==1.0\n"})
    compile_app(attacker, tmp_path / "attacker.tgz", cache_dir=cache, env=env)
    # Another app installs plainpkg from the same cache (another layer: no sdist, no
    # package code of its own).
    victim_files = {**FILES, "requirements.txt": "plainpkg==1.0\notherpkg==1.0\n"}
    victim = make_app(tmp_path / "victim", victim_files)
    compile_app(victim, tmp_path / "victim.tgz", cache_dir=cache, env=env)
    assert _module(tmp_path / "victim.tgz") == CLEAN
    # Byte for byte the slug a clean cache gives.
    clean_cache = seed_runtimes(runtime_seed, tmp_path / "clean-cache", "3.13")
    again = make_app(tmp_path / "again", victim_files)
    compile_app(again, tmp_path / "clean.tgz", cache_dir=clean_cache, env=env)
    assert hashlib.sha256((tmp_path / "victim.tgz").read_bytes()).hexdigest() == \
        hashlib.sha256((tmp_path / "clean.tgz").read_bytes()).hexdigest()
    assert not list((cache / "uv").glob("archive-v*/planted-by-evilpkg"))


def test_an_install_run_sees_the_caches_privately_and_what_it_writes_goes(tmp_path):
    """The guard's own mechanism, without an installer: a run reads the shared cache and
    its environment's partition through the view, not a built-wheel bucket another
    environment left in the shared cache; its writes (in place, new entries, a rename
    from the view's top into a bucket, as uv makes its entries) work and are gone
    afterwards; the shared directories themselves are read-only to it."""
    require_seal(tmp_path, overlays=True)
    root = tmp_path / "cache"
    shared, partition = root / "uv", root / "built-wheels" / "uv" / "env"
    (shared / "archive-v0" / "abc").mkdir(parents=True)
    (shared / "archive-v0" / "abc" / "m.py").write_text("clean\n")
    (shared / "sdists-v9" / "another-environments").mkdir(parents=True)
    (partition / "sdists-v9" / "mine").mkdir(parents=True)
    scratch, build = root / "tmp" / "t.install.x", root / "tmp" / "t.build.x"
    view = scratch / "installer-caches" / "uv"
    view.mkdir(parents=True)
    build.mkdir()
    seal = CacheSeal(root, build, lambda: Path(tempfile.mkdtemp(prefix="t.seal.",
                                                                 dir=root / "tmp")),
                     Reporter(quiet=True))
    caches = seal.private_caches([PrivateView(view, (partition, shared), ("sdists-v9",))],
                                 scratch, [shared, root / "built-wheels"])
    assert caches is not None
    script = f"""
        cat {view}/archive-v0/abc/m.py; ls {view}/sdists-v9
        echo poisoned > {view}/archive-v0/abc/m.py && echo in-place-written
        mkdir {view}/.tmp-entry {view}/archive-v0/planted && echo planted
        python3 -c 'import os; os.rename("{view}/.tmp-entry", "{view}/archive-v0/new")' \
            && echo renamed
        echo x > {shared}/archive-v0/abc/m.py || echo shared-denied
        echo x > {partition}/sdists-v9/mine/x || echo partition-denied
    """
    try:
        done = seal.install_step("a test run", [scratch], caches).run_step(
            ["sh", "-c", script], lambda command: run_captured(command, dict(os.environ),
                                                               cwd=scratch))
    finally:
        caches.discard()
    assert done.stdout.decode().split() == [
        "clean", "mine", "in-place-written", "planted", "renamed", "shared-denied",
        "partition-denied"], done.stderr.decode()
    assert (shared / "archive-v0" / "abc" / "m.py").read_text() == "clean\n"
    assert sorted(os.listdir(shared / "archive-v0")) == ["abc"]
    assert os.listdir(view) == [] and not caches.base.exists()
    assert sorted(os.listdir(partition / "sdists-v9")) == ["mine"]


def test_guarded_runs_at_once_on_one_cache_both_succeed(tmp_path):
    """What sank session 9's guard: builds installing into one cache at once. Two
    guarded runs (their own views and private caches) each unpack an entry as uv
    does (a directory renamed from the view's top into a bucket) while a wheel-only
    run of a third build adds entries to the shared bucket: all succeed, each run
    sees the shared entry made before it, and the shared cache ends with exactly
    the wheel-only run's entries."""
    require_seal(tmp_path, overlays=True)
    import threading

    root = tmp_path / "cache"
    shared = root / "uv"
    (shared / "archive-v0" / "first").mkdir(parents=True)
    (root / "tmp" / "t.build.x").mkdir(parents=True)
    seal = CacheSeal(root, root / "tmp" / "t.build.x", lambda: Path(
        tempfile.mkdtemp(prefix="t.seal.", dir=root / "tmp")), Reporter(quiet=True))
    said: dict[int, list[str]] = {}

    def guarded(number: int) -> None:
        scratch = root / "tmp" / f"t.install.{number}"
        view = scratch / "installer-caches" / "uv"
        view.mkdir(parents=True)
        caches = seal.install_caches([PrivateView(view, (scratch / "partition", shared))],
                                     scratch, [shared])
        assert caches is not None
        script = f"""
            for i in 1 2 3 4 5 6 7 8 9 10; do
                mkdir {view}/.tmp-$i && echo x > {view}/.tmp-$i/m.py
                python3 -c 'import os, sys; os.rename(*sys.argv[1:])' \
                    {view}/.tmp-$i {view}/archive-v0/own-$i
                ls {view}/archive-v0 >/dev/null
            done
            ls {view}/archive-v0/first >/dev/null && echo sees-first
            ls {view}/archive-v0 | grep -c own-
        """
        try:
            done = seal.install_step("run", [scratch], caches).run_step(
                ["sh", "-c", script], lambda command: run_captured(
                    command, dict(os.environ), cwd=scratch))
            said[number] = done.stdout.decode().split()
        finally:
            seal.discard_install_caches(scratch)

    runs = [threading.Thread(target=guarded, args=(number,)) for number in (1, 2)]
    for run in runs:
        run.start()
    for number in range(20):  # the wheel-only build, writing the shared bucket itself
        entry = shared / f".tmp-shared-{number}"
        entry.mkdir()
        os.rename(entry, shared / "archive-v0" / f"shared-{number}")
    for run in runs:
        run.join()
    assert said == {1: ["sees-first", "10"], 2: ["sees-first", "10"]}
    assert sorted(os.listdir(shared / "archive-v0")) == sorted(
        ["first", *(f"shared-{number}" for number in range(20))])
    assert not list((root / "tmp").glob("t.install.*/cache-guard.*"))


@pytest.mark.slow
def test_the_wheel_only_run_never_picks_other_versions_than_a_plain_install(
        tmp_path, setuptools_wheel, runtime_seed):
    """Told to build nothing, uv does not fail on a version that has only an sdist: it
    takes an older version with a wheel. So a run whose requirements leave uv a choice
    (``foo==1.0`` needing ``bar``: bar 2.0 an sdist, bar 1.0 a wheel) must not go
    wheel-only first: the slug gets bar 2.0, built from its sdist, as pip and uv give."""
    index = tmp_path / "index"
    write_simple_index(index, {
        "foo": ("foo-1.0-py3-none-any.whl",
                minimal_wheel("foo", "1.0", "FOO = 1\n", requires=["bar"])),
        "bar": [("bar-1.0-py3-none-any.whl", minimal_wheel("bar", "1.0", "BAR = 1\n")),
                ("bar-2.0.tar.gz", setuptools_sdist(
                    "bar", "2.0", "from setuptools import setup\n"
                    "setup(name='bar', version='2.0', py_modules=[])\n"))],
        "setuptools": (setuptools_wheel.name, setuptools_wheel.read_bytes())})
    cache = seed_runtimes(runtime_seed, tmp_path / "cache", "3.13")
    app = make_app(tmp_path / "app", {**FILES, "requirements.txt": "foo==1.0\n"})
    with serve_directory(index) as base:
        compile_app(app, tmp_path / "app.tgz", cache_dir=cache,
                    env={"PIP_INDEX_URL": f"{base}/simple/"})
    with tarfile.open(tmp_path / "app.tgz") as tar:
        infos = sorted(name.split("/")[-2] for name in tar.getnames()
                       if name.endswith(".dist-info/METADATA"))
    assert "bar-2.0.dist-info" in infos and "bar-1.0.dist-info" not in infos, infos


@pytest.mark.slow
def test_requirements_leaving_dependencies_to_the_resolver_still_install_by_hard_link(
        tmp_path, setuptools_wheel, runtime_seed):
    """``foo==1.0`` needing ``bar`` (unpinned, 1.0 and 2.0 both wheels) leaves uv a choice,
    so the install is first planned by a guarded dry run and then given its pins: it goes
    wheel-only, hard-linking bar 2.0 (what a plain install takes) from uv's shared cache
    instead of copying it through the guard."""
    require_seal(tmp_path, overlays=True)
    write_simple_index(tmp_path / "index", {
        "foo": ("foo-1.0-py3-none-any.whl",
                minimal_wheel("foo", "1.0", "FOO = 1\n", requires=["bar"])),
        "bar": [(f"bar-{version}-py3-none-any.whl",
                 minimal_wheel("bar", version, f"BAR = {version[0]}\n"))
                for version in ("1.0", "2.0")],
        "setuptools": (setuptools_wheel.name, setuptools_wheel.read_bytes())})
    cache = seed_runtimes(runtime_seed, tmp_path / "cache", "3.13")
    app = make_app(tmp_path / "app", {**FILES, "requirements.txt": "foo==1.0\n"})
    with serve_directory(tmp_path / "index") as base:
        compile_app(app, tmp_path / "app.tgz", cache_dir=cache,
                    env={"PIP_INDEX_URL": f"{base}/simple/"})
    with tarfile.open(tmp_path / "app.tgz") as tar:
        modules = {name.rsplit("/", 1)[-1]: tar.extractfile(name).read()  # type: ignore[union-attr]
                   for name in tar.getnames() if name.endswith(("/foo.py", "/bar.py"))}
    assert modules == {"foo.py": b"FOO = 1\n", "bar.py": b"BAR = 2\n"}
    in_uv = {path.stat().st_ino for path in (cache / "uv").glob("archive-v*/*/bar.py")}
    layered = [path for path in cache.rglob("site-packages/bar.py")
               if not path.is_relative_to(cache / "uv")]
    assert layered and all(path.stat().st_ino in in_uv for path in layered), (in_uv, layered)
