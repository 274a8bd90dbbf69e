"""Time each way a runtime layer can be made: local prefix vs. verified download.

    .venv/bin/python benchmarks/runtime_sources.py [VERSION]

Packages a local pyenv prefix as a python-build-standalone ``install_only``
archive (gzip level 6, as published archives are), serves it with a SHA256SUMS
from 127.0.0.1, and prints, each in a fresh cache: listing the local source,
fetching the index, downloading + verifying, unpacking, building the runtime
layer from the archive vs. from the local prefix, and a warm (cached) lookup.
"""

from __future__ import annotations

import hashlib
import http.server
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from slugbuild.cache import Cache  # noqa: E402
from slugbuild.log import Reporter  # noqa: E402
from slugbuild.platform_info import current  # noqa: E402
from slugbuild.runtime.download import DownloadSource, _extract  # noqa: E402
from slugbuild.runtime.layer import ensure_runtime_layer  # noqa: E402
from slugbuild.runtime.local import LocalInterpreterSource  # noqa: E402

SKIP = {"test", "idlelib", "tkinter", "turtledemo", "site-packages", "__pycache__"}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def timed(label: str, func):
    start = time.perf_counter()
    result = func()
    print(f"{label:<48} {time.perf_counter() - start:8.2f} s")
    return result


def main() -> None:
    wanted = sys.argv[1] if len(sys.argv) > 1 else "3.12"
    local = LocalInterpreterSource()
    offers = timed("list local runtimes", local.available)
    offer = max((o for o in offers if o.version.startswith(wanted + ".") or o.version == wanted),
                key=lambda o: tuple(map(int, o.version.split("."))))
    platform = current()
    quiet = Reporter(quiet=True)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        name = (f"cpython-{offer.version}+20990101-{platform.arch}"
                "-unknown-linux-gnu-install_only.tar.gz")

        def pack() -> None:
            with tarfile.open(root / name, "w:gz", compresslevel=6) as tar:
                tar.add(offer.detail.prefix, arcname="python",
                        filter=lambda i: None if SKIP & set(Path(i.name).parts)
                        or i.name.endswith(".a") else i)

        timed("make archive (benchmark set-up)", pack)
        size = (root / name).stat().st_size
        digest = hashlib.sha256((root / name).read_bytes()).hexdigest()
        (root / "SHA256SUMS").write_text(f"{digest}  {name}\n")
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), lambda *a: _QuietHandler(*a, directory=str(root)))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            base = f"http://127.0.0.1:{server.server_address[1]}"
            cache = Cache(root / "cache-download")
            source = DownloadSource(cache, platform, base_url=base)
            (download_offer,) = timed("fetch and parse SHA256SUMS", source.available)
            archive = download_offer.detail
            start = time.perf_counter()
            path = source.fetch(archive, quiet)
            elapsed = time.perf_counter() - start
            print(f"{'download + SHA-256 verify (127.0.0.1)':<48} {elapsed:8.2f} s"
                  f"  ({size / 1e6:.1f} MB, {size / 1e6 / elapsed:.0f} MB/s)")
            out = root / "unpack"
            out.mkdir()
            timed("unpack archive", lambda: _extract(path, out, archive.url))
            timed("runtime layer from download (cached archive)",
                  lambda: ensure_runtime_layer(cache, download_offer, platform, quiet))
            timed("runtime layer from local prefix",
                  lambda: ensure_runtime_layer(Cache(root / "cache-local"), offer, platform,
                                               quiet))
            timed("runtime layer, warm (cache hit)",
                  lambda: ensure_runtime_layer(cache, download_offer, platform, quiet))
        finally:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    main()
