"""Build steps over the cached layers through an overlay: what a step writes, deletes,
renames or chmods reaches the build's copy exactly as on placed files, never the
cached trees (issue 20, layer_overlay.py)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from slugbuild import layer_overlay
from slugbuild.layer_overlay import OverlayRun, apply_upper, mechanism

# Every kind of change a settings module or hook can make in the prefix.
_HOSTILE = r"""
import os, shutil, sys
root = sys.argv[1]
site = os.path.join(root, "lib/python3.12/site-packages")
def p(*parts): return os.path.join(root, *parts)
with open(os.path.join(site, "pkg/__init__.py"), "a") as f: f.write("# appended\n")
with open(p("bin/tool"), "w") as f: f.write("#!/bin/sh\necho replaced\n")
os.chmod(p("bin/tool"), 0o700)
os.chmod(p("lib/python3.12/os.py"), 0o600)
os.unlink(os.path.join(site, "pkg/data.txt"))
shutil.rmtree(os.path.join(site, "gone"))
shutil.move(os.path.join(site, "moved"), os.path.join(site, "moved-here"))
with open(os.path.join(site, "moved-here/new.txt"), "w") as f: f.write("new\n")
os.unlink(os.path.join(site, "moved-here/keep/b.txt"))
shutil.rmtree(os.path.join(site, "opaque"))
os.mkdir(os.path.join(site, "opaque"))
with open(os.path.join(site, "opaque/only.txt"), "w") as f: f.write("only\n")
os.symlink("pkg/__init__.py", os.path.join(site, "link.py"))
os.makedirs(p("share/new/deep"))
with open(p("share/new/deep/f"), "w") as f: f.write("deep\n")
os.rename(os.path.join(site, "pkg/mod.py"), os.path.join(site, "mod-moved.py"))
os.link(os.path.join(site, "opaque/only.txt"), os.path.join(site, "hardlink.txt"))
"""


def _layers(base: Path) -> tuple[Path, Path]:
    """A runtime-like tree and a dependency-like tree sharing lib/ and bin/."""
    runtime, deps = base / "runtime", base / "deps"
    files = {
        runtime: {"bin/python3.12": "#!elf\n", "lib/python3.12/os.py": "os\n",
                  "lib/python3.12/site-packages/README.txt": "site\n"},
        deps: {"bin/tool": "#!/bin/sh\necho tool\n",
               "lib/python3.12/site-packages/pkg/__init__.py": "x = 1\n",
               "lib/python3.12/site-packages/pkg/mod.py": "y = 2\n",
               "lib/python3.12/site-packages/pkg/data.txt": "data\n",
               "lib/python3.12/site-packages/gone/a.py": "a\n",
               "lib/python3.12/site-packages/moved/a.txt": "a\n",
               "lib/python3.12/site-packages/moved/keep/b.txt": "b\n",
               "lib/python3.12/site-packages/moved/keep/c.txt": "c\n",
               "lib/python3.12/site-packages/opaque/old.txt": "old\n",
               "lib/python3.12/site-packages/opaque/sub/old2.txt": "old2\n"},
    }
    for root, entries in files.items():
        for rel, text in entries.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    (deps / "bin/tool").chmod(0o755)
    return runtime, deps


def _place(trees: list[Path], target: Path) -> None:
    """The layers placed as a build does: hard links, the later layer's file winning."""
    for tree in trees:
        shutil.copytree(tree, target, symlinks=True, dirs_exist_ok=True, copy_function=os.link)


def _state(root: Path) -> dict[str, tuple[str, int, str]]:
    """Each path's kind, permission bits (files) and content or link target."""
    found = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(directory) / name
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if path.is_symlink():
                found[rel] = ("l", 0, os.readlink(path))
            elif path.is_dir():
                found[rel] = ("d", 0, "")
            else:
                found[rel] = ("f", st.st_mode & 0o7777,
                              hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def _stamps(root: Path) -> dict[str, tuple[int, int, int, str]]:
    stamps = {}
    for rel, (kind, _, content) in _state(root).items():
        st = (root / rel).lstat()
        stamps[rel] = (st.st_ino, st.st_mode, st.st_mtime_ns, f"{kind}{content}")
    return stamps


@pytest.mark.parametrize("kind", ["found", "user namespace"])
def test_a_step_writing_through_the_overlay_gives_what_placed_files_give(tmp_path, kind):
    """Root's mount namespace follows a renamed directory (redirect_dir); a user
    namespace refuses the rename (EXDEV) and shutil.move copies instead."""
    found = mechanism(tmp_path)
    if kind == "user namespace":
        found = layer_overlay._USERNS if layer_overlay._works(layer_overlay._USERNS,
                                                               tmp_path) else None
    if found is None:
        pytest.skip("no private overlay on this machine (the build materialises instead)")
    runtime, deps = _layers(tmp_path / "cache")
    cached = {tree: _stamps(tree) for tree in (runtime, deps)}

    # The step on placed copies (what materialising gave before the overlay).
    placed = tmp_path / "placed/.heroku/python"
    shutil.copytree(runtime, placed, symlinks=True)
    shutil.copytree(deps, placed, symlinks=True, dirs_exist_ok=True)
    subprocess.run([sys.executable, "-c", _HOSTILE, str(placed)], check=True)

    # The same step through the overlay, then its writes applied onto hard links.
    build = tmp_path / "build"
    mount = build / ".heroku/python"
    mount.mkdir(parents=True)
    run = OverlayRun.prepare(build, tmp_path, found, [(".heroku/python", [deps, runtime])],
                             [runtime, deps])
    assert run is not None
    subprocess.run(run.argv([sys.executable, "-c", _HOSTILE, str(mount)]), check=True)
    assert run.written()
    assert list(mount.iterdir()) == []  # the build's own directory never saw the step
    # Nothing of the cached trees changed: not a byte, a mode, an inode or a name.
    assert {tree: _stamps(tree) for tree in (runtime, deps)} == cached

    _place([runtime, deps], mount)
    run.apply()
    run.remove()
    assert _state(mount) == _state(placed)
    assert {tree: _stamps(tree) for tree in (runtime, deps)} == cached
    assert not any(tmp_path.glob("overlay.*"))


def test_the_cached_trees_are_read_only_by_their_own_paths_too(tmp_path):
    """A step that writes to a layer's cached path directly (not through the mount)
    is refused: the layers' directories are mounted read-only in its namespace."""
    found = mechanism(tmp_path)
    if found is None:
        pytest.skip("no private overlay on this machine")
    runtime, deps = _layers(tmp_path / "cache")
    build = tmp_path / "build"
    (build / ".heroku/python").mkdir(parents=True)
    run = OverlayRun.prepare(build, tmp_path, found, [(".heroku/python", [deps, runtime])],
                             [runtime, deps])
    assert run is not None
    target = deps / "lib/python3.12/site-packages/pkg/__init__.py"
    done = subprocess.run(run.argv(["sh", "-c", f"echo x >> {target}"]),
                          capture_output=True, text=True)
    assert done.returncode != 0 and "Read-only" in done.stderr
    assert target.read_text() == "x = 1\n"
    assert not run.written()
    run.remove()


def test_an_unmountable_path_falls_back(tmp_path):
    found = mechanism(tmp_path)
    if found is None:
        pytest.skip("no private overlay on this machine")
    odd = tmp_path / "a,b"
    odd.mkdir()
    assert OverlayRun.prepare(tmp_path / "build", tmp_path, found,
                              [(".heroku/python", [odd])], []) is None


def test_apply_removes_a_whiteout_and_copies_new_files(tmp_path):
    """apply_upper alone, on an upper directory written by hand (no mount needed)."""
    target = tmp_path / "target"
    (target / "d").mkdir(parents=True)
    (target / "d/old.txt").write_text("old\n")
    (target / "gone.txt").write_text("gone\n")
    upper = tmp_path / "upper"
    (upper / "d").mkdir(parents=True)
    (upper / "d/new.txt").write_text("new\n")
    try:
        os.mknod(upper / "gone.txt", 0o600 | 0o020000, os.makedev(0, 0))
    except PermissionError:
        pytest.skip("making a whiteout needs CAP_MKNOD")
    apply_upper(upper, target)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == \
        ["d", "d/new.txt", "d/old.txt"]


class _Layers:
    """A step's access to the layers that only records what it was asked to run."""

    sealed = False

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    def argv(self, argv):
        self.asked.append([str(arg) for arg in argv])
        return list(argv)

    def run_step(self, argv, start):
        return start(self.argv(argv))

    def prefix_written(self) -> bool:
        return False


def test_a_hook_whose_interpreter_is_missing_is_not_started_under_a_wrapper(tmp_path):
    """Under the overlay the hook is exec'd by a shell: a missing #! interpreter is
    found first, and named as the kernel would (hook-failed, not-started)."""
    from slugbuild.errors import SlugbuildError
    from slugbuild.hooks import run_hook
    from slugbuild.log import Reporter

    hook = tmp_path / "bin/post_compile"
    hook.parent.mkdir()
    hook.write_text("#!/no/such/interpreter\n")
    layers = _Layers()
    with pytest.raises(SlugbuildError) as caught:
        run_hook("post_compile", tmp_path, Path(sys.executable), {}, Reporter(quiet=True),
                 layers=layers)
    assert caught.value.code == "hook-failed" and "could not be started" in caught.value.found
    assert layers.asked == []
    hook.write_text("#!/bin/sh\necho ran > ran.txt\n")
    assert run_hook("post_compile", tmp_path, Path(sys.executable), {}, Reporter(quiet=True),
                    layers=layers)
    assert layers.asked == [[str(hook)]] and (tmp_path / "ran.txt").is_file()


@pytest.mark.parametrize("redirect", ["../../outside", "/../outside", "/a/../../outside",
                                      "a/b", "/", "..", "/link/inner"])
def test_a_redirect_naming_a_path_outside_the_mount_brings_nothing(tmp_path, redirect):
    """The upper directory is the step's to write: a redirect it set itself (here
    escaping the mount, or through a symlink of the tree) takes no files from there."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not the slug's\n")
    target = tmp_path / "mount" / "target"
    (target / "a").mkdir(parents=True)
    (target / "link").symlink_to(tmp_path / "outside")
    (outside / "inner").mkdir()
    (outside / "inner" / "secret2.txt").write_text("not the slug's either\n")
    upper = tmp_path / "upper"
    (upper / "renamed").mkdir(parents=True)
    try:
        os.setxattr(upper / "renamed", "user.overlay.redirect", redirect.encode())
    except OSError:
        pytest.skip("no user xattrs on this file system")
    apply_upper(upper, target, "user.overlay.")
    assert (target / "renamed").is_dir() and list((target / "renamed").iterdir()) == []
    assert sorted(p.name for p in target.iterdir()) == ["a", "link", "renamed"]


def test_a_step_in_a_user_namespace_has_the_users_rights_not_roots(request):
    """Mapped to root in its namespace, a step could read and write the user's files
    whatever their mode (CAP_DAC_OVERRIDE over mapped inodes), and saw uid 0: it runs
    as the user's own ids, as without the overlay (review finding 1). Run as nobody
    when the suite runs as root."""
    uid, gid = (65534, 65534) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    user = {"user": uid, "group": gid, "extra_groups": []} if os.geteuid() == 0 else {}
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"],
                           capture_output=True, **user)
    if probe.returncode != 0:
        pytest.skip("no unprivileged user namespaces on this machine")
    # Not under tmp_path: pytest's base directory is the invoking user's alone.
    base = Path(tempfile.mkdtemp(prefix="userns-rights."))
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    lower, build = base / "lower", base / "build"
    lower.mkdir(parents=True)
    (lower / "f").write_text("x")
    (build / "m").mkdir(parents=True)
    secret = base / "secret"
    secret.write_text("s")
    run = OverlayRun.prepare(build, base, layer_overlay._USERNS, [("m", [lower])], [lower])
    assert run is not None
    run.ids = (uid, gid)
    for directory, _, files in os.walk(base):
        for path in [directory, *(os.path.join(directory, name) for name in files)]:
            os.chown(path, uid, gid)
    secret.chmod(0)  # the user's own file, which the user's rights cannot read
    step = f"id -u; id -g; cat {secret} && echo read-it; echo new > {build}/m/new"
    done = subprocess.run(run.argv(["sh", "-c", step]), capture_output=True, text=True,
                          **user)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(uid), str(gid)]  # its ids; `cat` was refused
    assert "Permission denied" in done.stderr
    assert (run.mounts[0].upper / "new").stat().st_uid == uid  # what it wrote is the user's
    run.remove()


class _Build:
    """What StepLayers asks of the build: its views, an overlay, materialising."""

    def __init__(self, run: OverlayRun) -> None:
        from slugbuild.log import Reporter
        self.views = {".heroku/python": object()}
        self.runs = [run]
        self.overlay_failed = False
        self.materialised = 0
        self.reporter = Reporter(quiet=True)
        self.warnings: list[str] = []
        self.reporter.warn = self.warnings.append  # type: ignore[method-assign]
        self.seal = _NoSeal()  # the seal's own fallback: tests/adversarial/test_sealed_cache.py

    def overlay(self) -> OverlayRun | None:
        return None if self.overlay_failed else self.runs.pop()

    def materialise(self, copy: bool = False) -> None:
        self.materialised += 1


class _NoSeal:
    """A build whose steps run unsealed (step_jail.CacheSeal's answers then)."""

    def mounts(self) -> None:
        return None

    def command(self, argv: object) -> None:
        return None

    def explain_read_only(self, step: str, failure: Exception) -> None:
        return None  # unsealed: no seal to explain


def _step_layers(tmp_path: Path, lowers: list[Path]):
    from slugbuild.context import StepLayers
    found = mechanism(tmp_path)
    if found is None:
        pytest.skip("no private overlay on this machine")
    build = tmp_path / "build"
    (build / ".heroku/python").mkdir(parents=True, exist_ok=True)
    run = OverlayRun.prepare(build, tmp_path, found, [(".heroku/python", lowers)], [])
    assert run is not None
    fake = _Build(run)
    return StepLayers(fake, "bin/post_compile"), fake  # type: ignore[arg-type]


def test_a_failed_overlay_mount_runs_the_step_on_placed_layers(tmp_path):
    """The overlay is a speed path: a mount that fails (here a lower tree that is gone)
    never fails the step; it runs again on materialised layers, with one line saying
    why (review finding 2)."""
    from slugbuild.proc import run_tool
    layers, fake = _step_layers(tmp_path, [tmp_path / "gone"])
    ran: list[list[str]] = []

    def start(command):
        ran.append([str(arg) for arg in command])
        return run_tool(command, fake.reporter, dict(os.environ))

    assert layers.run_step(["sh", "-c", "echo ran"], start) == "ran"
    assert ran[-1] == ["sh", "-c", "echo ran"] and len(ran) == 2
    assert fake.materialised == 1 and fake.overlay_failed
    (warning,) = fake.warnings
    assert "overlay" in warning and "bin/post_compile" in warning
    layers.finish()
    assert not any(tmp_path.glob("overlay.*"))


def test_a_step_exiting_125_under_the_overlay_is_the_steps_failure(tmp_path):
    """125 is what the wrapper used to exit with on a failed mount: the step's own
    125 is told apart by the start mark, and stays its failure (no second run)."""
    from slugbuild.proc import ToolFailed, run_tool
    lower = tmp_path / "lower"
    lower.mkdir()
    layers, fake = _step_layers(tmp_path, [lower])
    ran: list[list[str]] = []

    def start(command):
        ran.append(command)
        return run_tool(command, fake.reporter, dict(os.environ))

    with pytest.raises(ToolFailed) as failed:
        layers.run_step(["sh", "-c", "echo out; echo err >&2; exit 125"], start)
    assert failed.value.exit_code == 125 and len(ran) == 1
    assert failed.value.tail.splitlines() == ["out", "err"]  # no wrapper line
    assert fake.materialised == 0 and not fake.warnings
    layers.__exit__(ToolFailed, failed.value, None)
    assert not any(tmp_path.glob("overlay.*"))
