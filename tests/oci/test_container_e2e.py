"""End to end: the Django fixture as an image on the mmdebstrap run image, pushed to a
loopback registry and run by podman and by Docker (the Makefile installs both).

One slug, one run image and one image are built for the module. podman's store and
dockerd's data root are kept per machine (helpers.machine_cache_entry, keyed by the
tool's version): a fresh store costs seconds to unpack the image into, a kept one
already has its layers, so a pull or load unpacks only what changed. Containers use
the host network on a free port, carry this session's label and are removed by it;
the session's image name is removed at the end, the image kept under a stable name
(older ones are pruned).
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
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from slugbuild import build_image, compile_app, errors
from slugbuild.log import Reporter

from ..helpers import (
    DJANGO_APP,
    RegistryServer,
    free_port,
    machine_cache_entry,
    machine_cache_key,
    run_cli,
)

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


def _version(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True).stdout.strip()


def _private_run_dir(name: str) -> Path:
    """A directory for a tool's run state, cleared when the machine restarts (/run), so
    a kept store is never trusted with state from before a restart."""
    run = Path(os.environ.get("XDG_RUNTIME_DIR") or "/run")
    base = run if os.access(run, os.W_OK) else Path(tempfile.gettempdir())
    directory = base / "slugbuild-tests" / name
    directory.mkdir(parents=True, exist_ok=True)
    return directory


class Podman:
    """podman with runc and the machine's rlimits (docs: oci-testing), on the store
    kept in ``store`` (its run state under /run, shared by every session using it, as
    podman's locks need), with this session's ``conf`` directory. Containers it runs
    carry ``SESSION_LABEL``."""

    def __init__(self, store: Path, conf: Path, session: str) -> None:
        hard_files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        hard_procs = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
        procs = pid_max if hard_procs == resource.RLIM_INFINITY else min(hard_procs, pid_max)
        files = 1048576 if hard_files == resource.RLIM_INFINITY else hard_files
        conf.mkdir(parents=True, exist_ok=True)
        self.conf = conf / "containers.conf"
        self.conf.write_text(
            "[containers]\n"
            f'default_ulimits = ["nofile={files}:{files}", "nproc={procs}:{procs}"]\n'
            "[engine]\n"
            'runtime = "runc"\n')
        state = _private_run_dir(f"p-{store.name[:12]}")  # podman: runroot < 50 chars
        self.base = ["podman", "--root", str(store / "storage"), "--runroot",
                     str(state / "run"), "--tmpdir", str(state / "tmp")]
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}
        self.session = session

    def __call__(self, *args: str, check: bool = True, timeout: float = 300
                 ) -> subprocess.CompletedProcess[str]:
        if args[:1] == ("run",):
            args = ("run", "--label", f"{SESSION_LABEL}={self.session}", *args[1:])
        done = subprocess.run([*self.base, *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed ({done.returncode}):\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done

    def clean_up(self, image: str) -> None:
        """Remove this session's containers; keep ``image``'s layers under KEPT_NAME
        (the image it replaces, and any other without a name, pruned)."""
        ours = self("ps", "-aq", "--filter", f"label={SESSION_LABEL}={self.session}",
                    check=False).stdout.split()
        if ours:
            self("rm", "--force", "--time", "0", *ours, check=False)
        if self("image", "exists", image, check=False).returncode == 0:
            self("tag", image, KEPT_NAME, check=False)
            self("untag", image, image, check=False)
        self("image", "prune", "--force", check=False)


# Containers this module runs are labelled with its session; the image it pulled is
# kept in podman's store under this name for the next session's pull.
SESSION_LABEL = "io.slugbuild.test-session"
KEPT_NAME = "localhost/slugbuild-tests/e2e-django:kept"


@pytest.fixture(scope="module")
def podman(tmp_path_factory, pushed) -> Iterator[Podman]:
    key = machine_cache_key(_version("podman", "--version"), _version("runc", "--version"))
    with machine_cache_entry("podman", key) as kept:
        tool = Podman(kept.path, tmp_path_factory.mktemp("podman"), uuid.uuid4().hex)
        yield tool
        tool.clean_up(pushed)


def _serves_django(base: str, deadline: float = 90) -> None:
    """``/`` and a hashed static file answer 200 (the server given time to start)."""
    end = time.monotonic() + deadline
    while True:
        try:
            page = requests.get(base + "/", timeout=5)
            break
        except (requests.ConnectionError, requests.Timeout):  # workers still booting
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
    """dockerd on a private socket and ``data_root``, without touching the host's
    networking (no bridge, no iptables: containers use the host network)."""

    def __init__(self, root: Path, data_root: Path) -> None:
        self.root = root
        self.data_root = data_root
        self.socket = root / "docker.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Dockerd:
        log = open(self.root / "dockerd.log", "ab")
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", str(self.data_root), "--exec-root",
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
        self("image", "prune", "--force", check=False)  # images a later load untagged
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        # dockerd leaves mounts under its data and exec roots (its own, by path).
        with open("/proc/self/mountinfo") as mounts:
            points = [line.split()[4] for line in mounts]
        for point in sorted((p for p in points
                             if p.startswith((str(self.root), str(self.data_root)))),
                            reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)


@pytest.fixture
def docker(tmp_path_factory) -> Iterator[Dockerd]:
    """dockerd on the data root kept for this machine (keyed by its version), when no
    other session runs one on it now; else on a data root of its own."""
    root = tmp_path_factory.mktemp("docker")
    with machine_cache_entry("docker", machine_cache_key(_version("dockerd", "--version"))
                             ) as kept, kept.alone() as alone:
        docker = Dockerd(root, kept.path / "data" if alone else root / "data").start()
        try:
            yield docker
        finally:
            docker.stop()


def test_docker_loads_and_runs_the_image_as_an_archive(heroku_slug, mmdebstrap_run_image,
                                                       cache_dir, docker, tmp_path):
    _, layout = mmdebstrap_run_image
    archive = tmp_path / "app.tar"
    build_image(heroku_slug.slug_path, f"docker-archive:{archive}:{REPOSITORY}:v1",
                run_image=f"oci:{layout}:run", cache_dir=cache_dir)
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
