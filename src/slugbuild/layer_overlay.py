"""Build steps run against the cached layer trees in place, through an overlay (issue 20).

A step that runs a program of the slug (collectstatic, the entry-point import
check) needs the runtime and dependency layers at ``.heroku/python`` as real
files: Python finds its prefix through them. Materialising them
(``BuildContext.materialise``: ~2,800 directories and ~6,800 hard links for a
Django app) cost more than the step itself, and hard links expose the cached
files to a step that writes in place.

Here the step runs in a private mount namespace (``unshare --mount``) in which
``.heroku/python`` is an overlay mount: the layers' cached trees are its lower
layers (the later layer on top, as when they are placed), a scratch directory
of the build its upper layer, and the layers' directories in the cache are
bind-mounted read-only over themselves. The kernel never writes to a lower
layer, so nothing the step does through the prefix changes a cached file; what
it writes, deletes, renames or chmods there goes to the upper directory
(copy-up). The read-only binds stop accidental writes by a layer's cache path;
a step running with the builder's rights can still reach a cached file on
purpose (uv's cache shares its inodes), which the layers' own stat and ctime
checks catch (docs/security.md). The namespace ends with the step's last
process; the build's own view of the directory (layer_view.py) is untouched.
The upper directory is the step's to write too: ``apply_upper`` keeps what it
applies inside the mount.

Afterwards, when the upper directory holds anything, the build materialises the
layers as before and applies what the step wrote on top of them (``apply_upper``:
files copied as new files, whiteouts removed, opaque and renamed directories
followed), so the slug holds what it would have held had the step run on
materialised layers, and the cached files stay as published.

Mechanisms, in order: as root (a CI runner, this machine), a mount namespace;
otherwise an unprivileged user namespace mapping the user to root with the
overlay's ``userxattr`` option (Linux 5.11 and later), the step itself run as the
user's own ids in a nested user namespace (root there could override the user's
file modes and unmount the read-only binds). With the cache sealed (step_jail.py)
the step drops into a nested user namespace as root too (``Mechanism.command``'s
``drop``), and the namespace also binds the cache read-only around the build's
scratch. A namespace or mount that fails at a
step never fails it: the step had not started (its start is marked, ``STARTED``),
and it runs on materialised layers (``context.StepLayers.run_step``). A container without
CAP_SYS_ADMIN and without user namespaces has neither: the build materialises,
as before, and says so in the log. ``SLUGBUILD_LAYER_OVERLAY=0`` turns the overlay off.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from .envflag import env_flag

T = TypeVar("T")
OVERLAY_ENV = "SLUGBUILD_LAYER_OVERLAY"
# What the overlay options cannot hold (they are separated by "," and ":").
UNSAFE_OPTION_CHARS = frozenset(",:\\\n\"'")
# The wrapper's own errors (unshare's, mount's) go to the run's status file, not to the
# step's output: stderr is kept as fd 3 and given back to the step when it starts.
_KEEP_STDERR = 'exec 3>&2 2>"$0"; exec "$@"'
# Bind-mounts each read-only path up to "--" ("$2" onwards; one gone meanwhile, such
# as another build's scratch, is skipped), then each writable one up
# to the next "--" (a bind of a path below a read-only bind is read-only until
# remounted), then each private overlay of a directory over itself (target and options
# pairs up to the next "--": step_jail.py's installer caches), then the overlay if any
# ("$1" options, "$2" target; both empty: none),
# then enters its working directory again by its path (the one it was started in is
# on the mount the binds now cover: a path below it would miss the overlay), and runs
# the rest (same process: the build's limits and kill apply).
_MOUNTS = ('m="$0"; o="$1"; t="$2"; shift 2; d=$(pwd -P) || exit 125; '
           'while [ "$1" != -- ]; do "$m" --bind -o ro "$1" "$1" || '
           '[ ! -e "$1" ] || exit 125; shift; done; '
           'shift; while [ "$1" != -- ]; do { "$m" --bind "$1" "$1" && '
           '"$m" -o remount,bind,rw "$1"; } || exit 125; shift; done; shift; '
           'while [ "$1" != -- ]; do "$m" -t overlay slugbuild-guard -o "$2" "$1" '
           '|| exit 125; shift 2; done; shift; '
           'if [ -n "$t" ]; then "$m" -t overlay slugbuild-layers -o "$o" "$t" || exit 125; fi; '
           'cd "$d" || exit 125; exec "$@"')
# The last word before the step: it has started (``OverlayRun.started``), with its
# own stderr back, and the environment it was given (the wrapper's shells export PWD
# and OLDPWD, which proc.clean_env leaves out: an export file sourced through the
# wrapper took OLDPWD, a new scratch path each build, into the build's hash).
STARTED = "slugbuild: the step started"
_START = f'echo "{STARTED}" >&2; exec 2>&3 3>&-; unset PWD OLDPWD; exec "$@"'


class LayerAccess(Protocol):
    """What a step that runs a program of the slug asks of the build (context.StepLayers)."""

    @property
    def sealed(self) -> bool:
        """Whether the step sees the prefix through an overlay (the build directory's
        prefix cannot change)."""
        ...

    def argv(self, argv: Sequence[str | Path]) -> list[str | Path]:
        """The command to run, the layers ready for it."""
        ...

    def run_step(self, argv: Sequence[str | Path], start: Callable[[list[str | Path]], T]) -> T:
        """``start`` for the command of ``argv`` (``argv`` above); run again on
        materialised layers when the overlay failed before the step started."""
        ...

    def prefix_written(self) -> bool:
        """Whether the step wrote into the prefix (through the overlay)."""
        ...


@dataclass(frozen=True)
class Mechanism:
    """How a private mount namespace is had here: the ``unshare`` command and the
    overlay's extra options and xattr namespace (``trusted.`` as root, ``user.``
    in a user namespace). ``drops``: the step runs in a user namespace of its own
    nested in the mounting one, as the caller's uid and gid (no capability, no
    root: the files it may read or write are the caller's, the mounts not its own)."""

    name: str
    unshare: tuple[str, ...]
    options: str
    xattrs: str
    drops: bool = False

    def command(self, status: Path, mount: Sequence[str], argv: Sequence[str | Path],
                ids: tuple[int, int] | None = None, writable: Sequence[str] = (),
                drop: bool | None = None, overlays: Sequence[tuple[str, str]] = ()
                ) -> list[str | Path] | None:
        """``argv`` run in a private mount namespace after ``mount`` (the overlay's
        options and its target, both empty for none; then the read-only paths) and
        ``writable`` (paths below a read-only one the step may write): ``sh``
        keeping stderr, ``unshare``, ``sh`` mounting, [``unshare`` dropping to the
        caller], ``sh`` marking the start. By absolute paths (the step's PATH is the
        app's); None when a tool is missing. The wrapper's errors go to ``status``
        (``step_started``); ``ids``: the uid and gid the step drops to (the caller's
        by default); ``drop``: whether it drops (the mechanism's ``drops`` unless
        told: a sealed step always does, step_jail.py); ``overlays``: directories
        (target, overlay options) each shown through a private overlay of itself."""
        tools = [shutil.which(name) for name in ("unshare", "sh", "mount")]
        if None in tools:
            return None
        unshare, sh, mounter = (str(tool) for tool in tools)
        uid, gid = ids if ids is not None else (os.getuid(), os.getgid())
        dropping = self.drops if drop is None else drop
        nested = ([unshare, "--user", f"--map-user={uid}", f"--map-group={gid}", "--"]
                  if dropping else [])
        options, target, *read_only = mount
        return [sh, "-c", _KEEP_STDERR, str(status), unshare, *self.unshare[1:], "--",
                sh, "-c", _MOUNTS, mounter, options, target, *read_only, "--", *writable,
                "--", *(word for pair in overlays for word in pair), "--",
                *nested, sh, "-c", _START, sh, *argv]


# As root, a renamed lower directory is recorded (redirect_dir=on) and followed by
# apply_upper; in a user namespace the kernel refuses that option (userxattr), and
# renaming a cached directory fails with EXDEV (tools then copy, as across devices).
# As root the step runs as root (the build's own identity, as without the overlay);
# in a user namespace the mounting namespace maps the user to root (mounting needs
# it) and the step drops to the user's own ids in a nested one.
_ROOT = Mechanism("mount namespace", ("unshare", "--mount", "--propagation", "private"),
                  ",redirect_dir=on", "trusted.overlay.")
_USERNS = Mechanism("user namespace", ("unshare", "--user", "--map-root-user", "--mount",
                                       "--propagation", "private"),
                    ",userxattr", "user.overlay.", drops=True)
_found: dict[str, Mechanism | None] = {}


def candidates() -> list[Mechanism]:
    """The ways to a private mount namespace worth trying here, in order."""
    return [_ROOT, _USERNS] if os.geteuid() == 0 else [_USERNS]


def overlay_wanted() -> bool:
    """SLUGBUILD_LAYER_OVERLAY=0 materialises the layers for every step, as before."""
    return env_flag(OVERLAY_ENV, unset=True, unknown=True, empty=False)


def mechanism(scratch: Path) -> Mechanism | None:
    """The first way this machine allows to mount an overlay privately, tried once per
    process (a tiny overlay in ``scratch``); None when none works."""
    return first_working(_found, lambda candidate: _works(candidate, scratch))


def first_working(found: dict[str, Mechanism | None], works: Callable[[Mechanism], bool]
                  ) -> Mechanism | None:
    """The first of ``candidates()`` that ``works``, tried once per process (the answer
    kept in ``found``); None when none does."""
    if "found" not in found:
        found["found"] = next((m for m in candidates() if works(m)), None)
    return found["found"]


def _works(candidate: Mechanism, scratch: Path) -> bool:
    base = Path(tempfile.mkdtemp(prefix="overlay-probe.", dir=scratch))
    try:
        for name in ("lower", "upper", "work", "merged"):
            (base / name).mkdir()
        (base / "lower" / "probe").write_text("")
        options = (f"lowerdir={base / 'lower'},upperdir={base / 'upper'},"
                   f"workdir={base / 'work'}{candidate.options}")
        if any(char in UNSAFE_OPTION_CHARS for char in str(base)):
            return False
        command = candidate.command(
            base / "status", [options, str(base / "merged"), str(base / "lower")],
            ["test", "-f", str(base / "merged" / "probe")])
        return probe_passes(command)
    except OSError:
        return False
    finally:
        remove_scratch(base)


def probe_passes(command: Sequence[str | Path] | None) -> bool:
    """Whether a probe's wrapped command (None: a tool is missing) ran and exited 0
    within 20 s."""
    if command is None:
        return False
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


@dataclass(frozen=True)
class SealMounts:
    """What a sealed step's namespace adds (step_jail.py): the paths bind-mounted
    read-only (the cache), those below them it may write, and the status file the
    wrapper writes its errors and start mark to, out of the step's reach."""

    read_only: tuple[str, ...]
    writable: tuple[str, ...]
    status: Path


def step_started(status: Path) -> bool:
    """Whether a wrapped step itself ran: the wrapper's start mark is in ``status``."""
    return STARTED in _status_text(status)


def setup_failure(status: Path) -> str:
    """Why a wrapped step did not start: the wrapper's own error output, one line."""
    text = " ".join(_status_text(status).split())
    return text[:300] or "the namespace could not be set up (no error was printed)"


def _status_text(status: Path) -> str:
    try:
        with open(status, "rb") as handle:
            return handle.read(64 * 1024).decode("utf-8", "replace")
    except OSError:
        return ""


@dataclass
class OverlayMount:
    """One mount shown by an overlay: its lower trees (top first) and its scratch."""

    mount: str
    lowers: list[Path]
    upper: Path
    work: Path


@dataclass
class OverlayRun:
    """The overlays a step runs under, and what it wrote through them."""

    build_dir: Path
    mechanism: Mechanism
    mounts: list[OverlayMount]
    # Directories bind-mounted read-only in the step's namespace (the cached layers').
    read_only: list[Path] = field(default_factory=list)
    # Who the step runs as in a user namespace (Mechanism.drops): the caller.
    ids: tuple[int, int] = field(default_factory=lambda: (os.getuid(), os.getgid()))
    # Where the wrapper writes its own errors, then that the step started (``argv``).
    status: Path = field(default=Path("/nonexistent"))

    @classmethod
    def prepare(cls, build_dir: Path, scratch: Path, found: Mechanism,
                layers: Sequence[tuple[str, list[Path]]], read_only: Sequence[Path]
                ) -> OverlayRun | None:
        """Scratch directories for each mount's upper layer; None when a path cannot be
        given to the overlay (it names its separators) or more than one mount is
        asked for (one overlay per step today)."""
        paths = [str(build_dir), str(scratch), *(str(p) for p in read_only),
                 *(str(tree) for _, trees in layers for tree in trees)]
        if len(layers) != 1 or any(char in UNSAFE_OPTION_CHARS for path in paths for char in path):
            return None
        base = Path(tempfile.mkdtemp(prefix="overlay.", dir=scratch))
        mounts = []
        for mount, lowers in layers:
            (base / "upper").mkdir()
            (base / "work").mkdir()
            mounts.append(OverlayMount(mount, lowers, base / "upper", base / "work"))
        return cls(build_dir, found, mounts, list(read_only))

    def argv(self, argv: Sequence[str | Path], seal: SealMounts | None = None
             ) -> list[str | Path]:
        """``argv`` run in a namespace of its own with the overlay mounted; with
        ``seal``, the cache read-only too (step_jail.py), and the step's start told by
        the seal's status file, which the step cannot write."""
        (mount,) = self.mounts
        options = (f"lowerdir={':'.join(str(tree) for tree in mount.lowers)},"
                   f"upperdir={mount.upper},workdir={mount.work}"
                   f"{self.mechanism.options}")
        self.status = seal.status if seal is not None else mount.upper.parent / "status"
        with contextlib.suppress(FileNotFoundError):
            self.status.unlink()  # a run before this one's
        read_only = [*(seal.read_only if seal is not None else ()),
                     *(str(path) for path in self.read_only)]
        command = self.mechanism.command(
            self.status, [options, str(self.build_dir / mount.mount), *read_only], argv,
            self.ids, writable=seal.writable if seal is not None else (),
            drop=True if seal is not None else None)
        assert command is not None  # the mechanism was found with these tools
        return command

    def started(self) -> bool:
        """Whether the step itself ran (after ``argv``'s command ended): not when the
        namespace or a mount failed, whatever the exit code (a step may exit 125 too)."""
        return step_started(self.status)

    def failure(self) -> str:
        """Why the step did not start: the wrapper's own error output, one line."""
        return setup_failure(self.status)

    def written(self) -> bool:
        """Whether the step wrote, deleted, renamed or chmodded anything in the prefix."""
        return any(any(os.scandir(mount.upper)) for mount in self.mounts)

    def apply(self) -> None:
        """What the step wrote, onto the build's materialised layers."""
        for mount in self.mounts:
            apply_upper(mount.upper, self.build_dir / mount.mount, self.mechanism.xattrs)

    def remove(self) -> None:
        """The scratch directories (the overlay's work directory is left unreadable)."""
        for mount in self.mounts:
            remove_scratch(mount.upper.parent)


def apply_upper(upper: Path, target: Path, xattrs: str = "trusted.overlay.") -> None:
    """Make the materialised ``target`` what the overlay showed: ``upper``'s files as
    new files (never written through a hard link), its whiteouts removed, an opaque
    directory's lower entries dropped, a renamed directory's lower entries moved
    with it (``redirect``)."""
    held = target.parent / f".{target.name}.renamed"
    redirects = _redirects(upper, xattrs)
    inside = os.path.realpath(target)
    # A renamed directory's entries are taken before any whiteout removes their source;
    # only from inside the mount (the upper directory is the step's to write: a
    # redirect it set itself may name anything).
    for index, (_, source) in enumerate(redirects.items()):
        origin = target / source
        real = os.path.realpath(origin)
        if real.startswith(inside + os.sep) and origin.is_dir() and not origin.is_symlink():
            shutil.copytree(origin, held / str(index), symlinks=True,
                            copy_function=os.link)
    held_for = {rel: held / str(index) for index, rel in enumerate(redirects)}
    _apply_directory(upper, target, "", xattrs, held_for)
    _remove(held)


def _redirects(upper: Path, xattrs: str) -> dict[str, str]:
    """Upper directories whose lower entries come from another path (a rename), by
    their path, with the lower path they come from (both relative to the mount)."""
    found: dict[str, str] = {}
    pending = [("", "")]  # (path in the upper tree, path in the lower trees)
    while pending:
        rel, lower = pending.pop()
        with os.scandir(upper / rel if rel else upper) as listing:
            for entry in listing:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                child = f"{rel}/{entry.name}" if rel else entry.name
                child_lower = f"{lower}/{entry.name}" if lower else entry.name
                redirect = _xattr(entry.path, xattrs + "redirect")
                if redirect is not None:
                    text = redirect.decode("utf-8", "surrogateescape")
                    child_lower = (text[1:] if text.startswith("/")
                                   else (f"{lower}/{text}" if lower else text))
                    # The kernel writes "/a/b" or a name; anything else (.., empty
                    # parts) was set by the step: the directory gets no lower entries.
                    if text.startswith("/") or "/" not in text:
                        parts = child_lower.split("/")
                        if not any(part in ("", ".", "..") for part in parts):
                            found[child] = child_lower
                            pending.append((child, child_lower))
                            continue
                    found[child] = ""
                pending.append((child, child_lower))
    return found


def _apply_directory(upper: Path, target: Path, rel: str, xattrs: str,
                     held_for: dict[str, Path]) -> None:
    with os.scandir(upper / rel if rel else upper) as listing:
        entries = sorted(listing, key=lambda entry: entry.name)
    for entry in entries:
        child = f"{rel}/{entry.name}" if rel else entry.name
        destination = target / child
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # a whiteout: removed
            _remove(destination)
        elif stat.S_ISDIR(st.st_mode):
            opaque = _xattr(entry.path, xattrs + "opaque") == b"y"
            if child in held_for:  # renamed: its lower entries moved with it (if any)
                _remove(destination)
                if held_for[child].is_dir():
                    os.rename(held_for[child], destination)
                else:
                    destination.mkdir()
            elif opaque or destination.is_symlink() or not destination.is_dir():
                _remove(destination)
                destination.mkdir()
            os.chmod(destination, stat.S_IMODE(st.st_mode))
            _apply_directory(upper, target, child, xattrs, held_for)
        elif stat.S_ISLNK(st.st_mode):
            _remove(destination)
            os.symlink(os.readlink(entry.path), destination)
        elif stat.S_ISREG(st.st_mode):
            _remove(destination)
            shutil.copy2(entry.path, destination)
        elif stat.S_ISFIFO(st.st_mode):
            _remove(destination)
            os.mkfifo(destination, stat.S_IMODE(st.st_mode))
        # A socket is not content: as on a materialised tree, the packer has no use for it.


def _xattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


def _remove(path: Path) -> None:
    """``path`` gone, whatever it is."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def remove_scratch(base: Path) -> None:
    """An overlay's scratch directory gone: the kernel leaves ``work/work`` with no
    permissions (in a user namespace, the user could not list it otherwise)."""
    for inner in base.glob("*/work"):
        with contextlib.suppress(OSError):
            os.chmod(inner, 0o700)
    shutil.rmtree(base, ignore_errors=True)
