"""Builds killed half way, builds racing on one cache, hostile input."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from ..helpers import make_app, run_cli, seed_runtimes

SMALL_APP = {
    ".python-version": "3.12\n",
    "requirements.txt": "six==1.17.0\nidna==3.10\n",
    "Procfile": "web: python -m http.server $PORT\n",
    "app.py": "print('hello')\n",
}


def _start_build(app: Path, out: Path, cache: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "slugbuild", "compile", str(app), "-o", str(out),
         "--cache-dir", str(cache)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # so kill -9 reaches pip and every other child too
    )


def _published_layers_are_complete(cache: Path) -> None:
    """Every published layer is whole: its manifest, and a tree exactly as its
    files.json records it (a build killed before it opened the cache has none)."""
    from slugbuild.cache import Cache

    for kind in ("runtimes", "layers"):
        if not (cache / kind).is_dir():
            continue
        for layer in (cache / kind).iterdir():
            manifest = json.loads((layer / "manifest.json").read_text())
            assert manifest["name"] == layer.name and (layer / "tree").is_dir()
            found = Cache(cache).lookup(kind, layer.name, manifest["key"])
            assert found is not None and Cache(cache).verify(found) == [], layer


@pytest.mark.slow
def test_kill_9_at_random_points_then_build_again(tmp_path, runtime_seed):
    seed = int(os.environ.get("SLUGBUILD_TEST_SEED", time.time()))
    print(f"kill points seed: {seed}")
    rng = random.Random(seed)
    app = make_app(tmp_path / "app", SMALL_APP)
    cache = tmp_path / "cache"
    out = tmp_path / "out" / "slug.tgz"
    out.parent.mkdir()
    for delay in sorted(rng.uniform(0.2, 6.0) for _ in range(4)):
        build = _start_build(app, out, cache)
        time.sleep(delay)
        if build.poll() is None:
            os.killpg(build.pid, signal.SIGKILL)
        build.wait()
        out.unlink(missing_ok=True)
        _published_layers_are_complete(cache)
    unrelated = out.parent / ".notes.txt.999999999.partial"  # not ours: must survive
    unrelated.write_text("keep me\n")
    final = run_cli("compile", app, "-o", out, "--cache-dir", cache)
    assert final.returncode == 0, final.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == [unrelated.name, "slug.cdx.json",
                                                            "slug.json", "slug.tgz"]
    assert list((cache / "tmp").iterdir()) == []
    clean = run_cli("compile", app, "-o", tmp_path / "clean.tgz",  # killed nowhere
                    "--cache-dir", seed_runtimes(runtime_seed, tmp_path / "clean-cache"))
    assert clean.returncode == 0, clean.stderr
    assert out.read_bytes() == (tmp_path / "clean.tgz").read_bytes()


@pytest.mark.slow
def test_two_builds_share_one_cache_at_the_same_time(tmp_path):
    app = make_app(tmp_path / "app", SMALL_APP)
    cache = tmp_path / "cache"
    builds = [_start_build(app, tmp_path / f"{n}.tgz", cache) for n in (1, 2)]
    for build in builds:
        _, stderr = build.communicate(timeout=300)
        assert build.returncode == 0, stderr
    assert (tmp_path / "1.tgz").read_bytes() == (tmp_path / "2.tgz").read_bytes()
    assert len(list((cache / "runtimes").iterdir())) == 1
    assert len(list((cache / "layers").iterdir())) == 1
    _published_layers_are_complete(cache)


def test_special_files_and_odd_names(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", SMALL_APP)
    os.mkfifo(app / "pipe")
    result = run_cli("compile", app, "-o", tmp_path / "s.tgz", "--cache-dir", cache_dir)
    assert result.returncode == 1
    assert "named pipe" in result.stderr and not (tmp_path / "s.tgz").exists()


@pytest.mark.slow
def test_odd_file_names_and_big_files_are_packed_safely(tmp_path, cache_dir):
    import tarfile

    app = make_app(tmp_path / "app", {**SMALL_APP, "requirements.txt": "six==1.17.0\n"})
    (app / "new\nline.txt").write_text("odd\n")
    (app / "ünïcødé.txt").write_text("u\n")
    with open(app / "big.bin", "wb") as handle:
        handle.truncate(64 * 1024 * 1024)  # sparse: 64 MiB of zeros
    (app / "Procfile").write_text("web: python -m http.server $PORT\n" + "# pad\n" * 150_000)
    result = run_cli("compile", app, "-o", tmp_path / "s.tgz", "--cache-dir", cache_dir)
    assert result.returncode == 0, result.stderr
    with tarfile.open(tmp_path / "s.tgz") as tar:
        names = tar.getnames()
        assert "./new\nline.txt" in names and "./ünïcødé.txt" in names
        assert tar.getmember("./big.bin").size == 64 * 1024 * 1024


def test_binary_junk_in_version_files(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", SMALL_APP)
    (app / ".python-version").write_bytes(os.urandom(512) + b"\x00\xff")
    result = run_cli("compile", app, "-o", tmp_path / "s.tgz", "--cache-dir", cache_dir)
    assert result.returncode == 1
    assert "Python version from .python-version" in result.stderr  # not valid UTF-8
    assert len(result.stderr) < 4000


@pytest.mark.slow
def test_in_place_edit_of_an_installed_file_never_reaches_a_later_slug(tmp_path, runtime_seed):
    """Packages are hard links into uv's cache, so every layer holding six shares
    one six.py: a hook of a build holding the link lock appending to it changes
    uv's cache and another app's cached layer too. That layer is found damaged
    before it is restored, and the next install finds the file unlike its RECORD
    and installs it again."""
    site_packages = ".heroku/python/lib/python3.12/site-packages"
    # The hard-linked layers a build falls back to where no private overlay can be
    # mounted: under the overlay the hook's write never reaches the cache at all
    # (tests/pipeline/test_layer_overlay_build.py).
    env = {**os.environ, "SLUGBUILD_LAYER_OVERLAY": "0"}
    cache = seed_runtimes(runtime_seed, tmp_path / "cache")

    def shipped_six(slug):
        with tarfile.open(slug) as tar:
            return tar.extractfile(f"./{site_packages}/six.py").read()

    # Hash-checking mode leaves uv no choice of versions: the installs go wheel-only
    # and hard-link from uv's shared cache (an install that may resolve goes guarded
    # instead and copies through a private view: installers/common.py).
    six = ("six==1.17.0 --hash=sha256:"
           "4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274\n")
    idna = ("idna==3.10 --hash=sha256:"
            "946d195a0d259cbba61165e88e65941f16e9b36ea6ddb97f00452bae8b1287d3\n")
    other = make_app(tmp_path / "other", {**SMALL_APP, "requirements.txt": six + idna})
    assert run_cli("compile", other, "-o", tmp_path / "o1.tgz", "--cache-dir",
                   cache, env=env).returncode == 0
    app = make_app(tmp_path / "app", {
        **SMALL_APP, "requirements.txt": six,
        "bin/post_compile": f"#!/usr/bin/env bash\necho '# touched' >> {site_packages}/six.py\n",
    })
    (app / "bin" / "post_compile").chmod(0o755)
    first = run_cli("compile", app, "-o", tmp_path / "one.tgz", "--cache-dir", cache, env=env)
    assert first.returncode == 0, first.stderr
    assert "was discarded" in first.stderr
    assert any("# touched" in p.read_text() for p in (cache / "uv").rglob("six.py"))

    # The other app's cached layer shares that six.py: not restored, installed again.
    again = run_cli("compile", other, "-o", tmp_path / "o2.tgz", "--cache-dir", cache, env=env)
    assert again.returncode == 0, again.stderr
    assert "dependency layer" in again.stderr and "six.py: size changed" in again.stderr
    assert "Files of six in uv's cache are missing or differ" in again.stderr
    assert "(first: six.py)" in again.stderr
    assert b"# touched" not in shipped_six(tmp_path / "o2.tgz")
    assert not any("# touched" in p.read_text() for p in (cache / "uv").rglob("six.py"))

    (app / "bin" / "post_compile").write_text("#!/usr/bin/env bash\ntrue\n")
    second = run_cli("compile", app, "-o", tmp_path / "two.tgz", "--cache-dir", cache, env=env)
    assert second.returncode == 0, second.stderr
    assert "differ" not in second.stderr  # uv's cache is clean again
    assert b"# touched" not in shipped_six(tmp_path / "two.tgz")


@pytest.mark.slow
def test_in_place_edit_of_a_restored_file_discards_the_cached_layer(tmp_path, runtime_seed):
    app = make_app(tmp_path / "app", {
        **SMALL_APP, "requirements.txt": "six==1.17.0\n",
        # A hook that appends to a runtime file through its hard link into the cache.
        "bin/post_compile": "#!/usr/bin/env bash\n"
                            "echo '# touched' >> .heroku/python/lib/python3.12/os.py\n",
    })
    (app / "bin" / "post_compile").chmod(0o755)
    cache = seed_runtimes(runtime_seed, tmp_path / "cache")
    env = {**os.environ, "SLUGBUILD_LAYER_OVERLAY": "0"}  # as in the test above
    first = run_cli("compile", app, "-o", tmp_path / "one.tgz", "--cache-dir", cache, env=env)
    assert first.returncode == 0, first.stderr
    assert "was discarded" in first.stderr
    assert list((cache / "runtimes").iterdir()) == []  # never trusted again
    with tarfile.open(tmp_path / "one.tgz") as slug:  # not the layer's kept part
        shipped = slug.extractfile("./.heroku/python/lib/python3.12/os.py").read()
    assert shipped.endswith(b"# touched\n")
    (app / "bin" / "post_compile").write_text("#!/usr/bin/env bash\ntrue\n")
    second = run_cli("compile", app, "-o", tmp_path / "two.tgz", "--cache-dir", cache, env=env)
    assert second.returncode == 0, second.stderr
    assert "Installing Python" in second.stderr and "discarded" not in second.stderr
    runtime_os = next((cache / "runtimes").iterdir()) / "tree/lib/python3.12/os.py"
    assert "# touched" not in runtime_os.read_text()
