"""collectstatic's output reused when its inputs are unchanged, never stale (issue 20)."""

from __future__ import annotations

import os
import secrets
import tarfile
from pathlib import Path

import pytest

from slugbuild import compile_app
from slugbuild.cache import Cache, Layer
from slugbuild.log import Reporter
from slugbuild.static_reuse import StaticReuse, _apply, _delta, _scan

from ..helpers import DJANGO_APP, copy_app

REUSED = "Reused the output of an earlier run"
STYLE = "polls/static/polls/style.css"


def _build(app: Path, out: Path, cache: Path, **env: str):
    result = compile_app(app, out, cache_dir=cache, env=env, reporter=Reporter(quiet=True))
    return result, any(REUSED in line for line in result.log)


def _member(slug: Path, suffix: str) -> bytes:
    with tarfile.open(slug) as tar:
        for member in tar.getmembers():
            if "/staticfiles/" in member.name and member.name.endswith(suffix):
                extracted = tar.extractfile(member)
                assert extracted is not None
                return extracted.read()
    raise AssertionError(f"no staticfiles member ending in {suffix}")


@pytest.mark.slow
def test_unchanged_inputs_reuse_the_output_and_any_change_runs_it_again(tmp_path, cache_dir):
    app = copy_app(DJANGO_APP, tmp_path / "app")
    style = app / STYLE
    style.write_text(style.read_text() + f"\n/* {secrets.token_hex(8)} */\n")  # new to the cache

    first, reused = _build(app, tmp_path / "1.tgz", cache_dir)
    assert not reused
    again, reused = _build(app, tmp_path / "2.tgz", cache_dir)
    assert reused
    assert again.sha256 == first.sha256  # the same bytes as the run's

    # A static file changed: collectstatic runs, and the slug has the new content.
    marker = f"/* changed {secrets.token_hex(8)} */"
    style.write_text(style.read_text() + marker + "\n")
    changed, reused = _build(app, tmp_path / "3.tgz", cache_dir)
    assert not reused
    assert marker.encode() in _member(changed.slug_path, "polls/style.css")

    # A config var (settings may read any): runs again.
    _, reused = _build(app, tmp_path / "4.tgz", cache_dir, STATIC_TEST_FLAG="1")
    assert not reused
    _, reused = _build(app, tmp_path / "5.tgz", cache_dir, STATIC_TEST_FLAG="1")
    assert reused


def _reuse(tmp_path: Path, build_dir: Path, cache: Cache) -> StaticReuse:
    return StaticReuse(build_dir, tmp_path, cache, Reporter(quiet=True), [("m", "k")])


def test_a_kept_output_replays_added_changed_and_removed_paths(tmp_path):
    cache = Cache(tmp_path / "c")
    build = tmp_path / "build"
    (build / ".heroku/python/lib").mkdir(parents=True)
    (build / "app.py").write_text("x = 1\n")
    (build / "old.txt").write_text("gone soon\n")
    (build / "static").mkdir()
    (build / "static/keep.css").write_text("a {}\n")
    reuse = _reuse(tmp_path, build, cache)
    env = {"PATH": f"{build}/.heroku/python/bin:/usr/bin"}
    assert not reuse.apply(env, ["python", "manage.py"])
    reuse.before_run()
    # What "collectstatic" does: adds a tree, an executable, a link; changes and removes.
    (build / "out/css").mkdir(parents=True)
    (build / "out/css/site.css").write_text("b {}\n")
    (build / "out/run.sh").write_text("#!/bin/sh\n")
    (build / "out/run.sh").chmod(0o755)
    (build / "out/empty").mkdir()
    os.symlink("css/site.css", build / "out/latest.css")
    (build / "static/keep.css").write_text("a { color: red }\n")
    (build / "old.txt").unlink()
    reuse.keep()
    expected = _scan(build, hash_app=True)[1]

    # A second build directory as the first was before the run (another scratch path).
    other = tmp_path / "other"
    (other / ".heroku/python/lib").mkdir(parents=True)
    (other / "app.py").write_text("x = 1\n")
    (other / "old.txt").write_text("gone soon\n")
    (other / "static").mkdir()
    (other / "static/keep.css").write_text("a {}\n")
    second = StaticReuse(other, tmp_path / "s2", cache, Reporter(quiet=True), [("m", "k")])
    assert second.apply({"PATH": f"{other}/.heroku/python/bin:/usr/bin"},
                        ["python", "manage.py"])
    assert _scan(other, hash_app=True)[1] == expected
    assert os.readlink(other / "out/latest.css") == "css/site.css"
    assert os.access(other / "out/run.sh", os.X_OK)
    assert not (other / "old.txt").exists()

    # Another environment, or other layers: no reuse.
    third = StaticReuse(other, tmp_path / "s3", cache, Reporter(quiet=True), [("m", "k2")])
    assert not third.apply({"PATH": f"{other}/.heroku/python/bin:/usr/bin"},
                           ["python", "manage.py"])


def test_a_run_that_writes_into_the_python_prefix_is_not_kept(tmp_path):
    cache = Cache(tmp_path / "c")
    build = tmp_path / "build"
    (build / ".heroku/python/lib").mkdir(parents=True)
    (build / "app.py").write_text("x = 1\n")
    reuse = _reuse(tmp_path, build, cache)
    assert not reuse.apply({}, ["python"])
    reuse.before_run()
    (build / ".heroku/python/lib/written.txt").write_text("by the run\n")
    (build / "out").mkdir()
    reuse.keep()
    assert not (cache.root / "static").exists() or not any((cache.root / "static").iterdir())


def test_an_output_naming_the_build_directory_is_not_kept(tmp_path):
    cache = Cache(tmp_path / "c")
    build = tmp_path / "build"
    build.mkdir()
    reuse = _reuse(tmp_path, build, cache)
    assert not reuse.apply({}, ["python"])
    reuse.before_run()
    (build / "manifest.json").write_text(f'{{"root": "{build}/static"}}')
    reuse.keep()
    assert not (cache.root / "static").exists() or not any((cache.root / "static").iterdir())


def test_without_known_layers_nothing_is_keyed(tmp_path):
    build = tmp_path / "build"
    build.mkdir()
    reuse = StaticReuse(build, tmp_path, Cache(tmp_path / "c"), Reporter(quiet=True), None)
    assert not reuse.apply({}, ["python"])
    assert reuse.key is None


def test_delta_of_identical_scans_is_empty(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a/b.txt").write_text("b")
    scan = _scan(tmp_path, hash_app=False, skip_prefix=False)[0]
    assert _delta(scan, scan) == {"files": [], "symlinks": [], "directories": [], "removed": []}
    layer = Layer(tmp_path, {})
    _apply(layer, {"files": [], "symlinks": [], "directories": [], "removed": []}, tmp_path)
    assert (tmp_path / "a/b.txt").read_text() == "b"


def _kept_output(tmp_path: Path, cache: Cache) -> None:
    """A kept collectstatic output: out/site.css and out/app.js."""
    build = tmp_path / "first"
    (build / ".heroku/python").mkdir(parents=True)
    (build / "app.py").write_text("x = 1\n")
    reuse = StaticReuse(build, tmp_path / "s1", cache, Reporter(quiet=True), [("m", "k")])
    assert not reuse.apply({}, ["python"])
    reuse.before_run()
    (build / "out").mkdir()
    (build / "out/site.css").write_text("body { color: red }\n")
    (build / "out/app.js").write_text("let a = 1;\n")
    reuse.keep()


def _fresh_build(tmp_path: Path, name: str) -> Path:
    build = tmp_path / name
    (build / ".heroku/python").mkdir(parents=True)
    (build / "app.py").write_text("x = 1\n")
    return build


def test_a_linked_output_changed_in_place_is_never_reused(tmp_path):
    """A build holding the link lock gets the kept files as hard links (no copies);
    a step that then rewrites one in place, even keeping its size and mtime, only
    changes that build: the output is discarded once the links are handed back,
    and the next build runs collectstatic instead of reusing it."""
    cache = Cache(tmp_path / "c")
    _kept_output(tmp_path, cache)
    linked: list[Layer] = []
    build = _fresh_build(tmp_path, "second")
    reuse = StaticReuse(build, tmp_path / "s2", cache, Reporter(quiet=True), [("m", "k")],
                        on_linked=linked.append)
    assert reuse.apply({}, ["python"])
    assert (build / "out/site.css").read_text() == "body { color: red }\n"
    assert (build / "out/site.css").stat().st_nlink == 2  # the cache's file, linked
    for layer in linked:  # the build's end: links handed back, nothing changed
        cache.release_links(layer, build)
    build = _fresh_build(tmp_path, "third")
    reuse = StaticReuse(build, tmp_path / "s3", cache, Reporter(quiet=True), [("m", "k")],
                        on_linked=linked.append)
    assert reuse.apply({}, ["python"])
    css = build / "out/site.css"
    before = css.stat()
    with open(css, "r+") as handle:  # a post_compile hook edits it in place
        handle.write("body { color: blue}")
    os.utime(css, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert css.stat().st_size == before.st_size
    for layer in linked[1:]:
        cache.release_links(layer, build)
    build = _fresh_build(tmp_path, "fourth")  # another build: a cache object of its own
    reuse = StaticReuse(build, tmp_path / "s4", Cache(cache.root), Reporter(quiet=True),
                        [("m", "k")])
    assert not reuse.apply({}, ["python"])
    assert not (build / "out").exists()


def test_copies_of_an_output_another_build_is_writing_are_refused(tmp_path):
    """Without the link lock a build copies the kept files, checked against the
    output's files.json: one changed meanwhile (same size and mtime) is not served."""
    cache = Cache(tmp_path / "c")
    _kept_output(tmp_path, cache)
    (layer_dir,) = (cache.root / "static").iterdir()
    kept = layer_dir / "tree/out/app.js"
    before = kept.stat()
    kept.write_text("let b = 2;\n")
    os.utime(kept, ns=(before.st_atime_ns, before.st_mtime_ns))
    build = _fresh_build(tmp_path, "second")
    reuse = StaticReuse(build, tmp_path / "s2", Cache(cache.root), Reporter(quiet=True),
                        [("m", "k")])
    assert not reuse.apply({}, ["python"])
    assert not (build / "out/app.js").exists() or \
        (build / "out/app.js").read_text() != "let b = 2;\n"


# Appended to the settings module: what collectstatic's environment holds of a host
# variable, written where collectstatic gathers it (the app's static files).
_HOST_VAR_SETTINGS = '''
import os as _os
(BASE_DIR / "polls/static/polls/host.txt").write_text(
    repr(_os.environ.get("SLUGBUILD_TEST_HOST_VAR")))
'''


@pytest.mark.slow
def test_a_host_variable_never_reaches_a_static_output_another_build_reuses(
        tmp_path, cache_dir, monkeypatch):
    """collectstatic sees Heroku's build environment (config vars, exports, a fixed
    base), not the host's other variables: a CI runner's variable neither decides the
    output another build reuses nor leaks into it (a config var does, and keys the
    output: test_unchanged_inputs_reuse_the_output_and_any_change_runs_it_again)
    (review, session 6: item 7)."""
    app = copy_app(DJANGO_APP, tmp_path / "app")
    settings = app / "mysite/settings.py"
    settings.write_text(settings.read_text() + _HOST_VAR_SETTINGS
                        + f"# {secrets.token_hex(8)}\n")  # new to the cache
    monkeypatch.setenv("SLUGBUILD_TEST_HOST_VAR", "runner-one")
    first, reused = _build(app, tmp_path / "1.tgz", cache_dir)
    assert not reused and _member(first.slug_path, "polls/host.txt") == b"None"
    monkeypatch.setenv("SLUGBUILD_TEST_HOST_VAR", "runner-two")
    again, reused = _build(app, tmp_path / "2.tgz", cache_dir)
    assert reused and again.sha256 == first.sha256
