"""A CNCF Distribution registry on 127.0.0.1, for the benches that measure a fresh runner
(run.py's floors, paired_fresh.py): started on a free port, stopped on exit."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def loopback_registry(root: Path) -> Iterator[str | None]:
    """``docker://127.0.0.1:PORT`` of a registry storing under ``root`` (None, with a note,
    when `docker-registry` is not installed)."""
    if shutil.which("docker-registry") is None:
        print("(docker-registry not installed: no fresh-runner measure)")
        yield None
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = root / "registry.yml"
    config.write_text(f"version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: "
                      f"{{rootdirectory: {root / 'storage'}}}}}\nhttp: {{addr: "
                      f"'127.0.0.1:{port}'}}\n")
    server = subprocess.Popen(["docker-registry", "serve", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.1)
        yield f"docker://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait()
