"""OCI layouts and docker-archives written and read back, without a slug (quick)."""

from __future__ import annotations

import gzip
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from slugbuild.oci.image import (
    LAYER_GZIP,
    Image,
    bytes_blob,
    read_image,
    sha256_of,
    write_archive,
    write_layout,
)
from slugbuild.oci.reference import parse_image_reference


def _image(seed: int) -> Image:
    data = f"layer {seed}\n".encode() * 64
    layer = bytes_blob(gzip.compress(data, mtime=0), LAYER_GZIP, sha256_of(data))
    config = {"architecture": "amd64", "os": "linux", "config": {"User": "1000"},
              "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}}
    return Image(config, [layer], {"org.example.seed": str(seed)})


def test_images_written_into_one_layout_at_once_keep_every_tag(tmp_path: Path) -> None:
    def write(seed: int) -> str:
        return write_layout(_image(seed), parse_image_reference(
            f"oci:{tmp_path / 'layout'}:t{seed}")).manifest_digest

    with ThreadPoolExecutor(8) as pool:
        digests = list(pool.map(write, range(24)))
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert sorted(entry["digest"] for entry in index["manifests"]) == sorted(digests)
    again = read_image(parse_image_reference(f"oci:{tmp_path / 'layout'}:t5"),
                       blob_dir=tmp_path / "blobs")
    assert again.source_digest == digests[5] and again.manifest() == _image(5).manifest()


def test_an_archive_reads_back_as_the_same_config_and_layers(tmp_path: Path) -> None:
    image = _image(1)
    write_archive(image, parse_image_reference(f"docker-archive:{tmp_path / 'a.tar'}:x/y:v1"),
                  epoch=0)
    for name in ("x/y:v1", "docker.io/x/y:v1"):
        read = read_image(parse_image_reference(f"docker-archive:{tmp_path / 'a.tar'}:{name}"),
                          blob_dir=tmp_path / "blobs")
        assert read.config == image.config
        assert [layer.diff_id for layer in read.layers] == [image.layers[0].diff_id]
