"""Aptfile: Debian packages unpacked into the slug's .apt/, found by the app at run time.

The end-to-end test downloads libodbc2 (and libltdl7, which this machine
lacks) from the Debian mirror of the build's stack; the web process loads
libodbc.so.2 from the slug and answers with the ODBC library's path.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import requests

from slugbuild import errors
from slugbuild.aptfile import read_aptfile, write_profile_script
from slugbuild.platform_info import current

from .helpers import Server, make_app, run_cli, unpack

APP_PY = '''\
import ctypes
import http.server
import os


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        library = ctypes.CDLL("libodbc.so.2")  # libodbc2, from the Aptfile
        with open("/proc/self/maps") as maps:
            where = next(line.split()[-1] for line in maps if "libodbc.so.2" in line)
        body = f"odbc {bool(library)} {where}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
'''

needs_apt = pytest.mark.skipif(
    current().distro not in ("debian", "ubuntu") or not shutil.which("apt-get")
    or subprocess.run(["dpkg-query", "-W", "libodbc2"], capture_output=True).returncode == 0,
    reason="needs a Debian/Ubuntu machine without libodbc2 installed")


# --- quick ------------------------------------------------------------------------------

def test_aptfile_lines_names_urls_checksums_and_comments(tmp_path):
    digest = "ab" * 32
    path = tmp_path / "Aptfile"
    path.write_text(f"# system libraries\nlibodbc2\n\nlibpq5  # for psycopg\n"
                    f"https://example.org/x_1.0_amd64.deb#sha256={digest}\n"
                    f"https://example.org/y.deb sha256:{digest.upper()}\n")
    entries = read_aptfile(path)
    assert [e.name for e in entries[:2]] == ["libodbc2", "libpq5"]
    assert (entries[2].url, entries[2].sha256) == ("https://example.org/x_1.0_amd64.deb", digest)
    assert entries[3].sha256 == digest


@pytest.mark.parametrize(("line", "words"), [
    (":repo:deb http://apt.example.org stable main", "custom apt repositories"),
    ("libodbc2; rm -rf /", "neither a Debian package name"),
    ("https://user:s3cret@example.org/page.html", "neither a Debian package name"),
])
def test_an_unreadable_aptfile_line_is_one_clear_error(tmp_path, line, words):
    path = tmp_path / "Aptfile"
    path.write_text(f"libodbc2\n{line}\n")
    with pytest.raises(errors.SlugbuildError) as caught:
        read_aptfile(path)
    assert caught.value.code == "aptfile-invalid" and words in caught.value.found
    assert "line 2" in caught.value.found and "s3cret" not in str(caught.value.found)


def test_profile_script_is_relative_to_home_and_keeps_user_values(tmp_path):
    write_profile_script(tmp_path)
    text = (tmp_path / ".profile.d" / "000-apt.sh").read_text()
    assert str(tmp_path) not in text
    assert 'export LD_LIBRARY_PATH="$HOME/.apt/usr/lib/' in text
    assert "${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" in text
    for variable in ("PATH", "LIBRARY_PATH", "CPATH", "PKG_CONFIG_PATH"):
        assert f"export {variable}=" in text


# --- end to end ---------------------------------------------------------------------------

def _odbc_app(directory: Path, app_py: str, files: dict[str, str]) -> Path:
    """An app whose web process reports where libodbc.so.2 was loaded from."""
    return make_app(directory, {".python-version": "3.12\n", "app.py": app_py,
                                "Procfile": "web: python app.py\n", **files})


@pytest.mark.slow
@needs_apt
def test_aptfile_library_is_in_the_slug_and_loaded_by_the_web_process(tmp_path, cache_dir):
    app = _odbc_app(tmp_path / "app", APP_PY, {
        "Aptfile": "# ODBC driver manager\nlibodbc2\n",
        "requirements.txt": "",
        # Later build steps (hooks, sdist builds) see the packages' libraries and headers.
        "bin/pre_compile": "#!/bin/sh\nset -e\n"
                           "for v in LD_LIBRARY_PATH LIBRARY_PATH CPATH PKG_CONFIG_PATH PATH; do\n"
                           "  printenv $v | grep -q \"$PWD/.apt/usr/\" || echo $v >> missing\n"
                           "done\ntouch missing\n",
    })
    (app / "bin" / "pre_compile").chmod(0o755)
    slug = tmp_path / "slug.tgz"
    result = run_cli("compile", app, "-o", slug, "--cache-dir", cache_dir)
    assert result.returncode == 0, result.stderr
    assert "Installing system packages from Aptfile (libodbc2)" in result.stderr
    root = unpack(slug, tmp_path / "unpacked")
    assert list((root / ".apt").rglob("libodbc.so.2*"))
    assert (root / "missing").read_text() == ""

    listed = json.loads(slug.with_suffix(".json").read_text())["system_packages"]
    assert {p["name"] for p in listed} >= {"libodbc2"}
    assert all(p["version"] and p["architecture"] for p in listed)
    with Server(slug) as web:
        answer = requests.get(web.base + "/", timeout=10).text
    assert answer.startswith("odbc True ") and "/.apt/usr/lib/" in answer, answer

    # Cached by Aptfile + stack: the next build downloads nothing and packs the same bytes.
    again = run_cli("compile", app, "-o", tmp_path / "again.tgz", "--cache-dir", cache_dir)
    assert again.returncode == 0, again.stderr
    assert "Restoring system packages from cache" in again.stderr
    assert hashlib.sha256(slug.read_bytes()).digest() == \
        hashlib.sha256((tmp_path / "again.tgz").read_bytes()).digest()


@pytest.mark.slow
@needs_apt
def test_unknown_package_and_bad_deb_checksum_fail_cleanly(tmp_path):
    files = {"requirements.txt": "", ".python-version": "3.12\n",
             "Procfile": "web: python -m http.server $PORT --bind 127.0.0.1\n"}
    cache = tmp_path / "cache"
    app = make_app(tmp_path / "app", {**files, "Aptfile": "no-such-package-slugbuild\n"})
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("compile", app, "-o", out / "slug.tgz", "--cache-dir", cache)
    assert result.returncode == 1 and result.stderr.count(" Error") == 1, result.stderr
    assert "Could not fetch the Aptfile's system packages" in result.stderr
    assert "Unable to locate package no-such-package-slugbuild" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(out.iterdir()) == []

    served = tmp_path / "served"
    served.mkdir()
    (served / "fake_1.0_all.deb").write_bytes(b"not what the checksum says")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0),
        lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/fake_1.0_all.deb"
        (app / "Aptfile").write_text(f"{url}#sha256={'0' * 64}\n")
        result = run_cli("compile", app, "-o", out / "slug.tgz", "--cache-dir", cache)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert result.returncode == 1, result.stderr
    assert "does not match its checksum" in result.stderr and f"{'0' * 64}" in result.stderr
    assert list(out.iterdir()) == []
    assert not any(p.name.startswith("apt-") for p in (cache / "layers").iterdir())


ODBC_C = r'''
#include <Python.h>
#include <sql.h>
#include <sqlext.h>

static PyObject *alloc(PyObject *self, PyObject *args) {
    SQLHENV env;
    SQLRETURN rc = SQLAllocHandle(SQL_HANDLE_ENV, SQL_NULL_HANDLE, &env);
    if (SQL_SUCCEEDED(rc)) SQLFreeHandle(SQL_HANDLE_ENV, env);
    return PyBool_FromLong(SQL_SUCCEEDED(rc));
}
static PyMethodDef methods[] = {{"alloc", alloc, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "odbcprobe", NULL, -1, methods};
PyMODINIT_FUNC PyInit_odbcprobe(void) { return PyModule_Create(&module); }
'''

ODBC_APP_PY = APP_PY.replace(
    'library = ctypes.CDLL("libodbc.so.2")  # libodbc2, from the Aptfile',
    "import odbcprobe\n        library = odbcprobe.alloc()  # compiled against .apt headers")


@pytest.mark.slow
@needs_apt
@pytest.mark.skipif(not shutil.which("cc"), reason="needs a C compiler")
def test_an_sdist_compiles_against_aptfile_headers_and_links_at_run_time(tmp_path, cache_dir):
    app = _odbc_app(tmp_path / "native", ODBC_APP_PY, {
        "Aptfile": "unixodbc-dev\n",
        "requirements.txt": "./odbcprobe\n",
        "odbcprobe/odbcprobe.c": ODBC_C,
        "odbcprobe/pyproject.toml": '[build-system]\nrequires = ["setuptools"]\n'
                                    'build-backend = "setuptools.build_meta"\n',
        "odbcprobe/setup.py": "from setuptools import Extension, setup\n\n"
                              "setup(name='odbcprobe', version='1.0', ext_modules=["
                              "Extension('odbcprobe', ['odbcprobe.c'], libraries=['odbc'])])\n",
    })
    slug = tmp_path / "native.tgz"
    result = run_cli("compile", app, "-o", slug, "--cache-dir", cache_dir)
    assert result.returncode == 0, result.stderr
    with Server(slug) as web:
        answer = requests.get(web.base + "/", timeout=10).text
    assert answer.startswith("odbc True ") and "/.apt/usr/lib/" in answer, answer


def test_an_aptfile_on_a_machine_without_apt_is_one_clear_error(tmp_path, monkeypatch):
    import dataclasses

    from slugbuild import aptfile
    from slugbuild.cache import Cache
    from slugbuild.log import Reporter

    app = make_app(tmp_path / "app", {"Aptfile": "libodbc2\n"})
    alpine = dataclasses.replace(current(), distro="alpine", stack="alpine-3.20")
    with pytest.raises(errors.SlugbuildError) as caught:
        aptfile.prepare_apt_layer(app, Cache(tmp_path / "cache"), alpine, Reporter(quiet=True))
    assert caught.value.code == "aptfile-unsupported" and "alpine" in caught.value.found
    monkeypatch.setattr(aptfile.shutil, "which", lambda tool: None)
    with pytest.raises(errors.SlugbuildError, match="apt-get, dpkg-deb not found"):
        aptfile.prepare_apt_layer(app, Cache(tmp_path / "cache"), current(), Reporter(quiet=True))


def test_absolute_symlinks_to_packaged_files_become_relative(tmp_path):
    from slugbuild.aptfile import _relative_symlinks

    lib = tmp_path / "usr" / "lib"
    lib.mkdir(parents=True)
    (lib / "libfoo.so.1").write_text("elf")
    (lib / "libfoo.so").symlink_to("/usr/lib/libfoo.so.1")
    (lib / "stack.so").symlink_to("/usr/lib/not-packaged.so")
    _relative_symlinks(tmp_path)
    assert Path(lib / "libfoo.so").readlink() == Path("libfoo.so.1")
    assert (lib / "libfoo.so").read_text() == "elf"
    assert str((lib / "stack.so").readlink()) == "/usr/lib/not-packaged.so"


def _deb(directory: Path, name: str, depends: str, pre_depends: str = "") -> Path:
    """A minimal .deb with these Depends (dpkg-deb --build)."""
    root = directory / name
    (root / "DEBIAN").mkdir(parents=True)
    fields = [f"Package: {name}", "Version: 1.0", "Architecture: all",
              "Maintainer: t <t@t.invalid>", "Description: test"]
    fields += [f"Depends: {depends}"] if depends else []
    fields += [f"Pre-Depends: {pre_depends}"] if pre_depends else []
    (root / "DEBIAN" / "control").write_text("\n".join(fields) + "\n")
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root),
                    str(directory / f"{name}.deb")], check=True, capture_output=True)
    return directory / f"{name}.deb"


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb")
def test_the_dependencies_this_machine_had_are_named_for_the_run_image(tmp_path):
    """libmagic1 without libmagic-mgc (this machine has it) runs here and fails in an
    image on a smaller run image: the build names what it left out."""
    from slugbuild.aptfile import left_out_dependencies, left_out_line

    debs = [_deb(tmp_path, "libmagic1", "libmagic-mgc (= 1:5.44-3), zlib1g (>= 1:1.1.4), "
                 "libbz2-1.0 | libbz2-alt, liblzma5:any (>= 5.1)", pre_depends="libc6 (>= 2.34)"),
            _deb(tmp_path, "zlib1g", ""),
            _deb(tmp_path, "uses-an-alternative", "libfoo-a | libmagic1")]
    assert left_out_dependencies(debs) == ["libbz2-1.0", "libc6", "liblzma5", "libmagic-mgc"]
    line = left_out_line([f"lib{n}" for n in range(14)], most=12)
    assert line.startswith("Not unpacked, as this machine has them")
    assert line.endswith("lib11 and 2 more")
