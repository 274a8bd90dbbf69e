"""A cache directory that is a hostile tree (restored from a CI cache archive, or
shared): symlinks planted where slugbuild expects its own directories and lock files.
``cache list/prune`` never reach through one (before, ``layers -> /srv`` had prune
delete what it named), and no lock file is opened through one (before, a build
created, and stamped the time of, whatever file ``locks/open.lock`` named)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest

from slugbuild.cache import Cache, open_lock
from slugbuild.cache_admin import all_entries, prune


def _layer_like(directory: Path) -> Path:
    (directory / "tree").mkdir(parents=True)
    (directory / "tree" / "precious").write_text("not the cache's\n")
    (directory / "manifest.json").write_text(json.dumps({"key": "k" * 64}))
    return directory


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Cache, Path]:
    outside = tmp_path / "outside"
    cache = Cache(tmp_path / "cache")
    for kind in ("layers", "tools"):
        if (cache.root / kind).exists():
            os.rmdir(cache.root / kind)
        _layer_like(outside / kind / "victim")
        os.symlink(outside / kind, cache.root / kind)  # a kind directory that is a link
    (cache.root / "runtimes").mkdir(exist_ok=True)
    os.symlink(_layer_like(outside / "one-layer"), cache.root / "runtimes" / "linked")
    (cache.root / "pyc" / "ab").mkdir(parents=True)
    os.symlink(_layer_like(outside / "pyc-entry"), cache.root / "pyc" / "ab" / "cd")
    os.symlink(outside, cache.root / "uv-linked")  # an unknown store that is a link
    return cache, outside


def test_prune_never_removes_what_a_symlink_in_the_cache_names(
        planted: tuple[Cache, Path]) -> None:
    cache, outside = planted
    before = sorted(str(p.relative_to(outside)) for p in outside.rglob("*"))
    entries, _ = all_entries(cache)
    assert not [entry for entry in entries if entry.kind in ("layers", "tools", "runtimes")]
    prune(cache, older_than_days=0, max_size=0)
    assert sorted(str(p.relative_to(outside)) for p in outside.rglob("*")) == before
    assert (outside / "layers" / "victim" / "tree" / "precious").is_file()


@pytest.mark.parametrize("lock", ["open.lock", "links.lock", "use-runtimes-x.lock",
                                  "runtimes-x.lock"])
def test_a_lock_file_that_is_a_symlink_is_not_opened(tmp_path: Path, lock: str) -> None:
    cache = Cache(tmp_path / "cache")
    target = tmp_path / "etc-nologin"  # as root, an empty /etc/nologin stops logins
    path = cache.root / "locks" / lock
    path.unlink(missing_ok=True)
    os.symlink(target, path)
    with pytest.raises(OSError):
        open_lock(path).close()
    again = Cache(tmp_path / "cache")  # takes locks/open.lock (unprotected when it cannot)
    again.hold_use("runtimes", "x")
    again.release_uses()
    with contextlib.suppress(OSError), again.exclusive_links():
        pass
    with contextlib.suppress(OSError), again.lock("runtimes", "x"):
        pass
    assert not target.exists()


NESTED = "[" * 100000 + "]" * 100000


def test_nested_json_in_the_caches_hints_is_no_hint(tmp_path: Path) -> None:
    # history/ (the rebuild hint and the incremental path's previous layer) and a
    # layer's manifest.json as the nearest-layer search reads them: nested past the
    # recursion limit they were a RecursionError, every build an input-too-deep error.
    from slugbuild import incremental
    from slugbuild.dependencies import _explain_rebuild, _history_path
    from slugbuild.log import Reporter

    cache = Cache(tmp_path / "cache")
    history = _history_path(cache, tmp_path / "app")
    history.parent.mkdir(parents=True, exist_ok=True)
    history.write_text(NESTED)
    assert incremental.previous_inputs(history) is None
    _explain_rebuild(cache, tmp_path / "app", {}, Reporter(quiet=True))
    layer = cache.root / "layers" / "x"
    (layer / "tree").mkdir(parents=True)
    (layer / "manifest.json").write_text(NESTED)
    assert incremental.nearest_inputs(cache, {}, "python3.12", set()) is None


def test_nested_records_beside_a_layer_are_read_as_absent(tmp_path: Path) -> None:
    # A pulled layer's ELF facts and size breakdown come from its registry entry and
    # are kept beside its part: parsed at the pull, read again deeper in the build,
    # where the recursion limit is nearer. Nested past it, a record is absent (read
    # again from the tree, measured again), never a RecursionError.
    from slugbuild import slug_size, stack_compat

    record = tmp_path / "stack-requirements.json"
    record.write_text(NESTED)
    tree = tmp_path / "tree"
    tree.mkdir()
    assert stack_compat._layer_elf_files(tree, record) == ([], [])
    measure = tmp_path / "part.measure.json"
    measure.write_text(NESTED)
    assert slug_size._kept_measure(measure, "ab" * 32, 10) is None


def test_cache_export_into_a_restored_directory_writes_through_no_link(tmp_path: Path) -> None:
    # An export directory is what a CI cache action restores: a dangling oci-layout
    # link planted there had the export create the file it named.
    from slugbuild.layer_artifact import LayoutStore

    target = tmp_path / "outside" / "planted"
    target.parent.mkdir()
    export = tmp_path / "export"
    export.mkdir()
    (export / "oci-layout").symlink_to(target)
    LayoutStore(export, create=True)
    assert not target.exists() and not (export / "oci-layout").is_symlink()
    assert json.loads((export / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
