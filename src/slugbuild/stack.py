"""``slugbuild stack build``: a minimal, reproducible run image made with mmdebstrap.

Docker Hub is not reachable everywhere, and some teams do not take base images
from it. A run image for slugs needs little: Debian's essential set (which has
glibc, zlib, liblzma, libbz2, libuuid, libcrypt, libtinfo, bash and coreutils),
the libraries a slug's runtime links to that it does not ship (``RUN_PACKAGES``:
OpenSSL, SQLite, libffi, ncurses, readline, libnsl, libtirpc), CA certificates,
time zones, ``/etc/services``, and a non-root user ``app`` (uid and gid 1000,
HOME ``/app``). mmdebstrap makes exactly that from the distribution's own
packages and mirrors (those in /etc/apt/sources.list and sources.list.d, or
``--mirror``), with ``SOURCE_DATE_EPOCH`` set so the same mirror state gives the
same bytes; it is packaged as a one-layer OCI image.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from . import errors
from .log import Reporter
from .oci.reference import parse_image_reference
from .pack import source_date_epoch

SUITE = "bookworm"
# Beyond Debian's essential set: what a slug built here loads from the machine
# (docs/images.md, "Run images"), and the data files every app expects.
RUN_PACKAGES = ("libssl3", "libsqlite3-0", "libffi8", "libncursesw6", "libreadline8",
                "libnsl2", "libtirpc3", "ca-certificates", "tzdata", "netbase")
APP_UID = 1000
APP_HOME = "/app"
# Leaves documentation, manuals and translations out (about 20 MB).
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*",
                 "/usr/share/locale/*", "/usr/share/lintian/*")
MERGED_USR_HOOKS = Path("/usr/share/mmdebstrap/hooks/merged-usr")
SOURCES_FILES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
# Changes whenever the same recipe would give other bytes.
RECIPE_FORMAT = 1
LABEL = "io.slugbuild.run-image"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class RunImageRecipe:
    """Everything the run image's bytes depend on (but the mirror's state)."""

    suite: str = SUITE
    packages: tuple[str, ...] = RUN_PACKAGES
    architecture: str = ""
    sources: str = ""  # one-line apt sources, as given to mmdebstrap
    epoch: int = 0
    extra_packages: tuple[str, ...] = field(default=())

    def key(self) -> str:
        """A digest of the recipe: where a built image is kept for reuse."""
        document = json.dumps([RECIPE_FORMAT, self.suite, self.packages, self.architecture,
                               self.sources, self.epoch, self.extra_packages])
        return hashlib.sha256(document.encode()).hexdigest()[:24]

    @property
    def all_packages(self) -> list[str]:
        return list(dict.fromkeys([*self.packages, *self.extra_packages]))


def host_architecture() -> str:
    """The Debian architecture of this machine (``dpkg --print-architecture``)."""
    dpkg = shutil.which("dpkg")
    if dpkg is not None:
        done = subprocess.run([dpkg, "--print-architecture"], capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


def default_recipe(suite: str = SUITE, mirror: str | None = None,
                   extra_packages: Sequence[str] = (), epoch: int | None = None
                   ) -> RunImageRecipe:
    """The recipe for this machine: its architecture, its apt sources for ``suite``
    (or ``mirror``), SOURCE_DATE_EPOCH (or slugbuild's default epoch)."""
    if mirror is not None:
        sources = f"deb {mirror} {suite} main\n"
    else:
        sources = apt_sources(suite)
        if not sources:
            raise errors.RUN_IMAGE_BUILD_FAILED.error(
                variant="no-mirror", sources=" and ".join(map(str, SOURCES_FILES)), suite=suite)
    return RunImageRecipe(suite, RUN_PACKAGES, host_architecture(), sources,
                          source_date_epoch(epoch), tuple(extra_packages))


def apt_sources(suite: str, files: Sequence[Path] | None = None) -> str:
    """The ``deb`` entries of this machine's apt sources for ``suite`` and its
    ``-updates``/``-security`` companions, as one-line entries (deb822 ``.sources``
    stanzas converted), in the order apt reads them."""
    lines: list[str] = []
    paths: list[Path] = []
    for path in SOURCES_FILES if files is None else files:
        if path.is_dir():
            paths += sorted(p for p in path.iterdir() if p.suffix in (".list", ".sources"))
        elif path.is_file():
            paths.append(path)
    wanted = re.compile(rf"{re.escape(suite)}(-[a-z]+|/updates)?")
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        entries = _deb822_entries(text) if path.suffix == ".sources" else _one_line_entries(text)
        for options, uri, entry_suite, components in entries:
            if wanted.fullmatch(entry_suite):
                prefix = f"[{options}] " if options else ""
                lines.append(f"deb {prefix}{uri} {entry_suite} {components}".rstrip())
    return "".join(line + "\n" for line in dict.fromkeys(lines))


def _one_line_entries(text: str) -> list[tuple[str, str, str, str]]:
    entries = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        match = re.match(r"deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
        if match:
            entries.append((match.group(1) or "", match.group(2), match.group(3),
                            match.group(4).strip()))
    return entries


def _deb822_entries(text: str) -> list[tuple[str, str, str, str]]:
    entries = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            name, value = line.split(":", 1)
            fields[name.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or \
                fields.get("enabled", "yes").lower() == "no":
            continue
        options = f"signed-by={fields['signed-by']}" if "signed-by" in fields \
            and "\n" not in fields["signed-by"] and fields["signed-by"].startswith("/") else ""
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                entries.append((options, uri, suite, fields.get("components", "")))
    return entries


def mmdebstrap_command(recipe: RunImageRecipe, sources_file: Path, output: Path) -> list[str]:
    """The mmdebstrap call that writes the run image's root file system as a tar."""
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise errors.RUN_IMAGE_BUILD_FAILED.error(variant="no-mmdebstrap")
    user = (f'echo "app:x:{APP_UID}:{APP_UID}:app:{APP_HOME}:/bin/bash" >> "$1/etc/passwd" && '
            f'echo "app:x:{APP_UID}:" >> "$1/etc/group" && '
            f'mkdir -p "$1{APP_HOME}" && chown {APP_UID}:{APP_UID} "$1{APP_HOME}" && '
            f'chmod 0755 "$1{APP_HOME}"')
    command = [mmdebstrap, "--quiet", "--format=tar", "--variant=essential",
               f"--architectures={recipe.architecture}",
               "--include=" + ",".join(recipe.all_packages)]
    if MERGED_USR_HOOKS.is_dir():  # otherwise ~46 MB of perl comes in (bookworm)
        command.append(f"--hook-dir={MERGED_USR_HOOKS}")
    command += [f"--dpkgopt=path-exclude={pattern}" for pattern in DPKG_EXCLUDES]
    command += [f"--customize-hook={user}", recipe.suite, str(output), str(sources_file)]
    return command


@dataclass(frozen=True)
class RunImage:
    """A run image written to ``reference``: its one layer and its manifest digest."""

    reference: str
    manifest_digest: str
    layer_digest: str
    layer_size: int
    recipe_key: str
    reused: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "manifest_digest": self.manifest_digest,
                "layer_digest": self.layer_digest, "layer_size": self.layer_size,
                "recipe": self.recipe_key, "reused": self.reused}


@dataclass(frozen=True)
class _Layer:
    path: Path  # the gzipped tar
    digest: str  # sha256:… of the gzipped bytes
    diff_id: str  # sha256:… of the tar
    size: int


def build_rootfs_layer(recipe: RunImageRecipe, directory: Path,
                       reporter: Reporter | None = None) -> _Layer:
    """Run mmdebstrap and compress its tar into ``directory/layer.tar.gz`` (reused
    when an earlier build of the same recipe left it there)."""
    directory.mkdir(parents=True, exist_ok=True)
    layer, record = directory / "layer.tar.gz", directory / "layer.json"
    if layer.is_file() and record.is_file():
        try:
            kept = json.loads(record.read_text())
            if kept.get("size") == layer.stat().st_size:
                return _Layer(layer, kept["digest"], kept["diff_id"], kept["size"])
        except (OSError, ValueError, KeyError):
            pass
    with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as scratch:
        sources = Path(scratch) / "sources.list"
        sources.write_text(recipe.sources)
        rootfs = Path(scratch) / "rootfs.tar"
        command = mmdebstrap_command(recipe, sources, rootfs)
        if reporter is not None:
            reporter.step(f"Building the run image with mmdebstrap ({recipe.suite}, "
                          f"{recipe.architecture}, {len(recipe.all_packages)} packages "
                          "beyond the essential set)...")
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(recipe.epoch), "LC_ALL": "C.UTF-8"}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise errors.RUN_IMAGE_BUILD_FAILED.error(
                output=tail, command=" ".join(command[:4]) + " …", exit_code=done.returncode,
                sources=", ".join(map(str, SOURCES_FILES)))
        partial = Path(scratch) / "layer.tar.gz"
        diff_id, digest, size = _compress(rootfs, partial)
        os.replace(partial, layer)
    record.write_text(json.dumps({"digest": digest, "diff_id": diff_id, "size": size}) + "\n")
    return _Layer(layer, digest, diff_id, size)


def _compress(source: Path, target: Path) -> tuple[str, str, int]:
    """gzip ``source`` into ``target`` reproducibly (no name, no time): its diff_id,
    digest and size."""
    raw = hashlib.sha256()
    with open(source, "rb") as reader, open(target, "wb") as out:
        hashing = _HashingFile(out)
        with gzip.GzipFile(filename="", mode="wb", fileobj=hashing,
                           mtime=0, compresslevel=6) as packed:
            for chunk in iter(lambda: reader.read(_CHUNK), b""):
                raw.update(chunk)
                packed.write(chunk)
    return f"sha256:{raw.hexdigest()}", f"sha256:{hashing.digest.hexdigest()}", hashing.size


class _HashingFile:
    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.target.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.target.flush()


def image_config(recipe: RunImageRecipe, layer: _Layer) -> dict[str, Any]:
    """The run image's OCI config: the ``app`` user, /app, the recipe in labels."""
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(recipe.epoch))
    return {
        "created": created,
        "architecture": _oci_architecture(recipe.architecture),
        "os": "linux",
        "config": {
            "User": f"{APP_UID}:{APP_UID}",
            "WorkingDir": APP_HOME,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    f"HOME={APP_HOME}"],
            "Labels": {
                f"{LABEL}.recipe": recipe.key(),
                f"{LABEL}.suite": recipe.suite,
                f"{LABEL}.packages": ",".join(recipe.all_packages),
                "org.opencontainers.image.description":
                    f"slugbuild run image: Debian {recipe.suite} (essential) + "
                    + " ".join(recipe.all_packages),
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        "history": [{"created": created,
                     "created_by": f"mmdebstrap --variant=essential {recipe.suite} "
                                   f"(slugbuild stack build, recipe {recipe.key()})"}],
    }


def _oci_architecture(debian: str) -> str:
    """Debian's architecture names as OCI's (GOARCH) spell them."""
    return {"i386": "386", "armhf": "arm", "armel": "arm", "ppc64el": "ppc64le"}.get(
        debian, debian)


def build_run_image(output: str, *, recipe: RunImageRecipe | None = None,
                    keep_dir: Path | None = None, reporter: Reporter | None = None
                    ) -> RunImage:
    """Build the run image and write it to ``output`` (``oci:DIR[:TAG]`` or
    ``docker-archive:FILE[:NAME:TAG]``). With ``keep_dir``, the layer made for a
    recipe is kept there and reused by the next build of the same recipe (tests; a
    user who wants this week's security updates builds without it)."""
    recipe = recipe or default_recipe()
    target = parse_output(output)
    reused = False
    if keep_dir is not None:
        directory = keep_dir / recipe.key()
        reused = (directory / "layer.json").is_file()
        layer = build_rootfs_layer(recipe, directory, reporter)
        return _written(target, recipe, layer, reused)
    with tempfile.TemporaryDirectory(prefix="slugbuild-stack-") as scratch:
        layer = build_rootfs_layer(recipe, Path(scratch), reporter)
        return _written(target, recipe, layer, reused)


def _written(target: tuple[str, Path, str], recipe: RunImageRecipe, layer: _Layer,
             reused: bool) -> RunImage:
    config = image_config(recipe, layer)
    digest = write_one_layer_image(target, config, layer)
    transport, path, tag = target
    return RunImage(f"{transport}:{path}:{tag}", digest, layer.digest, layer.size,
                    recipe.key(), reused)


def parse_output(output: str) -> tuple[str, Path, str]:
    """(transport, path, tag) of ``oci:DIR[:TAG]`` or ``docker-archive:FILE[:NAME:TAG]``
    (the tag of an archive is NAME:TAG, ``slugbuild/run:latest`` by default), parsed
    as every image reference is (``oci.reference``)."""
    reference = parse_image_reference(output)
    if reference.path is None:  # a registry: the image goes to a file first
        raise errors.RUN_IMAGE_BUILD_FAILED.error(variant="bad-output", reference=output)
    if reference.transport == "oci":
        return "oci", reference.path, reference.tag or "latest"
    name = f"{reference.repository}:{reference.tag}" if reference.repository \
        else "slugbuild/run:latest"
    return "docker-archive", reference.path, name


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def write_one_layer_image(target: tuple[str, Path, str], config: dict[str, Any],
                          layer: _Layer) -> str:
    """Write the image; return its manifest digest. Written under a temporary name
    and renamed (an archive) or index.json written last (a layout)."""
    config_bytes = _canonical(config)
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    manifest = _canonical({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": layer.digest,
                    "size": layer.size}],
    })
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    transport, path, tag = target
    if transport == "oci":
        _write_layout(path, tag, {config_digest: config_bytes, manifest_digest: manifest},
                      layer, manifest_digest, len(manifest))
    else:
        _write_archive(path, tag, config_bytes, config_digest, layer)
    return manifest_digest


def _write_layout(root: Path, tag: str, blobs: dict[str, bytes], layer: _Layer,
                  manifest_digest: str, manifest_size: int) -> None:
    blob_dir = root / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    layer_blob = blob_dir / layer.digest.split(":", 1)[1]
    if not layer_blob.is_file() or layer_blob.stat().st_size != layer.size:
        partial = layer_blob.with_name(layer_blob.name + ".partial")
        shutil.copyfile(layer.path, partial)
        os.replace(partial, layer_blob)
    for digest, data in blobs.items():
        (blob_dir / digest.split(":", 1)[1]).write_bytes(data)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index_path = root / "index.json"
    index: dict[str, Any] = {"schemaVersion": 2, "manifests": []}
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text())
        except (ValueError, RecursionError):
            pass
    manifests = [m for m in index.get("manifests", []) if isinstance(m, dict) and
                 (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") != tag]
    manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "digest": manifest_digest, "size": manifest_size,
                      "annotations": {"org.opencontainers.image.ref.name": tag}})
    partial_index = index_path.with_name(".index.json.partial")
    partial_index.write_bytes(_canonical({"schemaVersion": 2, "manifests": manifests}))
    os.replace(partial_index, index_path)


def _write_archive(path: Path, tag: str, config_bytes: bytes, config_digest: str,
                   layer: _Layer) -> None:
    """A docker-archive (what ``docker load`` reads): the layer uncompressed, as
    Docker 20.10 writes them."""
    hex_id = config_digest.split(":", 1)[1]
    layer_name = f"{layer.diff_id.split(':', 1)[1]}/layer.tar"
    repo_tags = [tag if ":" in tag.rsplit("/", 1)[-1] else f"{tag}:latest"]
    manifest = _canonical([{"Config": f"{hex_id}.json", "RepoTags": repo_tags,
                            "Layers": [layer_name]}])
    partial = path.with_name(f".{path.name}.partial")
    try:
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as archive:
            def add(name: str, data: IO[bytes], size: int) -> None:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = size, 0, 0o644
                archive.addfile(info, data)

            add(f"{hex_id}.json", io.BytesIO(config_bytes), len(config_bytes))
            with gzip.open(layer.path, "rb") as unpacked:
                size = sum(len(chunk) for chunk in iter(lambda: unpacked.read(_CHUNK), b""))
            with gzip.open(layer.path, "rb") as unpacked:
                add(layer_name, unpacked, size)  # type: ignore[arg-type]
            add("manifest.json", io.BytesIO(manifest), len(manifest))
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()


def stack_command(args: argparse.Namespace, reporter: Reporter) -> int:
    """``slugbuild stack build``: the run image written to ``--output``."""
    recipe = default_recipe(args.suite, args.mirror, args.include)
    built = build_run_image(args.output, recipe=recipe, reporter=reporter)
    reporter.step(f"Run image written to {built.reference} ({built.manifest_digest}, "
                  f"layer {built.layer_size / 1e6:.1f} MB)")
    if args.json:
        print(json.dumps(built.as_dict(), indent=2))
    return 0
