"""Build steps that run code slugbuild did not write (hooks, buildpacks, the app's
settings under collectstatic) run with the shared cache read-only but for the
build's own scratch (step_jail.py). Before, a pre_compile hook could plant a kept
part and its sidecar in another layer's ``packed/`` (its cwd is inside the cache),
and the next app using that layer shipped it; a post_compile hook could rewrite a
``files.json`` and a cached runtime file by absolute path."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from slugbuild import compile_app
from slugbuild.log import Reporter
from slugbuild.proc import ToolFailed, run_captured, run_tool
from slugbuild.step_jail import SEAL_ENV, CacheSeal, Unsealed

from ..helpers import (
    DJANGO_APP,
    copy_app,
    make_app,
    make_buildpack,
    planting_setup_py,
    require_seal,
    seed_runtimes,
)

T = TypeVar("T")
FILES = {
    ".python-version": "3.12\n",
    "requirements.txt": "six==1.17.0\n",
    "Procfile": "web: python -m http.server $PORT\n",
}
# Tries to write every kind of file of the cache it can find, by absolute path (the
# cache is three levels above the build directory, the hook's cwd), and says what
# happened to each; a hook of the attacking app (pre_compile, post_compile) or the
# app's settings (collectstatic).
ATTACK = r'''
import errno, glob, os
cache = os.path.realpath(os.path.join(os.getcwd(), "../../.."))
targets = []
for packed in glob.glob(cache + "/layers/*/packed") + glob.glob(cache + "/runtimes/*/packed"):
    targets += [packed + "/part-planted.gz", packed + "/part-planted.json"]
    targets += sorted(p for p in glob.glob(packed + "/*") if os.path.isfile(p))[:2]
targets += glob.glob(cache + "/layers/*/files.json") + glob.glob(cache + "/runtimes/*/files.json")
targets += glob.glob(cache + "/runtimes/*/tree/lib/python3.*/this.py")
targets += [cache + "/history/planted", cache + "/planted"]
# The same files by paths relative to the working directory (which was on the mount
# the seal's binds cover, until the wrapper entered it again by its path).
targets += [os.path.relpath(target) for target in targets]
for target in targets:
    try:
        with open(target, "ab") as handle:
            handle.write(b"planted")
        print("SEAL-WROTE", target)
    except OSError as exc:
        print("SEAL-DENIED", errno.errorcode.get(exc.errno, exc.errno), target)
with open("written-by-the-step", "w") as handle:  # its own build directory: allowed
    handle.write("ok")
print("SEAL-OWN-WRITTEN")
'''
HOOK = "#!/usr/bin/env python3\n" + ATTACK
# A buildpack writing its CACHE_DIR (allowed), then outside it: the buildpacks'
# directory of other apps, a layer's packed/ directory.
BUILDPACK = r'''
try_write() {
  if out=$( { printf planted >> "$1"; } 2>&1 ); then echo "SEAL-WROTE $1"
  else echo "SEAL-DENIED $out"; fi
}
printf ok > "$2/own" && echo "SEAL-CACHE-DIR-WRITTEN"
try_write "$2/../another-app"
for packed in "$2"/../../../layers/*/packed; do try_write "$packed/part-planted.gz"; done
'''


def _seal(tmp_path: Path, reporter: Reporter) -> CacheSeal:
    root = tmp_path / "cache"
    (root / "layers" / "k" / "packed").mkdir(parents=True)
    (root / "tmp" / "t.build.x" / "app").mkdir(parents=True)
    return CacheSeal(root, root / "tmp" / "t.build.x", lambda: Path(
        tempfile.mkdtemp(prefix="t.seal.", dir=root / "tmp")), reporter)


def test_a_sealed_step_writes_only_its_scratch_and_cannot_undo_the_seal(tmp_path):
    require_seal(tmp_path)
    reporter = Reporter(quiet=True)
    seal = _seal(tmp_path, reporter)
    root, scratch = seal.root, seal.scratch
    own_cache = root / "buildpacks" / "bp" / "app"
    own_cache.mkdir(parents=True)
    script = f'''
        exec 4<. && here=$(sed -n 's/^mnt_id:[[:space:]]*//p' /proc/self/fdinfo/4)
        exec 4<&-
        awk -v id="$here" -v dir={scratch} '$1 == id && $5 == dir {{found = 1}}
            END {{exit !found}}' /proc/self/mountinfo && echo cwd-on-the-seals-mount
        echo x > {scratch}/app/ok && echo own-ok
        echo x > {own_cache}/ok && echo cache-dir-ok
        echo x > {root}/layers/k/packed/part-x.gz || echo layer-denied
        echo x > {root}/tmp/other || echo other-scratch-denied
        echo x > ../../../layers/k/packed/part-x.gz || echo relative-denied
        mount -o remount,rw {root} 2>/dev/null || echo remount-denied
        umount {scratch} 2>/dev/null || echo umount-denied
        unshare --user --map-root-user --mount sh -c \
            'umount {root} 2>/dev/null || mount -o remount,rw {root} 2>/dev/null || \
             echo x > {root}/layers/k/nested' 2>/dev/null || echo nested-denied
        ls /proc/{os.getpid()}/root{root} >/dev/null 2>&1 || echo proc-root-denied
    '''
    done = seal.step("a test step", [own_cache]).run_step(
        ["sh", "-c", script], lambda command: run_captured(command, dict(os.environ),
                                                           cwd=scratch / "app"))
    said = done.stdout.decode().split()
    assert said == ["cwd-on-the-seals-mount", "own-ok", "cache-dir-ok", "layer-denied",
                    "other-scratch-denied", "relative-denied", "remount-denied",
                    "umount-denied", "nested-denied", "proc-root-denied"], done.stderr.decode()
    assert b"Read-only file system" in done.stderr
    assert sorted(p.name for p in (root / "layers" / "k").rglob("*")) == ["packed"]
    assert not (root / "tmp" / "other").exists()


def test_a_sealed_step_sees_the_environment_it_was_given(tmp_path):
    """The wrapper's shells add nothing: an export file sourced sealed must not export
    their OLDPWD (a new scratch path each build, in the build environment's hash)."""
    require_seal(tmp_path)
    seal = _seal(tmp_path, Reporter(quiet=True))
    given = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "ONE": "1"}

    def seen(runner: Callable[..., bytes]) -> dict[str, str]:
        out = runner(["env", "-0"], lambda command: run_captured(
            command, env=given, cwd=seal.scratch / "app").stdout)
        pairs = (item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
        return {k: v for k, v in pairs if k != "SLUGBUILD_TOOL_COOKIE"}

    assert seen(seal.step("a test step").run_step) == seen(Unsealed().run_step) == given


def test_a_step_erasing_the_wrappers_status_is_not_run_again_unsealed(tmp_path):
    """The start mark tells a namespace that failed (the step runs again, unsealed)
    from a step that failed: the step cannot reach the status file to erase it."""
    require_seal(tmp_path)
    reporter = Reporter(quiet=True)
    seal = _seal(tmp_path, reporter)
    script = (f'for f in {seal.root}/tmp/t.seal.*/status*; do : > "$f"; done; '
              f'echo x > {seal.root}/layers/k/planted; exit 125')
    runs: list[list[str | Path]] = []

    def start(command: list[str | Path]) -> str:
        runs.append(command)
        return run_tool(command, reporter, dict(os.environ))

    with pytest.raises(ToolFailed):
        seal.step("a test step").run_step(["sh", "-c", script], start)
    assert len(runs) == 1 and not seal.failed
    assert not (seal.root / "layers" / "k" / "planted").exists()


def test_a_step_failing_on_the_seals_read_only_cache_is_told_why(tmp_path):
    """A legitimate write into the cache (a tool's cache under XDG_CACHE_HOME when
    --cache-dir is that directory) fails with EROFS only: the log names the seal."""
    require_seal(tmp_path)
    warnings: list[str] = []
    reporter = Reporter(quiet=True)
    reporter.warn = warnings.append  # type: ignore[method-assign]
    seal = _seal(tmp_path, reporter)
    step = seal.step("bin/post_compile")
    with pytest.raises(ToolFailed):
        step.run_step(["sh", "-c", "echo x > ../oops; exit 3"],
                      lambda command: run_tool(command, reporter, dict(os.environ),
                                               cwd=seal.scratch / "app"))
    assert warnings == []  # its own scratch: written, no seal to explain
    with pytest.raises(ToolFailed):
        step.run_step(["sh", "-c", f"mkdir {seal.root}/webpack"],
                      lambda command: run_tool(command, reporter, dict(os.environ)))
    (line,) = warnings
    assert line.startswith("bin/post_compile met a read-only file system")
    assert f"slugbuild's cache {seal.root} read-only" in line and "--cache-dir" in line


def test_with_the_seal_off_steps_run_as_before_and_the_log_says_so_once(
        tmp_path, monkeypatch):
    monkeypatch.setenv(SEAL_ENV, "0")
    warnings: list[str] = []
    reporter = Reporter(quiet=True)
    reporter.warn = warnings.append  # type: ignore[method-assign]
    seal = _seal(tmp_path, reporter)
    for _ in range(2):
        seal.step("a test step").run_step(
            ["sh", "-c", f"echo x > {seal.root}/layers/k/written"],
            lambda command: run_tool(command, reporter, dict(os.environ)))
    assert (seal.root / "layers" / "k" / "written").is_file()  # unsealed, as before
    (line,) = warnings
    assert "can write the shared cache" in line and "SLUGBUILD_SEAL_CACHE" in line


def _between_builds_of(victim: Path, cache: Path, tmp_path: Path,
                       attack: Callable[[], T], env: dict[str, str] | None = None) -> T:
    """``attack`` run between two builds of ``victim`` on ``cache``: the victim's second
    slug must be byte for byte its first."""
    alone = compile_app(victim, tmp_path / "alone.tgz", cache_dir=cache, env=env,
                        reporter=Reporter(quiet=True))
    outcome = attack()
    again = compile_app(victim, tmp_path / "again.tgz", cache_dir=cache, env=env,
                        reporter=Reporter(quiet=True))
    assert again.slug_path.read_bytes() == alone.slug_path.read_bytes()
    return outcome


def _attempts(log: list[str]) -> tuple[list[str], list[str]]:
    lines = [line.strip() for line in log]
    return ([line for line in lines if "SEAL-WROTE" in line],
            [line for line in lines if "SEAL-DENIED" in line])


@pytest.mark.slow
def test_hooks_and_a_buildpack_cannot_change_another_apps_slug_through_the_cache(
        tmp_path, runtime_seed):
    require_seal(tmp_path)
    cache = seed_runtimes(runtime_seed, tmp_path / "cache")
    attacker = make_app(tmp_path / "attacker", {**FILES, "bin/pre_compile": HOOK,
                                                "bin/post_compile": HOOK})
    for hook in ("pre_compile", "post_compile"):
        (attacker / "bin" / hook).chmod(0o755)
    buildpack = make_buildpack(tmp_path / "bp", BUILDPACK)
    attacked = _between_builds_of(
        make_app(tmp_path / "victim", FILES), cache, tmp_path,
        lambda: compile_app(attacker, tmp_path / "attacker.tgz", cache_dir=cache,
                            buildpacks=[str(buildpack), "python"],
                            reporter=Reporter(quiet=True)))
    wrote, denied = _attempts(attacked.log)
    assert wrote == []
    log = "\n".join(attacked.log)
    assert log.count("SEAL-OWN-WRITTEN") == 2 and "SEAL-CACHE-DIR-WRITTEN" in log
    # Each hook tried a planted part and its sidecar in the dependency layer's packed/,
    # files.json, a cached runtime file; the buildpack another app's CACHE_DIR.
    for words in ("/layers/", "/packed/part-planted.gz", "/packed/part-planted.json",
                  "/files.json", "/runtimes/", "/this.py", "/history/planted"):
        hits = [line for line in denied if words in line and "EROFS" in line]
        assert len(hits) >= 2, (words, denied)
    assert all("EROFS" in line or "Read-only file system" in line for line in denied)
    assert sum("Read-only file system" in line for line in denied) >= 2  # the buildpack
    assert not list(cache.glob("*/*/packed/part-planted*"))
    assert not list(cache.glob("buildpacks/*/another-app"))


@pytest.mark.slow
def test_a_settings_module_under_collectstatic_cannot_write_the_cache(
        tmp_path, runtime_seed):
    require_seal(tmp_path)
    cache = seed_runtimes(runtime_seed, tmp_path / "cache")
    attacker = copy_app(DJANGO_APP, tmp_path / "attacker")
    settings = attacker / "mysite" / "settings.py"
    once = "\nif 'collectstatic' in __import__('sys').argv:\n" + "".join(
        f"    {line}\n" for line in ATTACK.strip().splitlines())
    settings.write_text(settings.read_text() + once)
    attacked = _between_builds_of(
        copy_app(DJANGO_APP, tmp_path / "victim"), cache, tmp_path,
        lambda: compile_app(attacker, tmp_path / "attacker.tgz", cache_dir=cache,
                            reporter=Reporter(quiet=True)))
    wrote, denied = _attempts(attacked.log)
    assert wrote == [] and len(denied) >= 6, attacked.log
    assert all("EROFS" in line for line in denied)
    assert not list(cache.glob("*/*/packed/part-planted*"))


@pytest.mark.slow
def test_a_build_with_the_seal_off_says_once_that_steps_can_write_the_cache(
        tmp_path, runtime_seed, monkeypatch):
    monkeypatch.setenv(SEAL_ENV, "0")
    cache = seed_runtimes(runtime_seed, tmp_path / "cache")
    app = make_app(tmp_path / "app", {**FILES, "bin/pre_compile": HOOK,
                                      "bin/post_compile": "#!/bin/sh\ntrue\n"})
    for hook in ("pre_compile", "post_compile"):
        (app / "bin" / hook).chmod(0o755)
    result = compile_app(app, tmp_path / "app.tgz", cache_dir=cache,
                         reporter=Reporter(quiet=True))
    log = "\n".join(result.log)
    assert log.count("can write the shared cache") == 1, log
    assert "SLUGBUILD_SEAL_CACHE turned it off" in log
    wrote, _ = _attempts(result.log)
    assert wrote  # unsealed: the hook's writes went through, as before the seal


# An sdist whose build (setup.py, run by the installer) tries the cache's stores and
# uv's cache, and reports what happened to a file outside the cache.
PLANT_SETUP_PY = planting_setup_py("""
targets = [packed + "/part-planted.gz" for packed in glob.glob(cache + "/layers/*/packed")]
targets += glob.glob(cache + "/layers/*/files.json") + glob.glob(cache + "/runtimes/*/files.json")
targets += [cache + "/history/planted", cache + "/pyc/planted", cache + "/uv/planted-ok"]
""")


@pytest.mark.slow
def test_a_package_build_cannot_write_the_layers_or_stores(tmp_path, runtime_seed,
                                                           setuptools_wheel):
    from ..helpers import minimal_wheel, serve_directory, setuptools_sdist, write_simple_index

    require_seal(tmp_path)
    index = tmp_path / "index"
    write_simple_index(index, {
        "plantpkg": ("plantpkg-1.0.tar.gz", setuptools_sdist("plantpkg", "1.0", PLANT_SETUP_PY)),
        "setuptools": (setuptools_wheel.name, setuptools_wheel.read_bytes()),
        "plainpkg": ("plainpkg-1.0-py3-none-any.whl",
                     minimal_wheel("plainpkg", "1.0", "VALUE = 1\n"))})
    # 3.13: no setuptools baseline to install (the loopback index has only the fixture's)
    cache = seed_runtimes(runtime_seed, tmp_path / "cache", "3.13")
    files = {**FILES, ".python-version": "3.13\n"}
    report = tmp_path / "report"
    with serve_directory(index) as base:
        config = {"PIP_INDEX_URL": f"{base}/simple/"}
        attacker = make_app(tmp_path / "attacker",
                            {**files, "requirements.txt": "plantpkg==1.0\n"})
        _between_builds_of(
            make_app(tmp_path / "victim", {**files, "requirements.txt": "plainpkg==1.0\n"}),
            cache, tmp_path, lambda: compile_app(
                attacker, tmp_path / "attacker.tgz", cache_dir=cache, reporter=Reporter(
                    quiet=True), env={**config, "SEAL_CACHE": str(cache),
                                      "SEAL_REPORT": str(report)}), env=config)
    lines = report.read_text().splitlines()
    denied = [line for line in lines if line.startswith("DENIED EROFS ")]
    wrote = [line for line in lines if line.startswith("WROTE")]
    # The shared installer caches too: the run sees them through private overlays
    # (installers/common.py, guarded_run), the shared directories read-only.
    assert not wrote
    for words in ("/packed/part-planted.gz", "/layers/", "/runtimes/", "/history/",
                  "/pyc/", "/uv/planted-ok"):
        assert any(words in line for line in denied), (words, lines)
    assert len(denied) == len(lines) - len(wrote)
