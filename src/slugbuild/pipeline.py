"""The build pipeline: app directory in, slug tarball and slug.json out.

Read top to bottom, ``compile_app`` is the whole build, one call per stage:
check the inputs, stage the sources (.slugignore), analyse the project (the
first buildpack's detect, version, package manager and requirements files: bad
input fails here), place the Aptfile's packages, run the buildpacks (the
built-in Python stages alone when none is named: runtime layer, pre_compile,
dependency layer, collectstatic, post_compile, profile.d), check the build
directory, decide the release metadata, write the output. Each stage lives in
its own module and owns its work, including any concurrency;
docs/architecture.md has the map. The build happens in a scratch directory
inside the cache; the output is put in place only when every stage has
succeeded.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from . import errors, platform_info, slug_size
from .app_base import apply_app_base
from .app_json import apply_app_json
from .aptfile import place_apt_layer
from .arguments import PathArg, as_path, buildpack_list, of_type, one_of, optional_path
from .buildpacks import analyse_up_front, choose_buildpacks, python_result, run_buildpacks
from .cache_registry import from_settings as cache_registry_from_settings
from .config_vars import load_config_vars
from .context import BuildContext, StageTimer, open_cache, viewed_tree
from .dependencies import constraints_from_slug_json
from .layer_checks import prepare_for_packing, recheck_if_materialised, warn_machine_paths
from .log import Reporter
from .oci.options import RegistryOptions
from .outputs import OutputTarget, SlugTarball, write_output
from .pack import LAYOUTS
from .proc import build_limits, build_timeout_from_env
from .release import decide_release, slug_json_writer, write_release
from .results import BuildResultDict, BuildRuntimeDict, PackageDict, SlugJsonDict
from .runtime import RuntimeOptions
from .stack_compat import STACK_RECORD, slug_requirements
from .stage import check_top_level_links, stage_sources

# The name this module used before arguments.PathArg; kept for importers.
PathLike = PathArg


@dataclass
class BuildResult:
    """What a successful build produced."""

    slug_path: Path
    metadata_path: Path
    sha256: str
    size: int
    process_types: dict[str, str]
    runtime: BuildRuntimeDict  # {} when only external buildpacks ran
    packages: list[PackageDict]
    metadata: SlugJsonDict  # the whole slug.json (docs/slug-json.md)
    timings: dict[str, float] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    sbom_path: Path | None = None  # the slug's CycloneDX SBOM (docs/sbom.md)
    # What went to and came from the cache registry (None: the build had none).
    cache_registry: dict[str, Any] | None = None

    def as_dict(self) -> BuildResultDict:
        return {
            "slug_path": str(self.slug_path),
            "metadata_path": str(self.metadata_path),
            "sha256": self.sha256,
            "size": self.size,
            "process_types": self.process_types,
            "runtime": self.runtime,
            "packages": self.packages,
            "timings": self.timings,
            "cache_registry": self.cache_registry,
        }


def _no_wait() -> None:
    """Nothing started in the background yet (see ``OutputTarget.prepare``)."""


@errors.user_errors
def compile_app(
    app_dir: PathLike,
    output: PathLike | None = None,
    *,
    cache_dir: PathLike | None = None,
    env: Mapping[str, str] | None = None,
    env_dir: PathLike | None = None,
    layout: str = "herokuish",
    source_date_epoch: int | None = None,
    reporter: Reporter | None = None,
    runtime_options: RuntimeOptions | None = None,
    buildpacks: Sequence[str | os.PathLike[str]] | str | None = None,
    constraints_from: PathLike | None = None,
    boot_check: bool | float = False,
    timeout: float | None = None,
    app_base: str | None = None,
    node_build: bool = False,
    max_slug_size: int | str | None = None,
    metadata_output: PathLike | None = None,
    sbom_output: PathLike | None = None,
    app_json_env: bool = False,
    cache_registry: str | None = None,
    cache_registry_readonly: bool | None = None,
    registry: RegistryOptions | None = None,
) -> BuildResult:
    """Compile the app at ``app_dir`` into a slug; raise SlugbuildError on bad input.

    ``output`` defaults to ``slug.tgz`` in the current directory; slug.json is
    written beside it. Config vars (``env``, ``env_dir``) reach the build steps
    but never the slug or its metadata. ``runtime_options`` say where the
    Python runtime may come from (default: local interpreters, then downloads).
    ``buildpacks`` (paths or git URLs, else the app's ``.buildpacks``) run
    Heroku-API buildpacks in order; ``python`` among them means the built-in
    Python stages, which run alone when no buildpack is named.
    ``constraints_from`` (an earlier slug.json) pins every package to the
    version that build installed. ``timeout`` (seconds; default
    SLUGBUILD_BUILD_TIMEOUT, else 15 minutes as on Heroku; 0 for none) stops
    the build, and every process it started, when it runs longer.
    ``boot_check`` (True, or a timeout in seconds) starts the packed slug's
    ``web`` process before the slug is put in place and fails the build,
    writing nothing, unless it answers HTTP (see boot_check.py).
    ``app_base`` (else the ``APP_BASE`` config var) names the subdirectory that
    holds the app, as Heroku's monorepo buildpack does: only its content is built
    and becomes the slug (see app_base.py).
    ``node_build`` runs the built-in Node step (npm ci and the package.json build
    script, node_modules left out) before the Python stages (see node_assets.py).
    ``max_slug_size`` (bytes, or a size such as ``500MB``; else
    SLUGBUILD_MAX_SLUG_SIZE) fails the build when the compressed slug is larger;
    by default Heroku's 500 MB, enforced for the heroku layout and a warning for
    herokuish (see slug_size.py).
    ``cache_registry`` (``docker://HOST[:PORT]/REPO``; else SLUGBUILD_CACHE_REGISTRY)
    shares runtime and dependency layers through an OCI registry: pulled on a
    local miss, the layers this build made pushed after it unless
    ``cache_registry_readonly`` (else SLUGBUILD_CACHE_REGISTRY_READONLY); a
    registry that fails only costs a warning (see cache_registry.py).
    ``registry`` (``oci.image.RegistryOptions``: user, password, insecure) gives
    it, and ``runtime_options.python_registry`` (runtimes published with
    ``slugbuild runtime publish``), the credentials images take; else the auth
    files and credential helpers.
    ``metadata_output`` writes slug.json there instead of beside the slug.
    ``sbom_output`` is where the slug's CycloneDX SBOM goes (default: beside
    the slug, ``slug.cdx.json``; see slug/sbom.py and docs/sbom.md).
    An app.json is read and checked; its scripts are recorded in slug.json, and
    with ``app_json_env`` its ``env`` is applied to the build's config vars as
    Heroku's app setup and review apps do (see app_json.py, docs/app-json.md).
    """
    reporter = reporter or Reporter()
    timer = StageTimer()
    started = time.perf_counter()
    # Every input is checked before any work.
    app_dir = as_path(app_dir, "compile_app", "app_dir").absolute()
    output_path = optional_path(output, "compile_app", "output") or Path("slug.tgz")
    layout = one_of(layout, LAYOUTS, "compile_app", "layout")
    cache_path = optional_path(cache_dir, "compile_app", "cache_dir")
    env_dir = optional_path(env_dir, "compile_app", "env_dir")
    constraints_path = optional_path(constraints_from, "compile_app", "constraints_from")
    buildpack_refs = buildpack_list(buildpacks, "compile_app", "buildpacks")
    _check_types(env, reporter, runtime_options, timeout, source_date_epoch, app_base,
                 max_slug_size, node_build)
    of_type(cache_registry, str, "compile_app", "cache_registry",
            "a registry reference such as 'docker://host:5000/cache'")
    of_type(cache_registry_readonly, bool, "compile_app", "cache_registry_readonly",
            "True or False")
    of_type(registry, RegistryOptions, "compile_app", "registry",
            "slugbuild.oci.image.RegistryOptions(user=..., password=...)")
    metadata_path = optional_path(metadata_output, "compile_app", "metadata_output")
    sbom_path = optional_path(sbom_output, "compile_app", "sbom_output")
    target = SlugTarball(output_path.absolute(), layout, source_date_epoch,
                         metadata_path.absolute() if metadata_path is not None else None,
                         sbom_path.absolute() if sbom_path is not None else None)
    if not app_dir.is_dir():
        raise errors.APP_DIR_MISSING.error(app_dir=app_dir)
    target.check()
    size_cap = slug_size.size_limit(max_slug_size, layout)
    limit = build_timeout_from_env(timeout)
    config_vars = load_config_vars(env, env_dir)
    app_dir, repo_root = apply_app_base(app_dir, app_base, config_vars, reporter)
    manifest, config_vars = apply_app_json(app_dir, config_vars, app_json_env, reporter)
    boot_timeout: float | None = None
    if boot_check is not None and boot_check is not False:
        # Loaded only for a boot check (the slug runner: sockets, processes).
        from .slug.boot_check import timeout_of as boot_check_timeout
        boot_timeout = boot_check_timeout(boot_check)
    check_top_level_links(app_dir)
    if registry is not None:  # the published runtimes' credentials too (one auth story)
        runtime_options = dataclasses.replace(runtime_options or RuntimeOptions.from_env(),
                                              registry=registry)
    chosen = choose_buildpacks(app_dir, buildpack_refs, repo_root, node_build, runtime_options)
    constraints = (constraints_from_slug_json(constraints_path)
                   if constraints_path is not None else None)
    cache = open_cache(cache_path, app_dir)
    cache.remote = remote = cache_registry_from_settings(
        cache_registry, cache_registry_readonly, platform_info.current().key, reporter,
        registry)

    scratch = cache.scratch_dir("build")
    build = BuildContext(app_dir, scratch / "app", scratch, cache, platform_info.current(),
                         config_vars, reporter, timer, layout, source_date_epoch,
                         constraints, size_cap=size_cap)
    # The log names the build directory as the app will see it at run time.
    reporter.show_path_as(build.build_dir, "/app")
    with build_limits(limit):
        sbom_ready: Callable[[], None] = _no_wait
        try:
            build.take_link_lock()
            _stage_app(build, target)
            analyse_up_front(build, chosen)
            system_env = place_apt_layer(build)
            runs = run_buildpacks(build, chosen, system_env)
            python = python_result(chosen)

            with timer.stage("check_layers"):
                checked = prepare_for_packing(build)

            with timer.stage("release_metadata"):
                release = decide_release(
                    build.build_dir, reporter, [r.release for r in runs if r.release],
                    python.discover_process_types(build) if python else None,
                    python.addons(build) if python else None)
                if python is not None:
                    # The SBOM's memo is made meanwhile (outputs.SlugTarball.prepare).
                    sbom_ready = target.prepare(build.build_dir, checked.intact,
                                                python.runtime_info)
                    python.check_entry_points(build, release.process_types)
                    checked = recheck_if_materialised(build, checked)
                write_release(build.build_dir, release)
                warn_machine_paths(build, checked)

            with timer.stage("stack_requirements"):
                requirements = slug_requirements(build.build_dir, [
                    (entry.mount, viewed_tree(build, entry.layer),
                     entry.layer.packed_parts / STACK_RECORD)
                    for entry in build.placed_layers if entry.placed.view])

            with timer.stage("pack"):
                reporter.step("Compressing...")
                describe = slug_json_writer(
                    release, python_fields=python.slug_fields() if python else None,
                    platform=build.platform.as_dict(), layout=layout,
                    buildpacks=[r.description for r in runs if r.description is not None],
                    system_packages=build.system_packages,
                    stack_requirements=requirements.as_dict(),
                    app_json=manifest.slug_fields() if manifest is not None else None)
                sbom_ready()
                with reporter.waiting("compressing"):  # a large slug takes a while
                    packed, metadata = write_output(build, target, checked.intact, describe,
                                                    boot_timeout)
                reporter.detail(f"Done: {slug_size.human(packed.size)}")
            if remote is not None:
                with timer.stage("cache_registry_push"):
                    remote.push_published(cache)
        finally:
            sbom_ready()  # its thread reads the build directory: done before it goes
            with timer.stage("cleanup", deadline=False):
                build.close()

    timer.timings["total"] = round(time.perf_counter() - started, 3)
    reporter.step(f"Slug written to {target.slug_path} ({slug_size.human(packed.size)}, "
                  f"sha256 {packed.sha256[:12]}…)")
    return BuildResult(
        slug_path=target.slug_path, metadata_path=target.metadata_path, sha256=packed.sha256,
        size=packed.size, process_types=release.process_types,
        runtime=cast(BuildRuntimeDict, python.runtime_info if python else {}),
        packages=cast(list[PackageDict], python.package_list() if python else []),
        metadata=cast(SlugJsonDict, metadata), timings=timer.timings,
        log=list(reporter.lines),
        sbom_path=target.sbom_path,
        cache_registry=remote.summary() if remote is not None else None,
    )


def _check_types(env: object, reporter: object, runtime_options: object, timeout: object,
                 source_date_epoch: object, app_base: object, max_slug_size: object,
                 node_build: object) -> None:
    """compile_app's other arguments are of the types it takes (invalid-argument)."""
    checks: list[tuple[object, type | tuple[type, ...], str, str]] = [
        (env, Mapping, "env", "a mapping of config var names to values"),
        (reporter, Reporter, "reporter", "a slugbuild.Reporter"),
        (runtime_options, RuntimeOptions, "runtime_options", "a slugbuild.RuntimeOptions"),
        (timeout, (int, float), "timeout", "seconds as an int or float (0: none)"),
        (source_date_epoch, int, "source_date_epoch", "seconds since 1970 as an int"),
        (app_base, str, "app_base", "a subdirectory of the app, as a str"),
        (max_slug_size, (int, str), "max_slug_size", "bytes as an int, or a size such as '500MB'"),
        (node_build, bool, "node_build", "True or False"),
    ]
    for value, types, name, expected in checks:
        of_type(value, types, "compile_app", name, expected)


def _stage_app(build: BuildContext, target: OutputTarget) -> None:
    """The app's files into the build directory. As on Heroku, .slugignore is applied
    first: detection, the version files and every later stage see the app without
    the ignored files (nor the cache or the outputs, when they are inside it)."""
    with build.timer.stage("stage_sources"):
        staged = stage_sources(build.app_dir, build.build_dir,
                               leave_out=[build.cache.root.resolve(), *target.leave_out])
    if staged.ignored:
        build.reporter.step(f"Left out {len(staged.ignored)} path(s) listed in .slugignore")
    if staged.build_files:
        build.reporter.detail("Left out the build's own files found in the app: "
                              + ", ".join(staged.build_files[:5]))
