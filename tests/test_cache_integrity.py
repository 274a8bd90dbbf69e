"""The shared layer cache: no app may change another app's slug through it.

Adversarial: damaged layers, files lost from uv's cache, apps that ship or
write `.heroku/python`, concurrent builds editing files in place, caches
restored by tar (whole-second times), scratch directories of builds in other
PID namespaces, packages that overlap. Each test asserts the exact outcome:
never a wrong slug with exit 0.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

from slugbuild import records
from slugbuild.cache import Cache, LayerChanged, build_index, read_index
from slugbuild.dependencies import _explain_rebuild, _remember
from slugbuild.log import Reporter

from .helpers import make_app, run_cli, seed_runtimes, slug_differences, stealth_edit_hook

PY = "python3.12"
SITE = f".heroku/python/lib/{PY}/site-packages"
SITE_313 = ".heroku/python/lib/python3.13/site-packages"
SMALL_APP = {
    ".python-version": "3.12\n",
    "requirements.txt": "six==1.17.0\nidna==3.10\n",
    "Procfile": "web: python -m http.server $PORT\n",
    "app.py": "print('hello')\n",
}


# --- helpers -------------------------------------------------------------------------

def _members(slug: Path) -> dict[str, bytes]:
    with tarfile.open(slug) as tar:
        return {m.name[2:]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _slug_record_problems(slug: Path) -> list[str]:
    """Every file the slug's installed distributions list, present with its bytes."""
    files = _members(slug)
    problems = []
    for name, data in files.items():
        if not (name.startswith(SITE) and name.endswith(".dist-info/RECORD")):
            continue
        for path, digest, _size in records.parse_record(data.decode()):
            rel = os.path.normpath(os.path.join(SITE, path))
            if rel not in files:
                problems.append(f"{rel} missing")
            elif digest and hashlib.sha256(files[rel]).hexdigest() != digest:
                problems.append(f"{rel} differs")
    return problems


def _published_layers_complete(cache: Path) -> None:
    for kind in ("runtimes", "layers"):
        for layer in (cache / kind).iterdir():
            index = read_index(layer / "files.json")
            assert index is not None, layer
            fresh = build_index(layer / "tree")
            assert {k: v[3] for k, v in fresh["files"].items()} == \
                {k: v[3] for k, v in index["files"].items()}, layer
            if kind == "layers":
                assert records.layer_problems(layer / "tree", index) == [], layer


def _compile(app: Path, out: Path, cache: Path, *extra: str):
    return run_cli("compile", app, "-o", out, "--cache-dir", cache, *extra)


def _ok(result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stderr


def _first_build(tmp_path: Path, runtime_seed: Path) -> tuple[Path, Path, Path]:
    """SMALL_APP built once into a cache of its own (the runtime layer copied from
    the session's seed): the app, the cache, the slug."""
    app = make_app(tmp_path / "app", SMALL_APP)
    cache, first = seed_runtimes(runtime_seed, tmp_path / "cache"), tmp_path / "one.tgz"
    _ok(_compile(app, first, cache))
    return app, cache, first


# --- unit: files.json, verify, RECORDs, leases, bookkeeping ----------------------------

def _layer(cache: Cache, files: dict[str, bytes], name: str = "demo"):
    with cache.new_layer("layers", name, "k", {}) as tree:
        for rel, data in files.items():
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            (tree / rel).write_bytes(data)
        (tree / "link").symlink_to("a.txt")
    return cache.lookup("layers", name, "k")


def test_verify_finds_every_kind_of_damage(tmp_path):
    cache = Cache(tmp_path / "c")
    cases = {
        "truncated": lambda t: (t / "a.txt").write_bytes(b"x"),
        "same size, new bytes": lambda t: (t / "a.txt").write_bytes(b"HELLO"),
        "mode": lambda t: (t / "a.txt").chmod(0o755),
        "missing": lambda t: (t / "d/b.txt").unlink(),
        "extra": lambda t: (t / "d/new.py").write_text("x"),
        "symlink": lambda t: ((t / "link").unlink(), (t / "link").symlink_to("d/b.txt")),
    }
    for label, damage in cases.items():
        layer = _layer(cache, {"a.txt": b"hello", "d/b.txt": b"bee"}, label.replace(" ", "-")
                       .replace(",", ""))
        assert cache.verify(layer) == []
        damage(layer.tree)
        fresh = Cache(tmp_path / "c")  # another build: nothing remembered
        assert fresh.verify(layer) != [], label
        found, problems = fresh.lookup_verified("layers", layer.path.name, "k")
        assert found is None and problems, label
        assert not layer.path.exists(), label  # discarded


def test_whole_second_times_are_hashed_once_then_trusted(tmp_path):
    cache = Cache(tmp_path / "c")
    layer = _layer(cache, {"a.txt": b"hello", "d/b.txt": b"bee"})
    for path in (layer.tree / "a.txt", layer.tree / "d/b.txt"):
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns // 10**9 * 10**9 + 1))
    assert Cache(tmp_path / "c").verify(layer) == []  # contents match: restamped
    index = read_index(layer.path / "files.json")
    assert index["files"]["a.txt"][1] == (layer.tree / "a.txt").stat().st_mtime_ns
    # The protection is intact: new bytes with a transport-like time are caught.
    (layer.tree / "a.txt").write_bytes(b"HELLO")
    os.utime(layer.tree / "a.txt", (1, 1))
    assert Cache(tmp_path / "c").verify(layer) == ["a.txt: content changed"]


def test_a_copy_restore_refuses_a_file_changed_while_copied(tmp_path):
    cache = Cache(tmp_path / "c")
    layer = _layer(cache, {"a.txt": b"hello"})
    restored = cache.restore(layer, tmp_path / "into", copy=True)
    assert set(restored.copies) == {"a.txt"}
    assert (tmp_path / "into/a.txt").stat().st_ino != (layer.tree / "a.txt").stat().st_ino
    (layer.tree / "a.txt").write_bytes(b"HELLO")  # another build's in-place edit
    with pytest.raises(LayerChanged):
        cache.restore(layer, tmp_path / "again", copy=True)
    assert not (tmp_path / "again/a.txt").exists()


def test_record_checks_see_missing_changed_and_overlapping_files(tmp_path):
    site = tmp_path / "lib/python3.12/site-packages"

    def dist(name: str, files: dict[str, bytes]) -> None:
        lines = []
        for rel, data in files.items():
            (site / rel).parent.mkdir(parents=True, exist_ok=True)
            (site / rel).write_bytes(data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            lines.append(f"{rel},sha256={digest.decode()},{len(data)}")
        info = site / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "RECORD").write_text("\n".join(lines + [f"{info.name}/RECORD,,"]) + "\n")

    dist("alpha", {"alpha.py": b"a", "tests/conftest.py": b"# alpha\n"})
    dist("beta", {"beta.py": b"b", "tests/conftest.py": b"# beta\n"})
    index = build_index(tmp_path)
    assert records.layer_problems(tmp_path, index) == []
    (site / "alpha.py").unlink()
    index = build_index(tmp_path)
    assert records.layer_problems(tmp_path, index) == [
        "lib/python3.12/site-packages/alpha.py (of alpha) is missing"]

    from slugbuild.installers.uv import check_installed

    infos = {"alpha-1.0.dist-info", "beta-1.0.dist-info"}
    changed, overlapped, winners = check_installed(site, infos)
    assert changed == {"alpha-1.0.dist-info": ["alpha.py"]}  # missing counts
    assert list(overlapped) == ["tests/conftest.py"] and winners == set()
    (site / "tests/conftest.py").write_bytes(b"# alpha\n")  # the other one won
    assert check_installed(site, infos)[2] == {"beta"}


def test_scratch_of_a_live_build_survives_whatever_its_pid(tmp_path):
    """Liveness is the lease's flock, not a PID: a holder whose PID means nothing
    here (another namespace) keeps its scratch; a dead one's is removed."""
    root = tmp_path / "c"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from slugbuild.cache import Cache; "
         f"c = Cache({str(root)!r}); print(c.scratch_dir('build'), flush=True); "
         "time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        scratch = Path(holder.stdout.readline().strip())
        assert scratch.is_dir()
        Cache(root)
        assert scratch.is_dir()
        unshare = shutil.which("unshare")
        if unshare and subprocess.run([unshare, "--pid", "--fork", "true"]).returncode == 0:
            # A cleaner in a PID namespace of its own, where the holder's PID is unknown.
            subprocess.run([unshare, "--pid", "--fork", sys.executable, "-c",
                            f"from slugbuild.cache import Cache; Cache({str(root)!r})"],
                           check=True)
            assert scratch.is_dir()
    finally:
        holder.kill()
        holder.wait()
    Cache(root)
    assert not scratch.exists() and list((root / "tmp").iterdir()) == []
    assert [p.name for p in (root / "locks/leases").iterdir()] == [
        f"{Cache(root).lease.token}.lease"]


def test_bookkeeping_never_fails_a_build(tmp_path):
    cache = Cache(tmp_path / "c")
    (cache.root / "history").rmdir()  # made when the cache opened (cache.TOP_DIRS)
    (cache.root / "history").write_text("not a directory")
    _remember(cache, tmp_path, {"files": {}})  # no exception
    (cache.root / "history").unlink()
    _remember(cache, tmp_path, {"files": {}})
    history = next((cache.root / "history").iterdir())
    history.write_text(json.dumps({"files": ["not", "a", "mapping"], "runtime": 3}))
    reporter = Reporter(quiet=True)
    _explain_rebuild(cache, tmp_path, {"files": {"requirements.txt": "x"}}, reporter)
    history.write_text("[1, 2")
    _explain_rebuild(cache, tmp_path, {"files": {}}, reporter)


# --- end to end ----------------------------------------------------------------------

@pytest.mark.slow
def test_a_damaged_runtime_layer_is_rebuilt_not_shipped(tmp_path, runtime_seed):
    app, cache, first = _first_build(tmp_path, runtime_seed)
    tree = next((cache / "runtimes").iterdir()) / "tree"
    damage = [
        lambda: (tree / f"lib/{PY}/textwrap.py").write_bytes(b"# truncated\n"),
        lambda: (tree / f"bin/{PY}").chmod(0o644),
        lambda: (tree / f"lib/{PY}/json/encoder.py").write_bytes(
            b"X" * (tree / f"lib/{PY}/json/encoder.py").stat().st_size),
    ]
    for number, act in enumerate(damage):
        tree = next((cache / "runtimes").iterdir()) / "tree"
        act()
        out = tmp_path / f"again{number}.tgz"
        stderr = _ok(_compile(app, out, cache))
        assert "The cached Python 3.12.1 runtime layer was damaged" in stderr
        assert "Installing Python 3.12.1" in stderr
        assert out.read_bytes() == first.read_bytes()
    _published_layers_complete(cache)


@pytest.mark.slow
def test_files_lost_from_uvs_cache_or_a_layer_are_installed_again(tmp_path, runtime_seed):
    cache = seed_runtimes(runtime_seed, tmp_path / "cache")
    reference = tmp_path / "reference.tgz"
    # Hash-checking mode leaves uv no choice of versions, so the installs go wheel-only
    # and keep and take six in uv's shared archive (installers/common.py; an install
    # that may resolve goes guarded: a private view of the caches, nothing kept).
    hashed = ("six==1.17.0 --hash=sha256:"
              "4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274\n")
    app = make_app(tmp_path / "app", {**SMALL_APP, "requirements.txt": hashed})
    _ok(_compile(app, reference, cache))
    six = _members(reference)[f"{SITE}/six.py"]

    # Lost from uv's archive: the next install that takes six from it is healed.
    for path in (cache / "uv").rglob("six.py"):
        path.unlink()
    other = make_app(tmp_path / "other", {**SMALL_APP, "requirements.txt": (
        hashed + "# another app\n")})
    # A clean install (not one built from the app's layer, which would take six from
    # that verified layer and never read uv's cache).
    clean = {**os.environ, "SLUGBUILD_INCREMENTAL": "0"}
    stderr = _ok(run_cli("compile", other, "-o", tmp_path / "other.tgz", "--cache-dir", cache,
                         env=clean))
    assert "Files of six in uv's cache are missing or differ" in stderr
    assert "(first: six.py)" in stderr
    assert _members(tmp_path / "other.tgz")[f"{SITE}/six.py"] == six
    assert _slug_record_problems(tmp_path / "other.tgz") == []

    # Lost from a cached layer: found before it is restored.
    for layer in (cache / "layers").iterdir():
        (layer / f"tree/lib/{PY}/site-packages/six.py").unlink()
    stderr = _ok(_compile(app, tmp_path / "again.tgz", cache))
    assert "was damaged (lib/python3.12/site-packages/six.py: missing)" in stderr
    assert (tmp_path / "again.tgz").read_bytes() == reference.read_bytes()
    stderr = _ok(_compile(other, tmp_path / "other-again.tgz", cache))
    assert "six.py: missing" in stderr
    assert (tmp_path / "other-again.tgz").read_bytes() == (tmp_path / "other.tgz").read_bytes()
    _published_layers_complete(cache)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["shipped", "pre_compile"])
def test_an_app_writing_heroku_python_never_gives_others_an_incomplete_layer(tmp_path, how,
                                                                           runtime_seed):
    cache = seed_runtimes(runtime_seed, tmp_path / "cache")
    files = dict(SMALL_APP)
    if how == "shipped":
        files[f"{SITE}/six.py"] = "# the app's own six\n"
    else:
        files["bin/pre_compile"] = (f"#!/usr/bin/env bash\nmkdir -p {SITE}\n"
                                    f"echo '# the app s own six' > {SITE}/six.py\n")
    writer = make_app(tmp_path / "writer", files)
    if how == "pre_compile":
        (writer / "bin/pre_compile").chmod(0o755)
    _ok(_compile(writer, tmp_path / "writer.tgz", cache))
    assert _slug_record_problems(tmp_path / "writer.tgz") == []
    _published_layers_complete(cache)

    plain = make_app(tmp_path / "plain", SMALL_APP)
    _ok(_compile(plain, tmp_path / "plain.tgz", cache))
    _ok(_compile(plain, tmp_path / "clean.tgz",
                 seed_runtimes(runtime_seed, tmp_path / "clean-cache")))
    assert (tmp_path / "plain.tgz").read_bytes() == (tmp_path / "clean.tgz").read_bytes()
    assert _slug_record_problems(tmp_path / "plain.tgz") == []


@pytest.mark.slow
def test_a_cache_carried_by_tar_is_reused_and_still_checked(tmp_path, runtime_seed):
    """CI caches travel as tar archives with whole-second times (GNU tar's default)."""
    app, cache, first = _first_build(tmp_path, runtime_seed)
    archive = tmp_path / "cache.tar"
    subprocess.run(["tar", "--format=gnu", "-cf", archive, "-C", tmp_path, "cache"], check=True)
    shutil.rmtree(cache)
    subprocess.run(["tar", "-xf", archive, "-C", tmp_path], check=True)
    stderr = _ok(_compile(app, tmp_path / "two.tgz", cache))
    assert "Restoring Python 3.12.1 from cache" in stderr
    assert "Restoring dependencies from cache" in stderr
    assert "damaged" not in stderr and "Installing" not in stderr
    assert (tmp_path / "two.tgz").read_bytes() == first.read_bytes()
    for layer in [*(cache / "runtimes").iterdir(), *(cache / "layers").iterdir()]:
        index = read_index(layer / "files.json")  # restamped: the next check is stats
        assert all((layer / "tree" / rel).stat().st_mtime_ns == entry[1]
                   for rel, entry in index["files"].items())

    # Same trip, but one file's bytes changed on the way (same size): still caught.
    shutil.rmtree(cache)
    subprocess.run(["tar", "-xf", archive, "-C", tmp_path], check=True)
    six = next((cache / "layers").iterdir()) / f"tree/lib/{PY}/site-packages/six.py"
    data = six.read_bytes()
    six.write_bytes(data.replace(b"import", b"IMPORT", 1))
    stderr = _ok(_compile(app, tmp_path / "three.tgz", cache))
    assert "six.py: content changed" in stderr
    assert (tmp_path / "three.tgz").read_bytes() == first.read_bytes()


def _make_wheel(directory: Path, name: str, files: dict[str, bytes],
                lying: str | None = None) -> Path:
    """A wheel of ``files``; its RECORD gives ``lying`` (a path) a wrong digest."""
    dist_info = f"{name}-1.0.dist-info"
    entries = {
        **files,
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n\n"
                                 .encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n",
    }
    lines = []
    for rel, data in entries.items():
        hashed = data + b"lie" if rel == lying else data
        digest = base64.urlsafe_b64encode(hashlib.sha256(hashed).digest()).rstrip(b"=").decode()
        lines.append(f"{rel},sha256={digest},{len(data)}")
    entries[f"{dist_info}/RECORD"] = ("\n".join(lines + [f"{dist_info}/RECORD,,"]) + "\n").encode()
    wheel = directory / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for rel, data in entries.items():
            archive.writestr(zipfile.ZipInfo(rel, (2020, 1, 1, 0, 0, 0)), data)
    return wheel


@pytest.fixture()
def overlapping_index(tmp_path):
    """A loopback simple index serving two wheels that both ship tests/conftest.py,
    and one (gamma) whose RECORD lists a wrong digest for gamma.py."""
    root = tmp_path / "index"
    (root / "files").mkdir(parents=True)
    for name in ("alpha", "beta", "gamma"):
        wheel = _make_wheel(root / "files", name, {
            f"{name}.py": f"NAME = {name!r}\n".encode(),
            "tests/__init__.py": b"",
            "tests/conftest.py": f"# conftest of {name}\n".encode(),
        } if name != "gamma" else {"gamma.py": b"NAME = 'gamma'\n"},
            lying="gamma.py" if name == "gamma" else None)
        page = root / "simple" / name
        page.mkdir(parents=True)
        sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
        (page / "index.html").write_text(
            f'<html><body><a href="/files/{wheel.name}#sha256={sha}">{wheel.name}</a>'
            f"</body></html>\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_overlapping_packages_are_one_warning_and_the_same_bytes(tmp_path, overlapping_index,
                                                                 runtime_seed):
    # 3.13: no setuptools baseline, which this index (only test wheels) lacks.
    app = make_app(tmp_path / "app", {**SMALL_APP, ".python-version": "3.13\n",
                                      "requirements.txt": "alpha==1.0\nbeta==1.0\n"})
    env = ("--env", f"PIP_INDEX_URL={overlapping_index}")
    slugs = []
    for number in range(3):  # two cold caches, then a warm build
        cache = tmp_path / f"cache{min(number, 1)}"
        if number < 2:  # cold dependency layers; the runtime's is copied
            seed_runtimes(runtime_seed, cache, "3.13")
        out = tmp_path / f"{number}.tgz"
        stderr = _ok(_compile(app, out, cache, *env))
        slugs.append(out.read_bytes())
        assert "differ" not in stderr and "Cleaning" not in stderr
        assert "a build step may have written" not in stderr
        warnings = [line for line in stderr.splitlines() if "both install" in line]
        if number < 2:
            assert len(warnings) == 1, stderr
            assert "Packages alpha and beta both install tests/conftest.py" in warnings[0]
            assert "the copy of beta is kept" in warnings[0]
        else:
            assert warnings == [] and "Restoring dependencies from cache" in stderr
        assert _members(out)[f"{SITE_313}/tests/conftest.py"] == b"# conftest of beta\n"
    assert slugs[0] == slugs[1] == slugs[2]
    _published_layers_complete(tmp_path / "cache1")


def _wait_for(marker: Path) -> str:
    return f"for i in $(seq 1 600); do [ -e {marker} ] && break; sleep 0.1; done\n"


@pytest.mark.slow
@pytest.mark.parametrize("editor_first", [True, False])
def test_an_in_place_edit_by_one_build_never_reaches_another_builds_slug(tmp_path,
                                                                        editor_first,
                                                                        runtime_seed):
    """App X's post_compile hook appends, in place, to a runtime file and to six.py
    (whose file uv's cache shares with app Y's layer) exactly while app Y, which
    restored the same layers, is inside its own post_compile hook. Whichever build
    started first (holds the link lock), Y's slug is the one Y builds alone, and X's
    slug holds X's edits."""
    cache = seed_runtimes(runtime_seed, tmp_path / "cache")
    x_waiting, y_inside, x_done = (tmp_path / name for name in ("x-waiting", "y-in", "x-done"))
    textwrap = f".heroku/python/lib/{PY}/textwrap.py"
    editor = make_app(tmp_path / "x", {
        **SMALL_APP, "requirements.txt": "six==1.17.0\n",
        "bin/post_compile": (
            f"#!/usr/bin/env bash\ntouch {x_waiting}\n" + _wait_for(y_inside)
            + "for i in $(seq 1 30); do\n"
            f"  echo '# edited by x' >> {textwrap}\n"
            f"  echo '# edited by x' >> {SITE}/six.py\n"
            "  sleep 0.05\n"
            f"done\ntouch {x_done}\n"),
    })
    other = make_app(tmp_path / "y", {
        **SMALL_APP,
        "bin/post_compile": f"#!/usr/bin/env bash\ntouch {y_inside}\n" + _wait_for(x_done),
    })
    for app in (editor, other):
        (app / "bin/post_compile").chmod(0o755)
    for marker in (y_inside, x_done):
        marker.touch()  # the warm-up builds do not wait
    reference = tmp_path / "reference.tgz"
    _ok(_compile(other, reference, cache))  # the layers X shares with Y are in the cache
    assert b"edited by x" not in _members(reference)[textwrap]
    for marker in (y_inside, x_done):
        marker.unlink()

    def start(app: Path, out: Path) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "slugbuild", "compile", str(app), "-o", str(out),
             "--cache-dir", str(cache)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)

    if editor_first:
        x = start(editor, tmp_path / "x.tgz")
        while not x_waiting.exists() and x.poll() is None:
            time.sleep(0.05)
        y = start(other, tmp_path / "y.tgz")
    else:
        y = start(other, tmp_path / "y.tgz")
        while not y_inside.exists() and y.poll() is None:
            time.sleep(0.05)
        x = start(editor, tmp_path / "x.tgz")
    _, x_err = x.communicate(timeout=300)
    _, y_err = y.communicate(timeout=300)
    assert x.returncode == 0, x_err
    assert y.returncode == 0, y_err
    assert _members(tmp_path / "x.tgz")[textwrap].endswith(b"# edited by x\n")
    members = _members(tmp_path / "y.tgz")
    assert b"edited by x" not in members[textwrap]
    assert b"edited by x" not in members[f"{SITE}/six.py"]
    assert slug_differences(tmp_path / "y.tgz", reference) == []
    assert (tmp_path / "y.tgz").read_bytes() == reference.read_bytes()
    y_inside.unlink()
    final = tmp_path / "final.tgz"
    _ok(_compile(other, final, cache))
    assert final.read_bytes() == reference.read_bytes()
    _published_layers_complete(cache)


@pytest.mark.slow
def test_a_layer_unlike_its_records_is_used_once_and_never_published(tmp_path,
                                                                       overlapping_index,
                                                                       runtime_seed):
    """gamma's own RECORD is wrong: reinstalling cannot fix it, so the layer is not
    complete for its key. The build ships what was installed, exit 0, caches nothing."""
    app = make_app(tmp_path / "app", {**SMALL_APP, ".python-version": "3.13\n",
                                      "requirements.txt": "gamma==1.0\n"})
    cache = seed_runtimes(runtime_seed, tmp_path / "cache", "3.13")
    for number in range(2):
        out = tmp_path / f"{number}.tgz"
        stderr = _ok(_compile(app, out, cache, "--env", f"PIP_INDEX_URL={overlapping_index}"))
        assert "The installed packages were not cached" in stderr
        assert "gamma.py (of gamma) is not what its RECORD lists" in stderr
        assert "Installed 1 packages (not cached)" in stderr
        assert _members(out)[f"{SITE_313}/gamma.py"] == b"NAME = 'gamma'\n"
        assert list((cache / "layers").iterdir()) == []
        assert [p.name for p in (cache / "tmp").iterdir()] == []
    assert (tmp_path / "0.tgz").read_bytes() == (tmp_path / "1.tgz").read_bytes()


@pytest.mark.slow
def test_a_build_in_another_pid_namespace_leaves_a_running_build_alone(tmp_path,
                                                                        runtime_seed):
    """Two containers sharing one cache: the second build's cleanup must not take the
    first one's scratch directory for abandoned (its PID means nothing there)."""
    unshare = shutil.which("unshare")
    if not unshare or subprocess.run([unshare, "--pid", "--fork", "true"]).returncode:
        pytest.skip("cannot make a PID namespace here")
    cache, inside = tmp_path / "cache", tmp_path / "inside"
    _, _, reference = _first_build(tmp_path, runtime_seed)
    slow = make_app(tmp_path / "slow", {
        **SMALL_APP, "bin/post_compile": f"#!/usr/bin/env bash\ntouch {inside}\nsleep 3\n"})
    (slow / "bin/post_compile").chmod(0o755)
    running = subprocess.Popen(
        [sys.executable, "-m", "slugbuild", "compile", str(slow), "-o", str(tmp_path / "s.tgz"),
         "--cache-dir", str(cache)], stderr=subprocess.PIPE, text=True)
    while not inside.exists() and running.poll() is None:
        time.sleep(0.05)
    other = subprocess.run(
        [unshare, "--pid", "--fork", sys.executable, "-m", "slugbuild", "compile",
         str(tmp_path / "app"), "-o", str(tmp_path / "other.tgz"), "--cache-dir", str(cache)],
        capture_output=True, text=True, timeout=300)
    assert other.returncode == 0, other.stderr
    _, stderr = running.communicate(timeout=300)
    assert running.returncode == 0, stderr
    assert (tmp_path / "other.tgz").read_bytes() == reference.read_bytes()
    assert _slug_record_problems(tmp_path / "s.tgz") == []
    assert list((cache / "tmp").iterdir()) == []


def test_a_buildpacks_cache_dir_is_per_app(tmp_path):
    """The hello buildpack counts its builds in CACHE_DIR: per app, as on Heroku."""
    from slugbuild import compile_app

    from .helpers import FIXTURE_APPS

    hello = str(FIXTURE_APPS.parent / "buildpacks" / "hello")
    cache = tmp_path / "cache"

    def build(app: Path, number: int) -> str:
        result = compile_app(app, tmp_path / f"{app.name}{number}.tgz", cache_dir=cache,
                             reporter=Reporter(quiet=True), buildpacks=[hello])
        return "\n".join(result.log)

    one = make_app(tmp_path / "one", {"hello.txt": "hi\n"})
    two = make_app(tmp_path / "two", {"hello.txt": "hi\n"})
    assert "build number 1" in build(one, 1)
    assert "build number 2" in build(one, 2)
    assert "build number 1" in build(two, 1)  # never sees one's CACHE_DIR


@pytest.mark.slow
def test_a_layer_changing_while_copied_is_made_again_or_the_build_stops(tmp_path, monkeypatch,
                                                                         runtime_seed):
    """A copying build that sees a cached file change under it (another build's edit)
    discards the layer and makes it again; if that keeps happening it stops with
    cache-layer-changing and writes nothing."""
    from slugbuild import compile_app, errors
    from slugbuild.cache import Cache as RealCache
    from slugbuild.context import RESTORE_ATTEMPTS

    app, cache, reference = _first_build(tmp_path, runtime_seed)
    real_restore = RealCache.restore
    failures = {"left": 1}

    def flaky_restore(self, layer, target, copy=False):
        if layer.path.parent.name == "layers" and failures["left"] > 0:
            failures["left"] -= 1
            raise LayerChanged(f"lib/{PY}/site-packages/six.py")
        return real_restore(self, layer, target, copy=True)

    monkeypatch.setattr(RealCache, "restore", flaky_restore)
    # A copying build: another holds the link lock (a linking build shows layers by a
    # view and copies nothing).
    with RealCache(cache).exclusive_links() as holding:
        assert holding
        out = tmp_path / "again.tgz"
        result = compile_app(app, out, cache_dir=cache, reporter=Reporter(quiet=True))
        log = "\n".join(result.log)
        assert "changed while this build read it" in log and "Installing requirements" in log
        assert out.read_bytes() == reference.read_bytes()

        failures["left"] = RESTORE_ATTEMPTS
        stopped = tmp_path / "stopped.tgz"
        with pytest.raises(errors.SlugbuildError) as caught:
            compile_app(app, stopped, cache_dir=cache, reporter=Reporter(quiet=True))
        assert caught.value.code == "cache-layer-changing"
        assert not stopped.exists() and not stopped.with_suffix(".json").exists()


_STEALTH_EDIT = stealth_edit_hook(f"{SITE}/six.py")


@pytest.mark.slow
def test_a_stealthy_in_place_edit_reaches_neither_the_cache_nor_another_app(tmp_path,
                                                                             runtime_seed):
    """The editing app's own slug holds its edit; a later app with the same
    requirements, on the same cache, gets the clean file (as a clean cache gives)."""
    cache = seed_runtimes(runtime_seed, tmp_path / "cache")
    editor = make_app(tmp_path / "editor", {**SMALL_APP, "bin/post_compile": _STEALTH_EDIT})
    (editor / "bin/post_compile").chmod(0o755)
    plain = make_app(tmp_path / "plain", SMALL_APP)
    _ok(_compile(plain, tmp_path / "warm-up.tgz", cache))  # the layer is cached first
    _ok(_compile(editor, tmp_path / "editor.tgz", cache))
    assert b"POISONED" in _members(tmp_path / "editor.tgz")[f"{SITE}/six.py"]
    _ok(_compile(plain, tmp_path / "plain.tgz", cache))
    _ok(_compile(plain, tmp_path / "clean.tgz",
                 seed_runtimes(runtime_seed, tmp_path / "clean-cache")))
    assert b"POISONED" not in _members(tmp_path / "plain.tgz")[f"{SITE}/six.py"]
    assert (tmp_path / "plain.tgz").read_bytes() == (tmp_path / "clean.tgz").read_bytes()
