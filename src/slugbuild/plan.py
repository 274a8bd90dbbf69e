"""``slugbuild plan``: what a build of an app would do, learned without building it.

Like Railpack's and Nixpacks' ``plan``: the Python version and where the
request came from, the package manager and the installer (and why), whether
collectstatic runs, the process types (declared or inferred), the buildpacks,
and which layers a build would take from the cache. Nothing is installed and
nothing is recorded (not even the version an app without a version file sticks
to): the app is staged as a build stages it (.slugignore applied) into a
scratch directory that is removed afterwards.

Every answer comes from the function the build itself calls (detection,
``choose_runtime``, the installer's ``plan``, ``plan_dependency_layer`` for the
layer key, ``collectstatic_decision``, the Procfile reader and the inference),
so a plan cannot drift from the build. What only a build can know is said as
such: packages are the cached layer's when it exists, else the names the
lock or requirements files declare; a pre_compile hook or an earlier buildpack
may still change what is installed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from . import errors, platform_info, records
from .app_base import apply_app_base
from .app_json import apply_app_json
from .aptfile import APTFILE, apt_layer_key, apt_layer_name
from .buildpacks import choose_buildpacks
from .cache import Cache
from .collectstatic import collectstatic_decision
from .config_vars import load_config_vars
from .context import BuildContext, StageTimer, open_cache
from .dependencies import (
    constraints_from_slug_json,
    installed_packages,
    plan_dependency_layer,
)
from .dependency_stage import analyse_dependencies
from .detect import AppInfo
from .hooks import PRE_COMPILE
from .inference import infer_web_process
from .installers import InstallPlan
from .installers.ranges import resolve_plan
from .installers.requirements import requirement_lines
from .log import Reporter
from .nltk_data import nltk_layer_key, read_nltk_list
from .package_managers import package_manager
from .procfile import read_procfile
from .python_buildpack import detect_python
from .redact import mask
from .runtime import RuntimeOptions, choose_runtime, runtime_manifest
from .stage import check_top_level_links, stage_sources
from .toml_compat import tomllib

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class PythonPlan:
    """The Python version a build would use, and where the request came from."""

    version: str
    requested: str
    requested_from: str  # "file", "sticky" (the app's previous build) or "default"
    source_file: str | None
    why: str  # the request's source in words, or why the default was chosen
    runtime_source: str  # --python-source name: local, download, heroku
    runtime_origin: str  # where that source gets it (a local prefix, a URL)


@dataclass(frozen=True)
class DependenciesPlan:
    """The package manager and the tool that installs its lock, and why each."""

    package_manager: str
    lock_file: str
    package_manager_because: str
    installer: str  # the tool that installs: "pip" or "uv"
    installer_version: str
    installer_because: str
    tools: str  # every tool the install runs, with its version (part of the layer key)
    key_files: list[str]
    # The names the plan knows are installed: the cached layer's packages, else
    # the names the lock or requirements declare ("declared").
    packages_from: str
    packages: list[str]


@dataclass(frozen=True)
class CollectstaticPlan:
    runs: bool
    why: str


@dataclass(frozen=True)
class ProcessTypesPlan:
    """The process types a build would record, and how they were found."""

    types: dict[str, str]
    source: str  # "Procfile", "inferred" or "none"
    inferred: dict[str, object] | None = None
    # What may add more at build time (an external buildpack's bin/release).
    note: str = ""


@dataclass(frozen=True)
class LayerPlan:
    """One cached layer a build uses: whether the cache has it now."""

    layer: str  # "runtime", "dependencies", "system-packages", "nltk-data"
    name: str | None  # its name in the cache (None: only the build can know)
    key: str | None
    cached: bool | None  # None: decided during the build
    note: str = ""


@dataclass(frozen=True)
class BuildPlan:
    """What ``compile_app`` would do for an app (``plan_app``)."""

    app_dir: Path
    buildpacks: list[str]
    python: PythonPlan | None
    dependencies: DependenciesPlan | None
    collectstatic: CollectstaticPlan | None
    process_types: ProcessTypesPlan
    layers: list[LayerPlan] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # slug.json's ``app_json`` the build would record (None: no app.json).
    app_json: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The shape ``slugbuild plan --json`` prints."""
        shown = asdict(self)
        shown["app_dir"] = str(self.app_dir)
        return shown

    def layer(self, kind: str) -> LayerPlan | None:
        return next((layer for layer in self.layers if layer.layer == kind), None)


@errors.user_errors
def plan_app(
    app_dir: PathLike,
    *,
    cache_dir: PathLike | None = None,
    env: Mapping[str, str] | None = None,
    env_dir: PathLike | None = None,
    runtime_options: RuntimeOptions | None = None,
    buildpacks: Sequence[str] | None = None,
    constraints_from: PathLike | None = None,
    app_base: str | None = None,
    node_build: bool = False,
    app_json_env: bool = False,
) -> BuildPlan:
    """What ``compile_app`` with the same arguments would do, without building: bad
    input fails with the error the build would give, before any work."""
    reporter = Reporter(quiet=True)
    app_dir = Path(app_dir).absolute()
    if not app_dir.is_dir():
        raise errors.APP_DIR_MISSING.error(app_dir=app_dir)
    config_vars = load_config_vars(env, env_dir)
    app_dir, repo_root = apply_app_base(app_dir, app_base, config_vars, reporter)
    manifest, config_vars = apply_app_json(app_dir, config_vars, app_json_env, reporter)
    check_top_level_links(app_dir)
    chosen = choose_buildpacks(app_dir, buildpacks, repo_root, node_build, runtime_options)
    constraints = (constraints_from_slug_json(Path(constraints_from))
                   if constraints_from is not None else None)
    cache = open_cache(Path(cache_dir) if cache_dir is not None else None, app_dir)
    scratch = cache.scratch_dir("plan")
    build = BuildContext(app_dir, scratch / "app", scratch, cache, platform_info.current(),
                         config_vars, reporter, StageTimer(), "herokuish", None, constraints)
    shown = [b.shown for b in chosen.order] if chosen.listed else ["python (built-in)"]
    try:
        stage_sources(app_dir, build.build_dir, leave_out=[cache.root.resolve()])
        layers = _system_layers(build)
        if chosen.python is None:
            declared = read_procfile(build.build_dir)
            plan = BuildPlan(app_dir, shown, None, None, None, ProcessTypesPlan(
                declared, "Procfile" if declared else "none",
                note="the buildpacks' bin/release may declare more"), layers)
        else:
            position = chosen.order.index(chosen.python)
            earlier = [b.shown for b in chosen.order[:position]]
            plan = _plan_python(build, app_dir, shown, earlier, layers,
                                chosen.python.runtime_options or RuntimeOptions.from_env())
    finally:
        build.close()
    return dataclasses.replace(plan, warnings=_warnings(reporter),
                               app_json=manifest.slug_fields() if manifest else None)


def _plan_python(build: BuildContext, app_dir: Path, shown: list[str], earlier: list[str],
                 layers: list[LayerPlan], options: RuntimeOptions) -> BuildPlan:
    reporter, cache, platform = build.reporter, build.cache, build.platform
    info = detect_python(build)
    with build.naming_app_dir():
        request, resolution = choose_runtime(build.build_dir, cache, platform, options,
                                             reporter, app_dir, remember=False)
    offer = resolution.offer
    python = PythonPlan(
        version=offer.version, requested=request.requested, requested_from=request.origin,
        source_file=request.source_file,
        why=resolution.reason or request.describe_source(),
        runtime_source=offer.source_name, runtime_origin=mask(offer.origin))
    runtime = runtime_manifest(offer, platform)
    layers.insert(0, _layer_state(cache, "runtime", "runtimes", runtime["name"],
                                  runtime["key"]))

    analysis = analyse_dependencies(build, info, offer)
    def resolve(plan: InstallPlan, baseline: tuple[str, ...]) -> InstallPlan:
        # Version ranges key the layer by what they resolve to: resolved as the build does.
        return resolve_plan(plan, app_dir=build.build_dir, lock_file=analysis.lock_file,
                            python_version=offer.version, config_vars=build.config_vars,
                            cache=cache, reporter=reporter, constraints=build.constraints,
                            baseline=baseline, seal=build.seal)

    planned = plan_dependency_layer(build.build_dir, analysis.lock_file, runtime,
                                    analysis.installer, build.config_vars, build.constraints,
                                    resolve=resolve)
    notes = []
    if earlier:
        notes.append(f"the buildpacks before it ({', '.join(earlier)}) may change the app "
                     f"or .heroku/python first, and so this key")
    if (build.build_dir / "bin" / PRE_COMPILE).is_file():
        notes.append("this key holds if the pre_compile hook leaves .heroku/python alone")
    dependency_layer = _layer_state(cache, "dependencies", "layers", planned.name, planned.key,
                                    "; ".join(notes))
    layers.insert(1, dependency_layer)
    packages, packages_from = _known_packages(cache, dependency_layer, offer.python_name,
                                              build.build_dir, info)
    dependencies = _dependencies_plan(info, planned.plan, list(planned.files), packages,
                                      packages_from)
    corpora = read_nltk_list(build.build_dir)
    if corpora and "nltk" in packages:
        # Keyed by what NLTK's index says the corpora are: read now, as the build does.
        name, key, _, _ = nltk_layer_key(corpora, build.config_vars)
        layers.append(_layer_state(cache, "nltk-data", "layers", name, key))

    runs, why = collectstatic_decision(build.build_dir, info.manage_py, "django" in packages,
                                       build.config_vars)
    return BuildPlan(app_dir, shown, python, dependencies, CollectstaticPlan(runs, why),
                     _process_types(build.build_dir, info, packages, shown, earlier), layers)


def _dependencies_plan(info: AppInfo, plan: InstallPlan, key_files: list[str],
                       packages: set[str], packages_from: str) -> DependenciesPlan:
    """The installer plan's facts, as slug.json's ``package_manager`` will give them."""
    assert info.package_manager is not None and info.lock_file is not None
    row = package_manager(info.package_manager)
    return DependenciesPlan(
        package_manager=info.package_manager, lock_file=info.lock_file,
        package_manager_because=f"{row.lock_file} is the app's one package manager file",
        installer=plan.tool, installer_version=plan.installer_version or plan.version,
        installer_because=plan.installer_reason or f"{row.lock_file} is installed by "
                                                   f"{row.tool}",
        tools=plan.version, key_files=key_files, packages_from=packages_from,
        packages=sorted(packages))


def _process_types(build_dir: Path, info: AppInfo, packages: set[str], shown: list[str],
                   earlier: list[str]) -> ProcessTypesPlan:
    """The Procfile's types, else the inferred web process: as the build decides
    (``inference.discover_process_types``), with the known packages."""
    external = [name for name in shown if name != "python (built-in)"]
    note = ("a listed buildpack's bin/release may add default process types"
            if external else "")
    declared = read_procfile(build_dir)
    if declared:
        return ProcessTypesPlan(declared, "Procfile", note=note)
    if (build_dir / "Procfile").is_file():
        return ProcessTypesPlan({}, "none", note=note or "the Procfile declares none")
    inferred = infer_web_process(build_dir, info, packages)
    if inferred is None:
        return ProcessTypesPlan({}, "none", note=note)
    return ProcessTypesPlan({"web": inferred.command}, "inferred", inferred.as_dict(), note)


def _system_layers(build: BuildContext) -> list[LayerPlan]:
    """The Aptfile's layer, keyed as ``aptfile.prepare_apt_layer`` keys it."""
    path = build.build_dir / APTFILE
    if not path.is_file():
        return []
    key, _ = apt_layer_key(path.read_text(errors="replace"), build.platform)
    return [_layer_state(build.cache, "system-packages", "layers", apt_layer_name(key), key)]


def _layer_state(cache: Cache, layer: str, kind: str, name: str, key: str,
                 note: str = "") -> LayerPlan:
    """Whether the build would find the layer in the cache, intact (a damaged one is
    made again; the plan leaves it for the build to discard)."""
    found = cache.lookup(kind, name, key)
    if found is None:
        return LayerPlan(layer, name, key, False, note)
    problems = cache.verify(found, records.layer_problems if layer == "dependencies" else None)
    if problems:
        return LayerPlan(layer, name, key, False,
                         "; ".join(filter(None, [note, "the cached layer is damaged: "
                                                 "the build makes it again"])))
    return LayerPlan(layer, name, key, True, note)


def _known_packages(cache: Cache, layer: LayerPlan, python_name: str, app_dir: Path,
                    info: AppInfo) -> tuple[set[str], str]:
    """The installed names: the cached layer's, else those the app declares."""
    if layer.cached and layer.name and layer.key:
        found = cache.lookup("layers", layer.name, layer.key)
        if found is not None:
            return ({canonicalize_name(p.name)
                     for p in installed_packages(found.tree, python_name)}, "cached layer")
    return declared_packages(app_dir, info), "declared"


def declared_packages(app_dir: Path, info: AppInfo) -> set[str]:
    """The normalised names the app's lock (or requirements files) lists: what a plan
    knows of the packages before they are installed (best effort; no tool runs)."""
    lock = app_dir / (info.lock_file or "requirements.txt")
    names: set[str] = set()
    try:
        if info.package_manager == "pip":
            for line in requirement_lines(app_dir, info.lock_file or "requirements.txt"):
                try:
                    names.add(canonicalize_name(Requirement(line.split(" #")[0]).name))
                except InvalidRequirement:
                    continue
        elif info.package_manager == "pipenv":
            data = json.loads(lock.read_text())
            names.update(canonicalize_name(n) for n in data.get("default", {}))
        elif info.package_manager in ("poetry", "uv"):
            data = tomllib.loads(lock.read_text())
            names.update(canonicalize_name(p["name"]) for p in data.get("package", [])
                         if isinstance(p, dict) and isinstance(p.get("name"), str))
    except (OSError, ValueError, AttributeError, TypeError):
        pass  # the build reports a lock it cannot read; a plan only knows less
    return names


def _warnings(reporter: Reporter) -> list[str]:
    return [event.message for event in reporter.events if event.kind == "warning"]


def render_plan(plan: BuildPlan) -> str:
    """The plan as text, for ``slugbuild plan`` without --json."""
    lines = [f"Plan for {plan.app_dir}", f"  buildpacks:      {', '.join(plan.buildpacks)}"]
    if plan.python is not None:
        py = plan.python
        lines.append(f"  python:          {py.version} ({py.runtime_source}: {py.runtime_origin})")
        lines.append(f"                   requested {py.requested}: {py.why}")
    if plan.dependencies is not None:
        deps = plan.dependencies
        lines.append(f"  package manager: {deps.package_manager} "
                     f"({deps.package_manager_because})")
        lines.append(f"  installer:       {deps.installer} {deps.installer_version} "
                     f"({deps.installer_because})")
        lines.append(f"  tools:           {deps.tools}")
    if plan.collectstatic is not None:
        lines.append(f"  collectstatic:   {'runs' if plan.collectstatic.runs else 'skipped'} "
                     f"({plan.collectstatic.why})")
    types = plan.process_types
    how = {"Procfile": "declared in Procfile", "inferred": "inferred",
           "none": "none"}[types.source]
    if types.inferred:
        how += f" from {types.inferred['source']} ({types.inferred['framework']})"
    lines.append(f"  process types:   {how}")
    lines.extend(f"    {name}: {command}" for name, command in sorted(types.types.items()))
    if types.note:
        lines.append(f"    ({types.note})")
    lines.append("  layers:")
    for layer in plan.layers:
        state = {True: "from cache", False: "to build", None: "decided at build"}[layer.cached]
        lines.append(f"    {layer.layer:<16} {state}"
                     + (f"  {layer.name}" if layer.name else "")
                     + (f"  ({layer.note})" if layer.note else ""))
    if plan.app_json is not None:
        scripts = plan.app_json["scripts"]
        lines.append("  app.json:        " + (", ".join(f"{name}: {command}" for name, command
                                                         in scripts.items()) or "no scripts"))
        if plan.app_json["env_applied"]:
            lines.append(f"    env applied: {', '.join(plan.app_json['env_applied'])}")
    lines.extend(f" !     {warning}" for warning in plan.warnings)
    return "\n".join(mask(line) for line in lines)
