"""A changed requirement links the previous layer's files into the new tree, then
uv installs the rest (building any sdist: its setup.py runs). The linked files'
digests are taken from the previous files.json rather than hashed again, but only
for a file no one wrote after it was linked: a build that edits a linked file in
place (same size, mtime set back) during the install left the new layer's
files.json naming the clean digest for the poisoned bytes, and the next app that
starts from that layer (the nearest one) took them unhashed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from slugbuild.cache import Cache, build_index
from slugbuild.incremental import Distribution, PreviousLayer, Taken, known_digests, take

REL = "lib/python3.12/site-packages/six.py"
CLEAN = b"print('six')\n" * 64


def _previous(cache: Cache) -> PreviousLayer:
    with cache.lock("layers", "prev"), cache.new_layer("layers", "prev", "k", {}) as tree:
        (tree / REL).parent.mkdir(parents=True)
        (tree / REL).write_bytes(CLEAN)
    layer = cache.lookup("layers", "prev", "k")
    assert layer is not None
    index = build_index(layer.tree)
    return PreviousLayer(layer, index, {"six": Distribution("six-1.dist-info", "1", (REL,))})


def test_a_linked_file_edited_in_place_after_linking_is_hashed_again(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    previous = _previous(cache)
    tree = cache.scratch_dir("new") / "tree"
    tree.mkdir()
    taken = Taken({}, set())
    take(previous, tree, list(previous.distributions.values()), taken)
    clean = known_digests(previous, tree, taken)
    assert clean[REL][1] == hashlib.sha256(CLEAN).hexdigest()  # untouched: not hashed

    # What a package's build can do meanwhile, through the link: same size, mtime back.
    target = tree / REL
    st = target.stat()
    with open(target, "r+b") as handle:
        handle.write(b"import os;os.system('x')#")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    poisoned = hashlib.sha256(target.read_bytes()).hexdigest()
    index = build_index(tree, known_digests(previous, tree, taken))
    assert index["files"][REL][3] == poisoned
