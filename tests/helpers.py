"""Helpers for tests: fixture app paths, app builders, the CLI, a server runner,
the check that a build failed cleanly. Test modules import these; never each other."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import io
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeVar

import requests

import slugbuild
from slugbuild.errors import ErrorKind

T = TypeVar("T")

if TYPE_CHECKING:
    import pytest

    from slugbuild import BuildResult
    from slugbuild.plan import BuildPlan

REPO = Path(__file__).resolve().parent.parent
FIXTURE_APPS = REPO / "fixtures" / "apps"
DJANGO_APP = FIXTURE_APPS / "django-tutorial"
# The config var value the Flask build's hooks see (conftest.flask_build); never in its slug.
HOOK_SECRET = "s3cr3t-hook-value-5f1e"


def local_interpreter(version: str) -> Path:
    """The newest pyenv CPython ``version`` (``"3.12"``) here; the test is skipped without one."""
    import glob

    import pytest

    found = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python"
                                                f"{version}")))
    if not found:
        pytest.skip(f"no local CPython {version}")
    return Path(found[-1])


def require_seal(scratch: Path, overlays: bool = False) -> None:
    """Skip the test where build steps cannot be sealed here (a probe in ``scratch``,
    ``step_jail.sealing_mechanism``), or, with ``overlays``, where an install run cannot
    be shown the installer caches through private overlays (``layer_overlay.mechanism``,
    which the cache guard needs besides the seal)."""
    import pytest

    from slugbuild.layer_overlay import mechanism
    from slugbuild.step_jail import sealing_mechanism

    if sealing_mechanism(scratch) is None:
        pytest.skip("no private mount namespace on this machine (steps run unsealed)")
    if overlays and mechanism(scratch) is None:
        pytest.skip("no private overlay here: the guard falls back to the plain seal")


def copy_app(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def make_app(directory: Path, files: dict[str, str]) -> Path:
    """Write a small app from a {relative path: content} mapping."""
    directory.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return directory


def unpack(slug: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(slug) as tar:
        tar.extractall(target, **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))
    return target


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "slugbuild", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`slugbuild run` in the background, stopped (SIGTERM, then SIGKILL) by the test."""

    def __init__(self, slug: Path, process: str = "web", extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._stopped: tuple[int, str] | None = None
        self.proc = subprocess.Popen(
            # Two workers are enough to test with (the dyno default is sized from memory).
            [sys.executable, "-m", "slugbuild", "run", str(slug), process,
             "--port", str(self.port), "--env", "WEB_CONCURRENCY=2", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.proc.stdout.read()}")
            try:
                requests.get(self.base + "/", timeout=2)
                return
            except (requests.ConnectionError, requests.Timeout):  # workers still booting
                time.sleep(0.2)
        raise AssertionError("server did not answer in time")

    def stop(self) -> tuple[int, str]:
        """Stop the server (once); its exit code and everything it printed."""
        if self._stopped is not None:
            return self._stopped
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._stopped = (self.proc.returncode, self.proc.stdout.read())
        return self._stopped

    def __enter__(self) -> Server:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def slug_differences(one: Path, two: Path, most: int = 10) -> list[str]:
    """Entry names whose presence, metadata or content differ between two slugs."""
    import hashlib

    def entries(slug: Path) -> dict:
        found = {}
        with tarfile.open(slug) as tar:
            for member in tar:
                data = tar.extractfile(member).read() if member.isfile() else b""
                found[member.name] = (member.mode, member.type, member.linkname,
                                      member.mtime, hashlib.sha256(data).hexdigest())
        return found

    first, second = entries(one), entries(two)
    names = sorted(set(first) | set(second))
    return [name for name in names if first.get(name) != second.get(name)][:most]


def minimal_wheel(name: str, version: str, module_text: str,
                  requires: Sequence[str] = ()) -> bytes:
    """A minimal valid pure-Python wheel of ``name`` ``version``: one module ``name.py``
    holding ``module_text`` (for loopback package indexes); ``requires``: its
    Requires-Dist lines."""
    import base64

    files = {
        f"{name}.py": module_text,
        f"{name}-{version}.dist-info/METADATA":
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            + "".join(f"Requires-Dist: {line}\n" for line in requires),
        f"{name}-{version}.dist-info/WHEEL":
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{name}-{version}.dist-info/RECORD"] = "\n".join(
        [*record, f"{name}-{version}.dist-info/RECORD,,"]) + "\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, text in files.items():
            archive.writestr(zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0)), text)
    return buffer.getvalue()


def setuptools_sdist(name: str, version: str, setup_py: str) -> bytes:
    """An sdist of ``name`` ``version`` built by setuptools from ``setup_py`` (whose
    code runs when an installer builds it: the package code of an install)."""
    files = {"setup.py": setup_py,
             "pyproject.toml": '[build-system]\nrequires = ["setuptools"]\n'
                               'build-backend = "setuptools.build_meta"\n',
             "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, text in files.items():
            info = tarfile.TarInfo(f"{name}-{version}/{path}")
            info.size = len(text.encode())
            archive.addfile(info, io.BytesIO(text.encode()))
    return buffer.getvalue()


def write_simple_index(root: Path, files: dict[str, tuple[str, bytes] | list[tuple[str, bytes]]]
                       ) -> None:
    """A PEP 503 index in ``root`` (to serve with ``serve_directory``): for each
    project name, its file (name and bytes), or a list of them for several versions,
    under ``files/``, each linked with its SHA-256 from ``simple/<name>/``."""
    for name, given in files.items():
        (root / "files").mkdir(parents=True, exist_ok=True)
        links = []
        for filename, data in ([given] if isinstance(given, tuple) else given):
            (root / "files" / filename).write_bytes(data)
            digest = hashlib.sha256(data).hexdigest()
            links.append(f'<a href="../../files/{filename}#sha256={digest}">{filename}</a>\n')
        (root / "simple" / name).mkdir(parents=True)
        (root / "simple" / name / "index.html").write_text("".join(links))


@contextlib.contextmanager
def serving(server: http.server.HTTPServer) -> Iterator[http.server.HTTPServer]:
    """Run ``server`` in a thread while the block runs; shut and close it after."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def serve_directory(root: Path, handler: type = http.server.SimpleHTTPRequestHandler
                    ) -> Iterator[str]:
    """Serve ``root`` over HTTP on 127.0.0.1 while the block runs; yields the base URL."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: handler(*a, directory=str(root)))
    with serving(server):
        yield f"http://127.0.0.1:{server.server_address[1]}"


# --- NLTK's data index, laid out for a loopback server ----------------------------------

def nltk_package_zip(ident: str, files: dict[str, str]) -> bytes:
    """A package zip laid out as NLTK's: every member under ``<id>/``."""
    buffer = io.BytesIO()
    fixed_time = (2020, 1, 1, 0, 0, 0)  # the same bytes every time (golden slugs)
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo(f"{ident}/", fixed_time), "")
        for name, content in sorted(files.items()):
            member = name if name.startswith("/") or ".." in name else f"{ident}/{name}"
            archive.writestr(zipfile.ZipInfo(member, fixed_time), content)
    return buffer.getvalue()


def write_nltk_index(root: Path, packages: dict[str, tuple[str, bytes]],
                 collections: dict[str, list[str]] | None = None,
                 checksum: dict[str, str] | None = None) -> None:
    """index.xml plus packages/<subdir>/<id>.zip, as on NLTK's gh-pages branch."""
    entries = []
    for ident, (subdir, data) in packages.items():
        (root / "packages" / subdir).mkdir(parents=True, exist_ok=True)
        (root / "packages" / subdir / f"{ident}.zip").write_bytes(data)
        md5 = (checksum or {}).get(ident, hashlib.md5(data).hexdigest())
        entries.append(f'<package id="{ident}" name="{ident}" subdir="{subdir}" unzip="1" '
                       f'size="{len(data)}" unzipped_size="0" checksum="{md5}" '
                       f'url="packages/{subdir}/{ident}.zip" />')
    groups = "".join(f'<collection id="{name}">'
                     + "".join(f'<item ref="{ref}" />' for ref in refs) + "</collection>"
                     for name, refs in (collections or {}).items())
    (root / "index.xml").write_text(f'<?xml version="1.0"?>\n<nltk_data><packages>'
                                    f'{"".join(entries)}</packages><collections>{groups}'
                                    f'</collections></nltk_data>\n')


def crafted_tar(path: Path, entries: list[tuple[str, str | None, str]], mode: str = "w:gz"
                ) -> Path:
    """A tar of (name, link target or None, content) entries, in the order given:
    the shapes a hostile slug or runtime archive takes."""
    with tarfile.open(path, mode) as tar:
        for name, target, content in entries:
            info = tarfile.TarInfo(name)
            if target is not None:
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
            else:
                data = content.encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


# --- A build that fails cleanly ----------------------------------------------------------

# The smallest app that builds: a pinned runtime, one tiny wheel, a web process.
MINIMAL = {
    ".python-version": "3.12\n",
    "requirements.txt": "six==1.17.0\n",
    "Procfile": "web: python -m http.server $PORT\n",
}


def assert_clean_failure(app: Path, cache_dir: Path, tmp_path: Path, code_words: str,
                         *extra: str) -> str:
    """`slugbuild compile` of ``app`` fails with one catalogue error naming ``code_words``,
    no slugbuild traceback, no output left behind and a sound cache; its stderr."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = run_cli("compile", app, "-o", out_dir / "slug.tgz", "--cache-dir", cache_dir, *extra)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith(" !     Error [")]
    assert len(errors) == 1, result.stderr
    assert code_words in result.stderr, result.stderr
    # Tool output may hold a traceback of the app's own; slugbuild's code never does.
    assert str(Path(slugbuild.__file__).parent) not in result.stderr, result.stderr
    assert list(out_dir.iterdir()) == [], "a failed build left files behind"
    assert_cache_consistent(cache_dir)
    return result.stderr


def assert_cache_consistent(cache_dir: Path) -> None:
    """Every published layer is complete (its tree written, or part-only and sound:
    layer_artifact.py); no scratch of a finished build remains."""
    from slugbuild.cache import Layer
    from slugbuild.layer_artifact import part_problems

    for kind in ("runtimes", "layers"):
        for layer in (cache_dir / kind).iterdir() if (cache_dir / kind).exists() else []:
            manifest = json.loads((layer / "manifest.json").read_text())
            part_only = not (layer / "tree").exists() and (layer / "part-only.json").is_file()
            assert manifest["key"] and ((layer / "tree").is_dir() or (
                part_only and part_problems(Layer(layer, manifest, lazy=True)) == []))
    leftovers = [p.name for p in (cache_dir / "tmp").iterdir()
                 if not _scratch_of_a_running_build(cache_dir, p.name)] \
        if (cache_dir / "tmp").exists() else []
    assert leftovers == []


def _scratch_of_a_running_build(cache_dir: Path, name: str) -> bool:
    """Whether tmp/``name`` is the scratch of a build still running in another process
    (its owner holds the lease it is named after: cache.py): the session cache is
    shared by the pytest-xdist workers, so another worker's build may be under way."""
    import fcntl

    from slugbuild import cache

    owner = name.split(".", 1)[0]
    ours = cache._leases.get(cache_dir.absolute())
    if ours is not None and ours.token == owner:
        return False
    try:
        fd = os.open(cache_dir / "locks" / "leases" / (owner + cache.LEASE_SUFFIX), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


# --- Refusals, and commands under resource limits --------------------------------------

# A buildpack that does nothing but what its test asks (bin/compile's body).
DETECT = "#!/usr/bin/env bash\necho Hostile\n"


def make_buildpack(directory: Path, compile_body: str) -> Path:
    """A buildpack whose bin/detect always answers and whose bin/compile runs ``compile_body``."""
    make_app(directory, {"bin/detect": DETECT,
                         "bin/compile": "#!/usr/bin/env bash\n" + compile_body})
    for script in ("detect", "compile"):
        (directory / "bin" / script).chmod(0o755)
    return directory


def limited(argv: list[str], *, memory: int | None = None, cpu: int | None = None,
            env: dict | None = None, cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``argv`` with an address-space and/or CPU-time limit (setrlimit)."""
    def apply() -> None:
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if cpu is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))

    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd,
                          preexec_fn=apply, timeout=timeout)


def cli(*args: object) -> list[str]:
    """The command line of `slugbuild ARGS`, for runners other than run_cli (``limited``)."""
    return [sys.executable, "-m", "slugbuild", *map(str, args)]


def assert_refused(result: subprocess.CompletedProcess, kind: ErrorKind, *,
                   tmp: Path | None = None, cache: Path | None = None,
                   outputs: tuple[Path, ...] = ()) -> str:
    """The exact outcome of a refusal: the catalogue error's title, exit 1, no traceback,
    no temporary directory or scratch left, no output written; returns stderr."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert f"Error [{kind.code}]: {kind.title}" in result.stderr, result.stderr
    if tmp is not None:
        assert list(tmp.iterdir()) == [], "a temporary directory was left behind"
    if cache is not None:
        assert list((cache / "tmp").iterdir()) == [], "the build's scratch was left behind"
    for output in outputs:
        assert not output.exists(), f"{output} was written"
        assert not list(output.parent.glob(f".{output.name}.*.partial"))
    return result.stderr


def read_member(slug: Path, name: str) -> str:
    """The text of one file in a slug, read without unpacking it."""
    with tarfile.open(slug) as tar:
        return tar.extractfile(name).read().decode()


# --- Files as Windows editors save them ---------------------------------------------------

ENCODINGS = {
    "utf-8": lambda text: text.encode("utf-8"),
    "utf-8 BOM": lambda text: b"\xef\xbb\xbf" + text.encode("utf-8"),
    "utf-16 LE BOM": lambda text: b"\xff\xfe" + text.encode("utf-16-le"),
    "utf-16 BE BOM": lambda text: b"\xfe\xff" + text.encode("utf-16-be"),
    "utf-32 LE BOM": lambda text: b"\xff\xfe\x00\x00" + text.encode("utf-32-le"),
    "utf-32 BE BOM": lambda text: b"\x00\x00\xfe\xff" + text.encode("utf-32-be"),
}
LINE_ENDS = {"LF": "\n", "CRLF": "\r\n", "CR": "\r"}


def encoded(text: str, encoding: str, line_end: str = "LF") -> bytes:
    """``text`` as a Windows editor may save it: one of ENCODINGS, one of LINE_ENDS."""
    return ENCODINGS[encoding](text.replace("\n", LINE_ENDS[line_end]))


# --- the fixture apps, as every whole-fixture test builds them ----------------------

# Fixtures that must not build: the failure is what they are for
# (pipeline/test_dependencies_e2e.py).
FIXTURES_FAILING_BY_DESIGN = frozenset({"django-removed-cgi", "markers-excluded"})
# Fixtures whose slug must not boot (slug/test_run_and_boot_check.py); every other one must.
FIXTURES_NOT_BOOTING = frozenset({"boot-crash-at-import", "boot-never-listens",
                                  "boot-removed-stdlib"})
# Fixtures for `make bench` only (benchmarks/side_by_side.py): a ~200 MB slug of 58 packages,
# too slow for the golden and reproducibility runs over every fixture.
FIXTURES_BENCH_ONLY = frozenset({"django-data-stack"})
# How each fixture that needs more than `compile APP` is built (as its own tests do).
_FIXTURE_BUILD_OPTIONS: dict[str, dict] = {
    "monorepo-backend": {"app_base": "backend"},
    "flask-node-assets": {"node_build": True},
    "django-node-assets": {"node_build": True},
}


def fixture_names(include_failing: bool = False) -> list[str]:
    """Every fixture app but the bench's (those that fail by design only when asked for)."""
    return sorted(p.name for p in FIXTURE_APPS.iterdir() if p.is_dir()
                  and p.name not in FIXTURES_BENCH_ONLY
                  and (include_failing or p.name not in FIXTURES_FAILING_BY_DESIGN))


def fixture_build_options(name: str, stack: contextlib.ExitStack, scratch: Path) -> dict:
    """compile_app keyword arguments for fixture ``name``; servers it needs (an NLTK
    index on loopback) live as long as ``stack``."""
    options = dict(_FIXTURE_BUILD_OPTIONS.get(name, {}))
    if (FIXTURE_APPS / name / "nltk.txt").is_file():
        mirror = scratch / f"nltk-{name}"
        mirror.mkdir(parents=True)
        write_nltk_index(mirror, {"stopwords": ("corpora", nltk_package_zip(
            "stopwords", {"english": "the\nand\n"}))})
        base = stack.enter_context(serve_directory(mirror))
        options["env"] = {"NLTK_INDEX_URL": f"{base}/index.xml"}
    return options


def default_sigint() -> None:
    """``preexec_fn`` for a child that must take SIGINT as a terminal's Ctrl-C: a suite
    started in the background (``cmd &`` in a script) has SIGINT ignored, and children
    inherit that (slugbuild then rightly keeps ignoring it, as nohup'd programs do)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# The htpasswd user of the `auth_registry` fixture (tests/conftest.py).
AUTH_REGISTRY_USER = "slugtester"
AUTH_REGISTRY_PASSWORD = "reg-pass-9f3c1e"


class RegistryServer:
    """A real CNCF Distribution registry (Debian's `docker-registry`) on 127.0.0.1.

    Started on a free port with its own storage (``root``), optionally behind
    htpasswd basic auth (``users``: name -> password, bcrypt entries made by
    ``htpasswd -B``); stopped by its PID. ``blob_uploads()`` counts the blob
    uploads it completed (from its access log), ``blob_mounts()`` the
    cross-repository mounts, so tests can check what a push sent.
    """

    def __init__(self, root: Path, *, users: dict[str, str] | None = None) -> None:
        self.root = root
        self.users = dict(users or {})
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log_path = root / "registry.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> RegistryServer:
        self.root.mkdir(parents=True, exist_ok=True)
        auth = ""
        if self.users:
            htpasswd = self.root / "htpasswd"
            lines = [subprocess.run(["htpasswd", "-nbB", name, password], check=True,
                                    capture_output=True, text=True).stdout.strip()
                     for name, password in self.users.items()]
            htpasswd.write_text("\n".join(lines) + "\n")
            auth = f"auth: {{htpasswd: {{realm: slugbuild-test, path: {htpasswd}}}}}\n"
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: info, accesslog: {disabled: false}}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.root / 'storage'}}}, "
            "delete: {enabled: true}}\n"
            f"http: {{addr: '{self.host}'}}\n" + auth)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(["docker-registry", "serve", str(config)],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"docker-registry exited:\n{self.log_path.read_text()}")
            try:
                answer = requests.get(f"http://{self.host}/v2/", timeout=2)
                if answer.status_code in (200, 401):
                    return self
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError("docker-registry did not answer in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _log_count(self, pattern: str) -> int:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return len(re.findall(pattern, text))

    def blob_uploads(self) -> int:
        """How many blob uploads the registry completed since it started."""
        return self._log_count(r'"PUT /v2/\S+/blobs/uploads/\S* HTTP/[0-9.]+" 201 ')

    def blob_mounts(self) -> int:
        """How many blobs it mounted from another repository."""
        return self._log_count(r'"POST /v2/\S+/blobs/uploads/\?mount=\S* HTTP/[0-9.]+" 201 ')

    @contextlib.contextmanager
    def tampered(self, digest: str) -> Iterator[None]:
        """One byte of blob ``digest`` changed in the registry's storage, put back
        after (the registry keeps one copy of a blob for all its repositories)."""
        hexdigest = digest.removeprefix("sha256:")
        [data] = (self.root / "storage").rglob(
            f"blobs/sha256/{hexdigest[:2]}/{hexdigest}/data")
        original = data.read_bytes()
        changed = bytearray(original)
        changed[len(changed) // 2] ^= 0x55
        data.write_bytes(bytes(changed))
        try:
            yield
        finally:
            data.write_bytes(original)

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def host_library_paths(sonames: list[str]) -> list[str]:
    """Where this machine's dynamic loader finds ``sonames`` (``ldconfig -p``)."""
    listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True,
                             check=True).stdout
    found: dict[str, str] = {}
    for line in listing.splitlines():
        match = re.match(r"\s*(\S+) \(([^)]*)\) => (\S+)", line)
        if match and match.group(1) in sonames:
            found.setdefault(match.group(1), match.group(3))
    return [found[name] for name in sonames if name in found]


# Shared libraries a slug built here may need from its run image (readelf of its ELF files):
# write_run_image(host_files=host_library_paths(SLUG_SONAMES)) makes a run image a
# slug's ELF files can load in, without mmdebstrap.
SLUG_SONAMES = [
    "libc.so.6", "ld-linux-x86-64.so.2", "libm.so.6", "libpthread.so.0", "libdl.so.2",
    "librt.so.1", "libutil.so.1", "libz.so.1", "liblzma.so.5", "libbz2.so.1.0",
    "libuuid.so.1", "libcrypt.so.1", "libtinfo.so.6", "libssl.so.3", "libcrypto.so.3",
    "libsqlite3.so.0", "libffi.so.8", "libncursesw.so.6", "libreadline.so.8", "libnsl.so.2",
    "libtirpc.so.3", "libexpat.so.1", "libgdbm.so.6", "libgdbm_compat.so.4",
    "libpanelw.so.6", "libformw.so.6", "libmpdec.so.3", "libstdc++.so.6", "libgcc_s.so.1",
]


def write_run_image(layout: Path, tag: str = "base", *, user: str | None = None,
                    passwd: str = "root:x:0:0:root:/root:/bin/sh\n",
                    host_files: tuple[str, ...] = (), files: dict[str, bytes] | None = None,
                    architecture: str = "amd64") -> str:
    """A small run image written as an OCI layout (``oci:LAYOUT:TAG``, returned): one
    layer with /etc/passwd, ``files`` and copies of the host's ``host_files`` (libraries,
    /bin/sh) at their paths; ``user`` as its config's User."""
    from slugbuild.oci.image import LAYER_GZIP, Image, bytes_blob, sha256_of, write_layout
    from slugbuild.oci.reference import parse_image_reference

    entries = {"etc/passwd": passwd.encode(), **(files or {})}
    executable = {"bin/", "usr/bin/"}
    for host_path in host_files:
        entries[host_path.lstrip("/")] = Path(host_path).read_bytes()
        if os.stat(host_path).st_mode & 0o111:  # programs, and the dynamic loader
            executable.add(host_path.lstrip("/"))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        made: set[str] = set()
        for name in sorted(entries):
            parts = name.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                directory = "/".join(parts[:depth])
                if directory not in made:
                    made.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
            info = tarfile.TarInfo(name)
            info.size = len(entries[name])
            info.mode = 0o755 if name.startswith(tuple(executable)) else 0o644
            tar.addfile(info, io.BytesIO(entries[name]))
    data = raw.getvalue()
    layer = bytes_blob(gzip.compress(data, compresslevel=1, mtime=0), LAYER_GZIP,
                       sha256_of(data))
    config: dict = {"architecture": architecture, "os": "linux",
                    "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"]},
                    "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}}
    if user is not None:
        config["config"]["User"] = user
    reference = f"oci:{layout}:{tag}"
    write_layout(Image(config, [layer]), parse_image_reference(reference))
    return reference


# --- the recorded slug of every fixture (tests/golden/slugs.json) ----------------------

GOLDEN_SLUGS = REPO / "tests" / "golden" / "slugs.json"
SLUG_LAYOUTS = ("herokuish", "heroku")
# SLUGBUILD_RECORD_GOLDEN=1 records what the builds give instead of comparing
# (pipeline/test_golden_slugs.py says how).
RECORDING_GOLDEN = os.environ.get("SLUGBUILD_RECORD_GOLDEN") == "1"


def check_golden(name: str, layout: str, outcome: str) -> None:
    """A fixture's outcome in ``layout`` (its slug's sha256, or ``error:<code>`` for the
    fixtures that fail by design) is the recorded one; recorded instead when recording."""
    import fcntl

    if RECORDING_GOLDEN:
        with open(GOLDEN_SLUGS.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            recorded = json.loads(GOLDEN_SLUGS.read_text()) if GOLDEN_SLUGS.exists() else {}
            recorded.setdefault(name, {})[layout] = outcome
            GOLDEN_SLUGS.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
        return
    recorded = json.loads(GOLDEN_SLUGS.read_text())
    assert name in recorded and layout in recorded[name], (
        f"{name} ({layout}) has no recorded slug: record it "
        "(see pipeline/test_golden_slugs.py)")
    assert outcome == recorded[name][layout], (
        f"{name} ({layout}): the slug changed; if that is intended, record it again "
        "(see pipeline/test_golden_slugs.py)")


# --- a plan agrees with the build it planned (slugbuild.plan) ---------------------------

def layer_from_cache(log: list[str], plan: BuildPlan, kind: str) -> bool:
    """Whether the build's log says ``kind`` came from the cache (and under the
    layer name the plan computed, for the dependency layer)."""
    layer = plan.layer(kind)
    assert layer is not None and layer.name is not None
    if kind == "runtime":
        assert plan.python is not None
        restored = f"Restoring Python {plan.python.version} from cache"
        installed = f"Installing Python {plan.python.version} (from"
    elif kind == "nltk-data":
        restored, installed = "NLTK package(s) from cache", "Downloading NLTK packages:"
    else:
        restored = f"Restoring dependencies from cache (layer {layer.name[:12]}"
        installed = f"cached as layer {layer.name[:12]}"
    if any(restored in line for line in log):
        return True
    assert any(installed in line for line in log), (kind, layer.name, log)
    return False


def assert_plan_agrees(before: BuildPlan, result: BuildResult, after: BuildPlan) -> None:
    """The plan made ``before`` a build says what the build then did: Python version and
    its source, package manager, installer, collectstatic, process types, which layers
    came from the cache; the plan made ``after`` it finds every layer cached under the
    key the build used."""
    assert before.python is not None and before.dependencies is not None
    runtime, manager = result.runtime, result.metadata["package_manager"]
    assert before.python.version == runtime["resolved"]
    assert before.python.source_file == runtime["source_file"]
    assert before.python.requested_from == runtime["requested_from"]
    assert before.python.runtime_source == runtime["source"]
    assert before.dependencies.package_manager == manager["name"]
    assert before.dependencies.installer == manager["installer"]
    assert before.dependencies.installer_version == manager["installer_version"]
    assert before.dependencies.installer_because == manager["installer_reason"]
    assert sorted(before.dependencies.key_files) == sorted(manager["files"])
    collectstatic_ran = any("collectstatic --noinput" in line for line in result.log)
    assert before.collectstatic is not None and before.collectstatic.runs == collectstatic_ran
    assert before.process_types.types == result.process_types
    for kind in ("runtime", "dependencies", "nltk-data"):
        layer = before.layer(kind)
        if kind == "nltk-data" and layer is None:
            assert not any("NLTK packages:" in line for line in result.log)
            continue
        assert layer is not None
        assert layer.cached == layer_from_cache(result.log, before, kind), kind
    # After the build, everything it made is in the cache under the planned keys.
    assert [(layer.layer, layer.key, layer.cached) for layer in after.layers] == [
        (layer.layer, layer.key, True if layer.cached is not None else None)
        for layer in before.layers]
    assert after.dependencies is not None and after.dependencies.packages_from == "cached layer"
    assert after.dependencies.packages == sorted(
        {p["name"].lower().replace("_", "-").replace(".", "-") for p in result.packages})


# --- what the tests keep from one session to the next, per machine ------------------

# The container tests' run image (mmdebstrap) and image stores: built once per machine,
# under a key of what determines them, so a fresh machine's first session pays once
# and a change to what builds them builds them again (README, "Tests").
MACHINE_CACHE = Path(os.environ.get("SLUGBUILD_TEST_CACHE")
                     or Path.home() / ".cache" / "slugbuild-tests")
# Kept things older than this are built again (a run image gets the mirror's updates).
MACHINE_CACHE_DAYS = 7


def seed_runtimes(seed: Path, cache: Path, version: str = "3.12") -> Path:
    """``cache`` (created) holding a copy of the Python ``version`` (major.minor)
    runtime layer of the cache ``seed`` (the ``runtime_seed`` fixture): a test that
    needs a cache of its own but not a cold runtime layer skips compiling the
    standard library (~3 s of CPU a build). A copy, not links: whatever a test does
    to its cache stays in it."""
    layers = sorted((seed / "runtimes").glob(f"cpython-{version}.*"))
    assert layers, f"no Python {version} runtime layer in {seed}"
    for layer in layers:
        shutil.copytree(layer, cache / "runtimes" / layer.name, symlinks=True)
    return cache


def machine_cache_key(*parts: str | Path) -> str:
    """A digest of ``parts``: texts, or files whose bytes count (the code that builds
    what is kept), and the week, so what is kept is refreshed every MACHINE_CACHE_DAYS."""
    digest = hashlib.sha256(f"week {int(time.time() // (MACHINE_CACHE_DAYS * 86400))}"
                            .encode())
    for part in parts:
        digest.update(b"\0" + (part.read_bytes() if isinstance(part, Path)
                               else part.encode()))
    return digest.hexdigest()[:20]


class MachineCacheEntry:
    """A directory of MACHINE_CACHE that a test session uses (holding a shared lock
    on it, so it is not removed as stale meanwhile), with locks of its own for making
    it once and for using it alone."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def complete(self) -> bool:
        return (self.path / ".complete").is_file()

    @contextlib.contextmanager
    def _locked(self, purpose: str, blocking: bool = True) -> Iterator[bool]:
        import fcntl

        with open(self.path.parent / f"{self.path.name}.{purpose}.lock", "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True

    def once(self, make: Callable[[], T]) -> T:
        """``make()``: the first time under a lock that other sessions wait for (then
        the entry is complete), without it once a session has made the entry."""
        if not self.complete:
            with self._locked("make"):
                if not self.complete:  # not made by another session meanwhile
                    made = make()
                    (self.path / ".complete").touch()
                    return made
        return make()

    @contextlib.contextmanager
    def alone(self) -> Iterator[bool]:
        """Whether this session has the entry to itself while the block runs (a daemon
        that owns its directory); False when another session uses it now."""
        with self._locked("alone", blocking=False) as got:
            yield got


@contextlib.contextmanager
def machine_cache_entry(kind: str, key: str, cache: Path | None = None
                        ) -> Iterator[MachineCacheEntry]:
    """``MACHINE_CACHE/kind/key`` (or under ``cache``), created and held with a shared
    lock while the block runs. Entries of ``kind`` under other keys that no session
    has used for MACHINE_CACHE_DAYS are removed."""
    import fcntl

    root = (cache or MACHINE_CACHE) / kind
    root.mkdir(parents=True, exist_ok=True)
    path = root / key
    with open(root / f"{key}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        path.mkdir(exist_ok=True)
        os.utime(path)  # used now: not removed as stale
        _remove_stale_entries(root, keep=key)
        yield MachineCacheEntry(path)


def _remove_stale_entries(root: Path, keep: str) -> None:
    import fcntl

    old = time.time() - MACHINE_CACHE_DAYS * 86400
    for entry in root.iterdir():
        if not entry.is_dir() or entry.name == keep or entry.stat().st_mtime > old:
            continue
        with open(root / f"{entry.name}.lock", "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # in use by another session
                continue
            shutil.rmtree(entry, ignore_errors=True)


def docker_home(home: Path, setenv: Callable[[str, str], None],
                delenv: Callable[[str], None]) -> Path:
    """``home`` as HOME with an empty ~/.docker, no DOCKER_CONFIG or REGISTRY_AUTH_FILE,
    and its bin/ first on PATH (for fake_credential_helper); monkeypatch's setenv and
    delenv (``lambda name: monkeypatch.delenv(name, raising=False)``) do the changes."""
    setenv("HOME", str(home))
    delenv("DOCKER_CONFIG")
    delenv("REGISTRY_AUTH_FILE")
    (home / ".docker").mkdir()
    (home / "bin").mkdir()
    setenv("PATH", f"{home / 'bin'}:/usr/bin:/bin")
    return home


# A same-size edit of an installed file through its hard link, with the mtime set
# back to the nanosecond: only the ctime, which no one can set back, shows it.
def stealth_edit_hook(path: str, then: str = "") -> str:
    """A Python post_compile hook making that edit to ``path`` (relative to the build
    directory), then running the Python lines ``then``."""
    return ("#!/usr/bin/env python3\n"
            "import os\n"
            f"p = {path!r}\n"
            "st = os.stat(p)\n"
            "with open(p, 'r+b') as f:\n"
            "    f.write(b'raise SystemExit(\"POISONED\")#')\n"
            "os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))\n" + then)


def fake_credential_helper(bin_dir: Path, name: str, answers: dict[str, tuple[str, str]],
                           *, body: str | None = None) -> Path:
    """``docker-credential-<name>`` in ``bin_dir`` (put it on PATH): ``get`` answers
    Docker's JSON for the servers in ``answers`` (server -> (user, secret)), else
    "credentials not found" and exit status 1, as real helpers do. Every server
    asked for is appended to ``<bin_dir>/<name>.asked``. ``body`` replaces the
    answer with a shell script of its own (a failing or hanging helper)."""
    cases = ""
    for server, (user, secret) in answers.items():
        answer = json.dumps({"ServerURL": server, "Username": user, "Secret": secret})
        cases += f"  {shlex.quote(server)}) printf '%s' {shlex.quote(answer)}; exit 0;;\n"
    script = bin_dir / f"docker-credential-{name}"
    bin_dir.mkdir(parents=True, exist_ok=True)
    script.write_text(
        "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nIFS= read -r server\n"
        f"printf '%s\\n' \"$server\" >> {shlex.quote(str(bin_dir / (name + '.asked')))}\n"
        + (body if body is not None else
           f"case \"$server\" in\n{cases}esac\n"
           "echo 'credentials not found in native keychain'\nexit 1\n"))
    script.chmod(0o755)
    return script


# --- one run, several pytest-xdist workers (`make test` runs two) ----------------------

def xdist_worker() -> str | None:
    """This process's pytest-xdist worker id (``gw0``), or None in a plain ``pytest``."""
    return os.environ.get("PYTEST_XDIST_WORKER")


def once_per_run(tmp_path_factory: pytest.TempPathFactory, name: str,
                 make: Callable[[Path], T]) -> T:
    """``make(directory)`` once for the whole run, its value shared by every worker.

    Without xdist this is ``make`` on a fresh temporary directory. Under xdist each
    worker has a session of its own, so a session fixture would be built once per
    worker: here the first worker to ask makes it under a file lock in a directory
    beside the workers' own (``getbasetemp().parent``, which is this run's alone),
    keeps the value (pickled), and the others wait for it and read it. A ``make``
    that fails leaves nothing kept: the next worker tries again (and fails alike)."""
    import fcntl
    import pickle

    if xdist_worker() is None:
        return make(tmp_path_factory.mktemp(name))
    root = tmp_path_factory.getbasetemp().parent / "once-per-run"
    root.mkdir(exist_ok=True)
    directory, kept = root / name, root / f"{name}.pickle"
    with open(root / f"{name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if kept.is_file():
            with open(kept, "rb") as handle:
                made: T = pickle.load(handle)
            return made
        shutil.rmtree(directory, ignore_errors=True)  # a failed make's leftovers
        directory.mkdir()
        made = make(directory)
        partial = kept.with_suffix(".partial")
        with open(partial, "wb") as handle:
            pickle.dump(made, handle)
        partial.replace(kept)
        return made


@contextlib.contextmanager
def taking_turns(root: Path, alone: bool) -> Iterator[None]:
    """Run the block beside other blocks of the run (the workers' tests), or, when
    ``alone``, while no other block runs. Every block holds a shared lock of ``root``
    while it runs and an ``alone`` one an exclusive lock; a turnstile lock, which an
    ``alone`` block takes before it waits and every block passes through on its way
    in, stops new blocks from starting meanwhile (else two workers taking turns at
    the shared lock could keep the ``alone`` block waiting for ever)."""
    import fcntl

    with open(root / "alone.turnstile.lock", "a+") as turnstile, \
            open(root / "alone.lock", "a+") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        if alone:
            fcntl.flock(lock, fcntl.LOCK_EX)
        else:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
            fcntl.flock(lock, fcntl.LOCK_SH)
        yield


def planting_setup_py(targets: str, payload: str = "planted") -> str:
    """A setup.py (of ``plantpkg`` 1.0) that appends ``payload`` to each path the Python
    lines ``targets`` put in ``targets`` (``cache``: $SEAL_CACHE), and reports each
    outcome to $SEAL_REPORT: ``WROTE path`` or ``DENIED ERRNO path``."""
    return (f"import errno, glob, os\nfrom setuptools import setup\n"
            f"cache = os.environ['SEAL_CACHE']\n{targets.strip()}\n"
            f"with open(os.environ['SEAL_REPORT'], 'a') as report:\n"
            f"    for target in targets:\n"
            f"        try:\n"
            f"            with open(target, 'ab') as handle:\n"
            f"                handle.write({payload.encode()!r})\n"
            f"            report.write('WROTE %s\\n' % target)\n"
            f"        except OSError as exc:\n"
            f"            report.write('DENIED %s %s\\n' % "
            f"(errno.errorcode.get(exc.errno), target))\n"
            f"setup(name='plantpkg', version='1.0', py_modules=[])\n")
