"""The build pipeline: app directory in, slug tarball and slug.json out.

Stages run in a straight line, each in its own module:
detect -> resolve runtime -> stage sources -> runtime layer -> pre_compile
hook -> dependency layer -> collectstatic -> post_compile hook -> profile.d ->
release metadata (Procfile, else inferred) -> pack.
The build happens in a scratch directory inside the cache; the slug and
slug.json are renamed into place only when every stage has succeeded.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import glob
import os
import re
import shutil
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from . import errors, platform_info, redact, release, relocate
from .buildpack_runner import (
    ReleaseInfo,
    buildpacks_for,
    exported_variables,
    fetch,
    merge,
    run_buildpack,
    write_env_dir,
)
from .cache import Cache, Layer, default_cache_dir, process_alive
from .collectstatic import run_collectstatic
from .dependencies import (
    DependencyLayer,
    Prefetch,
    constraints_from_slug_json,
    has_package,
    installer_for,
    link_dependency_layer,
    prepare_dependency_layer,
)
from .detect import AppInfo, detect, require_package_manager
from .hooks import POST_COMPILE, PRE_COMPILE, run_hook
from .inference import discover_process_types
from .log import Reporter
from .pack import LAYOUTS, LayerPart, PackedSlug, pack_tree, prepare_layer_part
from .proc import buildpack_exports
from .procfile import read_procfile
from .profile import write_profile
from .runtimes import (
    Resolution,
    RuntimeOptions,
    cached_runtime_layer,
    ensure_runtime_layer,
    interpreter_before_layer,
    make_sources,
    resolve,
    runtime_manifest,
)
from .stage import check_not_ignored, check_top_level_links, stage_sources
from .versions import PythonRequest, check_supported, read_request

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

    def as_dict(self) -> dict[str, Any]:
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


def metadata_path_for(slug_path: Path) -> Path:
    """slug.tgz -> slug.json; anything else gets .json appended."""
    name = slug_path.name
    stem = name[: -len(".tgz")] if name.endswith(".tgz") else (
        name[: -len(".tar.gz")] if name.endswith(".tar.gz") else name)
    return slug_path.with_name(stem + ".json")


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
    def stage(self, name: str) -> Iterator[None]:
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
    # Cached layers hard-linked into build_dir, with where (relative to it).
    restored: list[tuple[Layer, str]] = field(default_factory=list)
    # Compresses the restored layers' slug parts (and removes scratch) while the
    # build goes on; shut down before the layers are checked.
    background: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1))
    # Build-directory mentions found in the layers this build made (only those:
    # a layer made elsewhere cannot name this build), by layer path.
    layer_leaks: dict[Path, Future] = field(default_factory=dict)

    @property
    def leak_needles(self) -> list[str]:
        """What no file of the slug may name: this build's directories."""
        return [str(self.build_dir), str(self.scratch)]

    def use_layer(self, layer: Layer, mount: str, made_here: bool = False,
                  also_named: Sequence[Path] = ()) -> None:
        """Note a layer linked in at ``mount``; start compressing its slug part (and,
        for a layer made by this build, scanning it for mentions of the build
        directory and of ``also_named``: where it was installed apart, and the
        prefix of the interpreter that installed it)."""
        self.restored.append((layer, mount))
        part = _layer_part(layer, mount)
        self.background.submit(prepare_layer_part, part, self.layout, self.epoch)
        if made_here:
            needles = self.leak_needles + [str(path) for path in also_named]
            self.layer_leaks[layer.path] = self.background.submit(
                relocate.find_references, layer.tree, needles)


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
    version that build installed.
    """
    reporter = reporter or Reporter()
    timer = _Timer()
    started = time.perf_counter()
    app_dir = Path(app_dir).absolute()
    slug_path = Path(output if output is not None else "slug.tgz").absolute()
    json_path = metadata_path_for(slug_path)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}")
    if not slug_path.parent.is_dir():
        raise errors.OUTPUT_NOT_WRITABLE.error(
            path=slug_path, reason="its directory does not exist"
        )
    if not app_dir.is_dir():
        raise errors.APP_DIR_MISSING.error(app_dir=app_dir)
    config_vars = load_config_vars(env, env_dir)
    check_top_level_links(app_dir)
    refs = buildpacks_for(app_dir, list(buildpacks) if buildpacks else None)
    constraints = (constraints_from_slug_json(Path(constraints_from))
                   if constraints_from is not None else None)
    platform = platform_info.current()

    # Alone, the Python stages check the app before any work is done. After
    # other buildpacks they check the build directory at their turn, which
    # may hold files those buildpacks wrote.
    info = resolved = None
    if not refs:
        info = _detect_python(app_dir, timer, reporter)
    cache = Cache(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    if info is not None:
        with timer.stage("resolve_runtime"):
            resolved = _resolve_runtime(app_dir, cache, platform, runtime_options, reporter)

    scratch = cache.scratch_dir("build")
    build = _Build(app_dir, scratch / "app", scratch, cache, platform, config_vars,
                   reporter, timer, layout, source_date_epoch, constraints)
    try:
        with timer.stage("stage_sources"):
            check_not_ignored(app_dir, [info.lock_file] if info and info.lock_file else [])
            skipped = stage_sources(app_dir, build.build_dir)
        if skipped:
            reporter.step(f"Left out {len(skipped)} path(s) listed in .slugignore")

        python_build: _PythonBuild | None = None
        declared: list[ReleaseInfo] = []
        descriptions: list[dict[str, str]] = []
        if not refs:
            python_build = _python_stages(build, info, *resolved)
        else:
            env_dir_path = write_env_dir(scratch / "env", config_vars)
            exports: list[Path] = []
            for position, ref in enumerate(refs):
                if ref.native:
                    if python_build is not None:
                        reporter.warn(f"{ref.shown} is listed twice; the Python stages ran "
                                      f"once.")
                        continue
                    with buildpack_exports(exported_variables(exports)):
                        info = _detect_python(build.build_dir, timer, reporter)
                        check_not_ignored(app_dir, [info.lock_file] if info.lock_file else [])
                        with timer.stage("resolve_runtime"):
                            resolved = _resolve_runtime(build.build_dir, cache, platform,
                                                        runtime_options, reporter)
                        python_build = _python_stages(build, info, *resolved)
                    exports.append(_python_export(scratch, build.build_dir))
                    descriptions.append({"buildpack": ref.shown,
                                         "description": release.BUILDPACK_DESCRIPTION})
                    continue
                with timer.stage(f"buildpack:{ref.shown}"):
                    directory = fetch(ref, scratch / "buildpacks" / str(position))
                    outcome = run_buildpack(
                        ref, directory, build_dir=build.build_dir,
                        cache_dir=cache.root / "buildpacks" / ref.cache_name,
                        env_dir=env_dir_path, config_vars=config_vars,
                        stack=platform.stack, exports=exports, reporter=reporter)
                declared.append(outcome.release)
                descriptions.append({"buildpack": ref.shown, "description": outcome.name})
        with timer.stage("check_layers"):
            _remove_stray_bytecode(build.build_dir)
            # Parts still being compressed must be finished (and kept) before the
            # check below, which discards a changed layer together with its parts.
            with timer.stage("compress_layers_wait"):
                build.background.shutdown(wait=True)
            linked, intact, leaks = _check_layers(build)

        with timer.stage("release_metadata"):
            process_types, inferred, merged = _process_types(build, python_build, declared)
            release.write_release_files(build.build_dir, process_types, merged.config_vars)
            leaks += relocate.find_references(build.build_dir, build.leak_needles,
                                              frozenset(linked))
            if leaks:
                listed = ", ".join(sorted({str(p.relative_to(build.build_dir))
                                           for p, _ in leaks})[:5])
                reporter.warn(f"{len(leaks)} file(s) name the build directory (or the "
                              f"interpreter that installed the packages) and may not "
                              f"work once unpacked elsewhere: {listed}")

        with timer.stage("pack"):
            reporter.step("Compressing...")

            def describe(packed: PackedSlug) -> dict[str, Any]:
                return release.slug_metadata(
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
                )

            packed, metadata = _write_outputs(build.build_dir, slug_path, json_path, layout,
                                              source_date_epoch, describe, intact)
            reporter.detail(f"Done: {_human_size(packed.size)}")
    finally:
        with timer.stage("cleanup"):
            build.background.shutdown(wait=True, cancel_futures=True)
            shutil.rmtree(scratch, ignore_errors=True)

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


def _detect_python(directory: Path, timer: _Timer, reporter: Reporter) -> AppInfo:
    with timer.stage("detect"):
        info = detect(directory)
        require_package_manager(info)
    reporter.step("Python app detected" + (" (Django)" if info.is_django else ""))
    return info


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
        self.python_prefix: Path | None = None

    def start(self, python: Path, **arguments: Any) -> None:
        # A package built from source may record the installing interpreter's
        # prefix (a C extension's RUNPATH, say): the leak scan looks for it.
        self.python_prefix = python.parent.parent

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
    python_home = build_dir / _PYTHON_HOME
    installer = installer_for(info.package_manager)
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
    early = interpreter_before_layer(build.cache, runtime, build.platform) if apart else None
    beside = _Beside(dependency_layer, reporter, timer) if early is not None else None
    prefetch = None
    if beside is None and cached_runtime_layer(build.cache, runtime, build.platform) is None:
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
            runtime_layer, from_cache = ensure_runtime_layer(build.cache, runtime,
                                                             build.platform, reporter)
            reporter.step(f"{'Restoring' if from_cache else 'Installing'} Python "
                          f"{runtime.version}" + (" from cache" if from_cache else
                                                  f" (from {runtime.short_origin})"))
            if apart and beside is None:
                # A downloaded runtime: its layer's interpreter is the first to run.
                beside = _Beside(dependency_layer, reporter, timer)
                beside.start(python=runtime_layer.tree / "bin" / runtime.python_name,
                             prefetch=prefetch)
            build.cache.restore(runtime_layer, python_home)
            build.use_layer(runtime_layer, _PYTHON_HOME)
        python = python_home / "bin" / runtime.python_name

        with timer.stage("pre_compile"):
            run_hook(PRE_COMPILE, build_dir, python, build.config_vars, reporter)

        with timer.stage("dependency_layer"):
            if beside is not None:
                deps = beside.result()
            else:
                deps = dependency_layer(python=python, reporter=reporter, prefetch=prefetch,
                                        onto=python_home)
            deps = link_dependency_layer(deps, python_home, runtime.python_name, build.cache,
                                         reporter, info.lock_file)
            apart_names = [deps.built_apart_at, beside.python_prefix] if beside else []
            build.use_layer(deps.layer, _PYTHON_HOME, made_here=not deps.restored,
                            also_named=[path for path in apart_names if path is not None])
    finally:
        if beside is not None:
            beside.close()
        if prefetch is not None:
            prefetch.stop()
            # Its throwaway install is thousands of files: removed while the build goes on.
            build.background.submit(shutil.rmtree, prefetch.scratch, ignore_errors=True)

    with timer.stage("collectstatic"):
        run_collectstatic(build_dir, info.manage_py, has_package(deps.packages, "django"),
                          python, build.config_vars, reporter)

    with timer.stage("post_compile"):
        run_hook(POST_COMPILE, build_dir, python, build.config_vars, reporter)

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
    }
    return _PythonBuild(info, request, runtime_info, deps)


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
    if declared and merged.default_process_types:
        build.reporter.detail("Buildpacks declare types -> "
                              + ", ".join(sorted(merged.default_process_types)))
    return process_types, inferred, merged


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
    }


def _package_list(python_build: _PythonBuild | None) -> list[dict[str, str]]:
    return [p.as_dict() for p in python_build.deps.packages] if python_build else []


def _resolve_runtime(app_dir: Path, cache: Cache, platform: platform_info.Platform,
                     options: RuntimeOptions | None,
                     reporter: Reporter) -> tuple[PythonRequest, Resolution]:
    request = read_request(app_dir)
    if request.source_file:
        reporter.step(f"Using Python {request.requested} {request.describe_source()}")
    else:
        reporter.step(f"No Python version was specified. Using the default: Python "
                      f"{request.requested}")
    for warning in request.warnings:
        reporter.warn(warning)
    check_supported(request)
    options = options or RuntimeOptions.from_env()
    resolution = resolve(request, make_sources(options, cache, platform))
    if resolution.newer_patch:
        reporter.warn(f"A Python security update is available: Python "
                      f"{resolution.newer_patch} (the app pins {request.requested}). "
                      f"Update {request.source_file or 'the version file'} to it.")
    return request, resolution


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
    """The inodes of the files the build links to in its layers (no need to scan
    them for mentions of the build directory again), the layers to pack as
    parts, and the mentions found in the layers this build made.

    A layer one of whose files a build step changed in place is discarded (its
    files are then scanned with the rest of the build directory).
    """
    linked: set[tuple[int, int]] = set()
    intact: list[LayerPart] = []
    leaks: list[tuple[Path, str]] = []
    for layer, mount in build.restored:
        inodes = build.cache.check_restored(layer)
        if inodes is not None:
            intact.append(_layer_part(layer, mount))
            scan = build.layer_leaks.get(layer.path)
            if scan is not None and scan.exception() is not None:
                continue  # not scanned: the release stage scans its files
            linked |= inodes
            if scan is not None:
                leaks += _still_in_place(scan.result(), layer, build.build_dir / mount)
        else:
            build.reporter.warn(f"A build step (of this build or of another sharing the "
                                f"cache) changed a file of the cached layer "
                                f"{layer.path.name} in place; that layer was discarded and "
                                f"will be rebuilt next time.")
    return linked, intact, leaks


def _still_in_place(found: list[tuple[Path, str]], layer: Layer, mounted: Path
                    ) -> list[tuple[Path, str]]:
    """Mentions found in a layer's files, as build-directory paths, for the files the
    build directory still links to (one replaced since is scanned with the rest;
    symlinks always are)."""
    kept = []
    for path, needle in found:
        placed = mounted / path.relative_to(layer.tree)
        try:
            if not path.is_symlink() and os.path.samestat(path.stat(), placed.lstat()):
                kept.append((placed, needle))
        except OSError:
            continue
    return kept


def _layer_part(layer: Layer, mount: str) -> LayerPart:
    return LayerPart(mount, layer.tree, layer.path / "packed")


def _write_outputs(build_dir: Path, slug_path: Path, json_path: Path, layout: str,
                   epoch: int | None, describe, layers: Sequence[LayerPart] = ()
                   ) -> tuple[PackedSlug, dict[str, Any]]:
    """Pack the slug and write slug.json under temporary names, then rename both."""
    _remove_abandoned_partials(slug_path.parent, (slug_path.name, json_path.name))
    suffix = f".{os.getpid()}.partial"
    partial_slug = slug_path.with_name(f".{slug_path.name}{suffix}")
    partial_json = json_path.with_name(f".{json_path.name}{suffix}")
    try:
        with open(partial_slug, "wb") as handle:
            packed = pack_tree(build_dir, handle, layout=layout, mtime=epoch, layers=layers)
            handle.flush()
            os.fsync(handle.fileno())
        metadata = describe(packed)
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
    return packed, metadata


def _remove_abandoned_partials(directory: Path, names: tuple[str, ...]) -> None:
    """Delete ``.NAME.PID.partial`` files that builds of these outputs left when killed.

    Only for the ``names`` this build writes: other files are not ours to judge.
    """
    for name in names:
        for partial in directory.glob(f".{glob.escape(name)}.*.partial"):
            pid = partial.name[len(name) + 2: -len(".partial")]
            if not pid.isdigit() or process_alive(int(pid)):
                continue
            with contextlib.suppress(OSError):
                partial.unlink()


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.1f}{unit}" if unit != "B" else f"{size}B"
        value /= 1024
    return f"{size}B"
