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
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

CATALOG: dict[str, ErrorKind] = {}


class SlugbuildError(Exception):
    """A failure the user can act on: title, what was found, what to do."""

    def __init__(
        self, code: str, title: str, found: str, action: str, output: str | None = None,
        output_shown: bool = False,
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
        return "\n".join((" !     " + mask(line)).rstrip() for line in lines)

    def as_dict(self) -> dict[str, str | None]:
        return {
            "code": self.code,
            "title": self.title,
            "found": self.found,
            "action": self.action,
            "output": self.output,
        }


@dataclass(frozen=True)
class ErrorKind:
    """A template for one kind of user-facing error."""

    code: str
    title: str
    found: str
    action: str
    fields: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.code in CATALOG:
            raise ValueError(f"duplicate error code {self.code}")
        CATALOG[self.code] = self

    def error(self, output: str | None = None, output_shown: bool = False,
              **values: object) -> SlugbuildError:
        """The error, its texts already masked (``redact.mask``): API users who show
        ``found`` or ``output`` themselves see no secret either."""
        from .redact import mask

        return SlugbuildError(
            self.code,
            mask(self.title.format(**values)),
            mask(self.found.format(**values)),
            mask(self.action.format(**values)),
            output=mask(output) if output is not None else None,
            output_shown=output_shown,
        )


# --- general -------------------------------------------------------------------
INTERNAL_ERROR = ErrorKind(
    "internal-error",
    "Internal error in slugbuild",
    "slugbuild stopped on an unexpected {exception}: {message}\n"
    "The full traceback is in {traceback}.",
    "This is a bug in slugbuild, not in the app: please report it with that file "
    "(check it for anything private first). `slugbuild --verbose ...` prints the "
    "traceback instead.",
)
DISK_FULL = ErrorKind(
    "disk-full",
    "No space left on the device",
    "Writing {path} failed: {reason}.",
    "Free some space on the file system holding it (or point --cache-dir / -o at one "
    "with room) and build again. Nothing half-written was kept.",
)
PERMISSION_DENIED = ErrorKind(
    "permission-denied",
    "Permission denied",
    "{path}: {reason}.",
    "Make the file or directory readable (and, for outputs and the cache, writable) by "
    "the user running slugbuild, or leave it out of the app with .slugignore.",
)
SYMLINK_LOOP = ErrorKind(
    "symlink-loop",
    "A symlink loop was found",
    "{path}: {reason} (a link that points, directly or through others, back at itself).",
    "Remove the looping link or make it point at a real file or directory.",
)
FILESYSTEM_ERROR = ErrorKind(
    "filesystem-error",
    "A file system operation failed",
    "{path}: {reason}.",
    "Check that the path exists and is a usable file or directory, then build again.",
)
INPUT_TOO_DEEP = ErrorKind(
    "input-too-deep",
    "{file} is nested too deeply",
    "{file} nests {what} so deeply that it cannot be read safely (past Python's "
    "recursion limit).",
    "No real app, lock file, manifest or program nests this deep: flatten the directories, "
    "or regenerate the file with its tool.",
)
TOOL_FAILED = ErrorKind(
    "tool-failed",
    "A program slugbuild runs failed",
    "`{command}` exited with code {exit_code}.",
    "Its last lines are shown above. Check that the program is installed and works on "
    "this machine; if it is one slugbuild runs on its own (strip, patchelf, the "
    "runtime's Python), please report it.",
)
FILE_NOT_TEXT = ErrorKind(
    "file-not-text",
    "{file} is not text slugbuild can read",
    "{file} could not be decoded: {reason}.",
    "Save it as UTF-8. Files are read as the tool that owns them reads them: a byte "
    "order mark (UTF-8, UTF-16, UTF-32) is honoured where that tool honours it, and a "
    "requirements file may also declare its encoding with a `# -*- coding: NAME -*-` "
    "line, as pip allows (docs/package-managers.md, File encodings).",
)

# --- detect -----------------------------------------------------------------
NOT_A_PYTHON_APP = ErrorKind(
    "not-a-python-app",
    "No Python app found",
    "{app_dir} has none of the files that mark a Python app ({markers}).{subdirectory}",
    "Add a requirements.txt (or another supported package manager file) to the app's "
    "root directory, or point slugbuild at the directory that holds it: for an app in a "
    "subdirectory of a monorepo, `--app-base DIR` or the APP_BASE config var (Heroku's "
    "monorepo convention; only that directory becomes the slug).",
)
APP_BASE_INVALID = ErrorKind(
    "app-base-invalid",
    "The app base is not a directory inside the app",
    "{value!r} (from {source}) {problem}.",
    "Name the directory that holds the Python app, relative to {root}, e.g. `backend` or "
    "`services/api`: only that directory's content becomes the slug, as with Heroku's "
    "monorepo buildpack.",
)

APP_DIR_MISSING = ErrorKind(
    "app-dir-missing",
    "App directory not found",
    "{app_dir} does not exist or is not a directory.",
    "Pass the path of the app's source directory, e.g. `slugbuild compile ./myapp`.",
)

NO_PACKAGE_MANAGER = ErrorKind(
    "no-package-manager",
    "No package manager file found",
    "{app_dir} is a Python app ({markers}) but has none of requirements.txt, "
    "Pipfile.lock, poetry.lock or uv.lock.",
    "Add a requirements.txt listing the app's dependencies (an empty file is fine for an "
    "app without any), e.g. from `pip freeze` in the app's virtual environment, or commit "
    "the lock file of the package manager you use (Pipenv, Poetry or uv).",
)

# --- stage sources ------------------------------------------------------------
UNSAFE_SYMLINK = ErrorKind(
    "unsafe-symlink",
    "A symlink points outside the app",
    "{path} -> {target} leaves the app directory (or is absolute).",
    "Replace the link with a copy of the file, or a relative link that stays inside the "
    "app; slugbuild never reads outside the app directory.",
)
UNSUPPORTED_FILE_TYPE = ErrorKind(
    "unsupported-file-type",
    "The app holds a file slugbuild cannot pack",
    "{path} is a {kind}, not a regular file, directory or symlink.",
    "Remove it from the app or list it in .slugignore.",
)
SLUGIGNORE_EXCLUDES_REQUIRED = ErrorKind(
    "slugignore-excludes-required",
    ".slugignore leaves out a file the build needs",
    "{path} is matched by .slugignore (pattern {pattern!r}), so the build cannot use it.",
    "Remove that pattern from .slugignore, or add `!{path}` below it: as on Heroku, "
    ".slugignore is applied before the build, so ignored files never reach it.",
)

# --- resolve runtime ------------------------------------------------------------
INVALID_PYTHON_VERSION = ErrorKind(
    "invalid-python-version",
    "Invalid Python version in {source_file}",
    "{source_file} says {content!r}: it {problem}.",
    "Write one final release version, major.minor (newest patch) or major.minor.patch, "
    "for example `{example}`.",
)
PYTHON_VERSION_UNAVAILABLE = ErrorKind(
    "python-version-unavailable",
    "Requested Python version is not available",
    "{source_file} asks for Python {requested}, but no runtime for it was found.\n"
    "Available: {available}\n"
    "Sources tried: {sources}",
    "{advice}",
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
)

MISSPELLED_VERSION_FILE = ErrorKind(
    "misspelled-version-file",
    "Python version file has the wrong name",
    "The app has a file named {found!r}, which looks like {expected} but is not read.",
    "Rename it: `git mv {found} {expected}`.",
)
VERSION_FILE_UNREADABLE = ErrorKind(
    "version-file-unreadable",
    "Cannot read the Python version from {source_file}",
    "{source_file} {problem}.",
    "{action}",
)
PYTHON_SOURCE_UNKNOWN = ErrorKind(
    "python-source-unknown",
    "Unknown Python runtime source",
    "{value!r} is not a runtime source; known sources: {known}.",
    "Pass a comma-separated list in the order to try, e.g. `--python-source local,download`.",
)

# --- runtime layer ---------------------------------------------------------------
RUNTIME_RELOCATION_FAILED = ErrorKind(
    "runtime-relocation-failed",
    "Could not make the Python runtime relocatable",
    "{detail}",
    "Use a CPython installed into its own prefix (pyenv, python-build-standalone, or "
    "`./configure --prefix=... --enable-shared`) and list it in SLUGBUILD_PYTHON_PATH.",
)

RUNTIME_DOWNLOAD_FAILED = ErrorKind(
    "runtime-download-failed",
    "Could not download the Python runtime",
    "{url}: {reason} (tried {attempts} time(s)).",
    "Check the network and the download URL (--python-download-url or "
    "SLUGBUILD_PYTHON_DOWNLOAD_URL), or build with a local runtime "
    "(`--python-source local`). Nothing was cached from this attempt.",
)
RUNTIME_CHECKSUM_MISMATCH = ErrorKind(
    "runtime-checksum-mismatch",
    "Downloaded Python runtime does not match its published checksum",
    "{url} has SHA-256 {actual}, but {checksums} says {expected}.",
    "The archive was corrupted or tampered with on the way; it was refused and nothing "
    "was cached. Retry later, or check the mirror behind the download URL.",
)
RUNTIME_CHECKSUM_MISSING = ErrorKind(
    "runtime-checksum-missing",
    "Downloaded Python runtime cannot be verified",
    "{url}: {reason}.",
    "slugbuild installs only runtimes whose bytes it can check. Serve a `<archive>.sha256` "
    "file beside the archive (sha256sum format) on the mirror, or use the download source "
    "(`--python-source local,download`). Nothing was cached.",
)
RUNTIME_ARCHIVE_INVALID = ErrorKind(
    "runtime-archive-invalid",
    "Downloaded Python runtime archive is not usable",
    "{url}: {problem}.",
    "The URL must serve a python-build-standalone `install_only` archive (a top-level "
    "`python/` directory) or a Heroku Python archive. Nothing was cached.",
)

# --- dependencies ----------------------------------------------------------------
REQUIREMENTS_FILE_MISSING = ErrorKind(
    "requirements-file-missing",
    "A requirements file is missing",
    "{referrer} line {line} includes {target}, which does not exist in the app.",
    "Add the file to the app, or fix the path on that line (paths are relative to the "
    "file that names them).",
)
REQUIREMENTS_FILE_IGNORED = ErrorKind(
    "requirements-file-ignored",
    "A requirements file is left out by .slugignore",
    "{referrer} line {line} includes {target}, which .slugignore leaves out (pattern "
    "{pattern!r}).",
    "Remove that pattern from .slugignore, or add `!{target}` below it: .slugignore is "
    "applied before the build, as on Heroku, so ignored files never reach the installer.",
)
REQUIREMENTS_OUTSIDE_APP = ErrorKind(
    "requirements-outside-app",
    "A requirements file points outside the app",
    "{referrer} line {line} includes {target}, which is outside the app directory.",
    "Keep every requirements file inside the app so the build only depends on the app.",
)
DEPENDENCY_INSTALL_FAILED = ErrorKind(
    "dependency-install-failed",
    "Could not install the app's dependencies",
    "`{command}` failed (exit code {exit_code}).",
    "Check the requirement names and versions in {lock_file} against the package index "
    "({index}); the installer's own message is above. Nothing was cached from this "
    "attempt.",
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
)

DEPENDENCY_NEEDS_SYSTEM_LIBRARY = ErrorKind(
    "dependency-needs-system-library",
    "A dependency needs a system library to build",
    "`{command}` failed (exit code {exit_code}): {package} is built from source here, and "
    "its build needs {needed}, which this machine does not have.",
    "{advice}\nNothing was cached from this attempt.",
)
DEPENDENCY_BUILD_FAILED = ErrorKind(
    "dependency-build-failed",
    "A dependency does not build on Python {python}",
    "`{command}` failed (exit code {exit_code}): {package} has no wheel for Python "
    "{python} on this platform, so it was built from source, and that build failed.{cause}",
    "Pin a release of {package} that publishes wheels for Python {major_minor} (newer "
    "releases usually do), or ask for the Python the pinned release supports in "
    ".python-version. The build's own message is above. Nothing was cached from this "
    "attempt.",
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
)
INSTALLER_UNSUPPORTED_PYTHON = ErrorKind(
    "installer-unsupported-python",
    "No installer supports Python {python}",
    "The build would install with {installer}, which supports Python {supported}; no "
    "older pip slugbuild knows of supports Python {python} (older pips are kept for: "
    "{versions}).",
    "Ask for a newer Python in .python-version (a line such as `3.13`).",
)
PROCESS_IMPORT_FAILED = ErrorKind(
    "process-import-failed",
    "The {process} process would not start: {missing} is missing",
    "`{process}: {command}` starts `{word}`, whose module {module} cannot be imported "
    "from the slug: No module named '{missing}'.\nLikely cause: {explanation}.",
    "Fix the dependencies and build again; every start of this process would fail the "
    "same way. (The check imports only the entry module of each process type's command, "
    "never the app's own code.)",
)
PROCESS_COMMAND_EXCLUDED = ErrorKind(
    "process-command-excluded",
    "The {process} process would not start: {program} was not installed",
    "`{process}: {command}` runs `{program}`, but {lock_file} asks for it as `{line}`, "
    "whose environment marker excludes Python {python}: it was not installed, and the "
    "process would fail with `{program}: not found`.",
    "Correct the marker, or ask for a Python it allows in .python-version.",
)

# --- system packages (Aptfile) ------------------------------------------------------
APTFILE_INVALID = ErrorKind(
    "aptfile-invalid",
    "An Aptfile line cannot be read",
    "Aptfile line {line} (`{text}`): {reason}.",
    "List one Debian package name per line (`libodbc2`), or the URL of a .deb "
    "(`https://host/pkg.deb`, optionally `#sha256=HEX`); `#` starts a comment. "
    "See docs/system-packages.md.",
)
APTFILE_UNSUPPORTED = ErrorKind(
    "aptfile-unsupported",
    "The Aptfile's system packages cannot be installed here",
    "The app has an Aptfile, but this build cannot fetch the stack's packages "
    "({stack}: {reason}).",
    "Build on a Debian or Ubuntu machine of the app's stack (with apt-get and dpkg-deb), "
    "or vendor the libraries into the app and set LD_LIBRARY_PATH in a .profile.d script. "
    "See docs/system-packages.md.",
)
APTFILE_INSTALL_FAILED = ErrorKind(
    "aptfile-install-failed",
    "Could not fetch the Aptfile's system packages",
    "`{command}` failed.",
    "Check the package names against the stack's distribution (`apt-cache policy NAME` "
    "on a machine of the stack) and that its mirror is reachable; the tool's message is "
    "above. Nothing was cached from this attempt.",
)
APTFILE_CHECKSUM_MISMATCH = ErrorKind(
    "aptfile-checksum-mismatch",
    "A .deb from the Aptfile does not match its checksum",
    "{url} has SHA-256 {actual}, but the Aptfile says {expected}.",
    "Make sure the URL serves the file you meant (a changed or tampered download is "
    "refused), then update the checksum in the Aptfile. Nothing was cached.",
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
)
HOOK_FAILED = ErrorKind(
    "hook-failed",
    "The app's {hook} hook failed",
    "`bin/{hook}` {problem}.",
    "Fix bin/{hook} (its output is above); it runs from the app root with the build's "
    "config vars and the slug's Python first on PATH. Remove the file to skip the hook.",
)

BUILD_TIMED_OUT = ErrorKind(
    "build-timed-out",
    "The build took too long",
    "{step} was still running when the build reached its time limit of {limit} and was "
    "stopped, with every process it started.",
    "Find out why the step is slow (its output is above), or allow more time with "
    "--timeout SECONDS (or SLUGBUILD_BUILD_TIMEOUT; 0 means no limit). Nothing was written.",
)
SYMLINK_LEAVES_SLUG = ErrorKind(
    "symlink-leaves-slug",
    "A build step left a symlink pointing outside the slug",
    "{path} -> {target}: {problem}.",
    "Make the link relative to a file inside the app (e.g. `ln -s ../data/x {path}`), or "
    "copy the file instead: `slugbuild run`, `inspect` and `publish` refuse slugs with such "
    "links, so the build stops before writing one.",
)
SLUG_TOO_LARGE = ErrorKind(
    "slug-too-large",
    "The slug is larger than the slug size limit",
    "{what} {size} compressed ({size_bytes} bytes), over the limit of {limit} "
    "({limit_bytes} bytes, from {source}).{breakdown}",
    "{advice}Heroku refuses slugs over 500 MB compressed; raise or lift the limit with "
    "--max-slug-size SIZE (or SLUGBUILD_MAX_SLUG_SIZE; 0 for none) only where the slug goes "
    "somewhere that takes it. Nothing was written or uploaded.",
)
# --- NLTK corpora --------------------------------------------------------------------
NLTK_LIST_INVALID = ErrorKind(
    "nltk-list-invalid",
    "nltk.txt is not a list of NLTK identifiers",
    "nltk.txt {problem}.",
    "List one NLTK package or collection identifier a line (e.g. `punkt`, `stopwords`, "
    "`popular`), as `python -m nltk.downloader` takes them; lines starting with `#` are "
    "comments.",
)
NLTK_INDEX_UNUSABLE = ErrorKind(
    "nltk-index-unusable",
    "Could not read NLTK's data index",
    "{url}: {problem}.",
    "The app has nltk.txt and installs nltk, so its corpora are downloaded from NLTK's "
    "index. Check the network, or point the NLTK_INDEX_URL config var at a mirror laid out "
    "like https://raw.githubusercontent.com/nltk/nltk_data/gh-pages/ (an index.xml and "
    "the package zips it names). Nothing was cached from this attempt.",
)
NLTK_CORPUS_UNAVAILABLE = ErrorKind(
    "nltk-corpus-unavailable",
    "An NLTK corpus listed in nltk.txt could not be had",
    "{corpus!r} {problem} (index {url}).",
    "Check the spelling in nltk.txt against the identifiers of NLTK's index (`python -m "
    "nltk.downloader -l` lists them), or the mirror named by NLTK_INDEX_URL. Nothing was "
    "cached from this attempt.",
)

# --- buildpacks ---------------------------------------------------------------------
BUILDPACK_FETCH_FAILED = ErrorKind(
    "buildpack-fetch-failed",
    "Could not fetch a buildpack",
    "{spec}: {reason}",
    "Check the URL and the #ref (a branch or tag), or use a local path to the buildpack.",
)
BUILDPACK_INVALID = ErrorKind(
    "buildpack-invalid",
    "Not a buildpack",
    "{spec} ({path}) has no bin/compile.",
    "A buildpack needs bin/detect, bin/compile and optionally bin/release "
    "(Heroku's buildpack API); point --buildpack or .buildpacks at one.",
)
BUILDPACK_DETECT_FAILED = ErrorKind(
    "buildpack-detect-failed",
    "App not compatible with buildpack",
    "{spec}: bin/detect refused the app.",
    "Check that the app has the files this buildpack looks for, or remove the buildpack "
    "from --buildpack / .buildpacks.",
)
BUILDPACK_COMPILE_FAILED = ErrorKind(
    "buildpack-compile-failed",
    "A buildpack failed to compile the app",
    "{spec}: bin/compile exited with code {exit_code}.",
    "The buildpack's own output is above; fix what it reports and build again. Nothing was "
    "written.",
)
BUILDPACK_RELEASE_INVALID = ErrorKind(
    "buildpack-release-invalid",
    "A buildpack's release output is invalid",
    "{spec}: {problem}.",
    "bin/release must print YAML with optional `default_process_types` and `config_vars` "
    "mappings; fix the buildpack.",
)

BUILDPACK_LIST_INVALID = ErrorKind(
    "buildpack-list-invalid",
    "The app's buildpack list cannot be read",
    "{source} {problem}.",
    "app.json lists buildpacks as `\"buildpacks\": [{{\"url\": \"heroku/nodejs\"}}, "
    "{{\"url\": \"heroku/python\"}}]`; fix the file, or list the buildpacks one a line "
    "in .buildpacks (which wins over app.json), or pass --buildpack.",
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
)
MONOREPO_BUILDPACK_WITHOUT_APP_BASE = ErrorKind(
    "monorepo-buildpack-without-app-base",
    "The monorepo buildpack is listed but no app base is set",
    "{source} lists {spec}, which builds the subdirectory named by the APP_BASE config "
    "var, but APP_BASE is not set.",
    "Set the app base: `--app-base DIR` or `--env APP_BASE=DIR` (slugbuild does what that "
    "buildpack does itself; see docs/app-shapes.md), and remove the buildpack from {source}.",
)

NODE_NOT_FOUND = ErrorKind(
    "node-not-found",
    "The built-in Node step needs node and npm",
    "The build asked for the built-in Node step, but {missing} is not on PATH ({reason}).",
    "Make Node.js releases reachable (nodejs.org, or a mirror named by "
    "SLUGBUILD_NODE_DIST_URL), or install Node.js on the build machine (on Debian or "
    "Ubuntu: `apt-get install nodejs npm`), or list the Node.js buildpack "
    "(`heroku/nodejs`) instead of the built-in step.",
)
NODE_VERSION_INVALID = ErrorKind(
    "node-version-invalid",
    "The requested Node.js or npm version is not a semver range",
    "{source} is {value!r}: {problem}.",
    "Use a range as npm and Heroku read it: `22.x`, `^20.11`, `>=20 <23`, `20 || 22` or an "
    "exact `22.11.0` (`node --version` shows the one you develop with).",
)
NODE_VERSION_UNSATISFIABLE = ErrorKind(
    "node-version-unsatisfiable",
    "No release satisfies the requested Node.js or npm version",
    "{source} asks for {tool} {requested}, but no release in {where} satisfies it (the "
    "newest there is {newest}).",
    "Change the range to one that includes a release, as on Heroku, where such a build "
    "fails too (https://nodejs.org/en/about/previous-releases lists them).",
)
NODE_RUNTIME_UNAVAILABLE = ErrorKind(
    "node-runtime-unavailable",
    "The requested Node.js or npm could not be had",
    "{tool} {requested} was asked for, but {reason}.",
    "Check the network, or set SLUGBUILD_NODE_DIST_URL to a mirror laid out like "
    "https://nodejs.org/dist (npm: the npm_config_registry config var names the registry); "
    "or build with the machine's node and npm (SLUGBUILD_NODE_VERSION=system). Nothing "
    "was cached.",
)
NODE_CHECKSUM_MISMATCH = ErrorKind(
    "node-checksum-mismatch",
    "Downloaded Node.js or npm does not match its published checksum",
    "{url} has {algorithm} {actual}, but {checksums} says {expected}.",
    "The archive was corrupted or tampered with on the way; it was refused and nothing "
    "was cached. Retry later, or check the mirror behind SLUGBUILD_NODE_DIST_URL (or "
    "npm_config_registry).",
)
NODE_ARCHIVE_INVALID = ErrorKind(
    "node-archive-invalid",
    "Downloaded Node.js or npm archive is not usable",
    "{url}: {problem}.",
    "The URL must serve a nodejs.org release archive (node-vX.Y.Z-linux-ARCH.tar.xz: one "
    "top directory with bin/node and lib/node_modules/npm), or the npm registry's npm "
    "package. Nothing was cached.",
)
NODE_BUILD_UNSUPPORTED = ErrorKind(
    "node-build-unsupported",
    "The built-in Node step cannot build this app",
    "The build asked for the built-in Node step, but {problem}.",
    "{advice}",
)
NODE_BUILD_FAILED = ErrorKind(
    "node-build-failed",
    "The app's Node build failed",
    "`{command}` exited with code {exit_code}.",
    "npm's own message is above; fix package.json or its lock file and build again. The "
    "step runs in the app root with the build's config vars; node_modules is not kept.",
)

# --- release metadata ----------------------------------------------------------------
PROCFILE_MALFORMED = ErrorKind(
    "procfile-malformed",
    "Procfile is malformed",
    "Procfile line {line}: {problem}\n  {text}",
    "Each line must be `name: command`, where name is letters, digits, `_` or `-`. "
    "Comments start with `#`.",
)
MISSPELLED_PROCFILE = ErrorKind(
    "misspelled-procfile",
    "Procfile has the wrong name",
    "The app has a file named {found!r}, which looks like a Procfile but is not read: only "
    "a file named exactly `Procfile` declares process types.",
    "Rename it: `git mv {found} Procfile`.",
)

# --- boot check ------------------------------------------------------------------------
BOOT_CHECK_FAILED = ErrorKind(
    "boot-check-failed",
    "The slug did not boot",
    "The boot check {problem}.\n  web: {command}",
    "Fix the web process (run it locally with `slugbuild compile` then `slugbuild run "
    "SLUG web`), or give it longer with `--boot-check-timeout SECONDS`. No slug was written to "
    "{slug}.",
)

# --- options and config ------------------------------------------------------------------
INVALID_CONFIG_VAR = ErrorKind(
    "invalid-config-var",
    "Invalid build config var",
    "{value!r} {problem}.",
    "Pass config vars as --env KEY=VALUE (KEY is letters, digits and `_`, not starting "
    "with a digit), or as files named KEY in an --env-dir directory.",
)
ENV_FILE_UNREADABLE = ErrorKind(
    "env-file-unreadable",
    "Cannot read the env file",
    "{path}: {reason}",
    "Pass a readable file of KEY=VALUE lines with --env-file.",
)
ENV_DIR_MISSING = ErrorKind(
    "env-dir-missing",
    "Config var directory not found",
    "{env_dir} does not exist or is not a directory.",
    "Pass a directory holding one file per config var (file name = KEY, content = value).",
)
BAD_SLUG_SIZE = ErrorKind(
    "bad-slug-size",
    "Invalid slug size limit",
    "{source} is {value!r}: {reason}.",
    "Give a size such as 500MB, 500M, 1.5GB or a number of bytes (K, M and G are binary, as "
    "Heroku's are: 500MB is 524,288,000 bytes); 0 or `none` for no limit.",
)
INVALID_LIMIT = ErrorKind(
    "invalid-limit",
    "Invalid limit",
    "{name} is {value!r}, which is not {expected}.",
    "Fix or unset {name}; docs/security.md lists every limit and its default.",
)
OUTPUT_NOT_WRITABLE = ErrorKind(
    "output-not-writable",
    "Cannot write the slug",
    "{path}: {reason}",
    "Choose an output path in an existing, writable directory with -o.",
)
CACHE_DIR_UNUSABLE = ErrorKind(
    "cache-dir-unusable",
    "Cannot use the cache directory",
    "{path}: {reason}",
    "Choose a writable directory with --cache-dir (or SLUGBUILD_CACHE_DIR).",
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
)

# --- run -----------------------------------------------------------------------------
SLUG_NOT_FOUND = ErrorKind(
    "slug-not-found",
    "Slug not found",
    "{path} is neither a slug tarball nor an unpacked slug directory.",
    "Pass the .tgz written by `slugbuild compile`, or a directory it was unpacked into.",
)
SLUG_UNREADABLE = ErrorKind(
    "slug-unreadable",
    "Cannot read the slug",
    "{path}: {reason}.",
    "Pass a gzipped tarball written by `slugbuild compile` (the file may be truncated or "
    "corrupt, or the disk full); nothing was left behind.",
)
SLUG_LIMIT_EXCEEDED = ErrorKind(
    "slug-limit-exceeded",
    "The slug is larger than allowed",
    "{path} holds {what} (the limit is {limit}).",
    "A slug from elsewhere is read with limits, so a hostile one cannot exhaust memory or "
    "disk. If you trust this slug, raise the limit with {variable} (see docs/security.md).",
)
UNSAFE_SLUG = ErrorKind(
    "unsafe-slug",
    "The slug holds an unsafe entry",
    "{member}: {problem}.",
    "Only unpack slugs made by a trusted build; this one was refused and nothing was "
    "written outside the target directory.",
)
PROCESS_TYPE_UNKNOWN = ErrorKind(
    "process-type-unknown",
    "Unknown process type",
    "The slug has no process type {process!r}. It has: {available}.",
    "Run one of those, e.g. `slugbuild run SLUG web`, or add a line to the Procfile.",
)

WEB_PROCESS_EXITED = ErrorKind(
    "web-process-exited",
    "The web process exited without serving",
    "`{command}` exited with code {exit_code} before anything listened on port {port}.",
    "A web process must keep running and listen on $PORT. If the Procfile line chains "
    "commands (`a && b`), check that the last one starts the server; run other "
    "one-off steps as their own process type (e.g. `release`).",
)

# --- publish -----------------------------------------------------------------------
PUBLISH_NO_TOKEN = ErrorKind(
    "publish-no-token",
    "No Heroku API token",
    "HEROKU_API_KEY is not set.",
    "Set HEROKU_API_KEY to an API token (e.g. from `heroku auth:token`) and publish again.",
)
PUBLISH_BAD_TOKEN = ErrorKind(
    "publish-bad-token",
    "The Heroku API token is malformed",
    "HEROKU_API_KEY holds spaces, line breaks or other characters no API token has "
    "(it is not shown).",
    "Set HEROKU_API_KEY to the token alone, e.g. `export HEROKU_API_KEY=$(heroku "
    "auth:token)`, and publish again.",
)
PUBLISH_WRONG_LAYOUT = ErrorKind(
    "publish-wrong-layout",
    "The slug is not in Heroku's layout",
    "{path} keeps the app at ./ (herokuish layout); the Heroku Platform API needs it under "
    "./app/.",
    "Compile it again with `slugbuild compile APP --layout heroku` and publish that slug.",
)
PUBLISH_API_ERROR = ErrorKind(
    "publish-api-error",
    "The Heroku API refused a request",
    "{method} {url} answered {status}: {message}",
    "Check the app name and that the token may deploy to it; nothing was released.",
)
PUBLISH_BAD_RESPONSE = ErrorKind(
    "publish-bad-response",
    "The Heroku API answered something unexpected",
    "{method} {url} answered {status} with {problem}.",
    "{next_step}",
)
PUBLISH_TIMEOUT = ErrorKind(
    "publish-timeout",
    "The Heroku API took too long",
    "{method} {url} did not finish before the publish deadline ({seconds} seconds, "
    "--timeout).",
    "Check the network (or --api-url) and try again, with a longer --timeout for a large "
    "slug on a slow link; {released}.",
)
PUBLISH_BAD_API_URL = ErrorKind(
    "publish-bad-api-url",
    "Invalid Platform API URL",
    "{url} is not an http(s) URL with a host (a password holding `/`, `@` or `:` must be "
    "percent-encoded).",
    "Pass the API's base URL, e.g. `--api-url https://api.heroku.com`; the token goes in "
    "HEROKU_API_KEY, not in the URL.",
)
PUBLISH_BAD_APP = ErrorKind(
    "publish-bad-app",
    "Invalid Heroku app name",
    "{app!r} is not a Heroku app name or id.",
    "Pass the app's name as `heroku apps` lists it (letters, digits and `-`).",
)
PUBLISH_UNREACHABLE = ErrorKind(
    "publish-unreachable",
    "Could not reach the Heroku API",
    "{method} {url} failed: {reason}",
    "Check the network (or --api-url) and try again; {released}.",
)

# --- package managers -----------------------------------------------------------------
MULTIPLE_PACKAGE_MANAGERS = ErrorKind(
    "multiple-package-managers",
    "More than one package manager file found",
    "{app_dir} has {files}, so it could be built with any of {managers}.",
    "Keep the file of the package manager the app really uses and delete the others "
    "(they usually disagree on versions). For example, a Poetry app that also exports a "
    "requirements.txt should stop committing the export.",
)
PIPFILE_WITHOUT_LOCK = ErrorKind(
    "pipfile-without-lock",
    "Pipfile found without Pipfile.lock",
    "{app_dir} has a Pipfile but no Pipfile.lock; slugbuild installs what the lock pins, "
    "as `pipenv install --deploy` does.",
    "Run `pipenv lock` in the app directory and commit the Pipfile.lock it writes.",
)
PROJECT_WITHOUT_LOCK = ErrorKind(
    "project-without-lock",
    "No lock file for the app's {found}",
    "{app_dir} has {found} but no requirements.txt, Pipfile.lock, poetry.lock or uv.lock, "
    "so the versions to install are not pinned anywhere.",
    "Pin the app's dependencies: `slugbuild lock {app_dir}` writes a requirements.txt "
    "from pyproject.toml (pip-tools), or run `poetry lock` / `uv lock` if you use those. "
    "For a setup.py-only app, add a requirements.txt holding the pinned dependencies "
    "(a single line `.` installs the app itself, unpinned).",
)
REQUIREMENTS_NOT_COMPILED = ErrorKind(
    "requirements-not-compiled",
    "requirements.in found without requirements.txt",
    "{app_dir} has a requirements.in (the input of pip-tools) but no requirements.txt.",
    "Run `slugbuild lock {app_dir}` (or `pip-compile`) and commit the requirements.txt it "
    "writes.",
)
COMMITTED_VIRTUALENV = ErrorKind(
    "committed-virtualenv",
    "The app contains a virtual environment",
    "{app_dir}/{directory} is a virtualenv (it has a pyvenv.cfg). It holds paths and "
    "binaries of the machine that made it and would not work in the slug.",
    "Delete {directory}/ from the app (`git rm -r --cached {directory}`) and add it to "
    ".gitignore; the build installs the dependencies itself.",
)
LOCK_FILE_MALFORMED = ErrorKind(
    "lock-file-malformed",
    "{lock_file} cannot be read",
    "{lock_file} is not valid {syntax}: {problem}",
    "Regenerate it with `{relock}` instead of editing it by hand, and commit the result.",
)
LOCK_FILE_OUTDATED = ErrorKind(
    "lock-file-outdated",
    "{lock_file} does not match {manifest}",
    "`{command}` says the lock file is out of date (or unusable) for {manifest}.",
    "Run `{relock}` in the app directory and commit the updated {lock_file}.",
)
PYTHON_NOT_ALLOWED_BY_PROJECT = ErrorKind(
    "python-not-allowed-by-project",
    "Python {version} is not allowed by {manifest}",
    "The build's runtime is Python {version}{chosen}, but {manifest} ({where}) asks for "
    "`{constraint}`. Its lock's packages are locked for the Pythons it allows: on this "
    "one the lock cannot be installed (re-locking would not change that).",
    "Ask for a Python the project allows in .python-version (e.g. one matching "
    "`{constraint}`), or widen the constraint in {manifest} and re-lock.",
)
LOCK_TOOL_FAILED = ErrorKind(
    "lock-tool-failed",
    "`{command}` failed",
    "`{command}` could not read or export {lock_file} (exit code {exit_code}); its "
    "message is below. This is not an outdated lock: re-locking may not help.",
    "Read the tool's message: it names the problem (an unreachable index, a missing "
    "package, a file it could not read). Fix that and build again.",
)

CONSTRAINTS_UNUSABLE = ErrorKind(
    "constraints-unusable",
    "Cannot use {path} as constraints",
    "{path}: {problem}",
    "Pass the slug.json written beside an earlier slug, e.g. "
    "`slugbuild compile APP --constraints-from old/slug.json`.",
)
MANAGER_TOOL_FAILED = ErrorKind(
    "manager-tool-failed",
    "Could not prepare {tool}",
    "Installing {tool} {version} (used only during the build) failed (exit code "
    "{exit_code}).",
    "Check that the package index ({index}) is reachable from this machine; nothing was "
    "cached from this attempt.",
)

# --- lock ---------------------------------------------------------------------------------
NOTHING_TO_LOCK = ErrorKind(
    "nothing-to-lock",
    "Nothing to lock",
    "{app_dir} has neither a requirements.in nor a pyproject.toml with "
    "[project] dependencies.",
    "List the app's top-level dependencies in requirements.in (one per line) or in "
    "pyproject.toml's [project] dependencies, then run `slugbuild lock` again.",
)
LOCK_FAILED = ErrorKind(
    "lock-failed",
    "Could not pin the app's dependencies",
    "`{command}` failed (exit code {exit_code}); {output_file} was left unchanged.",
    "Check the names and version ranges in {input_file} against the package index "
    "({index}); pip-compile's own message is above.",
)
LOCK_WOULD_CONFLICT = ErrorKind(
    "lock-would-conflict",
    "The app is already locked by {manager}",
    "{app_dir} has {lock_file}; a requirements.txt beside it would give the app two "
    "package managers, which `slugbuild compile` refuses.",
    "Update the existing lock with `{relock}` instead, or delete {lock_file} first if the "
    "app is moving to pip.",
)


# --- helpers ---------------------------------------------------------------------------
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


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
        argv = exc.cmd if isinstance(exc.cmd, (list, tuple)) else [str(exc.cmd)]
        tail = exc.stderr or exc.output or ""
        tail = tail.decode("utf-8", "replace") if isinstance(tail, bytes) else str(tail)
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
