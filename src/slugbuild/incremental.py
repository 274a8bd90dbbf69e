"""A dependency layer built from the app's previous one plus the difference (issue 20).

A build after one more pinned requirement used to install every package again
(uv hard-links them from its cache, quickly) and then pay per file for
everything around the install: checking each package's files against its
RECORD, compiling and canonicalising bytecode (or finding it in the pyc store),
scanning for host paths, hashing every file for files.json. Here the new
layer's tree starts from the previous layer's files instead, for exactly the
distributions a clean install would install again unchanged, and only the
difference is installed and processed.

Exactness: the new layer must hold the bytes a clean install of the same inputs
gives (its key is the key of such an install, and a test compares the slugs).
So nothing is guessed from the previous requirements:

1. The baseline (setuptools on Python 3.12 and older, pinned, installed with
   ``--no-deps``) is taken from the previous layer when it is the same pin.
2. uv resolves the app's requirements with ``--dry-run`` against a scratch
   prefix holding the baseline's dist-infos (all uv reads to know what is
   installed): the distributions and versions a clean install adds, resolved
   now, from the index, exactly as the install will (same options and indexes).
   A lock (Pipenv, Poetry, uv project) is exported first, as its install
   exports it, and uv plans the export's hashed pins (``--no-deps``: it only
   evaluates their markers); the install then installs that same export.
   An export whose pins are all hashed ``name==version`` lines needs no dry run
   (``static_plan``): a pin with no marker, or one of the runtime's version alone
   that holds, is installed by any clean install, so the previous layer's
   distribution at that version is taken; every other pin is left to the install
   (uv evaluates its marker there exactly as in a clean install). Nothing taken
   can be one uv would have skipped, and the install must then hold exactly the
   baseline, every certain pin and nothing but the lock's pins.
3. Meanwhile every distribution of the previous layer is hard-linked from it
   (every file its RECORD lists and the pycs of its sources, each checked against
   its files.json first); those the dry run wants at another version, or not at
   all (removed or upgraded packages), are taken out again.
4. uv installs the requirements into that tree; it finds the linked
   distributions satisfied and installs only the rest. The tree must then hold
   exactly the baseline and the dry run's set, else this attempt is dropped.
5. Only the new distributions are compiled, checked for ELF files built here
   and scanned for host paths; the linked files keep the digests the previous
   layer's files.json recorded.

Where the difference cannot be computed safely, the layer is installed clean
(the log says why): another installer than uv, an export with unhashed
URLs (VCS references), a layer installed into the build's prefix, local
packages or editables, a previous layer whose inputs differ in anything but
the requirements files, a previous file no single distribution's RECORD lists
(or a pyc of one), a distribution that installs over another's path, host
paths in the previous layer, a
previous file changed (or gone) since its files.json, uv planning to remove or
replace something, or a resolution that moved between the dry run and the
install.

The previous layer is the one recorded for this app directory in ``history/``
(the log's "Discarding cache since" hint), else the nearest compatible one
(``nearest_inputs``); it only decides which layer files may be taken from, never
what the new layer holds.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

from packaging.markers import InvalidMarker, Marker
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from . import records
from .cache import (
    DIGESTS,
    FILE_INDEX,
    Cache,
    Layer,
    StatKey,
    link_or_copy,
    read_index,
    stat_key,
)
from .envflag import env_flag
from .installers import Installer, InstallJob, InstallPlan, LockExporter
from .installers import uv as uv_installer
from .installers.ranges import constraints_text
from .installers.requirements import (
    logical_requirements,
    split_index_lines,
    split_local_lines,
    split_unhashed_urls,
)


class NotIncremental(Exception):
    """This layer cannot be built from the previous one; the message says why."""


@dataclass(frozen=True)
class Distribution:
    """One distribution of the previous layer and the files that are its own."""

    dist_info: str
    version: str
    files: tuple[str, ...]  # relative to the layer's tree: RECORD's list and its pycs


@dataclass(frozen=True)
class PreviousLayer:
    """The app's previous dependency layer, split into its distributions."""

    layer: Layer
    index: dict[str, Any]  # its files.json
    distributions: dict[str, Distribution]  # by canonical project name
    # Not this app directory's own layer but the nearest cached one (``nearest_inputs``):
    # the log must not call it "the previous layer", which reads as this app's.
    nearest: bool = False


def reuse_line(previous: PreviousLayer, same: int, held: int, installing: int | str) -> str:
    """The log line saying how much is taken from ``previous``, and whose layer it is: a
    build in a fresh directory (Dokku's, another app's checkout) starts from the nearest
    cached layer, which "the previous layer" would pass off as this app's own."""
    layer = previous.layer.path.name[:12]
    if previous.nearest:
        return (f"Reusing {same} of the {held} packages of the nearest cached layer "
                f"(layer {layer}, made for another app directory: this one has no "
                f"usable layer of its own); installing {installing}")
    return (f"Reusing {same} of the previous layer's {held} packages (layer {layer}); "
            f"installing {installing}")


def previous_inputs(history: Path) -> dict[str, Any] | None:
    """The inputs of the app directory's last dependency layer (``history/``)."""
    try:
        inputs = json.loads(history.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return inputs if isinstance(inputs, dict) else None


# Package managers whose installs uv makes (requirements.txt, and the exported locks
# of Pipenv, Poetry and uv projects): uv plans them with --dry-run.
INCREMENTAL_MANAGERS = frozenset({"pip", "pipenv", "poetry", "uv"})
# Layer key inputs that follow from the requirements themselves: they may differ.
REQUIREMENT_INPUTS = frozenset({"files", "resolved", "resolved_sha256"})


def why_not_incremental(previous: dict[str, Any] | None, inputs: dict[str, Any],
                        plan: InstallPlan, own_tree: bool, local_packages: bool) -> str | None:
    """Why a layer keyed by ``inputs`` cannot start from the one keyed by ``previous``
    (None: it can)."""
    if not env_flag("SLUGBUILD_INCREMENTAL", unset=True, unknown=True, empty=False):
        return "SLUGBUILD_INCREMENTAL=0"
    if previous is None:
        return "no previous layer of this app"
    if not own_tree:
        return "installed into the build's prefix"
    if plan.tool != "uv" or plan.name not in INCREMENTAL_MANAGERS:
        return f"installed by {plan.name} via {plan.tool}, not uv"
    if local_packages:
        return "the requirements build local packages"
    differing = sorted(name for name in set(previous) | set(inputs)
                       if name not in REQUIREMENT_INPUTS
                       and previous.get(name) != inputs.get(name))
    if differing:
        return f"the previous layer differs in {', '.join(differing)}"
    return None


def nearest_inputs(cache: Cache, inputs: dict[str, Any], python_name: str,
                   wanted: set[str], tried: dict[str, Any] | None = None
                   ) -> dict[str, Any] | None:
    """The inputs of the cached layer to start from when the app directory has no
    usable one (a build directory made afresh for every build, as Dokku's and the
    bench's): of the layers whose inputs differ from ``inputs`` in nothing but the
    files, the one holding most of the ``wanted`` projects (canonical names), the
    newest of those. Any of them gives the same layer; the choice only decides how
    much is taken rather than installed. ``tried``: a layer's inputs that failed."""
    best: tuple[int, int] | None = None
    found = None
    try:
        names = os.listdir(cache.root / "layers")
    except OSError:
        return None
    for name in names:
        manifest_path = cache.root / "layers" / name / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text())
            candidate = manifest["inputs"]
            age = manifest_path.stat().st_mtime_ns
            site = cache.root / "layers" / name / "tree/lib" / python_name / "site-packages"
            held = {str(canonicalize_name(entry.split("-")[0])) for entry in os.listdir(site)
                    if entry.endswith(".dist-info")}
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            continue
        if not isinstance(candidate, dict) or candidate in (inputs, tried) or any(
                candidate.get(k) != inputs.get(k)
                for k in set(candidate) | set(inputs) if k not in REQUIREMENT_INPUTS):
            continue
        score = (len(wanted & held), age)
        if best is None or score > best:
            best, found = score, candidate
    return found


def layer_key_of(inputs: dict[str, Any]) -> str:
    """The key a layer with these inputs has (dependencies.layer_key's hash)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def find_previous(cache: Cache, inputs: dict[str, Any], python_name: str,
                  nearest: bool = False) -> PreviousLayer:
    """The previous layer with its distributions' files; raises NotIncremental when it
    is gone or holds a file of no single one. Its files are checked against its
    files.json as they are taken (``take``), not all of them here. ``nearest``: it is
    the nearest cached layer, not the app directory's own (``PreviousLayer.nearest``)."""
    key = layer_key_of(inputs)
    layer = cache.lookup("layers", key[:24], key)
    if layer is None:
        raise NotIncremental("the previous layer is no longer cached")
    index = read_index(layer.path / FILE_INDEX)
    if index is None:
        raise NotIncremental("the previous layer has no file index")
    try:
        host_paths = json.loads((layer.path / "host-paths.json").read_text())
    except (OSError, ValueError, RecursionError):
        host_paths = None
    if host_paths != []:
        raise NotIncremental("the previous layer names paths of this machine")
    return PreviousLayer(layer, index, _distributions(layer.tree, index, python_name),
                         nearest)


def _distributions(tree: Path, index: dict[str, Any], python_name: str
                   ) -> dict[str, Distribution]:
    base = f"lib/{python_name}/site-packages"
    listed = [rel for rel in index["files"]
              if re.fullmatch(re.escape(base) + r"/[^/]+\.dist-info/RECORD", rel)]
    claims = records.claims_in(tree, listed)
    owner: dict[str, str] = {}
    for rel, found in claims.items():
        if len({claim.dist_info for claim in found}) != 1:
            raise NotIncremental(f"{rel} is installed by several distributions")
        owner[rel] = found[0].dist_info
    owned: dict[str, list[str]] = {}
    for rel in [*index["files"], *index["symlinks"]]:
        dist_info = owner.get(rel) or owner.get(_source_of(rel))
        if dist_info is None:
            raise NotIncremental(f"{rel} belongs to no distribution")
        owned.setdefault(dist_info, []).append(rel)
    found_dists = {}
    for record in listed:
        dist_info = record.split("/")[-2]
        metadata = tree / base / dist_info / "METADATA"
        name, version = _name_version(metadata)
        found_dists[name] = Distribution(dist_info, version, tuple(sorted(owned[dist_info])))
    return found_dists


def take_dist_infos(previous: PreviousLayer, prefix: Path,
                    distributions: list[Distribution]) -> None:
    """Link only the dist-info directories of ``distributions`` under ``prefix``."""
    for dist in distributions:
        dist_info = [rel for rel in dist.files if f"/{dist.dist_info}/" in rel]
        for rel in dist_info:
            os.makedirs(prefix / os.path.dirname(rel), exist_ok=True)
            link_or_copy(previous.layer.tree / rel, prefix / rel)


def _source_of(rel: str) -> str:
    """For ``dir/__pycache__/mod.cpython-312.pyc``, ``dir/mod.py`` (else "")."""
    head, _, name = rel.rpartition("/__pycache__/")
    if not name.endswith(".pyc") or name.count(".") < 2:
        return ""
    return f"{head}/{name.split('.')[0]}.py" if head else ""


def _name_version(metadata: Path) -> tuple[str, str]:
    name = version = None
    try:
        with open(metadata, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    break
                if line.startswith("Name:"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("Version:"):
                    version = line.split(":", 1)[1].strip()
    except OSError:
        pass
    if not name or not version:
        raise NotIncremental(f"{metadata.parent.name} has no name or version")
    return str(canonicalize_name(name)), version


@dataclass
class Taken:
    """What was linked from the previous layer into the new tree."""

    files: dict[str, tuple[int, int]]  # relative path -> (st_dev, st_ino) once linked
    dist_infos: set[str]
    # relative path -> its ctime just after it was linked: a write since (a package's
    # build during the install, through the link) moves it, and the file is hashed.
    ctimes: dict[str, int] = field(default_factory=dict)


def take(previous: PreviousLayer, tree: Path, distributions: list[Distribution],
         taken: Taken) -> None:
    """Hard-link the files of ``distributions`` from the previous layer into ``tree``,
    each checked first against the previous files.json as a cache lookup checks a
    layer (size, mtime and mode; the content when its ctime moved). Linked by a few
    threads: each link waits on the file system, which serves several at once."""
    source = previous.layer.tree
    symlinks = previous.index["symlinks"]
    wanted = [rel for dist in distributions for rel in dist.files]
    taken.dist_infos.update(dist.dist_info for dist in distributions)
    made = {""}
    for parent in sorted({os.path.dirname(rel) for rel in wanted}):
        # Parents sort before their children: one mkdir each, no existence checks.
        missing = []
        while parent not in made:
            missing.append(parent)
            parent = os.path.dirname(parent)
        for directory in reversed(missing):
            os.mkdir(os.path.join(tree, directory))
            made.add(directory)
    regular = []
    for rel in wanted:
        if rel in symlinks:
            os.symlink(symlinks[rel], tree / rel)
        else:
            regular.append(rel)
    chunk = max(64, len(regular) // (LINK_THREADS * 4) + 1)
    with ThreadPoolExecutor(max_workers=LINK_THREADS) as threads:
        for linked in threads.map(partial(_link_checked, previous, source, tree),
                                  [regular[i:i + chunk] for i in range(0, len(regular), chunk)]):
            for rel, (device, inode, ctime) in linked.items():
                taken.files[rel] = (device, inode)
                taken.ctimes[rel] = ctime


LINK_THREADS = 4


def _link_checked(previous: PreviousLayer, source: Path, tree: Path, rels: list[str]
                  ) -> dict[str, tuple[int, int, int]]:
    files = previous.index["files"]
    linked = {}
    source_dir, tree_dir = str(source), str(tree)
    for rel in rels:
        origin, destination = f"{source_dir}/{rel}", f"{tree_dir}/{rel}"
        try:
            st = os.lstat(origin)
        except OSError:
            raise NotIncremental(f"{rel} is gone from the previous layer") from None
        recorded = files[rel]
        if [st.st_size, st.st_mtime_ns, st.st_mode] != recorded[:3] or (
                st.st_ctime_ns != (recorded[4] if len(recorded) > 4 else None)
                and DIGESTS.sha256(origin)[0] != recorded[3]):
            raise NotIncremental(f"{rel} of the previous layer changed")
        try:
            os.link(origin, destination)  # the same inode (the link moves its ctime)
        except OSError:
            try:
                link_or_copy(origin, destination)  # a copy where links are impossible
            except OSError as error:  # discarded meanwhile by a build that found it damaged
                raise NotIncremental(f"{rel} could not be taken ({error})") from None
        st = os.lstat(destination)
        linked[rel] = (st.st_dev, st.st_ino, st.st_ctime_ns)
    return linked


@dataclass(frozen=True)
class Difference:
    """A tree filled from the previous layer plus what was installed."""

    taken: Taken
    sources: list[str]  # the new distributions' .py files, relative to site-packages
    native: bool  # a new distribution installs a shared library or a script (ELF?)


def drop(tree: Path, distributions: list[Distribution], taken: Taken) -> None:
    """Take back what ``take`` linked of ``distributions`` (not in the install after all)."""
    if not distributions:
        return
    for dist in distributions:
        taken.dist_infos.discard(dist.dist_info)
        for rel in dist.files:
            os.unlink(tree / rel)
            taken.files.pop(rel, None)
    for directory, _dirnames, _files in os.walk(tree, topdown=False):  # children first
        if directory != str(tree):
            with contextlib.suppress(OSError):
                os.rmdir(directory)  # left empty by what was taken back


def known_digests(previous: PreviousLayer, tree: Path, taken: Taken
                  ) -> dict[str, tuple[StatKey, str]]:
    """files.json digests of the linked files still as the previous layer recorded
    them (size, mtime, mode) and not written since they were linked (their ctime
    then), for ``cache.build_index``: not hashed again. A file a package's build
    edited in place through its link during the install, size kept and mtime set
    back, is hashed: its digest is not the recorded one."""
    known = {}
    for rel, inode in taken.files.items():
        recorded = previous.index["files"].get(rel)
        try:
            st = os.lstat(tree / rel)
        except OSError:
            continue
        if recorded is not None and (st.st_dev, st.st_ino) == inode and \
                st.st_ctime_ns == taken.ctimes.get(rel) and \
                [st.st_size, st.st_mtime_ns, st.st_mode] == recorded[:3]:
            known[rel] = (stat_key(st), recorded[3])
    return known


@dataclass(frozen=True)
class StaticPlan:
    """An export's hashed pins, planned without uv (``static_plan``)."""

    pins: dict[str, str]  # canonical name -> version: every pin of the export
    certain: frozenset[str]  # the pins any clean install installs on this runtime

    def mismatch(self, installed: dict[str, str], baseline: dict[str, str]) -> str | None:
        """Why ``installed`` (canonical name -> version) is not what a clean install of
        ``baseline`` then the export gives; None when it is."""
        for name, version in baseline.items():
            if installed.get(name) != version:
                return f"the baseline's {name} is not {version}"
        for name, version in installed.items():
            if name not in baseline and not (name in self.pins
                                              and same_version(version, self.pins[name])):
                return f"{name} {version} is not a pin of the lock"
        missing = sorted(self.certain - set(installed))
        return f"{', '.join(missing)} not installed" if missing else None


# The marker variables whose value a static plan knows for certain: the runtime's own
# version, which uv and packaging both compare as PEP 440 versions.
_VERSION_MARKERS = frozenset({"python_version", "python_full_version"})
_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)\s*(?:;\s*(.+?))?\s*")


def static_plan(text: str, baseline: tuple[str, ...], python_version: str
                ) -> StaticPlan | None:
    """What installing the export ``text`` after ``baseline`` gives, known without
    asking uv, or None when only uv's dry run can say: a line that is not a hashed
    ``name==version`` pin (with a marker at most), a local package, an unhashed URL,
    a package named twice, or a pin of a baseline package (uv would replace it).

    A pin is *certain* when it has no marker, or one of ``python_version`` and
    ``python_full_version`` alone (compared with ``<``, ``<=``, ``>``, ``>=``, ``==``,
    ``!=``, ``~=``) that holds for ``python_version``: uv installs it whatever else
    it reads. Other markers are left to uv at install time."""
    hashed, local = split_local_lines(split_index_lines(text)[1])
    hashed, direct = split_unhashed_urls(hashed)
    if local or direct:
        return None
    held = {str(canonicalize_name(line.partition("==")[0])) for line in baseline}
    release = Version(python_version).release
    environment = {"python_version": ".".join(str(part) for part in release[:2]),
                   "python_full_version": python_version}
    pins: dict[str, str] = {}
    certain = set()
    for _lines, joined in logical_requirements(hashed):
        if not joined.strip() or joined.lstrip().startswith("#"):
            continue
        requirement, _, hashes = joined.partition(" --hash")
        match = _PIN.fullmatch(requirement.strip())
        if match is None or not hashes:
            return None
        name = str(canonicalize_name(match.group(1)))
        try:
            Version(match.group(2))
        except InvalidVersion:
            return None
        if name in pins or name in held:
            return None
        pins[name] = match.group(2)
        if _marker_holds(match.group(3), environment):
            certain.add(name)
    return StaticPlan(pins, frozenset(certain))


def _marker_holds(marker: str | None, environment: dict[str, str]) -> bool:
    """Whether ``marker`` (None: none) certainly holds: see ``static_plan``."""
    if marker is None:
        return True
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", re.sub(r"'[^']*'|\"[^\"]*\"", "", marker)))
    if not words <= _VERSION_MARKERS | {"and", "or"} or "===" in marker:
        return False
    try:
        return Marker(marker).evaluate(environment)
    except (InvalidMarker, ValueError, TypeError):
        return False


def same_version(one: str, other: str) -> bool:
    """Whether two version strings name one PEP 440 version."""
    try:
        return Version(one) == Version(other)
    except InvalidVersion:
        return one == other


def install_onto_previous(job: InstallJob, installer: Installer, plan: InstallPlan,
                          tree: Path, python_name: str, baseline: tuple[str, ...],
                          previous: PreviousLayer) -> Difference:
    """Fill ``tree`` (the new layer's, empty) from ``previous`` plus what uv installs.
    Raises NotIncremental; the caller installs clean."""
    taken = Taken({}, set())
    dists = previous.distributions
    pins = []
    for line in baseline:
        name, _, version = line.partition("==")
        dist = dists.get(str(canonicalize_name(name)))
        if dist is None or dist.version != version:
            raise NotIncremental(f"the previous layer has no {line}")
        pins.append(dist)
    expected = {str(canonicalize_name(line.partition("==")[0])): line.partition("==")[2]
                for line in baseline}
    # uv plans against the baseline's dist-infos alone (all it reads of a prefix to
    # know what is installed), while every other distribution is linked meanwhile.
    static = None
    if plan.name == "pip":
        resolved = None
        if plan.resolved:  # version ranges, resolved when the layer was keyed: constraints
            resolved = job.scratch / "dry-run-pins.txt"
            resolved.write_text(constraints_text(plan.resolved))
        install = partial(installer.install, job, plan)
    else:
        # A lock's pins, exported once: planned (by uv, or from the pins themselves when
        # they say it all), then the same file installed.
        exported = cast(LockExporter, installer).export(job, plan)
        install = partial(uv_installer.install_exported, job, exported, plan.name)
        if job.constraints is None:
            static = static_plan(exported.read_text(), baseline, job.python_version)
    baseline_versions = dict(expected)
    if static is not None:
        # No dry run: only the pins any clean install installs are taken (see the module
        # docstring); uv installs the rest, evaluating their markers as a clean install.
        take(previous, tree, pins + [
            dist for name, dist in dists.items() if dist not in pins
            and name in static.certain and same_version(dist.version, static.pins[name])],
            taken)
        count = f"{len(static.certain) + len(pins) - len(taken.dist_infos)}" + (
            f" and those of the other {len(static.pins) - len(static.certain)} pins whose "
            "markers hold" if len(static.pins) > len(static.certain) else "")
    else:
        planning = job.scratch / "dry-run-prefix"
        take_dist_infos(previous, planning, pins)
        planning_job = dataclasses.replace(job, prefix=planning)
        planner = partial(uv_installer.dry_run_requirements, planning_job, resolved) \
            if plan.name == "pip" else \
            partial(uv_installer.dry_run_exported, planning_job, exported, plan.name)
        others = [dist for dist in dists.values() if dist not in pins]
        with ThreadPoolExecutor(max_workers=1) as thread:
            dry_run = thread.submit(contextvars.copy_context().run, planner)
            try:
                take(previous, tree, pins + others, taken)
            finally:
                planned = dry_run.result()
        if planned is None:
            raise NotIncremental("uv's dry run failed or would remove or replace a package")
        expected.update(planned)
        if plan.name == "pip" and resolved is None:
            # The plan is the install's pins (as a plain install plans them itself, see
            # uv.install_requirements): no second dry run, and no choice left to uv.
            install = partial(installer.install, job, dataclasses.replace(
                plan, resolved="".join(f"{name}=={version}\n"
                                       for name, version in sorted(expected.items()))))
        drop(tree, [dist for name, dist in dists.items()
                    if dist not in pins and expected.get(name) != dist.version], taken)
        count = f"{len(expected) - len(taken.dist_infos)}"
    job.reporter.detail(reuse_line(previous, len(taken.dist_infos), len(dists), count))
    site_packages = tree / "lib" / python_name / "site-packages"
    install()
    installed = {}
    for dist_info in sorted(os.listdir(site_packages)):
        if dist_info.endswith(".dist-info"):
            name, version = _name_version(site_packages / dist_info / "METADATA")
            installed[name] = (version, dist_info)
    versions = {name: version for name, (version, _) in installed.items()}
    if static is not None:
        wrong = static.mismatch(versions, baseline_versions)
        if wrong is not None:
            raise NotIncremental(f"uv installed another set than the lock pins: {wrong}")
    elif versions != expected:
        raise NotIncremental("uv installed another set than its dry run planned")
    added = [dist_info for _, dist_info in installed.values()
             if dist_info not in taken.dist_infos]
    base = f"lib/{python_name}/site-packages"
    claims = records.claims_in(tree, [f"{base}/{d}/RECORD" for d in added])
    for rel in claims:
        if rel in taken.files:
            raise NotIncremental(f"a new package installs {rel}, a reused one's file")
    sources = sorted(os.path.relpath(rel, base) for rel in claims
                     if rel.endswith(".py") and rel.startswith(base + "/"))
    native = any(".so" in os.path.basename(rel) or rel.startswith("bin/") for rel in claims)
    return Difference(taken, sources, native)
