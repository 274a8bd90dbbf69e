"""The runtime index against loopback mirrors laid out like the real ones.

A GitHub releases API (JSON pages, newest first) with release assets, as
python-build-standalone publishes them, and a bucket laid out like Heroku's.
Archives are tiny fakes with a real CPython prefix's marker files, so
listing, history search, verification and unpacking are exercised without
downloading or running a real runtime (tests/runtime/test_download.py does that).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import subprocess
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from slugbuild import errors
from slugbuild.cache import Cache
from slugbuild.log import Reporter
from slugbuild.platform_info import Platform, current
from slugbuild.runtime import download as downloads
from slugbuild.runtime.download import DownloadSource, HerokuSource
from slugbuild.runtime.local import LocalInterpreterSource
from slugbuild.runtime.resolve import resolve
from slugbuild.runtime.sources import SourceUnavailable
from slugbuild.versions import PythonRequest

from ..helpers import free_port, make_app, run_cli

API = "/repos/astral-sh/python-build-standalone/releases"
DEBIAN = Platform("debian-12", "debian", "12", "x86_64", "glibc2.36")
UBUNTU = Platform("heroku-24", "ubuntu", "24.04", "x86_64", "glibc2.39")


def prefix_members(version: str, top: str) -> dict[str, bytes]:
    """The files that make a directory a CPython prefix to slugbuild."""
    minor = ".".join(version.split(".")[:2])
    return {
        f"{top}bin/python{minor}": b"#!/bin/sh\nexit 0\n",
        f"{top}lib/python{minor}/os.py": b"",
        f"{top}include/python{minor}/patchlevel.h":
            f'#define PY_VERSION "{version}"\n'.encode(),
    }


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def pbs_name(version: str, tag: str, arch: str = "x86_64") -> str:
    return f"cpython-{version}+{tag}-{arch}-unknown-linux-gnu-install_only.tar.gz"


class Mirror:
    """Routes: path -> (status, headers, body); every request is recorded."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.requests: list[tuple[str, str]] = []
        self.releases: list[dict] = []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def answer(self, head: bool) -> None:
                mirror.requests.append((self.command, self.path))
                url = urlparse(self.path)
                if url.path == API:
                    query = parse_qs(url.query)
                    per, page = int(query["per_page"][0]), int(query["page"][0])
                    body = json.dumps(mirror.releases[(page - 1) * per: page * per]).encode()
                    status, headers = 200, {"Content-Type": "application/json"}
                elif url.path in mirror.routes:
                    status, headers, body = mirror.routes[url.path]
                else:
                    status, headers, body = 404, {}, b"not found"
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(key, value)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def do_GET(self) -> None:
                self.answer(head=False)

            def do_HEAD(self) -> None:
                self.answer(head=True)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)

    def serve(self, path: str, body: bytes, status: int = 200, **headers: str) -> str:
        self.routes[path] = (status, headers, body)
        return self.url + path

    def release(self, tag: str, versions: list[str], checksums: str) -> dict[str, str]:
        """A release whose archives are verified by ``checksums``: "digest" (the API's
        asset digest), "sums" (a SHA256SUMS asset) or "sidecar" (.sha256 assets)."""
        assets, sums, digests = [], [], {}
        for version in versions:
            for arch in ("x86_64", "aarch64"):
                name = pbs_name(version, tag, arch)
                data = tar_bytes(prefix_members(version, "python/"))
                digest = hashlib.sha256(data).hexdigest()
                digests[name] = digest
                url = self.serve(f"/astral-sh/pbs/releases/download/{tag}/{name}", data)
                asset = {"name": name, "browser_download_url": url}
                if checksums == "digest":
                    asset["digest"] = f"sha256:{digest}"
                assets.append(asset)
                sums.append(f"{digest}  {name}\n")
                if checksums == "sidecar":
                    sidecar = self.serve(f"/astral-sh/pbs/releases/download/{tag}/{name}.sha256",
                                         f"{digest}\n".encode())
                    assets.append({"name": f"{name}.sha256", "browser_download_url": sidecar})
        if checksums == "sums":
            url = self.serve(f"/astral-sh/pbs/releases/download/{tag}/SHA256SUMS",
                             "".join(sums).encode())
            assets.append({"name": "SHA256SUMS", "browser_download_url": url})
        assets.append({"name": "unrelated.txt", "browser_download_url": self.url + "/x"})
        self.releases.append({"tag_name": tag, "draft": False, "prerelease": False,
                              "assets": assets})
        return digests

    def api_requests(self) -> int:
        return sum(1 for _, path in self.requests if path.startswith(API))


@pytest.fixture()
def mirror():
    mirror = Mirror()
    mirror.thread.start()
    mirror.releases.append({"tag_name": "20270101", "draft": True, "prerelease": False,
                            "assets": []})
    mirror.release("20261101", ["3.14.7", "3.13.15", "3.12.14"], "digest")
    mirror.release("20240726", ["3.12.4", "3.11.9"], "sums")
    mirror.release("20240107", ["3.12.1", "3.11.7"], "sidecar")
    mirror.release("20231002", ["3.12.0"], "digest")
    try:
        yield mirror
    finally:
        mirror.server.shutdown()
        mirror.server.server_close()
        mirror.thread.join()


def source(tmp_path: Path, url: str, offline: bool = False, platform: Platform = DEBIAN,
           kind: type[DownloadSource] = DownloadSource) -> DownloadSource:
    return kind(Cache(tmp_path / "cache"), platform, base_url=url, offline=offline,
                retries=1, timeout=5)


def test_newest_release_is_the_index_and_is_remembered(tmp_path, mirror):
    found = source(tmp_path, mirror.url + API)
    offers = {o.version: o for o in found.available()}
    assert sorted(offers) == ["3.12.14", "3.13.15", "3.14.7"]
    assert found.index_origin == "python-build-standalone release 20261101"
    (tmp_path / "scratch").mkdir()
    runtime = found.provide(offers["3.14.7"], tmp_path / "scratch", Reporter(quiet=True))
    assert runtime.version == "3.14.7" and runtime.prefix.name == "python"
    asked = mirror.api_requests()
    again = source(tmp_path, mirror.url + API)
    assert sorted(o.version for o in again.available()) == sorted(offers)
    assert mirror.api_requests() == asked  # the answer is remembered for an hour


@pytest.mark.parametrize(("version", "tag"), [
    ("3.12.4", "20240726"),  # verified by the release's SHA256SUMS
    ("3.11.7", "20240107"),  # by a .sha256 asset
    ("3.12.0", "20231002"),  # by the asset's digest
])
def test_exact_patch_is_found_in_the_release_history(tmp_path, mirror, version, tag):
    found = source(tmp_path, mirror.url + API)
    offer = found.find_exact(version)
    assert offer is not None and f"/{tag}/" in offer.origin
    (tmp_path / "scratch").mkdir()
    runtime = found.provide(offer, tmp_path / "scratch", Reporter(quiet=True))
    assert runtime.version == version
    chosen = resolve(PythonRequest(version, ".python-version"),
                     [LocalInterpreterSource(search_path=[]), found])
    assert chosen.offer.version == version and chosen.offer.source_name == "download"


def test_history_search_stops_at_older_releases(tmp_path, mirror):
    found = source(tmp_path, mirror.url + API)
    assert found.find_exact("3.12.2") is None  # between 20240107's 3.12.1 and 3.12.4
    assert found.find_exact("3.10.5") is None  # no release has 3.10
    assert found.find_exact("3.12.99") is None  # newer than the newest release
    assert found.find_exact("3.12.4") is not None
    offline = source(tmp_path, mirror.url + API, offline=True)
    before = len(mirror.requests)
    assert offline.find_exact("3.12.4") is not None  # remembered pages, no request
    assert len(mirror.requests) == before


def test_unreachable_api_falls_back_fast_and_is_not_asked_again(tmp_path, mirror, monkeypatch):
    data = tar_bytes(prefix_members("3.12.7", "python/"))
    name = pbs_name("3.12.7", "20241016")
    mirror.serve(f"/pinned/{name}", data)
    mirror.serve("/pinned/SHA256SUMS", f"{hashlib.sha256(data).hexdigest()}  {name}\n".encode())
    mirror.serve("/down/releases", b"busy", status=503)
    monkeypatch.setattr(downloads, "DEFAULT_RELEASES_API", mirror.url + "/down/releases")
    monkeypatch.setattr(downloads, "DEFAULT_DOWNLOAD_URL", mirror.url + "/pinned")
    monkeypatch.delenv("SLUGBUILD_PYTHON_DOWNLOAD_URL", raising=False)
    started = time.monotonic()
    first = source(tmp_path, None)
    assert [o.version for o in first.available()] == ["3.12.7"]
    assert "pinned fallback" in first.index_origin and "HTTP 503" in first.index_origin
    down = [p for _, p in mirror.requests if p.startswith("/down/")]
    assert len(down) == 1  # one attempt, no retries
    second = source(tmp_path, None)
    assert [o.version for o in second.available()] == ["3.12.7"]
    assert len([p for _, p in mirror.requests if p.startswith("/down/")]) == 1
    assert time.monotonic() - started < 5


def test_dead_index_is_described_in_plain_words(tmp_path, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setattr(downloads, "DEFAULT_RELEASES_API", dead + "/releases")
    monkeypatch.setattr(downloads, "DEFAULT_DOWNLOAD_URL", dead + "/pinned")
    monkeypatch.delenv("SLUGBUILD_PYTHON_DOWNLOAD_URL", raising=False)
    with pytest.raises(SourceUnavailable) as caught:
        source(tmp_path, None).available()
    text = str(caught.value)
    assert "connection refused by 127.0.0.1" in text and "pinned fallback" in text
    assert "HTTPConnectionPool" not in text and "Errno" not in text


def test_unavailable_version_error_from_the_command_line(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/repos/o/r/releases"
    app = make_app(tmp_path / "app", {"requirements.txt": "", ".python-version": "3.11.99\n"})
    result = run_cli("compile", app, "-o", tmp_path / "slug.tgz", "--cache-dir",
                     tmp_path / "cache", "--python-source", "local,download",
                     "--python-download-url", dead, timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "HTTPConnectionPool" not in result.stderr
    assert "python-version-unavailable" in result.stderr or "not available" in result.stderr
    assert "--python-download-url" in result.stderr
    assert "allow downloads" not in result.stderr.lower()
    assert "--python-patch-fallback" in result.stderr
    assert not (tmp_path / "slug.tgz").exists()


def test_offline_index_directory(tmp_path):
    index = tmp_path / "index"
    index.mkdir()
    data = tar_bytes(prefix_members("3.13.15", "python/"))
    name = pbs_name("3.13.15", "20261101", current().arch)
    (index / name).write_bytes(data)
    (index / "SHA256SUMS").write_text(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
    (tmp_path / "scratch").mkdir()
    for url in (str(index), (index / "SHA256SUMS").as_uri()):
        found = DownloadSource(Cache(tmp_path / "cache"), current(), base_url=url)
        (offer,) = found.available()
        scratch = Path(tempfile.mkdtemp(dir=tmp_path / "scratch"))
        assert found.provide(offer, scratch, Reporter(quiet=True)).version == "3.13.15"


# --- Heroku's archives -----------------------------------------------------------------------

def heroku_archive(version: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for member, data in prefix_members(version, "").items():
            info = tarfile.TarInfo(member)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    raw = buffer.getvalue()
    return subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True,
                          check=True).stdout


def heroku_name(version: str) -> str:
    return f"python-{version}-ubuntu-24.04-amd64.tar.zst"


@pytest.fixture()
def bucket(mirror):
    data = heroku_archive("3.12.14")
    md5 = hashlib.md5(data).hexdigest()
    multipart = hashlib.md5(hashlib.md5(data).digest()).hexdigest() + "-1"
    sha = hashlib.sha256(data).hexdigest()
    for prefix, headers, sidecar in (("/etag", {"ETag": f'"{md5}"'}, None),
                                     ("/multipart", {"ETag": f'"{multipart}"'}, None),
                                     ("/sidecar", {}, sha),
                                     ("/bad-sidecar", {"ETag": f'"{md5}"'}, "0" * 64),
                                     ("/bad-etag", {"ETag": '"' + "f" * 32 + '"'}, None),
                                     ("/none", {}, None)):
        mirror.serve(f"{prefix}/{heroku_name('3.12.14')}", data, **headers)
        if sidecar:
            mirror.serve(f"{prefix}/{heroku_name('3.12.14')}.sha256",
                         f"{sidecar}  {heroku_name('3.12.14')}\n".encode())
    return mirror, sha


@pytest.mark.parametrize("layout", ["/etag", "/multipart", "/sidecar"])
def test_heroku_archive_is_verified_then_cached(tmp_path, bucket, layout):
    mirror, sha = bucket
    heroku = source(tmp_path, mirror.url + layout, platform=UBUNTU, kind=HerokuSource)
    offers = {o.version: o for o in heroku.available()}
    assert "3.12.14" in offers and "3.14.7" in offers and "3.9.25" not in offers
    (tmp_path / "scratch").mkdir()
    runtime = heroku.provide(offers["3.12.14"], tmp_path / "scratch", Reporter(quiet=True))
    assert runtime.version == "3.12.14"
    cached = {a.name: a.sha256 for a in heroku.cached()}
    assert cached == {heroku_name("3.12.14"): sha}
    again = source(tmp_path, mirror.url + layout, platform=UBUNTU, kind=HerokuSource)
    known = again.find_exact("3.12.14")
    assert known.origin.endswith("(cached)")
    assert known.identity == offers["3.12.14"].identity  # the same layer key as before
    assert offers["3.12.14"].metadata["archive_sha256"] == sha == known.metadata[
        "archive_sha256"]


@pytest.mark.parametrize(("layout", "code"), [
    ("/bad-sidecar", "runtime-checksum-mismatch"),
    ("/bad-etag", "runtime-checksum-mismatch"),
    ("/none", "runtime-checksum-missing"),
])
def test_unverifiable_heroku_archive_is_refused(tmp_path, bucket, layout, code):
    mirror, _ = bucket
    heroku = source(tmp_path, mirror.url + layout, platform=UBUNTU, kind=HerokuSource)
    offer = heroku.find_exact("3.12.14")
    with pytest.raises(errors.SlugbuildError) as caught:
        heroku.fetch(offer.detail, Reporter(quiet=True))
    assert caught.value.code == code
    store = tmp_path / "cache" / "downloads"
    assert not store.exists() or not any(store.rglob("*.*"))


def test_heroku_source_needs_ubuntu_and_probes_exact_pins(tmp_path, bucket):
    mirror, _ = bucket
    with pytest.raises(SourceUnavailable) as caught:
        source(tmp_path, mirror.url + "/etag", kind=HerokuSource).available()
    assert "Ubuntu" in str(caught.value)
    heroku = source(tmp_path, mirror.url + "/etag", platform=UBUNTU, kind=HerokuSource)
    assert heroku.find_exact("3.12.5") is None  # HEAD answered 404
    assert heroku.find_exact("3.12.14") is not None
    assert ("HEAD", f"/etag/{heroku_name('3.12.5')}") in mirror.requests


# --- end to end: real builds with local runtimes ---------------------------------------------

def local_minor(minor: str) -> str | None:
    found = sorted((r.version for r in LocalInterpreterSource().runtimes()
                    if r.major_minor == minor), key=lambda v: [int(p) for p in v.split(".")])
    return found[-1] if found else None


def logged(result, text: str) -> bool:
    return any(text in line for line in result.log)


@pytest.mark.slow
def test_patch_fallback_and_sticky_default_in_real_builds(tmp_path, cache_dir):
    from slugbuild import compile_app
    from slugbuild.runtime.resolve import RuntimeOptions

    newest = local_minor("3.12")
    if newest is None:
        pytest.skip("no local CPython 3.12")
    app = make_app(tmp_path / "app", {"requirements.txt": "", ".python-version": "3.12.99\n"})
    local = RuntimeOptions(("local",), offline=True)
    with pytest.raises(errors.SlugbuildError) as caught:
        compile_app(app, tmp_path / "a.tgz", cache_dir=cache_dir, runtime_options=local,
                    reporter=Reporter(quiet=True))
    assert caught.value.code == "python-version-unavailable"
    result = compile_app(app, tmp_path / "b.tgz", cache_dir=cache_dir,
                         runtime_options=RuntimeOptions(("local",), True, patch_fallback=True),
                         reporter=Reporter(quiet=True))
    assert result.runtime["resolved"] == newest
    assert result.runtime["substituted_for"] == "3.12.99"
    assert json.loads((tmp_path / "b.json").read_text())["runtime"]["substituted_for"] \
        == "3.12.99"
    assert logged(result, "could not be found in any source")

    os.remove(app / ".python-version")
    first = compile_app(app, tmp_path / "c.tgz", cache_dir=cache_dir, runtime_options=local,
                        reporter=Reporter(quiet=True))
    assert first.runtime["requested_from"] == "default"
    assert logged(first, "Picked Python") and first.runtime["reason"]
    picked = ".".join(first.runtime["resolved"].split(".")[:2])
    second = compile_app(app, tmp_path / "d.tgz", cache_dir=cache_dir, runtime_options=local,
                         reporter=Reporter(quiet=True))
    assert second.runtime["requested_from"] == "sticky"
    assert second.runtime["requested"] == picked
    assert logged(second, "previous build used")


_SKIPPED = {"test", "idlelib", "tkinter", "turtledemo", "site-packages", "__pycache__", "share",
            "ensurepip", "lib2to3", "pydoc_data"}


def packaged_pyenv_runtime(top: str, mode: str):
    """A pyenv CPython (3.12 preferred) as a tar (``mode``) with its prefix at ``top``,
    trimmed of what a build drops anyway: (runtime, archive bytes)."""
    runtimes = [r for r in LocalInterpreterSource().runtimes()
                if r.origin == "pyenv" and r.major_minor in ("3.11", "3.12", "3.13")]
    if not runtimes:
        pytest.skip("no pyenv CPython 3.11-3.13 to package")
    runtime = sorted(runtimes, key=lambda r: r.major_minor != "3.12")[0]

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if any(p in _SKIPPED for p in parts) or info.name.endswith((".a", ".pyc")):
            return None
        return info

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode, **({"compresslevel": 1} if "gz" in mode
                                                     else {})) as tar:
        tar.add(runtime.prefix, arcname=top, filter=keep)
    return runtime, buffer.getvalue()


@pytest.mark.slow
def test_exact_pin_from_an_older_release_builds_a_real_slug(tmp_path, mirror, cache_dir):
    """A pyenv CPython packaged as an older release's archive: the pin is found in
    the history, downloaded, verified, and the slug's interpreter runs."""
    from slugbuild import compile_app
    from slugbuild.runtime.resolve import RuntimeOptions

    from ..helpers import unpack

    runtime, data = packaged_pyenv_runtime("python", "w:gz")
    name = pbs_name(runtime.version, "20200101", current().arch)
    url = mirror.serve(f"/astral-sh/pbs/releases/download/20200101/{name}", data)
    del mirror.releases[2:]  # the newest release (fakes of other versions) stays first
    mirror.releases.append({"tag_name": "20200101", "assets": [
        {"name": name, "browser_download_url": url,
         "digest": f"sha256:{hashlib.sha256(data).hexdigest()}"}]})
    app = make_app(tmp_path / "app", {"requirements.txt": "",
                                      ".python-version": f"{runtime.version}\n"})
    result = compile_app(app, tmp_path / "slug.tgz", cache_dir=tmp_path / "own-cache",
                         reporter=Reporter(quiet=True), runtime_options=RuntimeOptions(
                             ("download",), download_url=mirror.url + API))
    assert result.runtime["resolved"] == runtime.version
    assert result.runtime["source"] == "download"
    assert "/20200101/" in result.runtime["origin"]
    slug = unpack(tmp_path / "slug.tgz", tmp_path / "unpacked")
    python = slug / ".heroku" / "python" / "bin" / runtime.python_name
    ran = subprocess.run([python, "-c", "import ssl, sys; print(sys.version.split()[0])"],
                         capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert ran.stdout.strip() == runtime.version, ran.stderr


def test_a_fake_interpreter_in_an_archive_is_refused_cleanly(tmp_path, mirror):
    """An archive whose bin/python3.12 is not CPython ends in one catalogued error."""
    from slugbuild.runtime.layer import ensure_runtime_layer

    found = source(tmp_path, mirror.url + API, platform=current())
    offer = found.find_exact("3.12.4")
    if offer is None:
        pytest.skip(f"the mirror has no archive for {current().arch}")
    with pytest.raises(errors.SlugbuildError) as caught:
        ensure_runtime_layer(found.cache, offer, current(), Reporter(quiet=True))
    assert caught.value.code == "runtime-relocation-failed"
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_damaged_answers_never_break_a_build(tmp_path, mirror):
    """Garbage from the API, or a damaged remembered answer, is an unavailable source."""
    mirror.serve("/garbage/releases", b'[{"tag_name": 1, "assets": 7}, "x", null]')
    mirror.serve("/notjson/releases", b"<html>rate limited</html>")
    for path in ("/garbage/releases", "/notjson/releases"):
        found = source(tmp_path / path.strip("/").split("/")[0], mirror.url + path)
        with pytest.raises(SourceUnavailable):
            found.available()
        try:
            assert found.find_exact("3.12.4") is None
        except SourceUnavailable:
            pass  # the protocol's way to say so: resolve() notes it and goes on
    good = source(tmp_path, mirror.url + API)
    assert good.available()
    for remembered in (tmp_path / "cache" / "runtime-index").glob("*.json"):
        remembered.write_text('{"fetched_at": 9e99, "value": [{"tag": 3}]}')
    again = source(tmp_path, mirror.url + API)
    assert sorted(o.version for o in again.available()) == ["3.12.14", "3.13.15", "3.14.7"]


def test_s3_etags_of_several_parts():
    """A multipart ETag is md5(part md5s)-N; the AWS CLI's 8 MiB parts are tried."""
    from slugbuild.runtime.download import _Received

    data = os.urandom((8 << 20) * 2 + 12345)
    parts = [data[i:i + (8 << 20)] for i in range(0, len(data), 8 << 20)]
    etag = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()

    def received(tag: str | None) -> _Received:
        result = _Received()
        for start in range(0, len(data), 65536 + 7):  # chunks that straddle part ends
            result.update(data[start:start + 65536 + 7])
        result.etag = tag
        return result

    assert received(f"{etag}-3").matches_etag() is True
    assert received(f"{'0' * 32}-3").matches_etag() is None  # unknown part size: cannot tell
    assert received(hashlib.md5(data).hexdigest()).matches_etag() is True
    assert received("f" * 32).matches_etag() is False
    assert received(None).matches_etag() is None
    assert received('W/"weak"').matches_etag() is None


def test_heroku_archive_missing_from_the_bucket(tmp_path, bucket):
    mirror, _ = bucket
    mirror.serve(f"/forbidden/{heroku_name('3.13.15')}", b"<Error>AccessDenied</Error>",
                 status=403)
    heroku = source(tmp_path, mirror.url + "/forbidden", platform=UBUNTU, kind=HerokuSource)
    offer = next(o for o in heroku.available() if o.version == "3.13.15")
    with pytest.raises(errors.SlugbuildError) as caught:
        heroku.fetch(offer.detail, Reporter(quiet=True))
    assert caught.value.code == "runtime-download-failed"
    assert "no such archive" in caught.value.found


def test_history_pages_are_read_again_after_a_new_release(tmp_path, mirror, monkeypatch):
    monkeypatch.setattr(downloads, "HISTORY_PAGE_SIZE", 2)
    found = source(tmp_path, mirror.url + API)
    assert "/20231002/" in found.find_exact("3.12.0").origin  # on page 3 of 3
    pages = {p for _, p in mirror.requests if p.startswith(API)}
    assert {f"{API}?per_page=2&page={n}" for n in (1, 2, 3)} <= pages
    # A new release shifts every page; page 1 is re-read after its hour.
    mirror.release("20270201", ["3.14.8"], "digest")
    mirror.releases.insert(0, mirror.releases.pop())
    for remembered in (tmp_path / "cache" / "runtime-index").glob("*.json"):
        record = json.loads(remembered.read_text())
        record["fetched_at"] = record.get("fetched_at", 0) - 2 * downloads.INDEX_FRESH_SECONDS
        remembered.write_text(json.dumps(record))
    before = len(mirror.requests)
    again = source(tmp_path, mirror.url + API)
    assert "/20231002/" in again.find_exact("3.12.0").origin
    assert len([p for _, p in mirror.requests[before:] if p.startswith(API)]) >= 3


@pytest.mark.slow
def test_heroku_archive_builds_a_real_slug(tmp_path, mirror, monkeypatch):
    """A pyenv CPython packaged as Heroku packages Python (prefix at the top,
    .tar.zst, a .sha256 beside it), built on a host that says it is Ubuntu 24.04."""
    from slugbuild import compile_app, platform_info
    from slugbuild.runtime.resolve import RuntimeOptions

    from ..helpers import unpack

    if current().arch != "x86_64":
        pytest.skip("the fake bucket holds amd64 archives")
    runtime, tar = packaged_pyenv_runtime(".", "w")
    data = subprocess.run(["zstd", "-q", "-1", "-c"], input=tar, capture_output=True,
                          check=True).stdout
    name = heroku_name(runtime.version)
    mirror.serve(f"/bucket/{name}", data)
    mirror.serve(f"/bucket/{name}.sha256", f"{hashlib.sha256(data).hexdigest()}\n".encode())
    ubuntu = Platform("heroku-24", "ubuntu", "24.04", current().arch, current().libc)
    monkeypatch.setattr(platform_info, "current", lambda: ubuntu)
    app = make_app(tmp_path / "app", {"requirements.txt": "",
                                      ".python-version": f"{runtime.version}\n"})
    result = compile_app(app, tmp_path / "slug.tgz", cache_dir=tmp_path / "cache",
                         reporter=Reporter(quiet=True), runtime_options=RuntimeOptions(
                             ("heroku",), heroku_url=mirror.url + "/bucket"))
    assert (result.runtime["source"], result.runtime["resolved"]) == ("heroku", runtime.version)
    assert result.runtime["origin"].endswith(f"/bucket/{name}")
    assert result.runtime["archive_sha256"] == hashlib.sha256(data).hexdigest()
    warm = compile_app(app, tmp_path / "warm.tgz", cache_dir=tmp_path / "cache",
                       reporter=Reporter(quiet=True), runtime_options=RuntimeOptions(
                           ("heroku",), heroku_url=mirror.url + "/bucket"))
    assert logged(warm, f"Restoring Python {runtime.version} from cache")
    slug = unpack(tmp_path / "slug.tgz", tmp_path / "unpacked")
    python = slug / ".heroku" / "python" / "bin" / runtime.python_name
    ran = subprocess.run([python, "-c", "import ssl, sys; print(sys.version.split()[0])"],
                         capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert ran.stdout.strip() == runtime.version, ran.stderr
