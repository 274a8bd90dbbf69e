"""Each file hashed once per build: digests shared by stat, and never past a change.

A digest taken by one check (the RECORD check after an install, the host-path
scan) is reused by files.json and by the pack stage only while the file's
(device, inode, size, mtime, ctime) is what it was when it was read, and only
when that ctime was already older than the file system's clock then. These
tests hold the reuse to that: a same-size rewrite with the mtime set back to
the nanosecond is hashed again, a file changed in the clock tick of its read is
not remembered, and what files.json records is every file's real digest.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import time
from pathlib import Path

import pytest

from slugbuild import cache as cache_module
from slugbuild import relocate
from slugbuild.cache import Digests, build_index
from slugbuild.pack import LayerPart, pack_tree, prepare_layer_part
from slugbuild.records import Claim, file_matches
from slugbuild.slug_size import measure_slug


def _settled(path: Path, data: bytes) -> Path:
    """Write ``data`` at ``path`` and let the file system's clock move past its ctime."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    time.sleep(0.05)  # longer than a kernel clock tick (1-10 ms)
    return path


def _stealthy_rewrite(path: Path, data: bytes) -> None:
    """New bytes of the same length, the mtime set back to the nanosecond."""
    st = path.stat()
    assert len(data) == st.st_size
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _watched(tmp_path: Path) -> Digests:
    digests = Digests()
    (tmp_path / "probes").mkdir()
    digests.watch(tmp_path / "probes")
    return digests


def test_a_digest_holds_only_while_the_stat_is_unchanged(tmp_path):
    digests = _watched(tmp_path)
    path = _settled(tmp_path / "a.txt", b"hello")
    digest, st = digests.sha256(path)
    assert digest == hashlib.sha256(b"hello").hexdigest()
    assert digests.known(os.lstat(path)) == digest
    _stealthy_rewrite(path, b"HELLO")
    after = os.lstat(path)
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert digests.known(after) is None  # the ctime moved: no one can set it back
    assert digests.sha256(path)[0] == hashlib.sha256(b"HELLO").hexdigest()
    assert list((tmp_path / "probes").iterdir()) == []  # probes are removed


def test_a_file_changed_in_the_clock_tick_of_its_read_is_not_remembered(tmp_path):
    digests = _watched(tmp_path)
    st = os.lstat(_settled(tmp_path / "a.txt", b"x"))
    digests.remember(st, "d" * 64, clock=st.st_ctime_ns)  # same tick: a write could hide
    digests.remember(st, "d" * 64, clock=None)  # no clock on that device
    assert digests.known(st) is None
    digests.remember(st, "d" * 64, clock=st.st_ctime_ns + 1)
    assert digests.known(st) == "d" * 64


def test_files_on_a_device_without_a_probe_directory_are_not_remembered(tmp_path):
    digests = Digests()  # nothing watched
    path = _settled(tmp_path / "a.txt", b"x")
    assert digests.sha256(path)[0] == hashlib.sha256(b"x").hexdigest()
    assert digests.known(os.lstat(path)) is None


def _counting_hashes(monkeypatch) -> list[str]:
    hashed: list[str] = []
    original = cache_module.file_sha256

    def counting(path):
        hashed.append(os.path.basename(path))
        return original(path)

    monkeypatch.setattr(cache_module, "file_sha256", counting)
    return hashed


def test_files_json_takes_the_record_checks_digests_and_rehashes_what_changed(
        tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "DIGESTS", _watched(tmp_path))
    monkeypatch.setattr("slugbuild.records.DIGESTS", cache_module.DIGESTS)
    tree = tmp_path / "tree"
    kept = _settled(tree / "kept.py", b"kept = 1\n")
    edited = _settled(tree / "edited.py", b"edit = 1\n")
    for path in (kept, edited):  # the RECORD check after the install
        data = path.read_bytes()
        assert file_matches(str(path), Claim("p-1.dist-info", hashlib.sha256(data).hexdigest(),
                                             len(data)))
    _stealthy_rewrite(edited, b"edit = 2\n")  # a write through a hard link, say
    hashed = _counting_hashes(monkeypatch)
    index = build_index(tree)
    assert hashed == ["edited.py"]
    assert index["files"]["kept.py"][3] == hashlib.sha256(b"kept = 1\n").hexdigest()
    assert index["files"]["edited.py"][3] == hashlib.sha256(b"edit = 2\n").hexdigest()
    assert index["files"]["edited.py"][4] == edited.stat().st_ctime_ns


def test_the_host_path_scan_hashes_whole_files_for_files_json(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "DIGESTS", _watched(tmp_path))
    monkeypatch.setattr(relocate, "DIGESTS", cache_module.DIGESTS)
    tree = tmp_path / "tree"
    big = bytes(range(256)) * 20_000  # several scan chunks
    _settled(tree / "big.bin", big)
    _settled(tree / "mentions.txt", b"built in /build/dir\n")
    _settled(tree / "empty", b"")
    found = relocate.find_references(tree, ["/build/dir"])
    assert [(p.name, n) for p, n in found] == [("mentions.txt", "/build/dir")]
    hashed = _counting_hashes(monkeypatch)
    index = build_index(tree)
    assert sorted(hashed) == ["empty"]  # nothing to read for the scan
    assert index["files"]["big.bin"][3] == hashlib.sha256(big).hexdigest()
    assert index["files"]["mentions.txt"][3] == \
        hashlib.sha256(b"built in /build/dir\n").hexdigest()
    # A scan that stops early (every needle found) reads part of a file: no digest.
    _settled(tree / "early.bin", b"/build/dir" + big)
    assert "early.bin" in [p.name for p, _ in relocate.find_references(tree, ["/build/dir"])]
    hashed.clear()
    build_index(tree)
    assert hashed == ["early.bin"]  # "empty" was remembered by the last build_index


def test_a_scan_passes_over_skipped_links_and_files_but_not_directories(tmp_path):
    # warn_machine_paths skips a layer view's links (they name the cache by design):
    # the same mentions as scanning everything and dropping those paths afterwards.
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "inner.txt").write_bytes(b"/build/dir\n")
    (tree / "f.txt").write_bytes(b"/build/dir\n")
    (tree / "kept.txt").write_bytes(b"/build/dir\n")
    (tree / "link").symlink_to("/build/dir/x")
    skip = frozenset({"link", "f.txt", "d"})
    everything = relocate.find_references(tree, ["/build/dir"])
    assert relocate.find_references(tree, ["/build/dir"], skip=skip) == [
        (path, needle) for path, needle in everything
        if path.relative_to(tree).as_posix() not in skip]
    assert [p.relative_to(tree).as_posix() for p, _ in relocate.find_references(
        tree, ["/build/dir"], skip=skip)] == ["d/inner.txt", "kept.txt"]


def test_a_kept_part_is_hashed_once_and_again_after_any_change(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "DIGESTS", _watched(tmp_path))
    monkeypatch.setattr("slugbuild.pack.DIGESTS", cache_module.DIGESTS)
    layer = tmp_path / "layer"
    _settled(layer / "tree" / "lib" / "mod.py", b"x = 1\n")
    root = tmp_path / "root"
    shutil.copytree(layer / "tree", root / ".heroku/python", copy_function=os.link)
    part = LayerPart(".heroku/python", layer / "tree", layer / "packed")
    first = io.BytesIO()
    pack_tree(root, first, mtime=1, layers=[part])
    (kept,) = part.packed_dir.glob("*.gz")
    time.sleep(0.05)
    calls: list[int] = []
    original = hashlib.sha256

    def counting(data=b""):
        if len(data) == size:  # the part's bytes (not a name, not the slug's running hash)
            calls.append(len(data))
        return original(data)

    size = kept.stat().st_size
    monkeypatch.setattr(hashlib, "sha256", counting)
    prepare_layer_part(part, mtime=1)
    assert calls == [size]  # checked once ...
    again = io.BytesIO()
    pack_tree(root, again, mtime=1, layers=[part])
    assert calls == [size]  # ... and trusted while unchanged
    assert again.getvalue() == first.getvalue()
    data = kept.read_bytes()
    _stealthy_rewrite(kept, bytes([data[0] ^ 1]) + data[1:])  # damaged in place
    third = io.BytesIO()
    pack_tree(root, third, mtime=1, layers=[part])
    assert len(calls) >= 2  # hashed again, found wrong, made again
    assert third.getvalue() == first.getvalue()


@pytest.mark.parametrize("layout", ["herokuish", "heroku"])
def test_layer_parts_are_measured_ahead_with_the_figures_of_the_whole_slug(tmp_path, layout):
    layer = tmp_path / "layer"
    _settled(layer / "tree" / "lib/python3.12/site-packages/six.py", b"six = 1\n" * 5000)
    root = tmp_path / "root"
    shutil.copytree(layer / "tree", root / ".heroku/python", copy_function=os.link)
    (root / "app.py").write_text("print('app')\n")
    part = LayerPart(".heroku/python", layer / "tree", layer / "packed")
    prepare_layer_part(part, layout, mtime=1)
    assert len(list(part.packed_dir.glob("*.sizes.json"))) == 1  # measured ahead
    slug = tmp_path / "slug.tgz"
    with open(slug, "wb") as handle:
        packed = pack_tree(root, handle, layout, mtime=1, layers=[part])
    assert measure_slug(slug, layout, parts=packed.parts) == measure_slug(slug, layout)


def _published(cache, files: dict[str, bytes]):
    with cache.new_layer("layers", "demo", "k", {}) as tree:
        for rel, data in files.items():
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            (tree / rel).write_bytes(data)
    return cache.lookup("layers", "demo", "k")


def test_a_build_removing_its_links_records_the_ctimes_so_the_next_check_hashes_nothing(
        tmp_path, monkeypatch):
    from slugbuild.cache import Cache

    cache = Cache(tmp_path / "c")
    layer = _published(cache, {"a.py": b"a = 1\n", "d/b.py": b"b = 1\n"})
    build_dir = tmp_path / "build"
    cache.restore(layer, build_dir)  # hard links, their ctimes recorded
    cache.release_links(layer, build_dir)  # the build's cleanup
    assert not (build_dir / "a.py").exists() and not (build_dir / "d/b.py").exists()
    hashed = _counting_hashes(monkeypatch)
    assert Cache(tmp_path / "c").verify(layer) == []
    assert hashed == []  # unlinking moved every ctime; all were recorded


def test_a_write_through_a_link_is_never_recorded_away_when_the_links_go(tmp_path, monkeypatch):
    from slugbuild.cache import Cache

    cache = Cache(tmp_path / "c")
    layer = _published(cache, {"a.py": b"a = 1\n", "d/b.py": b"b = 1\n"})
    build_dir = tmp_path / "build"
    cache.restore(layer, build_dir)
    _stealthy_rewrite(build_dir / "a.py", b"a = 2\n")  # a build step, mtime set back
    cache.release_links(layer, build_dir)
    assert (build_dir / "a.py").exists()  # not the recorded file: left for the rmtree
    hashed = _counting_hashes(monkeypatch)
    assert Cache(tmp_path / "c").verify(layer) == ["a.py: content changed"]
    assert hashed == ["a.py"]
