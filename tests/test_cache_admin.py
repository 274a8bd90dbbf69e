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
from slugbuild.cache_admin import local_layers, prune
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
