"""`make bench`'s image figures: image build time and bytes pushed on a warm rebuild.

For one app and a warm cache: the slug compiled in the heroku layout, made into an
image pushed to a Distribution registry on 127.0.0.1 (cold push: every layer), then
one app file changed, compiled again and pushed again. Reported: the image step's
seconds on the cold and the warm push (warm: only the app layer is made), and the
blobs and bytes the warm push uploaded (the app layer and the config).
"""

from __future__ import annotations

import gzip
import io
import re
import socket
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import requests

import slugbuild
from slugbuild.log import Reporter
from slugbuild.oci.assemble import read_slug_metadata
from slugbuild.oci.image import LAYER_GZIP, Image, bytes_blob, sha256_of, write_layout
from slugbuild.oci.reference import parse_image_reference


def bench_image(app: Path, cache: Path, tmp_path: Path) -> dict[str, Any]:
    """Seconds and bytes of a cold and a warm image push (app copied, one file changed)."""
    with _registry(tmp_path / "registry") as host:
        slug = tmp_path / "image-slug.tgz"
        slugbuild.compile_app(app, slug, cache_dir=cache, layout="heroku",
                              reporter=Reporter(quiet=True))
        run_image = _run_image(tmp_path / "run-image", _needed_libraries(slug))
        target = f"docker://{host}/bench/{app.name.lower()}:v1"
        cold = slugbuild.build_image(slug, target, run_image=run_image, cache_dir=cache)
        changed_file = next(p for p in sorted(app.rglob("*.py")) if p.is_file())
        changed_file.write_text(changed_file.read_text() + "\n# changed for the bench\n")
        slugbuild.compile_app(app, slug, cache_dir=cache, layout="heroku",
                              reporter=Reporter(quiet=True))
        warm = slugbuild.build_image(slug, target.replace(":v1", ":v2"), run_image=run_image,
                                     cache_dir=cache)
    return {"cold_push_seconds": cold.seconds, "warm_push_seconds": warm.seconds,
            "warm_blobs_uploaded": warm.stats.blobs_uploaded,
            "warm_bytes_uploaded": warm.stats.bytes_uploaded,
            "image_bytes": sum(layer["size"] for layer in warm.layers)}


def _needed_libraries(slug: Path) -> dict[str, bytes]:
    """The host's copies of the shared libraries slug.json says the slug loads, at their
    paths: build_image refuses a run image that lacks them."""
    needed = set(read_slug_metadata(slug).get("stack_requirements", {}).get("needed", []))
    listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True,
                             check=True).stdout
    found: dict[str, bytes] = {}
    for line in listing.splitlines():
        match = re.match(r"\s*(\S+) \(([^)]*)\) => (\S+)", line)
        if match and match.group(1) in needed and "x86-64" in match.group(2):
            found.setdefault(match.group(3).lstrip("/"), Path(match.group(3)).read_bytes())
    # The loader's search path (Debian's multiarch directories are listed there).
    for config in [Path("/etc/ld.so.conf"), *sorted(Path("/etc/ld.so.conf.d").glob("*.conf"))]:
        if config.is_file():
            found[str(config).lstrip("/")] = config.read_bytes()
    return found


def _run_image(layout: Path, libraries: dict[str, bytes]) -> str:
    """A one-layer run image (an /etc/passwd and the libraries the slug loads): the bench
    measures the slug's layers."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        entries = {"etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n", **libraries}
        directories = sorted({"/".join(name.split("/")[:depth]) for name in entries
                              for depth in range(1, name.count("/") + 1)})
        for directory in directories:  # the check follows paths as the kernel would
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name in sorted(entries):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(entries[name]), 0o755
            tar.addfile(info, io.BytesIO(entries[name]))
    layer = bytes_blob(gzip.compress(raw.getvalue(), mtime=0), LAYER_GZIP,
                       sha256_of(raw.getvalue()))
    config = {"architecture": "amd64", "os": "linux", "config": {},
              "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}}
    reference = f"oci:{layout}:base"
    write_layout(Image(config, [layer]), parse_image_reference(reference))
    return reference


class _registry:
    """docker-registry on a free loopback port, stopped by its PID."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __enter__(self) -> str:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        config.write_text(f"version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: "
                          f"{{rootdirectory: {self.root / 'data'}}}}}\n"
                          f"http: {{addr: '127.0.0.1:{port}'}}\n")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
                return f"127.0.0.1:{port}"
            except requests.RequestException:
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("docker-registry did not start")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
