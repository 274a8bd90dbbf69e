"""collectstatic and the entry-point check read the cached layers in place, through an
overlay: a settings module that writes into the prefix changes no cached file, and
its writes reach the slug as on copied layers (issue 20, layer_overlay.py)."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import pytest

from slugbuild import compile_app
from slugbuild.cache import Cache
from slugbuild.layer_overlay import mechanism
from slugbuild.log import Reporter

from ..helpers import DJANGO_APP, copy_app, seed_runtimes

pytestmark = pytest.mark.slow

# Appended to the settings module (imported by collectstatic and by the entry-point
# check): every kind of change to the runtime's and the packages' files, each once.
_HOSTILE_SETTINGS = '''
import os as _os, shutil as _shutil, sys as _sys, sysconfig as _sysconfig
_site = _sysconfig.get_paths()["purelib"]
_stdlib = _sysconfig.get_paths()["stdlib"]
def _once(path):
    return not _os.path.exists(path + ".done-by-settings")
if _once(_site + "/written"):
    for _name in ("written", "written.done-by-settings"):
        with open(_os.path.join(_site, _name), "w") as _f:
            _f.write("by settings\\n")
    with open(_os.path.join(_site, "whitenoise", "__init__.py"), "a") as _f:
        _f.write("# appended by settings\\n")
    _os.chmod(_os.path.join(_sys.prefix, "bin", "gunicorn"), 0o700)
    _os.chmod(_os.path.join(_stdlib, "this.py"), 0o600)
    _os.unlink(_os.path.join(_stdlib, "antigravity.py"))
    _shutil.rmtree(_os.path.join(_site, "django", "contrib", "flatpages", "templatetags"))
    _dist = [_n for _n in _os.listdir(_site) if _n.startswith("gunicorn-")][0]
    _os.rename(_os.path.join(_site, _dist), _os.path.join(_site, "renamed-" + _dist))
    _os.symlink("written", _os.path.join(_site, "written-link"))
'''


def _layer_files(cache: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every file of the cached runtime and dependency layers' trees: inode, size,
    mtime, mode (not the cache's own records beside them, which it may rewrite)."""
    found = {}
    for tree in [*(cache / "layers").glob("*/tree"), *(cache / "runtimes").glob("*/tree")]:
        for directory, _, files in os.walk(tree):
            for name in files:
                path = os.path.join(directory, name)
                st = os.lstat(path)
                found[path] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)
    return found


def _members(slug: Path) -> dict[str, tuple[str, int, str]]:
    found = {}
    with tarfile.open(slug) as tar:
        for member in tar:
            data = tar.extractfile(member).read() if member.isfile() else b""
            found[member.name] = (member.type.decode(), member.mode,
                                  member.linkname or hashlib.sha256(data).hexdigest())
    return found


def test_settings_writing_into_the_prefix_change_no_cached_file(tmp_path, runtime_seed):
    if mechanism(tmp_path) is None:
        pytest.skip("no private overlay on this machine (the build materialises instead)")
    # A cache of its own: every cached file is compared before and after, and the
    # copied build needs the link lock, which builds of other tests on the session
    # cache take meanwhile (xdist).
    cache_dir = seed_runtimes(runtime_seed, tmp_path / "cache")
    plain = copy_app(DJANGO_APP, tmp_path / "plain")
    compile_app(plain, tmp_path / "plain.tgz", cache_dir=cache_dir,
                reporter=Reporter(quiet=True))  # the layers this app uses, cached
    app = copy_app(DJANGO_APP, tmp_path / "app")
    settings = app / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + _HOSTILE_SETTINGS)
    before = _layer_files(cache_dir)

    viewed = compile_app(app, tmp_path / "viewed.tgz", cache_dir=cache_dir,
                         reporter=Reporter(quiet=True))
    log = "\n".join(viewed.log)
    assert "read in place through an overlay" in log, log
    assert "wrote into .heroku/python" in log, log
    after = _layer_files(cache_dir)
    assert {path: after.get(path) for path in before} == before  # not one file changed

    # The same build on copied layers (another build holds the link lock): the settings
    # write into the build's copies; the slug must hold the same files.
    with Cache(cache_dir).exclusive_links() as holding:
        assert holding
        copied = compile_app(app, tmp_path / "copied.tgz", cache_dir=cache_dir,
                             reporter=Reporter(quiet=True))
    members = _members(viewed.slug_path)
    assert members == _members(copied.slug_path)
    site = next(name for name in members if name.endswith("/site-packages/written"))
    assert site.replace("/written", "/written-link") in members
    assert not any(name.endswith("/antigravity.py") for name in members)
    assert not any("/flatpages/templatetags" in name for name in members)
    assert any("/renamed-gunicorn-" in name for name in members)
    with tarfile.open(viewed.slug_path) as tar:
        init = next(n for n in members if n.endswith("/site-packages/whitenoise/__init__.py"))
        assert b"# appended by settings" in tar.extractfile(init).read()
    final = _layer_files(cache_dir)
    assert {path: final.get(path) for path in before} == before
