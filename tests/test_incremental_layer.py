"""A dependency layer built from the app's previous one plus the difference (incremental.py)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from slugbuild import compile_app, incremental
from slugbuild.cache import Cache, read_index
from slugbuild.installers import InstallPlan
from slugbuild.log import Reporter

from .helpers import FIXTURE_APPS, REPO, copy_app, make_app, seed_runtimes

PLAN = InstallPlan(name="pip", tool="uv", version="uv==0.13.9, every requirement pinned",
                   key_files=("requirements.txt",))
INPUTS = {"runtime": "cpython-3.12.1-x", "runtime_key": "k", "installer": "pip uv",
          "installer_config_sha256": "c", "files": {"requirements.txt": "a"},
          "layer_format": 3}


def test_only_a_change_of_requirements_files_builds_from_the_previous_layer():
    changed_files = {**INPUTS, "files": {"requirements.txt": "b", "more.txt": "c"},
                     "resolved": {"six": "1.17.0"}, "resolved_sha256": "r"}  # ranges' pins
    assert incremental.why_not_incremental(INPUTS, changed_files, PLAN, True, False) is None
    assert incremental.why_not_incremental(None, INPUTS, PLAN, True, False) == \
        "no previous layer of this app"
    assert "prefix" in incremental.why_not_incremental(INPUTS, INPUTS, PLAN, False, False)
    assert "local packages" in incremental.why_not_incremental(INPUTS, INPUTS, PLAN, True, True)
    pip = InstallPlan(name="pip", tool="pip", version="pip 26", key_files=())
    assert "not uv" in incremental.why_not_incremental(INPUTS, INPUTS, pip, True, False)
    for name, value in [("runtime_key", "other"), ("installer", "pip uv 2"),
                        ("installer_config_sha256", "d"), ("baseline", ["setuptools==1"]),
                        ("constraints_sha256", "e"), ("aptfile_sha256", "f")]:
        reason = incremental.why_not_incremental(INPUTS, {**INPUTS, name: value}, PLAN,
                                                 True, False)
        assert reason == f"the previous layer differs in {name}"


def test_a_previous_file_no_single_distribution_owns_refuses_the_layer(tmp_path):
    tree = tmp_path / "tree"
    site = tree / "lib/python3.12/site-packages"
    (site / "pkg/__pycache__").mkdir(parents=True)
    (site / "pkg/mod.py").write_text("X = 1\n")
    (site / "pkg/__pycache__/mod.cpython-312.pyc").write_bytes(b"pyc")
    dist = site / "pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: Pkg\nVersion: 1.0\n\n")
    (dist / "RECORD").write_text("pkg/mod.py,,\npkg-1.0.dist-info/METADATA,,\n"
                                 "pkg-1.0.dist-info/RECORD,,\n")

    def index() -> dict:
        files = {str(p.relative_to(tree)): [0, 0, 0, "", 0]
                 for p in tree.rglob("*") if p.is_file()}
        return {"files": files, "symlinks": {}}

    found = incremental._distributions(tree, index(), "python3.12")
    assert set(found) == {"pkg"}
    assert found["pkg"].version == "1.0"
    # The pyc of a listed source is the distribution's, with what its RECORD lists.
    assert "lib/python3.12/site-packages/pkg/__pycache__/mod.cpython-312.pyc" \
        in found["pkg"].files
    (site / "stray.pth").write_text("import os\n")  # no RECORD lists it
    with pytest.raises(incremental.NotIncremental, match="stray.pth belongs to no"):
        incremental._distributions(tree, index(), "python3.12")


def test_the_reuse_line_says_whose_layer_it_is(tmp_path):
    """The layer this app directory built last is "the previous layer"; the nearest
    cached one (another app directory's) is named as such, never as the app's own."""
    from slugbuild.cache import Layer

    layer = Layer(tmp_path / ("a" * 24), {})
    own = incremental.PreviousLayer(layer, {}, {})
    assert incremental.reuse_line(own, 3, 4, 1) == (
        "Reusing 3 of the previous layer's 4 packages (layer aaaaaaaaaaaa); installing 1")
    other = incremental.reuse_line(incremental.PreviousLayer(layer, {}, {}, nearest=True),
                                   3, 4, 1)
    assert "previous layer" not in other
    assert other.startswith("Reusing 3 of the 4 packages of the nearest cached layer "
                            "(layer aaaaaaaaaaaa, made for another app directory")
    assert other.endswith("installing 1")


def test_the_source_of_a_pyc():
    assert incremental._source_of("a/b/__pycache__/m.cpython-312.pyc") == "a/b/m.py"
    assert incremental._source_of("a/b/__pycache__/m.cpython-312.opt-1.pyc") == "a/b/m.py"
    assert incremental._source_of("a/b/m.py") == ""
    assert incremental._source_of("a/__pycache__/README") == ""


def _build(app: Path, out: Path, cache: Path) -> tuple[str, list[str], set[str]]:
    """The slug's sha256, the log, and the app's layer if this build made it. The
    layer is the one the app's history names, not whatever appeared in layers/: the
    session cache is shared with builds of other tests running meanwhile (xdist)."""
    before = set(os.listdir(cache / "layers")) if (cache / "layers").is_dir() else set()
    result = compile_app(app, out, cache_dir=cache, reporter=Reporter(quiet=True))
    return result.sha256, result.log, {_current_layer(cache, app)} - before


REQUIREMENTS = {
    "a": "# incremental layer test\nsix==1.17.0\nidna==3.10\n",
    "added": "# incremental layer test\nsix==1.17.0\nidna==3.10\npackaging==24.2\n",
    # packaging removed, idna downgraded: from the "added" layer.
    "changed": "# incremental layer test\nsix==1.17.0\nidna==3.9\n",
}


@pytest.mark.slow
def test_a_layer_built_from_the_previous_one_is_the_clean_one(tmp_path, cache_dir,
                                                               runtime_seed):
    """A, then A plus one package built from A's layer, then one package removed and
    one changed: each slug byte-identical to a clean build of the same requirements
    (in another cache); the new layer shares the unchanged files with the previous
    one, which stays intact."""
    base = {".python-version": "3.12\n", "Procfile": "web: python -m http.server $PORT\n"}
    clean_cache = seed_runtimes(runtime_seed, tmp_path / "clean-cache")
    clean = {}
    for kind in ("added", "changed"):
        app = make_app(tmp_path / f"clean-{kind}", {**base, "requirements.txt":
                                                    REQUIREMENTS[kind]})
        clean[kind], log, made = _build(app, tmp_path / f"clean-{kind}.tgz", clean_cache)
        assert not any("Reusing" in line for line in log)
        for name in made:  # not a layer the next clean build could start from
            shutil.rmtree(clean_cache / "layers" / name)
    shutil.rmtree(clean_cache)

    app = make_app(tmp_path / "app", {**base, "requirements.txt": REQUIREMENTS["a"]})
    _, _, made = _build(app, tmp_path / "a.tgz", cache_dir)
    layers = cache_dir / "layers"
    previous = layers / (made.pop() if made else _current_layer(cache_dir, app))
    index_before = _contents(previous)

    (app / "requirements.txt").write_text(REQUIREMENTS["added"])
    sha, log, (added,) = _build(app, tmp_path / "added.tgz", cache_dir)
    assert sha == clean["added"]
    assert any("Reusing 3 of the previous layer's 3 packages" in line
               and "installing 1" in line for line in log), log
    six = "lib/python3.12/site-packages/six.py"
    assert (layers / added / "tree" / six).stat().st_ino == (previous / "tree" / six).stat().st_ino
    assert Cache(cache_dir).verify(_layer(cache_dir, previous)) == []
    assert _contents(previous) == index_before  # ctimes aside: linking moves them

    (app / "requirements.txt").write_text(REQUIREMENTS["changed"])
    sha, log, (changed,) = _build(app, tmp_path / "changed.tgz", cache_dir)
    assert sha == clean["changed"]
    assert any("Reusing 2 of the previous layer's 4 packages" in line
               and "installing 1" in line for line in log), log
    index = read_index(layers / changed / "files.json")
    assert index is not None
    assert not any(rel.startswith("lib/python3.12/site-packages/packaging")
                   for rel in index["files"])

    # Another directory of the same app (a build directory made afresh, as Dokku's):
    # built from the nearest layer of the same runtime and installer.
    other = make_app(tmp_path / "other", {**base, "requirements.txt":
                                          REQUIREMENTS["changed"] + "packaging==24.2\n"})
    _, log, _ = _build(other, tmp_path / "other.tgz", cache_dir)
    assert any("Reusing" in line and "installing 1" in line for line in log), log
    # ... and the log does not pass that layer off as this directory's own.
    assert any("of the nearest cached layer" in line and "another app directory" in line
               for line in log), log
    assert not any("the previous layer's" in line for line in log), log

    # The app directory's own previous layer gone: the nearest one still serves.
    shutil.rmtree(layers / changed)
    (app / "requirements.txt").write_text("# incremental layer test\nsix==1.17.0\n")
    _, log, _ = _build(app, tmp_path / "again.tgz", cache_dir)
    assert any("Reusing" in line and "installing 0" in line
               and "of the nearest cached layer" in line for line in log), log


@pytest.mark.slow
def test_a_tampered_previous_part_never_reaches_the_slug(tmp_path, runtime_seed):
    """The previous layer's kept part with a byte flipped in every unit (its size kept
    and its record's SHA-256 made to match, as a hook writing the shared packed/
    directory could): the layer built from it, which names it as its donor, still
    packs to the clean build's slug."""
    base = {".python-version": "3.12\n", "Procfile": "web: python -m http.server $PORT\n"}
    clean_app = make_app(tmp_path / "clean", {**base, "requirements.txt": REQUIREMENTS["added"]})
    clean, _, _ = _build(clean_app, tmp_path / "clean.tgz",
                         seed_runtimes(runtime_seed, tmp_path / "clean-cache"))
    cache_dir = seed_runtimes(runtime_seed, tmp_path / "cache")
    app = make_app(tmp_path / "app", {**base, "requirements.txt": REQUIREMENTS["a"]})
    _build(app, tmp_path / "a.tgz", cache_dir)
    previous = cache_dir / "layers" / _current_layer(cache_dir, app)
    [part] = (previous / "packed").glob("*.gz")
    record = json.loads(part.with_suffix(".json").read_text())
    data, offset = bytearray(part.read_bytes()), 0
    for _, _, _, length in record["units"]:
        data[offset + length // 2] ^= 0x55
        offset += length
    part.write_bytes(data)
    part.with_suffix(".json").write_text(json.dumps(
        {**record, "sha256": hashlib.sha256(data).hexdigest()}))

    (app / "requirements.txt").write_text(REQUIREMENTS["added"])
    sha, log, (added,) = _build(app, tmp_path / "added.tgz", cache_dir)
    assert any("Reusing 3 of the previous layer's 3 packages" in line for line in log), log
    assert json.loads((cache_dir / "layers" / added / "packed/donor").read_text()) == {
        "layer": previous.name, "key": json.loads((previous / "manifest.json").read_text())["key"]}
    assert sha == clean


def _contents(layer: Path) -> dict:
    index = read_index(layer / "files.json")
    assert index is not None
    return {rel: entry[:4] for rel, entry in index["files"].items()}


def _current_layer(cache_dir: Path, app: Path) -> str:
    """The layer the history names for ``app`` (when it was in the cache already)."""
    from slugbuild.dependencies import _history_path

    inputs = json.loads(_history_path(Cache(cache_dir), app).read_text())
    return incremental.layer_key_of(inputs)[:24]


def _layer(cache_dir: Path, path: Path):
    manifest = json.loads((path / "manifest.json").read_text())
    layer = Cache(cache_dir).lookup("layers", path.name, manifest["key"])
    assert layer is not None
    return layer


@pytest.mark.slow
def test_a_previous_layer_changed_in_place_is_not_built_onto(tmp_path, runtime_seed):
    """A file of the previous layer written through a hard link, its size and mtime
    put back (only its ctime and bytes tell): the new layer is installed clean,
    never carrying the changed bytes. (A cache of its own: the file is also uv's
    cached one, shared with every layer holding it.)"""
    cache_dir = seed_runtimes(runtime_seed, tmp_path / "cache")
    base = {".python-version": "3.12\n", "Procfile": "web: python -m http.server $PORT\n"}
    first = "# incremental layer tamper test\nsix==1.17.0\n"
    app = make_app(tmp_path / "app", {**base, "requirements.txt": first})
    _build(app, tmp_path / "a.tgz", cache_dir)
    previous = cache_dir / "layers" / _current_layer(cache_dir, app)
    six = previous / "tree/lib/python3.12/site-packages/six.py"
    original = six.read_bytes()
    st = six.stat()
    tampered = original.replace(b"Utilities", b"UTILITIES", 1)
    assert tampered != original
    with open(six, "r+b") as handle:  # in place: the same inode, as a hook writing through a link
        handle.write(tampered)
    os.utime(six, ns=(st.st_atime_ns, st.st_mtime_ns))

    (app / "requirements.txt").write_text(first + "idna==3.10\n")
    _, log, (made,) = _build(app, tmp_path / "b.tgz", cache_dir)
    # Installed again (the log says why), or built from another layer (the nearest
    # after this app's own): never from the changed one.
    assert not any("Reusing" in line and f"(layer {previous.name[:12]})" in line
                   for line in log), log
    assert any("Reusing" in line for line in log) or any(
        "Installing every package again:" in line
        and "six.py of the previous layer changed" in line for line in log), log
    built = cache_dir / "layers" / made / "tree/lib/python3.12/site-packages/six.py"
    assert built.read_bytes() == original


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["flask-pipenv", "poetry-falcon", "uv-bottle"])
def test_a_lock_with_one_more_package_builds_from_the_previous_layer(
        fixture, tmp_path, cache_dir, monkeypatch):
    """Pipenv, Poetry and uv projects: the lock changed as its manager changes it (one
    more pinned package, benchmarks/app_changes.py) builds its layer from the
    previous one, and the slug is byte-identical to a clean install's."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from app_changes import add_requirement, extra_requirement_for

    app = copy_app(FIXTURE_APPS / fixture, tmp_path / "app")
    _build(app, tmp_path / "before.tgz", cache_dir)
    added = extra_requirement_for(app)
    add_requirement(app, tmp_path, added)

    # The clean install of the same inputs, from another directory (no history).
    clean_app = shutil.copytree(app, tmp_path / "clean-app")
    with monkeypatch.context() as patched:
        patched.setenv("SLUGBUILD_INCREMENTAL", "0")
        clean, log, made = _build(clean_app, tmp_path / "clean.tgz", cache_dir)
    assert not any("Reusing" in line for line in log), log
    for name in made:  # else the next build finds it cached
        shutil.rmtree(cache_dir / "layers" / name)

    sha, log, made = _build(app, tmp_path / "changed.tgz", cache_dir)
    assert len(made) == 1
    assert any("Reusing" in line and "installing 1" in line for line in log), log
    assert sha == clean


def test_the_exported_locks_of_uv_installs_may_build_from_the_previous_layer():
    for manager in ("pipenv", "poetry", "uv"):
        plan = InstallPlan(name=manager, tool="uv", version="x", key_files=())
        assert incremental.why_not_incremental(INPUTS, INPUTS, plan, True, False) is None
    # Which cached layer is nearest is judged by the projects the lock pins.
    from slugbuild.dependencies import _locked_names

    assert "flask" in _locked_names(FIXTURE_APPS / "flask-pipenv", "Pipfile.lock")
    assert "falcon" in _locked_names(FIXTURE_APPS / "poetry-falcon", "poetry.lock")
    assert "bottle" in _locked_names(FIXTURE_APPS / "uv-bottle", "uv.lock")
    assert _locked_names(FIXTURE_APPS / "uv-bottle", "missing.lock") == set()


HASH = " \\\n    --hash=sha256:" + "0" * 64


def test_an_export_of_hashed_pins_is_planned_without_a_dry_run():
    """Which pins any clean install installs is read from the export itself: no
    marker, or one of the runtime's version that holds. Other markers are left to uv
    (never taken from the previous layer); anything only uv can plan gives None."""
    export = "".join([
        f"six==1.17.0{HASH}\n",
        f'idna==3.10 ; python_version >= "3.9"{HASH}\n',
        f"old==1.0 ; python_full_version < '3.12.1'{HASH}\n",
        f'colorama==0.4.6 ; sys_platform == "win32"{HASH}\n',
        f'mixed==2.0 ; python_version >= "3.8" and os_name == "nt"{HASH}\n',
        "# a comment\n",
    ])
    plan = incremental.static_plan(export, ("setuptools==75.0.0",), "3.12.1")
    assert plan is not None
    assert plan.pins == {"six": "1.17.0", "idna": "3.10", "old": "1.0",
                         "colorama": "0.4.6", "mixed": "2.0"}
    assert plan.certain == {"six", "idna"}
    baseline = {"setuptools": "75.0.0"}
    assert plan.mismatch({"six": "1.17.0", "idna": "3.10", "setuptools": "75.0.0"},
                         baseline) is None
    assert plan.mismatch({"six": "1.17", "idna": "3.10", "colorama": "0.4.6",
                          "setuptools": "75.0.0"}, baseline) is None
    assert "idna not installed" in plan.mismatch({"six": "1.17.0", "setuptools": "75.0.0"},
                                                 baseline)
    assert "not a pin" in plan.mismatch({"six": "1.17.0", "idna": "3.10", "extra": "1",
                                         "setuptools": "75.0.0"}, baseline)
    assert "not a pin" in plan.mismatch({"six": "1.16.0", "idna": "3.10",
                                         "setuptools": "75.0.0"}, baseline)
    assert "baseline" in plan.mismatch({"six": "1.17.0", "idna": "3.10"}, baseline)
    for unplannable in [
        "six>=1.0" + HASH,  # not a pin
        "six==1.17.0",  # no hash
        "six[extra]==1.17.0" + HASH,
        "setuptools==80.0" + HASH,  # replaces the baseline's
        f"six==1.17.0{HASH}\nSix==1.17.0{HASH}",  # named twice
        "./libs/local",  # a local package
        "pkg @ git+https://example.invalid/pkg.git@abc",  # an unhashed URL
        "six==not-a-version" + HASH,
    ]:
        assert incremental.static_plan(unplannable + "\n", ("setuptools==75.0.0",),
                                       "3.12.1") is None, unplannable
    for marker, holds in [('python_version == "3.12"', True),
                          ('python_version > "3.12"', False),
                          ("python_version in '3.11 3.12'", False),  # not a comparison
                          ('python_full_version === "3.12.1"', False),
                          ('python_version >= "3.8" or python_version < "3"', True),
                          ('platform_python_implementation == "CPython"', False)]:
        plan = incremental.static_plan(f"six==1.17.0 ; {marker}{HASH}\n", (), "3.12.1")
        assert plan is not None and (plan.certain == {"six"}) is holds, marker
