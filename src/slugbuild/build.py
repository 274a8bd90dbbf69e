"""The build pipeline: app directory in, slug tarball and slug.json out.

Stages run in a straight line, each in its own module:
stage sources (.slugignore) -> detect -> resolve runtime -> runtime layer -> pre_compile
hook -> dependency layer -> collectstatic -> post_compile hook -> profile.d ->
release metadata (Procfile, else inferred) -> pack.
The build happens in a scratch directory inside the cache; the slug and
slug.json are renamed into place only when every stage has succeeded.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import functools
import glob
import hashlib
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from packaging.utils import canonicalize_name

from . import errors, indexes, platform_info, redact, release, relocate, slug_size
from .app_base import choose_app_base, resolve_app_base
from .aptfile import APT_DIR, prepare_apt_layer
from .aptfile import build_env as apt_build_env
from .aptfile import write_profile_script as write_apt_profile
from .buildpack_runner import (
    BuildpackRef,
    ReleaseInfo,
    buildpacks_for,
    exported_variables,
    fetch,
    merge,
    run_buildpack,
    write_env_dir,
)
from .cache import Cache, Layer, LayerChanged, Restored, default_cache_dir
from .collectstatic import run_collectstatic
from .dependencies import (
    DependencyLayer,
    Prefetch,
    constraints_from_slug_json,
    excluded_requirements,
    has_package,
    link_dependency_layer,
    prepare_dependency_layer,
    read_host_paths,
    snapshot,
)
from .detect import AppInfo, detect, package_manager_files, require_package_manager
from .hooks import POST_COMPILE, PRE_COMPILE, run_hook
from .importcheck import check_process_commands, check_process_imports
from .inference import discover_process_types
from .installers import installer_for
from .log import Reporter
from .nltk_data import DATA_DIR as NLTK_DATA_DIR
from .nltk_data import provide_nltk_data, write_nltk_profile
from .node_assets import (
    NATIVE_NODE_NAMES,
    NODE_STEP_DESCRIPTION,
    is_heroku_nodejs,
    node_assets_warning,
    run_node_build,
)
from .pack import LAYOUTS, LayerPart, PackedSlug, pack_tree, prepare_layer_part
from .proc import (
    build_limits,
    build_timeout_from_env,
    buildpack_exports,
    check_deadline,
    clean_env,
    kill_running_tools,
)
from .procfile import check_procfile_name, hook_warnings, read_procfile
from .profile import write_profile
from .results import BuildResultDict
from .runtime import (
    Resolution,
    RuntimeOptions,
    cached_runtime_layer,
    choose_runtime,
    ensure_runtime_layer,
    interpreter_before_layer,
    runtime_manifest,
)
from .slug.archive import SlugLimits, link_problem
from .slug.boot_check import check_boot
from .slug.boot_check import timeout_of as boot_check_timeout
from .slug.metadata import metadata_path_for
from .stage import check_not_ignored, check_top_level_links, stage_sources
from .versions import PythonRequest

PathLike = Union[str, os.PathLike]
_PYTHON_HOME = ".heroku/python"  # where the runtime and packages go
_CONFIG_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# One NAME=value environment string may not exceed the kernel's MAX_ARG_STRLEN
# (32 pages); all of them share ARG_MAX (2 MiB) with the tools' arguments.
MAX_CONFIG_VAR_BYTES = 128 * 1024
MAX_CONFIG_TOTAL_BYTES = 1024 * 1024
# Config vars the installers read as index URLs (space-separated lists).
_INDEX_URL_VARS = frozenset({"PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "UV_INDEX_URL",
                             "UV_EXTRA_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX"})


@dataclass
class BuildResult:
    """What a successful build produced."""

    slug_path: Path
    metadata_path: Path
    sha256: str
    size: int
    process_types: dict[str, str]
    runtime: dict[str, Any]
    packages: list[dict[str, str]]
    metadata: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

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
        }


def load_config_vars(
    env: Mapping[str, str] | None = None, env_dir: PathLike | None = None
) -> dict[str, str]:
    """Build config vars: files of ``env_dir`` (Heroku's ENV_DIR), then ``env``.

    Every value is registered as a secret (``redact.register_secrets``), so no
    log line or error message shows it.
    """
    config: dict[str, str] = {}
    if env_dir is not None:
        directory = Path(env_dir)
        if not directory.is_dir():
            raise errors.ENV_DIR_MISSING.error(env_dir=directory)
        try:
            for path in sorted(directory.iterdir()):
                if path.is_file():
                    config[path.name] = path.read_text(errors="replace").rstrip("\n")
        except OSError as exc:
            raise errors.ENV_FILE_UNREADABLE.error(
                path=exc.filename or directory, reason=exc.strerror or exc) from None
    config.update(env or {})
    redact.register_secrets(config.values())
    total = 0
    for name, value in config.items():
        if not _CONFIG_VAR_NAME.match(name):
            raise errors.INVALID_CONFIG_VAR.error(value=name, problem="is not a valid name")
        if not isinstance(value, str):
            raise errors.INVALID_CONFIG_VAR.error(
                value=name, problem=f"has a {type(value).__name__} value, not a string")
        if "\0" in value:
            raise errors.INVALID_CONFIG_VAR.error(
                value=name, problem="has a value holding a NUL byte, which no process "
                                    "environment can carry")
        size = len(name) + len(value.encode("utf-8", "surrogateescape")) + 2
        total += size
        if size > MAX_CONFIG_VAR_BYTES:
            raise errors.INVALID_CONFIG_VAR.error(
                value=name, problem=f"has a value of {size:,} bytes; one variable may hold "
                                    f"at most {MAX_CONFIG_VAR_BYTES:,} (the kernel's limit "
                                    f"for one environment string)")
        if name in _INDEX_URL_VARS and not _valid_index_urls(value):
            raise errors.INVALID_CONFIG_VAR.error(
                value=name, problem="is not a list of valid index URLs (http, https or file; "
                                    "a password holding `/`, `@` or `:` must be "
                                    "percent-encoded, e.g. `%2F`)")
    if total > MAX_CONFIG_TOTAL_BYTES:
        raise errors.INVALID_CONFIG_VAR.error(
            value=f"{len(config)} config vars",
            problem=f"hold {total:,} bytes together; at most {MAX_CONFIG_TOTAL_BYTES:,} fit "
                    f"beside the build tools' own environment and arguments")
    return config


def _valid_index_urls(value: str) -> bool:
    """Whether every URL of an index config var parses (an installer would crash on it,
    quoting the piece it choked on: maybe a piece of a password)."""
    for item in value.split():
        url = item.split("=", 1)[1] if "=" in item.split("://", 1)[0] else item  # UV_INDEX
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            return False
        if parts.scheme not in ("http", "https", "file") or \
                (parts.scheme != "file" and not parts.hostname):
            return False
    return True


def parse_env_assignments(assignments: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings (as given to --env) as a dict."""
    result = {}
    for number, item in enumerate(assignments, start=1):
        if "=" not in item:
            # The text may be a secret pasted without its name: never echo it.
            redact.register_secrets([item])
            raise errors.INVALID_CONFIG_VAR.error(
                value=f"--env argument {number}",
                problem=f"({len(item)} characters, not shown) has no `=`")
        key, value = item.split("=", 1)
        result[key] = value
    redact.register_secrets(result.values())
    return result


def read_env_file(path: PathLike) -> dict[str, str]:
    """``KEY=VALUE`` lines of an env file (``export`` prefixes, quotes, comments allowed)."""
    try:
        if Path(path).is_char_device() or Path(path).is_block_device():  # /dev/zero
            raise OSError("a device, not a file")  # (a pipe, as from <(...), is fine)
        text = Path(path).read_text(errors="replace")
    except (OSError, ValueError) as exc:
        raise errors.ENV_FILE_UNREADABLE.error(
            path=path, reason=getattr(exc, "strerror", None) or exc) from exc
    values = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        if "=" not in line:
            redact.register_secrets([line])
            raise errors.INVALID_CONFIG_VAR.error(
                value=f"line {number} of {path}",
                problem=f"({len(line)} characters, not shown) has no `=`")
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    redact.register_secrets(values.values())
    return values


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, deadline: bool = True) -> Iterator[None]:
        if deadline:
            check_deadline(f"the {name} stage")  # stages that run no tool stop here
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - start, 3)


@dataclass
class _PythonBuild:
    """What the built-in Python stages produced."""

    info: AppInfo
    request: PythonRequest
    runtime_info: dict[str, Any]
    deps: DependencyLayer
    # Where packages come from (indexes.app_sources): slug.json's record, and
    # each package's index where it is known ("*": every package's).
    sources: tuple[dict, dict[str, str]] = ({}, {})


@dataclass
class _Build:
    """Everything the stages share; one per compile_app call."""

    app_dir: Path
    build_dir: Path
    scratch: Path
    cache: Cache
    platform: platform_info.Platform
    config_vars: dict[str, str]
    reporter: Reporter
    timer: _Timer
    layout: str = "herokuish"
    epoch: int | None = None  # source_date_epoch as given to compile_app
    constraints: str | None = None  # pins from an earlier slug.json (--constraints-from)
    # Whether layers are copied into build_dir (another build holds the cache's
    # link lock) rather than hard-linked (see cache.Cache.exclusive_links).
    copy: bool = False
    # Cached layers placed into build_dir, with where (relative to it) and the
    # build's own copies of their files (None: hard links).
    restored: list[tuple[Layer, str, Restored]] = field(default_factory=list)
    # The Aptfile's packages unpacked into .apt/ (name, version, architecture).
    system_packages: list[dict[str, str]] = field(default_factory=list)
    # Compresses the restored layers' slug parts (and removes scratch) while the
    # build goes on; shut down before the layers are checked.
    background: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1))
    # Host paths the dependency layer's files name (found when it was made), by
    # layer path: reported by every build that uses it.
    layer_leaks: dict[Path, list[tuple[Path, str]]] = field(default_factory=dict)
    # Other paths of this machine no file may name: the local prefix the runtime
    # was copied from.
    host_paths: list[str] = field(default_factory=list)
    # The compressed slug size allowed (slug_size.size_limit).
    size_cap: slug_size.SizeLimit = field(
        default_factory=lambda: slug_size.SizeLimit(slug_size.HEROKU_SLUG_LIMIT, False, ""))
    # Top-level directories collectstatic created (its output, in the size breakdown).
    static_dirs: list[str] = field(default_factory=list)
    # Compressed sizes of the restored layers' slug parts, as they are prepared.
    part_sizes: list[Future] = field(default_factory=list)

    @property
    def leak_needles(self) -> list[str]:
        """What no file of the slug may name: this build's directories, the cache
        (installer caches, sdist builds) and the runtime's local prefix."""
        return [str(self.build_dir), str(self.scratch), str(self.cache.root),
                *self.host_paths]

    def use_layer(self, layer: Layer, mount: str, host_paths: bool = False,
                  restored: Restored | None = None) -> None:
        """Note a layer placed at ``mount``; start compressing its slug part. With
        ``host_paths``, the layer kept which of its files name a path of the machine
        that made it (dependencies.write_host_paths): they are reported.
        ``restored``: the build's own copies of its files (None: hard links)."""
        restored = restored or Restored()
        self.restored.append((layer, mount, restored))
        part = _layer_part(self.cache, layer, mount, restored)
        self.part_sizes.append(
            self.background.submit(prepare_layer_part, part, self.layout, self.epoch))
        if host_paths:
            self.layer_leaks[layer.path] = read_host_paths(layer)


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
    buildpacks: Sequence[str] | None = None,
    constraints_from: PathLike | None = None,
    boot_check: bool | float = False,
    timeout: float | None = None,
    app_base: str | None = None,
    node_build: bool = False,
    max_slug_size: int | str | None = None,
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
    """
    reporter = reporter or Reporter()
    timer = _Timer()
    started = time.perf_counter()
    app_dir = Path(app_dir).absolute()
    slug_path = Path(output if output is not None else "slug.tgz").absolute()
    json_path = metadata_path_for(slug_path)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}")
    if not app_dir.is_dir():
        raise errors.APP_DIR_MISSING.error(app_dir=app_dir)
    check_output_paths(slug_path, json_path)
    size_cap = slug_size.size_limit(max_slug_size, layout)
    limit = build_timeout_from_env(timeout)
    config_vars = load_config_vars(env, env_dir)
    chosen_base = choose_app_base(app_base, config_vars)
    repo_root = None
    if chosen_base is not None:
        repo_root, app_dir = app_dir, resolve_app_base(app_dir, *chosen_base)
        reporter.step(f"Using the app base {chosen_base[0].strip()} (from {chosen_base[1]}): "
                      f"only its content is built into the slug")
    boot_timeout = boot_check_timeout(boot_check)
    check_top_level_links(app_dir)
    refs = buildpacks_for(app_dir, list(buildpacks) if buildpacks else None,
                          repo_root=repo_root)
    if node_build:
        # The built-in step stands in for Heroku's Node.js buildpack where one is listed.
        refs = [BuildpackRef("slugbuild:node", ref.base) if is_heroku_nodejs(ref.spec)
                else ref for ref in refs]
        if not any(ref.spec in NATIVE_NODE_NAMES for ref in refs):
            refs = [BuildpackRef("slugbuild:node"), *(refs or [BuildpackRef("python")])]
    constraints = (constraints_from_slug_json(Path(constraints_from))
                   if constraints_from is not None else None)
    platform = platform_info.current()
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if app_dir.resolve().is_relative_to(cache_root.resolve()):
        raise errors.CACHE_DIR_UNUSABLE.error(
            path=cache_root, reason="it is the app directory, or holds it; give the cache a "
                                    "directory of its own (inside the app is fine)")
    cache = Cache(cache_root)

    scratch = cache.scratch_dir("build")
    build = _Build(app_dir, scratch / "app", scratch, cache, platform, config_vars,
                   reporter, timer, layout, source_date_epoch, constraints,
                   size_cap=size_cap)
    with build_limits(limit):
        packed, metadata, process_types, python_build = _compile_staged(
            build, refs, runtime_options, slug_path, json_path, boot_timeout)
    timer.timings["total"] = round(time.perf_counter() - started, 3)
    reporter.step(f"Slug written to {slug_path} ({_human_size(packed.size)}, "
                  f"sha256 {packed.sha256[:12]}…)")
    return BuildResult(
        slug_path=slug_path, metadata_path=json_path, sha256=packed.sha256, size=packed.size,
        process_types=process_types,
        runtime=python_build.runtime_info if python_build else {},
        packages=_package_list(python_build),
        metadata=metadata, timings=timer.timings, log=list(reporter.lines),
    )


def _compile_staged(build: _Build, refs: list[BuildpackRef],
                    runtime_options: RuntimeOptions | None, slug_path: Path, json_path: Path,
                    boot_timeout: float | None = None,
                    ) -> tuple[PackedSlug, dict[str, Any], dict[str, str], _PythonBuild | None]:
    """Every stage from staging to pack, under the build's limits (``compile_app``);
    the scratch directory is removed on any way out."""
    app_dir, scratch, cache, platform = build.app_dir, build.scratch, build.cache, build.platform
    timer, reporter, config_vars = build.timer, build.reporter, build.config_vars
    layout, source_date_epoch = build.layout, build.epoch
    # Held until the slug is written: while this build may hard-link cached files,
    # no other build does (they copy), so no build step elsewhere can write them.
    links = contextlib.ExitStack()
    try:
        build.copy = not links.enter_context(cache.exclusive_links())
        # As on Heroku, .slugignore is applied first: detection, the version
        # files and every later stage see the app without the ignored files.
        with timer.stage("stage_sources"):
            staged = stage_sources(app_dir, build.build_dir, leave_out=[
                cache.root.resolve(), *(path.parent.resolve() / path.name
                                        for path in (slug_path, json_path))])
        if staged.ignored:
            reporter.step(f"Left out {len(staged.ignored)} path(s) listed in .slugignore")
        if staged.build_files:
            reporter.detail("Left out the build's own files found in the app: "
                            + ", ".join(staged.build_files[:5]))
        apt_env = _apt_stage(build)

        python_build: _PythonBuild | None = None
        declared: list[ReleaseInfo] = []
        descriptions: list[dict[str, str]] = []
        if not refs:
            # Alone, the Python stages check the staged app before any other work.
            # After other buildpacks they check it at their turn, with the files
            # those buildpacks wrote.
            _warn_node_assets(build, refs, 0, [])
            with buildpack_exports(apt_env):
                info = _detect_python(build)
                resolved = _resolve_staged_runtime(build, runtime_options)
                python_build = _python_stages(build, info, *resolved)
        else:
            env_dir_path = write_env_dir(scratch / "env", config_vars)
            exports: list[Path] = []
            for position, ref in enumerate(refs):
                if ref.spec in NATIVE_NODE_NAMES:
                    with timer.stage("node_build"), \
                            buildpack_exports(exported_variables(exports)):
                        run_node_build(build.build_dir, config_vars, cache.root / "npm",
                                       reporter, cache, offline=(
                                           runtime_options or RuntimeOptions.from_env()
                                       ).offline)
                    descriptions.append({"buildpack": ref.shown,
                                         "description": NODE_STEP_DESCRIPTION})
                    continue
                if ref.native:
                    if python_build is not None:
                        reporter.warn(f"{ref.shown} is listed twice; the Python stages ran "
                                      f"once.")
                        continue
                    with buildpack_exports({**apt_env, **exported_variables(exports)}):
                        info = _detect_python(build)
                        resolved = _resolve_staged_runtime(build, runtime_options)
                        _warn_node_assets(build, refs, position, descriptions)
                        python_build = _python_stages(build, info, *resolved)
                    exports.append(_python_export(scratch, build.build_dir))
                    descriptions.append({"buildpack": ref.shown,
                                         "description": release.BUILDPACK_DESCRIPTION,
                                         **_native_python_note(ref, reporter)})
                    continue
                with timer.stage(f"buildpack:{ref.shown}"):
                    directory = fetch(ref, scratch / "buildpacks" / str(position))
                    outcome = run_buildpack(
                        ref, directory, build_dir=build.build_dir,
                        cache_dir=_buildpack_cache(cache, ref.cache_name, app_dir),
                        env_dir=env_dir_path, config_vars=config_vars,
                        stack=platform.stack, exports=exports, reporter=reporter)
                declared.append(outcome.release)
                descriptions.append({"buildpack": ref.shown, "description": outcome.name})
        with timer.stage("check_layers"):
            _remove_stray_bytecode(build.build_dir)
            refuse_links_leaving_slug(build.build_dir)
            # Parts still being compressed must be finished (and kept) before the
            # check below, which discards a changed layer together with its parts.
            with timer.stage("compress_layers_wait"):
                build.background.shutdown(wait=True)
            linked, intact, leaks = _check_layers(build)

        with timer.stage("release_metadata"):
            process_types, inferred, merged = _process_types(build, python_build, declared)
            if python_build is not None:
                _check_entry_points(build, python_build, process_types)
            addons = [*merged.addons, *(release.python_addons(build.build_dir)
                                        if python_build is not None else [])]
            addons = list(dict.fromkeys(addons))
            release.write_release_files(build.build_dir, process_types, merged.config_vars,
                                        addons)
            _check_release_readable(build.build_dir)
            leaks += relocate.find_references(build.build_dir, build.leak_needles,
                                              frozenset(linked))
            if leaks:
                listed = ", ".join(sorted({str(p.relative_to(build.build_dir))
                                           for p, _ in leaks})[:5])
                reporter.warn(f"{len(leaks)} file(s) name the build directory or another "
                              f"path of this machine (slugbuild's cache, where packages "
                              f"are built from source; the Python installation the "
                              f"runtime or packages came from) and may not work once "
                              f"unpacked elsewhere: {listed}")

        with timer.stage("pack"):
            reporter.step("Compressing...")

            def describe(packed: PackedSlug) -> dict[str, Any]:
                return _with_system_packages(build, release.slug_metadata(
                    process_types=process_types,
                    runtime=python_build.runtime_info if python_build else None,
                    package_manager=_package_manager(python_build),
                    packages=_package_list(python_build),
                    platform=platform.as_dict(),
                    checksum=packed.sha256,
                    size=packed.size,
                    layout=layout,
                    framework=list(python_build.info.frameworks) if python_build else [],
                    inference=inferred.as_dict() if inferred else None,
                    buildpacks=descriptions,
                    config_vars=merged.config_vars,
                    addons=addons,
                ))

            def verify(packed_slug: Path) -> None:
                with timer.stage("boot_check"):
                    reporter.step("Checking that the slug boots (web process, "
                                  f"{boot_timeout:g} s at most)...")
                    booted = check_boot(packed_slug, config_vars=config_vars,
                                        timeout=boot_timeout, workdir=scratch / "boot-check",
                                        reported_as=slug_path)
                    reporter.detail(f"web answered `{booted.status_line}` after "
                                    f"{booted.seconds:.1f} s")

            def measure(packed_slug: Path, packed: PackedSlug) -> dict[str, Any]:
                with timer.stage("slug_size"):
                    return slug_size.report(packed_slug, layout, build.size_cap, reporter,
                                            tuple(build.static_dirs), parts=packed.parts)

            packed, metadata = _write_outputs(build.build_dir, slug_path, json_path, layout,
                                              source_date_epoch, describe, intact,
                                              verify if boot_timeout is not None else None,
                                              measure)
            reporter.detail(f"Done: {_human_size(packed.size)}")
    finally:
        with timer.stage("cleanup", deadline=False):
            build.background.shutdown(wait=True, cancel_futures=True)
            for layer, mount, restored in build.restored:  # while the link lock is held
                if restored.copies is None:
                    cache.release_links(layer, build.build_dir / mount)
            links.close()
            shutil.rmtree(scratch, ignore_errors=True)
            for layer, _, _ in build.restored:
                if not layer.published:  # installed for this build alone
                    shutil.rmtree(layer.path, ignore_errors=True)

    return packed, metadata, process_types, python_build


def _apt_stage(build: _Build) -> dict[str, str]:
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
        placed = build.cache.restore(layer, build.build_dir / APT_DIR, copy=build.copy)
        build.use_layer(layer, APT_DIR, restored=placed)
        build.system_packages = list(layer.manifest.get("inputs", {}).get("packages", []))
        write_apt_profile(build.build_dir)
        return apt_build_env(build.build_dir / APT_DIR, clean_env().get("PATH", os.defpath))


def _with_system_packages(build: _Build, metadata: dict[str, Any]) -> dict[str, Any]:
    """slug.json's ``system_packages``: what the Aptfile put into .apt/ (only with one)."""
    if build.system_packages:
        metadata["system_packages"] = build.system_packages
    return metadata


# The release of Heroku's Python buildpack whose behaviour the built-in stages follow
# (its source is what docs/ and the peer comparison refer to).
HEROKU_PYTHON_FOLLOWED = "v351"
_GIT_REF = re.compile(r"^[\w.+/-]{1,100}$")


def _native_python_note(ref: BuildpackRef, reporter: Reporter) -> dict[str, str]:
    """slug.json fields for a name of Heroku's Python buildpack: which Heroku release
    the built-in stages follow and, when the name asked for one (``#v212``), that
    version; asking for one is warned about, as it is not what runs."""
    note = {"replaced_by": "slugbuild built-in Python stages",
            "follows": f"heroku-buildpack-python {HEROKU_PYTHON_FOLLOWED}"}
    _, _, wanted = ref.spec.partition("#")
    if wanted and not _GIT_REF.match(wanted):
        wanted = "(not a git ref)"
    if wanted:
        note["requested_version"] = wanted
        reporter.warn(f"{ref.shown} asks for Heroku's Python buildpack at {wanted}: "
                      f"slugbuild's built-in Python stages replace it, whatever the version, "
                      f"and follow Heroku's Python buildpack {HEROKU_PYTHON_FOLLOWED} "
                      f"(default Python version, setuptools baseline, installers); what "
                      f"{wanted} did differently does not apply.")
    return note


def _detect_python(build: _Build) -> AppInfo:
    """Detect on the staged tree; a package manager file .slugignore left out is
    named as such (not as missing)."""
    with build.timer.stage("detect"), _naming_app_dir(build):
        try:
            info = detect(build.build_dir)
            require_package_manager(info)
        except errors.SlugbuildError:
            check_not_ignored(build.app_dir, sorted(
                package_manager_files(build.app_dir).values()))
            raise
        companions = [name for name in MANAGER_COMPANIONS.get(info.package_manager or "", ())
                      if (build.app_dir / name).is_file()]
        check_not_ignored(build.app_dir, companions)
        check_procfile_name(build.build_dir)  # fail before the long stages, not after them
    build.reporter.step("Python app detected" + (" (Django)" if info.is_django else ""))
    return info


# Files a package manager reads beside its lock file.
MANAGER_COMPANIONS = {"pipenv": ("Pipfile",), "poetry": ("pyproject.toml",),
                      "uv": ("pyproject.toml",)}


def _resolve_staged_runtime(build: _Build, options: RuntimeOptions | None
                            ) -> tuple[PythonRequest, Resolution]:
    with build.timer.stage("resolve_runtime"), _naming_app_dir(build):
        return _resolve_runtime(build.build_dir, build.cache, build.platform, options,
                                build.reporter, sticky_key=build.app_dir)


@contextmanager
def _naming_app_dir(build: _Build) -> Iterator[None]:
    """Errors about the staged tree name the user's app directory, not its copy."""
    try:
        yield
    except errors.SlugbuildError as error:
        staged, shown = str(build.build_dir), str(build.app_dir)
        texts = (error.title, error.found, error.action, error.output or "")
        if not any(staged in text for text in texts):
            raise
        raise error.replacing(staged, shown) from error


def check_output_paths(slug_path: Path, json_path: Path) -> None:
    """Refuse, before any work, outputs that could not be written at the end."""
    for path in (slug_path, json_path):
        if path.is_dir():
            raise errors.OUTPUT_NOT_WRITABLE.error(
                path=path, reason="it is a directory; give a file name, e.g. -o "
                                  f"{path / 'slug.tgz'}")
        if path.is_symlink() or (path.exists() and not path.is_file()):
            # The output is renamed into place: a device (-o /dev/null), a fifo or a
            # link there would be replaced by a regular file, not written through.
            raise errors.OUTPUT_NOT_WRITABLE.error(
                path=path, reason="something other than a regular file is there (a "
                                  "device, a fifo or a symlink), which the output would "
                                  "replace; give the path of a regular file or a new one")
    if not slug_path.parent.is_dir():
        raise errors.OUTPUT_NOT_WRITABLE.error(
            path=slug_path, reason="its directory does not exist")
    try:  # access() says yes to root on a read-only filesystem: really write
        with tempfile.NamedTemporaryFile(dir=slug_path.parent, prefix=".slugbuild-probe-"):
            pass
    except OSError as exc:
        raise errors.OUTPUT_NOT_WRITABLE.error(
            path=slug_path, reason=f"its directory is not writable ({exc.strerror or exc})"
        ) from exc


def _check_release_readable(build_dir: Path) -> None:
    """The slug's Procfile and .release must be within what its readers (run,
    inspect, publish) read, or compile would write a slug its own tools refuse."""
    limit = SlugLimits.from_env().max_metadata_bytes
    for name in ("Procfile", ".release"):
        path = build_dir / name
        if path.is_file() and not path.is_symlink() and path.stat().st_size > limit:
            raise errors.PROCFILE_MALFORMED.error(
                line=1, text="",
                problem=f"{name} is {path.stat().st_size} bytes, more than the {limit} "
                        f"`slugbuild run`, `inspect` and `publish` read from a slug "
                        f"(SLUGBUILD_MAX_METADATA_SIZE); shorten its commands (a long "
                        f"one belongs in a script the line runs)")


def refuse_links_leaving_slug(build_dir: Path) -> None:
    """A symlink a build step left must stay inside the slug, as every slug reader
    (``run``, ``inspect``, ``publish``) requires: refused here, before packing."""
    pending = [("", str(build_dir))]
    while pending:
        prefix, directory = pending.pop()
        with os.scandir(directory) as listing:
            for entry in listing:
                if entry.is_symlink():
                    rel, target = prefix + entry.name, os.readlink(entry.path)
                    problem = link_problem(rel, target)
                    if problem is not None:
                        raise errors.SYMLINK_LEAVES_SLUG.error(variant=problem, path=rel,
                                                               target=target)
                elif entry.is_dir():
                    pending.append((prefix + entry.name + "/", entry.path))


class _Beside:
    """The dependency layer built in a thread beside the build's own stages.

    Its log is held back and shown when the build reaches the dependency
    stage, so it reads in the same order as a build without it. The thread
    runs in a copy of the caller's context (an earlier buildpack's exports).
    """

    def __init__(self, dependency_layer: functools.partial, reporter: Reporter,
                 timer: _Timer) -> None:
        self.dependency_layer = dependency_layer
        self.reporter = reporter
        self.timer = timer
        self.held = reporter.held_back()
        self.thread = ThreadPoolExecutor(max_workers=1)
        self.future: Future | None = None

    def start(self, python: Path, **arguments: Any) -> None:
        def build_layer() -> DependencyLayer:
            with self.timer.stage("dependency_layer_apart"):
                return self.dependency_layer(python=python, reporter=self.held, **arguments)

        self.future = self.thread.submit(contextvars.copy_context().run, build_layer)

    def result(self) -> DependencyLayer:
        """The layer (or the error that stopped it), after its log."""
        assert self.future is not None
        try:
            return self.future.result()
        finally:
            self.reporter.replay(self.held)

    def close(self) -> None:
        """Wait for it: a build that failed meanwhile must not leave it running."""
        self.thread.shutdown(wait=True)


def _python_stages(build: _Build, info: AppInfo, request: PythonRequest,
                   resolution: Resolution) -> _PythonBuild:
    """Runtime layer, pre_compile, dependency layer, collectstatic, post_compile, profile.d."""
    timer, reporter, build_dir = build.timer, build.reporter, build.build_dir
    runtime = resolution.offer
    if runtime.host_prefix is not None:
        build.host_paths.append(str(runtime.host_prefix))
    python_home = build_dir / _PYTHON_HOME
    installer = installer_for(info.package_manager, runtime.version)
    dependency_layer = functools.partial(
        prepare_dependency_layer, app_dir=build_dir, lock_file=info.lock_file,
        python_name=runtime.python_name, runtime=runtime_manifest(runtime, build.platform),
        installer=installer, config_vars=build.config_vars, cache=build.cache,
        source_dir=build.app_dir, constraints=build.constraints)
    # The dependency layer is built apart from the build directory (and, on a cold
    # build, while the runtime layer is prepared) unless a pre_compile hook or an
    # earlier buildpack may change what it installs onto: its requirements, or
    # the runtime's prefix.
    apart = not (build_dir / "bin" / PRE_COMPILE).is_file() and not python_home.exists()
    early = (interpreter_before_layer(build.cache, runtime, build.platform, reporter)
             if apart else None)
    beside = _Beside(dependency_layer, reporter, timer) if early is not None else None
    prefetch = None
    if beside is None and cached_runtime_layer(build.cache, runtime, build.platform,
                                                reporter) is None:
        # A cold build: let the installer download while the runtime is prepared.
        prefetch = Prefetch.start(
            app_dir=build_dir, lock_file=info.lock_file, package_manager=info.package_manager,
            config_vars=build.config_vars, cache=build.cache, reporter=reporter,
            python_version=runtime.version, scratch=build.scratch / "prefetch",
            constraints=build.constraints)
    try:
        if beside is not None:
            beside.start(python=early)
        with timer.stage("runtime_layer"):
            for attempt in range(_RESTORE_ATTEMPTS):
                runtime_layer = None
                try:
                    runtime_layer, from_cache = ensure_runtime_layer(build.cache, runtime,
                                                                     build.platform, reporter)
                    placed = build.cache.restore(runtime_layer, python_home, copy=build.copy)
                    break
                except LayerChanged as changed:
                    _restore_failed(build, runtime_layer, changed, attempt)
            reporter.step(f"{'Restoring' if from_cache else 'Installing'} Python "
                          f"{runtime.version}" + (" from cache" if from_cache else
                                                  f" (from {runtime.short_origin})"))
            if apart and beside is None:
                # A downloaded runtime: its layer's interpreter is the first to run.
                beside = _Beside(dependency_layer, reporter, timer)
                beside.start(python=runtime_layer.tree / "bin" / runtime.python_name,
                             prefetch=prefetch)
            build.use_layer(runtime_layer, _PYTHON_HOME, restored=placed)
            # Installing onto the prefix: what a hook changes there keys the layer.
            baseline = snapshot(python_home, runtime_layer) if beside is None else None
        python = python_home / "bin" / runtime.python_name

        with timer.stage("pre_compile"):
            run_hook(PRE_COMPILE, build_dir, python, build.config_vars, reporter,
                     runtime.version, info.lock_file or "requirements.txt")

        with timer.stage("dependency_layer"):
            for attempt in range(_RESTORE_ATTEMPTS):
                deps = None
                try:
                    if beside is not None and attempt == 0:
                        deps = beside.result()
                    elif beside is not None:
                        deps = dependency_layer(python=python, reporter=reporter,
                                                copy=build.copy)
                    else:
                        deps = dependency_layer(python=python, reporter=reporter,
                                                prefetch=prefetch if attempt == 0 else None,
                                                onto=python_home, prefix_snapshot=baseline,
                                                copy=build.copy)
                    deps, placed = link_dependency_layer(deps, python_home, runtime.python_name,
                                                         build.cache, reporter, info.lock_file,
                                                         copy=build.copy)
                    break
                except LayerChanged as changed:
                    _restore_failed(build, deps.layer if deps else None, changed, attempt)
            build.use_layer(deps.layer, _PYTHON_HOME, host_paths=True, restored=placed)
    except BaseException:
        kill_running_tools()  # an install beside must not keep a failed build waiting
        raise
    finally:
        if beside is not None:
            beside.close()
        if prefetch is not None:
            prefetch.stop()
            # Its throwaway install is thousands of files: removed while the build goes on.
            build.background.submit(shutil.rmtree, prefetch.scratch, ignore_errors=True)

    with timer.stage("nltk_data"):
        nltk_layer = provide_nltk_data(build_dir, has_package(deps.packages, "nltk"),
                                       build.config_vars, build.cache, reporter)
        if nltk_layer is not None:
            build.cache.restore(nltk_layer, build_dir / NLTK_DATA_DIR)
            build.use_layer(nltk_layer, NLTK_DATA_DIR)
            write_nltk_profile(build_dir)

    if build.size_cap.enforce and build.size_cap.limit:
        with timer.stage("layers_size"):
            _check_layers_size(build)

    with timer.stage("collectstatic"):
        before = set(os.listdir(build_dir))
        ran = run_collectstatic(build_dir, info.manage_py, has_package(deps.packages, "django"),
                          python, build.config_vars, reporter, runtime.version,
                          info.lock_file or "requirements.txt")
        if ran:
            build.static_dirs = sorted(set(os.listdir(build_dir)) - before)

    with timer.stage("post_compile"):
        run_hook(POST_COMPILE, build_dir, python, build.config_vars, reporter,
                 runtime.version, info.lock_file or "requirements.txt")

    with timer.stage("profile_d"):
        write_profile(build_dir)

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
    sources = indexes.app_sources(build_dir, info.package_manager, info.lock_file,
                                  build.config_vars)
    return _PythonBuild(info, request, runtime_info, deps, sources)


def _warn_node_assets(build: _Build, refs: Sequence[BuildpackRef], position: int,
                      descriptions: list[dict[str, str]]) -> None:
    """Before the Python stages: warn when package.json builds assets no Node.js step makes.

    Buildpacks that ran are known by spec and detected name, later ones by spec."""
    before = [(d["buildpack"], d["description"]) for d in descriptions]
    after = [(ref.shown,) for ref in refs[position + 1:]]
    warning = node_assets_warning(build.build_dir, before, after)
    if warning:
        build.reporter.warn(warning)


_RESTORE_ATTEMPTS = 3


def _buildpack_cache(cache: Cache, name: str, app_dir: Path) -> Path:
    """A buildpack's CACHE_DIR: per buildpack and per app directory, as Heroku keeps a
    build cache per app, so one app's build never reads what another's wrote."""
    app_key = hashlib.sha256(str(app_dir).encode()).hexdigest()[:16]
    return cache.root / "buildpacks" / name / app_key


def _restore_failed(build: _Build, layer: Layer | None, changed: LayerChanged,
                    attempt: int) -> None:
    """A layer's file changed while this build copied or hashed it: another build,
    holding the link lock, edited it in place (through uv's cache, for a layer just
    installed). Discard the layer (it is made again), or give up."""
    if layer is not None and layer.published:
        build.cache.discard(layer)
    name = layer.path.name if layer is not None else "being made"
    if attempt + 1 == _RESTORE_ATTEMPTS:
        raise errors.CACHE_LAYER_CHANGING.error(layer=name, path=str(changed),
                                                attempts=_RESTORE_ATTEMPTS)
    build.reporter.warn(f"A file of the cached layer {name} ({changed}) changed while this "
                        f"build read it (another build sharing the cache wrote into it in "
                        f"place); the layer was discarded and is made again.")


def _python_export(scratch: Path, build_dir: Path) -> Path:
    """An ``export`` file putting the slug's Python first on PATH for later buildpacks."""
    export = scratch / "python-export"
    home = build_dir / _PYTHON_HOME
    export.write_text(
        f'export PATH="{home}/bin:$PATH"\n'
        f'export LD_LIBRARY_PATH="{home}/lib${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"\n'
    )
    return export


def _process_types(build: _Build, python_build: _PythonBuild | None,
                   declared: list[ReleaseInfo]):
    """Buildpack defaults, then the Python app's inferred web process, then the Procfile."""
    inferred = None
    if python_build is not None:
        python_types, inferred = discover_process_types(
            build.build_dir, python_build.info,
            (p.name for p in python_build.deps.packages), build.reporter)
    else:
        build.reporter.step("Discovering process types")
        python_types = read_procfile(build.build_dir)
    merged = merge(declared)
    # The Procfile's types (or, without one, the inferred web process) win.
    process_types = {**merged.default_process_types, **python_types}
    for warning in [*check_procfile_name(build.build_dir), *hook_warnings(process_types)]:
        build.reporter.warn(warning)
    if declared and merged.default_process_types:
        build.reporter.detail("Buildpacks declare types -> "
                              + ", ".join(sorted(merged.default_process_types)))
    return process_types, inferred, merged


def _check_entry_points(build: _Build, python_build: _PythonBuild,
                        process_types: dict[str, str]) -> None:
    """Each process type's program is in the slug, and its entry module imports
    (``importcheck``)."""
    version = python_build.runtime_info["resolved"]
    python = build.build_dir / _PYTHON_HOME / "bin" / f"python{'.'.join(version.split('.')[:2])}"
    lock_file = python_build.info.lock_file or "requirements.txt"
    excluded = (excluded_requirements(build.build_dir, lock_file, version)
                if python_build.info.package_manager == "pip" else {})
    check_process_commands(build.build_dir, python, process_types, excluded, version,
                           lock_file)
    check_process_imports(build.build_dir, python, process_types, version, lock_file,
                          build.config_vars, build.reporter,
                          passed=(build.cache.root / "checks", python_build.deps.key))


def _package_manager(python_build: _PythonBuild | None) -> dict[str, Any] | None:
    if python_build is None:
        return None
    deps, info = python_build.deps, python_build.info
    return {
        "name": info.package_manager,
        "lock_file": info.lock_file,
        "lock_checksum": deps.lock_checksum,
        "files": list(deps.files),
        "installer": deps.installer,
        "installer_version": deps.installer_version,
        "baseline": list(deps.baseline),
        **_package_sources(python_build),
    }


def _package_list(python_build: _PythonBuild | None) -> list[dict[str, str]]:
    return [p.as_dict() for p in python_build.deps.packages] if python_build else []


def _package_sources(python_build: _PythonBuild) -> dict[str, Any]:
    """slug.json's ``package_manager.sources``: the indexes, and each package's
    index where it is certain (``packages``: normalised name -> redacted URL)."""
    record, origins = python_build.sources
    if not record:
        return {}
    known = {}
    for package in python_build.deps.packages:
        name = canonicalize_name(package.name)
        index = origins.get(name) or origins.get("*")
        if index:
            known[name] = index
    return {"sources": {**record, "packages": dict(sorted(known.items()))}}


def _resolve_runtime(app_dir: Path, cache: Cache, platform: platform_info.Platform,
                     options: RuntimeOptions | None, reporter: Reporter,
                     sticky_key: Path | None = None) -> tuple[PythonRequest, Resolution]:
    return choose_runtime(app_dir, cache, platform, options or RuntimeOptions.from_env(),
                          reporter, sticky_key or app_dir)


def _remove_stray_bytecode(build_dir: Path) -> None:
    """Drop __pycache__ written into the app by build steps (they embed timestamps)."""
    runtime = build_dir / ".heroku"
    for dirpath, dirnames, _ in os.walk(build_dir):
        if Path(dirpath) == runtime.parent:
            dirnames[:] = [d for d in dirnames if d != ".heroku"]
        if "__pycache__" in dirnames:
            shutil.rmtree(Path(dirpath) / "__pycache__")
            dirnames.remove("__pycache__")


def _check_layers(build: _Build) -> tuple[set[tuple[int, int]], list[LayerPart],
                                          list[tuple[Path, str]]]:
    """The inodes of the build's files that are still its layers' files (no need to
    scan them for mentions of the build directory again), the layers to pack as
    parts, and the mentions found in the layers this build made.

    Hard-linked (this build held the link lock): a layer one of whose files a
    build step changed in place is discarded (its files are then scanned with
    the rest of the build directory). Copied: nothing of the cache was exposed;
    each copy still as copied counts as the layer's file.
    """
    linked: set[tuple[int, int]] = set()
    intact: list[LayerPart] = []
    leaks: list[tuple[Path, str]] = []
    for layer, mount, restored in build.restored:
        mounted = build.build_dir / mount
        if restored.copies is not None:
            inodes: set[tuple[int, int]] | None = _intact_copies(mounted, restored)
        else:
            inodes = build.cache.check_restored(layer)
        if inodes is not None:
            intact.append(_layer_part(build.cache, layer, mount, restored))
            linked |= inodes
            leaks += _still_in_place(build.layer_leaks.get(layer.path, []), layer, mounted,
                                     restored)
        else:
            build.reporter.warn(f"A build step of this build changed a file of the cached "
                                f"layer {layer.path.name} in place; that layer was discarded "
                                f"and will be rebuilt next time.")
    return linked, intact, leaks


def _intact_copies(mounted: Path, restored: Restored) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of the build's copies of a layer's files still as copied."""
    assert restored.copies is not None
    found = set()
    for rel, stamp in restored.copies.items():
        try:
            st = os.lstat(mounted / rel)
        except OSError:
            continue
        if (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) == stamp:
            found.add((st.st_dev, st.st_ino))
    return found


def _still_in_place(found: list[tuple[Path, str]], layer: Layer, mounted: Path,
                    restored: Restored) -> list[tuple[Path, str]]:
    """Mentions found in a layer's files, as build-directory paths, for the files the
    build directory still holds as placed (one replaced since is scanned with the
    rest; symlinks always are)."""
    kept = []
    for path, needle in found:
        rel = path.relative_to(layer.tree)
        placed = mounted / rel
        try:
            if path.is_symlink():
                continue
            st = placed.lstat()
            if restored.copies is not None:
                same = restored.copies.get(rel.as_posix()) == (
                    st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            else:
                same = os.path.samestat(path.stat(), st)
            if same:
                kept.append((placed, needle))
        except OSError:
            continue
    return kept


def _check_layers_size(build: _Build) -> None:
    """Fail before collectstatic and packing when the runtime and dependency layers
    alone compress to more than the limit. A layer's compressed part is usually
    ready (kept in the cache, or made meanwhile); one still being made is waited
    for only when the layers could exceed the limit by their files' sizes
    (compression rarely expands data): a slug well within it is not slowed down."""
    cap = build.size_cap
    known = 0
    for future, (layer, _, _) in zip(build.part_sizes, build.restored):
        if future.done() and future.exception() is None:
            known += future.result()
        else:
            known += int(_tree_bytes(layer.tree) * 1.01) + 65536
    if known <= cap.limit:
        return
    compressed = 0
    for future in build.part_sizes:
        try:
            compressed += future.result() or 0
        except Exception:  # noqa: BLE001 - packing makes the part again; checked then
            return
    if compressed > cap.limit:
        raise errors.SLUG_TOO_LARGE.error(
            what="The Python runtime and installed packages alone are",
            size=slug_size.human(compressed), size_bytes=f"{compressed:,}",
            limit=slug_size.human(cap.limit), limit_bytes=f"{cap.limit:,}", source=cap.source,
            breakdown=" (checked before collectstatic and packing)", advice="")


def _tree_bytes(root: Path) -> int:
    """Bytes of the regular files below ``root``."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(directory, name))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total


def _layer_part(cache: Cache, layer: Layer, mount: str, restored: Restored) -> LayerPart:
    return LayerPart(mount, layer.tree, layer.path / "packed", copies=restored.copies,
                     symlinks=restored.symlinks,
                     unchanged=functools.partial(cache.still_pristine, layer))


def _write_outputs(build_dir: Path, slug_path: Path, json_path: Path, layout: str,
                   epoch: int | None, describe, layers: Sequence[LayerPart] = (),
                   verify: Callable[[Path], None] | None = None,
                   measure: Callable[[Path, PackedSlug], dict[str, Any]] | None = None,
                   ) -> tuple[PackedSlug, dict[str, Any]]:
    """Pack the slug and write slug.json under temporary names, then rename both.

    ``verify`` (the boot check) sees the packed slug before anything is renamed:
    when it raises, neither output is written. So does ``measure`` (the size
    breakdown and limit), whose result becomes slug.json's ``sizes``.

    The temporary files are locked (flock) while they are written, which is how
    a later build tells an abandoned one from one still being written, even by
    a build in another container (process ids say nothing there).
    """
    _remove_abandoned_partials(slug_path.parent, (slug_path.name, json_path.name))
    suffix = f".{secrets.token_hex(6)}.partial"
    partial_slug = slug_path.with_name(f".{slug_path.name}{suffix}")
    partial_json = json_path.with_name(f".{json_path.name}{suffix}")
    held: list[int] = []
    try:
        held += [_locked_new_file(partial_slug), _locked_new_file(partial_json)]
        with open(held[0], "wb", closefd=False) as handle:
            packed = pack_tree(build_dir, handle, layout=layout, mtime=epoch, layers=layers)
            handle.flush()
            os.fsync(handle.fileno())
        sizes = measure(partial_slug, packed) if measure is not None else None
        if verify is not None:
            verify(partial_slug)
        metadata = describe(packed)
        if sizes is not None:
            metadata["sizes"] = sizes
        release.write_json(partial_json, metadata)
        os.replace(partial_slug, slug_path)
        os.replace(partial_json, json_path)
    except OSError as exc:
        raise errors.OUTPUT_NOT_WRITABLE.error(
            path=slug_path, reason=exc.strerror or str(exc)
        ) from exc
    finally:
        for partial in (partial_slug, partial_json):
            if partial.exists():
                partial.unlink()
        for fd in held:
            os.close(fd)
    return packed, metadata


def _locked_new_file(path: Path) -> int:
    """Create ``path`` and hold an exclusive flock on it (a descriptor to close)."""
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # removed by a cleaner between the open and the lock: again


def _remove_abandoned_partials(directory: Path, names: tuple[str, ...]) -> None:
    """Delete ``.NAME.*.partial`` files that builds of these outputs left when killed:
    those nobody holds a lock on. Only for the ``names`` this build writes: other
    files are not ours to judge."""
    for name in names:
        for partial in directory.glob(f".{glob.escape(name)}.*.partial"):
            try:
                fd = os.open(partial, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.path.samestat(os.fstat(fd), os.stat(partial)):
                    partial.unlink()
            except OSError:
                pass  # being written (locked), or gone meanwhile
            finally:
                os.close(fd)


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.1f}{unit}" if unit != "B" else f"{size}B"
        value /= 1024
    return f"{size}B"
