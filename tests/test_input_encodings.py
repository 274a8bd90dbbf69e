"""Input files saved by Windows editors (BOMs, UTF-16, CRLF) read as their tools read them.

pip decodes a requirements file by its BOM, then a PEP 263 coding line, then as
UTF-8; slugbuild's checks (includes, pins, local packages), the Procfile and
.slugignore readers do the same, uv is given UTF-8 copies, and nothing of a
file's bytes reaches the log raw.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from pip._internal.req.req_file import _decode_req_file

from slugbuild import errors
from slugbuild.detect import detect
from slugbuild.installers import locks
from slugbuild.installers.requirements import (
    install_editables_as_copies,
    local_requirements,
    lock_like,
    requirement_lines,
    requirements_files,
    unpinned_requirements,
)
from slugbuild.installers.uv import _requirements_options
from slugbuild.log import Reporter
from slugbuild.procfile import read_procfile
from slugbuild.textfiles import decode_like_pip, plain_utf8, read_utf8

from .helpers import ENCODINGS, FIXTURE_APPS, LINE_ENDS, Server, copy_app, make_app
from .helpers import encoded as _encoded

TEXT = "# pins\nFlask==3.1.3\n-r base.txt\ngunicorn==27.0.1 ; python_version >= '3.8'\n"


@pytest.mark.parametrize("line_end", LINE_ENDS)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_requirements_decode_as_pip_decodes_them(encoding, line_end):
    data = _encoded(TEXT, encoding, line_end)
    assert decode_like_pip(data, "requirements.txt") == TEXT
    # pip's own decoder, line for line (pip splits with str.splitlines too).
    assert _decode_req_file(data, "requirements.txt").splitlines() == TEXT.splitlines()


def test_a_pep263_coding_line_is_honoured_as_by_pip():
    data = "# -*- coding: latin-1 -*-\nFlask==3.1.3  # café\n".encode("latin-1")
    assert decode_like_pip(data, "r.txt") == _decode_req_file(data, "r.txt")
    assert "café" in decode_like_pip(data, "r.txt")
    assert not plain_utf8(data)


@pytest.mark.parametrize(("data", "words"), [
    (b"Flask==3.1.3\n\xff\xfe\n", "invalid start byte"),  # a BOM not at the start
    (b"# coding: no-such-codec\nFlask\n", "not an encoding"),
    (b"\xff\xfeF\x00l\x00\x00\xd8", "read as utf-16-le"),  # a lone surrogate
    ("Flask==3.1.3\r\n".encode("utf-16-le"), "UTF-16 without a byte order mark"),
])
def test_what_pip_cannot_decode_is_file_not_text(data, words):
    with pytest.raises(errors.SlugbuildError) as caught:
        decode_like_pip(data, "requirements.txt")
    assert caught.value.code == "file-not-text"
    assert words in caught.value.found


def test_plain_utf8_is_what_every_tool_reads_alike():
    assert plain_utf8(b"Flask==3.1.3\n")
    assert plain_utf8(b"\xef\xbb\xbfFlask==3.1.3\r\n")
    assert not plain_utf8(_encoded("Flask==3.1.3\n", "utf-16 LE BOM"))
    assert not plain_utf8(b"Flask==3.1.3\n\xe9\n")


def _windows_app(tmp_path: Path, top: str, base: str, encoding: str = "utf-16 LE BOM") -> Path:
    app = tmp_path / "app"
    (app / "reqs").mkdir(parents=True)
    (app / "requirements.txt").write_bytes(_encoded(top, encoding, "CRLF"))
    (app / "reqs" / "base.txt").write_bytes(_encoded(base, encoding, "CRLF"))
    return app


@pytest.mark.parametrize("encoding", [e for e in ENCODINGS if e != "utf-8"])
def test_includes_pins_and_lines_of_encoded_requirements(tmp_path, encoding):
    app = _windows_app(tmp_path, "-r reqs/base.txt\ngunicorn==27.0.1\n",
                       "Flask==3.1.3 \\\n  --hash=sha256:abc\n", encoding)
    assert requirements_files(app, "requirements.txt") == ["requirements.txt", "reqs/base.txt"]
    assert unpinned_requirements(app, "requirements.txt") == []
    assert requirement_lines(app, "requirements.txt") == ["gunicorn==27.0.1", "Flask==3.1.3"]
    assert lock_like(app, ["requirements.txt", "reqs/base.txt"])


def test_unpinned_count_of_a_utf16_file_is_its_real_count(tmp_path):
    app = _windows_app(tmp_path, "-r reqs/base.txt\ngunicorn>=20\n./lib\n", "Flask\n")
    unpinned = unpinned_requirements(app, "requirements.txt")
    assert unpinned == ["gunicorn>=20", "Flask"]
    assert not any("\x00" in line for line in unpinned)
    assert local_requirements(app, "requirements.txt") == ["./lib"]


def test_editables_are_rewritten_in_the_files_own_encoding(tmp_path):
    app = _windows_app(tmp_path, "-r reqs/base.txt\n-e ./lib\n", "Flask==3.1.3\n")
    assert install_editables_as_copies(app, "requirements.txt") == ["./lib"]
    data = (app / "requirements.txt").read_bytes()
    assert data.startswith(b"\xff\xfe")
    assert _decode_req_file(data, "requirements.txt").splitlines() == ["-r reqs/base.txt",
                                                                         "./lib"]


def test_uv_gets_utf8_copies_and_the_users_files_stay(tmp_path):
    app = _windows_app(tmp_path, "-r reqs/base.txt\ngunicorn==27.0.1\n",
                       "Flask==3.1.3 --hash=sha256:abc\n")
    before = {p: p.read_bytes() for p in app.rglob("*.txt")}
    job = SimpleNamespace(app_dir=app, lock_file="requirements.txt", scratch=tmp_path / "s")
    job.scratch.mkdir()
    options = _requirements_options(job)
    copy = Path(options[-1])
    assert options[:-1] == ["--require-hashes", "-r"]
    assert copy == job.scratch / "requirements-utf8" / "requirements.txt"
    assert copy.read_bytes() == b"-r reqs/base.txt\ngunicorn==27.0.1\n"
    assert (copy.parent / "reqs" / "base.txt").read_bytes() == b"Flask==3.1.3 --hash=sha256:abc\n"
    assert {p: p.read_bytes() for p in app.rglob("*.txt")} == before


def test_uv_reads_plain_utf8_files_in_place(tmp_path):
    app = make_app(tmp_path / "app", {"requirements.txt": "Flask==3.1.3\n"})
    job = SimpleNamespace(app_dir=app, lock_file="requirements.txt", scratch=tmp_path)
    assert _requirements_options(job) == ["-r", "requirements.txt"]


@pytest.mark.parametrize("encoding", ["utf-8 BOM", "utf-16 LE BOM", "utf-16 BE BOM"])
def test_procfile_in_a_windows_encoding(tmp_path, encoding):
    app = tmp_path / "app"
    app.mkdir()
    (app / "Procfile").write_bytes(_encoded("web: gunicorn app:app\nworker: celery -A x\n",
                                            encoding, "CRLF"))
    assert read_procfile(app) == {"web": "gunicorn app:app", "worker": "celery -A x"}


def test_procfile_that_is_not_text_is_one_malformed_error(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "Procfile").write_bytes(b"web: gunicorn \xff app:app\n")
    with pytest.raises(errors.SlugbuildError) as caught:
        read_procfile(app)
    assert caught.value.code == "procfile-malformed"


def test_uv_lock_with_a_bom_is_read_as_uv_reads_it(tmp_path):
    """uv skips a UTF-8 BOM in uv.lock; Pipenv (json) refuses one in Pipfile.lock."""
    (tmp_path / "uv.lock").write_bytes(b"\xef\xbb\xbfversion = 1\n")
    locks.check_syntax(tmp_path, "uv.lock", "uv lock")
    (tmp_path / "Pipfile.lock").write_bytes(b"\xef\xbb\xbf" + json.dumps({"default": {}}).encode())
    (tmp_path / "poetry.lock").write_bytes(b"\xef\xbb\xbfversion = 1\n")
    for lock_file, tool in [("Pipfile.lock", "Pipenv"), ("poetry.lock", "Poetry")]:
        with pytest.raises(errors.SlugbuildError) as caught:
            locks.check_syntax(tmp_path, lock_file, "relock")
        assert caught.value.code == "lock-file-malformed"
        assert f"byte order mark (BOM), which {tool} refuses" in caught.value.found


def test_a_utf16_lock_file_is_file_not_text(tmp_path):
    (tmp_path / "poetry.lock").write_bytes(_encoded("[metadata]\n", "utf-16 LE BOM"))
    with pytest.raises(errors.SlugbuildError) as caught:
        locks.check_syntax(tmp_path, "poetry.lock", "poetry lock")
    assert caught.value.code == "file-not-text"


def test_read_utf8_keeps_a_bom_for_the_tools_that_refuse_one(tmp_path):
    (tmp_path / "f").write_bytes(b"\xef\xbb\xbfa = 1\n")
    assert read_utf8(tmp_path / "f", "f", bom_allowed=True) == "a = 1\n"
    assert read_utf8(tmp_path / "f", "f", bom_allowed=False) == "\ufeffa = 1\n"


def test_frameworks_are_detected_in_a_utf16_requirements_file(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "requirements.txt").write_bytes(_encoded("Django==5.2\n", "utf-16 LE BOM", "CRLF"))
    assert detect(app).frameworks == ("django",)


def test_control_bytes_from_a_file_are_escaped_in_the_log():
    stream = io.StringIO()
    reporter = Reporter(stream)
    reporter.warn("1 requirement(s) are not pinned (fla\x00sk\x1b[2J)")
    assert "\x00" not in stream.getvalue() and "\x1b" not in stream.getvalue()
    assert "fla\\x00sk\\x1b[2J" in stream.getvalue()


def _build(app: Path, slug: Path, cache_dir: Path):
    """Compile ``app``: the result, its log (checked free of NUL bytes, raw or
    escaped) and the log's line that names the installer."""
    from slugbuild import compile_app

    stream = io.StringIO()
    result = compile_app(app, slug, cache_dir=cache_dir, reporter=Reporter(stream))
    log = stream.getvalue()
    assert "\x00" not in log and "\\x00" not in log, log
    install = next(line for line in log.splitlines() if "Installing requirements" in line)
    return result, log, install


@pytest.mark.slow
def test_an_app_saved_by_a_windows_editor_builds_on_uv_and_serves(tmp_path, cache_dir):
    """requirements.txt and its -r include in UTF-16 LE with a BOM and CRLF, a UTF-16 BE
    Procfile, a UTF-16 .slugignore: uv installs, nothing is unpinned, the log is clean."""
    app = copy_app(FIXTURE_APPS / "windows-editor-utf16", tmp_path / "app")
    result, log, install = _build(app, tmp_path / "slug.tgz", cache_dir)
    # The header names the tool that installs (issue 18): "... with pip-compatible uv 0.x".
    assert re.search(r"\buv \d", install) and "every requirement pinned" in install, log
    assert "not pinned" not in log, log
    assert result.process_types == {"web": "gunicorn app:app"}
    assert {p["name"].lower() for p in result.packages} >= {"flask", "gunicorn"}
    with tarfile.open(result.slug_path) as tar:
        names = tar.getnames()
        # The user's files are in the slug as they wrote them.
        requirements = tar.extractfile("./requirements.txt").read()
    assert requirements == (FIXTURE_APPS / "windows-editor-utf16" / "requirements.txt").read_bytes()
    assert not any(n.startswith("./notes") or n.endswith(".bak") for n in names), names
    with Server(result.slug_path) as server:
        response = requests.get(server.base + "/", timeout=10)
    assert response.status_code == 200
    assert response.text == "Hello from a UTF-16 requirements file\n"


@pytest.mark.slow
def test_an_unpinned_utf16_requirements_file_is_resolved_with_the_right_count(
        tmp_path, cache_dir):
    """uv resolves the ranges from UTF-8 copies of the files (issue 20: ranges go to uv,
    not pip); the warning counts the real lines, escaped."""
    app = copy_app(FIXTURE_APPS / "windows-editor-utf16", tmp_path / "app")
    (app / "requirements.txt").write_bytes(
        _encoded("-r base.txt\ngunicorn>=27,<28\n", "utf-16 LE BOM", "CRLF"))
    result, log, install = _build(app, tmp_path / "slug.tgz", cache_dir)
    assert re.search(r"\buv \d", install) and "version ranges resolved" in install, log
    assert "1 requirement(s) are not pinned to one version (gunicorn>=27,<28)" in log, log
    assert {p["name"].lower() for p in result.packages} >= {"flask", "gunicorn"}


def test_inspect_and_run_read_a_utf16_procfile_from_the_slug(tmp_path):
    from slugbuild.slug.inspect import _process_types
    from slugbuild.slug.run import read_release

    data = _encoded("web: gunicorn app:app\n", "utf-16 BE BOM", "CRLF")
    assert _process_types({"Procfile": data}) == {"web": "gunicorn app:app"}
    (tmp_path / "Procfile").write_bytes(data)
    assert read_release(tmp_path).default_process_types == {"web": "gunicorn app:app"}
