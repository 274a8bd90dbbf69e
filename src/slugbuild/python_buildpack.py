"""The built-in Python buildpack: slugbuild's own stages for a Python app.

A buildpack object like the external ones (buildpacks.py runs them in order).
It first analyses the app (detect, package manager, Python version, the
requirements files: bad input fails here, before any long work; before
anything else when it is the first buildpack), then runs its stages: runtime
layer, pre_compile hook, dependency layer (dependency_stage.py), NLTK data,
collectstatic, post_compile hook, profile.d. It follows Heroku's Python
buildpack (HEROKU_PYTHON_FOLLOWED).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from . import indexes
from .buildpack_runner import exported_variables
from .cache import Layer, LayerChanged, Restored
from .collectstatic import run_collectstatic
from .context import PYTHON_HOME, RESTORE_ATTEMPTS, BuildContext, BuildpackRun, BuildpackTurn
from .dependencies import DependencyLayer, excluded_requirements, has_package, installer_facts
from .dependency_stage import DependencyAnalysis, DependencyStage, analyse_dependencies
from .detect import AppInfo, detect, package_manager_files, require_package_manager
from .envflag import env_flag
from .errors import SlugbuildError
from .hooks import POST_COMPILE, PRE_COMPILE, run_hook
from .importcheck import check_process_commands, check_process_imports
from .inference import discover_process_types
from .installers.built_wheels import env_scoped_key
from .layer_checks import check_layers_size, refuse_links_leaving_slug
from .nltk_data import DATA_DIR as NLTK_DATA_DIR
from .nltk_data import provide_nltk_data, write_nltk_profile
from .node_assets import node_assets_warning
from .procfile import check_procfile_name
from .profile import write_profile
from .release import BUILDPACK_DESCRIPTION, python_addons
from .runtime import (
    Resolution,
    RuntimeOffer,
    RuntimeOptions,
    cached_runtime_layer,
    choose_runtime,
    ensure_runtime_layer,
)
from .runtime.layer import pull_runtime_layer
from .runtime.published import PUBLISHED
from .stage import check_not_ignored
from .static_reuse import StaticReuse
from .versions import PythonRequest

# The release of Heroku's Python buildpack whose behaviour the built-in stages follow
# (its source is what docs/ and the peer comparison refer to).
HEROKU_PYTHON_FOLLOWED = "v351"
_GIT_REF = re.compile(r"^[\w.+/-]{1,100}$")
# Files a package manager reads beside its lock file.
MANAGER_COMPANIONS = {"pipenv": ("Pipfile",), "poetry": ("pyproject.toml",),
                      "uv": ("pyproject.toml",)}


@dataclass
class PythonBuild:
    """What the built-in Python stages produced."""

    info: AppInfo
    request: PythonRequest
    runtime_info: dict[str, Any]
    deps: DependencyLayer
    # Where packages come from (indexes.app_sources): slug.json's record, and
    # each package's index where it is known ("*": every package's).
    sources: tuple[dict[str, Any], dict[str, str]]

    @property
    def lock_file(self) -> str:
        return self.info.lock_file or "requirements.txt"

    def discover_process_types(self, build: BuildContext
                               ) -> tuple[dict[str, str], dict[str, Any] | None]:
        """The Procfile's types, else the inferred web process (with how it was inferred)."""
        types, inferred = discover_process_types(
            build.build_dir, self.info, (p.name for p in self.deps.packages), build.reporter)
        return types, (inferred.as_dict() if inferred else None)

    def addons(self, build: BuildContext) -> list[str]:
        """Add-ons Heroku's Python buildpack asks for (Postgres for Django with psycopg2)."""
        return python_addons(build.build_dir)

    def check_entry_points(self, build: BuildContext, process_types: dict[str, str]) -> None:
        """Each process type's program is in the slug, and its entry module imports
        (``importcheck``)."""
        version = self.runtime_info["resolved"]
        python = (build.build_dir / PYTHON_HOME / "bin"
                  / f"python{'.'.join(version.split('.')[:2])}")
        excluded = (excluded_requirements(build.build_dir, self.lock_file, version)
                    if self.info.package_manager == "pip" else {})
        check_process_commands(build.build_dir, python, process_types, excluded, version,
                               self.lock_file)
        with build.step_layers("the entry-point check") as layers:
            check_process_imports(build.build_dir, python, process_types, version,
                                  self.lock_file, build.config_vars, build.reporter,
                                  passed=(build.cache.root / "checks",
                                          env_scoped_key(self.deps.key,
                                                         self.deps.layer.manifest)),
                                  shared=build.cache.remote, layers=layers)

    def slug_fields(self) -> dict[str, Any]:
        """slug.json's runtime, package_manager, packages and frameworks."""
        deps, info = self.deps, self.info
        return {
            "runtime": self.runtime_info,
            "package_manager": {
                "name": info.package_manager,
                "lock_file": info.lock_file,
                "lock_checksum": deps.lock_checksum,
                "files": list(deps.files),
                **installer_facts(deps),
                "baseline": list(deps.baseline),
                **self._package_sources(),
            },
            "packages": self.package_list(),
            "frameworks": list(info.frameworks),
        }

    def package_list(self) -> list[dict[str, str]]:
        return [p.as_dict() for p in self.deps.packages]

    def _package_sources(self) -> dict[str, Any]:
        """slug.json's ``package_manager.sources``: the indexes, and each package's
        index where it is certain (``packages``: normalised name -> redacted URL)."""
        record, origins = self.sources
        if not record:
            return {}
        known = {}
        for package in self.deps.packages:
            name = canonicalize_name(package.name)
            index = origins.get(name) or origins.get("*")
            if index:
                known[name] = index
        return {"sources": {**record, "packages": dict(sorted(known.items()))}}


@dataclass
class Analysis:
    """What the app is, learned before any long work: the app, its runtime, its
    dependencies (every requirements file read and checked)."""

    info: AppInfo
    request: PythonRequest
    resolution: Resolution
    dependencies: DependencyAnalysis


class PythonBuildpack:
    """slugbuild's built-in Python stages, as one buildpack. They run at most once a
    build: listed again (``first``: the earlier listing), it only warns."""

    def __init__(self, shown: str = "python", spec: str = "python",
                 runtime_options: RuntimeOptions | None = None,
                 first: PythonBuildpack | None = None) -> None:
        self.shown = shown
        self.spec = spec
        self.runtime_options = runtime_options
        self.first = first
        self.analysis: Analysis | None = None
        self.result: PythonBuild | None = None

    def analyse(self, build: BuildContext, turn: BuildpackTurn) -> None:
        """All project analysis: detect, package manager, Python version and runtime,
        requirements files. Before any buildpack runs when this one is first (nothing
        can change the app before it), else at its turn, with the files the earlier
        buildpacks wrote."""
        if self.first is not None or self.analysis is not None:
            return
        if not turn.listed:
            # Alone, the Python stages check the staged app before any other work.
            warn_node_assets(build, turn)
        info = detect_python(build)
        with build.timer.stage("resolve_runtime"), build.naming_app_dir():
            request, resolution = choose_runtime(
                build.build_dir, build.cache, build.platform,
                self.runtime_options or RuntimeOptions.from_env(), build.reporter,
                build.app_dir)
        dependencies = analyse_dependencies(build, info, resolution.offer)
        self.analysis = Analysis(info, request, resolution, dependencies)
        if turn.listed:
            warn_node_assets(build, turn)

    def run(self, build: BuildContext, turn: BuildpackTurn) -> BuildpackRun | None:
        """The stages, with the earlier buildpacks' exports and the Aptfile's
        variables in their tools' environment."""
        if self.first is not None:
            build.reporter.warn(f"{self.shown} is listed twice; the Python stages ran once.")
            return None
        self.analyse(build, turn)
        assert self.analysis is not None
        exports = {**turn.system_env, **exported_variables(
            turn.exports, build.seal.step("the export files"))}
        self.result = python_stages(build, self.analysis, exports)
        if turn.after:
            build.materialise()  # later buildpacks run the slug's Python
        if not turn.listed:
            return BuildpackRun(None)
        turn.exports.append(self.export_file(build))
        return BuildpackRun(self.slug_note(build))

    def slug_note(self, build: BuildContext) -> dict[str, str]:
        """slug.json fields for a name of Heroku's Python buildpack: which Heroku release
        the built-in stages follow and, when the name asked for one (``#v212``), that
        version; asking for one is warned about, as it is not what runs."""
        note = {"replaced_by": "slugbuild built-in Python stages",
                "follows": f"heroku-buildpack-python {HEROKU_PYTHON_FOLLOWED}"}
        _, _, wanted = self.spec.partition("#")
        if wanted and not _GIT_REF.match(wanted):
            wanted = "(not a git ref)"
        if wanted:
            note["requested_version"] = wanted
            build.reporter.warn(
                f"{self.shown} asks for Heroku's Python buildpack at {wanted}: slugbuild's "
                f"built-in Python stages replace it, whatever the version, and follow "
                f"Heroku's Python buildpack {HEROKU_PYTHON_FOLLOWED} (default Python "
                f"version, setuptools baseline, installers); what {wanted} did differently "
                f"does not apply.")
        return {"buildpack": self.shown, "description": BUILDPACK_DESCRIPTION, **note}

    def export_file(self, build: BuildContext) -> Path:
        """An ``export`` file putting the slug's Python first on PATH for later buildpacks."""
        export = build.scratch / "python-export"
        home = build.build_dir / PYTHON_HOME
        export.write_text(
            f'export PATH="{home}/bin:$PATH"\n'
            f'export LD_LIBRARY_PATH="{home}/lib${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"\n'
        )
        return export


def layer_views_wanted() -> bool:
    """SLUGBUILD_LAYER_VIEWS=0 places every cached layer's files, as before views."""
    return env_flag("SLUGBUILD_LAYER_VIEWS", unset=True, unknown=True, empty=False)


def warn_node_assets(build: BuildContext, turn: BuildpackTurn) -> None:
    """Before the Python stages: warn when package.json builds assets no Node.js step
    makes. Buildpacks that ran are known by spec and detected name, later ones by spec."""
    warning = node_assets_warning(
        build.build_dir, [(d["buildpack"], d["description"]) for d in turn.before],
        [(name,) for name in turn.after])
    if warning:
        build.reporter.warn(warning)


def detect_python(build: BuildContext) -> AppInfo:
    """Detect on the staged tree; a package manager file .slugignore left out is
    named as such (not as missing)."""
    with build.timer.stage("detect"), build.naming_app_dir():
        try:
            info = detect(build.build_dir)
            require_package_manager(info)
        except SlugbuildError:
            check_not_ignored(build.app_dir, sorted(
                package_manager_files(build.app_dir).values()))
            raise
        companions = [name for name in MANAGER_COMPANIONS.get(info.package_manager or "", ())
                      if (build.app_dir / name).is_file()]
        check_not_ignored(build.app_dir, companions)
        check_procfile_name(build.build_dir)  # fail before the long stages, not after them
    build.reporter.step("Python app detected" + (" (Django)" if info.is_django else ""))
    return info


def python_stages(build: BuildContext, analysis: Analysis,
                  exports: Mapping[str, str]) -> PythonBuild:
    """Runtime layer, pre_compile, dependency layer, NLTK data, collectstatic,
    post_compile, profile.d. ``exports`` (earlier buildpacks' and the Aptfile's
    variables) are in the environment of the hooks, the installer and
    collectstatic; not in the runtime layer's, which is cached for every app."""
    timer, reporter, build_dir = build.timer, build.reporter, build.build_dir
    info, runtime = analysis.info, analysis.resolution.offer
    if runtime.host_prefix is not None:
        build.host_paths.append(str(runtime.host_prefix))
    lock_file = info.lock_file or "requirements.txt"
    # Part-only as it may be (pulled from a cache registry): shown by a view, its tree
    # written only when a step needs it (BuildContext.tree_of).
    cached_runtime = cached_runtime_layer(build.cache, runtime, build.platform, reporter,
                                          lazy=True)
    # Layers shown by a view until a step needs their files (layer_view.py): only when
    # nothing before the install (a pre_compile hook, an earlier buildpack) writes there,
    # and while this build holds the link lock (no other build's step can then be
    # writing into the cached files the view shows).
    build.use_views = (analysis.dependencies.own_tree and not build.copy_layers
                       and layer_views_wanted())
    with DependencyStage(build, analysis.dependencies, runtime, cached_runtime,
                         exports) as dependency_stage:
        with timer.stage("runtime_layer"):
            runtime_layer = place_runtime_layer(build, runtime, cached_runtime)
            dependency_stage.runtime_placed(runtime_layer)
        python = build_dir / PYTHON_HOME / "bin" / runtime.python_name

        with timer.stage("pre_compile"):
            run_hook(PRE_COMPILE, build_dir, python, build.config_vars, reporter,
                     runtime.version, lock_file, exports,
                     build.seal.step(f"bin/{PRE_COMPILE}"))
            # Before slugbuild writes into the build directory again, unsealed: a link
            # the hook left there could lead its writes into the cache.
            refuse_links_leaving_slug(build_dir, build.view_links())

        with timer.stage("dependency_layer"):
            deps = dependency_stage.result()

    with timer.stage("nltk_data"):
        if has_package(deps.packages, "nltk"):
            build.materialise()  # its data goes inside the runtime's prefix
        nltk_layer = provide_nltk_data(build_dir, has_package(deps.packages, "nltk"),
                                       build.config_vars, build.cache, reporter)
        if nltk_layer is not None:
            build.cache.restore(nltk_layer, build_dir / NLTK_DATA_DIR)
            build.place_layer(nltk_layer, NLTK_DATA_DIR)
            write_nltk_profile(build_dir)

    if build.size_cap.enforce and build.size_cap.limit:
        with timer.stage("layers_size"):
            check_layers_size(build)

    with timer.stage("collectstatic"):
        before = set(os.listdir(build_dir))
        reuse = StaticReuse(build_dir, build.scratch, build.cache, reporter, (
            [(entry.mount, entry.layer.manifest["key"]) for entry in build.placed_layers]
            if analysis.dependencies.own_tree else None),
            on_linked=None if build.copy_layers else build.release_links_at_close(build_dir))
        with build.step_layers("collectstatic") as layers:
            ran = run_collectstatic(build_dir, info.manage_py,
                                    has_package(deps.packages, "django"), python,
                                    build.config_vars, reporter, runtime.version,
                                    lock_file, exports, reuse, layers)
        if ran:
            build.static_dirs = sorted(set(os.listdir(build_dir)) - before)

    with timer.stage("post_compile"), build.step_layers("bin/post_compile") as layers:
        run_hook(POST_COMPILE, build_dir, python, build.config_vars, reporter,
                 runtime.version, lock_file, exports, layers)
    # As after pre_compile: .profile.d/python.sh linked to a store's entry (a passed
    # import check of another app) was written there by write_profile.
    refuse_links_leaving_slug(build_dir, build.view_links())

    with timer.stage("profile_d"):
        write_profile(build_dir)

    request, resolution = analysis.request, analysis.resolution
    runtime_info = {
        "implementation": "cpython",
        "requested": request.requested,
        "resolved": runtime.version,
        "source_file": request.source_file,
        "source": runtime.source_name,
        "platform": build.platform.key,
        **runtime.metadata,
        **resolution.record(),
    }
    sources = indexes.app_sources(build_dir, info.package_manager or "", lock_file,
                                  build.config_vars)
    return PythonBuild(info, request, runtime_info, deps, sources)


def place_runtime_layer(build: BuildContext, runtime: RuntimeOffer,
                        cached: Layer | None) -> Layer:
    """The runtime layer (``cached``, or made now) placed at .heroku/python. The step
    is announced when it starts: a runtime made now takes a while."""
    if cached is None:  # the cache registry's, if it has it (cache_registry.py)
        cached = pull_runtime_layer(build.cache, runtime, build.platform, build.reporter)
    published = f" (published in {runtime.short_origin})" \
        if runtime.source_name == PUBLISHED else ""
    build.reporter.step(f"Restoring Python {runtime.version} from cache{published}"
                        if cached is not None else f"Installing Python {runtime.version} "
                                                   f"(from {runtime.short_origin})")
    for attempt in range(RESTORE_ATTEMPTS):
        layer = None
        try:
            if cached is not None and attempt == 0:
                layer = cached
            else:
                layer, _ = ensure_runtime_layer(build.cache, runtime, build.platform,
                                                build.reporter)
            placed = build.show_layer(layer, PYTHON_HOME)
            break
        except LayerChanged as changed:
            build.layer_changed(layer, changed, attempt)  # raises after the last attempt
    assert layer is not None
    build.place_layer(layer, PYTHON_HOME, placed or Restored())
    return layer
