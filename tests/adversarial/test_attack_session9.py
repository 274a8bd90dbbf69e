"""Holes found by attacking slugbuild in sessions 8 and 9 (docs/security.md, "Attacked
in session 8/9"), redone after the first fixes were lost: each test failed before its
fix."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import io
import json
import os
import subprocess
import tarfile
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from slugbuild import compile_app, errors, layer_artifact, relocate
from slugbuild.buildpack_runner import exported_variables
from slugbuild.cache import Cache
from slugbuild.cache_registry import RegistryStore
from slugbuild.installers.built_wheels import BUILD_ENV_INPUT
from slugbuild.layer_artifact import ArtifactInvalid, Fetched, LayoutStore, materialise
from slugbuild.oci import registry as registry_module
from slugbuild.oci.assemble import (
    RUN_IMAGE_LAYERS,
    image_user,
    read_slug_metadata,
    rebase_image,
)
from slugbuild.oci.image import (
    LAYER_GZIP,
    LAYER_TAR,
    OCI_MANIFEST,
    Image,
    RegistryOptions,
    file_blob,
    read_image,
)
from slugbuild.oci.reference import parse_image_reference
from slugbuild.oci.referrer import SBOM_LIMIT, read_sbom
from slugbuild.oci.registry import BlobLimit
from slugbuild.proc import clean_env

from ..helpers import (
    cli,
    limited,
    local_interpreter,
    make_app,
    make_buildpack,
    minimal_wheel,
    seed_runtimes,
    serve_directory,
    serving,
    write_simple_index,
)
from . import fakes as hostile_store
from .fakes import client, fixed, server

# --- 1. a registry blob larger than its descriptor declares ---------------------------------

ENDLESS = 1 << 30  # what a lying registry would send for a blob: more than a test's disk


def _lying_blobs(sent: list[int], manifest: bytes | None = None
                 ) -> Callable[[http.server.BaseHTTPRequestHandler], None]:
    """A registry whose every blob is an endless stream (declared as such: no length),
    recording how many bytes it got out before the client hung up."""
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        if "/manifests/" in handler.path and manifest is not None:
            return fixed(200, manifest, {"Content-Type": OCI_MANIFEST})(handler)
        if "/blobs/" not in handler.path:
            return fixed(404, b"{}")(handler)
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(ENDLESS))
        handler.end_headers()
        chunk, written = b"\0" * (1 << 20), 0
        try:
            while written < ENDLESS:
                handler.wfile.write(chunk)
                written += len(chunk)
        except OSError:
            pass
        finally:
            sent.append(written)
    return answer


DIGEST = "sha256:" + hashlib.sha256(b"what the descriptor names").hexdigest()


def test_a_blob_past_its_declared_size_is_refused_as_it_arrives(tmp_path: Path) -> None:
    """pull_blob read whatever the registry sent into a file, and only compared
    digests at the end: an endless blob filled the disk."""
    sent: list[int] = []
    with serving(server(_lying_blobs(sent))) as made:
        with pytest.raises(errors.REGISTRY_DIGEST_MISMATCH.exception) as raised:
            client(made).pull_blob(DIGEST, tmp_path / "pulled" / "blob", size=25,
                                   limit=BlobLimit(1 << 20, "a test blob"))
    assert "more than 25 bytes" in raised.value.render()
    assert list((tmp_path / "pulled").iterdir()) == []
    assert sent and sent[0] < 64 << 20, f"{sent[0] >> 20} MiB taken for a 25-byte blob"


def test_a_blob_of_no_declared_size_stops_at_its_limit(tmp_path: Path) -> None:
    """An SBOM named by a label has no descriptor: its limit bounds it."""
    sent: list[int] = []
    with serving(server(_lying_blobs(sent))) as made:
        with pytest.raises(errors.REGISTRY_PROTOCOL.exception) as raised:
            client(made).pull_blob(DIGEST, tmp_path / "blob",
                                   limit=BlobLimit(2 << 20, "an SBOM"))
    assert "more than 2097152 bytes for an SBOM" in raised.value.render()
    assert not (tmp_path / "blob").exists() and list(tmp_path.iterdir()) == []
    assert sent and sent[0] < 64 << 20


def test_a_declared_size_over_the_limit_is_refused_before_any_download(tmp_path: Path
                                                                       ) -> None:
    sent: list[int] = []
    with serving(server(_lying_blobs(sent))) as made:
        with pytest.raises(errors.REGISTRY_PROTOCOL.exception) as raised:
            client(made).pull_blob(DIGEST, tmp_path / "blob", size=5 << 20,
                                   limit=BlobLimit(4 << 20, "an image config"))
    assert "declares more than 4194304 bytes for an image config" in raised.value.render()
    assert sent == []


def _image_manifest(config_size: int, layer_size: int) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": DIGEST, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": DIGEST, "size": layer_size}]}).encode()


@pytest.mark.parametrize("config_size", [100, 5 << 20])
def test_an_image_config_is_pulled_within_its_size_and_4_mib(tmp_path: Path,
                                                             config_size: int) -> None:
    """A run image's config (a few KiB) pulled from a lying registry: one registry
    error, nothing kept, the disk not filled."""
    sent: list[int] = []
    with serving(server(_lying_blobs(sent, _image_manifest(config_size, 10)))) as made:
        reference = parse_image_reference(f"docker://127.0.0.1:{made.server_address[1]}"
                                          f"/app:latest")
        with pytest.raises(errors.RegistryError):
            read_image(reference, blob_dir=tmp_path / "blobs")
    assert all(written < 64 << 20 for written in sent)
    assert not (tmp_path / "blobs").exists() or list((tmp_path / "blobs").iterdir()) == []


def test_an_image_layer_declared_beyond_the_unpacked_limit_is_not_pulled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [DIGEST]}}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = _image_manifest(len(config), 3 << 20).replace(DIGEST.encode(),
                                                               config_digest.encode(), 1)
    pulled: list[str] = []

    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        pulled.append(handler.path)
        if "/manifests/" in handler.path:
            return fixed(200, manifest, {"Content-Type": OCI_MANIFEST})(handler)
        return fixed(200, config)(handler)

    monkeypatch.setenv("SLUGBUILD_MAX_UNPACKED_SIZE", "2M")
    with serving(server(answer)) as made:
        reference = parse_image_reference(f"docker://127.0.0.1:{made.server_address[1]}"
                                          f"/app:latest")
        with pytest.raises(errors.REGISTRY_PROTOCOL.exception) as raised:
            read_image(reference, blob_dir=tmp_path / "blobs")
    assert "SLUGBUILD_MAX_UNPACKED_SIZE" in raised.value.render()
    assert not any(DIGEST.split(":")[1] in path for path in pulled)


def test_a_cache_registry_blob_past_its_size_is_an_invalid_entry(tmp_path: Path) -> None:
    """The cache registry's pull of a config or index blob: ArtifactInvalid (the build
    warns and goes on from scratch), after at most the declared bytes."""
    sent: list[int] = []
    with serving(server(_lying_blobs(sent))) as made:
        with pytest.raises(ArtifactInvalid):
            RegistryStore(client(made)).get_blob(DIGEST, 1000)
    assert sent and sent[0] < 64 << 20


# --- 2. a module nested deeper than marshal can load ------------------------------------------

DEEP_SOURCE = "f = " + "lambda: " * 1500 + "1\n"


@pytest.mark.parametrize("version", ["3.12", "3.13", "3.8"])
def test_code_marshal_cannot_load_gets_no_pyc_and_stays_out_of_the_store(
        tmp_path: Path, version: str) -> None:
    """1,500 nested lambdas compile, and the canonical writer wrote them as a ~20 MB
    pyc that no import can load, kept in the pyc store every app shares. Such a
    module gets no pyc (Python compiles it at import, as CPython itself does when
    marshal refuses it); its neighbours get theirs."""
    python = local_interpreter(version)
    package = make_app(tmp_path / "site", {"deep.py": DEEP_SOURCE, "plain.py": "X = 1\n"})
    store = tmp_path / "store"
    relocate.compile_bytecode(python, package, "/app/site", clean_env(), store=store)
    pycs = sorted(path.name.split(".")[0] for path in package.glob("__pycache__/*.pyc"))
    assert pycs == ["plain"]
    entries = [path for path in store.rglob("*") if path.is_file()]
    assert len(entries) == 1
    for entry in entries:  # what the store keeps, the interpreter loads
        subprocess.run([str(python), "-c", "import marshal, sys\n"
                        "marshal.loads(open(sys.argv[1], 'rb').read()[16:])", str(entry)],
                       check=True)
    if version == "3.8":
        return  # 3.8's own parser cannot take the module (a MemoryError at import)
    imported = subprocess.run([str(python), "-c", "import deep; print(deep.f.__name__)"],
                              cwd=package, capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "<lambda>"


# --- 3. an earlier buildpack's LD_PRELOAD in slugbuild's own steps --------------------------

HIJACK_C = r"""
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
/* Loaded into every process started with LD_PRELOAD: notes what that process is. */
__attribute__((constructor)) static void hijacked(void) {
    static char line[1 << 16];
    int fd = open("/proc/self/cmdline", O_RDONLY);
    if (fd < 0) return;
    ssize_t n = read(fd, line, sizeof line - 1);
    close(fd);
    if (n <= 0) return;
    for (ssize_t i = 0; i < n; i++) if (!line[i]) line[i] = ' ';
    line[n] = 0;
    FILE *log = fopen(LOG, "a");
    if (!log) return;
    fprintf(log, "%s\n", strstr(line, "canonical_marshal") ? "compile"
            : strstr(line, " install ") ? "install" : "other");
    fclose(log);
}
"""


def hijacking_library(directory: Path) -> tuple[Path, Path]:
    """A tiny LD_PRELOAD library (built with cc) and the log it appends to."""
    directory.mkdir(parents=True)
    log = directory / "hijack.log"
    (directory / "hijack.c").write_text(HIJACK_C)
    library = directory / "hijack.so"
    subprocess.run(["cc", "-shared", "-fPIC", f'-DLOG="{log}"', "-o", str(library),
                    str(directory / "hijack.c")], check=True)
    return library, log


def wheel_index(root: Path) -> Path:
    """A loopback index holding one pure-Python wheel (no build from source)."""
    write_simple_index(root, {"plainpkg": ("plainpkg-1.0-py3-none-any.whl",
                                           minimal_wheel("plainpkg", "1.0", "VALUE = 1\n"))})
    return root


def plain_app(root: Path) -> Path:
    return make_app(root, {"requirements.txt": "plainpkg==1.0\n", "app.py": "import plainpkg\n",
                           "Procfile": "web: python -m http.server $PORT\n",
                           ".python-version": "3.13\n"})


@pytest.mark.slow
def test_a_buildpacks_ld_preload_reaches_no_step_of_slugbuilds_own_nor_another_app(
        tmp_path: Path, runtime_seed: Path) -> None:
    """A buildpack exporting LD_PRELOAD ran its library inside slugbuild's compile of
    the dependency layer, whose pycs go to the store every app shares; and inside the
    install of a wheel-only layer, whose key left the exports out: another app with
    the same requirements restored what the library made of it. Now the layer records
    its build environment: another app installs its own, the same app (in a new build
    directory) reuses it."""
    library, log = hijacking_library(tmp_path / "hijack")
    exporter = make_buildpack(tmp_path / "exporter", (
        f'echo "export LD_PRELOAD={library}" > "$(dirname "$0")/../export"\n'))
    cache = seed_runtimes(runtime_seed, tmp_path / "cache", "3.13")

    def layers() -> dict[str, dict[str, object]]:
        return {path.parent.name: json.loads(path.read_text())["inputs"]
                for path in (cache / "layers").glob("*/manifest.json")}

    with serve_directory(wheel_index(tmp_path / "index")) as base:
        index = {"PIP_INDEX_URL": f"{base}/simple/"}
        compile_app(plain_app(tmp_path / "one"), tmp_path / "one.tgz", cache_dir=cache,
                    buildpacks=[str(exporter), "python"], env=index)
        seen = log.read_text().split()
        assert "install" in seen  # the library was exported and loaded: the test can fail
        assert "compile" not in seen
        (hijacked,) = layers().values()
        assert BUILD_ENV_INPUT in hijacked
        compile_app(plain_app(tmp_path / "two"), tmp_path / "two.tgz", cache_dir=cache,
                    env=index)
        assert len(layers()) == 2  # the other app's own layer, not the hijacked one
        assert log.read_text().split() == seen  # nothing of that app loaded the library
        before = layers()
        compile_app(plain_app(tmp_path / "three"), tmp_path / "three.tgz", cache_dir=cache,
                    buildpacks=[str(exporter), "python"], env=index)
        assert layers() == before  # the same exports share their layer


def _plainpkg_of(slug: Path) -> str:
    with tarfile.open(slug) as tar:
        (member,) = [m for m in tar.getmembers() if m.name.endswith("site-packages/plainpkg.py")]
        handle = tar.extractfile(member)
        assert handle is not None
        return handle.read().decode()


@pytest.mark.slow
def test_a_buildpacks_exported_uv_source_reaches_no_other_apps_layer(
        tmp_path: Path, runtime_seed: Path) -> None:
    """A buildpack exporting UV_FIND_LINKS (or UV_INDEX) points the install at its own
    wheels; the layer of wheels only was keyed without the exports, so another app
    with the same requirements restored app one's package."""
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "plainpkg-1.0-py3-none-any.whl").write_bytes(
        minimal_wheel("plainpkg", "1.0", "VALUE = 666\n"))
    exporter = make_buildpack(tmp_path / "exporter", (
        f'echo "export UV_FIND_LINKS={evil}" > "$(dirname "$0")/../export"\n'))
    cache = seed_runtimes(runtime_seed, tmp_path / "cache", "3.13")
    with serve_directory(wheel_index(tmp_path / "index")) as base:
        index = {"PIP_INDEX_URL": f"{base}/simple/"}
        compile_app(plain_app(tmp_path / "one"), tmp_path / "one.tgz", cache_dir=cache,
                    buildpacks=[str(exporter), "python"], env=index)
        assert "666" in _plainpkg_of(tmp_path / "one.tgz")  # the export reached uv
        compile_app(plain_app(tmp_path / "two"), tmp_path / "two.tgz", cache_dir=cache,
                    env=index)
    assert _plainpkg_of(tmp_path / "two.tgz") == "VALUE = 1\n"


def test_an_export_file_exports_only_what_it_sets(tmp_path: Path) -> None:
    """The shell sourcing a buildpack's `export` file carries the tool cookie slugbuild
    gives every tool run, a new value each run: it was taken for an export, so every
    build with an earlier buildpack had a build environment hash of its own (no layer
    built from source, nor one keyed by its exports, was ever reused)."""
    export = tmp_path / "export"
    export.write_text("export FOO=bar\n")
    assert exported_variables([export]) == {"FOO": "bar"}


# --- 4. an OCI layout directory whose metadata is no small regular file ----------------------

def _plant(path: Path, planted: str) -> None:
    """``path`` made a fifo, a link to /dev/zero or a sparse 1 GiB file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    if planted == "fifo":
        os.mkfifo(path)
    elif planted == "dev-zero":
        path.symlink_to("/dev/zero")
    else:
        with open(path, "wb") as handle:
            handle.write(b'{"manifests": [')
            handle.truncate(SPARSE)


PLANTED = ["fifo", "dev-zero", "sparse"]
SPARSE = 2 << 30  # more than a test process may hold (tracemalloc, RLIMIT_AS)


@contextlib.contextmanager
def memory_bounded(limit: int = 64 << 20) -> Iterator[None]:
    """Fail unless the block's Python allocations stay under ``limit`` at their peak."""
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, f"{peak >> 20} MiB held"


def _tiny_layout(root: Path, config_fields: dict[str, object] | None = None
                 ) -> tuple[str, str]:
    """An OCI layout of one image tagged latest (a config and no layers): the manifest's
    and the config's digests."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": []},
                         **(config_fields or {})}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": config_digest, "size": len(config)},
                           "layers": []}).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    (blobs / config_digest[7:]).write_bytes(config)
    (blobs / manifest_digest[7:]).write_bytes(manifest)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": len(manifest),
         "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
    return manifest_digest, config_digest


@pytest.mark.parametrize("planted", PLANTED)
@pytest.mark.parametrize("which", ["index.json", "manifest", "config"])
def test_an_image_layout_reads_only_small_regular_files(tmp_path: Path, planted: str,
                                                        which: str) -> None:
    """`--run-image oci:DIR`, `rebase`: a fifo as index.json, a manifest or a config
    blob hung the read; /dev/zero or a 2 GiB file filled memory."""
    root = tmp_path / "layout"
    digests = dict(zip(("manifest", "config"), _tiny_layout(root)))
    assert read_image(parse_image_reference(f"oci:{root}:latest"), blob_dir=tmp_path / "b")
    target = root / "index.json" if which == "index.json" \
        else root / "blobs" / "sha256" / digests[which][7:]
    _plant(target, planted)
    with memory_bounded(), pytest.raises(errors.IMAGE_UNREADABLE.exception):
        read_image(parse_image_reference(f"oci:{root}:latest"), blob_dir=tmp_path / "b")


@pytest.mark.parametrize("planted", PLANTED)
def test_an_sbom_blob_in_a_layout_is_read_only_as_a_small_regular_file(
        tmp_path: Path, planted: str) -> None:
    digest = "sha256:" + "ab" * 32
    _plant(tmp_path / "blobs" / "sha256" / digest[7:], planted)
    with memory_bounded(3 * SBOM_LIMIT.most):  # what it may hold: the SBOM's limit
        found = read_sbom(parse_image_reference(f"oci:{tmp_path}:latest"), digest,
                          tmp_path / "kept", RegistryOptions())
    assert found is None


def _cache_layout(root: Path, planted: str) -> Path:
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    _plant(root / "index.json", planted)
    return root


@pytest.mark.parametrize("planted", PLANTED)
def test_cache_import_reads_only_a_small_regular_index(tmp_path: Path, planted: str) -> None:
    """`slugbuild cache import DIR` read a 2 GiB index.json into memory: one catalogued
    error instead (under a 1 GiB address space)."""
    layout = _cache_layout(tmp_path / "layout", planted)
    (tmp_path / "cache" / "layers").mkdir(parents=True)
    result = limited(cli("cache", "import", layout, "--cache-dir", tmp_path / "cache"),
                     memory=1 << 30, timeout=120)
    assert result.returncode != 0
    assert "[cache-command-failed]" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("planted", PLANTED)
def test_cache_export_into_a_layout_reads_only_a_small_regular_index(
        tmp_path: Path, planted: str) -> None:
    """`slugbuild cache export DIR` into a layout whose index.json is a fifo hung at its
    first entry: the store refuses it (cache-command-failed for the command)."""
    store = LayoutStore(_cache_layout(tmp_path / "layout", planted), create=True)
    with memory_bounded():
        with pytest.raises(ArtifactInvalid):
            store.put_manifest("tag", b"{}")
        with pytest.raises(ArtifactInvalid):
            store.tags()


# --- found in session 9: a docker-archive that is no file, or holds oversized metadata ------

def test_a_docker_archive_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """`--run-image docker-archive:FIFO` (or `rebase`): tarfile opened the path for
    reading, which waits for a writer that never comes."""
    os.mkfifo(tmp_path / "image.tar")
    with pytest.raises(errors.IMAGE_UNREADABLE.exception, match="not a regular file"):
        read_image(parse_image_reference(f"docker-archive:{tmp_path / 'image.tar'}"),
                   blob_dir=tmp_path / "blobs")


@pytest.mark.parametrize("member", ["manifest.json", "config.json"])
def test_a_docker_archives_metadata_is_read_within_4_mib(tmp_path: Path, member: str) -> None:
    """manifest.json and the config were read whole: a 64 MiB member (a GiB one as
    easily) went into memory before it was found not to be JSON."""
    members = {"manifest.json": json.dumps([{"Config": "config.json", "RepoTags": ["app:v1"],
                                             "Layers": []}]).encode(),
               "config.json": json.dumps({"rootfs": {"diff_ids": []}}).encode()}
    members[member] = b" " * (64 << 20)
    archive = tmp_path / "image.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with memory_bounded(16 << 20), \
            pytest.raises(errors.IMAGE_UNREADABLE.exception, match="larger than"):
        read_image(parse_image_reference(f"docker-archive:{archive}:app:v1"),
                   blob_dir=tmp_path / "blobs")


# --- found in session 9: a pulled part's tar headers beyond what its index says ---------------

def _part_with(header: dict[str, object], content: bytes = b"#!/bin/sh\n") -> bytes:
    """A layer part of one file, bin/tool, whose tar header carries ``header``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("./bin/tool")
        info.size, info.mode = len(content), 0o755
        for field, value in header.items():
            setattr(info, field, value)
        tar.addfile(info, io.BytesIO(content))
        members_end = tar.offset
    return gzip.compress(raw.getvalue()[:members_end])


def _entry(part: bytes, index_mode: int, content: bytes = b"#!/bin/sh\n") -> Fetched:
    entry = hostile_store.fetched([("bin/tool", None, content)], ["bin"])
    entry.index["files"]["bin/tool"][1] = index_mode
    return Fetched(entry.config, entry.index, part)


HOSTILE_HEADERS = {
    "setuid": {"mode": 0o4755},
    "setgid": {"mode": 0o2755},
    "owner": {"uid": 1000, "gid": 1000},
    "owner-name": {"uname": "root"},
    "capability": {"pax_headers": {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}},
}


@pytest.mark.parametrize("how", ["part-only", "tree", "streamed"])
@pytest.mark.parametrize("header", sorted(HOSTILE_HEADERS))
def test_a_pulled_parts_headers_carry_nothing_its_index_does_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, header: str, how: str) -> None:
    """A registry entry's part is kept and shipped in slugs and image layers as it is:
    its tar headers' setuid bits, owners and pax xattrs (file capabilities) were never
    checked, so a cache registry could make another app's image hold a setuid-root
    program, or file capabilities, that tar or a container runtime honours as root."""
    if how == "streamed":  # the file-by-file path of a part too large for memory
        monkeypatch.setattr(layer_artifact, "IN_MEMORY_LIMIT", 0)
    cache = Cache(tmp_path / "cache")
    with pytest.raises(ArtifactInvalid, match="slug part"):
        materialise(cache, _entry(_part_with(HOSTILE_HEADERS[header]), 0o100755),
                    part_only=how == "part-only")
    assert hostile_store.layer_names(tmp_path / "cache") == []


@pytest.mark.parametrize("part_only", [True, False])
def test_a_setuid_mode_in_a_pulled_index_is_refused(tmp_path: Path, part_only: bool) -> None:
    """The index's mode is chmod'ed onto the file written in the cache: as root, a
    setuid-root program in a directory other users may read."""
    cache = Cache(tmp_path / "cache")
    with pytest.raises(ArtifactInvalid, match="setuid"):
        materialise(cache, _entry(_part_with({}), 0o104755), part_only=part_only)
    assert not [path for path in (tmp_path / "cache").rglob("*")
                if path.is_file() and path.stat().st_mode & 0o6000]


@pytest.mark.parametrize("part_only", [True, False])
def test_a_plain_pulled_part_is_still_taken(tmp_path: Path, part_only: bool) -> None:
    """What the checks above leave: slugbuild's own parts (0o644/0o755, owner 0, pax
    records only for long names) pass."""
    long_name = "bin/" + "t" * 150
    entry = hostile_store.fetched([("bin/tool", None, b"x"), (long_name, None, b"y")], ["bin"])
    assert materialise(Cache(tmp_path / "cache"), entry, part_only=part_only)


# --- found in session 9: a tag listing without end --------------------------------------------

@pytest.mark.parametrize("pages", ["loop", "endless"])
def test_a_tag_listing_without_end_is_one_registry_error(
        monkeypatch: pytest.MonkeyPatch, pages: str) -> None:
    """`cache import docker://…` lists the repository's tags page by page: a `next`
    link back to a page already read, or a new page after every page, looped for
    ever (the tags piling up in memory)."""
    monkeypatch.setattr(registry_module, "MAX_TAGS", 5000)
    served: list[str] = []

    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        served.append(handler.path)
        page = len(served) if pages == "endless" else 1
        tags = [f"tag-{page}-{number}" for number in range(1000)]
        fixed(200, json.dumps({"tags": tags}).encode(), {
            "Content-Type": "application/json",
            "Link": f'</v2/app/tags/list?n=1000&last=tag-{page}>; rel="next"'})(handler)

    with serving(server(answer)) as made:
        with pytest.raises(errors.REGISTRY_PROTOCOL.exception) as raised:
            client(made).list_tags()
    assert "loop" in raised.value.render()
    assert len(served) <= 7


# --- found in session 9: the slug.json beside a slug made into an image ----------------------

@pytest.mark.parametrize("planted", PLANTED)
def test_the_slug_json_of_an_image_source_is_read_only_as_a_small_regular_file(
        tmp_path: Path, planted: str) -> None:
    """`slugbuild image SLUG` reads SLUG's slug.json (the slug may come from elsewhere,
    a CI artifact): a fifo there hung the command, /dev/zero filled its memory."""
    slug = tmp_path / "app.tgz"
    slug.write_bytes(b"not read before its slug.json")
    _plant(tmp_path / "app.json", planted)
    with memory_bounded(), pytest.raises(errors.IMAGE_SOURCE_UNUSABLE.exception) as raised:
        read_slug_metadata(slug)
    assert "not a regular file of at most" in raised.value.render()


# --- found in session 9: a run image config of other shapes --------------------------------

@pytest.mark.parametrize("base_config", [
    {"config": {"Labels": ["not", "a", "mapping"]}},
    {"config": {"Env": [1, 2]}},
    {"config": {"Labels": {"number": 1}, "Env": "PATH=/x"}},
    {"history": 7},
])
def test_a_run_image_config_of_other_shapes_is_no_traceback(
        tmp_path: Path, base_config: dict[str, object]) -> None:
    """`rebase` (and `image`) merged the run image's `Labels`, `Env` and `history` as
    they came: a list of labels, numbers in `Env` or a number as history were a
    TypeError (an internal error). What is not of its shape is left out."""
    _tiny_layout(tmp_path / "app", {"config": {"Labels": {RUN_IMAGE_LAYERS: "0"}},
                                    "history": 5})
    _tiny_layout(tmp_path / "base", base_config)
    rebase_image(f"oci:{tmp_path / 'app'}:latest", f"oci:{tmp_path / 'base'}:latest",
                 output=f"oci:{tmp_path / 'out'}:latest", cache_dir=tmp_path / "cache")
    written = read_image(parse_image_reference(f"oci:{tmp_path / 'out'}:latest"),
                         blob_dir=tmp_path / "b")
    labels = written.config["config"]["Labels"]
    assert labels[RUN_IMAGE_LAYERS] == "0" and "number" not in labels
    assert all(isinstance(item, str) for item in written.config["config"]["Env"])


@pytest.mark.parametrize("layer", [b"not a tar at all", b"\x1f\x8b\x08\x00broken gzip"])
def test_a_run_image_layer_that_is_no_tar_is_image_unreadable(tmp_path: Path,
                                                              layer: bytes) -> None:
    """A run image naming its user (`User: web`) has its /etc/passwd read from its
    layers: a layer whose digest matched but whose bytes are no tar was a ReadError,
    EOFError or BadGzipFile traceback."""
    path = tmp_path / "layer"
    path.write_bytes(layer)
    kind = LAYER_GZIP if layer.startswith(b"\x1f\x8b") else LAYER_TAR
    base = Image({"config": {"User": "web"}},
                 [file_blob(path, kind, "sha256:" + "a" * 64, origin="oci:run")])
    with pytest.raises(errors.IMAGE_UNREADABLE.exception, match="not a readable tar"):
        image_user(base)
