"""Images from slugs: layers, config, the three transports, pushes, rebase.

Every image written here is checked by tools that are not slugbuild: `skopeo
inspect` reads it, `umoci unpack` verifies every digest while unpacking it.
The run image is a small layout made by tests/helpers.write_run_image.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import posixpath
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from slugbuild import build_image, compile_app, errors, rebase_image
from slugbuild.log import Reporter
from slugbuild.oci.assemble import END_OF_TAR
from slugbuild.oci.options import RegistryOptions
from slugbuild.oci.referrer import SBOM_LIMIT as LIMIT

from ..helpers import (
    AUTH_REGISTRY_PASSWORD,
    AUTH_REGISTRY_USER,
    FIXTURE_APPS,
    SLUG_SONAMES,
    RegistryServer,
    assert_refused,
    copy_app,
    free_port,
    host_library_paths,
    run_cli,
    write_run_image,
)

FLASK_APP = FIXTURE_APPS / "flask-hello"
PASSWD = "root:x:0:0:root:/root:/bin/sh\nweb:x:1001:1002::/app:/bin/sh\n"


def skopeo_inspect(reference: str, *, raw: bool = False, config: bool = False) -> Any:
    argv = ["skopeo", "inspect", "--tls-verify=false"]
    argv += ["--raw"] if raw else ["--config"] if config else []
    done = subprocess.run([*argv, reference], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def umoci_unpack(layout_and_tag: str, bundle: Path) -> Path:
    """Unpack with umoci (it verifies every blob's digest); the rootfs."""
    done = subprocess.run(["umoci", "unpack", "--image", layout_and_tag, str(bundle)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return bundle / "rootfs"


@pytest.fixture(scope="module")
def flask_slug(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """flask-hello compiled once in the heroku layout (its layer parts are image layers)."""
    out = tmp_path_factory.mktemp("image-slug") / "flask.tgz"
    compile_app(FLASK_APP, out, cache_dir=cache_dir, layout="heroku",
                reporter=Reporter(quiet=True))
    return out


@pytest.fixture(scope="module")
def run_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A run image with this machine's copies of the libraries slugs need, and /bin/sh."""
    return write_run_image(tmp_path_factory.mktemp("run-image") / "layout", "base",
                           user="web", passwd=PASSWD,
                           host_files=(*host_library_paths(SLUG_SONAMES), "/bin/sh"))


def test_layout_image_layers_config_and_labels(flask_slug: Path, run_image: str,
                                               cache_dir: Path, tmp_path: Path) -> None:
    result = build_image(flask_slug, f"oci:{tmp_path / 'image'}:v1", run_image=run_image,
                         cache_dir=cache_dir)
    assert [layer["role"] for layer in result.layers] == [
        "run image", "Python runtime", "dependencies", "app"]
    metadata = json.loads(flask_slug.with_suffix(".json").read_text())
    # The runtime and dependency layers are the slug's own parts plus the tar's end.
    slug_bytes = flask_slug.read_bytes()
    for layer, part in zip(result.layers[1:3], metadata["layer_parts"]):
        assert layer["size"] == part["length"] + len(END_OF_TAR)
        blob = (tmp_path / "image" / "blobs" / "sha256" / layer["digest"][7:]).read_bytes()
        assert blob.startswith(slug_bytes[part["offset"]:part["offset"] + part["length"]])

    inspected = skopeo_inspect(f"oci:{tmp_path / 'image'}:v1")
    assert inspected["Digest"] == result.manifest_digest
    labels = inspected["Labels"]
    assert json.loads(labels["io.slugbuild.process-types"]) == {"web": "gunicorn app:app"}
    assert labels["io.slugbuild.runtime"].startswith("cpython 3.")
    assert any(p.startswith("Flask==") for p in json.loads(labels["io.slugbuild.packages"]))
    assert labels["io.slugbuild.run-image.layers"] == "1"
    assert labels["io.slugbuild.slug.sha256"] == metadata["checksum"][7:]
    manifest = skopeo_inspect(f"oci:{tmp_path / 'image'}:v1", raw=True)
    assert manifest["annotations"]["io.slugbuild.process-types"] == \
        labels["io.slugbuild.process-types"]
    config = skopeo_inspect(f"oci:{tmp_path / 'image'}:v1", config=True)["config"]
    assert config["User"] == "1001:1002"  # the run image's user `web`, from its passwd
    assert config["WorkingDir"] == "/app"
    assert config["Entrypoint"] == ["/slugbuild/launch"]
    assert "HOME=/app" in config["Env"]
    assert "PATH=/app/.heroku/python/bin:/usr/local/bin:/usr/bin:/bin" in config["Env"]

    rootfs = umoci_unpack(f"{tmp_path / 'image'}:v1", tmp_path / "bundle")
    app = rootfs / "app"
    assert (app / "app.py").is_file() and (app / ".release").is_file()
    assert (app / ".heroku" / "python" / "bin" / "gunicorn").is_file()
    for path in (app, app / ".profile.d", app / "app.py", app / ".heroku" / "python"):
        assert (path.stat().st_uid, path.stat().st_gid) == (1001, 1002), path
    launcher = rootfs / "slugbuild" / "launch"
    assert launcher.stat().st_mode & 0o111 and launcher.read_bytes().startswith(b"#!/bin/sh")
    assert (rootfs / "etc" / "passwd").read_text() == PASSWD


def test_archive_and_registry_images_are_the_same_image(
        flask_slug: Path, run_image: str, cache_dir: Path, registry: RegistryServer,
        tmp_path: Path) -> None:
    archive = tmp_path / "image.tar"
    from_archive = build_image(flask_slug, f"docker-archive:{archive}:flask/app:v1",
                               run_image=run_image, cache_dir=cache_dir)
    inspected = skopeo_inspect(f"docker-archive:{archive}")
    assert len(inspected["Layers"]) == 4
    with tarfile.open(archive) as tar:
        (listed,) = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert listed["RepoTags"] == ["flask/app:v1"] and len(listed["Layers"]) == 4

    before = registry.blob_uploads()
    pushed = build_image(flask_slug, f"docker://{registry.host}/image-test/flask:v1",
                         run_image=run_image, cache_dir=cache_dir)
    assert pushed.manifest_digest == from_archive.manifest_digest
    # Four layers and the config, then the SBOM referrer's two: the SBOM, its empty config.
    assert registry.blob_uploads() - before == 5 + 2
    remote = skopeo_inspect(f"docker://{registry.host}/image-test/flask:v1")
    assert remote["Digest"] == pushed.manifest_digest
    # Again: HEAD requests and the manifest only.
    again = build_image(flask_slug, f"docker://{registry.host}/image-test/flask:v2",
                        run_image=run_image, cache_dir=cache_dir)
    assert again.stats.blobs_uploaded == 0 and registry.blob_uploads() - before == 5 + 2
    # Another repository of the same registry: mounted, not uploaded.
    mounts = registry.blob_mounts()
    other = build_image(flask_slug, f"docker://{registry.host}/image-test/other:v1",
                        run_image=run_image, cache_dir=cache_dir)
    assert other.stats.blobs_uploaded == 1  # the config (its one blob the store notes
    assert registry.blob_mounts() - mounts == 4  # not: it is pushed with the image)
    # A copy made by skopeo from the registry unpacks with every digest verified.
    copy = subprocess.run(["skopeo", "copy", "--src-tls-verify=false",
                           f"docker://{registry.host}/image-test/flask:v1",
                           f"oci:{tmp_path / 'copy'}:v1"], capture_output=True, text=True)
    assert copy.returncode == 0, copy.stderr
    umoci_unpack(f"{tmp_path / 'copy'}:v1", tmp_path / "bundle")


@pytest.mark.slow
def test_reproducible_and_only_the_app_layer_changes(
        flask_slug: Path, run_image: str, cache_dir: Path, registry: RegistryServer,
        tmp_path: Path) -> None:
    first = build_image(flask_slug, f"docker://{registry.host}/repro/app:one",
                        run_image=run_image, cache_dir=cache_dir)
    # Same app from another directory, built with another (cold) cache: same digest.
    other_app = copy_app(FLASK_APP, tmp_path / "elsewhere" / "app")
    other_cache = tmp_path / "other-cache"
    other_slug = tmp_path / "other" / "flask.tgz"
    other_slug.parent.mkdir()
    compile_app(other_app, other_slug, cache_dir=other_cache, layout="heroku",
                reporter=Reporter(quiet=True))
    second = build_image(other_slug, f"oci:{tmp_path / 'other-image'}:v1",
                         run_image=run_image, cache_dir=other_cache)
    assert second.manifest_digest == first.manifest_digest

    # One app file changed: only the app layer differs, and only it (and the config
    # naming it) is uploaded.
    (other_app / "app.py").write_text((other_app / "app.py").read_text() + "\n# changed\n")
    changed_slug = tmp_path / "changed" / "flask.tgz"
    changed_slug.parent.mkdir()
    compile_app(other_app, changed_slug, cache_dir=cache_dir, layout="heroku",
                reporter=Reporter(quiet=True))
    before = registry.blob_uploads()
    changed = build_image(changed_slug, f"docker://{registry.host}/repro/app:two",
                          run_image=run_image, cache_dir=cache_dir)
    assert [a["digest"] for a in changed.layers[:-1]] == \
        [b["digest"] for b in first.layers[:-1]]
    assert changed.layers[-1]["digest"] != first.layers[-1]["digest"]
    assert registry.blob_uploads() - before == 2 + 1  # + the new slug's SBOM
    assert changed.stats.bytes_uploaded < changed.layers[-1]["size"] + 10_000


def test_a_warm_image_build_reuses_the_kept_layers(flask_slug: Path, run_image: str,
                                                   cache_dir: Path, tmp_path: Path) -> None:
    build_image(flask_slug, f"oci:{tmp_path / 'a'}:v1", run_image=run_image,
                cache_dir=cache_dir)
    kept = {path: path.stat().st_mtime_ns for path in (cache_dir / "oci" / "blobs").iterdir()}
    build_image(flask_slug, f"oci:{tmp_path / 'b'}:v1", run_image=run_image,
                cache_dir=cache_dir)
    assert {path: path.stat().st_mtime_ns for path in kept} == kept
    # A damaged kept layer is made again, not used.
    first = build_image(flask_slug, f"oci:{tmp_path / 'c'}:v1", run_image=run_image,
                        cache_dir=cache_dir)
    runtime_blob = cache_dir / "oci" / "blobs" / first.layers[1]["digest"][7:]
    damaged = bytearray(runtime_blob.read_bytes())
    damaged[100] ^= 0xFF
    runtime_blob.write_bytes(bytes(damaged))
    again = build_image(flask_slug, f"oci:{tmp_path / 'd'}:v1", run_image=run_image,
                        cache_dir=cache_dir)
    assert again.manifest_digest == first.manifest_digest
    assert "sha256:" + hashlib.sha256(runtime_blob.read_bytes()).hexdigest() == \
        first.layers[1]["digest"]


def test_rebase_swaps_the_run_image_and_keeps_the_app_layers(
        flask_slug: Path, run_image: str, cache_dir: Path, registry: RegistryServer,
        tmp_path: Path) -> None:
    target = f"docker://{registry.host}/rebase/app:v1"
    built = build_image(flask_slug, target, run_image=run_image, cache_dir=cache_dir)
    newer = write_run_image(tmp_path / "newer", "v2", user="web", passwd=PASSWD,
                            files={"etc/security-update": b"patched\n"},
                            host_files=(*host_library_paths(SLUG_SONAMES), "/bin/sh"))
    rebased = rebase_image(target, newer, cache_dir=cache_dir)
    assert rebased.reference == target
    assert [layer["digest"] for layer in rebased.layers[1:]] == \
        [layer["digest"] for layer in built.layers[1:]]
    assert rebased.layers[0]["digest"] != built.layers[0]["digest"]
    assert rebased.manifest_digest != built.manifest_digest
    assert skopeo_inspect(target)["Digest"] == rebased.manifest_digest
    config = skopeo_inspect(target, config=True)
    assert config["config"]["Entrypoint"] == ["/slugbuild/launch"]
    assert len(config["rootfs"]["diff_ids"]) == len(config["history"]) == 4
    copy = subprocess.run(["skopeo", "copy", "--src-tls-verify=false", target,
                           f"oci:{tmp_path / 'copy'}:v1"], capture_output=True, text=True)
    assert copy.returncode == 0, copy.stderr
    rootfs = umoci_unpack(f"{tmp_path / 'copy'}:v1", tmp_path / "bundle")
    assert (rootfs / "etc" / "security-update").is_file()
    assert (rootfs / "app" / "app.py").is_file()

    with pytest.raises(errors.IMAGE_SOURCE_UNUSABLE.exception):
        rebase_image(newer, run_image, output=f"oci:{tmp_path / 'x'}:v1", cache_dir=cache_dir)


def test_cli_compile_image_and_image_command(cache_dir: Path, run_image: str,
                                             tmp_path: Path) -> None:
    app = copy_app(FLASK_APP, tmp_path / "app")
    metadata = tmp_path / "meta" / "flask.json"  # slug.json away from the slug
    metadata.parent.mkdir()
    done = run_cli("compile", str(app), "-o", str(tmp_path / "slug.tgz"), "--cache-dir",
                   str(cache_dir), "--image", f"oci:{tmp_path / 'image'}:latest",
                   "--run-image", run_image, "--metadata-output", str(metadata), "--json")
    assert done.returncode == 0, done.stderr
    output = json.loads(done.stdout)
    assert json.loads(metadata.read_text())["layout"] == "heroku"
    assert output["image"]["manifest_digest"] == \
        skopeo_inspect(f"oci:{tmp_path / 'image'}:latest")["Digest"]
    again = run_cli("image", str(tmp_path / "slug.tgz"), "--metadata", str(metadata),
                    "--image", f"oci:{tmp_path / 'image'}:again", "--run-image", run_image,
                    "--cache-dir", str(cache_dir), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["manifest_digest"] == output["image"]["manifest_digest"]
    assert "Image written to" in again.stderr


@pytest.mark.parametrize("image, kind", [
    ("s3://bucket/app", errors.IMAGE_REFERENCE_INVALID),
    ("docker://127.0.0.1:5000/Not_Valid:v1", errors.IMAGE_REFERENCE_INVALID),
    ("docker://127.0.0.1:{port}/app:v1", errors.REGISTRY_UNREACHABLE),
])
def test_bad_image_arguments_are_one_error_each(flask_slug: Path, run_image: str,
                                                cache_dir: Path, tmp_path: Path, image: str,
                                                kind: errors.ErrorKind) -> None:
    done = run_cli("image", str(flask_slug), "--image", image.format(port=free_port()),
                   "--run-image", run_image, "--cache-dir", str(cache_dir),
                   "--registry-timeout", "2")
    assert_refused(done, kind)


def test_compile_refuses_a_bad_image_reference_before_building(tmp_path: Path,
                                                               cache_dir: Path) -> None:
    done = run_cli("compile", str(FLASK_APP), "-o", str(tmp_path / "slug.tgz"), "--cache-dir",
                   str(cache_dir), "--image", "oci")
    assert_refused(done, errors.IMAGE_REFERENCE_INVALID, outputs=(tmp_path / "slug.tgz",))


def test_auth_refused_pushes_no_tag(flask_slug: Path, run_image: str, cache_dir: Path,
                                    auth_registry: RegistryServer, tmp_path: Path) -> None:
    image = f"docker://{auth_registry.host}/auth/app:v1"
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("REGISTRY_AUTH_FILE", None)
    env.pop("DOCKER_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "slugbuild", "image", str(flask_slug), "--image", image,
         "--run-image", run_image, "--cache-dir", str(cache_dir), "--registry-user",
         AUTH_REGISTRY_USER, "--registry-password-stdin"],
        input="not-the-password\n", capture_output=True, text=True, env=env, timeout=120)
    stderr = assert_refused(done, errors.REGISTRY_AUTH_REFUSED)
    assert "not-the-password" not in stderr
    anonymous = run_cli("image", str(flask_slug), "--image", image, "--run-image", run_image,
                        "--cache-dir", str(cache_dir), env=env)
    assert "needs credentials and none were found" in assert_refused(
        anonymous, errors.REGISTRY_AUTH_REFUSED)
    good = RegistryOptions(user=AUTH_REGISTRY_USER, password=AUTH_REGISTRY_PASSWORD)
    with good.client(auth_registry.host, "auth/app") as client:
        assert client.get_manifest("v1") is None  # nothing tagged by the refused pushes
    # The right password, from a Docker config file this time, pushes it.
    docker = tmp_path / ".docker"
    docker.mkdir()
    token = base64.b64encode(f"{AUTH_REGISTRY_USER}:{AUTH_REGISTRY_PASSWORD}".encode()).decode()
    (docker / "config.json").write_text(json.dumps({"auths": {auth_registry.host: {
        "auth": token}}}))
    pushed = run_cli("image", str(flask_slug), "--image", image, "--run-image", run_image,
                     "--cache-dir", str(cache_dir), "--json", env=env)
    assert pushed.returncode == 0, pushed.stderr
    with good.client(auth_registry.host, "auth/app") as client:
        found = client.get_manifest("v1")
    assert found is not None and found[2] == json.loads(pushed.stdout)["manifest_digest"]


def test_run_images_from_an_archive_and_a_registry(
        flask_slug: Path, run_image: str, cache_dir: Path, registry: RegistryServer,
        tmp_path: Path) -> None:
    # The run image in a registry: a push to another repository mounts its layer.
    run_in_registry = f"docker://{registry.host}/stacks/run:base"
    copy = subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", run_image,
                           run_in_registry], capture_output=True, text=True)
    assert copy.returncode == 0, copy.stderr
    mounts = registry.blob_mounts()
    pushed = build_image(flask_slug, f"docker://{registry.host}/mounted/app:v1",
                         run_image=run_in_registry, cache_dir=cache_dir)
    assert registry.blob_mounts() - mounts >= 1 and pushed.stats.blobs_mounted >= 1
    labels = skopeo_inspect(f"docker://{registry.host}/mounted/app:v1")["Labels"]
    assert labels["org.opencontainers.image.base.name"] == run_in_registry
    # The run image as a docker-archive (uncompressed layers, kept as they are).
    archive = tmp_path / "run.tar"
    copy = subprocess.run(["skopeo", "copy", run_image, f"docker-archive:{archive}:run:base"],
                          capture_output=True, text=True)
    assert copy.returncode == 0, copy.stderr
    built = build_image(flask_slug, f"oci:{tmp_path / 'image'}:v1",
                        run_image=f"docker-archive:{archive}:run:base", cache_dir=cache_dir)
    assert built.layers[0]["role"] == "run image"
    rootfs = umoci_unpack(f"{tmp_path / 'image'}:v1", tmp_path / "bundle")
    assert (rootfs / "etc" / "passwd").read_text() == PASSWD


def test_a_herokuish_slug_becomes_one_app_layer(flask_build: Any, run_image: str,
                                                cache_dir: Path, tmp_path: Path) -> None:
    built = build_image(flask_build.slug_path, f"oci:{tmp_path / 'image'}:v1",
                        run_image=run_image, cache_dir=cache_dir)
    assert [layer["role"] for layer in built.layers] == ["run image", "app"]
    rootfs = umoci_unpack(f"{tmp_path / 'image'}:v1", tmp_path / "bundle")
    python = rootfs / "app" / ".heroku" / "python" / "bin" / "python"
    assert python.exists() or python.is_symlink()
    assert (rootfs / "app" / "app.py").stat().st_uid == 1001


def test_a_herokuish_slug_s_app_layer_names_each_path_once(flask_build: Any, run_image: str,
                                                           cache_dir: Path,
                                                           tmp_path: Path) -> None:
    """The herokuish slug's root entry (".") is /app itself, not a second "./app/./"
    entry: podman and containers-storage refuse a layer holding a path twice."""
    build_image(flask_build.slug_path, f"oci:{tmp_path / 'image'}:v1", run_image=run_image,
                cache_dir=cache_dir)
    index = json.loads((tmp_path / "image" / "index.json").read_text())
    blobs = tmp_path / "image" / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_text())
    app_layer = blobs / manifest["layers"][-1]["digest"].split(":")[1]
    with tarfile.open(app_layer, "r:gz") as tar:
        names = [posixpath.normpath(member.name) for member in tar.getmembers()]
    assert "app" in names
    assert len(names) == len(set(names)), sorted(n for n in set(names) if names.count(n) > 1)


def test_a_slug_whose_entries_leave_app_is_refused(run_image: str, cache_dir: Path,
                                                    tmp_path: Path) -> None:
    """A slug from elsewhere (with a matching slug.json) holding `../` is no image."""
    slug = tmp_path / "hostile.tgz"
    with tarfile.open(slug, "w:gz") as tar:
        for name in ("./app/", "./app/../../etc/cron.d/x"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE if name.endswith("/") else tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(b""))
    digest = hashlib.sha256(slug.read_bytes()).hexdigest()
    slug.with_suffix(".json").write_text(json.dumps({
        "checksum": f"SHA256:{digest}", "layout": "heroku", "process_types": {},
        "layer_parts": []}))
    with pytest.raises(errors.UNSAFE_SLUG.exception):
        build_image(slug, f"oci:{tmp_path / 'image'}:v1", run_image=run_image,
                    cache_dir=cache_dir)
    assert not (tmp_path / "image" / "index.json").exists()


def test_the_fast_tar_reader_reads_as_tarfile(flask_slug: Path, run_image: str,
                                              cache_dir: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The app layer made through the direct ustar reader equals the one made through
    tarfile (its fallback), byte for byte."""
    from slugbuild.oci import assemble

    fast = build_image(flask_slug, f"oci:{tmp_path / 'fast'}:v1", run_image=run_image,
                       cache_dir=cache_dir)

    def refuse(data: bytes) -> list[Any]:
        raise ValueError("use tarfile")

    monkeypatch.setattr(assemble, "_ustar_entries", refuse)
    slow = build_image(flask_slug, f"oci:{tmp_path / 'slow'}:v1", run_image=run_image,
                       cache_dir=cache_dir)
    assert fast.manifest_digest == slow.manifest_digest


def test_a_run_image_without_the_slugs_libraries_is_refused(flask_slug: Path, cache_dir: Path,
                                                            tmp_path: Path) -> None:
    """The compatibility check (slugbuild.stack_compat) runs before anything is written."""
    bare = write_run_image(tmp_path / "bare", "base", passwd=PASSWD)
    with pytest.raises(errors.SlugbuildError) as raised:
        build_image(flask_slug, f"oci:{tmp_path / 'image'}:v1", run_image=bare,
                    cache_dir=cache_dir)
    assert raised.value.code == "run-image-incompatible"
    assert "libssl.so.3" in raised.value.found
    assert not (tmp_path / "image").exists()


def test_a_damaged_run_image_layer_is_an_error_not_an_image(flask_slug: Path, cache_dir: Path,
                                                            tmp_path: Path) -> None:
    damaged = write_run_image(tmp_path / "run", "base", passwd=PASSWD)
    index = json.loads((tmp_path / "run" / "index.json").read_text())
    manifest_blob = tmp_path / "run" / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]
    layer = json.loads(manifest_blob.read_text())["layers"][0]["digest"][7:]
    blob = tmp_path / "run" / "blobs" / "sha256" / layer
    blob.write_bytes(blob.read_bytes()[:-8] + b"\0" * 8)
    for target in (f"oci:{tmp_path / 'image'}:v1", f"docker-archive:{tmp_path / 'image.tar'}"):
        with pytest.raises(errors.IMAGE_UNREADABLE.exception) as raised:
            build_image(flask_slug, target, run_image=damaged, cache_dir=cache_dir)
        assert "does not match" in raised.value.found
    assert not (tmp_path / "image" / "index.json").exists()
    assert not (tmp_path / "image.tar").exists()


def _valid_cyclonedx(document: bytes) -> dict[str, Any]:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    problem = JsonStrictValidator(SchemaVersion.V1_6).validate_str(document.decode())
    assert problem is None, problem
    parsed: dict[str, Any] = json.loads(document)
    return parsed


def test_every_image_carries_the_slugs_sbom(flask_slug: Path, run_image: str,
                                            cache_dir: Path, registry: RegistryServer,
                                            tmp_path: Path) -> None:
    written_sbom = flask_slug.with_suffix(".cdx.json").read_bytes()  # the build's own
    sbom_digest = "sha256:" + hashlib.sha256(written_sbom).hexdigest()
    # An OCI layout: the artifact is listed in index.json, naming the image as subject.
    layout = tmp_path / "image"
    built = build_image(flask_slug, f"oci:{layout}:v1", run_image=run_image,
                        cache_dir=cache_dir)
    assert built.sbom is not None and built.sbom["found_by"] == "index.json"
    assert built.sbom["digest"] == sbom_digest
    assert skopeo_inspect(f"oci:{layout}:v1")["Labels"]["io.slugbuild.sbom.digest"] == \
        sbom_digest
    index = json.loads((layout / "index.json").read_text())
    (listed,) = [entry for entry in index["manifests"]
                 if entry.get("artifactType") == "application/vnd.cyclonedx+json"]
    assert listed["digest"] == built.sbom["referrer"]
    artifact = json.loads((layout / "blobs" / "sha256" / listed["digest"][7:]).read_bytes())
    assert artifact["subject"]["digest"] == built.manifest_digest
    (sbom_layer,) = artifact["layers"]
    blob = (layout / "blobs" / "sha256" / sbom_layer["digest"][7:]).read_bytes()
    assert blob == written_sbom
    document = _valid_cyclonedx(blob)
    assert document["metadata"]["component"]["hashes"][0]["content"] == \
        json.loads(flask_slug.with_suffix(".json").read_text())["checksum"][7:]
    # The image itself still reads and unpacks (the artifact is untagged).
    umoci_unpack(f"{layout}:v1", tmp_path / "bundle")

    # A registry without the referrers API (docker-registry 2.8): the fallback tag.
    repository = f"{registry.host}/sbom/app"
    pushed = build_image(flask_slug, f"docker://{repository}:v1", run_image=run_image,
                         cache_dir=cache_dir)
    assert pushed.manifest_digest == built.manifest_digest  # reproducible, everywhere
    assert pushed.sbom is not None and pushed.sbom["found_by"] == "tag"
    assert pushed.sbom["referrer"] == built.sbom["referrer"]
    fallback = "sha256-" + pushed.manifest_digest[7:]
    tags = subprocess.run(["skopeo", "list-tags", "--tls-verify=false",
                           f"docker://{repository}"], capture_output=True, text=True,
                          timeout=120)
    assert tags.returncode == 0, tags.stderr
    assert fallback in json.loads(tags.stdout)["Tags"]
    referrers = skopeo_inspect(f"docker://{repository}:{fallback}", raw=True)
    assert [entry["digest"] for entry in referrers["manifests"]] == [pushed.sbom["referrer"]]
    with RegistryOptions().client(registry.host, "sbom/app") as client:
        found = client.get_manifest(pushed.sbom["referrer"])
        assert found is not None
        assert json.loads(found[0])["subject"]["digest"] == pushed.manifest_digest
        client.pull_blob(sbom_digest, tmp_path / "pulled.cdx.json", limit=LIMIT)
    assert (tmp_path / "pulled.cdx.json").read_bytes() == written_sbom
    # Pushed again: the fallback index still lists the artifact once.
    build_image(flask_slug, f"docker://{repository}:v2", run_image=run_image,
                cache_dir=cache_dir)
    assert len(skopeo_inspect(f"docker://{repository}:{fallback}", raw=True)["manifests"]) == 1

    # A docker-archive has no referrers: the label names the SBOM.
    archived = build_image(flask_slug, f"docker-archive:{tmp_path / 'a.tar'}:sbom/app:v1",
                           run_image=run_image, cache_dir=cache_dir)
    assert archived.sbom is not None and archived.sbom["found_by"] == "label"
    assert archived.sbom["referrer"] is None


def test_an_image_of_a_slug_without_its_sbom_file_gets_the_same_sbom(
        flask_slug: Path, run_image: str, cache_dir: Path, tmp_path: Path) -> None:
    slug = tmp_path / "moved.tgz"
    slug.write_bytes(flask_slug.read_bytes())
    (tmp_path / "moved.json").write_bytes(flask_slug.with_suffix(".json").read_bytes())
    (tmp_path / "moved.cdx.json").write_text('{"metadata": {"component": {}}}')  # stale
    built = build_image(slug, f"oci:{tmp_path / 'image'}:v1", run_image=run_image,
                        cache_dir=cache_dir)
    expected = flask_slug.with_suffix(".cdx.json").read_bytes()
    assert built.sbom is not None
    assert built.sbom["digest"] == "sha256:" + hashlib.sha256(expected).hexdigest()


def test_a_rebased_image_carries_the_same_sbom(flask_slug: Path, run_image: str,
                                               cache_dir: Path, tmp_path: Path) -> None:
    built = build_image(flask_slug, f"oci:{tmp_path / 'image'}:v1", run_image=run_image,
                        cache_dir=cache_dir)
    newer = write_run_image(tmp_path / "newer", "v2", user="web", passwd=PASSWD,
                            files={"etc/security-update": b"patched\n"},
                            host_files=(*host_library_paths(SLUG_SONAMES), "/bin/sh"))
    rebased = rebase_image(f"oci:{tmp_path / 'image'}:v1", newer,
                           output=f"oci:{tmp_path / 'rebased'}:v1", cache_dir=cache_dir)
    assert built.sbom is not None and rebased.sbom is not None
    assert rebased.sbom["digest"] == built.sbom["digest"]
    index = json.loads((tmp_path / "rebased" / "index.json").read_text())
    (listed,) = [entry for entry in index["manifests"] if "artifactType" in entry]
    artifact = json.loads((tmp_path / "rebased" / "blobs" / "sha256" /
                           listed["digest"][7:]).read_bytes())
    assert artifact["subject"]["digest"] == rebased.manifest_digest != built.manifest_digest
    assert artifact["layers"][0]["digest"] == built.sbom["digest"]


def test_a_registry_with_the_referrers_api_gets_no_fallback_tag(
        flask_slug: Path, run_image: str, cache_dir: Path, registry: RegistryServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from slugbuild.oci.registry import RegistryClient

    # docker-registry 2.8 lacks the API: answer as one that has it does (OCI-Subject).
    put_manifest = RegistryClient.put_manifest

    def answering_subject(self: RegistryClient, reference: str, body: bytes,
                          media_type: str) -> str:
        digest = put_manifest(self, reference, body, media_type)
        self.last_subject = (json.loads(body).get("subject") or {}).get("digest")
        return digest

    monkeypatch.setattr(RegistryClient, "put_manifest", answering_subject)
    pushed = build_image(flask_slug, f"docker://{registry.host}/referrers/app:v1",
                         run_image=run_image, cache_dir=cache_dir)
    assert pushed.sbom is not None and pushed.sbom["found_by"] == "referrers"
    with RegistryOptions().client(registry.host, "referrers/app") as client:
        assert client.list_tags() == ["v1"]  # no sha256-… tag
        assert client.get_manifest(pushed.sbom["referrer"]) is not None
