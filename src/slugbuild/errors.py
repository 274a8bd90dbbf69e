"""Every error a user can meet, in one place.

Each kind has a stable code, a title, what was found and what to do. Stages
raise ``KIND.error(field=value, ...)``; the CLI renders the result herokuish
style and exits non-zero. docs/errors.md lists every kind (a test keeps the
two in step).
"""

from __future__ import annotations

import errno
import functools
import os
import re
import shutil
import string
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, TypedDict, TypeVar

CATALOG: dict[str, ErrorKind] = {}


class SlugbuildError(Exception):
    """A failure the user can act on: title, what was found, what to do.

    Every kind of the catalogue raises its own subclass (``KIND.exception``),
    which derives from the class of its area (``InputError``, ``SlugError``...),
    so library users branch on classes or on ``code``, never on the text. The
    values the templates were filled with are in ``fields`` and, for each
    name, as an attribute (``error.line`` of a ``ProcfileMalformedError``).
    """

    #: The area of the build the kind belongs to (one per area class).
    area: ClassVar[str] = "general"
    #: The catalogue kind, on the per-kind subclasses (``None`` on area classes).
    kind: ClassVar[ErrorKind | None] = None

    def __new__(cls, code: str = "", *args: Any, **kwargs: Any) -> SlugbuildError:
        # ``SlugbuildError(code, ...)`` made from a catalogue code is an instance
        # of that kind's class, so copies of an error keep their place in the
        # hierarchy.
        kind = CATALOG.get(code)
        if cls is SlugbuildError and kind is not None:
            cls = kind.exception
        return super().__new__(cls)

    def __init__(
        self, code: str, title: str, found: str, action: str, output: str | None = None,
        output_shown: bool = False, fields: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(f"{title}: {found}")
        self.code = code
        self.title = title
        self.found = found
        self.action = action
        self.output = output
        # The output was already streamed into the build log: render() does not
        # repeat it (``output`` stays for library users and as_dict).
        self.output_shown = output_shown
        self.fields: Mapping[str, object] = MappingProxyType(dict(fields or {}))
        for name, value in self.fields.items():
            if name not in _RESERVED:
                setattr(self, name, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.code, self.title, self.found, self.action, self.output,
                           self.output_shown, dict(self.fields)))

    def render(self) -> str:
        """The message as the command line prints it (` !     ` prefixed lines).

        The code comes first, so a user can search for it; config var values
        and URL credentials are masked, and control characters escaped, as
        everywhere slugbuild prints (``redact.mask``).
        """
        from .redact import mask

        lines = [f"Error [{self.code}]: {self.title}", ""]
        lines += self.found.splitlines()
        if self.output and not self.output_shown:
            lines += ["", "Output (last lines):"]
            lines += ["  " + line for line in self.output.splitlines()]
        lines += [""] + self.action.splitlines()
        lines.append(f"Documented in {self.docs}")
        return "\n".join((" !     " + mask(line)).rstrip() for line in lines)

    @property
    def docs(self) -> str:
        """Where this error's code is documented (a section of docs/errors.md)."""
        return f"{ERRORS_DOC}#{self.code}"

    def replacing(self, old: str, new: str) -> SlugbuildError:
        """The same error (same class and fields) with ``old`` replaced in its texts,
        e.g. a staged copy's path by the app directory the user knows."""
        texts = (self.title, self.found, self.action, self.output or "")
        title, found, action, output = (text.replace(old, new) for text in texts)
        fields = {name: value.replace(old, new) if isinstance(value, str) else value
                  for name, value in self.fields.items()}
        return type(self)(self.code, title, found, action, output=output or None,
                          output_shown=self.output_shown, fields=fields)

    def as_dict(self) -> ErrorDict:
        return {
            "code": self.code,
            "title": self.title,
            "found": self.found,
            "action": self.action,
            "output": self.output,
            "docs": self.docs,
        }


# Where every code is documented, one section per code (scripts/gen_errors_doc.py).
ERRORS_DOC = "docs/errors.md"


class ErrorDict(TypedDict):
    """``SlugbuildError.as_dict()``: what ``--json`` output holds for a failure."""

    code: str
    title: str
    found: str
    action: str
    output: str | None
    docs: str  # where the code is documented: docs/errors.md#<code>


# Attribute names a template field may not shadow.
_RESERVED = frozenset(dir(SlugbuildError)) | {
    "code", "title", "found", "action", "output", "output_shown", "fields", "args"}


def _rebuild(code: str, title: str, found: str, action: str, output: str | None,
             output_shown: bool, fields: dict[str, object]) -> SlugbuildError:
    return SlugbuildError(code, title, found, action, output, output_shown, fields)


# --- the areas: one class per part of the build a failure belongs to -------------
class InputError(SlugbuildError):
    """The app, its files or the options given are not something slugbuild can build."""

    area = "input"


class PythonRuntimeError(SlugbuildError):
    """The Python runtime asked for cannot be found, fetched, verified or relocated."""

    area = "runtime"


class DependencyError(SlugbuildError):
    """The app's packages (or system packages) cannot be resolved or installed."""

    area = "dependencies"


class BuildStepError(SlugbuildError):
    """A step of the build (a hook, collectstatic, a buildpack, the boot check) failed."""

    area = "build step"


class OutputError(SlugbuildError):
    """The slug or slug.json cannot be written, or the slug is over its size limit."""

    area = "output"


class SlugError(SlugbuildError):
    """A slug given to run, inspect or publish cannot be read or used."""

    area = "slug"


class PublishError(SlugbuildError):
    """Publishing a slug to the Heroku Platform API failed."""

    area = "publish"


class RegistryError(SlugbuildError):
    """An image reference, a container registry or its credentials cannot be used."""

    area = "registry"


class HostError(SlugbuildError):
    """The machine running slugbuild failed it: a full disk, a denied file, a broken tool."""

    area = "host"


class InternalError(SlugbuildError):
    """A bug in slugbuild (``internal-error``)."""

    area = "internal"


AREAS: tuple[type[SlugbuildError], ...] = (
    InputError, PythonRuntimeError, DependencyError, BuildStepError, OutputError,
    SlugError, PublishError, RegistryError, HostError, InternalError)


@dataclass(frozen=True)
class Variant:
    """One of a kind's forms: the same code and title, its own found (and action) text."""

    found: str
    action: str | None = None


@dataclass(frozen=True)
class ErrorKind:
    """A template for one kind of user-facing error.

    ``variants`` name the forms of a kind whose cause can be one of several
    things (the version file is UTF-16 without a mark, or not valid TOML...):
    the caller picks one by name, ``KIND.error(variant="toml", ...)``, and
    passes only data, so every sentence a user can read is written here.
    """

    code: str
    title: str
    found: str
    action: str
    area: type[SlugbuildError] = field(default=SlugbuildError)
    variants: Mapping[str, Variant] = field(default_factory=dict)
    #: Built-in exception classes the kind's class also derives from, so callers
    #: that catch those (``ValueError`` for a bad argument) keep working.
    also: tuple[type[Exception], ...] = ()
    #: The kind's own exception class (a subclass of ``area``), made here.
    exception: type[SlugbuildError] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.code in CATALOG:
            raise ValueError(f"duplicate error code {self.code}")
        if self.area not in AREAS:
            raise ValueError(f"{self.code}: {self.area!r} is not an area class")
        if not self.found and not self.variants:
            raise ValueError(f"{self.code}: no found text and no variants")
        name = "".join(part.capitalize() for part in self.code.split("-"))
        name = name if name.endswith("Error") else name + "Error"
        exception = type(name, (self.area, *self.also), {
            "__module__": __name__, "__doc__": self.title, "kind": self,
            "__qualname__": name})
        object.__setattr__(self, "exception", exception)
        CATALOG[self.code] = self

    @property
    def fields(self) -> tuple[str, ...]:
        """The names the templates (of every variant) are filled with."""
        templates = [self.title, self.found, self.action]
        for variant in self.variants.values():
            templates += [variant.found, variant.action or ""]
        return template_fields(*templates)

    def templates(self, variant: str | None = None) -> tuple[str, str]:
        """(found, action) of ``variant`` (the kind's own without one)."""
        if variant is None:
            if not self.found:
                raise TypeError(f"{self.code} needs a variant: one of {sorted(self.variants)}")
            return self.found, self.action
        chosen = self.variants[variant]
        return chosen.found, chosen.action if chosen.action is not None else self.action

    def error(self, output: str | None = None, output_shown: bool = False,
              variant: str | None = None, **values: object) -> SlugbuildError:
        """The error, its texts already masked (``redact.mask``): API users who show
        ``found`` or ``output`` themselves see no secret either."""
        from .redact import mask

        found, action = self.templates(variant)
        fields = {name: mask(value) if isinstance(value, str) else value
                  for name, value in values.items()}
        if variant is not None:
            fields["variant"] = variant
        return self.exception(
            self.code,
            mask(self.title.format(**values)),
            mask(found.format(**values)),
            mask(action.format(**values)),
            output=mask(output) if output is not None else None,
            output_shown=output_shown,
            fields=fields,
        )


def template_fields(*templates: str) -> tuple[str, ...]:
    """The ``{name}`` fields of ``templates``, in order of first use."""
    names: list[str] = []
    for template in templates:
        for _, name, _, _ in string.Formatter().parse(template):
            if name and name not in names:
                names.append(name)
    return tuple(names)


def exception_class(code: str) -> type[SlugbuildError]:
    """The exception class of the kind with ``code`` (KeyError for an unknown one)."""
    return CATALOG[code].exception


# --- general -------------------------------------------------------------------
INTERNAL_ERROR = ErrorKind(
    "internal-error",
    "Internal error in slugbuild",
    "slugbuild stopped on an unexpected {exception}: {message}\n"
    "The full traceback is in {traceback}.",
    "This is a bug in slugbuild, not in the app: please report it with that file "
    "(check it for anything private first). `slugbuild --verbose ...` prints the "
    "traceback instead.",
    area=InternalError,
)
USAGE_ERROR = ErrorKind(
    "usage-error",
    "The command line is not one slugbuild understands",
    "{prog}: {message}.",
    "Run `{prog} --help` for its options, their defaults and examples (exit status 2: "
    "nothing was done).",
    area=InputError,
)
DISK_FULL = ErrorKind(
    "disk-full",
    "No space left on the device",
    "Writing {path} failed: {reason}.",
    "Free some space on the file system holding it (or point --cache-dir / -o at one "
    "with room) and build again. Nothing half-written was kept.",
    area=HostError,
)
INTERRUPTED = ErrorKind(
    "build-interrupted",
    "Interrupted ({signal}): stopped",
    "slugbuild was stopped by {signal} before it finished, with every tool it started; no "
    "slug or output file was written, and nothing half-done was kept in the cache.",
    "Run the same command again when you are ready: it reuses what the cache already held.",
    area=HostError,
    variants={
        # Any command but compile (`slugbuild run`, inspect, image...): no build, no slug.
        "command": Variant(
            "`slugbuild {command}` was stopped by {signal} before it finished, with every "
            "process it started.",
            "Run the same command again when you are ready."),
    },
)
PERMISSION_DENIED = ErrorKind(
    "permission-denied",
    "Permission denied",
    "{path}: {reason}.",
    "Make the file or directory readable (and, for outputs and the cache, writable) by "
    "the user running slugbuild, or leave it out of the app with .slugignore.",
    area=HostError,
)
SYMLINK_LOOP = ErrorKind(
    "symlink-loop",
    "A symlink loop was found",
    "{path}: {reason} (a link that points, directly or through others, back at itself).",
    "Remove the looping link or make it point at a real file or directory.",
    area=InputError,
)
FILESYSTEM_ERROR = ErrorKind(
    "filesystem-error",
    "A file system operation failed",
    "{path}: {reason}.",
    "Check that the path exists and is a usable file or directory, then build again.",
    area=HostError,
    variants={
        "nul-in-argument": Variant("{path}: the {option} path holds a NUL byte, which no "
                                   "file name can."),
    },
)
INPUT_TOO_DEEP = ErrorKind(
    "input-too-deep",
    "{file} is nested too deeply",
    "{file} nests {what} so deeply that it cannot be read safely (past Python's "
    "recursion limit).",
    "No real app, lock file, manifest or program nests this deep: flatten the directories, "
    "or regenerate the file with its tool.",
    area=InputError,
)
TOOL_FAILED = ErrorKind(
    "tool-failed",
    "A program slugbuild runs failed",
    "`{command}` exited with code {exit_code}.",
    "Its last lines are shown above. Check that the program is installed and works on "
    "this machine; if it is one slugbuild runs on its own (strip, patchelf, the "
    "runtime's Python), please report it.",
    area=HostError,
)
FILE_NOT_TEXT = ErrorKind(
    "file-not-text",
    "{file} is not text slugbuild can read",
    "{file} could not be decoded: {reason}.",
    "Save it as UTF-8. Files are read as the tool that owns them reads them: a byte "
    "order mark (UTF-8, UTF-16, UTF-32) is honoured where that tool honours it, and a "
    "requirements file may also declare its encoding with a `# -*- coding: NAME -*-` "
    "line, as pip allows (docs/package-managers.md, File encodings).",
    area=InputError,
    variants={
        "unknown-coding": Variant("{file} could not be decoded: its coding line names "
                                  "{encoding!r}, which is not an encoding."),
        "undecodable": Variant("{file} could not be decoded: {reason} (read as {encoding})."),
        "nul-bytes": Variant("{file} could not be decoded: it holds NUL bytes: saved as "
                             "UTF-16 without a byte order mark? Save it as UTF-8, or as "
                             "UTF-16 with a BOM."),
    },
)

# --- detect -----------------------------------------------------------------
NOT_A_PYTHON_APP = ErrorKind(
    "not-a-python-app",
    "No Python app found",
    "{app_dir} has none of the files that mark a Python app ({markers}).",
    "Add a requirements.txt (or another supported package manager file) to the app's "
    "root directory, or point slugbuild at the directory that holds it: for an app in a "
    "subdirectory of a monorepo, `--app-base DIR` or the APP_BASE config var (Heroku's "
    "monorepo convention; only that directory becomes the slug).",
    area=InputError,
    variants={
        # ``subdirectories``: the first five, as `name/`; ``more``: how many others
        "app-in-subdirectory": Variant(
            "{app_dir} has none of the files that mark a Python app ({markers}).\n"
            "Its subdirectory `{subdirectory}/` holds a Python app: build it with "
            "`--app-base {subdirectory}` (or the config var APP_BASE={subdirectory})."),
        "apps-in-subdirectories": Variant(
            "{app_dir} has none of the files that mark a Python app ({markers}).\n"
            "These subdirectories hold Python apps: {subdirectories}. Choose one with "
            "`--app-base DIR` (or the APP_BASE config var)."),
        "apps-in-many-subdirectories": Variant(
            "{app_dir} has none of the files that mark a Python app ({markers}).\n"
            "These subdirectories hold Python apps: {subdirectories} and {more} more. Choose "
            "one with `--app-base DIR` (or the APP_BASE config var)."),
    },
)
APP_BASE_INVALID = ErrorKind(
    "app-base-invalid",
    "The app base is not a directory inside the app",
    "",
    "Name the directory that holds the Python app, relative to {root}, e.g. `backend` or "
    "`services/api`: only that directory's content becomes the slug, as with Heroku's "
    "monorepo buildpack.",
    area=InputError,
    variants={name: Variant("{value!r} (from {source}) " + problem + ".") for name, problem in {
        "control-character": "holds a control character",
        "absolute": "is an absolute path; it must be relative to the app root",
        "climbs-out": "uses `..`, which leaves the app root",
        "symlink-out": "resolves (through a symlink) to {real}, outside the app root",
        "missing": "does not exist in the app",
        "not-a-directory": "is not a directory",
    }.items()},
)

APP_DIR_MISSING = ErrorKind(
    "app-dir-missing",
    "App directory not found",
    "{app_dir} does not exist or is not a directory.",
    "Pass the path of the app's source directory, e.g. `slugbuild compile ./myapp`.",
    area=InputError,
)
INVALID_ARGUMENT = ErrorKind(
    "invalid-argument",
    "Invalid argument",
    "{function}: {argument}={value} {problem}.",
    "Pass {expected} (see docs/api.md).",
    area=InputError,
    # A library caller that catches ValueError for a bad argument still does.
    also=(ValueError,),
)
SLUG_PROCESS_NOT_LISTENING = ErrorKind(
    "slug-process-not-listening",
    "The process is not listening yet",
    "`{command}` (pid {pid}) did not listen on port {port} within {seconds} seconds.",
    "Give it longer (`wait_for_port(timeout=...)`), or read `logs()` to see what it is "
    "doing; `stop()` ends it.",
    area=SlugError,
)

NO_PACKAGE_MANAGER = ErrorKind(
    "no-package-manager",
    "No package manager file found",
    "{app_dir} is a Python app ({markers}) but has none of requirements.txt, "
    "Pipfile.lock, poetry.lock or uv.lock.",
    "Add a requirements.txt listing the app's dependencies (an empty file is fine for an "
    "app without any), e.g. from `pip freeze` in the app's virtual environment, or commit "
    "the lock file of the package manager you use (Pipenv, Poetry or uv).",
    area=InputError,
)

# --- stage sources ------------------------------------------------------------
UNSAFE_SYMLINK = ErrorKind(
    "unsafe-symlink",
    "A symlink points outside the app",
    "{path} -> {target} leaves the app directory (or is absolute).",
    "Replace the link with a copy of the file, or a relative link that stays inside the "
    "app; slugbuild never reads outside the app directory.",
    area=InputError,
)
UNSUPPORTED_FILE_TYPE = ErrorKind(
    "unsupported-file-type",
    "The app holds a file slugbuild cannot pack",
    "{path} is a {kind}, not a regular file, directory or symlink.",
    "Remove it from the app or list it in .slugignore.",
    area=InputError,
)
SLUGIGNORE_EXCLUDES_REQUIRED = ErrorKind(
    "slugignore-excludes-required",
    ".slugignore leaves out a file the build needs",
    "{path} is matched by .slugignore (pattern {pattern!r}), so the build cannot use it.",
    "Remove that pattern from .slugignore, or add `!{path}` below it: as on Heroku, "
    ".slugignore is applied before the build, so ignored files never reach it.",
    area=InputError,
)

# --- resolve runtime ------------------------------------------------------------
# Why a version file's content is not one version: variant -> what it does wrong.
_VERSION_PROBLEMS = {
    "no-version": "holds no version (only blanks or comments)",
    "several-versions": "lists {count} versions; only one is allowed",
    "empty": "is empty",
    "several-lines": "has {count} lines; only one version is allowed",
    "no-python-prefix": "must be `python-` followed by a version",
    "too-many-parts": "has more than three parts",
    "leading-zero": "has a leading zero in a version part",
    "major-only": "names only a major version",
    "other-implementation": "names another Python implementation; only CPython is supported",
    "free-threaded": "names a free-threaded build; only the default (GIL) build is supported",
    "range": "is a version range; a version file names one version (ranges belong in "
             "pyproject.toml's requires-python)",
    "python-prefix": "must be the bare version number, without a `python` prefix",
    "pre-release": "names a pre-release; only final releases are supported",
    "not-a-version": "is not a version number",
    "not-a-specifier": "is not a PEP 440 version specifier",
}
INVALID_PYTHON_VERSION = ErrorKind(
    "invalid-python-version",
    "Invalid Python version in {source_file}",
    "",
    "Write one final release version, major.minor (newest patch) or major.minor.patch, "
    "for example `{example}`.",
    area=PythonRuntimeError,
    variants={name: Variant("{source_file} says {content!r}: it " + problem + ".")
              for name, problem in _VERSION_PROBLEMS.items()},
)
# What python-version-unavailable advises: always the first line, then one line for
# the state of downloads, then a line for each of two notes that apply or not. Its
# variants are every combination: "<downloads>", "<downloads>+eol",
# "<downloads>+patch-fallback", "<downloads>+eol+patch-fallback".
_ASK_ANOTHER_PYTHON = (
    "Ask for one of the available versions in {where}, or make Python {wanted} available: "
    "install it (e.g. `pyenv install {wanted}`) or add its prefix to SLUGBUILD_PYTHON_PATH.")
_DOWNLOAD_STATES = {
    "no-downloads": "Or allow downloads: `--python-source local,download` "
                    "(`--python-download-url URL` names another index or mirror).",
    "offline": "Downloads are configured but --offline (SLUGBUILD_OFFLINE) forbids them: "
               "build once online so the runtime is cached, or drop --offline.",
    "index-unreadable": "The runtime index could not be read (see Sources tried). Check the "
                        "network, or point `--python-download-url` (SLUGBUILD_PYTHON_DOWNLOAD_"
                        "URL) at a reachable mirror or a local index file.",
    "not-in-index": "The runtime index has no Python {wanted} for this platform: point "
                    "`--python-download-url` at an index or release that has it.",
}
_PYTHON_NOTES = {
    "eol": "{eol} would match but reached end of life (see docs/python-versions.md); "
           "--allow-eol-python builds it anyway.",
    "patch-fallback": "To accept the newest available {major_minor} patch instead, build with "
                      "`--python-patch-fallback` (SLUGBUILD_PYTHON_PATCH_FALLBACK=1).",
}
_NO_RUNTIME_FOUND = (
    "{source_file} asks for Python {requested}, but no runtime for it was found.\n"
    "Available: {available}\n"
    "Sources tried: {sources}")
PYTHON_VERSION_UNAVAILABLE = ErrorKind(
    "python-version-unavailable",
    "Requested Python version is not available",
    "",
    "",
    area=PythonRuntimeError,
    variants={
        "+".join([state, *notes]): Variant(
            _NO_RUNTIME_FOUND,
            "\n".join([_ASK_ANOTHER_PYTHON, line, *(_PYTHON_NOTES[note] for note in notes)]))
        for state, line in _DOWNLOAD_STATES.items()
        for notes in ((), ("eol",), ("patch-fallback",), ("eol", "patch-fallback"))
    },
)
PYTHON_VERSION_EOL = ErrorKind(
    "python-version-eol",
    "Requested Python version has reached end of life",
    "{source_file} asks for Python {requested}; Python {major_minor} reached its upstream "
    "end of life in {eol}, no longer gets security fixes, and slugbuild does not build it "
    "(see docs/python-versions.md).",
    "Upgrade the app to a supported version ({supported}) and update {source_file}. To "
    "build it anyway (e.g. to reproduce an old slug), pass --allow-eol-python or set "
    "SLUGBUILD_ALLOW_EOL_PYTHON=1.",
    area=PythonRuntimeError,
)

MISSPELLED_VERSION_FILE = ErrorKind(
    "misspelled-version-file",
    "Python version file has the wrong name",
    "The app has a file named {found!r}, which looks like {expected} but is not read.",
    "Rename it: `git mv {found} {expected}`.",
    area=PythonRuntimeError,
)
VERSION_FILE_UNREADABLE = ErrorKind(
    "version-file-unreadable",
    "Cannot read the Python version from {source_file}",
    "",
    "Save it as UTF-8 text.",
    variants={
        "utf-16-invalid": Variant("{source_file} starts with a UTF-16 byte order mark but is "
                                  "not valid UTF-16 (byte {byte})."),
        "utf-16-without-bom": Variant(
            "{source_file} is saved as UTF-16 without a byte order mark (it holds NUL bytes).",
            "Save it as UTF-8 (in PowerShell: `Set-Content -Encoding utf8`)."),
        "utf-8-invalid": Variant("{source_file} is not valid UTF-8 (byte {byte})."),
        "json-invalid": Variant("{source_file} is not valid JSON ({reason}).",
                                "Regenerate it with `{relock}`."),
        "toml-invalid": Variant("{source_file} is not valid TOML ({reason}).",
                                "Fix the syntax error it names."),
    },
    area=PythonRuntimeError,
)
PYTHON_SOURCE_UNKNOWN = ErrorKind(
    "python-source-unknown",
    "Unknown Python runtime source",
    "{value!r} is not a runtime source; known sources: {known}.",
    "Pass a comma-separated list in the order to try, e.g. `--python-source local,download`.",
    area=PythonRuntimeError,
)

PYTHON_REGISTRY_INVALID = ErrorKind(
    "python-registry-invalid",
    "The published runtimes cannot be used",
    "{reference}: {reason}",
    "Give --python-registry (or SLUGBUILD_PYTHON_REGISTRY) as docker://HOST[:PORT]/REPO, "
    "or the directory `slugbuild runtime publish DIR` wrote.",
    area=PythonRuntimeError,
)
RUNTIME_PUBLISH_FAILED = ErrorKind(
    "runtime-publish-failed",
    "The Python runtime could not be published",
    "",
    "See docs/python-versions.md#published-runtimes.",
    area=PythonRuntimeError,
    variants={
        "target-invalid": Variant(
            "{target}: {reason}",
            "Publish to docker://HOST[:PORT]/REPO (a repository: the tags are slugbuild's) "
            "or to a directory."),
        "unwritable": Variant(
            "{target} cannot be written: {reason}",
            "Publish to a directory this user can create and write."),
        "store-invalid": Variant(
            "{target} holds an entry that does not match its digests: {reason}",
            "Publish into an empty directory (or repository); builds refuse such an "
            "entry and take their runtime from the other sources."),
        "store-failed": Variant(
            "{target} could not be read or written: {reason}",
            "Check the address, the credentials (--registry-user, REGISTRY_AUTH_FILE, "
            "docker login) and that the registry is up, then publish again; builds keep "
            "using what was published before."),
        "no-part": Variant(
            "the slug part of the Python {version} runtime layer could not be kept in the "
            "cache {cache} (read-only, or full)",
            "Publish with a cache directory this user can write (--cache-dir)."),
    },
)

# --- runtime layer ---------------------------------------------------------------
RUNTIME_RELOCATION_FAILED = ErrorKind(
    "runtime-relocation-failed",
    "Could not make the Python runtime relocatable",
    "",
    "Use a CPython installed into its own prefix (pyenv, python-build-standalone, or "
    "`./configure --prefix=... --enable-shared`) and list it in SLUGBUILD_PYTHON_PATH.",
    area=PythonRuntimeError,
    variants={
        "runpath": Variant("patchelf could not rewrite the RUNPATH of {prefix}: {reason}"),
        "prefix-left": Variant("{count} file(s) of the copy of {prefix} still name it: "
                               "{files}"),
        "does-not-start": Variant("The copy of {prefix} does not start: {stderr}"),
        "not-cpython": Variant("The interpreter of {prefix} does not behave like CPython: "
                               "asked for its prefix and version, it printed {printed!r}."),
        "old-prefix": Variant("The copy of {prefix} still uses {used} as its prefix."),
        "wrong-version": Variant("{prefix} reports Python {reported}, expected {expected}."),
    },
)

RUNTIME_DOWNLOAD_FAILED = ErrorKind(
    "runtime-download-failed",
    "Could not download the Python runtime",
    "{url}: {reason} (tried {attempts} time(s)).",
    "Check the network and the download URL (--python-download-url or "
    "SLUGBUILD_PYTHON_DOWNLOAD_URL), or build with a local runtime "
    "(`--python-source local`). Nothing was cached from this attempt.",
    area=PythonRuntimeError,
    variants={
        "offline": Variant("{url}: not in the cache and --offline forbids downloading (tried "
                           "0 time(s))."),
        "missing-on-s3": Variant(
            "{url}: no such archive (S3 answers 403 or 404 for a missing one): this patch "
            "was not built for this stack, or the bucket is not Heroku's (tried 1 time(s))."),
    },
)
RUNTIME_CHECKSUM_MISMATCH = ErrorKind(
    "runtime-checksum-mismatch",
    "Downloaded Python runtime does not match its published checksum",
    "{url} has SHA-256 {actual}, but {checksums} says {expected}.",
    "The archive was corrupted or tampered with on the way; it was refused and nothing "
    "was cached. Retry later, or check the mirror behind the download URL.",
    area=PythonRuntimeError,
    variants={
        "etag": Variant("{url} has SHA-256 {actual} (MD5 differs), but the server's ETag "
                        "says the MD5 of ETag {etag}."),
    },
)
RUNTIME_CHECKSUM_MISSING = ErrorKind(
    "runtime-checksum-missing",
    "Downloaded Python runtime cannot be verified",
    "{url}: no <archive>.sha256 beside it and no MD5 ETag to check it against.",
    "slugbuild installs only runtimes whose bytes it can check. Serve a `<archive>.sha256` "
    "file beside the archive (sha256sum format) on the mirror, or use the download source "
    "(`--python-source local,download`). Nothing was cached.",
    area=PythonRuntimeError,
)
RUNTIME_ARCHIVE_INVALID = ErrorKind(
    "runtime-archive-invalid",
    "Downloaded Python runtime archive is not usable",
    "",
    "The URL must serve a python-build-standalone `install_only` archive (a top-level "
    "`python/` directory) or a Heroku Python archive. Nothing was cached.",
    area=PythonRuntimeError,
    variants={
        "no-prefix": Variant("{url}: it holds no CPython prefix (bin/pythonX.Y, "
                             "lib/pythonX.Y/os.py, include/pythonX.Y/patchlevel.h) at its top "
                             "or in python/."),
        "wrong-version": Variant("{url}: its name says Python {named} but it holds Python "
                                 "{held}."),
        "cannot-unpack": Variant("{url}: it cannot be unpacked ({reason})."),
        "unsafe-member": Variant("{url}: {member}: {reason}."),
    },
)

# --- dependencies ----------------------------------------------------------------
REQUIREMENTS_FILE_MISSING = ErrorKind(
    "requirements-file-missing",
    "A requirements file is missing",
    "{referrer} line {line} includes {target}, which does not exist in the app.",
    "Add the file to the app, or fix the path on that line (paths are relative to the "
    "file that names them).",
    area=DependencyError,
)
REQUIREMENTS_FILE_IGNORED = ErrorKind(
    "requirements-file-ignored",
    "A requirements file is left out by .slugignore",
    "{referrer} line {line} includes {target}, which .slugignore leaves out (pattern "
    "{pattern!r}).",
    "Remove that pattern from .slugignore, or add `!{target}` below it: .slugignore is "
    "applied before the build, as on Heroku, so ignored files never reach the installer.",
    area=DependencyError,
)
REQUIREMENTS_OUTSIDE_APP = ErrorKind(
    "requirements-outside-app",
    "A requirements file points outside the app",
    "{referrer} line {line} includes {target}, which is outside the app directory.",
    "Keep every requirements file inside the app so the build only depends on the app.",
    area=DependencyError,
)
DEPENDENCY_INSTALL_FAILED = ErrorKind(
    "dependency-install-failed",
    "Could not install the app's dependencies",
    "`{command}` failed (exit code {exit_code}).",
    "Check the requirement names and versions in {lock_file} against the package index "
    "({index}); the installer's own message is above. Nothing was cached from this "
    "attempt.",
    area=DependencyError,
)
LOCAL_PACKAGE_FAILED = ErrorKind(
    "local-package-failed",
    "Could not build the local package {package}",
    "`{command}` failed (exit code {exit_code}) while building {package}: a package in "
    "the app, named by its path and built from its source during the build.",
    "Its build output is shown here. Check that it builds on its own "
    "(`pip wheel --no-deps {package}` in the app directory): its pyproject.toml or "
    "setup.py, and that its build requirements can be had from the package index. "
    "Nothing was cached from this attempt.",
    area=DependencyError,
)



def _needs(needed: str, advice: str) -> Variant:
    """A form of dependency-needs-system-library: what the build needs, what to do."""
    return Variant(
        "`{command}` failed (exit code {exit_code}): {package} is built from source here, "
        f"and its build needs {needed}, which this machine does not have.",
        f"{advice}\nNothing was cached from this attempt.")


# The variant names are installers/failures.py's table of what an installer's
# output says is missing.
DEPENDENCY_NEEDS_SYSTEM_LIBRARY = ErrorKind(
    "dependency-needs-system-library",
    "A dependency needs a system library to build",
    "",
    "",
    area=DependencyError,
    variants={
        "pg-config": _needs(
            "PostgreSQL's pg_config (the libpq development files)",
            "Use a package with binary wheels, which bundle libpq: `psycopg2-binary` instead "
            "of `psycopg2`, or `psycopg[binary]` for psycopg 3. Heroku's build image ships "
            "libpq-dev, so psycopg2 builds from source there; to do the same here, install "
            "libpq-dev and a C compiler on the build machine (`apt-get install libpq-dev "
            "build-essential`)."),
        "mysql-config": _needs(
            "MySQL's client development files (mysql_config / the mysqlclient pkg-config "
            "module)",
            "Heroku's build image ships libmysqlclient-dev, so mysqlclient builds there; to "
            "do the same here, install default-libmysqlclient-dev, pkg-config and a C "
            "compiler on the build machine (`apt-get install default-libmysqlclient-dev "
            "pkg-config build-essential`). Or use a pure-Python driver such as PyMySQL "
            "(Django: `pymysql.install_as_MySQLdb()`)."),
        "rust": _needs(
            "a Rust toolchain (cargo)",
            "Pin a release of the package that publishes a wheel for this Python and "
            "platform (building from source needs Rust), or ask for a Python it has wheels "
            "for in .python-version."),
        "c-compiler": _needs(
            "a C compiler (gcc)",
            "Install build-essential on the build machine, or pin a release of the package "
            "that publishes a wheel for this Python and platform."),
        "c-header": _needs(
            "the C header {header}",
            "Install the development package that provides {header} on the build machine "
            "(Debian/Ubuntu: `apt-file search {header}` names it); Heroku users list such "
            "packages in an Aptfile, with the heroku-community/apt buildpack before the "
            "Python one. Or pin a release of the package that publishes a wheel for this "
            "Python and platform."),
    },
)
_SDIST_BUILD_FAILED = (
    "`{command}` failed (exit code {exit_code}): {package} has no wheel for Python "
    "{python} on this platform, so it was built from source, and that build failed.")
DEPENDENCY_BUILD_FAILED = ErrorKind(
    "dependency-build-failed",
    "A dependency does not build on Python {python}",
    _SDIST_BUILD_FAILED,
    "Pin a release of {package} that publishes wheels for Python {major_minor} (newer "
    "releases usually do), or ask for the Python the pinned release supports in "
    ".python-version. The build's own message is above. Nothing was cached from this "
    "attempt.",
    area=DependencyError,    variants={
        # its build script imports a module this Python no longer has (distutils...)
        "removed-stdlib": Variant(_SDIST_BUILD_FAILED + "\nLikely cause: its build script "
                                  "imports {module}: {explanation}."),
    },
)
DEPENDENCIES_EXCLUDED_BY_MARKERS = ErrorKind(
    "dependencies-excluded-by-markers",
    "No dependency of {lock_file} applies to Python {python}",
    "{lock_file} declares {count} requirement(s), and the environment marker of every one "
    "excludes Python {python}, so nothing was installed and the app's processes could not "
    "start:\n{listed}",
    "Ask for a Python the markers allow in .python-version{suggestion}, or correct the "
    "markers (a marker such as `; python_version < \"3.12\"` skips the requirement on "
    "3.12 and later).",
    area=DependencyError,
)
INSTALLER_UNSUPPORTED_PYTHON = ErrorKind(
    "installer-unsupported-python",
    "No installer supports Python {python}",
    "The build would install with {installer}, which supports Python {supported}; no "
    "older pip slugbuild knows of supports Python {python} (older pips are kept for: "
    "{versions}).",
    "Ask for a newer Python in .python-version (a line such as `3.13`).",
    area=DependencyError,
)
PROCESS_IMPORT_FAILED = ErrorKind(
    "process-import-failed",
    "The {process} process would not start: {missing} is missing",
    "`{process}: {command}` starts `{word}`, whose module {module} cannot be imported "
    "from the slug: No module named '{missing}'.\nLikely cause: {explanation}.",
    "Fix the dependencies and build again; every start of this process would fail the "
    "same way. (The check imports only the entry module of each process type's command, "
    "never the app's own code.)",
    area=DependencyError,
)
PROCESS_COMMAND_EXCLUDED = ErrorKind(
    "process-command-excluded",
    "The {process} process would not start: {program} was not installed",
    "`{process}: {command}` runs `{program}`, but {lock_file} asks for it as `{line}`, "
    "whose environment marker excludes Python {python}: it was not installed, and the "
    "process would fail with `{program}: not found`.",
    "Correct the marker, or ask for a Python it allows in .python-version.",
    area=DependencyError,
)
PROCESS_COMMAND_UNKNOWN = ErrorKind(
    "process-command-unknown",
    "The {process} process would not start: `{program}` is not a command of the slug",
    "`{process}: {command}` runs `{program}`, which is neither a program the installed "
    "packages provide, nor a file of the app, nor on this machine's PATH; the slug has "
    "`{suggestion}`. On a dyno the process would fail with `{program}: command not found`.",
    "Correct the Procfile (did you mean `{suggestion}`?), or add the package that provides "
    "`{program}` to the app's requirements.",
    area=InputError,
)

# --- system packages (Aptfile) ------------------------------------------------------
APTFILE_INVALID = ErrorKind(
    "aptfile-invalid",
    "An Aptfile line cannot be read",
    "Aptfile line {line} (`{text}`): {reason}.",
    "List one Debian package name per line (`libodbc2`), or the URL of a .deb "
    "(`https://host/pkg.deb`, optionally `#sha256=HEX`); `#` starts a comment. "
    "See docs/system-packages.md.",
    area=DependencyError,
)
APTFILE_UNSUPPORTED = ErrorKind(
    "aptfile-unsupported",
    "The Aptfile's system packages cannot be installed here",
    "The app has an Aptfile, but this build cannot fetch the stack's packages "
    "({stack}: {reason}).",
    "Build on a Debian or Ubuntu machine of the app's stack (with apt-get and dpkg-deb), "
    "or vendor the libraries into the app and set LD_LIBRARY_PATH in a .profile.d script. "
    "See docs/system-packages.md.",
    area=DependencyError,
)
APTFILE_INSTALL_FAILED = ErrorKind(
    "aptfile-install-failed",
    "Could not fetch the Aptfile's system packages",
    "`{command}` failed.",
    "Check the package names against the stack's distribution (`apt-cache policy NAME` "
    "on a machine of the stack) and that its mirror is reachable; the tool's message is "
    "above. Nothing was cached from this attempt.",
    area=DependencyError,
)
APTFILE_CHECKSUM_MISMATCH = ErrorKind(
    "aptfile-checksum-mismatch",
    "A .deb from the Aptfile does not match its checksum",
    "{url} has SHA-256 {actual}, but the Aptfile says {expected}.",
    "Make sure the URL serves the file you meant (a changed or tampered download is "
    "refused), then update the checksum in the Aptfile. Nothing was cached.",
    area=DependencyError,
)

# --- build steps -------------------------------------------------------------------
COLLECTSTATIC_FAILED = ErrorKind(
    "collectstatic-failed",
    "Django's collectstatic failed",
    "`python {manage_py} collectstatic --noinput` exited with code {exit_code}.{diagnosis}",
    "Common causes: STATIC_ROOT is not set; settings read an environment variable that "
    "the build does not have (pass it with --env KEY=VALUE or --env-dir); a file named "
    "in a template or CSS is missing for manifest storage.\n"
    "Set DEBUG_COLLECTSTATIC=1 for the build to print the environment it ran with.\n"
    "To skip this step, set DISABLE_COLLECTSTATIC=1 for the build.",
    area=BuildStepError,
)
HOOK_FAILED = ErrorKind(
    "hook-failed",
    "The app's {hook} hook failed",
    "`bin/{hook}` exited with code {exit_code}.",
    "Fix bin/{hook} (its output is above); it runs from the app root with the build's "
    "config vars and the slug's Python first on PATH. Remove the file to skip the hook.",
    area=BuildStepError,
    variants={
        "not-started": Variant("`bin/{hook}` could not be started ({reason}): check its #! "
                               "line."),
        # ``cause``: importcheck's explanation of the ModuleNotFoundError it printed
        "missing-module": Variant("`bin/{hook}` exited with code {exit_code}; likely cause: "
                                  "{cause}."),
    },
)

BUILD_TIMED_OUT = ErrorKind(
    "build-timed-out",
    "The build took too long",
    "{step} was still running when the build reached its time limit of {limit} and was "
    "stopped, with every process it started.",
    "Find out why the step is slow (its output is above), or allow more time with "
    "--timeout SECONDS (or SLUGBUILD_BUILD_TIMEOUT; 0 means no limit). Nothing was written.",
    area=BuildStepError,
)
SYMLINK_LEAVES_SLUG = ErrorKind(
    "symlink-leaves-slug",
    "A build step left a symlink pointing outside the slug",
    "",
    "Make the link relative to a file inside the app (e.g. `ln -s ../data/x {path}`), or "
    "copy the file instead: `slugbuild run`, `inspect` and `publish` refuse slugs with such "
    "links, so the build stops before writing one.",
    area=BuildStepError,
    variants={
        "link-absolute": Variant("{path} -> {target}: its link target {target} is absolute, "
                                 "so it leaves the slug."),
        "link-leaves": Variant("{path} -> {target}: its link target {target} leaves the "
                               "slug."),
    },
)
_LIFT_SIZE_LIMIT = (
    "Heroku refuses slugs over 500 MB compressed; raise or lift the limit with "
    "--max-slug-size SIZE (or SLUGBUILD_MAX_SLUG_SIZE; 0 for none) only where the slug goes "
    "somewhere that takes it. Nothing was written or uploaded.")
SLUG_TOO_LARGE = ErrorKind(
    "slug-too-large",
    "The slug is larger than the slug size limit",
    "",
    "{advice}" + _LIFT_SIZE_LIMIT,
    area=OutputError,
    variants={
        # ``breakdown``: slug_size.render's table; ``advice``: its tips, one `- ` line each
        "slug": Variant("The slug is {size} compressed ({size_bytes} bytes), over the limit "
                        "of {limit} ({limit_bytes} bytes, from {source}).\n{breakdown}"),
        "layers": Variant(
            "The Python runtime and installed packages alone are {size} compressed "
            "({size_bytes} bytes), over the limit of {limit} ({limit_bytes} bytes, from "
            "{source}) (checked before collectstatic and packing).", _LIFT_SIZE_LIMIT),
    },
)
PACK_SOURCE_UNREADABLE = ErrorKind(
    "pack-source-unreadable",
    "A file of the slug could not be read while packing",
    "",
    "Make the file readable by the user running slugbuild (a build step that creates it "
    "decides its mode), or remove it in bin/post_compile if the slug does not need it, "
    "then build again. Nothing was written.",
    area=BuildStepError,
    variants={
        "unreadable": Variant("{path}: {reason}."),
        "shrank": Variant(
            "{path} shrank while it was being packed (something is still writing to it).",
            "Find what still writes into the build tree after the build steps (a process a "
            "hook started in the background?) and stop it before the hook ends, then build "
            "again. Nothing was written."),
    },
)
# --- NLTK corpora --------------------------------------------------------------------
NLTK_LIST_INVALID = ErrorKind(
    "nltk-list-invalid",
    "nltk.txt is not a list of NLTK identifiers",
    "",
    "List one NLTK package or collection identifier a line (e.g. `punkt`, `stopwords`, "
    "`popular`), as `python -m nltk.downloader` takes them; lines starting with `#` are "
    "comments.",
    area=BuildStepError,
    variants={
        "not-text": Variant("nltk.txt cannot be read as UTF-8 text ({error})."),
        "bad-identifier": Variant("nltk.txt line {line} names {word!r}, which is not an NLTK "
                                  "package or collection identifier."),
    },
)
NLTK_INDEX_UNUSABLE = ErrorKind(
    "nltk-index-unusable",
    "Could not read NLTK's data index",
    "",
    "The app has nltk.txt and installs nltk, so its corpora are downloaded from NLTK's "
    "index. Check the network, or point the NLTK_INDEX_URL config var at a mirror laid out "
    "like https://raw.githubusercontent.com/nltk/nltk_data/gh-pages/ (an index.xml and "
    "the package zips it names). Nothing was cached from this attempt.",
    area=BuildStepError,
    variants={name: Variant("{url}: " + problem + ".") for name, problem in {
        "not-xml": "it is not XML ({reason})",
        "bad-package-entry": "a package entry has the id {ident!r} or no url",
        "subdir-leaves": "package {ident!r} has the subdir {subdir!r}, which leaves the data "
                         "directory",
        "bad-size": "package {ident!r} has the size {size!r}",
        "no-packages": "it lists no packages",
        "unfetchable": "it could not be fetched ({reason})",
        "too-large": "is larger than {limit} bytes",
    }.items()},
)
NLTK_CORPUS_UNAVAILABLE = ErrorKind(
    "nltk-corpus-unavailable",
    "An NLTK corpus listed in nltk.txt could not be had",
    "",
    "Check the spelling in nltk.txt against the identifiers of NLTK's index (`python -m "
    "nltk.downloader -l` lists them), or the mirror named by NLTK_INDEX_URL. Nothing was "
    "cached from this attempt.",
    area=BuildStepError,
    variants={name: Variant("{corpus!r} " + problem + " (index {url}).") for name, problem in {
        "not-in-index": "is not a package or collection of the index",
        "not-in-index-close": "is not a package or collection of the index (close: {close})",
        "no-checksum": "has no checksum in the index, so it cannot be verified",
        "wrong-size": "arrived with {received} bytes, but the index says {expected}",
        "checksum-mismatch": "does not match its {algorithm} checksum in the index",
        "not-a-zip": "is not a zip archive ({reason})",
        "zip-too-large": "unpacks to more files or bytes than any NLTK package",
        "member-outside": "holds the member {member!r}, outside `{corpus}/`",
        "member-not-a-file": "holds {member!r}, which is not a regular file",
        "unpack-failed": "could not be unpacked ({error}: {reason})",
        "undownloadable": "could not be downloaded ({reason})",
        "too-large": "is larger than {limit} bytes",
    }.items()},
)

# --- buildpacks ---------------------------------------------------------------------
BUILDPACK_FETCH_FAILED = ErrorKind(
    "buildpack-fetch-failed",
    "Could not fetch a buildpack",
    "{spec}: {reason}",
    "Check the URL and the #ref (a branch or tag), or use a local path to the buildpack.",
    area=BuildStepError,
)
BUILDPACK_INVALID = ErrorKind(
    "buildpack-invalid",
    "Not a buildpack",
    "{spec} ({path}) has no bin/compile.",
    "A buildpack needs bin/detect, bin/compile and optionally bin/release "
    "(Heroku's buildpack API); point --buildpack or .buildpacks at one.",
    area=BuildStepError,
)
BUILDPACK_DETECT_FAILED = ErrorKind(
    "buildpack-detect-failed",
    "App not compatible with buildpack",
    "{spec}: bin/detect refused the app.",
    "Check that the app has the files this buildpack looks for, or remove the buildpack "
    "from --buildpack / .buildpacks.",
    area=BuildStepError,
)
BUILDPACK_COMPILE_FAILED = ErrorKind(
    "buildpack-compile-failed",
    "A buildpack failed to compile the app",
    "{spec}: bin/compile exited with code {exit_code}.",
    "The buildpack's own output is above; fix what it reports and build again. Nothing was "
    "written.",
    area=BuildStepError,
)
BUILDPACK_RELEASE_INVALID = ErrorKind(
    "buildpack-release-invalid",
    "A buildpack's release output is invalid",
    "",
    "bin/release must print YAML with optional `default_process_types` and `config_vars` "
    "mappings; fix the buildpack.",
    area=BuildStepError,
    variants={
        "exit-code": Variant("{spec}: bin/release exited with code {exit_code}."),
        "not-yaml": Variant("{spec}: its output is not YAML ({reason})."),
        "not-a-mapping": Variant("{spec}: its output is not a YAML mapping."),
        "key-not-a-mapping": Variant("{spec}: `{key}` is not a mapping."),
        "bad-process-type-name": Variant(
            "{spec}: `default_process_types` has the name {name}, but process type names "
            "are letters, digits, `_` and `-`."),
        "bad-config-var-name": Variant(
            "{spec}: `config_vars` has the name {name}, but config var names are letters, "
            "digits and `_`, not starting with a digit."),
        "value-not-a-string": Variant("{spec}: `{key}` {name} is not a string."),
        "value-holds-nul": Variant("{spec}: `{key}` {name} holds a NUL character."),
        "no-command": Variant("{spec}: process type {process!r} has no command."),
        "addons-not-names": Variant("{spec}: `addons` is not a list of names."),
    },
)

BUILDPACK_LIST_INVALID = ErrorKind(
    "buildpack-list-invalid",
    "The app's buildpack list cannot be read",
    "",
    "app.json lists buildpacks as `\"buildpacks\": [{{\"url\": \"heroku/nodejs\"}}, "
    "{{\"url\": \"heroku/python\"}}]`; fix the file, or list the buildpacks one a line "
    "in .buildpacks (which wins over app.json), or pass --buildpack.",
    area=InputError,
    variants={
        "not-json": Variant("{source} is not JSON ({error}: {reason})."),
        "not-an-object": Variant("{source} is not a JSON object."),
        "not-a-list": Variant("{source} has `buildpacks` that is not a list."),
        "no-url": Variant("{source} has buildpacks[{position}] without a `url` string."),
    },
)
BUILDPACK_FORM_UNSUPPORTED = ErrorKind(
    "buildpack-form-unsupported",
    "A buildpack line uses a form slugbuild does not run",
    "{source} has the line {spec!r}: `DIR=URL` is heroku-buildpack-subdir's form (run "
    "{buildpack} inside the subdirectory {directory}/), and slugbuild does not run "
    "buildpacks in subdirectories.",
    "For a Python app kept in {directory}/, build that directory alone with "
    "`--app-base {directory}` (or the APP_BASE config var; only its content becomes the "
    "slug) and list its buildpacks in {directory}/.buildpacks. Otherwise list each "
    "buildpack as a plain path, URL or URL#ref.",
    area=InputError,
)
MONOREPO_BUILDPACK_WITHOUT_APP_BASE = ErrorKind(
    "monorepo-buildpack-without-app-base",
    "The monorepo buildpack is listed but no app base is set",
    "{source} lists {spec}, which builds the subdirectory named by the APP_BASE config "
    "var, but APP_BASE is not set.",
    "Set the app base: `--app-base DIR` or `--env APP_BASE=DIR` (slugbuild does what that "
    "buildpack does itself; see docs/app-shapes.md), and remove the buildpack from {source}.",
    area=InputError,
)

APP_JSON_INVALID = ErrorKind(
    "app-json-invalid",
    "The app's app.json cannot be used",
    "",
    "Fix app.json as Heroku's app.json schema describes it "
    "(https://devcenter.heroku.com/articles/app-json-schema): `env` maps each config var "
    "to a string or to {{\"value\": ..., \"required\": ..., \"generator\": \"secret\"}}, "
    "and `scripts.postdeploy` is a command string or {{\"command\": ..., \"size\": ...}}.",
    area=InputError,
    variants={
        "not-json": Variant("app.json is not JSON ({error}: {reason})."),
        "not-an-object": Variant("app.json is not a JSON object."),
        "env-not-an-object": Variant("app.json has `env` that is not an object."),
        "env-entry": Variant("app.json's env entry {name!r} {problem}."),
        "scripts-not-an-object": Variant("app.json has `scripts` that is not an object."),
        "script": Variant("app.json's scripts.{script} {problem}."),
    },
)
APP_JSON_ENV_REQUIRED = ErrorKind(
    "app-json-env-required",
    "app.json requires config vars the build was not given",
    "app.json marks {names} as required, without a value, and --app-json-env applies its "
    "env to this build, as Heroku's app setup and review apps do.",
    "Give each a value (`--env NAME=...` or a file in --env-dir), or build without "
    "--app-json-env (as `git push heroku` does, which does not read app.json's env).",
    area=InputError,
)

NODE_NOT_FOUND = ErrorKind(
    "node-not-found",
    "The built-in Node step needs node and npm",
    "The build asked for the built-in Node step, but {missing} is not on PATH ({reason}).",
    "Make Node.js releases reachable (nodejs.org, or a mirror named by "
    "SLUGBUILD_NODE_DIST_URL), or install Node.js on the build machine (on Debian or "
    "Ubuntu: `apt-get install nodejs npm`), or list the Node.js buildpack "
    "(`heroku/nodejs`) instead of the built-in step.",
    area=BuildStepError,
    variants={
        "broken-node": Variant("The build asked for the built-in Node step, but a working "
                               "node ({node} --version failed) is not on PATH ({reason})."),
    },
)
NODE_VERSION_INVALID = ErrorKind(
    "node-version-invalid",
    "The requested Node.js or npm version is not a semver range",
    "{source} is {value!r}: {problem}.",
    "Use a range as npm and Heroku read it: `22.x`, `^20.11`, `>=20 <23`, `20 || 22` or an "
    "exact `22.11.0` (`node --version` shows the one you develop with).",
    area=InputError,
    variants={"not-a-string": Variant("{source} is {value!r}: it is not a string.")},
)
NODE_VERSION_UNSATISFIABLE = ErrorKind(
    "node-version-unsatisfiable",
    "No release satisfies the requested Node.js or npm version",
    "{source} asks for {tool} {requested}, but no release in {where} satisfies it (the "
    "newest there is {newest}).",
    "Change the range to one that includes a release, as on Heroku, where such a build "
    "fails too (https://nodejs.org/en/about/previous-releases lists them).",
    area=InputError,
)
NODE_RUNTIME_UNAVAILABLE = ErrorKind(
    "node-runtime-unavailable",
    "The requested Node.js or npm could not be had",
    "{tool} {requested} was asked for, but {reason}.",
    "Check the network, or set SLUGBUILD_NODE_DIST_URL to a mirror laid out like "
    "https://nodejs.org/dist (npm: the npm_config_registry config var names the registry); "
    "or build with the machine's node and npm (SLUGBUILD_NODE_VERSION=system). Nothing "
    "was cached.",
    area=BuildStepError,
    variants={
        "offline": Variant("{tool} {requested} was asked for, but it is not in the cache, "
                           "and --offline forbids downloading it."),
        "no-integrity": Variant("{tool} {requested} was asked for, but the registry gives "
                                "no sha512 integrity for {url}."),
        "machine-lacks-tools": Variant("{tool} {requested} was asked for, but {reason}, and "
                                       "{missing} is not on PATH."),
        "machine-node-differs": Variant("{tool} {requested} was asked for, but {reason}, and "
                                        "the machine's node ({node}) is {version}."),
    },
)
NODE_CHECKSUM_MISMATCH = ErrorKind(
    "node-checksum-mismatch",
    "Downloaded Node.js or npm does not match its published checksum",
    "{url} has {algorithm} {actual}, but {checksums} says {expected}.",
    "The archive was corrupted or tampered with on the way; it was refused and nothing "
    "was cached. Retry later, or check the mirror behind SLUGBUILD_NODE_DIST_URL (or "
    "npm_config_registry).",
    area=BuildStepError,
)
NODE_ARCHIVE_INVALID = ErrorKind(
    "node-archive-invalid",
    "Downloaded Node.js or npm archive is not usable",
    "{url}: {problem}.",
    "The URL must serve a nodejs.org release archive (node-vX.Y.Z-linux-ARCH.tar.xz: one "
    "top directory with bin/node and lib/node_modules/npm), or the npm registry's npm "
    "package. Nothing was cached.",

    area=BuildStepError,
)
NODE_BUILD_UNSUPPORTED = ErrorKind(
    "node-build-unsupported",
    "The built-in Node step cannot build this app",
    "",
    "",
    area=BuildStepError,
    variants={
        "no-package-json": Variant(
            "The build asked for the built-in Node step, but the app has no package.json.",
            "Remove the Node step, or add the package.json that describes the assets' "
            "build."),
        "other-lock": Variant(
            "The build asked for the built-in Node step, but the app locks its Node packages "
            "with {manager} ({lock_file}), which npm ignores.",
            "List the Node.js buildpack (`heroku/nodejs`, which runs Yarn and pnpm) instead "
            "of the built-in step, or commit a package-lock.json."),
    },
)
NODE_BUILD_FAILED = ErrorKind(
    "node-build-failed",
    "The app's Node build failed",
    "`{command}` exited with code {exit_code}.",
    "npm's own message is above; fix package.json or its lock file and build again. The "
    "step runs in the app root with the build's config vars; node_modules is not kept.",
    area=BuildStepError,
)

BUILDPACK_NOT_BUNDLED = ErrorKind(
    "buildpack-not-bundled",
    "The bundled Python buildpack is missing",
    "This slugbuild installation ({package}) holds no copy of buildpacks/python.",
    "Reinstall slugbuild from its wheel or sdist (`pip install --force-reinstall "
    "slugbuild`), which carry the buildpack, or use a source checkout's buildpacks/python.",
    area=HostError,
)
BUILDPACK_INSTALL_REFUSED = ErrorKind(
    "buildpack-install-refused",
    "Cannot install the buildpack there",
    "",
    "Name a new or empty directory, e.g. `slugbuild buildpack install /tmp/buildpacks/"
    "00_python`; `--force` replaces the contents of an existing one.",
    area=InputError,
    variants={
        "not-empty": Variant("{target} already exists and is not empty."),
        "not-a-directory": Variant("{target} exists and is not a directory.",
                                   "Name a new or empty directory."),
        "not-a-buildpack": Variant(
            "{target} is not empty and holds no buildpack installed by slugbuild (no "
            "lib/slugbuild-python): --force replaces an earlier install only, never another "
            "directory's contents.", "Name a new or empty directory, or an earlier install."),
    },
)

# --- release metadata ----------------------------------------------------------------
PROCFILE_MALFORMED = ErrorKind(
    "procfile-malformed",
    "Procfile is malformed",
    "",
    "Each line must be `name: command`, where name is letters, digits, `_` or `-`. "
    "Comments start with `#`.",
    area=InputError,
    variants={
        "no-colon": Variant("Procfile line {line}: expected `name: command`\n  {text}"),
        "bad-name": Variant("Procfile line {line}: {name!r} is not a valid process type "
                            "name\n  {text}"),
        "no-command": Variant("Procfile line {line}: process type {name!r} has no command\n"
                              "  {text}"),
        "declared-twice": Variant("Procfile line {line}: process type {name!r} is declared "
                                  "twice\n  {text}"),
        "not-text": Variant("Procfile line {line}: the file is not text ({reason})\n  {text}"),
        "too-large": Variant(
            "Procfile line 1: {file} is {size} bytes, more than the {limit} `slugbuild run`, "
            "`inspect` and `publish` read from a slug (SLUGBUILD_MAX_METADATA_SIZE); shorten "
            "its commands (a long one belongs in a script the line runs)\n  "),
    },
)
MISSPELLED_PROCFILE = ErrorKind(
    "misspelled-procfile",
    "Procfile has the wrong name",
    "The app has a file named {found!r}, which looks like a Procfile but is not read: only "
    "a file named exactly `Procfile` declares process types.",
    "Rename it: `git mv {found} Procfile`.",
    area=InputError,
)

# --- boot check ------------------------------------------------------------------------
BOOT_CHECK_FAILED = ErrorKind(
    "boot-check-failed",
    "The slug did not boot",
    "",
    "Fix the web process (run it locally with `slugbuild compile` then `slugbuild run "
    "SLUG web`), or give it longer with `--boot-check-timeout SECONDS`. No slug was written to "
    "{slug}.",
    area=BuildStepError,
    variants={
        "no-web-process": Variant(
            "The boot check found no `web` process type to start (add a `web:` line to the "
            "Procfile, or build without --boot-check).\n  web: (none)"),
        "exited": Variant(
            "The boot check started the web process from the packed slug on {address}; it "
            "exited with code {exit_code} before answering HTTP (a web process must keep "
            "running and serve $PORT).\n  web: {command}"),
        "killed": Variant(
            "The boot check started the web process from the packed slug on {address}; it "
            "exited with signal {signal} before answering HTTP (a web process must keep "
            "running and serve $PORT).\n  web: {command}"),
        "timed-out": Variant(
            "The boot check started the web process from the packed slug on {address}; it "
            "did not answer HTTP within {seconds} seconds (does it listen on $PORT? is "
            "the timeout long enough?).\n  web: {command}"),
        "not-http": Variant(
            "The boot check started the web process from the packed slug on {address}; "
            "something answered on $PORT, but not with HTTP ({answer!r}).\n  web: {command}"),
    },
)

# --- options and config ------------------------------------------------------------------
INVALID_CONFIG_VAR = ErrorKind(
    "invalid-config-var",
    "Invalid build config var",
    "",
    "Pass config vars as --env KEY=VALUE (KEY is letters, digits and `_`, not starting "
    "with a digit), or as files named KEY in an --env-dir directory.",
    area=InputError,
    variants={
        "bad-name": Variant("{value!r} is not a valid name."),
        "not-a-string": Variant("{value!r} has a {type} value, not a string."),
        "holds-nul": Variant("{value!r} has a value holding a NUL byte, which no process "
                             "environment can carry."),
        "too-large": Variant("{value!r} has a value of {size} bytes; one variable may hold at "
                             "most {limit} (the kernel's limit for one environment string)."),
        "bad-index-urls": Variant(
            "{value!r} is not a list of valid index URLs (http, https or file; a password "
            "holding `/`, `@` or `:` must be percent-encoded, e.g. `%2F`)."),
        "all-too-large": Variant(
            "'{count} config vars' hold {total} bytes together; at most {limit} fit beside "
            "the build tools' own environment and arguments."),
        "argument-without-equals": Variant("'--env argument {number}' ({length} characters, "
                                           "not shown) has no `=`."),
        "line-without-equals": Variant("'line {number} of {path}' ({length} characters, not "
                                       "shown) has no `=`."),
    },
)
ENV_FILE_UNREADABLE = ErrorKind(
    "env-file-unreadable",
    "Cannot read the env file",
    "{path}: {reason}",
    "Pass a readable file of KEY=VALUE lines with --env-file.",
    area=InputError,
)
ENV_DIR_MISSING = ErrorKind(
    "env-dir-missing",
    "Config var directory not found",
    "{env_dir} does not exist or is not a directory.",
    "Pass a directory holding one file per config var (file name = KEY, content = value).",
    area=InputError,
)
BAD_SLUG_SIZE = ErrorKind(
    "bad-slug-size",
    "Invalid slug size limit",
    "{source} is {value!r}: {reason}.",
    "Give a size such as 500MB, 500M, 1.5GB or a number of bytes (K, M and G are binary, as "
    "Heroku's are: 500MB is 524,288,000 bytes); 0 or `none` for no limit.",
    area=InputError,
    variants={"negative": Variant("{source} is {value!r}: a size is not negative.")},
)
INVALID_LIMIT = ErrorKind(
    "invalid-limit",
    "Invalid limit",
    "",
    "Fix or unset {name}; docs/security.md lists every limit and its default.",
    area=InputError,
    variants={
        "size": Variant("{name} is {value!r}, which is not a size in bytes, optionally with "
                        "K, M, G or T."),
        "count": Variant("{name} is {value!r}, which is not a whole number."),
        "seconds": Variant("{name} is {value!r}, which is not a number of seconds (0: no "
                           "limit)."),
    },
)
OUTPUT_NOT_WRITABLE = ErrorKind(
    "output-not-writable",
    "Cannot write the slug",
    "{path}: {reason}",
    "Choose an output path in an existing, writable directory with -o.",
    area=OutputError,
    variants={
        "is-directory": Variant("{path}: it is a directory; give a file name, e.g. -o "
                                "{suggested}"),
        "not-regular-file": Variant(
            "{path}: something other than a regular file is there (a device, a fifo or a "
            "symlink), which the output would replace; give the path of a regular file or "
            "a new one"),
        "no-directory": Variant("{path}: its directory does not exist"),
        "directory-not-writable": Variant("{path}: its directory is not writable ({reason})"),
        "metadata-is-slug": Variant("{path}: the slug and its metadata (--metadata-output) "
                                    "would be the same file",
                                    "Give slug.json a path of its own with --metadata-output, "
                                    "or leave it out to write it beside the slug."),
        "sbom-is-other-output": Variant("{path}: the SBOM (--sbom-output) would be the slug "
                                        "or its slug.json",
                                        "Give the SBOM a path of its own with --sbom-output, "
                                        "or leave it out to write it beside the slug."),
        "stdout-is-metadata": Variant(
            "{path}: --json output goes there (stdout is redirected to it), and so would the "
            "slug's metadata, written beside {slug}: one would overwrite the other.",
            "Write the metadata elsewhere with --metadata-output FILE, or send the --json "
            "output to another file."),
    },
)
CACHE_DIR_UNUSABLE = ErrorKind(
    "cache-dir-unusable",
    "Cannot use the cache directory",
    "{path}: {reason}",
    "Choose a writable directory with --cache-dir (or SLUGBUILD_CACHE_DIR).",
    area=OutputError,
    variants={
        "holds-app": Variant("{path}: it is the app directory, or holds it; give the cache a "
                             "directory of its own (inside the app is fine)"),
    },
)
CACHE_LAYER_CHANGING = ErrorKind(
    "cache-layer-changing",
    "A cached layer keeps changing while it is read",
    "The files of the cached layer {layer} changed {attempts} times while this build "
    "copied them (last: {path}): another build sharing the cache writes into its "
    "installed files in place. Nothing of this build was written.",
    "Retry once that build is done, or give concurrent builds their own cache directory "
    "(--cache-dir). A build step that edits installed files should replace them "
    "instead (write a new file, then rename it over the old one).",
    area=HostError,
)

CACHE_LAYER_GONE = ErrorKind(
    "cache-layer-gone",
    "A cached layer was removed while this build used it",
    "The cached layer {layer} was removed from the cache (another build sharing it "
    "discarded it, or the cache was cleaned) while this build packed it. Nothing of "
    "this build was written.",
    "Build again: the layer is made again if it is not in the cache.",
    area=HostError,
)
CACHE_REGISTRY_INVALID = ErrorKind(
    "cache-registry-invalid",
    "The cache registry cannot be used",
    "{reference}: {reason}",
    "Give --cache-registry (or SLUGBUILD_CACHE_REGISTRY) as docker://HOST[:PORT]/REPO, "
    "e.g. docker://registry.example.com/team/slugbuild-cache.",
    area=InputError,
)
CACHE_COMMAND_FAILED = ErrorKind(
    "cache-command-failed",
    "The cache command could not be done",
    "",
    "See docs/cache.md#cache-commands.",
    area=InputError,
    variants={
        "prune-nothing": Variant(
            "cache prune was given no limit",
            "Give --older-than DAYS, --max-size SIZE, or both."),
        "unwritable": Variant(
            "{target} cannot be written: {reason}",
            "Export to a directory this user can create and write."),
        "not-a-layout": Variant(
            "{target} is not a directory written by `slugbuild cache export` (no index.json)",
            "Import from the directory an export wrote (a CI cache action restores it), "
            "or from docker://HOST[:PORT]/REPO."),
        "store-invalid": Variant(
            "{target} holds an entry that does not match its digests or its index: {reason}",
            "Export the layers again into an empty directory (or repository); nothing "
            "wrong was put into the cache."),
        "store-failed": Variant(
            "{target} could not be read or written: {reason}",
            "Check the address, the credentials (docker login / REGISTRY_AUTH_FILE) and "
            "that the registry is up, then run the command again."),
    },
)

# --- run -----------------------------------------------------------------------------
SLUG_NOT_FOUND = ErrorKind(
    "slug-not-found",
    "Slug not found",
    "{path} is neither a slug tarball nor an unpacked slug directory.",
    "Pass the .tgz written by `slugbuild compile`, or a directory it was unpacked into.",
    area=SlugError,
)
SLUG_UNREADABLE = ErrorKind(
    "slug-unreadable",
    "Cannot read the slug",
    "{path}: {reason}.",
    "Pass a gzipped tarball written by `slugbuild compile` (the file may be truncated or "
    "corrupt, or the disk full); nothing was left behind.",
    area=SlugError,
    variants={"parts-short": Variant("{path}: its parts do not cover it.")},
)
SLUG_LIMIT_EXCEEDED = ErrorKind(
    "slug-limit-exceeded",
    "The slug is larger than allowed",
    "",
    "A slug from elsewhere is read with limits, so a hostile one cannot exhaust memory or "
    "disk. If you trust this slug, raise the limit with {variable} (see docs/security.md).",
    area=SlugError,
    variants={
        "entries": Variant("{path} holds more than {limit} entries (the limit is {limit} "
                           "entries)."),
        "unpacked": Variant("{path} holds more than {limit} bytes unpacked (the limit is "
                            "{limit} bytes unpacked)."),
        "metadata-file": Variant("{path} holds {file} of {size} bytes (the limit is {limit} "
                                 "bytes for a metadata file)."),
        "metadata-file-over": Variant("{path} holds {file} of more than {limit} bytes (the "
                                      "limit is {limit} bytes for a metadata file)."),
        "metadata-total": Variant(
            "{path} holds more metadata files than can be read (the limit is {total} bytes "
            "read in all (64 times the limit for one file))."),
    },
)
UNSAFE_SLUG = ErrorKind(
    "unsafe-slug",
    "The slug holds an unsafe entry",
    "",
    "Only unpack slugs made by a trusted build; this one was refused and nothing was "
    "written outside the target directory.",
    area=SlugError,
    variants={
        "path-too-long": Variant("{member}: its path or link target is longer than {limit} "
                                 "bytes."),
        "header-too-large": Variant("{member}: a long-name or pax header of {size} bytes (at "
                                    "most {limit} are read)."),
        "path-leaves": Variant("{member}: its path leaves the slug."),
        "entry-type": Variant("{member}: only files (not sparse), directories and symlinks "
                              "are allowed."),
        "link-absolute": Variant("{member}: its link target {target} is absolute, so it "
                                 "leaves the slug."),
        "link-leaves": Variant("{member}: its link target {target} leaves the slug."),
        "below-link": Variant("{member}: its path goes through the symlink {link}."),
        "duplicate": Variant("{member}: the slug holds this path twice."),
        # tarfile's extraction filter refused the entry; its words
        "refused-by-filter": Variant("{member}: {reason}."),
    },
)
UNPACK_TARGET_NOT_EMPTY = ErrorKind(
    "unpack-target-not-empty",
    "The directory to unpack the slug into is not empty",
    "{path} already holds {entry}: the slug unpacked over other files would run with them "
    "(a stale .profile.d script, Procfile or module), and a refused slug would leave them "
    "mixed.",
    "Give --unpack-to (unpack_to) a new or empty directory; nothing was written.",
    area=SlugError,
    variants={"not-directory": Variant("{path} exists and is not a directory.")},
)
PROCESS_TYPE_UNKNOWN = ErrorKind(
    "process-type-unknown",
    "Unknown process type",
    "The slug has no process type {process!r}. It has: {available}.",
    "Run one of those, e.g. `slugbuild run SLUG web`, or add a line to the Procfile.",
    area=SlugError,
)

WEB_PROCESS_EXITED = ErrorKind(
    "web-process-exited",
    "The web process exited without serving",
    "`{command}` exited with code {exit_code} before anything listened on port {port}.",
    "A web process must keep running and listen on $PORT. If the Procfile line chains "
    "commands (`a && b`), check that the last one starts the server; run other "
    "one-off steps as their own process type (e.g. `release`).",
    area=SlugError,
)

# --- publish -----------------------------------------------------------------------
PUBLISH_NO_TOKEN = ErrorKind(
    "publish-no-token",
    "No Heroku API token",
    "HEROKU_API_KEY is not set.",
    "Set HEROKU_API_KEY to an API token (e.g. from `heroku auth:token`) and publish again.",
    area=PublishError,
)
PUBLISH_BAD_TOKEN = ErrorKind(
    "publish-bad-token",
    "The Heroku API token is malformed",
    "HEROKU_API_KEY holds spaces, line breaks or other characters no API token has "
    "(it is not shown).",
    "Set HEROKU_API_KEY to the token alone, e.g. `export HEROKU_API_KEY=$(heroku "
    "auth:token)`, and publish again.",
    area=PublishError,
)
PUBLISH_WRONG_LAYOUT = ErrorKind(
    "publish-wrong-layout",
    "The slug is not in Heroku's layout",
    "{path} keeps the app at ./ (herokuish layout); the Heroku Platform API needs it under "
    "./app/.",
    "Compile it again with `slugbuild compile APP --layout heroku` and publish that slug.",
    area=PublishError,
)
PUBLISH_API_ERROR = ErrorKind(
    "publish-api-error",
    "The Heroku API refused a request",
    "{method} {url} answered {status}: {message}",
    "Check the app name and that the token may deploy to it; nothing was released.",
    area=PublishError,
    variants={"retried": Variant("{method} {url} answered {status}: {message} (tried "
                                 "{attempts} times)")},
)
# What a failed publish request leaves behind: before the release request nothing
# was released; a release request that failed may still have been acted on.
_NOTHING_RELEASED = "nothing was released"
_MAYBE_RELEASED = ("the release request may have reached the API: check `heroku releases "
                   "-a {app}` before publishing again")
_NOT_THE_API = "Check --api-url (it must be the Heroku Platform API); "
PUBLISH_BAD_RESPONSE = ErrorKind(
    "publish-bad-response",
    "The Heroku API answered something unexpected",
    "",
    _NOT_THE_API + "nothing was uploaded or released.",
    area=PublishError,
    variants={
        "no-slug-id": Variant(
            "{method} {url} answered a success with {answer} instead of a slug object with an "
            "`id`."),
        "no-blob-url": Variant(
            "{method} {url} answered a success with no http(s) `blob.url` to upload the slug "
            "to."),
        "upload-method": Variant(
            "{method} {url} answered a success with an upload method that is not PUT: "
            "{upload_method!r}."),
        "no-release-id": Variant(
            "{method} {url} answered a success with {answer} instead of a release object "
            "with an `id`.",
            "The slug was uploaded and the release was probably created: check `heroku "
            "releases -a {app}` before publishing again."),
        "too-large": Variant("{method} {url} answered an answer with more than {limit} "
                             "bytes.", "Check --api-url; " + _NOTHING_RELEASED + "."),
        "too-large-on-release": Variant(
            "{method} {url} answered an answer with more than {limit} bytes.",
            "Check --api-url; " + _MAYBE_RELEASED + "."),
        "not-json": Variant("{method} {url} answered {status} with a body that is not JSON.",
                            _NOT_THE_API + _NOTHING_RELEASED + "."),
        "not-json-on-release": Variant(
            "{method} {url} answered {status} with a body that is not JSON.",
            _NOT_THE_API + _MAYBE_RELEASED + "."),
    },
)
_TIMEOUT_ACTION = ("Check the network (or --api-url) and try again, with a longer --timeout "
                   "for a large slug on a slow link; ")
PUBLISH_TIMEOUT = ErrorKind(
    "publish-timeout",
    "The Heroku API took too long",
    "{method} {url} did not finish before the publish deadline ({seconds} seconds, "
    "--timeout).",
    _TIMEOUT_ACTION + _NOTHING_RELEASED + ".",
    area=PublishError,
    variants={"on-release": Variant(
        "{method} {url} did not finish before the publish deadline ({seconds} seconds, "
        "--timeout).", _TIMEOUT_ACTION + _MAYBE_RELEASED + ".")},
)
PUBLISH_RELEASE_FAILED = ErrorKind(
    "publish-release-failed",
    "The release phase failed",
    "Heroku created v{version} of {app}, but its release phase ended with status "
    "{status!r}: the release command failed (its output is above), so v{version} was not "
    "made current and the app still runs its previous release.",
    "Fix the `release` process type's command (run it locally with `slugbuild run SLUG "
    "release`), or read its output again with `heroku releases:output {version} -a {app}`; "
    "then publish again.",
    area=PublishError,
)
PUBLISH_BAD_API_URL = ErrorKind(
    "publish-bad-api-url",
    "Invalid Platform API URL",
    "{url} is not an http(s) URL with a host (a password holding `/`, `@` or `:` must be "
    "percent-encoded).",
    "Pass the API's base URL, e.g. `--api-url https://api.heroku.com`; the token goes in "
    "HEROKU_API_KEY, not in the URL.",
    area=PublishError,
)
PUBLISH_BAD_APP = ErrorKind(
    "publish-bad-app",
    "Invalid Heroku app name",
    "{app!r} is not a Heroku app name or id.",
    "Pass the app's name as `heroku apps` lists it (letters, digits and `-`).",
    area=PublishError,
)
PUBLISH_UNREACHABLE = ErrorKind(
    "publish-unreachable",
    "Could not reach the Heroku API",
    "{method} {url} failed: {reason}",
    "Check the network (or --api-url) and try again; " + _NOTHING_RELEASED + ".",
    area=PublishError,
    variants={
        "retried": Variant("{method} {url} failed: {reason} (tried {attempts} times)"),
        "on-release": Variant(
            "{method} {url} failed: {reason}",
            "Check the network (or --api-url) and try again; " + _MAYBE_RELEASED + "."),
        "on-release-retried": Variant(
            "{method} {url} failed: {reason} (tried {attempts} times)",
            "Check the network (or --api-url) and try again; " + _MAYBE_RELEASED + "."),
    },
)

# --- images and registries ---------------------------------------------------------
_REFERENCE_FORMS = ("`oci:DIR[:TAG]` (an OCI image layout), `docker-archive:FILE[:NAME[:TAG]]` "
                    "(for `docker load` / `podman load`) or `docker://HOST[:PORT]/REPO[:TAG]` "
                    "(a registry)")
IMAGE_REFERENCE_INVALID = ErrorKind(
    "image-reference-invalid",
    "Invalid image reference",
    "",
    "Write the image as " + _REFERENCE_FORMS + "; repository names are lowercase letters, "
    "digits and `._-` separators, tags at most 128 of letters, digits and `._-`.",
    area=RegistryError,
    variants={
        "scheme": Variant("{reference!r} does not start with a known transport ({schemes})."),
        "empty-path": Variant("{reference!r} names no {what} path."),
        "name": Variant("{reference!r}: {name!r} is not a valid repository name ({reason})."),
        "tag": Variant("{reference!r}: {tag!r} is not a valid tag."),
        "digest": Variant("{reference!r}: {digest!r} is not a sha256 digest "
                          "(`sha256:` and 64 lowercase hex digits)."),
        "host": Variant("{reference!r}: {host!r} is not a registry host (HOST or HOST:PORT)."),
        "digest-not-allowed": Variant(
            "{reference!r} names a digest: an image written by slugbuild gets its digest "
            "from its content, so only a tag can be given for {what}."),
    },
)
IMAGE_UNREADABLE = ErrorKind(
    "image-unreadable",
    "The image cannot be read",
    "{reference} cannot be read as an image: {reason}.",
    "Check the reference (`skopeo inspect REF` reads the same transports) and that the "
    "image was written completely; for a run image, build or pull it again.",
    area=RegistryError,
)
IMAGE_SOURCE_UNUSABLE = ErrorKind(
    "image-source-unusable",
    "The slug cannot be made into an image",
    "",
    "Compile the app again with this slugbuild (`slugbuild compile APP --image REF` builds "
    "the slug and the image together).",
    area=RegistryError,
    variants={
        "no-metadata": Variant("{slug} has no slug.json beside it ({metadata}): the image's "
                               "labels (process types, runtime, packages) come from it."),
        "metadata-mismatch": Variant("{metadata} describes another slug (its checksum is not "
                                     "{slug}'s)."),
        "metadata-unreadable": Variant("{metadata} is not a regular file of at most {limit} "
                                       "bytes (a slug.json is a few KiB)."),
        "not-slugbuild-image": Variant(
            "{reference} was not built by slugbuild (it has no `{label}` label), so its run "
            "image layers cannot be told from the app's.",
            "Rebase only images `slugbuild image` or `slugbuild compile --image` wrote; "
            "build others again with `slugbuild image SLUG --run-image NEW`."),
    },
)
REGISTRY_CREDENTIALS_INVALID = ErrorKind(
    "registry-credentials-invalid",
    "Registry credentials cannot be used",
    "",
    "Give both `--registry-user` and the password on standard input "
    "(`--registry-password-stdin`), or log in with `docker login` / `podman login`, "
    "which write the auth files slugbuild reads (docs/images.md, Credentials).",
    area=RegistryError,
    variants={
        "user-without-password": Variant("A registry user ({user!r}) was given without a "
                                         "password."),
        "password-without-user": Variant("A registry password was given without a user."),
        "password-unreadable": Variant(
            "The registry password on standard input (`--registry-password-stdin`) cannot "
            "be used: {reason}.",
            "Pipe exactly the password (or token), as UTF-8 text, on one line: "
            "`printf %s \"$TOKEN\" | slugbuild ... --registry-password-stdin`."),
        "unreadable-file": Variant("{path} cannot be read as a registry auth file: {reason}."),
        "bad-entry": Variant("{path}: the entry for {host} is not base64 of `USER:PASSWORD`."),
        "helper-missing": Variant(
            "{path} names the credential helper {helper} for {host}, and no program of "
            "that name is on PATH.",
            "Install the helper (or fix its name in {path}: credHelpers / credsStore), or "
            "pass `--registry-user USER --registry-password-stdin`."),
        "helper-failed": Variant(
            "The credential helper {helper} (named in {path}) could not give the "
            "credentials for {host}: {reason}.",
            "Run `echo {host} | {helper} get` to see why (log in again with the tool it "
            "belongs to), or pass `--registry-user USER --registry-password-stdin`."),
        "identity-token": Variant(
            "The credential helper {helper} (named in {path}) holds an identity token for "
            "{host}, which only Docker's OAuth2 token exchange accepts.",
            "Pass a user and an access token or password instead: `--registry-user USER "
            "--registry-password-stdin`."),
    },
)
REGISTRY_UNREACHABLE = ErrorKind(
    "registry-unreachable",
    "Could not reach the registry",
    "{method} {url} failed: {reason}",
    "Check the registry's host and port, that it is running and reachable from this "
    "machine, and try again; nothing was tagged.",
    area=RegistryError,
    variants={
        "retried": Variant("{method} {url} failed: {reason} (tried {attempts} times)"),
        "too-slow": Variant(
            "{method} {url} had not finished answering when the pull's {seconds} seconds "
            "ran out: the registry answers too slowly (or trickles its answer).",
            "Check the registry's load and the network between it and this machine; a "
            "build takes the layer from elsewhere (or makes it) meanwhile."),
    },
)
REGISTRY_AUTH_REFUSED = ErrorKind(
    "registry-auth-refused",
    "The registry refused the credentials",
    "{method} {url} answered {status}: {message}",
    "Check the user and password (`--registry-user`, `--registry-password-stdin`, or the "
    "entry for {host} in your Docker/podman auth file) and that they may {access} "
    "{repository}; nothing was tagged.",
    area=RegistryError,
    variants={
        "no-credentials": Variant(
            "{method} {url} answered {status}: the registry needs credentials and none were "
            "found for {host}.",
            "Log in (`docker login {host}` or `podman login {host}`) or pass "
            "`--registry-user USER --registry-password-stdin`; nothing was tagged."),
        "token": Variant("The token service {realm} answered {status}: {message}"),
    },
)
REGISTRY_PROTOCOL = ErrorKind(
    "registry-protocol",
    "The registry answered something unexpected",
    "{method} {url} answered {status}: {message}",
    "Check that {host} is an OCI/Docker registry (v2 API) and try again; nothing was "
    "tagged.",
    area=RegistryError,
    variants={
        "retried": Variant("{method} {url} answered {status}: {message} (tried {attempts} "
                           "times)"),
        "bad-answer": Variant("{method} {url} answered a success without {what}."),
        "too-large": Variant("{method} {url} answered more than {limit} bytes for a manifest."),
        "answer-too-large": Variant("{method} {url} answered more than {limit} bytes (a tag "
                                    "list, a token or an error is far smaller)."),
        "tags-endless": Variant(
            "{method} {url} lists more than {limit} tags, or links its pages of tags in a "
            "loop."),
        "blob-too-large": Variant(
            "{method} {url} {how} more than {limit} bytes for {what}, the most slugbuild "
            "takes for one.",
            "Nothing of it was kept. Check that the image or cache entry is the one meant "
            "(the registry may be hostile or broken).{remedy}"),
    },
)
REGISTRY_DIGEST_MISMATCH = ErrorKind(
    "registry-digest-mismatch",
    "Content from the registry does not match its digest",
    "{what} {expected} from {host}/{repository} has the digest {actual}.",
    "The registry (or something between it and this machine) changed the content: nothing "
    "of it was kept. Check the registry's storage, then try again.",
    area=RegistryError,
    variants={"refused": Variant(
        "{host}/{repository} refused {what} {expected}: it computed another digest ({message}).",
        "The content changed while it was sent (a file rewritten during the push?). Try "
        "again; nothing was tagged.")},
)

# --- package managers -----------------------------------------------------------------
MULTIPLE_PACKAGE_MANAGERS = ErrorKind(
    "multiple-package-managers",
    "More than one package manager file found",
    "{app_dir} has {files}, so it could be built with any of {managers}.",
    "Keep the file of the package manager the app really uses and delete the others "
    "(they usually disagree on versions). For example, a Poetry app that also exports a "
    "requirements.txt should stop committing the export.",
    area=DependencyError,
)
PIPFILE_WITHOUT_LOCK = ErrorKind(
    "pipfile-without-lock",
    "Pipfile found without Pipfile.lock",
    "{app_dir} has a Pipfile but no Pipfile.lock; slugbuild installs what the lock pins, "
    "as `pipenv install --deploy` does.",
    "Run `pipenv lock` in the app directory and commit the Pipfile.lock it writes.",
    area=DependencyError,
)
PROJECT_WITHOUT_LOCK = ErrorKind(
    "project-without-lock",
    "No lock file for the app's {found}",
    "{app_dir} has {found} but no requirements.txt, Pipfile.lock, poetry.lock or uv.lock, "
    "so the versions to install are not pinned anywhere.",
    "Pin the app's dependencies: `slugbuild lock {app_dir}` writes a requirements.txt "
    "from pyproject.toml, or run `poetry lock` / `uv lock` if you use those. "
    "For a setup.py-only app, add a requirements.txt holding the pinned dependencies "
    "(a single line `.` installs the app itself, unpinned).",
    area=DependencyError,
)
REQUIREMENTS_NOT_COMPILED = ErrorKind(
    "requirements-not-compiled",
    "requirements.in found without requirements.txt",
    "{app_dir} has a requirements.in (the input of `slugbuild lock` and pip-compile) but "
    "no requirements.txt.",
    "Run `slugbuild lock {app_dir}` (or `pip-compile`) and commit the requirements.txt it "
    "writes.",
    area=DependencyError,
)
COMMITTED_VIRTUALENV = ErrorKind(
    "committed-virtualenv",
    "The app contains a virtual environment",
    "{app_dir}/{directory} is a virtualenv (it has a pyvenv.cfg). It holds paths and "
    "binaries of the machine that made it and would not work in the slug.",
    "Delete {directory}/ from the app (`git rm -r --cached {directory}`) and add it to "
    ".gitignore; the build installs the dependencies itself.",
    area=DependencyError,
)
LOCK_FILE_MALFORMED = ErrorKind(
    "lock-file-malformed",
    "{lock_file} cannot be read",
    "{lock_file} is not valid {syntax}: {problem}",
    "Regenerate it with `{relock}` instead of editing it by hand, and commit the result.",
    area=DependencyError,
    variants={
        "too-deep": Variant("{lock_file} is not valid {syntax}: it is nested too deeply"),
        "bad-requirement": Variant("{lock_file} is not valid {syntax}: {requirement!r}: "
                                   "{reason}"),
        "bom": Variant("{lock_file} is not valid {syntax}: it starts with a byte order mark "
                       "(BOM), which {tool} refuses; save it as UTF-8 without a BOM"),
    },
)
LOCK_FILE_OUTDATED = ErrorKind(
    "lock-file-outdated",
    "{lock_file} does not match {manifest}",
    "`{command}` says the lock file is out of date (or unusable) for {manifest}.",
    "Run `{relock}` in the app directory and commit the updated {lock_file}.",
    area=DependencyError,
)
PYTHON_NOT_ALLOWED_BY_PROJECT = ErrorKind(
    "python-not-allowed-by-project",
    "Python {version} is not allowed by {manifest}",
    "The build's runtime is Python {version}{chosen}, but {manifest} ({where}) asks for "
    "`{constraint}`. Its lock's packages are locked for the Pythons it allows: on this "
    "one the lock cannot be installed (re-locking would not change that).",
    "Ask for a Python the project allows in .python-version (e.g. one matching "
    "`{constraint}`), or widen the constraint in {manifest} and re-lock.",
    area=DependencyError,
)
LOCK_TOOL_FAILED = ErrorKind(
    "lock-tool-failed",
    "`{command}` failed",
    "`{command}` could not read or export {lock_file} (exit code {exit_code}); its "
    "message is below. This is not an outdated lock: re-locking may not help.",
    "Read the tool's message: it names the problem (an unreachable index, a missing "
    "package, a file it could not read). Fix that and build again.",
    area=DependencyError,
)

CONSTRAINTS_UNUSABLE = ErrorKind(
    "constraints-unusable",
    "Cannot use {path} as constraints",
    "",
    "Pass the slug.json written beside an earlier slug, e.g. "
    "`slugbuild compile APP --constraints-from old/slug.json`.",
    area=DependencyError,
    variants={
        "device": Variant("{path}: a device, not a file"),
        "too-large": Variant("{path}: it is larger than any slug.json (16 MB)"),
        "missing": Variant("{path}: no such file"),
        "not-json": Variant("{path}: not a readable JSON file ({reason})"),
        "no-packages": Variant("{path}: it has no \"packages\" list of {{name, version}} "
                               "entries, so it is not a slug.json"),
        "bad-name": Variant("{path}: the package name {name!r} is not a valid project name "
                            "(PEP 508)"),
        "bad-version": Variant("{path}: the version {version!r} of {name} is not a valid "
                               "version (PEP 440)"),
    },
)
MANAGER_TOOL_FAILED = ErrorKind(
    "manager-tool-failed",
    "Could not prepare {tool}",
    "Installing {version} (used only during the build) failed (exit code "
    "{exit_code}).",
    "Check that the package index ({index}) is reachable from this machine; nothing was "
    "cached from this attempt.",
    area=DependencyError,
    variants={
        "incomplete": Variant(
            "Installing {version} (used only during the build) finished, but "
            "{missing} is not among what it installed.",
            "Check that the package index ({index}) serves {missing} as a wheel (build "
            "tools are installed from wheels only); nothing was cached from this attempt."),
    },
)

# --- lock ---------------------------------------------------------------------------------
NOTHING_TO_LOCK = ErrorKind(
    "nothing-to-lock",
    "Nothing to lock",
    "{app_dir} has neither a requirements.in nor a pyproject.toml with "
    "[project] dependencies.",
    "List the app's top-level dependencies in requirements.in (one per line) or in "
    "pyproject.toml's [project] dependencies, then run `slugbuild lock` again.",
    area=DependencyError,
)
LOCK_FAILED = ErrorKind(
    "lock-failed",
    "Could not pin the app's dependencies",
    "`{command}` failed (exit code {exit_code}); {output_file} was left unchanged.",
    "Check the names and version ranges in {input_file} against the package index "
    "({index}); the resolver's own message is above.",
    area=DependencyError,
)
LOCK_NO_PYTHON = ErrorKind(
    "lock-no-python",
    "No supported Python version fits the app's range",
    "{source_file} asks for Python {requested}, which none of the supported versions "
    "({supported}) satisfies, so there is no version to resolve the dependencies for.",
    "Widen the range in {source_file}, or pin one supported version in .python-version.",
    area=PythonRuntimeError,
)
LOCK_WOULD_CONFLICT = ErrorKind(
    "lock-would-conflict",
    "The app is already locked by {manager}",
    "{app_dir} has {lock_file}; a requirements.txt beside it would give the app two "
    "package managers, which `slugbuild compile` refuses.",
    "Update the existing lock with `{relock}` instead, or delete {lock_file} first if the "
    "app is moving to pip.",
    area=DependencyError,
)

# --- run images (the stack an image is built on) --------------------------------------
RUN_IMAGE_INCOMPATIBLE = ErrorKind(
    "run-image-incompatible",
    "The run image cannot run this slug",
    "{run_image} lacks what the slug's programs and libraries load at start:\n{missing}",
    "Use a run image that has them (Debian packages: {packages}), e.g. one made with "
    "`slugbuild stack build --include PACKAGE` (once for each of those packages), or add "
    "those packages to your own run image. An image "
    "built on this one would fail at boot with \"cannot open shared object file\".",
    area=InputError,
    variants={
        "architecture": Variant(
            "{run_image} is a {image_architecture} image; the slug's programs are "
            "{slug_architecture}.",
            "Use a {slug_architecture} run image, or build the slug on a "
            "{image_architecture} machine."),
    },
)
RUN_IMAGE_BUILD_FAILED = ErrorKind(
    "run-image-build-failed",
    "The run image could not be built",
    "`{command}` failed with exit code {exit_code}.",
    "Its last lines are shown above. mmdebstrap needs the Debian mirrors in "
    "{sources} to be reachable and root (or a user namespace); check them, or give "
    "a run image you already have with --run-image.",
    area=HostError,
    variants={
        "no-mmdebstrap": Variant(
            "`mmdebstrap` is not installed, and `slugbuild stack build` makes the run "
            "image with it.",
            "Install it (`apt-get install mmdebstrap` on Debian or Ubuntu), or give a run "
            "image you already have with --run-image."),
        "bad-output": Variant(
            "{reference!r} is a registry; `slugbuild stack build` writes a file.",
            "Give `oci:DIR[:TAG]` (an OCI image layout) or `docker-archive:FILE[:NAME:TAG]` "
            "(what `docker load` and `podman load` read), then push it with `skopeo copy` "
            "(or use it from there as --run-image)."),
        "no-mirror": Variant(
            "No Debian mirror was found in {sources} for {suite}.",
            "Add a `deb` line (or a deb822 .sources file) for the mirror to use, or pass "
            "--mirror URL."),
    },
)


# --- helpers ---------------------------------------------------------------------------
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is a file system call that failed for want of space (ENOSPC,
    EDQUOT, EFBIG), or a program slugbuild runs (strip, patchelf) that said so as it
    failed: the disk's fault, never the data's (a cached layer it was writing is not
    discarded for it)."""
    if isinstance(exc, OSError):
        return exc.errno in _DISK_FULL
    if isinstance(exc, subprocess.CalledProcessError):
        output = _tool_output(exc)
        return any(os.strerror(code) in output for code in _DISK_FULL)
    return False


def _tool_output(exc: subprocess.CalledProcessError) -> str:
    """What a failed program printed (stderr, else stdout), as text."""
    tail = exc.stderr or exc.output or ""
    return tail.decode("utf-8", "replace") if isinstance(tail, bytes) else str(tail)


def out_of_space(exc: OSError | subprocess.CalledProcessError) -> SlugbuildError:
    """``disk-full`` for a failure ``disk_full`` says is one: a file system call's,
    or a program's (naming it, with the line where it said so)."""
    if isinstance(exc, OSError):
        return from_os_error(exc)
    argv = exc.cmd if isinstance(exc.cmd, (list, tuple)) else [str(exc.cmd)]
    lines = _tool_output(exc).strip().splitlines()
    return DISK_FULL.error(
        path=f"the files `{os.path.basename(str(argv[0]))}` rewrote",
        reason=next((line.strip() for line in reversed(lines)
                     if any(os.strerror(code) in line for code in _DISK_FULL)),
                    os.strerror(errno.ENOSPC))[:300])


def from_os_error(exc: OSError, path: object = None, note: str = "") -> SlugbuildError:
    """The catalogue error for a failed file system call (ENOSPC, EACCES, ELOOP, ...).

    Stages that expect a particular failure raise their own kind; this is the
    net under every other file system call on app, cache and output paths.
    """
    code = exc.errno
    where = path if path is not None else (exc.filename or "a file")
    if exc.filename2 is not None and path is None:
        where = exc.filename2  # the destination of a copy or rename
    reason = exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) \
            and exc.args[0] and len(exc.args[0][0]) == 3:
        # copytree collects (source, destination, why) for every file that failed.
        failures = exc.args[0]
        _source, destination, why = failures[0]
        number = re.search(r"\[Errno (\d+)\]", str(why))
        code = int(number.group(1)) if number else None
        where = path if path is not None else destination
        reason = (os.strerror(code) if code else str(why)[:200]) + (
            f" ({len(failures)} files could not be copied)" if len(failures) > 1 else "")
    reason = str(reason)[:300] + note
    if code in _DISK_FULL:
        return DISK_FULL.error(path=where, reason=reason)
    if code in _DENIED:
        return PERMISSION_DENIED.error(path=where, reason=reason)
    if code == errno.ELOOP:
        return SYMLINK_LOOP.error(path=where, reason=reason)
    return FILESYSTEM_ERROR.error(path=where, reason=reason)


def from_exception(exc: BaseException) -> SlugbuildError | None:
    """The catalogue error for an exception raised by the environment, not by a bug.

    A failed file system call, an input nested past the recursion limit, a file
    that is not UTF-8, a path holding a NUL byte. None for anything else.
    """
    if isinstance(exc, SlugbuildError):
        return exc
    if isinstance(exc, OSError):
        return from_os_error(exc)
    if isinstance(exc, RuntimeError) and str(exc).startswith("Symlink loop from "):
        # pathlib's resolve() before Python 3.13 (3.13 raises OSError ELOOP)
        return SYMLINK_LOOP.error(path=str(exc)[len("Symlink loop from "):].strip("'"),
                                  reason="Too many levels of symbolic links")
    if isinstance(exc, RecursionError):
        return INPUT_TOO_DEEP.error(file="An input file or the app's directory tree",
                                    what="directories, lists, tables or expressions")
    if isinstance(exc, UnicodeDecodeError):
        return FILE_NOT_TEXT.error(file="An input file", reason=exc.reason)
    if isinstance(exc, subprocess.CalledProcessError):
        if disk_full(exc):
            return out_of_space(exc)
        argv = exc.cmd if isinstance(exc.cmd, (list, tuple)) else [str(exc.cmd)]
        tail = _tool_output(exc)
        command = " ".join(os.path.basename(str(argv[0])) if i == 0 else str(a)
                           for i, a in enumerate(argv[:4])) + (" …" if len(argv) > 4 else "")
        return TOOL_FAILED.error(command=command, exit_code=exc.returncode,
                                 output="\n".join(tail.strip().splitlines()[-20:]) or None)
    if isinstance(exc, ValueError) and "embedded null" in str(exc):
        return FILESYSTEM_ERROR.error(
            path="A path given to slugbuild or read from the app (an argument, a "
                 ".buildpacks line...)", reason="it holds a NUL byte, which no file name can")
    return None


_Function = TypeVar("_Function", bound=Callable[..., Any])


def user_errors(function: _Function) -> _Function:
    """Make the failures ``from_exception`` knows raise SlugbuildError from ``function``.

    For the library's entry points (compile_app, lock_app, publish_slug, ...), so
    API users, like the command line, get one catalogue error for a full disk or
    an unreadable file. Generic file system errors keep their cause chained.
    """

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except SlugbuildError:
            raise
        except (OSError, RuntimeError, UnicodeDecodeError,
                subprocess.CalledProcessError) as exc:  # RecursionError is a RuntimeError
            known = from_exception(exc)
            if known is None or known.code == FILESYSTEM_ERROR.code:
                raise  # maybe a bug: the caller (the CLI) shows it with its traceback
            raise known from exc

    return wrapper  # type: ignore[return-value]
