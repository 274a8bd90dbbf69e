"""A fresh runner with a warm cache registry (issue 17's speed target): besides the
runtime and dependency layers, the registry carries collectstatic's kept output
(static_reuse.py) and passed entry-point import checks (importcheck.py), so a
runner on an empty cache neither installs, nor runs collectstatic, nor starts the
slug's interpreter. Everything pulled is checked: a tampered static entry is
refused (collectstatic runs), and a static entry whose delta.json would reach
outside the build directory is never published.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import uuid
from pathlib import Path

import pytest

from slugbuild import compile_app
from slugbuild.cache import Cache
from slugbuild.cache_admin import local_layers
from slugbuild.cache_registry import RemoteCache, registry_store
from slugbuild.layer_artifact import (
    ArtifactInvalid,
    LayoutStore,
    _tar_members,
    fetch_artifact,
    kept_part,
    make_artifact,
    materialise,
    namespace,
    push_artifact,
    push_check,
)
from slugbuild.log import Reporter
from slugbuild.platform_info import current as current_platform
from slugbuild.static_reuse import DELTA, STATIC_KIND, StaticReuse, _scan

from .helpers import DJANGO_APP, assert_cache_consistent, crafted_tar

SPACE = namespace(current_platform().key)


# A config var of this test's own: collectstatic's key covers its environment (config
# vars, not the host's), so runner A runs it instead of reusing the session's output.
RUN_ENV = {"FRESH_RUNNER_TEST": uuid.uuid4().hex}


def _build(cache: Path, out: Path, registry: str):
    reporter = Reporter(quiet=True)
    result = compile_app(DJANGO_APP, out, cache_dir=cache, reporter=reporter,
                         cache_registry=registry, env=RUN_ENV)
    return result, "\n".join(reporter.lines)


def _push_layers_of(cache_dir: Path, build, reference: str) -> None:
    """The runtime and dependency layers whose parts ``build``'s slug holds, pushed as
    their runner would have when it made them."""
    cache, store = Cache(cache_dir), registry_store(reference)
    wanted = {part["sha256"] for part in build.metadata["layer_parts"]}
    for entry in local_layers(cache, ("runtimes", "layers")):
        layer = cache.lookup(entry.kind, entry.name, entry.key)
        if layer is not None:
            # The session's cache is shared: another test may have packed this layer
            # for the other layout since, and a layer pushes its most recent part.
            for record in layer.packed_parts.glob("*.json"):
                gz = record.with_suffix(".gz")
                if gz.is_file() and hashlib.sha256(gz.read_bytes()).hexdigest() in wanted:
                    os.utime(record)
        part = kept_part(layer) if layer is not None else None
        if layer is None or part is None or hashlib.sha256(part.data).hexdigest() not in wanted:
            continue
        artifact = make_artifact(layer, SPACE)
        assert artifact is not None
        push_artifact(store, artifact)


@pytest.mark.slow
def test_fresh_runner_pulls_layers_static_output_and_check(django_build, cache_dir: Path,
                                                           registry, tmp_path: Path) -> None:
    reference = f"docker://{registry.host}/slugbuild-cache/django-fresh"
    _push_layers_of(cache_dir, django_build, reference)
    # Runner A, on the session's warm cache, with this test's config var (RUN_ENV): it
    # runs collectstatic, keeps the output and pushes it.
    built, log = _build(cache_dir, tmp_path / "a.tgz", reference)
    assert built.sha256 == django_build.sha256 and "static files copied" in log, log
    assert built.cache_registry is not None
    [static_name] = built.cache_registry["pushed"]
    static = Cache(cache_dir).lookup(STATIC_KIND, static_name,
                                     json.loads((cache_dir / STATIC_KIND / static_name
                                                 / "manifest.json").read_text())["key"])
    assert static is not None
    artifact = make_artifact(static, SPACE)
    assert artifact is not None
    static_parts = [json.loads(artifact.manifest)["layers"][0]["digest"]]

    # Runner B: an empty cache. Same slug; nothing installed, collectstatic not run.
    result, log = _build(tmp_path / "cache-b", tmp_path / "b.tgz", reference)
    assert result.sha256 == django_build.sha256
    for pulled in ("Pulled the Python", "Pulled the dependency layer",
                   "Pulled the collectstatic output"):
        assert pulled in log, log
    assert "Installing" not in log and "static files copied" not in log, log
    assert "Reused the output of an earlier run" in log, log
    assert "could not be used" not in log and "was not used" not in log, log
    assert_cache_consistent(tmp_path / "cache-b")

    # Runner C: B's layers, but neither its collectstatic output nor its checks, and
    # the registry's static part tampered on disk: refused with one warning,
    # collectstatic runs, same slug. The import check B recorded in the registry
    # spares C the interpreter start.
    cache_c = tmp_path / "cache-c"
    shutil.copytree(tmp_path / "cache-b", cache_c, symlinks=True)
    shutil.rmtree(cache_c / STATIC_KIND)
    shutil.rmtree(cache_c / "checks")
    blobs = [path for digest in static_parts for path in (registry.root / "storage").rglob(
        f"blobs/sha256/{digest[7:9]}/{digest[7:]}/data")]
    originals = {path: path.read_bytes() for path in blobs}
    for path, data in originals.items():
        tampered = bytearray(data)
        tampered[len(tampered) // 2] ^= 0x55
        path.write_bytes(bytes(tampered))
    try:
        again, log = _build(cache_c, tmp_path / "c.tgz", reference)
    finally:
        for path, data in originals.items():
            path.write_bytes(data)
    assert again.sha256 == django_build.sha256
    warnings = [line for line in log.splitlines() if line.startswith(" !")
                and "cache registry" in line]
    assert len(warnings) == 1 and "collectstatic output" in warnings[0], log
    assert "static files copied" in log, log
    assert "checked for this dependency layer before, by another runner" in log, log
    assert_cache_consistent(cache_c)
    # collectstatic ran the slug's Python: the layers' trees were written for it.
    assert sorted(_trees(cache_c)) == [("layers", True), ("runtimes", True)]

    # Runner D: an empty cache, and everything in the registry (the layers, the
    # collectstatic output, B's passed import check): no step needs the layers' files,
    # so they are kept part-only, their trees never written. Same slug, and the same
    # slug.json (packages, SBOM, stack requirements) as the build made from the trees.
    last, log = _build(tmp_path / "cache-d", tmp_path / "d.tgz", reference)
    assert last.sha256 == django_build.sha256 and "Installing" not in log, log
    assert "static files copied" not in log and "by another runner" in log, log
    assert sorted(_trees(tmp_path / "cache-d")) == [("layers", False), ("runtimes", False)]
    assert json.loads((tmp_path / "d.json").read_text()) == _slug_json(django_build)
    assert_cache_consistent(tmp_path / "cache-d")


def _trees(cache_dir: Path) -> list[tuple[str, bool]]:
    """(kind, tree written) of the runtime and dependency layers of a cache."""
    return [(kind, (path / "tree").is_dir()) for kind in ("runtimes", "layers")
            for path in (cache_dir / kind).iterdir()]


def _slug_json(build) -> dict[str, object]:
    return json.loads(Path(build.metadata_path).read_text())


# --- quick: the static artifact and the check record, through an OCI layout ----------------

def _static_layer(cache: Cache, files: dict[str, bytes], delta: dict[str, list[str]],
                  key: str = "a" * 64):
    (cache.root / STATIC_KIND).mkdir(exist_ok=True)
    with cache.lock(STATIC_KIND, key[:24]), \
            cache.new_layer(STATIC_KIND, key[:24], key, {"format": 1}) as tree:
        for rel, data in files.items():
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            (tree / rel).write_bytes(data)
        (tree / "static" / "link").symlink_to("app.css")
        (tree.parent / DELTA).write_text(json.dumps(delta))
    layer = cache.lookup(STATIC_KIND, key[:24], key)
    assert layer is not None
    return layer


FILES = {"static/app.css": b"body{}\n", "static/admin/base.js": b"var x;\n"}
DELTA_OK = {"files": sorted(FILES), "symlinks": ["static/link"],
            "directories": ["static", "static/admin"], "removed": []}


def test_static_output_round_trip_is_reproducible(tmp_path: Path) -> None:
    one = _static_layer(Cache(tmp_path / "one"), FILES, DELTA_OK)
    os.utime(one.tree / "static/app.css", (1, 1))  # times never reach the artifact
    two = _static_layer(Cache(tmp_path / "two"), FILES, DELTA_OK)
    first, second = make_artifact(one, SPACE), make_artifact(two, SPACE)
    assert first is not None and second is not None and first.manifest == second.manifest
    store = LayoutStore(tmp_path / "layout", create=True)
    push_artifact(store, first)
    fetched = fetch_artifact(store, SPACE, STATIC_KIND, "a" * 64)
    assert fetched is not None
    target = Cache(tmp_path / "three")
    with target.lock(STATIC_KIND, "a" * 24):
        layer = materialise(target, fetched)
    assert json.loads((layer.path / DELTA).read_text()) == DELTA_OK
    assert (layer.tree / "static/admin/base.js").read_bytes() == FILES["static/admin/base.js"]
    assert os.readlink(layer.tree / "static/link") == "app.css"
    assert not layer.packed_parts.exists()  # no slug part: nothing for the pack stage


@pytest.mark.parametrize("delta", [
    {**DELTA_OK, "removed": ["../outside"]},
    {**DELTA_OK, "directories": ["/etc"]},
    {**DELTA_OK, "files": ["static/app.css"]},  # does not list every file of its tree
    {"files": sorted(FILES)},
], ids=["removes-outside", "absolute-directory", "files-differ", "incomplete"])
def test_static_entry_reaching_outside_is_refused(tmp_path: Path, delta) -> None:
    source = _static_layer(Cache(tmp_path / "one"), FILES, delta)
    artifact = make_artifact(source, SPACE)
    assert artifact is not None
    store = LayoutStore(tmp_path / "layout", create=True)
    push_artifact(store, artifact)
    fetched = fetch_artifact(store, SPACE, STATIC_KIND, "a" * 64)
    assert fetched is not None
    target = Cache(tmp_path / "two")
    with pytest.raises(ArtifactInvalid), target.lock(STATIC_KIND, "a" * 24):
        materialise(target, fetched)
    assert target.lookup(STATIC_KIND, "a" * 24, "a" * 64) is None


def test_check_records_name_their_layer_and_modules(tmp_path: Path) -> None:
    store = LayoutStore(tmp_path / "layout", create=True)
    remote = RemoteCache(store, "layout", SPACE, Reporter(quiet=True))
    assert not remote.check_passed("d" * 64, "k" * 64, ["gunicorn.app.wsgiapp"])
    remote.record_check("d" * 64, "k" * 64, ["gunicorn.app.wsgiapp"])
    assert remote.check_passed("d" * 64, "k" * 64, ["gunicorn.app.wsgiapp"])
    assert not remote.check_passed("d" * 64, "k" * 64, ["uvicorn.main"])
    # Another check's record put under this check's tag is not believed.
    push_check(store, SPACE, "e" * 64, {"layer_key": "k" * 64, "modules": ["x"]})
    [other] = [tag for tag in store.tags() if tag.endswith("e" * 64)]
    moved = store.get_manifest(other)
    assert moved is not None
    store.put_manifest(other.replace("e" * 64, "g" * 64), moved)
    assert not remote.check_passed("g" * 64, "k" * 64, ["x"])
    readonly = RemoteCache(store, "layout", SPACE, Reporter(quiet=True), readonly=True)
    readonly.record_check("f" * 64, "k" * 64, ["y"])
    assert len(store.tags()) == 3 and not remote.failed


# --- the part's tar reader ------------------------------------------------------------------

def _tar(directory: Path, entries: list[tuple[str, str | None, str]]) -> bytes:
    """A tar as the packer writes them: ustar, pax records where a name needs them."""
    return crafted_tar(directory / "part.tar", entries, mode="w").read_bytes()


def test_tar_reader_agrees_with_tarfile(tmp_path: Path) -> None:
    raw = _tar(tmp_path, [("./short.py", None, "x = 1\n"), ("./" + "d/" * 80 + "n.py", None, "y"),
                          ("./caf\u00e9/\u00fc.txt", None, ""), ("./link", "short.py", ""),
                          ("./" + "l" * 150, "t" * 120, "")])
    mine = list(_tar_members(memoryview(raw)))
    theirs = [(m.name, m.type, m.offset_data, m.size, m.linkname)
              for m in tarfile.open(fileobj=io.BytesIO(raw), mode="r:")]
    assert mine == theirs and len(mine) == 5


@pytest.mark.parametrize("damage", ["checksum", "truncated", "pax"])
def test_tar_reader_refuses_damage(tmp_path: Path, damage: str) -> None:
    raw = bytearray(_tar(tmp_path, [("./" + "n" * 120, None, "data" * 300), ("./b", None, "b")]))
    if damage == "checksum":
        raw[0] ^= 0x01  # a byte of the first header's name
    elif damage == "truncated":
        del raw[1500:]
    else:
        raw[512:515] = b"zz "  # the pax record's length
    with pytest.raises(ArtifactInvalid):
        list(_tar_members(memoryview(bytes(raw))))


def _app_before_collectstatic(build: Path) -> Path:
    (build / ".heroku/python/lib").mkdir(parents=True)
    (build / "app.py").write_text("x = 1\n")
    (build / "old.txt").write_text("gone soon\n")
    (build / "static").mkdir()
    (build / "static/keep.css").write_text("a {}\n")
    return build


COLLECTSTATIC_WRITES = [("out/css/site.css", "b {}\n", 0o644), ("out/run.sh", "#!/bin/sh\n", 0o755),
                        ("static/keep.css", "a { color: red }\n", 0o644)]


def test_a_kept_output_replays_on_another_machine_through_the_registry(tmp_path: Path) -> None:
    """What one cache kept is pushed, pulled by another cache and replayed there: the same
    build directory (added, changed, executable, linked, removed paths, empty directories)."""
    store = LayoutStore(tmp_path / "layout", create=True)
    first = Cache(tmp_path / "one")
    first.remote = RemoteCache(store, "layout", SPACE, Reporter(quiet=True))
    build = _app_before_collectstatic(tmp_path / "build")
    argv = ["python", "manage.py", "collectstatic"]
    reuse = StaticReuse(build, tmp_path / "s1", first, Reporter(quiet=True), [("m", "k")])
    assert not reuse.apply({"PATH": f"{build}/.heroku/python/bin"}, argv)
    reuse.before_run()
    for rel, text, mode in COLLECTSTATIC_WRITES:  # what the run adds or changes
        (build / rel).parent.mkdir(parents=True, exist_ok=True)
        (build / rel).write_text(text)
        (build / rel).chmod(mode)
    (build / "out/empty").mkdir()
    os.symlink("css/site.css", build / "out/latest.css")
    (build / "old.txt").unlink()
    reuse.keep()
    first.remote.push_published(first)
    assert reuse.key is not None and first.remote.pushed == [reuse.key[:24]]

    second = Cache(tmp_path / "two")
    reporter = Reporter(quiet=True)
    second.remote = RemoteCache(store, "layout", SPACE, reporter)
    other = _app_before_collectstatic(tmp_path / "other")
    again = StaticReuse(other, tmp_path / "s2", second, reporter, [("m", "k")])
    assert again.apply({"PATH": f"{other}/.heroku/python/bin"}, argv)
    assert _scan(other, hash_app=True)[1] == _scan(build, hash_app=True)[1]
    assert os.access(other / "out/run.sh", os.X_OK) and (other / "out/empty").is_dir()
    assert not (other / "old.txt").exists()
    assert second.remote.pulled == [reuse.key[:24]]
    assert any("Pulled the collectstatic output" in line for line in reporter.lines)
