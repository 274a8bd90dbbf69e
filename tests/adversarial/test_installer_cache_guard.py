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
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from slugbuild import compile_app
from slugbuild.layer_overlay import mechanism

from ..helpers import (
    make_app,
    minimal_wheel,
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
    if mechanism(tmp_path) is None:
        pytest.skip("no private overlay here: the guard falls back to the plain seal")
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
