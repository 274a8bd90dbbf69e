"""Running any buildpack that follows Heroku's buildpack API.

A buildpack is a directory with ``bin/detect BUILD_DIR``, ``bin/compile
BUILD_DIR CACHE_DIR ENV_DIR`` and optionally ``bin/release BUILD_DIR``. It is
named by a path or a git URL (``URL#ref`` picks a branch or tag), given with
``--buildpack`` or listed in the app's ``.buildpacks`` file. Buildpacks run in
order on the same build directory; what one writes to its ``export`` file is
sourced before the next one runs (Heroku's multi-buildpack rule). The names
of Heroku's own Python buildpack mean slugbuild's built-in Python stages.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import errors
from .buildpack_lists import (
    NATIVE_PYTHON_NAMES,
    expand_spec,
    is_monorepo_buildpack,
    listed_buildpacks,
)
from .context import BuildContext, BuildpackRun, BuildpackTurn
from .layer_checks import refuse_links_leaving_slug
from .log import Reporter
from .proc import ToolFailed, clean_env, exported_config, run_captured, run_tool
from .process_cookie import COOKIE_VARIABLE
from .redact import redact_url
from .release import ReleaseInfo, parse_release_yaml
from .step_jail import CacheSeal, StepRunner, Unsealed

_GIT_URL = re.compile(r"^(https?://|git://|ssh://|git@|file://)")


@dataclass(frozen=True)
class BuildpackRef:
    """One buildpack as the user named it; a relative path is relative to ``base``."""

    spec: str
    base: Path = Path(".")

    @property
    def native(self) -> bool:
        return self.spec.split("#", 1)[0].rstrip("/") in NATIVE_PYTHON_NAMES

    @property
    def is_git(self) -> bool:
        return bool(_GIT_URL.match(self.spec))

    @property
    def shown(self) -> str:
        """The spec as logs and slug.json show it: credentials in a URL hidden."""
        return redact_url(self.spec)

    @property
    def cache_name(self) -> str:
        """A stable directory name for this buildpack's CACHE_DIR (no credentials)."""
        readable = re.sub(r"[^A-Za-z0-9._-]+", "-", self.shown.split("#", 1)[0])[-40:]
        readable = readable.strip("-")
        return f"{readable}-{hashlib.sha256(self.spec.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class BuildpackOutcome:
    """One buildpack's run: the name its detect printed and what its release declared."""

    name: str
    release: ReleaseInfo


def buildpacks_for(app_dir: Path, given: list[str] | None,
                   repo_root: Path | None = None) -> list[BuildpackRef]:
    """``--buildpack`` values (paths relative to the working directory), else the
    app's ``.buildpacks`` lines, else its ``app.json`` ``buildpacks`` (paths
    relative to the app), else none; shorthands expanded (see buildpack_lists.py).

    ``repo_root`` is set when ``app_dir`` is an app base inside it. Then
    heroku-buildpack-monorepo is dropped (slugbuild already did what it does),
    and when the app base lists no buildpacks of its own, a root list naming the
    monorepo buildpack gives the buildpacks after it, as on Heroku, where they
    run on the app base's content. Without an app base, that buildpack is refused.
    """
    if given:
        specs, source, base = ([expand_spec(spec, Path.cwd(), "--buildpack")
                                for spec in given], "--buildpack", Path.cwd())
    else:
        specs, found_in = listed_buildpacks(app_dir)
        source, base = found_in or "", app_dir
        if found_in is None and repo_root is not None:
            specs, source, base = _after_monorepo_buildpack(repo_root) or (specs, source, base)
    refs = []
    for spec in specs:
        if is_monorepo_buildpack(spec):
            if repo_root is None:
                raise errors.MONOREPO_BUILDPACK_WITHOUT_APP_BASE.error(
                    spec=redact_url(spec), source=source)
            continue
        refs.append(BuildpackRef(spec, base))
    return refs


def _after_monorepo_buildpack(repo_root: Path) -> tuple[list[str], str, Path] | None:
    """The root's buildpacks after heroku-buildpack-monorepo, if its list names it.

    A root list that cannot be read is not this build's business (only the app
    base is built), so it is ignored rather than refused."""
    try:
        specs, found_in = listed_buildpacks(repo_root)
    except errors.SlugbuildError:
        return None
    marks = [i for i, spec in enumerate(specs) if is_monorepo_buildpack(spec)]
    if not marks:
        return None
    return specs[marks[0] + 1:], f"{found_in} (at the repository root)", repo_root


def fetch(ref: BuildpackRef, scratch: Path) -> Path:
    """A private copy of the buildpack in ``scratch`` (git URLs are cloned there).

    Buildpacks write an ``export`` file into their own directory, so a local one
    is copied first: the user's buildpack directory is never written to.
    """
    if ref.is_git:
        url, _, git_ref = ref.spec.partition("#")
        target = scratch / ref.cache_name
        argv = ["git", "clone", "--quiet", "--depth", "1"]
        if git_ref:
            argv += ["--branch", git_ref]
        result = run_captured([*argv, url, str(target)],
                              env=clean_env({"GIT_TERMINAL_PROMPT": "0"}),
                              step=f"git clone {ref.shown}")
        if result.returncode != 0:
            raise errors.BUILDPACK_FETCH_FAILED.error(
                spec=ref.shown,
                reason=redact_url(_text(result.stderr).strip()[-400:]) or "git clone failed")
        directory = target
    else:
        source = (ref.base / ref.spec).resolve()
        if not (source / "bin" / "compile").is_file():
            raise errors.BUILDPACK_INVALID.error(spec=ref.shown, path=source)
        directory = scratch / ref.cache_name
        shutil.copytree(source, directory, symlinks=True)
    if not (directory / "bin" / "compile").is_file():
        raise errors.BUILDPACK_INVALID.error(spec=ref.shown, path=directory)
    return directory


def run_buildpack(
    ref: BuildpackRef,
    directory: Path,
    *,
    build_dir: Path,
    cache_dir: Path,
    env_dir: Path,
    config_vars: Mapping[str, str],
    stack: str,
    exports: list[Path],
    reporter: Reporter,
    seal: CacheSeal | None = None,
) -> BuildpackOutcome:
    """detect, compile and release one buildpack on ``build_dir``; with ``seal``, each
    with the cache read-only but for the build's scratch and ``cache_dir``."""
    env = clean_env({**exported_config(config_vars), "STACK": stack})
    cache_dir.mkdir(parents=True, exist_ok=True)
    runner = _Runner(seal, ref.shown, cache_dir)
    name = _detect(ref, directory, build_dir, env, exports, runner)
    reporter.step(f"{name} app detected" if name else f"{ref.shown} detected the app")
    try:
        argv = _sourcing(exports, [directory / "bin" / "compile", build_dir, cache_dir,
                                   env_dir])
        runner("bin/compile").run_step(argv, lambda command: run_tool(
            command, reporter, env, cwd=build_dir, step=f"{ref.shown}: bin/compile",
            passthrough=True))
    except ToolFailed as failed:
        # Its output is in the log above already: kept on the error, not printed twice.
        raise errors.BUILDPACK_COMPILE_FAILED.error(
            spec=ref.shown, exit_code=failed.exit_code, output=failed.tail,
            output_shown=True) from failed
    export = directory / "export"
    if export.is_file():
        exports.append(export)
    return BuildpackOutcome(name or ref.shown,
                            _release(ref, directory, build_dir, env, exports, runner))


@dataclass(frozen=True)
class _Runner:
    """How one buildpack's tools are run: sealed (step_jail.py), its CACHE_DIR
    writable, or as they are without a seal."""

    seal: CacheSeal | None
    shown: str
    cache_dir: Path

    def __call__(self, tool: str) -> StepRunner:
        if self.seal is None:
            return Unsealed()
        return self.seal.step(f"{self.shown}: {tool}", [self.cache_dir])



def exported_variables(exports: list[Path], runner: StepRunner | None = None
                       ) -> dict[str, str]:
    """The variables the ``export`` files set or change, as bash sees them (a
    buildpack wrote them: ``runner`` seals the cache while they run)."""
    if not exports:
        return {}
    base = clean_env()
    script = "".join(f'. "{path}"; ' for path in exports) + "env -0"
    result = (runner or Unsealed()).run_step(["bash", "-c", script], lambda command: run_captured(
        command, env=base, step="sourcing the export files"))
    if result.returncode != 0:
        return {}
    after = dict(item.split("=", 1) for item in
                 result.stdout.decode(errors="replace").split("\0") if "=" in item)
    # The cookie is the sourcing shell's own (run_captured sets a new one each run): no
    # export, and in the exports it made every build's environment hash a new one.
    return {k: v for k, v in after.items() if base.get(k) != v
            and k not in ("_", "SHLVL", "PWD", COOKIE_VARIABLE)}


def _sourcing(exports: list[Path], argv: Sequence[str | Path]) -> list[str]:
    """Run ``argv`` under bash after sourcing the earlier buildpacks' export files."""
    sources = "".join(f'. "{path}"; ' for path in exports)
    return ["bash", "-c", f'{sources}exec "$@"', "buildpack", *map(str, argv)]


def _detect(ref: BuildpackRef, directory: Path, build_dir: Path, env: dict[str, str],
            exports: list[Path], runner: _Runner) -> str:
    detect = directory / "bin" / "detect"
    if not detect.is_file():
        return ""
    result = runner("bin/detect").run_step(
        _sourcing(exports, [detect, build_dir]), lambda command: run_captured(
            command, env=env, cwd=build_dir, step=f"{ref.shown}: bin/detect"))
    stdout = _text(result.stdout)
    if result.returncode != 0:
        raise errors.BUILDPACK_DETECT_FAILED.error(
            spec=ref.shown, output=(stdout + _text(result.stderr)).strip()[-2000:] or None)
    return stdout.strip().splitlines()[0] if stdout.strip() else ""


def _release(ref: BuildpackRef, directory: Path, build_dir: Path, env: dict[str, str],
             exports: list[Path], runner: _Runner) -> ReleaseInfo:
    release = directory / "bin" / "release"
    if not release.is_file():
        return ReleaseInfo()
    result = runner("bin/release").run_step(
        _sourcing(exports, [release, build_dir]), lambda command: run_captured(
            command, env=env, cwd=build_dir, step=f"{ref.shown}: bin/release"))
    if result.returncode != 0:
        raise errors.BUILDPACK_RELEASE_INVALID.error(
            variant="exit-code", spec=ref.shown, exit_code=result.returncode,
            output=_text(result.stderr).strip()[-2000:] or None)
    return parse_release_yaml(_text(result.stdout), ref.shown)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def write_env_dir(directory: Path, config_vars: Mapping[str, str]) -> Path:
    """Heroku's ENV_DIR: one file per config var (kept in the scratch dir only)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for key, value in config_vars.items():
        path = directory / key
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:  # config vars are often secrets
            handle.write(value)
    return directory



class ExternalBuildpack:
    """A buildpack named by a path or git URL, run by the Heroku buildpack API."""

    def __init__(self, ref: BuildpackRef) -> None:
        self.ref = ref

    @property
    def shown(self) -> str:
        return self.ref.shown

    def analyse(self, build: BuildContext, turn: BuildpackTurn) -> None:
        """Nothing before its turn: its bin/detect is part of its run."""

    def run(self, build: BuildContext, turn: BuildpackTurn) -> BuildpackRun:
        """Fetch a private copy, then detect, compile and release it on the build."""
        with build.timer.stage(f"buildpack:{self.ref.shown}"):
            directory = fetch(self.ref, build.scratch / "buildpacks" / str(turn.position))
            outcome = run_buildpack(
                self.ref, directory, build_dir=build.build_dir,
                cache_dir=buildpack_cache_dir(build, self.ref),
                env_dir=write_env_dir(build.scratch / "env", build.config_vars),
                config_vars=build.config_vars, stack=build.platform.stack,
                exports=turn.exports, reporter=build.reporter, seal=build.seal)
            # Before slugbuild (a later buildpack, the packing stages) writes into the
            # build directory unsealed: no link there may lead its writes into the cache.
            refuse_links_leaving_slug(build.build_dir, build.view_links())
        return BuildpackRun({"buildpack": self.ref.shown, "description": outcome.name},
                            outcome.release)


def buildpack_cache_dir(build: BuildContext, ref: BuildpackRef) -> Path:
    """A buildpack's CACHE_DIR: per buildpack and per app directory, as Heroku keeps a
    build cache per app, so one app's build never reads what another's wrote."""
    app_key = hashlib.sha256(str(build.app_dir).encode()).hexdigest()[:16]
    return build.cache.root / "buildpacks" / ref.cache_name / app_key
