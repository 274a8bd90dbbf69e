"""`slugbuild stack build`: the run image's recipe (apt sources, mmdebstrap call) and the
image itself, built once per session with mmdebstrap and checked by skopeo and umoci."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile

import pytest

from slugbuild import errors
from slugbuild.stack import (
    RUN_PACKAGES,
    RunImageRecipe,
    apt_sources,
    default_recipe,
    mmdebstrap_command,
    parse_output,
)
from slugbuild.stack_compat import RunImageFiles, StackRequirements, check_run_image

from .helpers import run_cli

DEB822 = """\
Types: deb deb-src
URIs: http://deb.example/debian http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
Enabled: no
URIs: http://off.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://deb.example/debian
Suites: trixie
Components: main
"""
ONE_LINE = """\
# a comment
deb [arch=amd64] http://deb.example/debian bookworm main  # trailing
deb-src http://deb.example/debian bookworm main
deb https://packages.example/apt cloud-sdk-bookworm main
deb http://old.example/debian-security bookworm/updates main
"""


def test_apt_sources_keep_the_suite_and_its_companions(tmp_path):
    listed = tmp_path / "sources.list.d"
    listed.mkdir()
    (listed / "debian.sources").write_text(DEB822)
    (listed / "extra.list").write_text(ONE_LINE)
    (listed / "ignored.list.disabled").write_text("deb http://x.example/ bookworm main\n")
    signed = "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
    assert apt_sources("bookworm", [tmp_path / "missing.list", listed]).splitlines() == [
        f"deb {signed}http://deb.example/debian bookworm main contrib",
        f"deb {signed}http://deb.example/debian bookworm-updates main contrib",
        f"deb {signed}http://mirror.example/debian bookworm main contrib",
        f"deb {signed}http://mirror.example/debian bookworm-updates main contrib",
        "deb http://security.example/debian-security bookworm-security main",
        "deb [arch=amd64] http://deb.example/debian bookworm main",
        "deb http://old.example/debian-security bookworm/updates main",
    ]


def test_no_mirror_for_the_suite_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr("slugbuild.stack.SOURCES_FILES", (tmp_path / "none.list",))
    with pytest.raises(errors.RUN_IMAGE_BUILD_FAILED.exception) as raised:
        default_recipe("bookworm")
    assert raised.value.fields["variant"] == "no-mirror"
    given = default_recipe("bookworm", mirror="http://deb.example/debian", epoch=5)
    assert given.sources == "deb http://deb.example/debian bookworm main\n"
    assert given.epoch == 5


def test_the_recipe_names_every_package_and_the_app_user(tmp_path):
    recipe = RunImageRecipe(architecture="amd64", sources="deb x bookworm main\n",
                            epoch=315532800, extra_packages=("libpq5",))
    command = mmdebstrap_command(recipe, tmp_path / "s.list", tmp_path / "out.tar")
    include = next(a for a in command if a.startswith("--include="))
    assert include.split("=", 1)[1].split(",") == [*RUN_PACKAGES, "libpq5"]
    assert "--variant=essential" in command and "--architectures=amd64" in command
    hook = next(a for a in command if a.startswith("--customize-hook="))
    assert "app:x:1000:1000:app:/app:" in hook and "chown 1000:1000" in hook
    assert command[-3:] == ["bookworm", str(tmp_path / "out.tar"), str(tmp_path / "s.list")]
    # Anything that changes the bytes changes where the layer is kept.
    assert recipe.key() != RunImageRecipe(architecture="amd64", sources="deb x bookworm main\n",
                                          epoch=315532800).key()


def test_bad_output_and_missing_mmdebstrap_are_refused(monkeypatch, tmp_path):
    assert parse_output("oci:dir") == ("oci", tmp_path.__class__("dir"), "latest")
    assert parse_output("docker-archive:f.tar:a/b:1")[2] == "a/b:1"
    with pytest.raises(errors.RUN_IMAGE_BUILD_FAILED.exception):
        parse_output("docker://127.0.0.1:5000/r:t")
    for bad in ("oci:", "dir", "docker-archive:x.tar:Upper:1"):
        with pytest.raises(errors.IMAGE_REFERENCE_INVALID.exception):
            parse_output(bad)
    refused = run_cli("stack", "build", "--output", "tarball:x", "--mirror", "http://x/")
    assert refused.returncode == 1 and "[image-reference-invalid]" in refused.stderr
    assert "Traceback" not in refused.stderr
    monkeypatch.setattr("slugbuild.stack.shutil.which", lambda name: None)
    with pytest.raises(errors.RUN_IMAGE_BUILD_FAILED.exception) as raised:
        mmdebstrap_command(RunImageRecipe(), tmp_path / "s", tmp_path / "o")
    assert raised.value.fields["variant"] == "no-mmdebstrap"


@pytest.mark.slow
def test_run_image_is_a_valid_image_a_slug_runs_on(mmdebstrap_run_image, tmp_path):
    built, layout = mmdebstrap_run_image
    inspected = json.loads(subprocess.run(
        ["skopeo", "inspect", f"oci:{layout}:run"], capture_output=True, text=True,
        check=True).stdout)
    assert inspected["Digest"] == built.manifest_digest
    assert inspected["Architecture"] == "amd64" and inspected["Layers"] == [built.layer_digest]
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:run",
                    str(tmp_path / "bundle")], check=True, capture_output=True)
    rootfs = tmp_path / "bundle" / "rootfs"
    assert "app:x:1000:1000:app:/app:/bin/bash" in (rootfs / "etc/passwd").read_text()
    assert (rootfs / "etc/ssl/certs/ca-certificates.crt").is_file()
    assert (rootfs / "usr/share/zoneinfo/Europe/Paris").is_file()
    assert not (rootfs / "usr/share/doc/libssl3").exists()
    config = json.loads(subprocess.run(["skopeo", "inspect", "--config", f"oci:{layout}:run"],
                                       capture_output=True, text=True, check=True).stdout)
    assert config["config"]["User"] == "1000:1000"
    # What a slug built here needs (docs/images.md) is all there.
    blob = layout / "blobs" / "sha256" / built.layer_digest.split(":", 1)[1]
    with open(blob, "rb") as layer:
        files = RunImageFiles.from_layers([layer], "amd64")
    needs = ["libc.so.6", "libssl.so.3", "libcrypto.so.3", "libsqlite3.so.0", "libffi.so.8",
             "libz.so.1", "liblzma.so.5", "libbz2.so.1.0", "libuuid.so.1", "libncursesw.so.6",
             "libreadline.so.8", "libnsl.so.2", "libtirpc.so.3", "libcrypt.so.1",
             "libtinfo.so.6", "ld-linux-x86-64.so.2", "libpanelw.so.6"]
    assert check_run_image(StackRequirements(needs, "2.35", "amd64"), files) == []
    assert check_run_image(StackRequirements(["libpq.so.5"], None, "amd64"), files) == [
        "libpq.so.5"]


@pytest.mark.slow
def test_the_kept_layer_is_reused_and_archives_load(mmdebstrap_run_image, run_image_keep_dir,
                                                    tmp_path):
    from slugbuild.stack import build_run_image

    built, _ = mmdebstrap_run_image
    archive = tmp_path / "run.tar"
    again = build_run_image(f"docker-archive:{archive}:slugbuild/run:test",
                            recipe=default_recipe(), keep_dir=run_image_keep_dir)
    assert again.reused and again.manifest_digest == built.manifest_digest
    with tarfile.open(archive) as tar:
        manifest = json.load(io.BytesIO(tar.extractfile("manifest.json").read()))
    assert manifest[0]["RepoTags"] == ["slugbuild/run:test"]
    inspected = json.loads(subprocess.run(["skopeo", "inspect", f"docker-archive:{archive}"],
                                          capture_output=True, text=True, check=True).stdout)
    assert inspected["Architecture"] == "amd64"


def test_an_incompatible_run_image_says_how_to_make_one_that_fits() -> None:
    """The advice names `stack build --include`: a plain `stack build` lacks libstdc++6,
    which Wagtail's wheels need, so 'one made with stack build' alone left a user stuck."""
    from slugbuild import errors as catalogue

    text = catalogue.RUN_IMAGE_INCOMPATIBLE.error(
        run_image="oci:run:latest", missing="  - libstdc++.so.6", packages="libstdc++6").render()
    assert "slugbuild stack build --include PACKAGE" in text and "libstdc++6" in text
