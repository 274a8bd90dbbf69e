"""Quick checks of installers/built_wheels.py: what counts as built from source, the
build environment's hash, and the per-install cache views."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
from pathlib import Path

from slugbuild import dependencies
from slugbuild.cache import Cache
from slugbuild.installers import built_wheels
from slugbuild.installers.built_wheels import (
    BUILD_ENV_INPUT,
    adopt,
    build_env_sha256,
    built_elsewhere,
    built_projects,
    cache_view,
    env_keyed,
    installed_from_source,
)
from slugbuild.log import Reporter


def test_the_build_environment_is_the_apps_config_vars_and_exports():
    base = build_env_sha256({"A": "1"}, {})
    assert base == build_env_sha256({"A": "1"}, {})
    assert base != build_env_sha256({"A": "2"}, {})
    assert base != build_env_sha256({"A": "1"}, {"CFLAGS": "-O3"})
    # A var set by config and the same one exported by a buildpack are told apart.
    assert build_env_sha256({"X": "1"}, {}) != build_env_sha256({}, {"X": "1"})
    # The build directory (a new one each build) named by an export is not part of it.
    exported = {"LD_LIBRARY_PATH": "/cache/tmp/b1/.apt/usr/lib:/usr/lib"}
    assert build_env_sha256({}, exported, Path("/cache/tmp/b1")) == build_env_sha256(
        {}, {"LD_LIBRARY_PATH": "/cache/tmp/b2/.apt/usr/lib:/usr/lib"}, Path("/cache/tmp/b2"))
    assert build_env_sha256({}, exported, Path("/cache/tmp/b1")) != build_env_sha256(
        {}, {"LD_LIBRARY_PATH": "/elsewhere/lib"}, Path("/cache/tmp/b2"))


def test_only_a_layer_built_from_source_in_another_environment_is_refused():
    assert not built_elsewhere({"inputs": {"files": {}}}, "e1")  # wheels only, or older
    assert not built_elsewhere({"inputs": {BUILD_ENV_INPUT: "e1"}}, "e1")
    assert built_elsewhere({"inputs": {BUILD_ENV_INPUT: "e2"}}, "e1")
    assert not built_elsewhere({"inputs": "damaged"}, "e1")
    key, inputs = env_keyed({"files": {}}, "e1")
    assert inputs == {"files": {}, BUILD_ENV_INPUT: "e1"}
    assert key != env_keyed({"files": {}}, "e2")[0]


def _dist(site, name, version, direct=None):
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    if direct is not None:
        (info / "direct_url.json").write_text(json.dumps(direct))


def test_what_counts_as_built_from_source(tmp_path):
    site = tmp_path / "site"
    _dist(site, "flask", "3.1.0")
    _dist(site, "wheelurl", "1.0", {"url": "https://x/w-1.0-py3-none-any.whl",
                                    "archive_info": {}})
    assert not installed_from_source(site, set())
    assert installed_from_source(site, {("flask", "3.1.0")})
    assert not installed_from_source(site, {("flask", "3.0.0")})
    for name, direct in (("local", {"url": "file:///app/pkg", "dir_info": {}}),
                         ("vcs", {"url": "https://x/r.git", "vcs_info": {}}),
                         ("sdisturl", {"url": "https://x/s-1.0.tar.gz", "archive_info": {}})):
        other = tmp_path / name
        _dist(other, name, "1.0", direct)
        assert installed_from_source(other, set()), name


def test_built_projects_read_uv_and_pip_buckets(tmp_path):
    uv = tmp_path / "uv"
    (uv / "sdists-v11" / "index" / "679b" / "my-pkg" / "1.0").mkdir(parents=True)
    (uv / "sdists-v11" / "pypi" / "other" / "2.0").mkdir(parents=True)
    assert built_projects(uv, "uv") == {("my-pkg", "1.0"), ("other", "2.0")}
    pip = tmp_path / "pip"
    (pip / "wheels" / "ab" / "cd").mkdir(parents=True)
    (pip / "wheels" / "ab" / "cd" / "My_Pkg-1.0-cp312-cp312-linux_x86_64.whl").write_bytes(b"")
    assert built_projects(pip, "pip") == {("my-pkg", "1.0")}


def test_a_cache_view_shares_all_but_the_built_wheels(tmp_path):
    shared, built, view = tmp_path / "uv", tmp_path / "built", tmp_path / "view"
    for bucket in ("wheels-v8", "archive-v0", "sdists-v11"):
        (shared / bucket).mkdir(parents=True)
    (built / "sdists-v11").mkdir(parents=True)
    cache_view(shared, built, view, "uv")
    assert os.readlink(view / "wheels-v8") == str(shared / "wheels-v8")
    assert os.readlink(view / "archive-v0") == str(shared / "archive-v0")
    assert os.readlink(view / "sdists-v11") == str(built / "sdists-v11")


def test_buckets_made_in_a_view_move_to_the_shared_cache_or_the_partition(tmp_path):
    shared, built, view = tmp_path / "uv", tmp_path / "built", tmp_path / "view"
    cache_view(shared, built, view, "uv")  # a fresh cache: nothing to link
    for bucket in ("wheels-v8", "sdists-v11"):
        (view / bucket / "entry").mkdir(parents=True)
    (view / "CACHEDIR.TAG").write_text("")
    adopt(view, shared, built, "uv")
    assert (shared / "wheels-v8" / "entry").is_dir()
    assert (built / "sdists-v11" / "entry").is_dir()
    assert not (shared / "sdists-v11").exists()
    # The next install's view links them.
    again = tmp_path / "again"
    cache_view(shared, built, again, "uv")
    assert sorted(os.listdir(again)) == ["sdists-v11", "wheels-v8"]


def test_adopting_keeps_what_another_build_moved_first(tmp_path):
    shared, built, view = tmp_path / "uv", tmp_path / "built", tmp_path / "view"
    (shared / "wheels-v8" / "theirs").mkdir(parents=True)
    view.mkdir()
    (view / "wheels-v8" / "mine").mkdir(parents=True)
    adopt(view, shared, built, "uv")
    assert os.listdir(shared / "wheels-v8") == ["theirs"]


def test_job_views_are_per_build_environment(tmp_path):
    env_a, env_b = build_env_sha256({"A": "1"}, {}), build_env_sha256({"A": "2"}, {})
    one = built_wheels.job_cache_dir(tmp_path, tmp_path / "s1", "pip", env_a)
    (one / "wheels").mkdir()
    built_wheels.adopt_job_caches(tmp_path, tmp_path / "s1", env_a)
    same = built_wheels.job_cache_dir(tmp_path, tmp_path / "s2", "pip", env_a)
    other = built_wheels.job_cache_dir(tmp_path, tmp_path / "s3", "pip", env_b)
    assert (same / "wheels").is_symlink()
    assert not (other / "wheels").exists()


def _lock_is_free(cache, name):
    with open(cache.root / "locks" / f"layers-{name}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def test_a_layer_published_meanwhile_from_another_environment_is_never_replaced(tmp_path):
    # Another build, in another environment, published the plain key's layer between
    # this build's lookup and its lock: this build installs under its environment's own
    # name and lock, and leaves that layer (which the other build is using) alone.
    cache = Cache(tmp_path / "cache")
    inputs = {"files": {"requirements.txt": "0" * 64}}
    key = hashlib.sha256(b"plain").hexdigest()
    name = key[:24]
    with cache.new_layer("layers", name, key, {**inputs, BUILD_ENV_INPUT: "theirs"}) as tree:
        (tree / "built.txt").write_text("theirs")
    before = os.stat(cache.root / "layers" / name).st_ino
    reporter = Reporter(quiet=True)
    with contextlib.ExitStack() as held:
        layer, got_name, got_key, got_inputs = dependencies._locked_for_install(
            held, cache, name, key, inputs, "mine", reporter)
        assert layer is None
        assert (got_key, got_inputs) == env_keyed(inputs, "mine")
        assert got_name == got_key[:24] != name
        assert not _lock_is_free(cache, got_name) and _lock_is_free(cache, name)
    assert os.stat(cache.root / "layers" / name).st_ino == before
    # The environment that built it reuses it, under its lock.
    with contextlib.ExitStack() as held:
        layer, got_name, got_key, _ = dependencies._locked_for_install(
            held, cache, name, key, inputs, "theirs", reporter)
        assert layer is not None and (got_name, got_key) == (name, key)
        assert not _lock_is_free(cache, name)


def test_an_install_never_runs_with_the_installers_caches_off(tmp_path):
    # Built-from-source detection reads the wheels an install's builds leave in its
    # cache partition: a config var or a buildpack export turning the cache off would
    # hide them (the layer then recorded no build environment and was shared).
    from slugbuild.installers import InstallJob
    from slugbuild.installers.pip import pip_env
    from slugbuild.installers.uv import uv_env

    off = {"PIP_NO_CACHE_DIR": "1", "UV_NO_CACHE": "1"}
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    job = InstallJob(python=Path(sys.executable), python_version="3.12.0",
                     app_dir=tmp_path, lock_file="requirements.txt",
                     config_vars={**off, "LDSHARED": "cc -shared", "X": "1"},
                     cache=Cache(tmp_path / "cache"), reporter=Reporter(quiet=True),
                     scratch=scratch, exports=dict(off))
    for env in (uv_env(job), pip_env(job.config_vars, job=job)):
        assert not set(off) & set(env) and env["X"] == "1"
    assert "UV_CACHE_DIR" in uv_env(job)


def test_a_build_the_installer_reports_counts_even_with_nothing_cached(tmp_path):
    # pip builds some sdists into an ephemeral cache it deletes: only its output
    # (and uv's "Built" lines) tells that anything was built.
    site = tmp_path / "site"
    _dist(site, "oddname", "1.0")  # from an index, no direct_url.json, no cached wheel
    for output, built in (
            ("Resolved 1 package in 12ms\nInstalled 1 package in 3ms\n + oddname==1.0\n",
             False),
            ("   Building oddname==1.0\n      Built oddname==1.0\n", True),  # uv
            ("  Building wheel for oddname (pyproject.toml): started\n", True),  # pip
            ("Created wheel for oddname: filename=oddname-1.0-py3-none-any.whl\n", True)):
        scratch = tmp_path / f"scratch-{len(output)}"
        scratch.mkdir()
        built_wheels.note_builds(scratch, output)
        assert built_wheels.from_source(scratch, site) is built, output


def test_the_entry_point_checks_record_is_keyed_by_a_from_source_layers_environment(
        monkeypatch, tmp_path):
    """The check's pass is recorded per layer key (locally and in a cache registry):
    the same key names another environment's build output on another cache, so a
    from-source layer's record is keyed by its environment too (review, session 6:
    item 6); a wheel-only layer's keeps its key, shared across apps."""
    from types import SimpleNamespace

    from slugbuild import python_buildpack
    from slugbuild.installers.built_wheels import env_scoped_key

    key = "k" * 64
    env_a, env_b = build_env_sha256({"A": "1"}, {}), build_env_sha256({"A": "2"}, {})
    built_a = {"inputs": {"x": 1, BUILD_ENV_INPUT: env_a}}
    built_b = {"inputs": {"x": 1, BUILD_ENV_INPUT: env_b}}
    assert env_scoped_key(key, {"inputs": {"x": 1}}) == key
    assert len({key, env_scoped_key(key, built_a), env_scoped_key(key, built_b)}) == 3
    assert env_scoped_key(key, built_a) == env_scoped_key(key, dict(built_a))

    asked: list[str] = []
    monkeypatch.setattr(python_buildpack, "check_process_commands", lambda *a, **k: None)
    monkeypatch.setattr(python_buildpack, "check_process_imports",
                        lambda *args, passed, **kw: asked.append(passed[1]))
    layers = contextlib.nullcontext(None)
    for manifest in (built_a, built_b):
        state = SimpleNamespace(
            runtime_info={"resolved": "3.12.1"}, lock_file="requirements.txt",
            info=SimpleNamespace(package_manager="uv"),
            deps=SimpleNamespace(key=key, layer=SimpleNamespace(manifest=manifest)))
        build = SimpleNamespace(build_dir=tmp_path, config_vars={}, reporter=None,
                                cache=SimpleNamespace(root=tmp_path, remote=None),
                                step_layers=lambda step: layers)
        python_buildpack.PythonBuild.check_entry_points(state, build, {})  # type: ignore[arg-type]
    assert asked == [env_scoped_key(key, built_a), env_scoped_key(key, built_b)]
