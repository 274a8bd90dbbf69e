"""A crafted `docker save` archive (`docker-archive:FILE`, a run image or an image to
rebase): its manifest.json may name members that are not there or hold the wrong
types. Each is `image-unreadable`, never a KeyError or TypeError traceback."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from slugbuild import errors
from slugbuild.oci.image import read_image
from slugbuild.oci.reference import parse_image_reference

CONFIG = {"architecture": "amd64", "os": "linux",
          "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}}


def archive(path: Path, manifest: Any, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in {"manifest.json": json.dumps(manifest).encode(),
                           "config.json": json.dumps(CONFIG).encode(), **members}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("manifest", [
    [{"Config": "config.json", "Layers": ["missing.tar"], "RepoTags": ["run:latest"]}],
    [{"Config": "config.json", "Layers": 7, "RepoTags": ["run:latest"]}],
    [{"Config": "config.json", "Layers": {"a": 1}, "RepoTags": ["run:latest"]}],
    [{"Config": "config.json", "Layers": ["layer.tar"], "RepoTags": 5}],
    [{"Config": "config.json", "Layers": [None], "RepoTags": ["run:latest"]}],
    [{"Config": ["config.json"], "Layers": ["layer.tar"]}],
])
def test_a_crafted_archive_manifest_is_image_unreadable(tmp_path: Path, manifest: Any) -> None:
    path = archive(tmp_path / "image.tar", manifest, {"layer.tar": b"\0" * 1024})
    with pytest.raises(errors.SlugbuildError) as raised:
        read_image(parse_image_reference(f"docker-archive:{path}:run:latest"),
                   blob_dir=tmp_path / "b")
    assert raised.value.code == errors.IMAGE_UNREADABLE.code


# --- a crafted OCI image layout (`oci:DIR`) -------------------------------------------------

def layout(root: Path, index: Any, blobs: dict[str, bytes] | None = None) -> Path:
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_text(json.dumps(index))
    for name, data in (blobs or {}).items():
        (root / "blobs" / "sha256" / name).write_bytes(data)
    return root


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("shape", ["annotations-list", "platform-list", "manifests-int",
                                   "digest-traversal", "digest-no-colon", "config-list",
                                   "rootfs-list", "layer-traversal"])
def test_a_crafted_layout_is_image_unreadable(tmp_path: Path, shape: str) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the builder's private key\n")
    config: dict[str, Any] = dict(CONFIG)
    if shape == "rootfs-list":
        config["rootfs"] = ["x"]
    config_bytes = json.dumps(config).encode()
    layer_digest = "sha256:../../../secret.txt" if shape == "layer-traversal" \
        else "sha256:" + "0" * 64
    manifest: dict[str, Any] = {
        "schemaVersion": 2, "config": {"digest": sha(config_bytes)},
        "layers": [{"digest": layer_digest, "mediaType": "application/vnd.oci.image.layer.v1.tar"}]}
    if shape == "config-list":
        manifest["config"] = [sha(config_bytes)]
    manifest_bytes = json.dumps(manifest).encode()
    entry: dict[str, Any] = {"digest": sha(manifest_bytes),
                             "annotations": {"org.opencontainers.image.ref.name": "latest"}}
    index: Any = {"schemaVersion": 2, "manifests": [entry]}
    if shape == "annotations-list":
        entry["annotations"] = ["latest"]
    elif shape == "platform-list":
        entry["platform"] = ["amd64"]
        entry["digest"] = "bogus"
    elif shape == "manifests-int":
        index["manifests"] = 5
    elif shape == "digest-traversal":
        entry["digest"] = "sha256:../../../secret.txt"
    elif shape == "digest-no-colon":
        entry["digest"] = "nothing"
    root = layout(tmp_path / "image", index, {sha(config_bytes)[7:]: config_bytes,
                                              sha(manifest_bytes)[7:]: manifest_bytes})
    with pytest.raises(errors.SlugbuildError) as raised:
        read_image(parse_image_reference(f"oci:{root}:latest"), blob_dir=tmp_path / "b",
                   architecture="amd64")
    assert raised.value.code == errors.IMAGE_UNREADABLE.code
    assert "private key" not in str(raised.value)
