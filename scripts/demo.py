"""`make demo`: compile the bundled Django app, run it from the slug, fetch two pages.

Builds fixtures/apps/django-tutorial into build/demo/django-tutorial.tgz (cache
in build/cache), unpacks it into a fresh temporary directory, starts its web
process with `slugbuild run` on 127.0.0.1, fetches `/` and a hashed static
file, prints what was built, and stops the server.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import requests

import slugbuild
from slugbuild.slug_size import human

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "fixtures" / "apps" / "django-tutorial"
OUT = REPO / "build" / "demo" / "django-tutorial.tgz"
CACHE = REPO / "build" / "cache"



def size_text(size: int) -> str:
    """The slug's size in bytes and in the build log's units (binary, as Heroku's "Done:
    25.1 MB"): a decimal figure here read as another size than the log's line above."""
    return f"{size} bytes ({human(size)})"

def main() -> int:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    try:
        result = slugbuild.compile_app(APP, OUT, cache_dir=CACHE)
    except slugbuild.SlugbuildError as error:
        print(error.render(), file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="slugbuild-demo-") as unpacked:
        with tarfile.open(result.slug_path) as tar:
            kwargs = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
            tar.extractall(unpacked, **kwargs)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        print(f"-----> Starting `web` from the slug unpacked in {unpacked} on 127.0.0.1:{port}")
        server = subprocess.Popen(
            [sys.executable, "-m", "slugbuild", "run", unpacked, "web", "--port", str(port)]
        )
        try:
            base = f"http://127.0.0.1:{port}"
            page = _get_when_up(base + "/", server)
            static_path = re.search(r'href="(/static/[^"]+\.css)"', page.text).group(1)
            static = _get_when_up(base + static_path, server)
            print(f"       GET /  -> {page.status_code} ({len(page.content)} bytes)")
            print(f"       GET {static_path}  -> {static.status_code} "
                  f"({len(static.content)} bytes)")
            ok = page.status_code == 200 and static.status_code == 200
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    print()
    print(f"slug:          {result.slug_path}")
    print(f"slug.json:     {result.metadata_path}")
    print(f"size:          {size_text(result.size)}")
    print(f"sha256:        {result.sha256}")
    print(f"python:        {result.runtime['resolved']} ({result.runtime['source_file']})")
    print("process types:")
    for name, command in result.process_types.items():
        print(f"  {name}: {command}")
    print(f"build time:    {result.timings['total']:.1f}s")
    return 0 if ok else 1


def _get_when_up(
    url: str, server: subprocess.Popen, timeout: float = 120, read_timeout: float = 30
) -> requests.Response:
    """GET `url` once the server answers, retrying refused and timed-out requests.

    A Django worker's first request (imports, template compilation) can take
    longer than a few seconds on a loaded machine, so a read timeout is a retry,
    not a traceback; only the overall deadline ends the wait, with one message.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("the web process exited before answering")
        try:
            return requests.get(url, timeout=(5, read_timeout))
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.2)
    raise SystemExit(f"no answer from {url} within {timeout:g}s")


if __name__ == "__main__":
    sys.exit(main())
