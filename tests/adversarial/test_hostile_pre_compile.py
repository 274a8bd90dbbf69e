"""A pre_compile hook runs before the install, against the runtime placed at
``.heroku/python``; what it changes there keys the dependency layer
(``prefix_before_install_sha256``), so a layer installed onto a changed runtime is
never the one another app, whose runtime is clean, restores. An edit in place that
keeps the size and sets the mtime back (the runtime's files are hard links of the
cached runtime, or the build's copies) looked unchanged: only the ctime shows it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from slugbuild import compile_app
from slugbuild.cache import Cache
from slugbuild.dependencies import prefix_state, snapshot
from slugbuild.log import Reporter

from ..helpers import make_app, seed_runtimes, stealth_edit_hook

STDLIB_FILE = ".heroku/python/lib/python3.12/this.py"  # imported by nothing the build runs
FILES = {
    ".python-version": "3.12\n",
    "requirements.txt": "six==1.17.0\n",
    "Procfile": "web: python -m http.server $PORT\n",
}


def _runtime_layer(cache: Cache, files: dict[str, bytes]) -> Path:
    with cache.lock("runtimes", "fake"), cache.new_layer("runtimes", "fake", "k", {}) as tree:
        for rel, data in files.items():
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            (tree / rel).write_bytes(data)
    found = cache.lookup("runtimes", "fake", "k")
    assert found is not None
    return found.path


@pytest.mark.parametrize("copy", [False, True])
def test_a_same_size_edit_with_the_mtime_set_back_changes_the_prefix_state(
        tmp_path: Path, copy: bool) -> None:
    cache = Cache(tmp_path / "cache")
    _runtime_layer(cache, {"lib/python3.12/this.py": b"print('zen')\n", "bin/x": b"x"})
    layer = cache.lookup("runtimes", "fake", "k")
    assert layer is not None
    prefix = tmp_path / "build" / ".heroku" / "python"
    cache.restore(layer, prefix, copy=copy)
    baseline = snapshot(prefix, layer)
    assert prefix_state(prefix, baseline) is None  # untouched: the layer is shared

    edited = prefix / "lib/python3.12/this.py"
    st = edited.stat()
    with open(edited, "r+b") as handle:
        handle.write(b"import os;os#")  # same size
    os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert edited.stat().st_size == st.st_size and edited.stat().st_mtime_ns == st.st_mtime_ns
    assert prefix_state(prefix, baseline) is not None


@pytest.mark.slow
def test_a_layer_installed_onto_a_stealthily_edited_runtime_is_not_another_apps(
        tmp_path: Path, runtime_seed: Path) -> None:
    cache = seed_runtimes(runtime_seed, tmp_path / "cache")

    def layer_inputs() -> dict[str, dict[str, object]]:
        return {path.parent.name: json.loads(path.read_text())["inputs"]
                for path in (cache / "layers").glob("*/manifest.json")}

    # A hook that leaves the runtime alone shares the layer of apps without one.
    noop = make_app(tmp_path / "noop", {**FILES, "bin/pre_compile": "#!/bin/sh\ntrue\n"})
    (noop / "bin/pre_compile").chmod(0o755)
    compile_app(noop, tmp_path / "noop.tgz", cache_dir=cache, reporter=Reporter(quiet=True))
    (shared,) = layer_inputs()
    assert "prefix_before_install_sha256" not in layer_inputs()[shared]

    editor = make_app(tmp_path / "editor", {**FILES, "bin/pre_compile":
                                            stealth_edit_hook(STDLIB_FILE)})
    (editor / "bin/pre_compile").chmod(0o755)
    compile_app(editor, tmp_path / "editor.tgz", cache_dir=cache, reporter=Reporter(quiet=True))
    edited = [name for name, inputs in layer_inputs().items()
              if inputs.get("prefix_before_install_sha256")]
    assert len(edited) == 1 and edited[0] != shared

    # Another app, no hook: its runtime is clean, it restores the shared layer.
    other = make_app(tmp_path / "other", FILES)
    result = compile_app(other, tmp_path / "other.tgz", cache_dir=cache,
                         reporter=Reporter(quiet=True))
    assert "Restoring dependencies from cache" in "\n".join(result.log)
    assert set(layer_inputs()) == {shared, edited[0]}


def test_the_runtime_counts_as_untouched_only_as_placed(tmp_path: Path) -> None:
    """What decides whether the shared pyc store may be used by the build's prefix
    interpreter (dependencies.pyc_store): site-packages may grow, nothing else."""
    from slugbuild.dependencies import runtime_untouched

    cache = Cache(tmp_path / "cache")
    _runtime_layer(cache, {"lib/python3.12/this.py": b"print('zen')\n",
                           "lib/python3.12/site-packages/README.txt": b"r\n", "bin/x": b"x"})
    layer = cache.lookup("runtimes", "fake", "k")
    assert layer is not None
    prefix = tmp_path / "build" / ".heroku" / "python"
    cache.restore(layer, prefix)
    (prefix / "lib/python3.12/os.py").symlink_to("this.py")  # as if placed with it
    baseline = snapshot(prefix, layer)
    st = os.lstat(prefix / "lib/python3.12/os.py")
    baseline["lib/python3.12/os.py"] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode,
                                        st.st_ctime_ns)
    assert runtime_untouched(prefix, baseline, "python3.12")
    (prefix / "lib/python3.12/site-packages/six.py").write_text("")  # the install's
    (prefix / "bin/six-script").write_text("")
    assert runtime_untouched(prefix, baseline, "python3.12")

    shadow = prefix / "lib/python3.12/_hashlib.py"  # before lib-dynload on sys.path
    shadow.write_text("")
    assert not runtime_untouched(prefix, baseline, "python3.12")
    shadow.unlink()
    link = prefix / "lib/python3.12/os.py"
    link.unlink()
    link.symlink_to("this.py")  # the same target, made anew: it could be anything
    assert not runtime_untouched(prefix, baseline, "python3.12")
