"""Downloaded runtimes: a local index on 127.0.0.1 serving an archive made from a local prefix.

The archive has python-build-standalone's ``install_only`` layout (a top-level
``python/``) and is listed in a SHA256SUMS file. Each failure (bad checksum,
truncated body, server error) must be refused with nothing cached; offline
builds use only what an earlier download verified into the cache.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from slugbuild import errors
from slugbuild.cache import Cache
from slugbuild.log import Reporter
from slugbuild.platform_info import current
from slugbuild.relocate import patchelf_command
from slugbuild.runtime.download import DownloadSource, _extract
from slugbuild.runtime.layer import runtime_key
from slugbuild.runtime.local import LocalInterpreterSource
from slugbuild.runtime.sources import SourceUnavailable

from ..helpers import Server, crafted_tar, make_app, run_cli, unpack

_SKIPPED = {"test", "idlelib", "tkinter", "turtledemo", "site-packages", "__pycache__", "share",
            "ensurepip", "lib2to3", "pydoc_data"}


def local_prefix():
    """A local CPython prefix (3.12 preferred) to package as the 'downloaded' runtime."""
    runtimes = [r for r in LocalInterpreterSource().runtimes() if r.origin == "pyenv"
                and r.version.startswith(("3.12.", "3.11.", "3.13."))]
    if not runtimes:
        pytest.skip("no pyenv CPython 3.11-3.13 to package")
    return sorted(runtimes, key=lambda r: (r.major_minor != "3.12", r.version))[0]


@pytest.fixture(scope="module")
def archive_dir(tmp_path_factory):
    """good/, bad-sum/, truncated/, error/: each with SHA256SUMS and the archive."""
    runtime = local_prefix()
    root = tmp_path_factory.mktemp("runtime-index")
    name = (f"cpython-{runtime.version}+20990101-{current().arch}"
            "-unknown-linux-gnu-install_only.tar.gz")
    good = root / "good"
    good.mkdir()

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if any(p in _SKIPPED for p in parts) or info.name.endswith((".a", ".pyc")):
            return None
        return info

    with tarfile.open(good / name, "w:gz", compresslevel=1) as tar:
        tar.add(runtime.prefix, arcname="python", filter=keep)
    data = (good / name).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    (good / "SHA256SUMS").write_text(f"{digest}  {name}\n{'0' * 64}  unrelated-file.txt\n")
    for variant, sums in (("bad-sum", f"{'f' * 64}  {name}\n"),
                          ("truncated", f"{digest}  {name}\n"),
                          ("error", f"{digest}  {name}\n")):
        (root / variant).mkdir()
        (root / variant / "SHA256SUMS").write_text(sums)
        (root / variant / name).symlink_to(good / name)
    return root, runtime, name, digest


class IndexHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the index; /truncated/ cuts archives short, /error/ answers 500 for them."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        if self.path.startswith("/error/") and self.path.endswith(".tar.gz"):
            self.send_error(500, "boom")
            return
        if self.path.startswith("/missing-index/"):
            self.send_error(503, "down")
            return
        if self.path.startswith("/truncated/") and self.path.endswith(".tar.gz"):
            data = Path(self.translate_path(self.path)).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture(scope="module")
def index_server(archive_dir):
    root = archive_dir[0]
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: IndexHandler(*a, directory=str(root)))
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def nothing_cached(cache_root: Path) -> None:
    downloads = cache_root / "downloads"
    assert not downloads.exists() or not any(downloads.rglob("*.*")), list(downloads.rglob("*"))
    assert list((cache_root / "tmp").iterdir()) == []
    assert list((cache_root / "runtimes").iterdir()) == []


def source_for(tmp_path: Path, url: str, offline: bool = False) -> DownloadSource:
    return DownloadSource(Cache(tmp_path / "cache"), current(), base_url=url, offline=offline,
                          retries=2)


def test_good_download_is_verified_cached_and_used_offline(tmp_path, archive_dir, index_server):
    _, runtime, name, digest = archive_dir
    server, base = index_server
    source = source_for(tmp_path, f"{base}/good")
    (offer,) = source.available()  # the unrelated SHA256SUMS line is ignored
    assert (offer.version, offer.identity["archive_sha256"]) == (runtime.version, digest)
    path = source.fetch(offer.detail, Reporter(quiet=True))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    record = json.loads(path.with_name(name + ".json").read_text())
    assert record["platform"] == current().key and record["sha256"] == digest

    seen = len(server.requests)
    offline = source_for(tmp_path, f"{base}/good", offline=True)
    (cached,) = offline.available()
    assert cached.version == runtime.version and cached.origin.endswith("(cached)")
    offline.fetch(cached.detail, Reporter(quiet=True))
    assert len(server.requests) == seen, "offline mode touched the network"
    # Online, the index decides: a different published checksum is not the cached archive.
    (changed,) = source_for(tmp_path, f"{base}/bad-sum").available()
    assert changed.identity["archive_sha256"] == "f" * 64
    assert not changed.origin.endswith("(cached)")
    # A cache written for another platform is never offered.
    other = DownloadSource(Cache(tmp_path / "cache"), current().__class__(
        "heroku-24", "ubuntu", "24.04", "aarch64", "glibc2.39"), base_url=base, offline=True)
    assert other.available() == []


@pytest.mark.parametrize(
    ("variant", "code", "words", "requests"),
    [
        ("bad-sum", "runtime-checksum-mismatch", "f" * 64, 1),
        ("truncated", "runtime-download-failed", "truncated", 2),
        ("error", "runtime-download-failed", "HTTP 500", 2),
    ],
)
def test_failed_downloads_are_refused_and_nothing_is_cached(
        tmp_path, archive_dir, index_server, variant, code, words, requests):
    server, base = index_server
    source = source_for(tmp_path, f"{base}/{variant}")
    (offer,) = source.available()
    before = len(server.requests)
    with pytest.raises(errors.SlugbuildError) as caught:
        source.fetch(offer.detail, Reporter(quiet=True))
    assert caught.value.code == code
    assert words in caught.value.found
    assert len(server.requests) - before == requests  # retried only what may succeed later
    nothing_cached(tmp_path / "cache")


def test_unreachable_index_and_offline_without_cache(tmp_path, index_server):
    _, base = index_server
    with pytest.raises(SourceUnavailable, match="HTTP 503"):
        source_for(tmp_path, f"{base}/missing-index").available()
    assert source_for(tmp_path, f"{base}/good", offline=True).available() == []


APP = {
    ".python-version": "{major_minor}\n",
    "requirements.txt": "",
    "Procfile": "web: python -m http.server $PORT --bind 127.0.0.1\n",
    "index.html": "<p>from a downloaded runtime</p>\n",
}


@pytest.mark.slow
def test_compile_with_downloaded_runtime_then_offline(tmp_path, archive_dir, index_server,
                                                      cache_dir):
    _, runtime, _, digest = archive_dir
    server, base = index_server
    app = make_app(tmp_path / "app", {k: v.format(major_minor=runtime.major_minor)
                                      for k, v in APP.items()})
    slug = tmp_path / "slug.tgz"
    result = run_cli("compile", app, "-o", slug, "--cache-dir", cache_dir,
                     "--python-source", "download", "--python-download-url", f"{base}/good")
    assert result.returncode == 0, result.stderr
    assert f"Using Python {runtime.major_minor} specified in .python-version" in result.stderr
    assert f"{base}/good/cpython-{runtime.version}" in result.stderr
    meta = json.loads(slug.with_suffix(".json").read_text())
    assert meta["runtime"]["source"] == "download"
    assert meta["runtime"]["archive_sha256"] == digest
    assert meta["runtime"]["resolved"] == runtime.version
    assert meta["platform"]["arch"] == current().arch and meta["stack"]

    root = unpack(slug, tmp_path / "unpacked")
    python = root / ".heroku" / "python" / "bin" / runtime.python_name
    rpath = subprocess.run([patchelf_command(), "--print-rpath", str(python)],
                           capture_output=True, text=True, check=True).stdout
    assert str(runtime.prefix) not in rpath  # libpython comes from inside the slug
    with Server(root) as web:
        import requests

        assert "from a downloaded runtime" in requests.get(web.base + "/index.html",
                                                           timeout=10).text

    seen = len(server.requests)
    again = run_cli("compile", app, "-o", tmp_path / "again.tgz", "--cache-dir", cache_dir,
                    "--offline", "--python-source", "download",
                    "--python-download-url", f"{base}/good")
    assert again.returncode == 0, again.stderr
    assert "from cache" in again.stderr
    assert len(server.requests) == seen
    listing = run_cli("runtimes", "--cache-dir", cache_dir, "--offline",
                      "--python-source", "download", "--json")
    offers = json.loads(listing.stdout)["runtimes"]
    assert [o["version"] for o in offers] == [runtime.version]
    assert offers[0]["origin"].endswith("(cached)")


@pytest.mark.slow
def test_compile_refuses_bad_checksum_cleanly(tmp_path, archive_dir, index_server):
    _, runtime, _, _ = archive_dir
    _, base = index_server
    app = make_app(tmp_path / "app", {k: v.format(major_minor=runtime.major_minor)
                                      for k, v in APP.items()})
    out = tmp_path / "out"
    out.mkdir()
    cache = tmp_path / "cache"
    result = run_cli("compile", app, "-o", out / "slug.tgz", "--cache-dir", cache,
                     "--python-source", "download", "--python-download-url", f"{base}/bad-sum")
    assert result.returncode == 1
    assert result.stderr.count("Error [") == 1
    assert "does not match its published checksum" in result.stderr
    assert list(out.iterdir()) == []
    nothing_cached(cache)


def small_tar(path: Path, members: list[tuple[str, str | None]]) -> Path:
    """A tar with files (name, content) and symlinks (name, None -> '../../../etc/passwd')."""
    return crafted_tar(path, [(name, "../../../etc/passwd" if content is None else None,
                               content or "") for name, content in members], mode="w")


def test_zstd_archive_unpacks_and_escaping_entries_are_refused(tmp_path):
    plain = small_tar(tmp_path / "ok.tar", [("bin/python3.12", "#!x\n"), ("lib/a.txt", "a")])
    subprocess.run(["zstd", "-q", "-1", str(plain), "-o", str(tmp_path / "ok.tar.zst")],
                   check=True)
    target = tmp_path / "out"
    target.mkdir()
    _extract(tmp_path / "ok.tar.zst", target, "http://x/ok.tar.zst")
    assert (target / "lib" / "a.txt").read_text() == "a"
    for bad in ([("../evil", "x")], [("/abs", "x")], [("python/lib/link", None)]):
        archive = small_tar(tmp_path / "bad.tar", bad)
        with pytest.raises(errors.SlugbuildError) as caught:
            _extract(archive, tmp_path / "out", "http://x/bad.tar")
        assert caught.value.code == "runtime-archive-invalid"
        assert "leaves the archive" in caught.value.found
    (tmp_path / "broken.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(errors.SlugbuildError) as caught:
        _extract(tmp_path / "broken.tar.gz", tmp_path / "out", "http://x/broken.tar.gz")
    assert "cannot be unpacked" in caught.value.found


def test_runtimes_command_notes_an_unreachable_index(tmp_path, index_server):
    _, base = index_server
    result = run_cli("runtimes", "--cache-dir", tmp_path / "cache", "--python-source",
                     "local,download", "--python-download-url", f"{base}/missing-index")
    assert result.returncode == 0, result.stderr
    assert "source unavailable: download:" in result.stderr and "HTTP 503" in result.stderr
    local_versions = {r.version for r in LocalInterpreterSource().runtimes()}
    listed = {line.split()[0] for line in result.stdout.splitlines()[1:]}
    assert listed and listed <= local_versions


def test_runtime_layer_key_differs_per_platform():
    offer = LocalInterpreterSource().available()[0]
    here = current()
    other = here.__class__(here.stack, here.distro, here.distro_version, "aarch64", here.libc)
    assert runtime_key(offer, here)[1] != runtime_key(offer, other)[1]
    assert other.key in runtime_key(offer, other)[0]
