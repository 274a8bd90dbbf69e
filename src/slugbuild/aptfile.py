"""Aptfile: system packages (Debian/Ubuntu) an app needs, unpacked into the slug's ``.apt/``.

The community apt buildpack's convention on Heroku and Scalingo: one package
name per line, or the URL of a ``.deb``. slugbuild downloads them for the
build's stack with the stack's own apt (a private apt state in the cache, so
the machine's apt is never touched; dependencies the stack already has are
not downloaded again, as in the apt buildpack), unpacks them with
``dpkg-deb -x`` into ``.apt/``, and makes them visible to later build steps
(PATH, LD_LIBRARY_PATH, LIBRARY_PATH, CPATH, PKG_CONFIG_PATH: an sdist that
needs a library's headers compiles) and to the app at run time
(``.profile.d/000-apt.sh``). The unpacked tree is a cache layer keyed by the
Aptfile and the stack.

A ``.deb`` URL may carry its SHA-256 (``URL#sha256=HEX`` or ``URL sha256:HEX``):
the download is then refused unless it matches.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import errors
from .cache import Cache, Layer
from .context import BuildContext
from .lazy_import import lazy_module
from .log import Reporter
from .platform_info import Platform
from .proc import clean_env
from .redact import redact_url
from .tree import walk_sorted

if TYPE_CHECKING:
    import urllib.request as urllib_request
else:
    # Downloads only (http.client, email, ssl...): imported when first used.
    urllib_request = lazy_module("urllib.request")

APTFILE = "Aptfile"
APT_DIR = ".apt"
PROFILE_SCRIPT = ".profile.d/000-apt.sh"
APT_LAYER_FORMAT = 3  # 2: absolute symlinks made relative; 3: packages in the manifest
MAX_DEB_BYTES = 1 << 30  # a .deb URL serving more than this is refused
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(?::[a-z0-9-]+)?(?:=[A-Za-z0-9.+~:-]+)?$")
_DEB_URL = re.compile(r"^(?P<url>https?://\S+?\.deb)(?:#sha256=(?P<hash>[0-9a-fA-F]{64}))?"
                      r"(?:\s+sha256:(?P<hash2>[0-9a-fA-F]{64}))?$")


@dataclass(frozen=True)
class AptEntry:
    """One Aptfile line: a package name, or a .deb URL (with its SHA-256 if given)."""

    name: str | None = None
    url: str | None = None
    sha256: str | None = None


def read_aptfile(path: Path) -> list[AptEntry]:
    """The entries of an Aptfile; a line that is neither form is an error naming it."""
    entries = []
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        # A comment starts at a `#` after a blank; a URL's `#sha256=` is kept.
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        deb = _DEB_URL.match(line)
        if deb:
            digest = deb.group("hash") or deb.group("hash2")
            entries.append(AptEntry(url=deb.group("url"),
                                    sha256=digest.lower() if digest else None))
        elif _PACKAGE.match(line):
            entries.append(AptEntry(name=line))
        else:
            reason = ("custom apt repositories (`:repo:` lines) are not supported"
                      if line.startswith(":repo:") else
                      "it is neither a Debian package name nor the URL of a .deb")
            raise errors.APTFILE_INVALID.error(line=number, text=redact_url(line)[:200],
                                               reason=reason)
    return entries


def apt_layer_key(aptfile_text: str, platform: Platform) -> tuple[str, dict[str, object]]:
    """The layer key: the Aptfile's content and the stack it is for."""
    inputs: dict[str, object] = {
        "aptfile_sha256": hashlib.sha256(aptfile_text.encode()).hexdigest(),
        "stack": platform.stack, "arch": platform.arch, "format": APT_LAYER_FORMAT}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest(), inputs


def apt_layer_name(key: str) -> str:
    """The system packages layer's name in the cache."""
    return f"apt-{key[:20]}"


def prepare_apt_layer(build_dir: Path, cache: Cache, platform: Platform,
                      reporter: Reporter) -> tuple[Layer, bool] | None:
    """The cached ``.apt`` layer for the app's Aptfile (None without one), and
    whether it came from the cache."""
    path = build_dir / APTFILE
    if not path.is_file():
        return None
    entries = read_aptfile(path)
    if not entries:
        reporter.warn("Aptfile lists no packages; nothing installed.")
        return None
    _require_apt(platform)
    key, inputs = apt_layer_key(path.read_text(errors="replace"), platform)
    name = apt_layer_name(key)
    layer, problems = cache.lookup_verified("layers", name, key)
    if layer is not None:
        return layer, True
    with cache.lock("layers", name):
        layer, again = cache.lookup_verified("layers", name, key)
        if layer is not None:
            return layer, True
        if problems or again:
            reporter.warn(f"The cached system packages layer {name} was damaged "
                          f"({(problems or again)[0]}); it is made again.")
        shown = ", ".join(e.name or redact_url(e.url or "") for e in entries)
        reporter.step(f"Installing system packages from Aptfile ({shown})")
        scratch = cache.scratch_dir("apt")
        try:
            debs = _download(entries, cache, scratch, reporter)
            inputs = {**inputs, "packages": [_control(deb) for deb in debs],
                      "left_out": left_out_dependencies(debs)}
            with cache.new_layer("layers", name, key, inputs) as tree:
                for deb in debs:
                    _run(["dpkg-deb", "-x", str(deb), str(tree)], f"dpkg-deb -x {deb.name}")
                _relative_symlinks(tree)
                reporter.detail(f"Unpacked {len(debs)} package(s) into {APT_DIR}/")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        layer = cache.lookup("layers", name, key)
        assert layer is not None
        return layer, False


def _show(deb: Path, showformat: str) -> str:
    """Fields of a .deb's control file (``dpkg-deb --show``)."""
    done = subprocess.run(["dpkg-deb", "--show", "--showformat", showformat, str(deb)],
                          capture_output=True, text=True, env=clean_env())
    if done.returncode != 0:
        raise errors.APTFILE_INSTALL_FAILED.error(command=f"dpkg-deb --show {deb.name}",
                                                  output=done.stderr.strip()[-2000:])
    return done.stdout


def _control(deb: Path) -> dict[str, str]:
    """Name, version and architecture of a .deb, from its control file."""
    name, version, arch = (_show(deb, "${Package}\t${Version}\t${Architecture}")
                           .split("\t") + ["", "", ""])[:3]
    return {"name": name, "version": version, "architecture": arch}


def left_out_dependencies(debs: list[Path]) -> list[str]:
    """The packages the .debs depend on that were not downloaded, since this machine
    has them (apt counts its dpkg status, as the apt buildpack does): a run image
    other than this machine must have them too (docs/system-packages.md). A group
    of alternatives is satisfied by any one downloaded; else its first is named."""
    groups: list[list[str]] = []
    names = set()
    for deb in debs:
        name, _, depends = _show(deb, "${Package}\n${Pre-Depends}, ${Depends}").partition("\n")
        names.add(name.strip())
        for group in depends.split(","):
            # "libfoo1 (>= 1.2) | libfoo-alt:any" -> ["libfoo1", "libfoo-alt"]
            alternatives = [re.split(r"[\s(:\[]", choice.strip(), maxsplit=1)[0]
                            for choice in group.split("|")]
            if alternatives and alternatives[0]:
                groups.append(alternatives)
    return sorted({group[0] for group in groups if not names.intersection(group)})


def left_out_line(left_out: list[str], most: int = 12) -> str:
    """The build log's note on ``left_out_dependencies``."""
    shown = ", ".join(left_out[:most]) + (f" and {len(left_out) - most} more"
                                          if len(left_out) > most else "")
    return (f"Not unpacked, as this machine has them (a run image must have them too, "
            f"docs/system-packages.md): {shown}")


def _relative_symlinks(tree: Path) -> None:
    """Absolute symlinks to files the packages themselves hold (``/usr/lib/x/libfoo.so``)
    point into ``.apt`` instead: relative, so they work wherever the slug is unpacked.
    Others (into the stack's own files) are left as the packages made them."""
    for directory, dirnames, filenames in walk_sorted(tree):
        for path in (directory / name for name in [*dirnames, *filenames]):
            if not path.is_symlink():
                continue
            target = os.readlink(path)
            inside = tree / target.lstrip("/")
            if target.startswith("/") and os.path.lexists(inside):
                path.unlink()
                path.symlink_to(os.path.relpath(inside, path.parent))


def build_env(apt_root: Path, base_path: str) -> dict[str, str]:
    """Variables that make the unpacked packages visible to later build steps."""
    dirs = _search_dirs(str(apt_root))
    return {"PATH": ":".join([*dirs["PATH"], base_path]),
            **{var: ":".join(paths) for var, paths in dirs.items() if var != "PATH"}}


def write_profile_script(build_dir: Path) -> None:
    """``.profile.d/000-apt.sh``: the same variables at run time, from ``$HOME``."""
    lines = ["# Written by slugbuild: system packages from the Aptfile, under $HOME/.apt."]
    for var, paths in _search_dirs("$HOME/.apt").items():
        lines.append(f'export {var}="{":".join(paths)}${{{var}:+:${var}}}"')
    target = build_dir / PROFILE_SCRIPT
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n")


def _search_dirs(root: str) -> dict[str, list[str]]:
    triplet = _multiarch()
    lib = [f"{root}/usr/lib/{triplet}", f"{root}/lib/{triplet}", f"{root}/usr/lib", f"{root}/lib"]
    include = [f"{root}/usr/include/{triplet}", f"{root}/usr/include"]
    return {
        "PATH": [f"{root}/usr/bin", f"{root}/bin", f"{root}/usr/sbin"],
        "LD_LIBRARY_PATH": lib,
        "LIBRARY_PATH": lib,
        "INCLUDE_PATH": include,
        "CPATH": include,
        "CPPPATH": include,
        "PKG_CONFIG_PATH": [f"{root}/usr/lib/{triplet}/pkgconfig", f"{root}/usr/lib/pkgconfig",
                            f"{root}/usr/share/pkgconfig"],
    }


def _multiarch() -> str:
    machine = os.uname().machine
    return {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}.get(
        machine, f"{machine}-linux-gnu")


def _require_apt(platform: Platform) -> None:
    """Only a Debian or Ubuntu machine of the stack can fetch its packages."""
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if platform.distro not in ("debian", "ubuntu") or missing:
        raise errors.APTFILE_UNSUPPORTED.error(
            stack=platform.stack,
            reason=(f"{', '.join(missing)} not found" if missing
                    else f"the stack is {platform.distro}, not Debian or Ubuntu"))


def _apt_options(cache: Cache, archives: Path) -> list[str]:
    """A private apt state in the cache; the machine's installed packages still count
    (its dpkg status), so what the stack has is not downloaded, as in the apt buildpack."""
    state = cache.root / "apt"
    (state / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (archives / "partial").mkdir(parents=True, exist_ok=True)
    return ["-q", "-y", "-o", "Debug::NoLocking=1", "-o", f"Dir::State::Lists={state / 'lists'}",
            "-o", f"Dir::Cache={state / 'cache'}", "-o", f"Dir::Cache::archives={archives}",
            "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=",
            # As root apt drops to _apt, who cannot write into a private cache.
            *(["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else [])]


def _download(entries: list[AptEntry], cache: Cache, scratch: Path,
              reporter: Reporter) -> list[Path]:
    archives = scratch / "archives"
    archives.mkdir(parents=True, exist_ok=True)
    names = [e.name for e in entries if e.name]
    if names:
        options = _apt_options(cache, archives)
        with cache.lock("apt", "state"):
            _run(["apt-get", *options, "update"], "apt-get update")
            _run(["apt-get", *options, "--no-install-recommends", "--reinstall",
                  "--download-only", "install", *names],
                 f"apt-get install --download-only {' '.join(names)}")
    for entry in entries:
        if entry.url:
            _fetch_deb(entry, archives)
    debs = sorted(archives.glob("*.deb"))
    if not debs:
        raise errors.APTFILE_INSTALL_FAILED.error(
            command="apt-get install --download-only", output="no package was downloaded")
    return debs


def _fetch_deb(entry: AptEntry, archives: Path) -> None:
    assert entry.url is not None
    shown = redact_url(entry.url)
    target = archives / re.sub(r"[^A-Za-z0-9._+~-]", "_", entry.url.rsplit("/", 1)[-1])
    digest = hashlib.sha256()
    try:
        with urllib_request.urlopen(entry.url, timeout=60) as response, \
                open(target, "wb") as handle:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                handle.write(block)
                if handle.tell() > MAX_DEB_BYTES:
                    raise ValueError(f"larger than {MAX_DEB_BYTES >> 20} MiB")
    except (OSError, ValueError) as exc:
        raise errors.APTFILE_INSTALL_FAILED.error(command=f"download {shown}",
                                                  output=redact_url(str(exc))) from exc
    if entry.sha256 and digest.hexdigest() != entry.sha256:
        raise errors.APTFILE_CHECKSUM_MISMATCH.error(url=shown, expected=entry.sha256,
                                                     actual=digest.hexdigest())


def _run(argv: list[str], shown: str) -> None:
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=clean_env({"DEBIAN_FRONTEND": "noninteractive"}))
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise errors.APTFILE_INSTALL_FAILED.error(command=shown, output=redact_url(tail))


def place_apt_layer(build: BuildContext) -> dict[str, str]:
    """The Aptfile's system packages into ``.apt/`` (a cached layer); the variables
    that let later build steps find them (none without an Aptfile)."""
    with build.timer.stage("apt_layer"):
        prepared = prepare_apt_layer(build.build_dir, build.cache, build.platform,
                                     build.reporter)
        if prepared is None:
            return {}
        layer, from_cache = prepared
        if from_cache:
            build.reporter.step("Restoring system packages from cache (Aptfile unchanged)")
        placed = build.cache.restore(layer, build.build_dir / APT_DIR, copy=build.copy_layers)
        build.place_layer(layer, APT_DIR, placed)
        build.system_packages = list(layer.manifest.get("inputs", {}).get("packages", []))
        left_out = layer.manifest.get("inputs", {}).get("left_out")
        if left_out:  # on warm builds too; layers made before it was recorded have none
            build.reporter.detail(left_out_line(list(left_out)))
        write_profile_script(build.build_dir)
        return build_env(build.build_dir / APT_DIR, clean_env().get("PATH", os.defpath))
