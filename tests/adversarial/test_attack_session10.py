"""Holes an attacker found in session 10 in what session 9 added (the cache seal,
published runtimes, PART_FORMAT 2 donors, .release and METADATA parsing), each held
by a test that failed before its fix (docs/security.md, "Attacked in session 8/9/10")."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from slugbuild import compile_app
from slugbuild.cache_admin import STORES
from slugbuild.log import Reporter
from slugbuild.versions import sticky_minor

from ..helpers import (
    make_app,
    minimal_wheel,
    require_seal,
    seed_runtimes,
    serve_directory,
    write_simple_index,
)

PROCFILE = {"Procfile": "web: python -m http.server $PORT\n"}

# An sdist whose build (setup.py, run by the installer on the first build a fresh
# cache sees) makes every store of the cache that does not exist yet and plants an
# entry in it: the victim's sticky Python minor among them (sticky-python/ is keyed by
# the app's directory, which a CI runner's layout makes easy to guess).
STORE_SETUP_PY = '''\
import errno, json, os
from setuptools import setup
cache = os.environ["SEAL_CACHE"]
victim = json.loads(os.environ["SEAL_VICTIM"])
with open(os.environ["SEAL_REPORT"], "a") as report:
    for name in json.loads(os.environ["SEAL_STORES"]):
        target = os.path.join(cache, name, victim.get(name, "planted"))
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "w") as handle:
                handle.write(json.dumps({"app_dir": os.environ["SEAL_VICTIM_DIR"],
                                         "minor": "3.12"}))
            report.write("WROTE %s\\n" % name)
        except OSError as exc:
            report.write("DENIED %s %s\\n" % (errno.errorcode.get(exc.errno), name))
setup(name="storepkg", version="1.0", py_modules=[])
'''


def _sdist(name: str, setup_py: str) -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as archive:
        for member, text in {"setup.py": setup_py, "PKG-INFO":
                             f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
                             "pyproject.toml": '[build-system]\nrequires = ["setuptools"]\n'
                             'build-backend = "setuptools.build_meta"\n'}.items():
            info = tarfile.TarInfo(f"{name}-1.0/{member}")
            info.size = len(text.encode())
            archive.addfile(info, io.BytesIO(text.encode()))
    return data.getvalue()


@pytest.mark.slow
def test_a_package_build_cannot_make_a_store_the_cache_lacks_yet(tmp_path, runtime_seed,
                                                                   setuptools_wheel):
    """An install's run keeps the cache root writable (uv hard-links from its cache into
    the layer under tmp/, which a bind between them would refuse), and only the entries
    the root held when it started were bound read-only. On a fresh cache most stores do
    not exist yet at the first install (they are made when first needed), so a package's
    build made them and planted entries: here the victim app's sticky Python minor, and
    the victim, without a version file, was then built on 3.12 instead of 3.13."""
    require_seal(tmp_path)
    index = tmp_path / "index"
    write_simple_index(index, {
        "storepkg": ("storepkg-1.0.tar.gz", _sdist("storepkg", STORE_SETUP_PY)),
        "setuptools": (setuptools_wheel.name, setuptools_wheel.read_bytes()),
        "plainpkg": ("plainpkg-1.0-py3-none-any.whl",
                     minimal_wheel("plainpkg", "1.0", "VALUE = 1\n"))})
    cache = seed_runtimes(runtime_seed, tmp_path / "cache", "3.12")
    seed_runtimes(runtime_seed, cache, "3.13")
    victim = make_app(tmp_path / "victim", {**PROCFILE, "requirements.txt": "plainpkg==1.0\n"})
    sticky = hashlib.sha256(str(victim.absolute()).encode()).hexdigest()[:24] + ".json"
    report = tmp_path / "report"
    stores = sorted({*STORES, "tools", "static", "not-a-store"} - {"uv", "pip", "built-wheels"})
    attacker = make_app(tmp_path / "attacker", {**PROCFILE, ".python-version": "3.13\n",
                                                "requirements.txt": "storepkg==1.0\n"})
    with serve_directory(index) as base:
        config = {"PIP_INDEX_URL": f"{base}/simple/"}
        compile_app(attacker, tmp_path / "attacker.tgz", cache_dir=cache,
                    reporter=Reporter(quiet=True),
                    env={**config, "SEAL_CACHE": str(cache), "SEAL_REPORT": str(report),
                         "SEAL_STORES": json.dumps(stores), "SEAL_VICTIM_DIR": str(victim),
                         "SEAL_VICTIM": json.dumps({"sticky-python": sticky})})
    lines = report.read_text().splitlines()
    # What the victim's build, without a version file, would stay on (3.12, planted;
    # its default is 3.13).
    assert sticky_minor(cache, victim) is None, lines
    wrote = {line.split()[1] for line in lines if line.startswith("WROTE")}
    # Only a name slugbuild never reads may be made (the root stays writable).
    assert wrote <= {"not-a-store"}, lines


def test_every_store_of_the_cache_is_made_when_it_is_opened(tmp_path):
    """The names the modules use for their stores are all in cache.TOP_DIRS, which
    opening a cache makes (so a store added later cannot be left to a package build)."""
    from slugbuild import cache_admin, dependencies, node_runtime, static_reuse
    from slugbuild.cache import TOP_DIRS, Cache
    from slugbuild.installers.built_wheels import BUILT_WHEELS_DIR
    from slugbuild.runtime import download
    from slugbuild.versions import STICKY_DIR

    used = {*cache_admin.STORES, *cache_admin.LISTED_KINDS, *cache_admin.NOT_ENTRIES,
            dependencies.PYC_STORE, node_runtime.INDEX_DIR, static_reuse.STATIC_KIND,
            BUILT_WHEELS_DIR, download.DOWNLOADS_DIR, download.INDEX_DIR, STICKY_DIR}
    used.discard(cache_admin.CACHEDIR_TAG)
    assert used <= set(TOP_DIRS)
    Cache(tmp_path / "cache")
    assert {p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()} == set(TOP_DIRS)


def test_a_cache_an_older_version_laid_out_gets_every_store_bound_read_only(tmp_path):
    """The stores other builds read (cache_admin.LISTED_KINDS and STORES) are made when
    the cache is opened (cache.TOP_DIRS), and only then: a cache an older version laid
    out, lacking most of them, gets each one at open, so the first install run on it has
    each bound read-only (none left for a package build to make in the writable root)."""
    from slugbuild.cache import Cache
    from slugbuild.cache_admin import LISTED_KINDS
    from slugbuild.step_jail import INSTALLER_WRITES, CacheSeal

    root = tmp_path / "cache"
    for older in ("runtimes", "layers", "uv", "pip", "locks", "tmp"):
        (root / older).mkdir(parents=True)
    cache = Cache(root)
    seal = CacheSeal(cache.root, cache.scratch_dir("build"),
                     lambda: cache.scratch_dir("seal"), Reporter(quiet=True))
    bound = {Path(entry).name for entry in seal.installer_read_only()
             if Path(entry).parent == cache.root}
    assert {*LISTED_KINDS, *STORES} - INSTALLER_WRITES <= bound
    cache.release_uses()


def test_an_install_run_cannot_write_another_builds_scratch_in_the_same_process(tmp_path):
    """Scratch entries are named after the process's lease token, and an install's run
    got every entry of this process writable: two builds run by one process (threads of
    a build service calling compile_app) share it, so one app's package build could
    write the other's build directory and the dependency layer it was making, which
    then went into the cache for every app. Now only this build's scratch and the
    install's own are writable."""
    import os
    import tempfile

    from slugbuild.proc import run_tool
    from slugbuild.step_jail import CacheSeal

    require_seal(tmp_path)
    root = tmp_path / "cache"
    for entry in ("uv", "layers", "tmp/t.build.mine/app", "tmp/t.install.mine",
                  "tmp/t.build.theirs/app", "tmp/t.layers-dep.theirs/tree"):
        (root / entry).mkdir(parents=True)
    seal = CacheSeal(root, root / "tmp" / "t.build.mine", lambda: Path(
        tempfile.mkdtemp(prefix="t.seal.", dir=root / "tmp")), Reporter(quiet=True))
    script = " ; ".join(
        f"(echo x > {root}/{path} 2>/dev/null && echo WROTE {path} || echo DENIED {path})"
        for path in ("uv/ok", "tmp/t.build.mine/app/ok", "tmp/t.install.mine/ok",
                     "tmp/t.build.theirs/app/planted", "tmp/t.layers-dep.theirs/tree/planted"))
    output = seal.install_step("an install", own=[root / "tmp" / "t.install.mine"]).run_step(
        ["sh", "-c", script], lambda command: run_tool(command, Reporter(quiet=True),
                                                        dict(os.environ), show=False))
    assert sorted(line for line in output.splitlines() if line.startswith(
        ("WROTE", "DENIED"))) == [
        "DENIED tmp/t.build.theirs/app/planted", "DENIED tmp/t.layers-dep.theirs/tree/planted",
        "WROTE tmp/t.build.mine/app/ok", "WROTE tmp/t.install.mine/ok", "WROTE uv/ok"]


@pytest.mark.parametrize("slow", ["manifest", "blob"])
def test_a_registry_trickling_its_answers_cannot_stretch_a_pull(monkeypatch, slow):
    """Every read of a registry's answer has a timeout, but nothing bounded the whole:
    a registry sending one byte before each read timed out kept a build's cache pull
    (or a published runtime's) going for as long as it liked. A pull now has
    PULL_SECONDS in all; past them it is REGISTRY_UNREACHABLE (too-slow), which the
    build's pulls take as a registry that cannot be read (one warning, fail open)."""
    import http.server
    import time

    from slugbuild import errors, layer_artifact
    from slugbuild.cache_registry import RegistryStore
    from slugbuild.layer_artifact import CONFIG_TYPE, INDEX_TYPE, PART_TYPE, fetch_artifact

    from ..helpers import serving
    from .fakes import KEY, SPACE, client, fixed, server, trickle

    blob = "sha256:" + "0" * 64
    manifest = json.dumps({"schemaVersion": 2, "config": {
        "mediaType": CONFIG_TYPE, "digest": blob, "size": 1 << 20}, "layers": [
        {"mediaType": PART_TYPE, "digest": blob, "size": 10},
        {"mediaType": INDEX_TYPE, "digest": blob, "size": 10}]}).encode()
    slowly = trickle()

    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        if slow == "blob" and "/manifests/" in handler.path:
            fixed(200, manifest, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
                  )(handler)
        else:
            slowly(handler)

    monkeypatch.setattr(layer_artifact, "PULL_SECONDS", 2.0)
    started = time.monotonic()
    with serving(server(answer)) as made:
        with pytest.raises(errors.RegistryError) as raised:
            fetch_artifact(RegistryStore(client(made, timeout=5)), SPACE, "runtimes", KEY)
    assert raised.value.code == "registry-unreachable"
    assert "2 seconds ran out" in raised.value.render()
    assert time.monotonic() - started < 25  # the trickle lasts 30 s


@pytest.mark.slow
def test_a_hooks_link_does_not_lead_slugbuilds_own_writes_into_the_cache(tmp_path,
                                                                        runtime_seed):
    """A hook runs sealed, but slugbuild's own writes into the build directory after it
    do not: post_compile linking .profile.d/python.sh to checks/<marker> (four levels
    up is the cache) had write_profile make another app's passed import check, so that
    app's broken entry point went unchecked; the link was refused only later, at
    packing. Links leaving the slug are now refused right after each hook."""
    from slugbuild import errors

    cache = seed_runtimes(runtime_seed, tmp_path / "cache", "3.12")
    planted = cache / "checks" / ("0" * 32)
    hook = ("#!/bin/sh\nrm -rf .profile.d && mkdir .profile.d && "
            f"ln -s ../../../../checks/{planted.name} .profile.d/python.sh\n")
    attacker = make_app(tmp_path / "attacker", {
        **PROCFILE, ".python-version": "3.12\n", "requirements.txt": "six==1.17.0\n",
        "bin/post_compile": hook})
    (attacker / "bin" / "post_compile").chmod(0o755)
    with pytest.raises(errors.SlugbuildError) as raised:
        compile_app(attacker, tmp_path / "attacker.tgz", cache_dir=cache,
                    reporter=Reporter(quiet=True))
    assert raised.value.code == "symlink-leaves-slug"
    assert not planted.exists()
