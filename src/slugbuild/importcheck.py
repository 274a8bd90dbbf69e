"""Missing modules, found at build time rather than when a dyno boots.

Two things live here:

- **What a missing module means** (``explain_missing_module``): a standard
  library module the runtime's Python no longer has (PEP 594's dead batteries
  removed in 3.13, distutils/asynchat/asyncore/smtpd/imp in 3.12, ...), the
  ``pkg_resources`` that setuptools 82 dropped, or a package the requirements
  do not list. Used wherever a ``ModuleNotFoundError`` surfaces: collectstatic,
  the build hooks, and the check below.
- **The entry-point import check** (``check_process_imports``): every process
  type's command that starts a console script of the slug (``gunicorn``,
  ``uvicorn``, ``celery``...) or ``python -m module`` has that script's module
  imported once, with the slug's interpreter, from the build directory. A
  server whose own module cannot be imported (gunicorn 20 importing
  ``pkg_resources`` from a setuptools that has none) would die at every boot;
  the build stops instead, naming the module and what provides it.

Why importing the entry modules, not scanning packages' imports: a scan of
every installed file's ``import`` statements is slow on large trees and cannot
tell an optional import (``try: import pkg_resources``) from a required one, so
it would flag working apps. Importing the modules the processes really start
runs exactly the code a boot runs first, costs one interpreter start for all
of them (a few hundred milliseconds), and never runs the app's own code: only
installed library modules are imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from packaging.version import Version

from . import errors
from .layer_overlay import LayerAccess
from .log import Reporter
from .proc import clean_env, exported_config
from .shellwords import split_command
from .textfiles import small_regular_file

# Standard library modules removed from CPython: module -> (Python that removed
# it, why, a PyPI package that brings it back or None).
REMOVED_STDLIB: dict[str, tuple[str, str, str | None]] = {
    "formatter": ("3.10", "deprecated since 3.4", None),
    "parser": ("3.10", "PEP 617", None),
    "symbol": ("3.10", "PEP 617", None),
    "binhex": ("3.11", "deprecated since 3.9", None),
    "asynchat": ("3.12", "PEP 594", "pyasynchat"),
    "asyncore": ("3.12", "PEP 594", "pyasyncore"),
    "smtpd": ("3.12", "PEP 594", "aiosmtpd (a rewrite) or standard-smtpd"),
    "distutils": ("3.12", "PEP 632", "setuptools (it provides `distutils`)"),
    "imp": ("3.12", "deprecated since 3.4", "zombie-imp"),
    "aifc": ("3.13", "PEP 594", "standard-aifc"),
    "audioop": ("3.13", "PEP 594", "audioop-lts"),
    "cgi": ("3.13", "PEP 594", "legacy-cgi"),
    "cgitb": ("3.13", "PEP 594", "legacy-cgi"),
    "chunk": ("3.13", "PEP 594", "standard-chunk"),
    "crypt": ("3.13", "PEP 594", "crypt-r"),
    "imghdr": ("3.13", "PEP 594", "standard-imghdr"),
    "mailcap": ("3.13", "PEP 594", "standard-mailcap"),
    "msilib": ("3.13", "PEP 594", None),
    "nis": ("3.13", "PEP 594", None),
    "nntplib": ("3.13", "PEP 594", "standard-nntplib"),
    "ossaudiodev": ("3.13", "PEP 594", None),
    "pipes": ("3.13", "PEP 594", "standard-pipes"),
    "sndhdr": ("3.13", "PEP 594", "standard-sndhdr"),
    "spwd": ("3.13", "PEP 594", None),
    "sunau": ("3.13", "PEP 594", "standard-sunau"),
    "telnetlib": ("3.13", "PEP 594", "standard-telnetlib"),
    "uu": ("3.13", "PEP 594", "standard-uu"),
    "xdrlib": ("3.13", "PEP 594", "standard-xdrlib"),
    "lib2to3": ("3.13", "deprecated since 3.11", None),
}
# The first setuptools without pkg_resources.
SETUPTOOLS_WITHOUT_PKG_RESOURCES = "82"
VERSION_FILE = ".python-version"
MISSING_MODULE = re.compile(r"No module named '([\w.]+)'")
# `python -m pip` without pip says it unquoted, after the interpreter's path.
_MISSING_RUN_MODULE = re.compile(r"python[\d.]*: No module named ([\w.]+?)\.?$", re.MULTILINE)
_TRACEBACK_FILE = re.compile(r'^\s*File "([^"]+)", line \d+')


def explain_missing_module(module: str, python_version: str,
                           lock_file: str = "requirements.txt",
                           importer: str | None = None) -> str:
    """Why ``module`` cannot be imported on this runtime, and what to do, as one
    sentence without final punctuation. ``importer`` is the file whose import
    failed, when known."""
    top = module.split(".")[0]
    by = f" (imported by {importer})" if importer else ""
    removed = REMOVED_STDLIB.get(top)
    if removed is not None and Version(python_version) >= Version(removed[0]):
        removed_in, why, backport = removed
        older = _previous_minor(removed_in)
        choices = [f"ask for Python {older} in {VERSION_FILE} (a line `{older}`)"]
        if backport:
            choices.append(f"add {backport} to {lock_file}")
        choices.append("upgrade the package that imports it")
        return (f"the module {top}{by} was removed from Python's standard library in "
                f"{removed_in} ({why}), and this build uses Python {python_version}: "
                + ", ".join(choices[:-1]) + f" or {choices[-1]}")
    if top == "pip":
        return (f"pip{by} is not in the slug's Python (slugbuild installs the dependencies "
                f"itself and keeps package managers out of the slug, so a pip found on PATH "
                f"would be the host's and install into the host's Python): list the package "
                f"in {lock_file} instead of installing it from a build step")
    if top == "pkg_resources":
        return (f"the module pkg_resources{by} belongs to setuptools, which no longer "
                f"ships it from version {SETUPTOOLS_WITHOUT_PKG_RESOURCES} on: add "
                f"`setuptools<{SETUPTOOLS_WITHOUT_PKG_RESOURCES}` to {lock_file}, or "
                f"upgrade the package that imports it (gunicorn 21 and later do not)")
    return (f"the module {module}{by} cannot be imported: add the package that provides "
            f"it to {lock_file}, or check the name")


def diagnose_missing_module(output: str, python_version: str,
                            lock_file: str = "requirements.txt",
                            hide: str | None = None) -> str | None:
    """``explain_missing_module`` for the last ModuleNotFoundError in a tool's output.

    ``hide`` (the build directory) is cut from the importing file's path.
    """
    matches = [*MISSING_MODULE.finditer(output), *_MISSING_RUN_MODULE.finditer(output)]
    if not matches:
        return None
    match = max(matches, key=lambda found: found.start())
    importer = None
    for line in output[:match.start()].splitlines():
        found = _TRACEBACK_FILE.match(line)
        if found and _is_importer(found.group(1)):
            importer = found.group(1)
    if importer and hide and importer.startswith(hide.rstrip("/") + "/"):
        importer = importer[len(hide.rstrip("/")) + 1:]
    if importer and "/site-packages/" in importer:
        importer = importer.split("/site-packages/", 1)[1]
    return explain_missing_module(match.group(1), python_version, lock_file, importer)


def _is_importer(path: str) -> bool:
    """A traceback frame that can be the importing file: not the import machinery."""
    return not path.startswith("<") and not path.endswith("importlib/__init__.py")


def _previous_minor(version: str) -> str:
    major, minor = (int(part) for part in version.split(".")[:2])
    return f"{major}.{minor - 1}"


@dataclass(frozen=True)
class EntryPoint:
    """A module a process type's command starts."""

    process: str
    word: str  # as written in the command: `gunicorn`, `python -m celery`
    module: str


# entry_points.txt and direct_url.json are read up to this size; a larger one is left out.
_METADATA_LIMIT = 1 << 20


def console_scripts(site_packages: Path) -> dict[str, str]:
    """Console script name -> ``module`` for every installed distribution, except
    the app's own local packages (``./libs/pkg``, ``.``): their code is the app's."""
    scripts: dict[str, str] = {}
    for path in sorted(site_packages.glob("*.dist-info/entry_points.txt")):
        # A build step may leave either file as a directory, a fifo or a link to
        # /dev/zero: such a file holds no scripts (a local package's direct_url.json
        # that cannot be read leaves its scripts checked, as for a package of the index).
        direct_url = small_regular_file(path.parent / "direct_url.json", _METADATA_LIMIT)
        if direct_url is not None and b'"file://' in direct_url:
            continue
        text = small_regular_file(path, _METADATA_LIMIT)
        if text is None:
            continue
        import configparser  # here, not at start-up: only the entry-point check reads these

        parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            parser.read_string(text.decode(errors="replace"))
        except configparser.Error:
            continue
        if parser.has_section("console_scripts"):
            for name, target in parser.items("console_scripts"):
                module = target.split(":")[0].strip()
                if module:
                    scripts.setdefault(name.strip(), module)
    return scripts


_PYTHON_WORD = re.compile(r"^(?:.*/)?python(?:3(?:\.\d+)?)?$")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def entry_points(process_types: Mapping[str, str], scripts: Mapping[str, str],
                 app_dir: Path | None = None) -> list[EntryPoint]:
    """The modules the process types' commands start: each word naming a console
    script of the slug (wrappers such as ``newrelic-admin run-program gunicorn``
    give both), and ``python -m module`` unless the module is the app's own
    (in ``app_dir``): the app's code is never imported."""
    found: list[EntryPoint] = []
    for process, command in sorted(process_types.items()):
        try:
            words = split_command(command)
        except ValueError:
            continue
        for index, word in enumerate(words):
            if _ASSIGNMENT.match(word):
                continue
            name = word.rsplit("/", 1)[-1] if word.startswith((".heroku/", "/app/.heroku/")) \
                else word
            if name in scripts:
                found.append(EntryPoint(process, word, scripts[name]))
            elif (_PYTHON_WORD.match(word) and index + 2 < len(words)
                  and words[index + 1] == "-m"):
                module = words[index + 2]
                top = module.split(".")[0]
                if app_dir is not None and (_names_a_file(app_dir / top)
                                            or _names_a_file(app_dir / f"{top}.py")):
                    continue
                if re.fullmatch(r"[A-Za-z_][\w.]*", module):
                    found.append(EntryPoint(process, f"{word} -m {module}", module))
    return found


def _names_a_file(path: Path) -> bool:
    """Whether a word of a process command names an existing file. The word is the
    app's text: one longer than a file name (ENAMETOOLONG) names none, and no lookup
    failure may end the build as a traceback."""
    return os.path.exists(path)  # False on any OSError; Path.exists raises ENAMETOOLONG


_PROBE = r"""
import importlib, json, sys, traceback
# As for a console script, the current directory is not on the path: only the
# slug's packages and the standard library are imported.
sys.path[:] = [p for p in sys.path if p not in ("", ".")]
results = []
for module in sys.argv[1:]:
    try:
        importlib.import_module(module)
        results.append({"module": module})
    except BaseException as exc:
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if not f.filename.startswith("<")
                  and not f.filename.endswith("importlib/__init__.py")]
        results.append({"module": module, "type": type(exc).__name__,
                        "missing": getattr(exc, "name", None) if isinstance(exc, ImportError)
                        else None,
                        "message": str(exc)[:500],
                        "file": frames[-1].filename if frames else None})
print("SLUGBUILD-IMPORTS " + json.dumps(results))
"""


def check_process_commands(build_dir: Path, python: Path, process_types: Mapping[str, str],
                           excluded: Mapping[str, str], python_version: str,
                           lock_file: str) -> None:
    """A process whose command is a requirement the markers excluded cannot start.

    ``excluded`` maps the canonical names of requirements whose environment
    markers exclude the runtime to their lines. A process type whose program
    (``gunicorn`` in ``web: gunicorn app:app``) is neither in the slug's
    ``bin`` nor the app, and is one of those names, fails the build
    (``process-command-excluded``): on a dyno it would be `gunicorn: not found`.
    """
    from packaging.utils import canonicalize_name

    for process, command in sorted(process_types.items()):
        program = _program(command)
        if program is None or "/" in program:
            continue
        if _names_a_file(python.parent / program) or _names_a_file(build_dir / program):
            continue
        line = excluded.get(canonicalize_name(program))
        if line is not None:
            raise errors.PROCESS_COMMAND_EXCLUDED.error(
                process=process, command=command, program=program, lock_file=lock_file,
                line=line, python=python_version)
        suggestion = _misspelt_program(program, python)
        if suggestion is not None:
            raise errors.PROCESS_COMMAND_UNKNOWN.error(
                process=process, command=command, program=program, suggestion=suggestion)


def _misspelt_program(program: str, python: Path) -> str | None:
    """The slug's program that ``program`` (found nowhere) is a near miss of.

    Only a near miss of one of the slug's own programs fails the build
    (``gunicron`` for ``gunicorn``): a program found on no path at all may still
    come from the run image or another buildpack (``nginx``, ``bin/start``), as
    Heroku allows, so it is left to the dyno.
    """
    import difflib  # only on this rare path: warm builds never load it

    if shutil.which(program) is not None:
        return None
    site_packages = python.parent.parent / "lib" / python.name / "site-packages"
    names = set(console_scripts(site_packages))
    if python.parent.is_dir():
        names.update(entry.name for entry in python.parent.iterdir())
    if program in names:
        return None
    close = difflib.get_close_matches(program, sorted(names), n=1, cutoff=0.8)
    return close[0] if close else None


def _program(command: str) -> str | None:
    """The program a command runs: its first word after ``VAR=value`` and ``exec``."""
    try:
        words = split_command(command)
    except ValueError:
        return None
    for word in words:
        if _ASSIGNMENT.match(word) or word == "exec":
            continue
        return word
    return None


def check_process_imports(build_dir: Path, python: Path, process_types: Mapping[str, str],
                          python_version: str, lock_file: str, config_vars: Mapping[str, str],
                          reporter: Reporter, timeout: float = 60,
                          passed: tuple[Path, str] | None = None,
                          prepare: Callable[[], None] | None = None,
                          shared: SharedChecks | None = None,
                          layers: LayerAccess | None = None) -> None:
    """Import every process type's entry module with the slug's interpreter; a
    ModuleNotFoundError fails the build (``process-import-failed``), another
    failure is a warning (it may depend on the dyno's environment).

    ``passed`` (a directory and the dependency layer's key) remembers a clean
    result: the modules are the layer's and the runtime's (the app directory is
    not on the path, as for a console script), so the same layer and modules
    need no second interpreter start on a warm build. ``prepare`` is called before
    the interpreter starts (the build materialises layers shown by a view).
    ``shared`` (the build's cache registry) holds the passes of other machines, for
    the same layer key and modules: a fresh runner then needs no interpreter either.
    ``layers``: how the interpreter reaches the cached layers (an overlay of their
    trees, or materialised; context.StepLayers), instead of ``prepare``.
    """
    site_packages = python.parent.parent / "lib" / python.name / "site-packages"
    points = entry_points(process_types, console_scripts(site_packages), build_dir)
    modules = list(dict.fromkeys(point.module for point in points))
    if not modules:
        return
    marker = None
    if passed is not None:
        digest = hashlib.sha256("\0".join([passed[1], *modules]).encode()).hexdigest()
        marker = passed[0] / digest[:32]
        where = ""
        if not marker.is_file() and shared is not None \
                and shared.check_passed(digest, passed[1], modules):
            _mark_passed(marker, modules)
            where = ", by another runner: cache registry"
        if marker.is_file():
            reporter.step(f"Process types' entry points import (checked for this "
                          f"dependency layer before{where}): " + ", ".join(modules))
            return
    reporter.step("Checking that the process types' entry points import: "
                  + ", ".join(modules))
    if prepare is not None:
        prepare()
    env = clean_env({**exported_config(config_vars), "PYTHONDONTWRITEBYTECODE": "1",
                     "PYTHONNOUSERSITE": "1"}, path_first=[python.parent])
    probe: list[str | Path] = [str(python), "-c", _PROBE, *modules]
    try:
        def start(command: list[str | Path]) -> subprocess.CompletedProcess[str]:
            return subprocess.run(command, cwd=build_dir, env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, errors="replace",
                                  timeout=timeout)

        completed = layers.run_step(probe, start) if layers is not None else start(probe)
    except (OSError, subprocess.TimeoutExpired) as exc:
        reporter.warn(f"Could not check the entry points ({exc}); the slug was not checked.")
        return
    results = _probe_results(completed.stdout)
    if results is None:
        reporter.warn("Could not check the entry points: the check printed no result "
                      f"(exit code {completed.returncode}).")
        return
    for result in results:
        if "type" not in result:
            continue
        point = next(p for p in points if p.module == result["module"])
        importer = _shown_file(result.get("file"), build_dir)
        missing = result.get("missing")
        if result["type"] == "ModuleNotFoundError" and missing:
            raise errors.PROCESS_IMPORT_FAILED.error(
                process=point.process, command=process_types[point.process],
                word=point.word, module=point.module, missing=missing,
                explanation=explain_missing_module(missing, python_version,
                                                   lock_file, importer))
        reporter.warn(f"Importing {point.module} (the {point.process} process's "
                      f"`{point.word}`) failed at build time with {result['type']}: "
                      f"{result.get('message', '')}. It may need the dyno's environment; "
                      f"if not, the process will fail the same way when it starts.")
    if marker is not None and all("type" not in result for result in results):
        _mark_passed(marker, modules)
        if shared is not None and passed is not None:
            shared.record_check(digest, passed[1], modules)


class SharedChecks(Protocol):
    """Passed checks other machines recorded (cache_registry.RemoteCache)."""

    def check_passed(self, digest: str, layer_key: str, modules: list[str]) -> bool: ...

    def record_check(self, digest: str, layer_key: str, modules: list[str]) -> None: ...


def _mark_passed(marker: Path, modules: list[str]) -> None:
    with contextlib.suppress(OSError):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(" ".join(modules) + "\n")


def _probe_results(stdout: str) -> list[dict[str, str | None]] | None:
    """The probe's JSON line: per module, its name and, when the import failed, the
    exception's type, message, missing module and innermost file (each may be null)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("SLUGBUILD-IMPORTS "):
            try:
                data = json.loads(line[len("SLUGBUILD-IMPORTS "):])
            except ValueError:
                return None
            return data if isinstance(data, list) else None
    return None


def _shown_file(path: str | None, build_dir: Path) -> str | None:
    """A traceback's file as the user knows it: inside site-packages, or the app."""
    if not path:
        return None
    if "/site-packages/" in path:
        return path.split("/site-packages/", 1)[1]
    try:
        return os.path.relpath(path, build_dir) if path.startswith(str(build_dir)) else path
    except ValueError:
        return path
