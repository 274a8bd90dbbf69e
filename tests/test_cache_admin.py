"""`slugbuild cache list|prune|export|import`, and layers as OCI artifacts (issue 17).

A layer exported by one cache and imported into another is published through
the verified path and makes the same slug without installing anything; a
tampered export is refused; prune never removes a layer a build holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from slugbuild import compile_app
from slugbuild.cache import Cache
from slugbuild.cache_admin import all_entries, local_layers, prune
from slugbuild.cli import main
from slugbuild.errors import CACHE_COMMAND_FAILED
from slugbuild.layer_artifact import (
    ArtifactInvalid,
    Fetched,
    LayoutStore,
    layer_tag,
    make_artifact,
    materialise,
    namespace,
)
from slugbuild.log import Reporter

from .helpers import FIXTURE_APPS, assert_cache_consistent, assert_refused, run_cli


def _cache_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    """`slugbuild cache ARGS` in this process (a subprocess costs a second here)."""
    code = main(["cache", *map(str, args)])
    return code, capsys.readouterr().out

_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")


def test_tags_are_valid_and_namespaced() -> None:
    key = "ab" * 32
    tags = {layer_tag(namespace(platform), kind, key)
            for platform in ("debian-12-x86_64-glibc2.36", "debian-12-aarch64-glibc2.36",
                             "ubuntu-24.04-x86_64-glibc2.39" + "-x" * 40)
            for kind in ("runtimes", "layers")}
    assert len(tags) == 6
    assert all(_TAG.match(tag) for tag in tags), tags


def _fake_layer(cache: Cache, name: str, kind: str = "layers") -> str:
    key = hashlib.sha256(name.encode()).hexdigest()
    (cache.root / kind).mkdir(exist_ok=True)
    with cache.lock(kind, name), cache.new_layer(kind, name, key, {"test": name}) as tree:
        (tree / "data.txt").write_text(name * 1000)
    return key


def _age(cache: Cache, kind: str, name: str, days: float) -> None:
    moment = time.time() - days * 86400
    for path in (cache.root / "locks" / f"use-{kind}-{name}.lock",
                 cache.root / kind / name / "manifest.json"):
        if path.exists():
            os.utime(path, (moment, moment))


def test_prune_by_age_and_size_never_a_layer_in_use(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    cache = Cache(root)
    keys = {name: _fake_layer(cache, name) for name in ("old", "held", "building", "new")}
    holder = Cache(root)  # another build that found "held"
    assert holder.lookup("layers", "held", keys["held"]) is not None
    for name in ("old", "held", "building"):
        _age(cache, "layers", name, 10)

    with cache.lock("layers", "building"):  # another build is making this one
        result = prune(Cache(root), older_than_days=5, max_size=None)
    assert [layer.name for layer in result.removed] == ["old"]
    assert sorted(layer.name for layer in result.in_use) == ["building", "held"]
    assert not (root / "layers" / "old").exists()
    assert (root / "layers" / "held" / "tree" / "data.txt").is_file()

    holder.release_uses()
    result = prune(Cache(root), older_than_days=None, max_size=0)
    assert sorted(layer.name for layer in result.removed) == ["building", "held", "new"]
    assert local_layers(Cache(root)) == []
    assert_cache_consistent(root)


def test_list_prune_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "cache"
    cache = Cache(root)
    _fake_layer(cache, "one")
    _fake_layer(cache, "two", "runtimes")
    code, listed = _cache_cli(capsys, "list", "--json", "--cache-dir", root)
    assert code == 0
    layers = json.loads(listed)["layers"]
    assert {(entry["kind"], entry["name"]) for entry in layers} == {("layers", "one"),
                                                                  ("runtimes", "two")}
    assert all(entry["size"] >= 3000 and entry["last_used"].endswith("Z") for entry in layers)
    assert "2 layer(s)" in _cache_cli(capsys, "list", "--cache-dir", root)[1]

    code, dry = _cache_cli(capsys, "prune", "--max-size", "0", "--dry-run", "--cache-dir", root)
    assert code == 0 and "Would remove 2 layer(s)" in dry
    assert len(local_layers(Cache(root))) == 2
    assert main(["cache", "prune", "--cache-dir", str(root)]) == 1
    assert "cache-command-failed" in capsys.readouterr().err
    assert main(["cache", "prune", "--max-size", "lots", "--cache-dir", str(root)]) == 2
    assert "not a size" in capsys.readouterr().err
    assert_refused(run_cli("cache", "import", tmp_path / "nowhere", "--cache-dir", root),
                   CACHE_COMMAND_FAILED)


def _dependency_layer(cache_dir: Path):
    cache = Cache(cache_dir)
    [entry] = local_layers(cache, ("layers",))
    layer = cache.lookup("layers", entry.name, entry.key)
    assert layer is not None
    return layer


def test_materialise_refuses_what_its_index_does_not_say(runner_a, tmp_path: Path) -> None:
    cache_a = runner_a[0]
    artifact = make_artifact(_dependency_layer(cache_a), namespace("test"))
    assert artifact is not None
    config, index = json.loads(artifact.config), json.loads(artifact.index)
    rel = next(rel for rel in index["files"] if rel.endswith("/flask/app.py"))
    bad_digest = json.loads(artifact.index)
    bad_digest["files"][rel][2] = "0" * 64
    missing = json.loads(artifact.index)
    del missing["files"][rel]
    escaping = json.loads(artifact.index)
    escaping["dirs"].append("../outside")
    through_link = json.loads(artifact.index)  # a file placed below a symlink
    through_link["symlinks"][rel.rsplit("/", 1)[0]] = str(tmp_path / "outside")
    cache_b = Cache(tmp_path / "b")
    for wrong in (bad_digest, missing, escaping, through_link):
        with pytest.raises(ArtifactInvalid), cache_b.lock("layers", config["name"]):
            materialise(cache_b, Fetched(config, wrong, artifact.part))
        assert local_layers(cache_b) == []
    assert not (tmp_path / "outside").exists()
    assert_cache_consistent(tmp_path / "b")


@pytest.mark.slow
def test_export_import_gives_the_same_slug_without_installing(
        runner_a, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache_a, _, sha_a = runner_a[:3]
    exported = tmp_path / "export"
    code, out = _cache_cli(capsys, "export", exported, "--cache-dir", cache_a)
    assert code == 0 and "2 layer(s)" in out, out
    code, again = _cache_cli(capsys, "export", exported, "--cache-dir", cache_a)
    assert "(0 B sent)" in again, again
    # The directory is an OCI image layout other tools read.
    assert json.loads((exported / "oci-layout").read_text())["imageLayoutVersion"] == "1.0.0"
    assert len(LayoutStore(exported).tags()) == 2

    # A tampered blob: refused, nothing of it in the cache.
    tampered = tmp_path / "tampered"
    shutil.copytree(exported, tampered)
    biggest = max((tampered / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    data = bytearray(biggest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    biggest.write_bytes(bytes(data))
    code, refused = _cache_cli(capsys, "import", tampered, "--cache-dir", tmp_path / "c")
    assert code == 1 and "Refused" in refused, refused
    assert len(local_layers(Cache(tmp_path / "c"))) == 1  # the intact one only
    assert_cache_consistent(tmp_path / "c")

    cache_b = tmp_path / "b"
    code, imported = _cache_cli(capsys, "import", exported, "--cache-dir", cache_b)
    assert code == 0 and "Imported 2 layer(s)" in imported, imported
    reporter = Reporter(quiet=True)
    built = compile_app(FIXTURE_APPS / "flask-hello", tmp_path / "b.tgz", cache_dir=cache_b,
                        reporter=reporter)
    log = "\n".join(reporter.lines)
    assert built.sha256 == sha_a
    assert "Restoring Python" in log and "Restoring dependencies from cache" in log, log
    assert "Installing" not in log, log
    assert not (cache_b / "uv").exists() or not any((cache_b / "uv").iterdir())


# --- every kind of cache entry (issue 17: list and prune know them all) ---------------------

def _aged(path: Path, days: float) -> None:
    moment = time.time() - days * 86400
    os.utime(path, (moment, moment), follow_symlinks=False)


def _stores(root: Path) -> dict[str, Path]:
    """One entry of each store kind a real cache holds, each 10 days old but ``new``."""
    files = {
        "pyc": root / "pyc" / "ab" / ("c" * 62), "checks": root / "checks" / ("d" * 32),
        "history": root / "history" / "e.json", "sticky": root / "sticky-python" / "f.json",
        "index": root / "runtime-index" / "g.json",
        "archive": root / "downloads" / "debian-12" / "cpython-3.12.1.tar.zst",
        "record": root / "downloads" / "debian-12" / "cpython-3.12.1.tar.zst.json",
        "blob": root / "oci" / "blobs" / ("1" * 64), "part": root / "oci" / "parts" / "2.json",
        "uv": root / "uv" / "wheels" / "w.whl", "pip": root / "pip" / "http" / "x",
        "npm": root / "npm" / "_cacache" / "y",
        "buildpack": root / "buildpacks" / "bp-1" / "app" / "z",
        "node": root / "node-index" / "0123" / "index.json",
        "new": root / "pyc" / "cd" / ("e" * 62),
        "unknown": root / "from-a-newer-slugbuild" / "thing",
    }
    for name, path in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode() * 2000)
    for name, path in files.items():
        if name != "new":
            _aged(path, 10)
    for directory in root.rglob("*"):  # their mtimes count as writes too
        if directory.is_dir() and directory.name not in ("locks", "tmp", "leases", "cd"):
            _aged(directory, 10)
    return files


def test_list_shows_every_kind_with_disk_usage_hard_links_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "cache"
    cache = Cache(root)
    _fake_layer(cache, "dep")
    files = _stores(root)
    cache.release_uses()
    size = json.loads(_cache_cli(capsys, "list", "--json", "--cache-dir", root)[1])["size"]
    # uv installs by hard links: a layer's file and uv's are one inode, counted once.
    os.link(root / "layers" / "dep" / "tree" / "data.txt", root / "uv" / "linked.txt")
    code, listed = _cache_cli(capsys, "list", "--json", "--cache-dir", root)
    report = json.loads(listed)
    kinds = {store["kind"]: store for store in report["stores"]}
    assert set(kinds) == {"pyc", "checks", "history", "sticky-python", "runtime-index",
                          "downloads", "oci", "uv", "pip", "npm", "buildpacks", "node-index",
                          "from-a-newer-slugbuild"}
    assert kinds["pyc"]["entries"] == 2 and kinds["downloads"]["entries"] == 1
    assert kinds["pyc"]["removed"] == "at any time"
    assert kinds["uv"]["removed"] == "when no build runs"
    assert report["size"] == size > 16 * 4096
    assert report["layers"][0]["name"] == "dep"
    text = _cache_cli(capsys, "list", "--cache-dir", root)[1]
    assert "1 layer(s), 15 other entries" in text and "(2 entries)" in text, text
    assert files["new"].exists()


def test_prune_by_age_takes_every_kind_and_keeps_what_a_build_may_read(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    cache = Cache(root)
    keys = {name: _fake_layer(cache, name, kind) for name, kind in
            (("dep", "layers"), ("collected", "static"))}
    files = _stores(root)
    for kind, name in (("layers", "dep"), ("static", "collected")):
        _age(cache, kind, name, 10)
    cache.release_uses()

    build = Cache(root)  # a build running: it found the static layer and has the cache open
    assert build.lookup("static", "collected", keys["collected"]) is not None
    _age(cache, "static", "collected", 10)  # found a while ago
    result = prune(Cache(root), older_than_days=5, max_size=None)
    gone = {(entry.kind, entry.name) for entry in result.removed}
    assert gone == {("layers", "dep"), ("pyc", "ab/" + "c" * 62), ("checks", "d" * 32),
                    ("history", "e.json")}  # FREE stores go even while a build runs
    assert ("static", "collected") in {(e.kind, e.name) for e in result.in_use}
    assert all(files[name].exists() for name in ("uv", "pip", "blob", "archive", "new"))

    build.release_uses()  # the build is over
    result = prune(Cache(root), older_than_days=5, max_size=None)
    assert result.in_use == []
    assert not (root / "static" / "collected").exists()
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                  and not p.is_relative_to(root / "locks"))
    assert left == ["CACHEDIR.TAG", str(files["new"].relative_to(root))]  # the record went too
    assert_cache_consistent(root)


def test_prune_to_size_counts_what_removing_frees(tmp_path: Path) -> None:
    """A layer whose files uv's cache also links frees nothing until both go."""
    root = tmp_path / "cache"
    cache = Cache(root)
    _fake_layer(cache, "dep")
    data = root / "layers" / "dep" / "tree" / "data.txt"
    data.write_bytes(b"x" * 400_000)
    (root / "uv").mkdir(exist_ok=True)  # made when the cache is opened
    os.link(data, root / "uv" / "linked")
    (root / "pyc" / "ab").mkdir(parents=True)
    (root / "pyc" / "ab" / "keep").write_bytes(b"y" * 8192)
    _age(cache, "layers", "dep", 3)
    _aged(root / "uv" / "linked", 2)
    cache.release_uses()
    before = prune(Cache(root), older_than_days=None, max_size=100_000, dry_run=True)
    assert [entry.kind for entry in before.removed] == ["layers", "uv"]
    assert before.freed_bytes >= 400_000 and before.kept_bytes < 100_000
    assert (root / "uv" / "linked").exists()
    result = prune(Cache(root), older_than_days=None, max_size=100_000)
    assert [entry.kind for entry in result.removed] == ["layers", "uv"]
    assert (root / "pyc" / "ab" / "keep").exists() and not (root / "uv").exists()
    _fake_layer(Cache(root), "nested")  # directories: their st_nlink counts subdirectories
    everything = prune(Cache(root), older_than_days=None, max_size=0)
    assert everything.kept_bytes == 0 and everything.freed_bytes > 8192


@pytest.mark.slow
def test_prune_under_a_running_build_changes_nothing_it_makes(runner_a, tmp_path: Path) -> None:
    """Prunes every 0.2 s while a build installs and compiles: the pycs it could have
    reused go (it compiles them again), uv's cache stays while it runs, and its slug
    is runner A's, byte for byte."""
    import threading

    cache_a, _, sha_a = runner_a[:3]
    root = tmp_path / "cache"
    shutil.copytree(cache_a, root, symlinks=True)
    shutil.rmtree(root / "layers")  # the dependency layer is made again, from uv's cache
    old = [path for top in ("pyc", "uv") for path in (root / top).rglob("*")] + [root / "uv"]
    assert any(path.parent.parent == root / "pyc" for path in old)
    for path in old:
        _aged(path, 10)
    built: dict[str, object] = {}

    def build() -> None:
        reporter = Reporter(quiet=True)
        try:
            built["result"] = compile_app(FIXTURE_APPS / "flask-hello", tmp_path / "b.tgz",
                                          cache_dir=root, reporter=reporter)
        finally:
            built["log"] = "\n".join(reporter.lines)

    worker = threading.Thread(target=build)
    worker.start()
    deadline = time.monotonic() + 60
    while not any(".build." in path.name for path in (root / "tmp").iterdir()):
        assert worker.is_alive() and time.monotonic() < deadline  # the build has the cache
        time.sleep(0.02)
    kept_uv = removed_pycs = 0
    while worker.is_alive():
        result = prune(Cache(root), older_than_days=5, max_size=None)
        kept_uv += any(entry.kind == "uv" for entry in result.in_use)
        removed_pycs += sum(entry.kind == "pyc" for entry in result.removed)
        time.sleep(0.2)
    worker.join()
    assert "result" in built, built.get("log")
    assert built["result"].sha256 == sha_a
    assert "Installing requirements" in str(built["log"])
    assert kept_uv and removed_pycs and (root / "uv").is_dir()

    after = prune(Cache(root), older_than_days=None, max_size=0)  # no build now: all go
    assert after.in_use == [] and "uv" in {entry.kind for entry in after.removed}
    assert not (root / "uv").exists() and all_entries(Cache(root))[0] == []
    assert_cache_consistent(root)
