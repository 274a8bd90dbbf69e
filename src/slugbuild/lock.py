"""``slugbuild lock``: pin an app's top-level dependencies into requirements.txt.

``uv pip compile`` resolves ``requirements.in`` (or the ``[project]
dependencies`` of pyproject.toml) against the index and writes every package,
transitive ones included, pinned with ``==``. It resolves for the app, not for
the interpreter running slugbuild: the Python version the build would use
(``.python-version``, ``runtime.txt``, ``requires-python``..., see
``lock_target``) and this machine's platform (architecture and glibc, the
stack the slug runs on), so environment markers are evaluated as they will be
in the slug. An existing requirements.txt is the starting point, so pins only
move when they must (or with ``upgrade=True``). The file is written under a
temporary name and renamed, so a failed resolution leaves the old one untouched.
Resolving may build an sdist for its metadata (the package's code runs), so uv
runs sealed as an install (step_jail.py): the cache's layers, runtimes, tools and
stores are read-only to it; it writes uv's cache and its own scratch.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from . import errors, platform_info
from .arguments import as_path, of_type, optional_path
from .cache import Cache, default_cache_dir
from .detect import package_manager_files
from .indexes import DEFAULT_INDEX_URL
from .installers.ranges import own_seal_for
from .installers.requirements import local_package_files, requirements_files
from .installers.uv import index_env, uv_binary, uv_tool_env
from .log import Reporter
from .package_managers import relock_command
from .platform_info import Platform
from .proc import ToolFailed, run_tool
from .redact import redact_url
from .stage import check_top_level_links
from .toml_compat import tomllib
from .versions import default_minors, newest_known_patch, read_request, sticky_minor

OUTPUT = "requirements.txt"


@errors.user_errors
def lock_app(
    app_dir: str | os.PathLike[str],
    *,
    upgrade: bool = False,
    generate_hashes: bool = False,
    config_vars: Mapping[str, str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    reporter: Reporter | None = None,
) -> Path:
    """Write ``app_dir/requirements.txt`` with every dependency pinned for the app's
    Python version and this platform; return its path."""
    for value, types, name, expected in (
            (config_vars, Mapping, "config_vars", "a mapping of config var names to values"),
            (reporter, Reporter, "reporter", "a slugbuild.Reporter"),
            (upgrade, bool, "upgrade", "True or False"),
            (generate_hashes, bool, "generate_hashes", "True or False")):
        of_type(value, types, "lock_app", name, expected)
    reporter = reporter or Reporter()
    config_vars = dict(config_vars or {})
    app = as_path(app_dir, "lock_app", "app_dir").absolute()
    if not app.is_dir():
        raise errors.APP_DIR_MISSING.error(app_dir=app)
    check_top_level_links(app)
    for manager, lock_file in package_manager_files(app).items():
        if manager != "pip":
            raise errors.LOCK_WOULD_CONFLICT.error(
                manager=manager, app_dir=app, lock_file=lock_file, relock=relock_command(manager))
    cache = Cache(optional_path(cache_dir, "lock_app", "cache_dir") or default_cache_dir())
    scratch = cache.scratch_dir("lock")
    seal = own_seal_for(cache, scratch, reporter)
    output = app / OUTPUT
    partial = scratch / OUTPUT
    try:
        # The input first: a malformed pyproject.toml is named as the lock input it is,
        # before it is read again for the Python version.
        source, input_path = _lock_input(app, scratch)
        python_version, python_platform = lock_target(app, cache)
        if output.is_file():
            # The resolver reads the old pins, includes too: the same rule as for input.
            _check_inside_app(app, OUTPUT)
        if output.is_file() and not upgrade:
            partial.write_bytes(output.read_bytes())  # keep pins that still satisfy
        argv = [uv_binary(), "pip", "compile", "--quiet", "--python", sys.executable,
                "--python-version", python_version, "--python-platform", python_platform,
                "--annotation-style", "line", "--output-file", str(partial)]
        if upgrade:
            argv.append("--upgrade")
        if generate_hashes:
            argv.append("--generate-hashes")
        argv.append(str(input_path))
        env = uv_tool_env(config_vars, cache.root, {
            **index_env(config_vars), "UV_CUSTOM_COMPILE_COMMAND": "slugbuild lock"})
        reporter.step(f"Pinning the dependencies of {source} with uv for Python "
                      f"{python_version} on {python_platform}")
        try:
            seal.install_step("`uv pip compile`").run_step(
                argv, lambda command: run_tool(command, reporter, env, cwd=app))
        except ToolFailed as failed:
            raise errors.LOCK_FAILED.error(
                command=shlex.join(["uv", "pip", "compile", source]),
                exit_code=failed.exit_code, output_file=OUTPUT, input_file=source,
                output=failed.tail,
                index=redact_url(config_vars.get("PIP_INDEX_URL") or DEFAULT_INDEX_URL),
            ) from failed
        text = partial.read_text().replace(str(input_path), source)
        partial.write_text(text)
        os.replace(partial, output)
    finally:
        seal.close()
        shutil.rmtree(scratch, ignore_errors=True)
    pins = [line for line in text.splitlines() if "==" in line and not line.startswith("#")]
    reporter.step(f"Wrote {OUTPUT} ({len(pins)} pinned packages)")
    return output


def lock_target(app: Path, cache: Cache) -> tuple[str, str]:
    """The Python version (major.minor, or the exact pin) and uv platform to resolve for.

    The version the build would ask for: the app's version file, else the minor
    its previous build used (sticky), else the default; a ``requires-python``
    range gives the newest supported minor inside it.
    """
    request = read_request(app, sticky_minor(cache.root, app))
    if not request.is_specifier:
        return request.requested, uv_platform(platform_info.current())
    for minor in default_minors():
        patch = newest_known_patch(minor + ".0") or minor + ".0"
        if request.matches(patch):
            return minor, uv_platform(platform_info.current())
    raise errors.LOCK_NO_PYTHON.error(requested=request.requested,
                                      source_file=request.where,
                                      supported=", ".join(default_minors()))


def uv_platform(platform: Platform) -> str:
    """uv's ``--python-platform`` for this machine: its architecture and glibc
    (manylinux_2_17 to 2_40, the range uv names), else musl, else plain linux."""
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.arch, platform.arch)
    if arch not in ("x86_64", "aarch64"):
        return "linux"
    glibc = re.fullmatch(r"glibc2\.(\d+)", platform.libc)
    if glibc:
        return f"{arch}-manylinux_2_{min(max(int(glibc.group(1)), 17), 40)}"
    return f"{arch}-unknown-linux-musl" if "musl" in platform.libc else "linux"


def _lock_input(app: Path, scratch: Path) -> tuple[str, Path]:
    """requirements.in, else pyproject.toml's [project] dependencies as a .in file."""
    requirements_in = app / "requirements.in"
    if requirements_in.is_file():
        _check_inside_app(app, "requirements.in")
        return "requirements.in", requirements_in
    pyproject = app / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text())
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise errors.LOCK_FILE_MALFORMED.error(
                variant="too-deep" if isinstance(exc, RecursionError) else None,
                lock_file="pyproject.toml", syntax="TOML", problem=exc,
                relock="slugbuild lock") from None
        project = data.get("project", {})
        dependencies = project.get("dependencies") if isinstance(project, dict) else None
        if isinstance(dependencies, list) and all(isinstance(d, str) for d in dependencies):
            path = scratch / "pyproject-dependencies.in"
            path.write_text("".join(_pyproject_requirement(app, d) + "\n"
                                    for d in dependencies))
            return "pyproject.toml", path
    raise errors.NOTHING_TO_LOCK.error(app_dir=app)


def _check_inside_app(app: Path, name: str) -> None:
    """The rule `compile` applies: no -r/-c include and no local package outside the app."""
    local_package_files(app, requirements_files(app, name))


def _pyproject_requirement(app: Path, text: str) -> str:
    """A [project] dependency as one requirements line: PEP 508, nothing else.

    The list is copied into a requirements file, where a line could otherwise
    be an option (``-r /etc/shadow``, ``--extra-index-url``) or hide a second line.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        raise errors.LOCK_FILE_MALFORMED.error(
            variant="bad-requirement", lock_file="pyproject.toml",
            syntax="PEP 508 in [project] dependencies", requirement=text[:200], reason=exc,
            relock="slugbuild lock") from None
    line = str(requirement)
    if requirement.url and requirement.url.startswith("file:"):
        target = Path(re.sub(r"^file:(//)?", "", requirement.url)).resolve()
        if not target.is_relative_to(app.resolve()):
            raise errors.REQUIREMENTS_OUTSIDE_APP.error(
                referrer="pyproject.toml [project] dependencies", line="-",
                target=requirement.url)
    return line
