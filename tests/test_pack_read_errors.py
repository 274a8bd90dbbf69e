"""Packing tells a file of the slug it cannot read (pack-source-unreadable, the file
named) from an output it cannot write (an OSError the build reports as
output-not-writable), instead of blaming -o for both."""

from __future__ import annotations

import builtins
import errno
import io
from pathlib import Path

import pytest

from slugbuild import compile_app, errors, pack
from slugbuild.log import Reporter

from .helpers import FIXTURE_APPS, make_app


def _fail_reading(monkeypatch, name: str, failure: OSError | None = None, *, on_read=False):
    """Make packing's reads of files named ``name`` fail as a real file system would."""
    real_open = builtins.open

    class _BrokenFile(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise OSError(errno.EIO, "Input/output error")

    def fake_open(path, *args, **kwargs):
        if isinstance(path, str) and Path(path).name == name:
            if on_read:
                real_open(path, *args, **kwargs).close()
                return _BrokenFile()
            raise failure or PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(pack, "open", fake_open, raising=False)  # shadows the builtin


def test_a_file_that_cannot_be_opened_is_named_not_the_output(tmp_path, monkeypatch):
    app = make_app(tmp_path / "app", {"app.py": "print('hi')\n", "secret.key": "k\n"})
    _fail_reading(monkeypatch, "secret.key")
    with pytest.raises(errors.SlugbuildError) as caught:
        pack.pack_tree(app, io.BytesIO())
    error = caught.value
    assert error.code == "pack-source-unreadable"
    assert isinstance(error, errors.BuildStepError)
    assert error.path.endswith("secret.key") and "Permission denied" in error.found
    assert "-o" not in error.action


def test_a_read_failing_midway_is_named_too(tmp_path, monkeypatch):
    app = make_app(tmp_path / "app", {"app.py": "print('hi')\n", "data.bin": "x" * 100})
    _fail_reading(monkeypatch, "data.bin", on_read=True)
    with pytest.raises(errors.SlugbuildError) as caught:
        pack.pack_tree(app, io.BytesIO())
    assert caught.value.code == "pack-source-unreadable"
    assert caught.value.path.endswith("data.bin")
    assert "Input/output error" in caught.value.found


def test_a_directory_that_cannot_be_listed_is_named(tmp_path, monkeypatch):
    app = make_app(tmp_path / "app", {"app.py": "print('hi')\n", "static/site.css": "a{}\n"})
    real_scandir = pack.os.scandir

    def fake_scandir(path):
        if str(path).endswith("static"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(pack.os, "scandir", fake_scandir)
    with pytest.raises(errors.SlugbuildError) as caught:
        pack.pack_tree(app, io.BytesIO())
    assert caught.value.code == "pack-source-unreadable"
    assert caught.value.path.endswith("static")


class _FullDisk(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_target_that_cannot_be_written_stays_an_output_error(tmp_path):
    app = make_app(tmp_path / "app", {"app.py": "print('hi')\n"})
    with pytest.raises(pack.OutputWriteError) as caught:
        pack.pack_tree(app, _FullDisk())
    assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENOSPC


@pytest.mark.slow
def test_compile_reports_an_unreadable_file_as_such(tmp_path, cache_dir, monkeypatch):
    """End to end: the build names the file and writes nothing; -o is not blamed."""
    _fail_reading(monkeypatch, "app.py")
    out = tmp_path / "out" / "slug.tgz"
    out.parent.mkdir()
    with pytest.raises(errors.SlugbuildError) as caught:
        compile_app(FIXTURE_APPS / "flask-hello", out, cache_dir=cache_dir,
                    reporter=Reporter(quiet=True))
    assert caught.value.code == "pack-source-unreadable", caught.value.render()
    assert caught.value.path.endswith("app.py")
    assert sorted(p.name for p in out.parent.iterdir()) == []
