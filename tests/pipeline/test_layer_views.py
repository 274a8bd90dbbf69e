"""Warm builds show cached layers by a view: the same slug as placed files (issue 20)."""

from __future__ import annotations

import tarfile

import pytest

from slugbuild import compile_app
from slugbuild.log import Reporter

from ..helpers import FIXTURE_APPS, copy_app, make_app

pytestmark = pytest.mark.slow


def _build(app, out, cache_dir, **kwargs):
    return compile_app(app, out, cache_dir=cache_dir, reporter=Reporter(quiet=True), **kwargs)


def test_a_view_and_placed_files_give_the_same_slug(tmp_path, cache_dir, monkeypatch):
    app = copy_app(FIXTURE_APPS / "flask-hello", tmp_path / "app")
    monkeypatch.setenv("SLUGBUILD_LAYER_VIEWS", "0")
    placed = _build(app, tmp_path / "placed.tgz", cache_dir)
    monkeypatch.setenv("SLUGBUILD_LAYER_VIEWS", "1")
    viewed = _build(app, tmp_path / "viewed.tgz", cache_dir)
    assert viewed.sha256 == placed.sha256
    assert viewed.timings["cleanup"] >= 0
    with tarfile.open(viewed.slug_path) as tar:
        for member in tar:
            assert not (member.issym() and member.linkname.startswith("/")), member.name


def test_a_hook_gets_the_files_and_its_writes_reach_the_slug_not_the_cache(tmp_path,
                                                                              cache_dir):
    """post_compile runs the slug's Python and writes into .heroku/python: the layers are
    materialised first; what it wrote is in its slug only."""
    app = copy_app(FIXTURE_APPS / "flask-hello", tmp_path / "app")
    make_app(app, {"bin/post_compile": (
        "#!/usr/bin/env bash\nset -e\n"
        "python -c 'import flask, sys; print(sys.prefix)' > .heroku/python/hook-prefix.txt\n"
        "echo added > .heroku/python/lib/added-by-hook.txt\n")})
    (app / "bin" / "post_compile").chmod(0o755)
    hooked = _build(app, tmp_path / "hooked.tgz", cache_dir)
    with tarfile.open(hooked.slug_path) as tar:
        names = tar.getnames()
        prefix = tar.extractfile("./.heroku/python/hook-prefix.txt").read().decode()
    assert "./.heroku/python/lib/added-by-hook.txt" in names
    assert prefix.strip().endswith("/app/.heroku/python")  # the build's, not the cache's
    plain = copy_app(FIXTURE_APPS / "flask-hello", tmp_path / "plain")
    again = _build(plain, tmp_path / "plain.tgz", cache_dir)
    with tarfile.open(again.slug_path) as tar:
        assert "./.heroku/python/lib/added-by-hook.txt" not in tar.getnames()
