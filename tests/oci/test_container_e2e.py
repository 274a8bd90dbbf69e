"""End to end: the Django fixture as an image on the mmdebstrap run image, pushed to a
loopback registry and run by podman and by Docker (the Makefile installs both).

One slug, one run image and one image are built for the module; podman keeps one
store for it under tmp (a fresh store costs seconds to unpack into). Containers use
the host network on a free port and are removed by id.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import resource
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from slugbuild import build_image, compile_app, errors
from slugbuild.log import Reporter

from ..helpers import DJANGO_APP, RegistryServer, free_port, run_cli

pytestmark = pytest.mark.slow

REPOSITORY = "e2e/django"


@pytest.fixture(scope="module")
def heroku_slug(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("e2e-slug") / "django.tgz"
    return compile_app(DJANGO_APP, out, cache_dir=cache_dir, layout="heroku",
                       reporter=Reporter(quiet=True))


@pytest.fixture(scope="module")
def own_registry(tmp_path_factory) -> Iterator[RegistryServer]:
    """A registry of this module's own: its pushes (the runtime layer other slugs share)
    must not change what the session registry's upload counts say to other modules."""
    with RegistryServer(tmp_path_factory.mktemp("e2e-registry")) as server:
        yield server


@pytest.fixture(scope="module")
def pushed(heroku_slug, mmdebstrap_run_image, own_registry, cache_dir) -> str:
    """The image in the loopback registry; its reference as podman names it."""
    _, layout = mmdebstrap_run_image
    build_image(heroku_slug.slug_path, f"docker://{own_registry.host}/{REPOSITORY}:v1",
                run_image=f"oci:{layout}:run", cache_dir=cache_dir)
    return f"{own_registry.host}/{REPOSITORY}:v1"


class Podman:
    """podman with runc and the machine's rlimits (docs: oci-testing), its own store."""

    def __init__(self, root: Path) -> None:
        hard_files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        hard_procs = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
        procs = pid_max if hard_procs == resource.RLIM_INFINITY else min(hard_procs, pid_max)
        files = 1048576 if hard_files == resource.RLIM_INFINITY else hard_files
        root.mkdir(parents=True, exist_ok=True)
        self.conf = root / "containers.conf"
        self.conf.write_text(
            "[containers]\n"
            f'default_ulimits = ["nofile={files}:{files}", "nproc={procs}:{procs}"]\n'
            "[engine]\n"
            'runtime = "runc"\n')
        self.base = ["podman", "--root", str(root / "storage"), "--runroot", str(root / "run"),
                     "--tmpdir", str(root / "tmp")]
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    def __call__(self, *args: str, check: bool = True, timeout: float = 300
                 ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*self.base, *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed ({done.returncode}):\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done


@pytest.fixture(scope="module")
def podman(tmp_path_factory) -> Iterator[Podman]:
    tool = Podman(tmp_path_factory.mktemp("podman"))
    yield tool
    tool("rm", "--all", "--force", "--time", "0", check=False)


def _serves_django(base: str, deadline: float = 90) -> None:
    """``/`` and a hashed static file answer 200 (the server given time to start)."""
    end = time.monotonic() + deadline
    while True:
        try:
            page = requests.get(base + "/", timeout=5)
            break
        except requests.ConnectionError:
            if time.monotonic() > end:
                raise
            time.sleep(0.5)
    assert page.status_code == 200, page.text[:500]
    css = re.search(r'href="(/static/polls/style\.[0-9a-f]{12}\.css)"', page.text)
    assert css, page.text[:500]
    static = requests.get(base + css.group(1), timeout=10)
    assert static.status_code == 200
    assert "immutable" in static.headers.get("Cache-Control", "")


def test_podman_runs_the_pushed_image_from_the_registry(pushed, podman):
    podman("pull", "--tls-verify=false", pushed)
    port = free_port()
    started = podman("run", "-d", "--network=host", "-e", f"PORT={port}", pushed)
    container = started.stdout.strip().splitlines()[-1]
    try:
        _serves_django(f"http://127.0.0.1:{port}")
    except BaseException:
        print(podman("logs", container, check=False).stderr)
        raise
    finally:
        podman("rm", "--force", "--time", "0", container, check=False)


def test_podman_runs_a_one_off_through_the_launcher_as_the_app_user(pushed, podman):
    podman("pull", "--tls-verify=false", pushed)
    check = podman("run", "--rm", "--network=none", pushed, "--", "python", "manage.py",
                   "check")
    assert "System check identified no issues" in check.stdout + check.stderr
    who = podman("run", "--rm", "--network=none", pushed, "--",
                 "sh -c 'id -u; echo $HOME; touch $HOME/written && echo writable'")
    assert who.stdout.split() == ["1000", "/app", "writable"]


def test_a_run_image_without_libsqlite3_is_refused(heroku_slug, mmdebstrap_run_image,
                                                   tmp_path):
    """The mmdebstrap image with a layer on top that deletes libsqlite3 (whiteouts):
    `slugbuild image` names the library and writes nothing."""
    from slugbuild.oci.image import LAYER_GZIP, Image, bytes_blob, read_image, write_image
    from slugbuild.oci.reference import parse_image_reference

    _, layout = mmdebstrap_run_image
    base = read_image(parse_image_reference(f"oci:{layout}:run"), blob_dir=tmp_path / "b")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in ("libsqlite3.so.0", "libsqlite3.so.0.8.6"):
            info = tarfile.TarInfo(f"usr/lib/x86_64-linux-gnu/.wh.{name}")
            tar.addfile(info, io.BytesIO(b""))
    raw = buffer.getvalue()
    layer = bytes_blob(gzip.compress(raw, mtime=0), LAYER_GZIP,
                       "sha256:" + hashlib.sha256(raw).hexdigest())
    config = json.loads(json.dumps(base.config))
    config["rootfs"]["diff_ids"].append(layer.diff_id)
    config["history"].append({"created_by": "remove libsqlite3"})
    write_image(Image(config, [*base.layers, layer]),
                parse_image_reference(f"oci:{tmp_path / 'nosqlite'}:run"), 0)

    out = tmp_path / "out"
    refused = run_cli("image", str(heroku_slug.slug_path), "--image", f"oci:{out}:app",
                      "--run-image", f"oci:{tmp_path / 'nosqlite'}:run")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "[run-image-incompatible]" in refused.stderr and "libsqlite3.so.0" in refused.stderr
    assert "libsqlite3-0" in refused.stderr  # the Debian package to add
    assert "Traceback" not in refused.stderr and not out.exists()

    # A slug.json from before stack_requirements: the needs are read from the slug.
    from slugbuild.slug.metadata import metadata_path_for

    old = tmp_path / "old" / "django.tgz"
    old.parent.mkdir()
    shutil.copyfile(heroku_slug.slug_path, old)
    metadata = json.loads(heroku_slug.metadata_path.read_text())
    del metadata["stack_requirements"]
    metadata_path_for(old).write_text(json.dumps(metadata))
    with pytest.raises(errors.RUN_IMAGE_INCOMPATIBLE.exception) as missing:
        build_image(old, f"oci:{out}:app", run_image=f"oci:{tmp_path / 'nosqlite'}:run",
                    cache_dir=tmp_path / "c")
    assert "libsqlite3.so.0" in missing.value.found and not out.exists()

    config["architecture"] = "arm64"  # the same files, claimed for another machine
    config["rootfs"]["diff_ids"].pop()
    write_image(Image(config, base.layers),
                parse_image_reference(f"oci:{tmp_path / 'arm'}:run"), 0)
    with pytest.raises(errors.RUN_IMAGE_INCOMPATIBLE.exception) as raised:
        build_image(heroku_slug.slug_path, f"oci:{out}:app",
                    run_image=f"oci:{tmp_path / 'arm'}:run", cache_dir=tmp_path / "c")
    assert raised.value.fields["variant"] == "architecture"


class Dockerd:
    """dockerd on a private socket and data root, without touching the host's
    networking (no bridge, no iptables: containers use the host network)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Dockerd:
        log = open(self.root / "dockerd.log", "ab")
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", str(self.root / "data"), "--exec-root",
             str(self.root / "exec"), "-H", f"unix://{self.socket}", "--pidfile",
             str(self.root / "dockerd.pid"), "--bridge=none", "--iptables=false",
             "--ip6tables=false"], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while self("info", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("dockerd did not start:\n"
                                     + (self.root / "dockerd.log").read_text()[-3000:])
            time.sleep(0.3)
        return self

    def __call__(self, *args: str, check: bool = True, timeout: float = 300
                 ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["docker", "-H", f"unix://{self.socket}", *args],
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done

    def stop(self) -> None:
        if self.proc is None:
            return
        self("rm", "--force", *self("ps", "-aq", check=False).stdout.split(), check=False)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        # dockerd leaves mounts under its data root (its own, by path).
        with open("/proc/self/mountinfo") as mounts:
            points = [line.split()[4] for line in mounts]
        for point in sorted((p for p in points if p.startswith(str(self.root))), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)


def test_docker_loads_and_runs_the_image_as_an_archive(heroku_slug, mmdebstrap_run_image,
                                                       cache_dir, tmp_path_factory):
    _, layout = mmdebstrap_run_image
    root = tmp_path_factory.mktemp("docker")
    archive = root / "app.tar"
    build_image(heroku_slug.slug_path, f"docker-archive:{archive}:{REPOSITORY}:v1",
                run_image=f"oci:{layout}:run", cache_dir=cache_dir)
    docker = Dockerd(root).start()
    try:
        docker("load", "-i", str(archive))
        port = free_port()
        container = docker("run", "-d", "--network=host", "-e", f"PORT={port}",
                           f"{REPOSITORY}:v1").stdout.strip()
        try:
            _serves_django(f"http://127.0.0.1:{port}")
        except BaseException:
            print(docker("logs", container, check=False).stderr)
            raise
        check = docker("run", "--rm", "--network=none", f"{REPOSITORY}:v1", "--",
                       "python", "manage.py", "check")
        assert "System check identified no issues" in check.stdout + check.stderr
    finally:
        docker.stop()
