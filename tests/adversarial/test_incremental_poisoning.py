"""A changed requirement is built from a previous layer: the app's own, or the
NEAREST compatible one another app left (incremental.py). Nothing an app does to
the layer it was given may reach the slug of another app built from it: a
post_compile hook that edits an installed file in place through its hard link
(same size, mtime set back), or deletes one. The other app's slug is the one a
clean cache gives, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..helpers import make_app, run_cli, seed_runtimes, stealth_edit_hook

PY = "python3.12"
SITE = f".heroku/python/lib/{PY}/site-packages"
BASE = {
    ".python-version": "3.12\n",
    "requirements.txt": "six==1.17.0\nidna==3.10\n",
    "Procfile": "web: python -m http.server $PORT\n",
    "app.py": "print('hello')\n",
}
# Changed: one more pin, so the nearest layer (the editor's) is built onto.
CHANGED = {**BASE, "requirements.txt": "six==1.17.0\nidna==3.10\ntyping_extensions==4.12.2\n"}

STEALTH_EDIT = stealth_edit_hook(f"{SITE}/six.py", f"os.unlink('{SITE}/idna/codec.py')\n")


def _compile(app: Path, out: Path, cache: Path) -> str:
    result = run_cli("compile", app, "-o", out, "--cache-dir", cache)
    assert result.returncode == 0, result.stderr
    return result.stderr


@pytest.mark.slow
def test_an_edit_of_the_editors_layer_never_reaches_a_changed_build_onto_it(
        tmp_path: Path, runtime_seed: Path) -> None:
    # Both caches start with the session's runtime layer: the subject is the
    # dependency layer built onto, not the cold runtime path.
    cache = seed_runtimes(runtime_seed, tmp_path / "cache")
    editor = make_app(tmp_path / "editor", {**BASE, "bin/post_compile": STEALTH_EDIT})
    (editor / "bin/post_compile").chmod(0o755)
    _compile(editor, tmp_path / "editor.tgz", cache)
    changed = make_app(tmp_path / "changed", CHANGED)  # another directory: the nearest layer
    _compile(changed, tmp_path / "changed.tgz", cache)
    _compile(changed, tmp_path / "clean.tgz", seed_runtimes(runtime_seed, tmp_path / "clean-cache"))
    assert (tmp_path / "changed.tgz").read_bytes() == (tmp_path / "clean.tgz").read_bytes()
