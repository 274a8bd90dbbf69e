"""What an installer's failure really means, read from its output.

The default advice for a failed install ("check the requirement names against
the package index") is right for a typo or a version that does not exist, and
wrong for the other common causes, each of which gets its own error:

- a package built from source that needs a system library or tool the machine
  lacks (``pg_config``, ``mysql_config``, a C header, a compiler, Rust):
  ``dependency-needs-system-library``, with what Heroku users do instead
  (binary wheels such as ``psycopg2-binary``, or an Aptfile);
- a source distribution that does not build on the chosen Python (no wheel
  for it yet, or old code): ``dependency-build-failed``;
- a local package of the app (``./libs/pkg``) whose own build fails:
  ``local-package-failed``.

Paths of the build's copy of the app are shown as the app directory the user
gave; the output, already streamed into the log, is not repeated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .. import errors

# A package name as installers print it in their failure lines.
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_FAILED_PACKAGE = (
    re.compile(rf"Failed to build `?(?P<name>{_NAME})"),  # uv, and pip's summary
    re.compile(rf"Failed building wheel for (?P<name>{_NAME})"),
    re.compile(rf"Building wheel for (?P<name>{_NAME}) \([^)]*\) (?:did not run|\.\.\. error)"),
    re.compile(rf"Failed to download and build `(?P<name>{_NAME})"),
    re.compile(rf"Failed to prepare distributions.*\n.*Failed to (?:build|fetch) "
               rf"`(?P<name>{_NAME})"),
)
_SDIST_BUILD = re.compile(
    r"subprocess-exited-with-error|Failed to build|Failed building wheel|"
    r"metadata-generation-failed|Getting requirements to build wheel did not run|"
    r"Preparing metadata \([^)]*\) \.\.\. error|The build backend returned an error|"
    r"Build backend failed")


@dataclass(frozen=True)
class _SystemNeed:
    """An installer's words for a missing system library or tool, and the
    dependency-needs-system-library variant (errors.py) that says what to do."""

    pattern: re.Pattern[str]
    variant: str


_SYSTEM_NEEDS: tuple[_SystemNeed, ...] = (
    _SystemNeed(
        re.compile(r"pg_config executable not found|pg_config is required|"
                   r"Error: pg_config|pg_config: (?:command )?not found"),
        "pg-config"),
    _SystemNeed(
        re.compile(r"mysql_config(?::)? (?:command )?not found|"
                   r"Can not find valid pkg-config name.{0,80}MYSQLCLIENT_CFLAGS|"
                   r"pkg-config --exists mysqlclient", re.S | re.I),
        "mysql-config"),
    _SystemNeed(
        re.compile(r"(?:can't find Rust compiler|cargo, the Rust package manager, is not "
                   r"installed|error: can't find Rust)"),
        "rust"),
    _SystemNeed(
        re.compile(r"(?:unable to execute '(?:gcc|cc|x86_64-linux-gnu-gcc)'|"
                   r"error: command '[^']*(?:gcc|cc)' failed: No such file|"
                   r"(?:gcc|cc): (?:command )?not found)"),
        "c-compiler"),
    _SystemNeed(  # the named group is the variant's {header}
        re.compile(r"fatal error: (?P<header>[\w/.+-]+\.h): No such file or directory"),
        "c-header"),
)


def diagnose_install_failure(*, command: str, exit_code: int, output: str,
                             python_version: str, local_paths: list[str]
                             ) -> errors.SlugbuildError | None:
    """The specific error for a failed install, or None for the generic one."""
    package = failed_package(output)
    for need in _SYSTEM_NEEDS:
        match = need.pattern.search(output)
        if match:
            values = match.groupdict()
            return errors.DEPENDENCY_NEEDS_SYSTEM_LIBRARY.error(
                variant=need.variant, command=command, exit_code=exit_code,
                package=package or "a package", output=output, output_shown=True, **values)
    if not _SDIST_BUILD.search(output):
        return None
    for path in local_paths:
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if (f"Processing {path}" in output or f"/{path.lstrip('./')}" in output
                or (package and _same_name(package, name))):
            return errors.LOCAL_PACKAGE_FAILED.error(
                command=command, exit_code=exit_code, package=path, output=output,
                output_shown=True)
    if package is None:
        return None
    major_minor = ".".join(python_version.split(".")[:2])
    from ..importcheck import MISSING_MODULE, REMOVED_STDLIB, diagnose_missing_module

    missing = MISSING_MODULE.findall(output)
    if missing and missing[-1].split(".")[0] in REMOVED_STDLIB:
        return errors.DEPENDENCY_BUILD_FAILED.error(
            variant="removed-stdlib", command=command, exit_code=exit_code, package=package,
            python=python_version, major_minor=major_minor, module=missing[-1],
            explanation=diagnose_missing_module(output, python_version), output=output,
            output_shown=True)
    return errors.DEPENDENCY_BUILD_FAILED.error(
        command=command, exit_code=exit_code, package=package, python=python_version,
        major_minor=major_minor, output=output, output_shown=True)


def failed_package(output: str) -> str | None:
    """The package whose build failed, as the installer names it."""
    for pattern in _FAILED_PACKAGE:
        match = pattern.search(output)
        if match:
            return match.group("name").rstrip(".")
    # pip, failing before its summary: the last package collected before the error.
    error = re.search(r"error:|ERROR:|Error:", output)
    collected = re.findall(rf"^\s*Collecting (?P<name>{_NAME})", output[:error.start()]
                           if error else output, re.M)
    return re.split(r"[=<>!~;\[ ]", collected[-1])[0] if collected else None


def _same_name(one: str, two: str) -> bool:
    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    return norm(one) == norm(two)


def shown_paths(text: str, build_dir: Path, app_dir: Path | None,
                prefix: Path | None = None) -> str:
    """``text`` with the build's copy of the app named as the user's app directory
    (and an apart install's tree as the slug's ``.heroku/python``)."""
    if app_dir is not None:
        text = text.replace(str(build_dir), str(app_dir))
    if prefix is not None:
        text = text.replace(str(prefix), ".heroku/python")
    return text
