"""The slug's SBOM attached to its image as an OCI 1.1 referrer.

A referrer is an artifact manifest whose ``subject`` is the image's manifest:
registries list it under ``GET /v2/<repo>/referrers/<digest>``, so a deployer or
scanner finds the SBOM without pulling the image. A registry that does not
answer the referrers API (no ``OCI-Subject`` header on the push, as Debian's
docker-registry 2.8) gets the OCI 1.1 fallback: an index tagged
``sha256-<image digest hex>`` listing the referrers. In an OCI layout the
artifact is listed in ``index.json`` (untagged); a docker-archive has no place
for it (the image's ``io.slugbuild.sbom.digest`` label still names it).
docs/images.md describes it.
"""

from __future__ import annotations

import functools
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import errors
from ..textfiles import small_regular_file
from . import image as oci
from .options import RegistryOptions
from .reference import ImageReference
from .registry import BlobLimit, TransferStats

SBOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
SBOM_TITLE = "slug.cdx.json"
TITLE = "org.opencontainers.image.title"
# An SBOM pulled by the digest a label names (no descriptor declares its size): a slug's
# is well under a MiB, and a larger one is no SBOM slugbuild wrote.
SBOM_LIMIT = BlobLimit(64 * 1024 * 1024, "an SBOM")


@dataclass
class SbomReferrer:
    """Where the image's SBOM went: its digest, the artifact manifest naming the image,
    how it is found (``referrers`` API, ``tag`` fallback, ``index.json`` of a layout,
    or ``label`` only), and what attaching it moved."""

    sbom_digest: str
    manifest_digest: str | None
    found_by: str
    stats: TransferStats = field(default_factory=TransferStats)

    def as_dict(self) -> dict[str, Any]:
        return {"digest": self.sbom_digest, "referrer": self.manifest_digest,
                "found_by": self.found_by, "blobs_uploaded": self.stats.blobs_uploaded,
                "bytes_uploaded": self.stats.bytes_uploaded}


def fallback_tag(subject_digest: str) -> str:
    """The OCI 1.1 referrers tag schema: ``sha256:abc…`` -> ``sha256-abc…``."""
    return subject_digest.replace(":", "-", 1)


def artifact_manifest(sbom: bytes, subject_digest: str, subject_size: int,
                      created: str) -> bytes:
    """The artifact manifest of ``sbom`` referring to the image manifest ``subject``
    (deterministic: the same SBOM and image give the same digest)."""
    return oci.canonical_json({
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "artifactType": SBOM_MEDIA_TYPE,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": oci.sha256_of(EMPTY_CONFIG),
                   "size": len(EMPTY_CONFIG)},
        "layers": [{"mediaType": SBOM_MEDIA_TYPE, "digest": oci.sha256_of(sbom),
                    "size": len(sbom), "annotations": {TITLE: SBOM_TITLE}}],
        "subject": {"mediaType": oci.OCI_MANIFEST, "digest": subject_digest,
                    "size": subject_size},
        "annotations": {"org.opencontainers.image.created": created},
    })


def _descriptor(manifest: bytes, created: str) -> dict[str, Any]:
    return {"mediaType": oci.OCI_MANIFEST, "digest": oci.sha256_of(manifest),
            "size": len(manifest), "artifactType": SBOM_MEDIA_TYPE,
            "annotations": {"org.opencontainers.image.created": created}}


def attach_sbom(sbom: bytes, subject: bytes, target: ImageReference, created: str,
                registry: RegistryOptions) -> SbomReferrer:
    """Attach ``sbom`` to the image whose manifest is ``subject``, written to ``target``."""
    sbom_digest = oci.sha256_of(sbom)
    if target.transport == "docker-archive":
        return SbomReferrer(sbom_digest, None, "label")
    manifest = artifact_manifest(sbom, oci.sha256_of(subject), len(subject), created)
    if target.transport == "oci":
        _attach_to_layout(sbom, manifest, target, created)
        return SbomReferrer(sbom_digest, oci.sha256_of(manifest), "index.json")
    return _attach_to_registry(sbom, manifest, oci.sha256_of(subject), target, created,
                               registry)


def _attach_to_layout(sbom: bytes, manifest: bytes, target: ImageReference,
                      created: str) -> None:
    assert target.path is not None
    root = target.path
    blobs = root / "blobs" / "sha256"
    try:
        for data in (sbom, EMPTY_CONFIG, manifest):
            oci._store_blob(blobs, oci.sha256_of(data), functools.partial(io.BytesIO, data))
        with oci._locked_directory(root):
            index = oci._read_index(root)
            entries = [entry for entry in index.get("manifests", []) if isinstance(entry, dict)]
            if not any(entry.get("digest") == oci.sha256_of(manifest) for entry in entries):
                entries.append(_descriptor(manifest, created))
            oci._atomic_write(root / "index.json", oci.canonical_json(
                {**index, "schemaVersion": 2, "mediaType": oci.OCI_INDEX,
                 "manifests": entries}))
    except OSError as exc:
        raise errors.from_os_error(exc, Path(root)) from exc


def _attach_to_registry(sbom: bytes, manifest: bytes, subject_digest: str,
                        target: ImageReference, created: str,
                        options: RegistryOptions) -> SbomReferrer:
    """Blobs, then the artifact manifest by digest; without ``OCI-Subject`` in the
    answer (no referrers API), the fallback tag's index gains the artifact."""
    assert target.host is not None and target.repository is not None
    with options.client(target.host, target.repository) as client:
        client.push_blob(EMPTY_CONFIG, oci.sha256_of(EMPTY_CONFIG), len(EMPTY_CONFIG))
        client.push_blob(sbom, oci.sha256_of(sbom), len(sbom))
        digest = client.put_manifest(oci.sha256_of(manifest), manifest, oci.OCI_MANIFEST)
        if client.last_subject == subject_digest:
            return SbomReferrer(oci.sha256_of(sbom), digest, "referrers", client.stats)
        tag = fallback_tag(subject_digest)
        found = client.get_manifest(tag)
        entries: list[Any] = []
        if found is not None:
            try:
                listed = json.loads(found[0]).get("manifests")
            except (ValueError, AttributeError, RecursionError):
                listed = None
            entries = [entry for entry in listed or [] if isinstance(entry, dict)]
        if not any(entry.get("digest") == digest for entry in entries):
            entries.append(_descriptor(manifest, created))
            index = oci.canonical_json({"schemaVersion": 2, "mediaType": oci.OCI_INDEX,
                                        "manifests": entries})
            client.put_manifest(tag, index, oci.OCI_INDEX)
        return SbomReferrer(oci.sha256_of(sbom), digest, "tag", client.stats)


def read_sbom(source: ImageReference, digest: str, blob_dir: Path,
              options: RegistryOptions) -> bytes | None:
    """The SBOM blob ``digest`` held beside the image ``source`` (its layout's blobs, or
    its registry repository), verified; None where there is none (a docker-archive, an
    image attached before)."""
    if not re.fullmatch(r"sha256:[a-f0-9]{64}", digest):  # a label edited by hand
        return None
    if source.transport == "oci":
        assert source.path is not None
        # A regular file within the limit: a fifo planted as the blob hung the read.
        data = small_regular_file(source.path / "blobs" / "sha256" / digest.split(":", 1)[-1],
                                  SBOM_LIMIT.most)
        return data if data is not None and oci.sha256_of(data) == digest else None
    if source.transport != "docker" or source.host is None or source.repository is None:
        return None
    with options.client(source.host, source.repository) as client:
        if not client.has_blob(digest):
            return None
        kept = blob_dir / digest.split(":", 1)[-1]
        client.pull_blob(digest, kept, limit=SBOM_LIMIT)
    return kept.read_bytes()
