"""Dependency layer: the app's packages, installed for the slug's runtime.

The layer is what an install adds to ``.heroku/python`` (site-packages and
console scripts). It is cached under a key made of exactly what determines
it: runtime version and platform, installer and its version, the index
settings, and the content of every requirements file the install reads. A
warm build with the same key hard-links it in; any change builds a fresh
layer, holding exactly what a clean install gives (packages removed from the
requirements are gone): where it can, from the app's previous layer's files
plus the difference (incremental.py). Installer download caches are kept
across keys.

A fresh layer is built one of two ways:
- in its own tree (the usual way): installed with an interpreter of the runtime
  (the one its layer is copied from, or the cached layer's) into an empty tree
  that becomes the layer. It needs nothing of the build directory, so a cold
  build runs it while the runtime layer is being prepared (dependency_stage.py).
- into the build's prefix: when a pre_compile hook or an earlier buildpack runs
  first, the install goes into the build's runtime prefix, so that it sees what
  they put there (and any requirements file they changed), and only the paths
  it added become the layer.

The layer comes in two steps, each with its own type: ``find_or_install``
gives the cached layer (a ``DependencyInstall``), ``place_dependency_layer``
puts it into the build and lists its packages (a ``DependencyLayer``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.utils import canonicalize_name

from . import errors, records, relocate
from .cache import (
    FILE_INDEX,
    PACKED_PARTS,
    TREE,
    Cache,
    Layer,
    Restored,
    StatKey,
    file_sha256,
    link_or_copy,
    read_index,
    write_json_atomic,
)
from .cache_registry import pull_layer
from .installers import Installer, InstallJob, InstallPlan, built_wheels, installer_for, ranges
from .installers.baseline import baseline_requirements
from .installers.requirements import has_editables, requirement_lines, requirements_files
from .log import Reporter
from .pack import record_donor
from .proc import clean_env, exported_config, wait_for
from .slug.metadata import Package, package_from_metadata
from .stack_compat import STACK_RECORD, keep_stack_record
from .step_jail import CacheSeal
from .toml_compat import tomllib
from .tree import walk_sorted

if TYPE_CHECKING:
    from packaging.requirements import Requirement

    from . import incremental
else:
    from .lazy_import import lazy_module

    # Only a build that makes a new layer uses it (with the installers it loads).
    incremental = lazy_module("slugbuild.incremental")

# Config vars with these prefixes steer the installers, so they are part of the
# key (hashed: index URLs may hold credentials).
INSTALLER_CONFIG_PREFIXES = ("PIP_", "UV_", "PIPENV_PYPI_MIRROR", "POETRY_REPOSITORIES_")
DEPENDENCY_LAYER_FORMAT = 3  # 3: RECORD-complete, files.json with digests
# The cache's store of canonical pycs (relocate.compile_bytecode), shared by every
# dependency layer compiled by the same interpreter.
PYC_STORE = "pyc"


@dataclass(frozen=True)
class DependencyInstall:
    """The dependency layer found in the cache or just installed, not yet in the build."""

    key: str
    files: tuple[str, ...]  # files the key covers, relative to the app
    lock_checksum: str
    installer: str
    installer_version: str
    layer: Layer  # the cached layer (or this build's unpublished one)
    from_cache: bool  # the layer was in the cache before this build
    # The tree a fresh layer was installed in, when in its own tree (None: installed
    # into the build's prefix, where its files already are).
    own_tree: Path | None = None
    baseline: tuple[str, ...] = ()  # installed before the app's requirements (Heroku's)
    plan: InstallPlan | None = None  # what installed it (slug.json's installer facts)


@dataclass(frozen=True)
class DependencyLayer:
    """The outcome of the dependency stage: the layer in the build, and its packages."""

    key: str
    packages: tuple[Package, ...]
    files: tuple[str, ...]  # files the key covers, relative to the app
    lock_checksum: str
    installer: str
    installer_version: str
    layer: Layer
    baseline: tuple[str, ...] = ()
    plan: InstallPlan | None = None  # what installed it (slug.json's installer facts)


def layer_key(
    app_dir: Path, files: list[str], runtime: dict[str, Any], plan: InstallPlan,
    config_vars: dict[str, str], constraints: str | None = None, baseline: tuple[str, ...] = (),
    prefix_state: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """The dependency layer key and the (secret-free) inputs behind it.

    ``runtime`` is the runtime layer's manifest (or what it will be: name,
    key, inputs). Runtime (version, platform and the prefix it came from), package manager
    and the versions of every tool it runs, installer config vars, the content
    of every file the install reads, and the constraints of --constraints-from.
    """
    exported = exported_config(config_vars)
    # Config vars a key file names as ``${VAR}`` (a token in an index URL, say)
    # decide where packages come from as much as PIP_INDEX_URL does.
    referenced = set()
    for rel in files:
        try:
            referenced.update(re.findall(r"\$\{([A-Za-z0-9_]+)\}",
                                         (app_dir / rel).read_text(errors="replace")))
        except OSError:
            pass
    index_settings = json.dumps(
        {k: v for k, v in sorted(exported.items())
         if k.startswith(INSTALLER_CONFIG_PREFIXES) or k in referenced}
    )
    inputs = {
        "runtime": runtime["name"],
        "runtime_key": runtime["key"],
        "installer": f"{plan.name} {plan.version}",
        "installer_config_sha256": hashlib.sha256(index_settings.encode()).hexdigest(),
        "files": {rel: file_sha256(app_dir / rel) for rel in files},
        "layer_format": DEPENDENCY_LAYER_FORMAT,
    }
    if (app_dir / "Aptfile").is_file():
        # Packages built from source may compile against the Aptfile's headers.
        inputs["aptfile_sha256"] = file_sha256(app_dir / "Aptfile")
    if constraints is not None:
        inputs["constraints_sha256"] = hashlib.sha256(constraints.encode()).hexdigest()
    if baseline:  # absent when empty, so layers without one keep their keys
        inputs["baseline"] = list(baseline)
    if prefix_state is not None:
        inputs["prefix_before_install_sha256"] = prefix_state
    if plan.resolved:  # version ranges: keyed by what they resolved to (installers/ranges.py)
        inputs.update(ranges.key_inputs(plan.resolved))
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return key, inputs


def rebuild_reasons(previous: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Why a layer keyed by ``current`` cannot reuse the one keyed by ``previous``."""
    reasons = []
    old_files, new_files = previous.get("files", {}), current.get("files", {})
    for rel in sorted(set(old_files) | set(new_files)):
        if rel not in old_files:
            reasons.append(f"{rel} is new")
        elif rel not in new_files:
            reasons.append(f"{rel} is no longer read")
        elif old_files[rel] != new_files[rel]:
            reasons.append(f"The contents of {rel} changed")
    if previous.get("runtime") != current.get("runtime"):
        reasons.append(f"The Python runtime changed ({previous.get('runtime')} -> "
                       f"{current.get('runtime')})")
    elif previous.get("runtime_key") != current.get("runtime_key"):
        reasons.append("The Python runtime was rebuilt (its interpreter or platform changed)")
    if previous.get("installer") != current.get("installer"):
        reasons.append(f"The package manager changed ({previous.get('installer')} -> "
                       f"{current.get('installer')})")
    if previous.get("installer_config_sha256") != current.get("installer_config_sha256"):
        reasons.append("The installer config vars (PIP_*, UV_*) changed")
    if previous.get("constraints_sha256") != current.get("constraints_sha256"):
        reasons.append("The constraints from --constraints-from changed")
    if previous.get("baseline", []) != current.get("baseline", []):
        reasons.append(f"The packages installed before the requirements changed "
                       f"({', '.join(previous.get('baseline', [])) or 'none'} -> "
                       f"{', '.join(current.get('baseline', [])) or 'none'})")
    if previous.get("prefix_before_install_sha256") != \
            current.get("prefix_before_install_sha256"):
        reasons.append("What a pre_compile hook or an earlier buildpack put in "
                       ".heroku/python changed")
    if previous.get("resolved_sha256") != current.get("resolved_sha256") and \
            previous.get("files") == current.get("files"):
        changed = ranges.changed_pins(previous.get("resolved") or {},
                                      current.get("resolved") or {})
        reasons.append("The versions the requirements' ranges resolve to changed"
                       + (f" ({', '.join(changed[:5])}{' …' if len(changed) > 5 else ''})"
                          if changed else ""))
    if previous.get("layer_format") != current.get("layer_format"):
        reasons.append("slugbuild changed how dependency layers are made")
    return reasons


def _history_path(cache: Cache, source_dir: Path) -> Path:
    """Where the inputs of the last layer built for this app directory are kept."""
    digest = hashlib.sha256(str(Path(source_dir).absolute()).encode()).hexdigest()[:24]
    return cache.root / "history" / f"{digest}.json"


def _explain_rebuild(cache: Cache, source_dir: Path | None, inputs: dict[str, Any],
                     reporter: Reporter) -> None:
    if source_dir is None:
        return
    try:
        previous = json.loads(_history_path(cache, source_dir).read_text())
    except (OSError, ValueError, RecursionError):  # a damaged or hostile hint: none
        return
    try:
        reasons = rebuild_reasons(previous, inputs)
    except (AttributeError, TypeError, ValueError):  # a damaged history file: no hint
        return
    if reasons:
        reporter.step("Discarding cache since:")
        for reason in reasons:
            reporter.detail(f"- {reason}")


def _remember(cache: Cache, source_dir: Path | None, inputs: dict[str, Any]) -> None:
    """Keep the inputs for the next build's "Discarding cache since" hint. Best
    effort: bookkeeping never fails a build (a full disk, a read-only history/)."""
    if source_dir is None:
        return
    path = _history_path(cache, source_dir)
    try:
        path.parent.mkdir(exist_ok=True)
        write_json_atomic(path, inputs)
    except (OSError, TypeError, ValueError):
        pass


def constraints_from_slug_json(path: Path) -> str:
    """``name==version`` lines for every package an earlier slug.json records.

    slug.json is untrusted input (it may come with a slug from anywhere) and the
    result is a requirements file, where a line can also be an option
    (``--extra-index-url``, ``-r /etc/shadow``). So every name must be a PEP 508
    project name and every version a PEP 440 version, and nothing else is written.
    """
    path = Path(path)
    try:
        if path.is_char_device() or path.is_block_device():  # /dev/zero never ends
            raise errors.CONSTRAINTS_UNUSABLE.error(variant="device", path=path)
        if path.stat().st_size > 16 * 1024 * 1024:
            raise errors.CONSTRAINTS_UNUSABLE.error(variant="too-large", path=path)
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise errors.CONSTRAINTS_UNUSABLE.error(variant="missing", path=path) from None
    except (OSError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise errors.CONSTRAINTS_UNUSABLE.error(
            variant="not-json", path=path, reason=reason) from None
    packages = data.get("packages") if isinstance(data, dict) else None
    if not isinstance(packages, list) or not all(
        isinstance(p, dict) and isinstance(p.get("name"), str)
        and isinstance(p.get("version"), str) for p in packages
    ):
        raise errors.CONSTRAINTS_UNUSABLE.error(variant="no-packages", path=path)
    lines = sorted({_constraint_line(path, p["name"], p["version"]) for p in packages})
    return "".join(line + "\n" for line in lines)


_PROJECT_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)


def _constraint_line(path: Path, name: str, version: str) -> str:
    """``name==version``, or CONSTRAINTS_UNUSABLE when either is not what PEPs allow."""
    from packaging.version import InvalidVersion, Version

    if len(name) > 200 or not _PROJECT_NAME.match(name):
        raise errors.CONSTRAINTS_UNUSABLE.error(variant="bad-name", path=path,
                                                name=name[:100])
    try:
        parsed = Version(version) if len(version) <= 100 else None
    except InvalidVersion:
        parsed = None
    if parsed is None or version.strip() != version or "\n" in version:
        raise errors.CONSTRAINTS_UNUSABLE.error(variant="bad-version", path=path,
                                                version=version[:100], name=name)
    return f"{name}=={version}"


@dataclass(frozen=True)
class PlannedDependencyLayer:
    """The dependency layer an app and runtime get, known before anything is installed:
    what the build keys its layer with, and what ``slugbuild plan`` looks up."""

    plan: InstallPlan
    files: tuple[str, ...]  # files the key covers, relative to the app
    baseline: tuple[str, ...]  # Heroku's baseline installed before the app's packages
    key: str
    inputs: dict[str, Any]

    @property
    def name(self) -> str:
        """The layer's name in the cache."""
        return self.key[:24]


def plan_dependency_layer(
    app_dir: Path, lock_file: str, runtime: dict[str, Any], installer: Installer,
    config_vars: dict[str, str], constraints: str | None = None,
    prefix_state: str | None = None,
    resolve: Callable[[InstallPlan, tuple[str, ...]], InstallPlan] | None = None,
) -> PlannedDependencyLayer:
    """The installer's plan and the layer key for ``app_dir`` on ``runtime`` (its
    manifest, ``runtime_manifest``): reads the app's files, and runs no tool except
    ``resolve`` (given the plan and the baseline), which resolves a plan's version
    ranges (``installers.ranges.resolve_plan``). The one place the key is made, for
    the build and for ``slugbuild plan`` alike."""
    plan = installer.plan(app_dir, lock_file, config_vars)
    files = list(plan.key_files)
    baseline = baseline_requirements(installer.name, runtime["inputs"]["version"],
                                     config_vars, plan.pip_version)
    if resolve is not None and plan.resolves:
        plan = resolve(plan, baseline)
    key, inputs = layer_key(app_dir, files, runtime, plan, config_vars, constraints,
                            baseline, prefix_state)
    return PlannedDependencyLayer(plan, tuple(files), baseline, key, inputs)


def find_or_install(
    *,
    app_dir: Path,
    lock_file: str,
    python: Path,
    python_name: str,
    runtime: dict[str, Any],
    installer: Installer,
    config_vars: dict[str, str],
    cache: Cache,
    reporter: Reporter,
    source_dir: Path | None = None,
    constraints: str | None = None,
    prefetch: Prefetch | None = None,
    into_prefix: Path | None = None,
    prefix_snapshot: dict[str, tuple[int, ...]] | None = None,
    copy: bool = False,
    exports: Mapping[str, str] | None = None,
    before_install: Callable[[], object] | None = None,
    seal: CacheSeal | None = None,
) -> DependencyInstall:
    """The cached dependency layer for this app and runtime, installed if missing.
    ``seal``: the build's seal of the cache, for the installer's runs (step_jail.py).

    ``python`` is an interpreter of the runtime whose manifest is ``runtime``.
    A fresh layer is installed into its own tree, unless ``into_prefix`` (the
    build's runtime prefix) is given: then it is installed there and the paths
    the install added become the layer. ``prefix_snapshot`` (with
    ``into_prefix``): the prefix's files just after the runtime was restored;
    whatever a hook or an earlier buildpack changed since is part of the key.
    ``copy``: the build does not hold the cache's link lock, so nothing it
    installs into its own prefix may share a file with the cache. ``exports``:
    what earlier buildpacks exported, in the installer's environment.
    ``before_install``: called before anything runs ``python`` (it writes a
    part-only runtime layer's tree).

    ``source_dir`` (the user's app directory) lets the log say why a cached
    layer was not reused; ``constraints`` (from an earlier slug.json) pins
    every package to the version that build installed. A ``prefetch`` still
    downloading is waited for only if there is something to install.
    """
    state = (prefix_state(into_prefix, prefix_snapshot)
             if into_prefix is not None and prefix_snapshot is not None else None)

    def resolve(plan: InstallPlan, baseline: tuple[str, ...]) -> InstallPlan:
        if prefetch is not None:
            prefetch.wait()  # it resolves the same ranges: its downloads are then cached
        return ranges.resolve_plan(
            plan, app_dir=app_dir, lock_file=lock_file, python_version=runtime["inputs"][
                "version"], config_vars=config_vars, cache=cache, reporter=reporter,
            constraints=constraints, baseline=baseline, exports=exports, seal=seal)

    planned = plan_dependency_layer(app_dir, lock_file, runtime, installer, config_vars,
                                    constraints, state, resolve)
    plan, files, baseline = planned.plan, list(planned.files), planned.baseline
    key, inputs, name = planned.key, planned.inputs, planned.name
    python_version = runtime["inputs"]["version"]
    env_sha256 = built_wheels.build_env_sha256(config_vars, exports or {}, app_dir)
    layer, name, key, inputs = _reusable_layer(cache, name, key, inputs, env_sha256, reporter)

    def outcome(layer: Layer, from_cache: bool, own_tree: Path | None = None
                ) -> DependencyInstall:  # with the key of the layer found or installed
        return DependencyInstall(key, tuple(files), "SHA256:" + file_sha256(app_dir / lock_file),
                                 installer.name, plan.version, layer, from_cache, own_tree,
                                 baseline=baseline, plan=plan)

    if layer is None:
        with contextlib.ExitStack() as held:
            layer, name, key, inputs = _locked_for_install(held, cache, name, key, inputs,
                                                           env_sha256, reporter)
            if layer is None:
                _explain_rebuild(cache, source_dir, planned.inputs, reporter)
                if prefetch is not None:
                    prefetch.wait()
                if before_install is not None:
                    before_install()
                reporter.step(installing_step(plan, lock_file))
                if plan.name == "pip" and plan.installer_reason:
                    reporter.detail(f"Installing with {plan.tool}: {plan.installer_reason}")
                scratch = cache.scratch_dir("install")
                reporter.show_path_as(scratch / "app", "/app")  # the app's copy, if made
                builds_local = builds_local_packages(app_dir, lock_file, installer, files)
                try:
                    job = InstallJob(
                        python=python, python_version=python_version,
                        app_dir=(copy_for_install(app_dir, scratch / "app")
                                 if builds_local else app_dir),
                        lock_file=lock_file, config_vars=config_vars, cache=cache,
                        reporter=reporter, scratch=scratch,
                        constraints=_write_constraints(scratch, constraints),
                        source_dir=source_dir,
                        link_mode="copy" if into_prefix is not None and copy else "hardlink",
                        exports=dict(exports or {}),
                        runtime_baseline=prefix_snapshot, build_dir=app_dir,
                        seal=seal,
                    )
                    previous = _previous_layer(cache, source_dir, planned.inputs, plan,
                                               python_name, into_prefix is None, reporter,
                                               builds_local, app_dir, lock_file, env_sha256)
                    layer, own_tree = _install_fresh(job, installer, plan, python_name, key,
                                                     name, inputs, into_prefix, baseline, copy,
                                                     previous, env_sha256)
                finally:
                    if seal is not None:  # what its guarded runs wrote: never adopted
                        seal.discard_install_caches(scratch)
                    built_wheels.adopt_job_caches(cache.root, scratch, env_sha256)
                    shutil.rmtree(scratch, ignore_errors=True)
                _remember(cache, source_dir, planned.inputs)
                return outcome(layer, False, own_tree)
    _remember(cache, source_dir, planned.inputs)
    return outcome(layer, True)


def _locked_for_install(held: contextlib.ExitStack[Any], cache: Cache, name: str, key: str,
                        inputs: dict[str, Any], env_sha256: str, reporter: Reporter
                        ) -> tuple[Layer | None, str, str, dict[str, Any]]:
    """Take (into ``held``) the lock of the layer this build would install, and return
    the layer found under it, or None to install, with its name, key and inputs.

    A layer another build published under the same name meanwhile, built from source
    in another environment, is neither reused nor replaced: publishing over it would
    swap the files of a layer that build is still using (its views link into it, its
    pack reads its part by path). The install then goes under the environment's own
    name and lock, as ``_reusable_layer`` does."""
    for _ in range(2):  # the environment's own layer records this environment
        held.enter_context(cache.lock("layers", name))
        layer = _cached_layer(cache, name, key, reporter)
        if layer is None or not built_wheels.built_elsewhere(layer.manifest, env_sha256):
            return layer, name, key, inputs
        held.close()  # released: the environment's layer has its own lock
        reporter.detail(f"Not reusing dependency layer {name[:12]}: it was built from "
                        f"source with other config vars or buildpack exports")
        key, inputs = built_wheels.env_keyed(inputs, env_sha256)
        name = key[:24]
    raise AssertionError("an environment-keyed layer recorded another environment")


def _reusable_layer(cache: Cache, name: str, key: str, inputs: dict[str, Any],
                    env_sha256: str, reporter: Reporter
                    ) -> tuple[Layer | None, str, str, dict[str, Any]]:
    """The cached (else pulled) layer a build in the environment ``env_sha256`` may
    reuse, or None, with the name, key and inputs it has or its install gets: the
    layer key's own, or the layer key plus the environment's hash when the key's own
    layer was built from source in another environment (installers/built_wheels.py)."""
    layer = _cached_or_pulled(cache, name, key, reporter)
    if layer is None or not built_wheels.built_elsewhere(layer.manifest, env_sha256):
        return layer, name, key, inputs
    reporter.detail(f"Not reusing dependency layer {name[:12]}: it was built from source "
                    f"with other config vars or buildpack exports")
    key, inputs = built_wheels.env_keyed(inputs, env_sha256)
    name = key[:24]
    return _cached_or_pulled(cache, name, key, reporter), name, key, inputs


def _cached_or_pulled(cache: Cache, name: str, key: str, reporter: Reporter) -> Layer | None:
    layer = _cached_layer(cache, name, key, reporter)
    if layer is None:
        with cache.lock("layers", name):
            layer = _cached_layer(cache, name, key, reporter) or pull_layer(
                cache, "layers", name, key, f"dependency layer {name[:12]}",
                records.layer_problems, reporter)
    return layer


def _previous_layer(cache: Cache, source_dir: Path | None, inputs: dict[str, Any],
                    plan: InstallPlan, python_name: str, own_tree: bool, reporter: Reporter,
                    builds_local: bool, app_dir: Path, lock_file: str, env_sha256: str
                    ) -> incremental.PreviousLayer | None:
    """The app's previous layer to build this one from (incremental.py), if it can
    be; why not is logged, unless this app has none. One built from source in another
    build environment never is (installers/built_wheels.py)."""

    def find_previous(inputs: dict[str, Any], not_own: bool = False
                      ) -> incremental.PreviousLayer:
        found = incremental.find_previous(cache, inputs, python_name, nearest=not_own)
        if built_wheels.built_elsewhere(found.layer.manifest, env_sha256):
            raise incremental.NotIncremental(
                "the previous layer was built from source in another build environment")
        return found

    previous = (incremental.previous_inputs(_history_path(cache, source_dir))
                if source_dir is not None else None)
    reason = incremental.why_not_incremental(previous, inputs, plan, own_tree, builds_local)
    if reason is None and previous is not None:
        try:
            return find_previous(previous)
        except incremental.NotIncremental as why:
            reason = str(why)
    if incremental.why_not_incremental(inputs, inputs, plan, own_tree, builds_local) is None:
        # No usable layer of this app directory: the nearest one of the same runtime
        # and installer (another directory of the same app, say).
        wanted = (_requirement_names(app_dir, lock_file) if plan.name == "pip"
                  else _locked_names(app_dir, lock_file))
        nearest = incremental.nearest_inputs(cache, inputs, python_name, wanted, previous)
        if nearest is not None:
            try:
                return find_previous(nearest, not_own=True)
            except incremental.NotIncremental as why:
                previous, reason = nearest, str(why)
    if previous is not None and reason is not None:
        reporter.detail(f"Installing every package again: {reason}")
    return None


def _requirement_names(app_dir: Path, lock_file: str) -> set[str]:
    """Canonical names of the projects the requirements file (and its includes) name."""
    parsed = (_parse_requirement(line) for line in requirement_lines(app_dir, lock_file))
    return {str(canonicalize_name(found[0].name)) for found in parsed if found is not None}


def _locked_names(app_dir: Path, lock_file: str) -> set[str]:
    """Canonical names of the projects a lock file pins (Pipfile.lock's default
    section, poetry.lock's and uv.lock's packages); empty when it cannot be read
    (the install reports that)."""
    try:
        text = (app_dir / lock_file).read_text(encoding="utf-8-sig")
        if lock_file == "Pipfile.lock":
            names = list(json.loads(text).get("default") or {})
        else:
            names = [package.get("name") for package in tomllib.loads(text).get("package", [])]
        return {str(canonicalize_name(name)) for name in names if isinstance(name, str)}
    except (OSError, ValueError, AttributeError, TypeError, RecursionError):
        return set()


def installer_facts(layer: DependencyLayer) -> dict[str, Any]:
    """slug.json's installer fields, as facts: the tool that installed the packages
    (``installer``: pip or uv), its version, why it was chosen, and every tool the
    install runs with its version (``tools``, e.g. pipenv exporting for uv)."""
    plan = layer.plan
    if plan is None or not plan.installer_version:  # an installer that tells no facts
        return {"installer": layer.installer, "installer_version": layer.installer_version}
    tools = [part.strip().split(",")[0] for part in plan.version.split(" + ")]
    return {"installer": plan.tool, "installer_version": plan.installer_version,
            "installer_reason": plan.installer_reason,
            "tools": [tool if "==" in tool else f"{plan.tool}=={tool}" for tool in tools]}


def installing_step(plan: InstallPlan, lock_file: str) -> str:
    """The step's header: the package manager whose files are installed (as Heroku's
    log names it), and the tool that really installs them, with its version."""
    if not plan.installer_version:  # an installer that tells no facts
        return f"Installing requirements with {plan.name} ({plan.version})"
    tool = f"{plan.tool} {plan.installer_version}"
    if plan.name == "pip":
        return (f"Installing requirements with {tool}" if plan.tool == "pip" else
                f"Installing requirements with pip-compatible {tool} (version ranges "
                f"resolved)" if plan.resolved else
                f"Installing requirements with pip-compatible {tool} (every requirement "
                f"pinned)")
    if plan.name == plan.tool:
        return f"Installing requirements with {tool} ({lock_file})"
    return f"Installing requirements with {plan.name}'s {lock_file} via {tool}"


def builds_local_packages(app_dir: Path, lock_file: str, installer: Installer,
                          files: list[str]) -> bool:
    """Whether the install builds a package from the app's own files (so it must run
    on a copy): a key file beyond the package manager's own files, or an editable
    requirement (whose ``-e`` is taken out of the install's copy of the file)."""
    manifests = {lock_file, "Pipfile", "pyproject.toml"}
    if installer.name == "pip":
        manifests.update(requirements_files(app_dir, lock_file))
        if has_editables(app_dir, lock_file):
            return True
    return any(rel not in manifests for rel in files)


def copy_for_install(app_dir: Path, target: Path) -> Path:
    """A copy of the staged app (without what the build added at its root) for the
    installer to read and write in.

    Building a local package (``./vendor/pkg``, ``-e .``, a lock's path
    dependency) writes ``build/`` and ``*.egg-info`` into its source tree; in the
    build directory they would reach the slug of a cold build but not of a warm
    one (which restores the layer without building). The copy is thrown away
    with the install's scratch directory.
    """
    def build_output(directory: str, names: list[str]) -> set[str]:
        if Path(directory) == app_dir:
            return {".heroku", ".profile.d"}.intersection(names)
        return {"__pycache__"}.intersection(names)

    shutil.copytree(app_dir, target, symlinks=True, ignore=build_output,
                    copy_function=shutil.copy)
    return target
def _cached_layer(cache: Cache, name: str, key: str, reporter: Reporter) -> Layer | None:
    """The cached layer if intact: its files as files.json records them (a file of
    uv's cache deleted or edited through a hard link shows here), and everything its
    distributions' RECORDs list present with the recorded bytes. A damaged one is
    discarded, with a warning, and installed again."""
    layer, problems = cache.lookup_verified("layers", name, key, records.layer_problems,
                                            lazy=True)  # placed by the build's show_layer
    if problems:
        from .runtime import damaged_layer_warning

        reporter.warn(damaged_layer_warning(f"dependency layer {name[:12]}", problems))
    return layer


def prefix_state(prefix: Path, baseline: Mapping[str, tuple[int, ...]]) -> str | None:
    """SHA-256 of what differs in ``prefix`` from ``baseline`` (the restored runtime):
    files added or changed (with their content), symlinks added or made anew (one
    retargeted), removed paths. None when nothing does, so a hook that leaves
    .heroku/python alone shares the layer of a build without one."""
    found: dict[str, str] = {}
    seen = set()
    for directory, dirnames, filenames in walk_sorted(Path(prefix)):
        dirpath = str(directory)
        for name in filenames + [d for d in dirnames
                                         if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, prefix)
            seen.add(rel)
            st = os.lstat(path)
            if baseline.get(rel) == _stamp(st):
                continue
            if stat.S_ISLNK(st.st_mode):
                found[rel] = "symlink:" + os.readlink(path)
            else:
                found[rel] = f"{st.st_mode & 0o111:o}:{file_sha256(path)}"
    for rel in baseline:
        if rel not in seen:
            found[rel] = "removed"
    if not found:
        return None
    return hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    """What ``snapshot`` records of a file or symlink: unchanged while it is not written,
    chmodded, renamed over or made anew (the ctime, which no call sets back)."""
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode, st.st_ctime_ns)


def runtime_untouched(prefix: Path, baseline: Mapping[str, tuple[int, ...]],
                      python_name: str) -> bool:
    """Whether the interpreter at ``prefix`` still runs only its runtime's code: every
    file and symlink of ``baseline`` as placed, and nothing added to ``lib/`` (where
    it imports from) outside site-packages, which a compile without ``site`` does
    not read."""
    for rel, stamp in baseline.items():
        try:
            if _stamp(os.lstat(os.path.join(prefix, rel))) != stamp:
                return False
        except OSError:
            return False
    site_packages = os.path.join(prefix, "lib", python_name, "site-packages")
    for dirpath, dirnames, filenames in os.walk(os.path.join(prefix, "lib")):
        if dirpath == os.path.dirname(site_packages):
            dirnames[:] = [d for d in dirnames if d != "site-packages"]
        rel_dir = os.path.relpath(dirpath, prefix)
        for name in [*filenames, *(d for d in dirnames
                                   if os.path.islink(os.path.join(dirpath, d)))]:
            if f"{rel_dir}/{name}" not in baseline:
                return False
    return True


def snapshot(prefix: Path, layer: Layer) -> dict[str, tuple[int, ...]]:
    """(inode, size, mtime_ns, mode, ctime_ns) of the files of ``layer`` (the runtime) as
    just restored at ``prefix`` (``prefix_state``'s baseline), symlinks as zeros.
    Anything else there (an earlier buildpack's files) is not in it. The ctime: a hook
    that edits a file in place, its size kept and its mtime set back, moves it (no
    call sets it), so its content is hashed and keys the layer."""
    index = read_index(layer.path / FILE_INDEX) or {"files": {}, "symlinks": {}}
    found: dict[str, tuple[int, ...]] = {}
    for rel in [*index["files"], *index["symlinks"]]:
        path = os.path.join(prefix, rel)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        found[rel] = _stamp(st)
    return found


def place_dependency_layer(install: DependencyInstall, python_home: Path, python_name: str,
                           cache: Cache, reporter: Reporter, lock_file: str,
                           copy: bool = False,
                           show: Callable[[Layer], Restored] | None = None,
                           ) -> tuple[DependencyLayer, Restored | None]:
    """Put the layer's files into the build's runtime prefix (hard links, or the
    build's own copies with ``copy``), unless it was installed there, and list the
    packages the prefix then holds. Also returns where the files were put (None
    when installed there). ``show`` puts it there instead of a restore (a view of
    the layer, layer_view.py). Raises cache.LayerChanged if the layer changed while
    copied."""
    name = install.key[:24]
    if install.from_cache:
        resolved = install.plan is not None and install.plan.resolved
        reporter.step(f"Restoring dependencies from cache (layer {name[:12]}, "
                      f"{lock_file} unchanged"
                      f"{', its ranges resolve to the same versions' if resolved else ''})")
    placed = None
    if install.from_cache or install.own_tree is not None:
        placed = (show(install.layer) if show is not None
                  else cache.restore(install.layer, python_home, copy=copy))
    packages = tuple(installed_packages(python_home, python_name))
    if not install.from_cache:
        reporter.detail(f"Installed {len(packages)} packages; cached as layer {name[:12]}"
                        if install.layer.published else
                        f"Installed {len(packages)} packages (not cached)")
    layer = DependencyLayer(install.key, packages, install.files, install.lock_checksum,
                            install.installer, install.installer_version, install.layer,
                            install.baseline, install.plan)
    return layer, placed


class Prefetch:
    """An installer downloading, in the background, what the install will need.

    Started before the runtime layer is prepared (a cold build), so the
    download overlaps that work; the install then reads the installer's cache.
    Only plans an installer can download ahead for take part (uv, for pinned
    requirements); anything going wrong here is left for the install to report.
    """

    def __init__(self, process: subprocess.Popen[bytes], scratch: Path,
                 adopt: Callable[[], None] | None = None) -> None:
        self.process = process
        self.scratch = scratch
        # Moves the cache buckets the installer made in its view (a fresh cache) to
        # the shared cache, where the install finds them (installers/built_wheels.py).
        self.adopt = adopt

    @classmethod
    def start(cls, *, app_dir: Path, lock_file: str, package_manager: str,
              config_vars: dict[str, str], cache: Cache, reporter: Reporter, python_version: str,
              scratch: Path, constraints: str | None = None,
              exports: Mapping[str, str] | None = None,
              seal: CacheSeal | None = None) -> Prefetch | None:
        """Start it in ``scratch`` (a new directory, the caller's to remove); sealed as
        an install with ``seal`` (it may build packages too)."""
        try:
            installer = installer_for(package_manager, python_version)
        except errors.SlugbuildError:
            return None  # the build refuses it itself
        scratch.mkdir()
        process = None
        try:
            plan = installer.plan(app_dir, lock_file, config_vars)
            job = InstallJob(python=Path(sys.executable), python_version=python_version,
                             app_dir=app_dir, lock_file=lock_file,
                             config_vars=config_vars, cache=cache, reporter=reporter,
                             scratch=scratch,
                             constraints=_write_constraints(scratch, constraints),
                             exports=dict(exports or {}), seal=seal)
            process = installer.prefetch(job, plan)
        except (OSError, errors.SlugbuildError):
            process = None
        return None if process is None else cls(process, scratch, functools.partial(
            built_wheels.adopt_job_caches, cache.root, scratch, job.env_sha256))

    def wait(self) -> None:
        """Let the download finish: the install is about to read its cache."""
        wait_for(self.process, "the installer's download")  # under the build's deadline
        if self.adopt is not None:
            self.adopt()

    def stop(self) -> None:
        """End it, killed with anything it started (a build backend) if still running."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if self.adopt is not None:
            self.adopt()


def _write_constraints(scratch: Path, constraints: str | None) -> Path | None:
    if constraints is None:
        return None
    path = scratch / "constraints.txt"
    path.write_text(constraints)
    return path


def _install_onto_previous(job: InstallJob, installer: Installer, plan: InstallPlan,
                           tree: Path, python_name: str, baseline: tuple[str, ...],
                           previous: incremental.PreviousLayer,
                           written: dict[str, tuple[StatKey, str]]) -> bool:
    """Fill the empty ``tree`` from the previous layer plus the difference
    (incremental.py); False, with ``tree`` empty again and the reason logged, when
    that cannot be done exactly."""
    try:
        difference = incremental.install_onto_previous(
            job, installer, plan, tree, python_name, baseline, previous)
    except incremental.NotIncremental as reason:
        job.reporter.detail(f"Installing every package again: {reason}")
        shutil.rmtree(tree)
        tree.mkdir()
        return False
    site_packages = tree / "lib" / python_name / "site-packages"
    baseline_names = [line.split("==")[0] for line in baseline]
    check_declared_installed(job, installed=[
        p.name for p in _site_packages_packages(site_packages)
        if canonicalize_name(p.name) not in {canonicalize_name(n) for n in baseline_names}],
        baseline=baseline_names)
    settle_install(job, tree, python_name, compile_only=difference.sources,
                   native=difference.native)
    (tree / ".lock").unlink(missing_ok=True)
    written.update(incremental.known_digests(previous, tree, difference.taken))
    write_host_paths(tree, relocate.find_references(
        tree, host_needles(job), skip_inodes=frozenset(difference.taken.files.values())))
    return True


def _install_fresh(job: InstallJob, installer: Installer, plan: InstallPlan,
                   python_name: str, key: str,
                   name: str, inputs: dict[str, Any], into_prefix: Path | None,
                   baseline: tuple[str, ...] = (), copy: bool = False,
                   previous: incremental.PreviousLayer | None = None,
                   env_sha256: str | None = None,
                   ) -> tuple[Layer, Path | None]:
    """Install, make the result relocatable, compile it, and publish it as the layer.

    In its own tree (``into_prefix`` None), the layer's tree is the install's
    prefix; into the build's prefix, what the install added there (and every file its distributions'
    RECORDs list, even where a path was there before) goes into the layer:
    hard-linked, or copied with ``copy`` (the build directory keeps using its
    own files). A layer that does not hold everything its RECORDs list is not
    published: the build uses it alone, with a warning. Returns the layer and,
    in its own tree, the tree's path while it was being installed. A layer with
    anything built from source records ``env_sha256`` (installers/built_wheels.py).
    """
    inputs = dict(inputs)  # what the manifest records; the build's history keeps its own
    draft: dict[str, Any] = {}
    written: dict[str, tuple[StatKey, str]] = {}
    with job.cache.new_layer("layers", name, key, inputs, records.layer_problems,
                             draft, written) as tree:
        onto_previous = into_prefix is None and previous is not None and \
            _install_onto_previous(dataclasses.replace(job, prefix=tree), installer, plan,
                                   tree, python_name, baseline, previous, written)
        if onto_previous and previous is not None:
            # Its host paths found too, the previous layer's files skipped; its slug
            # part takes the previous one's compressed units for unchanged packages.
            record_donor(tree.parent / PACKED_PARTS, previous.layer.path,
                         previous.layer.manifest["key"])
        elif into_prefix is None:
            # Its ELF files built here settled from the host-path scan below (one read).
            _install_and_compile(dataclasses.replace(job, prefix=tree), installer, plan, tree,
                                 python_name, baseline, native=False)
            # uv's lock of an environment it installs into: not part of it.
            (tree / ".lock").unlink(missing_ok=True)
        else:
            # What is there before the install (the runtime, and anything a pre_compile
            # hook or an earlier buildpack put there) is not the installer's to cache,
            # unless an installed distribution lists it (it shipped that path too).
            before = _relative_paths(into_prefix)
            dist_infos = _dist_infos(into_prefix, python_name)
            _install_and_compile(job, installer, plan, into_prefix, python_name, baseline)
            listed = _listed_by(into_prefix, python_name,
                                _dist_infos(into_prefix, python_name) - dist_infos)
            _link_added(into_prefix, before - listed, tree, copy)
        if not onto_previous:
            # The scan reads every file: the stack record's ELF files come from the
            # same read (stack_requirements and a view read the record, not the tree).
            elf_files: list[str] = []
            found = relocate.find_references(tree, host_needles(job), elf_files=elf_files)
            if into_prefix is None:
                found = _settle_found_elf_files(job, tree, python_name, found, elf_files)
            write_host_paths(tree, found)
            keep_stack_record(tree, tree.parent / PACKED_PARTS / STACK_RECORD, elf_files)
        # Built from source, or installed by processes an export takes over: the layer
        # holds this environment's output and records it (installers/built_wheels.py).
        if env_sha256 is not None and (
                built_wheels.steers_processes(job.exports)
                or built_wheels.BUILD_ENV_INPUT in inputs
                or (onto_previous and previous is not None
                    and built_wheels.BUILD_ENV_INPUT in previous.layer.manifest["inputs"])
                or built_wheels.from_source(job.scratch,
                                            tree / "lib" / python_name / "site-packages")):
            inputs[built_wheels.BUILD_ENV_INPUT] = env_sha256
    if "unpublished" in draft:
        problems = draft["unpublished"]
        job.reporter.warn(
            f"The installed packages were not cached: the install does not hold everything "
            f"their RECORD files list ({'; '.join(problems[:3])}"
            f"{f' and {len(problems) - 3} more' if len(problems) > 3 else ''}). This build "
            f"uses them as installed; the next one installs them again.")
        layer = draft["layer"]
    else:
        layer = job.cache.lookup("layers", name, key)
        assert layer is not None
    return layer, (tree if into_prefix is None else None)


def _dist_infos(home: Path, python_name: str) -> set[str]:
    site_packages = home / "lib" / python_name / "site-packages"
    try:
        return {n for n in os.listdir(site_packages) if n.endswith(".dist-info")}
    except OSError:
        return set()


def _listed_by(home: Path, python_name: str, dist_infos: set[str]) -> set[str]:
    """Paths (relative to ``home``) the RECORDs of ``dist_infos`` list."""
    base = f"lib/{python_name}/site-packages"
    return set(records.claims_in(home, [f"{base}/{d}/RECORD" for d in dist_infos]))


def _install_and_compile(job: InstallJob, installer: Installer, plan: InstallPlan,
                         home: Path, python_name: str, baseline: tuple[str, ...] = (),
                         native: bool = True) -> None:
    """Install (the baseline first) into ``home``, check the app got what it declared,
    point its scripts and records at the slug, compile it; ``native`` False: its ELF
    files built here are the caller's to settle (``_settle_found_elf_files``)."""
    site_packages = home / "lib" / python_name / "site-packages"
    if baseline:
        reasons = [("Heroku's baseline for pip apps on Python 3.12 and older"
                    if line.startswith("setuptools==") else "kept in the slug: "
                    "SLUGBUILD_KEEP_PIP") for line in baseline]
        job.reporter.detail(f"Installing {' and '.join(baseline)} first "
                            f"({'; '.join(reasons)})")
        installer.install_baseline(job, plan, baseline)
    before = {p.name for p in _site_packages_packages(site_packages)}
    installer.install(job, plan)
    added = [p for p in _site_packages_packages(site_packages) if p.name not in before]
    check_declared_installed(job, installed=[p.name for p in added],
                             baseline=[line.split("==")[0] for line in baseline])
    settle_install(job, home, python_name, native=native)


def _settle_found_elf_files(job: InstallJob, home: Path, python_name: str,
                            found: list[tuple[Path, str]], elf_files: list[str]
                            ) -> list[tuple[Path, str]]:
    """settle_install's ELF step for a layer installed in its own tree (``home``), from
    its host-path scan instead of a read of every file: the ELF files of site-packages
    it found naming the machine settled (relocate.settle_built_elf_files) and their
    RECORD lines refreshed; the scan's findings with those files scanned again. The
    same files as settle_install's own pass: that pass changes exactly the ELF files
    naming a needle, the needles the scan looks for."""
    site_packages = home / "lib" / python_name / "site-packages"
    elves = frozenset(elf_files)
    named = sorted({path for path, _ in found
                    if str(path) in elves and path.is_relative_to(site_packages)})
    if not named:
        return found
    needles = host_needles(job)
    try:
        changed = relocate.settle_built_elf_files(
            site_packages, needles, str(job.python.parent.parent), home / "lib", only=named)
    except (OSError, subprocess.CalledProcessError) as exc:
        if errors.disk_full(exc):  # not the files' fault: stop as for any full disk
            raise errors.out_of_space(exc) from exc
        return found  # left as built: the host-path record says what remains
    relocate.refresh_records(site_packages, changed)
    encoded = [(needle, needle.encode()) for needle in needles if needle]
    again = set(changed)
    return sorted([(path, needle) for path, needle in found if path not in again]
                  + [(path, needle) for path in changed
                     for needle in relocate.file_mentions(str(path), encoded)])


def settle_install(job: InstallJob, home: Path, python_name: str,
                   compile_only: list[str] | None = None, native: bool = True) -> None:
    """Point what the install put in ``home`` at the slug (scripts, records, built ELF
    files) and compile it; ``compile_only``: just these sources (relative to
    site-packages), the other pycs being the previous layer's (incremental.py);
    ``native`` False: nothing new can be an ELF file built here."""
    site_packages = home / "lib" / python_name / "site-packages"
    rewritten = []
    if (home / "bin").is_dir():
        rewritten += relocate.make_scripts_relocatable(home / "bin", python_name)
    rewritten += _point_direct_urls_at_slug(site_packages, job.app_dir)
    # uv's note of a local package's source times, for its own reinstall checks:
    # it differs with every checkout and means nothing in a slug.
    relocate.drop_recorded_files(site_packages,
                                 sorted(site_packages.glob("*.dist-info/uv_cache.json")))
    try:
        if native:
            rewritten += relocate.settle_built_elf_files(
                site_packages, host_needles(job), str(job.python.parent.parent), home / "lib")
    except (OSError, subprocess.CalledProcessError) as exc:
        if errors.disk_full(exc):  # not the files' fault: stop as for any full disk
            raise errors.out_of_space(exc) from exc
        # left as built: the host-path check reports what remains
    relocate.refresh_records(site_packages, rewritten)
    try:
        # Without the earlier buildpacks' exports: the compile is slugbuild's own step,
        # its pycs shared through the store, and an exported LD_PRELOAD, LD_LIBRARY_PATH
        # or PATH would run a buildpack's code inside it.
        relocate.compile_bytecode(
            job.python, site_packages,
            f"{relocate.SLUG_PYTHON_HOME}/lib/{python_name}/site-packages",
            clean_env(), store=pyc_store(job, python_name), only=compile_only,
        )
    except subprocess.CalledProcessError:
        pass  # A package shipping a file with bad syntax must not fail the build.


def pyc_store(job: InstallJob, python_name: str) -> Path | None:
    """The cache's pyc store, shared by every app, if the interpreter compiling for
    ``job`` is still its runtime as cached; else None (this layer's pycs compiled
    alone). Its pycs are taken as they are by any build compiling the same source at
    the same path, so no code of this build may run in the compile: it runs without
    ``site`` (no ``sitecustomize`` or ``.pth`` of site-packages), and its standard
    library, which a pre_compile hook or a package's build can edit or add to (in
    the build's prefix, or through hard links in the cached runtime), is checked
    first: in the build's prefix, every runtime file as placed (its ctime too) and
    nothing added to ``lib/`` outside site-packages; a cached runtime's tree as its
    files.json records it."""
    store = job.cache.root / PYC_STORE
    if job.prefix is None:  # the build's own prefix: compared with its runtime as placed
        baseline = job.runtime_baseline
        return store if baseline is not None and runtime_untouched(
            job.python.parent.parent, baseline, python_name) else None
    home = job.python.parent.parent
    if home.is_relative_to(job.app_dir) or (home.name, home.parent.name) == ("python",
                                                                            ".heroku"):
        return None  # a build's prefix, with no note of its runtime as placed
    if (home.parent / FILE_INDEX).is_file() and home.name == TREE:  # a cached runtime's
        return store if job.cache.still_pristine(Layer(home.parent, {}, published=False)) \
            else None
    return store  # the host's own interpreter (a cold build's), as trusted as slugbuild


def host_needles(job: InstallJob) -> list[str]:
    """Paths of this machine that no file of a dependency layer should name: the
    cache (build directories, the installer's cache and its sdist builds, the
    install's scratch) and the prefix of the interpreter that installed it."""
    prefix = str(job.python.parent.parent)
    # A prefix shared with the whole system (/usr) would match every library's strings;
    # runtimes never come from one (runtime/local.py).
    shared = prefix in {"/", "/usr", "/usr/local", "/opt", "/bin"}
    return [str(job.cache.root), *([] if shared else [prefix])]


HOST_PATHS = "host-paths.json"


def write_host_paths(tree: Path, found: list[tuple[Path, str]]) -> None:
    """Keep, beside a layer's tree, which of its files name a path of the machine
    that made it: every build using the layer warns about them, warm ones too."""
    write_json_atomic(tree.parent / HOST_PATHS,
                      [[str(path.relative_to(tree)), needle] for path, needle in found])


def read_host_paths(layer: Layer) -> list[tuple[Path, str]]:
    """What ``write_host_paths`` kept for a layer (as paths in its tree)."""
    try:
        found = json.loads((layer.path / HOST_PATHS).read_text())
        pairs = [(str(rel), str(needle)) for rel, needle in found]
    except (OSError, ValueError, TypeError, RecursionError):
        return []
    # Only the layer's own files: a damaged or foreign file naming others is ignored.
    if any(rel.startswith("/") or ".." in rel.split("/") for rel, _ in pairs):
        return []
    return [(layer.tree / rel, needle) for rel, needle in pairs]


def _point_direct_urls_at_slug(site_packages: Path, app_dir: Path) -> list[Path]:
    """Local packages record where they were installed from (PEP 610 direct_url.json).

    That is the build directory; name the app's place in the slug (/app)
    instead, so the slug neither leaks nor depends on where it was built.
    """
    build_url = "file://" + str(app_dir)
    changed = []
    for path in sorted(site_packages.glob("*.dist-info/direct_url.json")):
        text = path.read_text()
        if build_url in text:
            fixed = text.replace(build_url + "/", "file://" + relocate.SLUG_HOME + "/")
            fixed = fixed.replace(build_url, "file://" + relocate.SLUG_HOME)
            relocate.write_replacing(path, fixed.encode())
            changed.append(path)
    return changed


def _relative_paths(root: Path) -> set[str]:
    found: set[str] = set()
    for directory, dirnames, filenames in walk_sorted(root):
        rel_dir = os.path.relpath(directory, root)
        found.update(os.path.normpath(os.path.join(rel_dir, n)) for n in dirnames + filenames)
    return found


def _link_added(built: Path, existing: set[str], layer_tree: Path, copy: bool = False) -> None:
    """Put into ``layer_tree`` every path of ``built`` not in ``existing``.

    Files are hard-linked (copied where a link is impossible, or always with
    ``copy``), like a restore: the build's later steps are then checked
    against the layer the same way.
    """
    place = shutil.copy2 if copy else link_or_copy
    for directory, dirnames, filenames in walk_sorted(built):
        rel_dir = directory.relative_to(built)
        for name in [*dirnames, *filenames]:
            source = directory / name
            rel = rel_dir / name
            if str(rel) in existing:
                continue
            target = layer_tree / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_symlink():
                target.symlink_to(os.readlink(source))
            elif source.is_dir():
                shutil.copytree(source, target, symlinks=True, copy_function=place)
                dirnames.remove(name)  # placed whole; do not walk into it
            else:
                place(source, target)


def _site_packages_packages(site_packages: Path) -> list[Package]:
    found = (package_from_metadata(meta.read_text(errors="replace"))
             for meta in sorted(site_packages.glob("*.dist-info/METADATA")))
    return [p for p in found if p]


def check_declared_installed(job: InstallJob, installed: list[str],
                             baseline: Sequence[str] = ()) -> None:
    """An app that declares requirements must get some: fail when markers left none.

    ``installed`` are the names the app's install added (the baseline's are
    ``baseline``). Requirements whose environment markers exclude the runtime
    are what an install skips; when every declared one was skipped, the slug
    would have no dependencies and its processes would not start (``gunicorn:
    not found``), so the build stops, naming the markers and the Python. When
    only some top-level requirements were skipped, a warning names them.
    """
    parsed = [_parse_requirement(line) for line in job.declared]
    declared = [r for r in parsed if r is not None]
    if not declared:
        return
    environment = marker_environment(job.python_version)
    excluded = [(r, line) for r, line in declared
                if r.marker is not None and not r.marker.evaluate(environment)]
    if not excluded:
        return
    got = {canonicalize_name(name) for name in [*installed, *baseline]}
    missing = [(r, line) for r, line in excluded if canonicalize_name(r.name) not in got]
    if not missing:
        return
    listed = "\n".join(f"  {line}" for _r, line in missing[:10])
    more = f"\n  … and {len(missing) - 10} more" if len(missing) > 10 else ""
    if len(missing) == len(declared) and not installed:
        allowed = _newest_allowing([r for r, _line in declared])
        raise errors.DEPENDENCIES_EXCLUDED_BY_MARKERS.error(
            lock_file=job.lock_file, count=len(declared), python=job.python_version,
            listed=listed + more,
            suggestion=f" (a line `{allowed}` there selects them all)" if allowed else "")
    by_python = [line for r, line in missing if "python" in str(r.marker)]
    if by_python:
        job.reporter.detail(f"Not installed, their markers exclude Python "
                            f"{job.python_version}: " + "; ".join(by_python[:5])
                            + (" …" if len(by_python) > 5 else ""))


def excluded_requirements(app_dir: Path, lock_file: str, python_version: str
                          ) -> dict[str, str]:
    """Canonical name -> line of each requirement of a requirements file (and its
    ``-r`` includes) whose marker excludes ``python_version``.

    A marker follows a ``;`` (PEP 508): a line without one is not parsed, so an app
    without markers (most) loads no requirement or marker parser on a warm build."""
    environment: dict[str, str] | None = None
    found: dict[str, str] = {}
    for line in requirement_lines(app_dir, lock_file):
        parsed = _parse_requirement(line) if ";" in line else None
        if parsed and parsed[0].marker is not None:
            environment = environment or marker_environment(python_version)
            if not parsed[0].marker.evaluate(environment):
                found[canonicalize_name(parsed[0].name)] = line
    return found


def _newest_allowing(requirements: list[Requirement]) -> str | None:
    """The newest Python 3 minor version (3.9 to 3.14) every marker allows, if any."""
    for minor in range(14, 8, -1):
        environment = marker_environment(f"3.{minor}.0")
        if all(r.marker is None or r.marker.evaluate(environment) for r in requirements):
            return f"3.{minor}"
    return None


def _parse_requirement(line: str) -> tuple[Requirement, str] | None:
    """(Requirement, line) for a requirement line, None for what is not one (a path, URL)."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        return Requirement(line), line
    except InvalidRequirement:
        return None


def marker_environment(python_version: str) -> dict[str, str]:
    """The environment markers are evaluated in: this machine, with the runtime's Python."""
    from packaging.markers import default_environment

    environment = {name: str(value) for name, value in default_environment().items()}
    release = python_version.split(".")
    environment.update(python_version=".".join(release[:2]),
                       python_full_version=python_version,
                       implementation_version=python_version,
                       implementation_name="cpython",
                       platform_python_implementation="CPython")
    return environment


def installed_packages(python_home: Path, python_name: str) -> list[Package]:
    """Name and version of every distribution in site-packages, sorted by name."""
    site_packages = python_home / "lib" / python_name / "site-packages"
    found = (package_from_metadata(meta.read_text(errors="replace"))
             for meta in sorted(site_packages.glob("*.dist-info/METADATA")))
    return sorted((p for p in found if p), key=lambda p: canonicalize_name(p.name))


def has_package(packages: tuple[Package, ...], name: str) -> bool:
    wanted = canonicalize_name(name)
    return any(canonicalize_name(p.name) == wanted for p in packages)

