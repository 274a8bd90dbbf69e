"""The build pipeline: app directory in, slug tarball and slug.json out.

Stages run in a straight line, each in its own module:
detect -> resolve runtime -> stage sources -> runtime layer -> dependency
layer -> collectstatic -> profile.d -> release metadata -> pack.
The build happens in a scratch directory inside the cache; the slug and
slug.json are renamed into place only when every stage has succeeded.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from . import errors, platform_info, release, relocate
from .cache import Cache, default_cache_dir
from .collectstatic import run_collectstatic
from .dependencies import (
    constraints_from_slug_json,
    has_package,
    install_dependencies,
    installer_for,
)
from .detect import detect, require_package_manager
from .log import Reporter
from .pack import LAYOUTS, PackedSlug, pack_tree
from .procfile import read_procfile
from .profile import write_profile
from .runtimes import LocalInterpreterSource, LocalRuntime, ensure_runtime_layer
from .stage import stage_sources
from .versions import check_supported, pick, read_request, sort_versions

PathLike = Union[str, os.PathLike]
_CONFIG_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
    """Build config vars: files of ``env_dir`` (Heroku's ENV_DIR), then ``env``."""
    config: dict[str, str] = {}
    if env_dir is not None:
        directory = Path(env_dir)
        if not directory.is_dir():
            raise errors.ENV_DIR_MISSING.error(env_dir=directory)
        for path in sorted(directory.iterdir()):
            if path.is_file():
                config[path.name] = path.read_text(errors="replace").rstrip("\n")
    config.update(env or {})
    for name in config:
        if not _CONFIG_VAR_NAME.match(name):
            raise errors.INVALID_CONFIG_VAR.error(value=name, problem="is not a valid name")
    return config


def parse_env_assignments(assignments: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings (as given to --env) as a dict."""
    result = {}
    for item in assignments:
        if "=" not in item:
            raise errors.INVALID_CONFIG_VAR.error(value=item, problem="has no `=`")
        key, value = item.split("=", 1)
        result[key] = value
    return result


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
    constraints_from: PathLike | None = None,
) -> BuildResult:
    """Compile the app at ``app_dir`` into a slug; raise SlugbuildError on bad input.

    ``output`` defaults to ``slug.tgz`` in the current directory; slug.json is
    written beside it. Config vars (``env``, ``env_dir``) reach the build steps
    but never the slug or its metadata. ``constraints_from`` (an earlier
    slug.json) pins every package to the version that build installed.
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
    config_vars = load_config_vars(env, env_dir)
    constraints = (constraints_from_slug_json(Path(constraints_from))
                   if constraints_from is not None else None)

    with timer.stage("detect"):
        info = detect(app_dir)
        require_package_manager(info)
    reporter.step("Python app detected" + (" (Django)" if info.is_django else ""))

    with timer.stage("resolve_runtime"):
        runtime, request = _resolve_runtime(app_dir)
    reporter.step(f"Using Python {runtime.version} {request.describe_source()}"
                  if request.source_file else
                  f"No Python version was specified. Using the default: Python "
                  f"{runtime.version}")
    platform = platform_info.current()
    cache = Cache(Path(cache_dir) if cache_dir is not None else default_cache_dir())

    scratch = cache.scratch_dir("build")
    build_dir = scratch / "app"
    try:
        with timer.stage("stage_sources"):
            skipped = stage_sources(app_dir, build_dir)
        if skipped:
            reporter.step(f"Left out {len(skipped)} path(s) listed in .slugignore")

        python_home = build_dir / ".heroku" / "python"
        with timer.stage("runtime_layer"):
            runtime_layer, from_cache = ensure_runtime_layer(cache, runtime, platform, reporter)
            reporter.step(f"{'Restoring' if from_cache else 'Installing'} Python "
                          f"{runtime.version}" + (" from cache" if from_cache else
                                                  f" (from {runtime.origin})"))
            shutil.copytree(runtime_layer.tree, python_home, symlinks=True)
        python = python_home / "bin" / runtime.python_name

        with timer.stage("dependency_layer"):
            deps = install_dependencies(
                app_dir=build_dir, lock_file=info.lock_file, python_home=python_home,
                python_name=runtime.python_name, runtime_layer=runtime_layer,
                installer=installer_for(info.package_manager), config_vars=config_vars,
                cache=cache, reporter=reporter, source_dir=app_dir, constraints=constraints,
            )

        with timer.stage("collectstatic"):
            run_collectstatic(build_dir, info.manage_py, has_package(deps.packages, "django"),
                              python, config_vars, reporter)

        with timer.stage("profile_d"):
            write_profile(build_dir)
            _remove_stray_bytecode(build_dir)

        with timer.stage("release_metadata"):
            reporter.step("Discovering process types")
            process_types = read_procfile(build_dir)
            if process_types:
                reporter.detail("Procfile declares types -> " + ", ".join(sorted(process_types)))
            else:
                reporter.warn("No Procfile found: the slug declares no process types.")
            (build_dir / ".release").write_text(release.release_yaml(process_types))
            leaks = relocate.find_references(build_dir, [str(build_dir), str(scratch)])
            if leaks:
                listed = ", ".join(sorted({str(p.relative_to(build_dir)) for p, _ in leaks})[:5])
                reporter.warn(f"{len(leaks)} file(s) name the build directory and may not "
                              f"work once unpacked elsewhere: {listed}")

        with timer.stage("pack"):
            reporter.step("Compressing...")
            runtime_info = {
                "implementation": "cpython",
                "requested": request.requested,
                "resolved": runtime.version,
                "source_file": request.source_file,
                "origin": runtime.origin,
            }
            package_list = [p.as_dict() for p in deps.packages]

            def describe(packed: PackedSlug) -> dict[str, Any]:
                return release.slug_metadata(
                    process_types=process_types,
                    runtime=runtime_info,
                    package_manager={
                        "name": info.package_manager,
                        "lock_file": info.lock_file,
                        "lock_checksum": deps.lock_checksum,
                        "files": list(deps.files),
                        "installer": deps.installer,
                        "installer_version": deps.installer_version,
                    },
                    packages=package_list,
                    platform=platform.as_dict(),
                    checksum=packed.sha256,
                    size=packed.size,
                    layout=layout,
                    framework=list(info.frameworks),
                )

            packed, metadata = _write_outputs(build_dir, slug_path, json_path, layout,
                                              source_date_epoch, describe)
            reporter.detail(f"Done: {_human_size(packed.size)}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    timer.timings["total"] = round(time.perf_counter() - started, 3)
    reporter.step(f"Slug written to {slug_path} ({_human_size(packed.size)}, "
                  f"sha256 {packed.sha256[:12]}…)")
    return BuildResult(
        slug_path=slug_path, metadata_path=json_path, sha256=packed.sha256, size=packed.size,
        process_types=process_types, runtime=runtime_info, packages=package_list,
        metadata=metadata, timings=timer.timings, log=list(reporter.lines),
    )


def _resolve_runtime(app_dir: Path) -> tuple[LocalRuntime, Any]:
    request = read_request(app_dir)
    check_supported(request)
    available = {r.version: r for r in LocalInterpreterSource().available()}
    supported = [v for v in available if v.startswith("3.") and
                 tuple(map(int, v.split(".")[:2])) > (3, 8)]
    chosen = pick(request, supported)
    if chosen is None:
        raise errors.PYTHON_VERSION_UNAVAILABLE.error(
            source_file=request.source_file or "The default",
            requested=request.requested,
            available=", ".join(sort_versions(supported)) or "none",
        )
    return available[chosen], request


def _remove_stray_bytecode(build_dir: Path) -> None:
    """Drop __pycache__ written into the app by build steps (they embed timestamps)."""
    runtime = build_dir / ".heroku"
    for dirpath, dirnames, _ in os.walk(build_dir):
        if Path(dirpath) == runtime.parent:
            dirnames[:] = [d for d in dirnames if d != ".heroku"]
        if "__pycache__" in dirnames:
            shutil.rmtree(Path(dirpath) / "__pycache__")
            dirnames.remove("__pycache__")


def _write_outputs(build_dir: Path, slug_path: Path, json_path: Path, layout: str,
                   epoch: int | None, describe) -> tuple[PackedSlug, dict[str, Any]]:
    """Pack the slug and write slug.json under temporary names, then rename both."""
    suffix = f".{os.getpid()}.partial"
    partial_slug = slug_path.with_name(f".{slug_path.name}{suffix}")
    partial_json = json_path.with_name(f".{json_path.name}{suffix}")
    try:
        with open(partial_slug, "wb") as handle:
            packed = pack_tree(build_dir, handle, layout=layout, mtime=epoch)
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


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.1f}{unit}" if unit != "B" else f"{size}B"
        value /= 1024
    return f"{size}B"
