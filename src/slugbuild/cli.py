"""The ``slugbuild`` command: a thin layer over the library.

Whatever happens, the command ends with one message and a non-zero exit, never
a Python traceback (docs/security.md#when-slugbuild-fails): a SlugbuildError is
printed as it is; a failed file system call, an input nested too deeply or not
UTF-8 becomes the catalogue error for it; anything else is an ``internal-error``
whose traceback is written to a file (or printed with ``--verbose``). Ctrl-C
exits 130.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from . import __version__, errors
from .cli_help import CommandParser, HelpFormatter, UsageExit, epilog, usage_error
from .config_vars import load_config_vars, parse_env_assignments, read_env_file
from .detect import detect
from .envflag import env_flag
from .errors import SlugbuildError
from .log import Reporter, color_wanted, painted
from .oci.commands import (
    add_image_options,
    add_registry_options,
    check_image_layout,
    compile_image,
    image_command,
    plan_image,
    rebase_command,
    registry_options,
)
from .pack import LAYOUTS
from .pipeline import compile_app
from .redact import mask
from .runtime import RuntimeOptions


def _add_runtime_options(parser: argparse.ArgumentParser, published: bool = True) -> None:
    parser.add_argument("--python-source", metavar="SOURCES",
                        help="runtime sources to try, in order, comma-separated: local, "
                             "download, heroku" + (", published" if published else "")
                             + " (default: $SLUGBUILD_PYTHON_SOURCE or local,download)")
    if published:
        parser.add_argument("--python-registry", metavar="docker://HOST[:PORT]/REPO|DIR",
                            help="runtimes published with `slugbuild runtime publish`, "
                                 "asked first (pulled on a runtime layer miss; one warning "
                                 "and the other sources when it cannot be used); default: "
                                 "$SLUGBUILD_PYTHON_REGISTRY")
    parser.add_argument("--offline", action="store_true", default=None,
                        help="never use the network: only local and cached runtimes")
    parser.add_argument("--python-download-url", metavar="URL",
                        help="runtime index: a releases API URL (ending in /releases), or "
                             "a base URL or local directory holding SHA256SUMS and the "
                             "archives (default: $SLUGBUILD_PYTHON_DOWNLOAD_URL, else the "
                             "newest python-build-standalone release)")
    parser.add_argument("--allow-eol-python", action="store_true", default=None,
                        help="build a Python minor the version policy refuses (end of life; "
                             "default: $SLUGBUILD_ALLOW_EOL_PYTHON)")
    parser.add_argument("--python-patch-fallback", action="store_true", default=None,
                        help="when an exact pin (3.12.4) cannot be had, use the newest patch "
                             "of its minor (default: $SLUGBUILD_PYTHON_PATCH_FALLBACK)")


def _add_output_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """--verbose, --quiet and --color: how much the log says, and in what colours."""
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="show the output of the tools slugbuild runs for itself, and on "
                             "an internal error the traceback (also SLUGBUILD_VERBOSE=1)")
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="print only warnings and errors on stderr (results still go "
                             "to stdout)")
    parser.add_argument("--color", choices=("auto", "always", "never"), default=default,
                        help="colour the log: auto (the default) on a terminal unless "
                             "NO_COLOR is set or TERM=dumb")


def _reporter(args: argparse.Namespace) -> Reporter:
    """The build log on stderr, as --quiet, --verbose and --color ask."""
    return Reporter(sys.stderr,
                    verbosity="quiet" if args.quiet else "verbose" if args.verbose
                    else "normal",
                    color=color_wanted(args.color, sys.stderr))


def _runtime_options(args: argparse.Namespace) -> RuntimeOptions:
    return RuntimeOptions.from_env(args.python_source, args.offline, args.python_download_url,
                                   args.allow_eol_python, args.python_patch_fallback,
                                   getattr(args, "python_registry", None))


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < 86400:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds above 0")
    return seconds


def _port(text: str) -> int:
    """A TCP port number, 1-65535 (argparse reports anything else as a usage error)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="slugbuild", description="Compile Python web apps into Heroku-style slugs.",
        formatter_class=HelpFormatter,
        epilog=f"`slugbuild COMMAND --help` shows a command's options, defaults, environment "
               f"and examples. Documentation: docs/cli.md (errors: {errors.ERRORS_DOC})."
    )
    parser.add_argument("--version", action="version", version=f"slugbuild {__version__}")
    _add_output_options(parser, argparse.SUPPRESS)
    parser.set_defaults(verbose=False, quiet=False, color="auto")
    # Accepted after the command too (`slugbuild compile APP --verbose`); SUPPRESS keeps
    # a subcommand from resetting a flag given before it.
    common = argparse.ArgumentParser(add_help=False)
    _add_output_options(common, argparse.SUPPRESS)
    sub: Any = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    add_parser = sub.add_parser

    def add_command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        made: argparse.ArgumentParser = add_parser(
            name, parents=[common], formatter_class=HelpFormatter, epilog=epilog(name),
            **kwargs)
        return made

    sub.add_parser = add_command

    compile_ = sub.add_parser("compile", help="build a slug from an app directory")
    compile_.add_argument("app_dir", type=Path)
    compile_.add_argument("-o", "--output", type=Path, default=Path("slug.tgz"),
                          help="slug path (default: ./slug.tgz); slug.json is written beside it")
    compile_.add_argument("--metadata-output", type=Path, metavar="FILE",
                          help="write the slug's metadata (slug.json) here (default: beside "
                               "the slug: slug.tgz -> slug.json)")
    compile_.add_argument("--cache-dir", type=Path,
                          help="cache directory (default: $SLUGBUILD_CACHE_DIR or "
                               "~/.cache/slugbuild)")
    compile_.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                          help="build config var (repeatable); never stored in the slug")
    compile_.add_argument("--env-dir", type=Path,
                          help="directory of config vars, one file per var (Heroku ENV_DIR)")
    compile_.add_argument("--layout", choices=sorted(LAYOUTS), default=None,
                          help="herokuish: paths under ./ ; heroku: paths under ./app/, "
                               "which --image uses unless a layout is named "
                               "(default: herokuish)")
    compile_.add_argument("--buildpack", action="append", default=[], metavar="PATH|GIT_URL[#REF]",
                          help="run this Heroku-API buildpack (repeatable, in order; `python` "
                               "is the built-in one); default: the app's .buildpacks file")
    compile_.add_argument("--app-base", metavar="DIR",
                          help="build only this subdirectory of the app (Heroku's monorepo "
                               "APP_BASE; default: the APP_BASE config var, else the root)")
    compile_.add_argument("--node-build", action="store_true",
                          help="before Python, run the built-in Node step: npm ci and the "
                               "package.json build script with the Node.js engines.node asks for "
                               "(node_modules is left out of the slug)")
    compile_.add_argument("--boot-check", action="store_true",
                          help="after packing, start the slug's web process on 127.0.0.1 and "
                               "fail the build (writing no slug) unless it answers HTTP")
    compile_.add_argument("--boot-check-timeout", type=_positive_seconds, metavar="SECONDS",
                          help="how long the boot check waits for an answer (default: 30; "
                               "implies --boot-check)")
    compile_.add_argument("--json", action="store_true",
                          help="print the result as JSON on stdout (the log stays on stderr); "
                               "a failure prints {\"error\": {code, title, found, action, "
                               "output, docs}}")
    compile_.add_argument("--app-json-env", action="store_true",
                          help="apply app.json's env to the build's config vars, as Heroku's "
                               "app setup and review apps do (given config vars win; default: "
                               "off, as `git push heroku`; docs/app-json.md)")
    compile_.add_argument("--sbom-output", type=Path, metavar="PATH",
                          help="where the slug's CycloneDX SBOM goes (default: beside "
                               "the slug, e.g. ./slug.cdx.json; docs/sbom.md)")
    compile_.add_argument("--timeout", type=float, metavar="SECONDS",
                          help="stop the build (and everything it started) after this long "
                               "(default: $SLUGBUILD_BUILD_TIMEOUT or 900, as Heroku; 0: none)")
    compile_.add_argument("--max-slug-size", metavar="SIZE",
                          help="fail when the compressed slug is larger (500MB, 1.5GB, bytes; "
                               "binary units as Heroku's; 0: none). Default: "
                               "$SLUGBUILD_MAX_SLUG_SIZE, else Heroku's 500MB: an error for "
                               "--layout heroku, a warning for herokuish")
    compile_.add_argument("--cache-registry", metavar="docker://HOST[:PORT]/REPO",
                          help="share runtime and dependency layers through this OCI "
                               "registry: pulled on a local miss, pushed after the build "
                               "(default: $SLUGBUILD_CACHE_REGISTRY; docs/cache.md)")
    compile_.add_argument("--cache-registry-readonly", action="store_true", default=None,
                          help="only pull from the cache registry, never push (untrusted "
                               "builds; also SLUGBUILD_CACHE_REGISTRY_READONLY=1)")
    _add_runtime_options(compile_)
    add_image_options(compile_, required=False)

    image = sub.add_parser("image", help="make a slug into an OCI image (layout, "
                                         "docker-archive or registry)")
    image.add_argument("slug", type=Path, help="a slug with its slug.json beside it")
    image.add_argument("--metadata", type=Path, metavar="FILE",
                       help="the slug's slug.json when it is not beside it "
                            "(compile --metadata-output)")
    add_image_options(image, required=True)
    image.add_argument("--cache-dir", type=Path,
                       help="where pulled run image layers are kept (default: the build cache)")
    image.add_argument("--json", action="store_true", help="print the result as JSON")

    rebase = sub.add_parser("rebase", help="put an image's app layers on a new run image "
                                           "(as `pack rebase`)")
    rebase.add_argument("source_image", metavar="IMAGE", help="the image to rebase (a REF)")
    rebase.add_argument("--run-image", metavar="REF", required=True, help="the new run image")
    rebase.add_argument("--image", metavar="REF",
                        help="where to write the result (default: IMAGE itself)")
    rebase.add_argument("--cache-dir", type=Path,
                        help="where pulled layers are kept (default: the build cache)")
    rebase.add_argument("--json", action="store_true", help="print the result as JSON")
    add_registry_options(rebase)
    _add_cache_parser(sub)
    _add_runtime_parser(sub)

    runtimes = sub.add_parser("runtimes", help="list the Python versions available and "
                              "where each comes from")
    runtimes.add_argument("--cache-dir", type=Path,
                          help="cache directory (default: $SLUGBUILD_CACHE_DIR or "
                               "~/.cache/slugbuild)")
    runtimes.add_argument("--json", action="store_true")
    _add_runtime_options(runtimes)

    compile_.add_argument("--constraints-from", type=Path, metavar="SLUG_JSON",
                          help="install the package versions an earlier build recorded in "
                               "its slug.json")

    run = sub.add_parser("run", help="run a process type, or a one-off command after `--`, "
                                     "from a slug (as `heroku run`)",
                         usage="%(prog)s [options] SLUG [PROCESS]\n"
                               "       %(prog)s [options] SLUG -- COMMAND [ARG ...]")
    run.add_argument("slug", type=Path, help="slug tarball or unpacked slug directory")
    run.add_argument("process", nargs="?", default=None, help="process type (default: web)")
    run.add_argument("--port", type=_port, default=5000, help="the process's $PORT")
    run.add_argument("--host", default="127.0.0.1",
                     help="address servers are told to bind (default: 127.0.0.1)")
    run.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                     help="config var for the process (repeatable; wins over --env-file)")
    run.add_argument("--env-file", type=Path,
                     help="file of KEY=VALUE lines (blank lines and # comments allowed)")
    run.add_argument("--unpack-to", type=Path,
                     help="unpack a tarball here and keep it (default: a temporary directory)")

    inspect = sub.add_parser("inspect", help="show what a slug holds")
    inspect.add_argument("slug", type=Path)
    inspect.add_argument("--json", action="store_true")
    inspect.add_argument("--sizes", action="store_true",
                         help="what takes the space: runtime, each distribution, app "
                              "directories, collectstatic output (compressed and unpacked), "
                              "with advice")
    inspect.add_argument("--sbom", action="store_true",
                         help="print the slug's CycloneDX SBOM (JSON), read from the slug "
                              "(docs/sbom.md)")

    publish = sub.add_parser("publish", help="deploy a slug to a Heroku app (Platform API)")
    publish.add_argument("slug", type=Path, help="a slug compiled with --layout heroku")
    publish.add_argument("--heroku-app", required=True, metavar="NAME")
    publish.add_argument("--stack", help="Heroku stack, e.g. heroku-24 (default: the app's)")
    publish.add_argument("--api-url", default=None,
                         help="Platform API base URL (default: $SLUGBUILD_HEROKU_API_URL or "
                              "https://api.heroku.com)")
    publish.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                         help="give up when the whole publish takes longer (default: "
                              "$SLUGBUILD_PUBLISH_TIMEOUT or 900)")
    publish.add_argument("--max-slug-size", metavar="SIZE",
                         help="refuse to upload a larger compressed slug (default: "
                              "$SLUGBUILD_MAX_SLUG_SIZE, else Heroku's 500MB)")

    lock = sub.add_parser("lock", help="pin requirements.in / pyproject.toml dependencies "
                                       "into requirements.txt (uv, for the app's Python)")
    lock.add_argument("app_dir", type=Path)
    lock.add_argument("--upgrade", action="store_true",
                      help="move every pin to the newest allowed version")
    lock.add_argument("--generate-hashes", action="store_true",
                      help="add --hash lines (installs then run with --require-hashes)")
    lock.add_argument("--cache-dir", type=Path, help="cache directory (as for compile)")
    lock.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                      help="config var for the resolver, e.g. PIP_EXTRA_INDEX_URL=...")

    plan = sub.add_parser(
        "plan", help="say what a build would do, without building (docs/plan.md)",
        description="What `compile` would do for the app: Python version and where it "
                    "comes from, package manager and installer (and why), collectstatic, "
                    "process types, buildpacks, and which layers come from the cache. "
                    "Nothing is installed or recorded. Docs: docs/plan.md")
    plan.add_argument("app_dir", type=Path)
    plan.add_argument("--json", action="store_true", help="print the plan as JSON on stdout")
    plan.add_argument("--cache-dir", type=Path,
                      help="the cache a build would use (default: $SLUGBUILD_CACHE_DIR or "
                           "~/.cache/slugbuild)")
    plan.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                      help="build config var (repeatable), as for compile")
    plan.add_argument("--env-dir", type=Path, help="directory of config vars (as for compile)")
    plan.add_argument("--buildpack", action="append", default=[], metavar="PATH|GIT_URL[#REF]",
                      help="as for compile")
    plan.add_argument("--app-base", metavar="DIR", help="as for compile")
    plan.add_argument("--node-build", action="store_true", help="as for compile")
    plan.add_argument("--app-json-env", action="store_true", help="as for compile")
    plan.add_argument("--constraints-from", type=Path, metavar="SLUG_JSON",
                      help="as for compile (part of the dependency layer key)")
    _add_runtime_options(plan)
    buildpack = sub.add_parser("buildpack", help="the herokuish buildpack that comes with "
                                                 "slugbuild (for herokuish and Dokku)")
    buildpack_sub = buildpack.add_subparsers(dest="buildpack_command", required=True,
                                             metavar="{path,install}")
    buildpack_sub.add_parser("path", help="print the directory of the installed buildpack")
    buildpack_install = buildpack_sub.add_parser(
        "install", help="copy the buildpack into DIR, set up to run this slugbuild")
    buildpack_install.add_argument("dir", type=Path, metavar="DIR")
    buildpack_install.add_argument("--force", action="store_true",
                                   help="replace the contents of an existing DIR")

    detect_ = sub.add_parser("detect", help="say whether a directory is a Python app")
    detect_.add_argument("app_dir", type=Path)
    detect_.add_argument("--app-base", metavar="DIR",
                         help="detect this subdirectory of the app (as compile --app-base)")
    detect_.add_argument("--json", action="store_true")

    stack = sub.add_parser("stack", help="make run images for slug images (mmdebstrap)")
    stack_sub = stack.add_subparsers(dest="stack_command", required=True)
    stack_build = stack_sub.add_parser(
        "build", help="build a minimal, reproducible Debian run image with mmdebstrap")
    stack_build.add_argument("--output", "-o", default="oci:run-image:latest",
                             metavar="REF", help="oci:DIR[:TAG] or docker-archive:FILE"
                             "[:NAME:TAG] (default: oci:run-image:latest)")
    stack_build.add_argument("--suite", default="bookworm",
                             help="Debian or Ubuntu suite (default: bookworm)")
    stack_build.add_argument("--mirror", metavar="URL",
                             help="mirror to use instead of this machine's apt sources")
    stack_build.add_argument("--include", action="append", default=[], metavar="PACKAGE",
                             help="another package for the image (repeatable), e.g. "
                                  "libpq5 for an app whose packages link to it")
    stack_build.add_argument("--json", action="store_true")
    return parser


def _add_runtime_parser(sub: Any) -> None:
    """``slugbuild runtime publish`` (runtime/publish.py)."""
    runtime = sub.add_parser("runtime", help="publish prebuilt Python runtime layers for "
                                             "builds to pull (--python-registry)")
    actions = runtime.add_subparsers(dest="runtime_action", required=True)
    publish = actions.add_parser(
        "publish", formatter_class=HelpFormatter, epilog=epilog("runtime"),
        help="build the runtime layer of a Python version as a build would and push it to "
             "a registry or write it to a directory",
        description="Build the runtime layer of a Python version exactly as a build makes it\n"
                    "(same sources, key and files) and publish it: to a registry repository,\n"
                    "through the cache registry's client and credentials, or into an OCI\n"
                    "layout directory. Builds given --python-registry (or\n"
                    "SLUGBUILD_PYTHON_REGISTRY) pull it on a runtime layer miss instead of\n"
                    "copying and relocating a prefix; their slugs are the same bytes.\n"
                    "See docs/python-versions.md#published-runtimes.")
    publish.add_argument("target", metavar="docker://HOST[:PORT]/REPO|DIR",
                         help="a registry repository (no tag) or a directory (created)")
    publish.add_argument("--python", required=True, metavar="X.Y[.Z]",
                         help="the version (X.Y: the newest patch the sources offer)")
    publish.add_argument("--cache-dir", type=Path,
                         help="cache directory the layer is built in (default: "
                              "$SLUGBUILD_CACHE_DIR or ~/.cache/slugbuild)")
    publish.add_argument("--json", action="store_true")
    _add_runtime_options(publish, published=False)
    add_registry_options(publish)


def _add_cache_parser(sub: Any) -> None:
    """``slugbuild cache list|prune|export|import`` (cache_admin.py)."""
    cache = sub.add_parser("cache", help="list, prune, export or import cached layers")
    actions = cache.add_subparsers(dest="cache_action", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, help=help_text)
        parser.add_argument("--cache-dir", type=Path,
                            help="cache directory (default: $SLUGBUILD_CACHE_DIR or "
                                 "~/.cache/slugbuild)")
        return parser

    listing = action("list", "the cached layers: kind, name, size, last use")
    listing.add_argument("--json", action="store_true")
    prune = action("prune", "remove layers by age and/or total size (never one in use)")
    prune.add_argument("--older-than", type=_days, metavar="DAYS",
                       help="remove layers not used for this many days")
    prune.add_argument("--max-size", type=_size, metavar="SIZE",
                       help="then remove the least recently used until the rest fit (e.g. 5GB)")
    prune.add_argument("--dry-run", action="store_true", help="only say what would go")
    export = action("export", "copy the runtime and dependency layers to an OCI layout "
                              "directory or docker://HOST[:PORT]/REPO")
    export.add_argument("target", metavar="DIR|docker://HOST[:PORT]/REPO")
    add_registry_options(export)
    import_ = action("import", "add the layers of an export (directory or registry) to the "
                               "cache, each verified")
    import_.add_argument("source", metavar="DIR|docker://HOST[:PORT]/REPO")
    add_registry_options(import_)


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}")
    return value


def _size(text: str) -> int:
    from .slug_size import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


class Stopped(KeyboardInterrupt):
    """SIGTERM, SIGHUP or SIGINT, raised where the main thread is, so that every
    ``finally`` runs: the build's tools are killed and its scratch removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def _stop_on_signals() -> dict[signal.Signals, Any]:
    """The first of these signals stops slugbuild cleanly; later ones are ignored
    while it cleans up (SIGKILL still ends it, and the next build removes what it
    left). Returns the handlers replaced."""
    def stop(signum: int, _frame: object) -> None:
        for each in _STOPPING_SIGNALS:
            signal.signal(each, signal.SIG_IGN)
        raise Stopped(signum)

    previous: dict[signal.Signals, Any] = {}
    for each in _STOPPING_SIGNALS:
        if signal.getsignal(each) in (signal.SIG_DFL, signal.default_int_handler):
            previous[each] = signal.signal(each, stop)
    return previous


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit status (0, 1 on any error, 130 on Ctrl-C)."""
    for stream in (sys.stdout, sys.stderr):
        # A stream that cannot encode a character (PYTHONIOENCODING=ascii:strict)
        # must not turn a message into a UnicodeEncodeError.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass
    try:
        arguments, one_off = _split_one_off(list(sys.argv[1:] if argv is None else argv))
        args = _parse(arguments)
        args.one_off = _check_one_off(args, one_off)
    except KeyboardInterrupt:
        return _interrupted()
    except UsageExit as usage:
        if "--json" in (argv if argv is not None else sys.argv[1:]):
            _write_quietly(sys.stdout, json.dumps({"error": usage.error.as_dict()}, indent=2))
        return int(usage.code or 2)
    verbose = bool(getattr(args, "verbose", False))
    json_wanted = bool(getattr(args, "json", False))

    def command() -> int:
        _check_paths(args)
        return _dispatch(args)

    def print_json_error(error: SlugbuildError) -> None:
        # --json: a failure is JSON on stdout too, for scripts that read only stdout.
        _write_quietly(sys.stdout, json.dumps({"error": error.as_dict()}, indent=2))

    # SIGTERM/SIGHUP/SIGINT stop the build cleanly (its tools killed, scratch removed).
    replaced = (_stop_on_signals() if threading.current_thread() is threading.main_thread()
                else {})
    try:
        return guarded(command, verbose=verbose,
                       on_error=print_json_error if json_wanted else None,
                       color=color_wanted(args.color, sys.stderr),
                       command_name=_command_name(args))
    finally:
        for each, handler in replaced.items():
            signal.signal(each, handler)


def _split_one_off(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``run SLUG -- COMMAND...``: the arguments before ``--``, and the one-off
    command after it (None for other commands, or without ``--``)."""
    command, index = None, 0
    while index < len(argv):
        if argv[index] in _GLOBAL_OPTIONS_WITH_VALUES:
            index += 2
        elif argv[index].startswith("-"):
            index += 1
        else:
            command = index
            break
    if command is None or argv[command] != "run" or "--" not in argv[command:]:
        return argv, None
    split = argv.index("--", command)
    return argv[:split], argv[split + 1:]


# Options before the command that take a value (`--color always`).
_GLOBAL_OPTIONS_WITH_VALUES = ("--color",)


def _check_one_off(args: argparse.Namespace, one_off: list[str] | None) -> list[str] | None:
    """A one-off command replaces the process type, and is not empty."""
    if one_off is None:
        return None
    run = CommandParser(prog="slugbuild run", formatter_class=HelpFormatter)
    if args.process is not None:
        run.error("give a process type or a command after --, not both")
    if not one_off:
        run.error("no command after --")
    return one_off


def _command_name(args: argparse.Namespace) -> str:
    """The command as typed (``run``, ``runtime publish``), for messages about it."""
    sub = next((value for value in (getattr(args, f"{args.command}_{kind}", None)
                                    for kind in ("command", "action"))
                if isinstance(value, str)), None)
    return f"{args.command} {sub}" if isinstance(sub, str) else str(args.command)


def guarded(command: Callable[[], int], *, verbose: bool = False,
            stream: TextIO | None = None,
            on_error: Callable[[SlugbuildError], None] | None = None,
            color: bool = False, command_name: str | None = None) -> int:
    """Run ``command``; turn every way it can fail into one message and an exit status.

    Also used by the buildpack's bin/compile (``stream``: where messages go).
    ``on_error`` also gets the error (``--json`` prints it on stdout); ``color``
    prints the message in red (``--color``).
    """
    stream = stream if stream is not None else sys.stderr
    verbose = verbose or env_flag("SLUGBUILD_VERBOSE", unset=False, unknown=True)

    def fail(error: SlugbuildError) -> int:
        _write_quietly(stream, painted(error.render(), "error") if color else error.render())
        if on_error is not None:
            on_error(error)
        return 1

    try:
        return command()
    except SlugbuildError as error:
        return fail(error)
    except KeyboardInterrupt as stopped:
        return _interrupted(stream, stopped, command_name)
    except BrokenPipeError:
        # stdout went away (`slugbuild inspect x | head`): nothing left to tell.
        _silence_stdout()
        return 1
    except Exception as exc:  # noqa: BLE001 - the one place every failure ends
        try:
            known = errors.from_exception(exc)
            generic_os_error = isinstance(exc, OSError) and known is not None \
                and known.code == errors.FILESYSTEM_ERROR.code
            if known is not None and not generic_os_error:
                return fail(known)
            return fail(_internal_error(exc, verbose, stream))
        except Exception:  # noqa: BLE001 - reporting itself failed: say the least
            _write_quietly(stream, f" !     Error [internal-error]: Internal error in "
                                   f"slugbuild ({type(exc).__name__})")
            return 1


def _write_quietly(stream: TextIO, text: str) -> None:
    """Print ``text``; a closed or broken stream is no reason for a traceback."""
    try:
        print(text, file=stream, flush=True)
    except (OSError, ValueError):
        pass


def _interrupted(stream: TextIO | None = None,
                 stopped: KeyboardInterrupt | None = None,
                 command_name: str | None = None) -> int:
    """The catalogue's `interrupted` message and 128 + the signal's number (130 for
    Ctrl-C), as shells report it. A build's (``compile``, the buildpack's bin/compile:
    no ``command_name``) says no slug was written; any other command's names it, since
    `slugbuild run` or `inspect` never writes a slug."""
    signum = stopped.signum if isinstance(stopped, Stopped) else signal.SIGINT
    name = signal.Signals(signum).name
    if command_name is None or command_name == "compile":
        error = errors.INTERRUPTED.error(signal=name)
    else:
        error = errors.INTERRUPTED.error(variant="command", signal=name, command=command_name)
    _write_quietly(stream or sys.stderr, error.render())
    return 128 + signum


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _check_paths(args: argparse.Namespace) -> None:
    """Refuse path arguments that no file system call can take (a NUL byte)."""
    for name, value in vars(args).items():
        if isinstance(value, Path) and "\0" in str(value):
            raise errors.FILESYSTEM_ERROR.error(
                variant="nul-in-argument", path=repr(str(value)),
                option=name.replace("_", "-"))


def _internal_error(exc: BaseException, verbose: bool, stream: TextIO) -> SlugbuildError:
    """The error for an unexpected exception: its type and message, and where its
    traceback is (written to a file, or to ``stream`` when verbose)."""
    details = mask("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    if verbose:
        print(details, file=stream, end="")
        where = "the output above (--verbose)"
    else:
        where = _write_traceback(details)
    message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "(no message)"
    if isinstance(exc, OSError):  # a failed file system call: say so, traceback near
        error = errors.from_os_error(exc, note=f" (the traceback is in {where})")
    else:
        error = errors.INTERNAL_ERROR.error(
            exception=type(exc).__name__, message=message, traceback=where)
    return error


def _write_traceback(details: str) -> str:
    """Write the traceback to a private file in the temp directory; return its path."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    header = (f"slugbuild {__version__} internal error, {stamp}\n"
              f"python {sys.version.split()[0]}, argv: {mask(' '.join(sys.argv))}\n\n")
    try:
        handle, name = tempfile.mkstemp(prefix=f"slugbuild-internal-error-{stamp}-",
                                        suffix=".txt")  # mode 0600
        with os.fdopen(handle, "w", encoding="utf-8", errors="replace") as out:
            out.write(header + details)
        return name
    except OSError as exc:
        return (f"nowhere: it could not be written ({exc.strerror or exc}); run again with "
                f"--verbose to see it")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The arguments, or exit 2 with the usage of the command a mistake concerns:
    an unknown option after ``compile`` prints compile's usage, and ``--env FOO``
    without ``=`` is a usage error like any other."""
    parser = _parser()
    args, extras = parser.parse_known_args(argv)
    commands = next(action for action in parser._actions
                    if isinstance(action, argparse._SubParsersAction)).choices
    command_parser = commands[args.command]
    if extras:
        command_parser.error(f"unrecognized arguments: {' '.join(extras)}")
    for option in ("env",):
        try:
            parse_env_assignments(getattr(args, option, None) or [])
        except SlugbuildError as error:
            usage_error(command_parser, error)
    return args


def _check_json_output(args: argparse.Namespace) -> None:
    """``--json > out.json`` with ``-o out.tgz``: stdout is the file slug.json would be
    written to; refused before the build (``--metadata-output`` puts it elsewhere)."""
    from .slug.metadata import metadata_path_for

    if not args.json:
        return
    metadata = (args.metadata_output if args.metadata_output is not None
                else metadata_path_for(args.output))
    try:
        same = os.path.samestat(os.fstat(sys.stdout.fileno()), os.stat(metadata))
    except (OSError, ValueError, AttributeError):  # no such file yet, or no real stdout
        return
    if same:
        raise errors.OUTPUT_NOT_WRITABLE.error(variant="stdout-is-metadata", path=metadata,
                                               slug=args.output)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "compile":
        _check_json_output(args)
        config = load_config_vars(parse_env_assignments(args.env), args.env_dir)
        reporter = _reporter(args)
        image_plan = plan_image(args)
        registry = image_plan.registry if image_plan is not None else (
            registry_options(args) if args.registry_user or args.registry_password_stdin
            else None)  # the cache registry's credentials: the images' (one story)
        result = compile_app(
            args.app_dir, args.output, cache_dir=args.cache_dir, env=config,
            metadata_output=args.metadata_output,
            layout=check_image_layout(args), reporter=reporter,
            runtime_options=_runtime_options(args), buildpacks=args.buildpack or None,
            constraints_from=args.constraints_from, timeout=args.timeout,
            app_base=args.app_base, node_build=args.node_build,
            max_slug_size=args.max_slug_size, sbom_output=args.sbom_output,
            app_json_env=args.app_json_env,
            cache_registry=args.cache_registry,
            cache_registry_readonly=args.cache_registry_readonly, registry=registry,
            boot_check=(args.boot_check_timeout if args.boot_check_timeout is not None
                        else args.boot_check),
        )
        image = compile_image(image_plan, result.slug_path, result.metadata_path, reporter)
        if args.json:
            print(json.dumps({**result.as_dict(), **({"image": image} if image else {})},
                             indent=2))
        return 0
    if args.command == "image":
        return image_command(args, _reporter(args))
    if args.command == "rebase":
        return rebase_command(args, _reporter(args))
    if args.command == "cache":
        from .cache_admin import dispatch

        return dispatch(args)
    if args.command == "run":
        from .slug.run import run_slug

        env = read_env_file(args.env_file) if args.env_file else {}
        env.update(parse_env_assignments(args.env))
        return run_slug(args.slug, args.process or "web", port=args.port, host=args.host,
                        env=load_config_vars(env), unpack_to=args.unpack_to,
                        command=args.one_off)
    if args.command == "inspect":
        from .slug.inspect import describe_slug, render_table, without_credentials

        if args.sbom:
            from .slug.sbom import sbom_for_slug

            sys.stdout.write(sbom_for_slug(args.slug).decode())
            return 0
        description = without_credentials(describe_slug(args.slug))
        if args.sizes:
            from .slug.inspect import render_sizes, slug_sizes

            description["sizes"] = slug_sizes(args.slug)
        if args.json:
            print(json.dumps(description, indent=2))
        else:
            render_table(description, sys.stdout)
            if args.sizes:
                render_sizes(description["sizes"], sys.stdout)
        return 0
    if args.command == "publish":
        from .slug.publish import publish_slug

        release = publish_slug(args.slug, args.heroku_app, api_url=args.api_url,
                               stack=args.stack, reporter=_reporter(args),
                               timeout=args.timeout, max_slug_size=args.max_slug_size)
        print(json.dumps({"release": release.get("id"), "version": release.get("version")}))
        return 0
    if args.command == "runtimes":
        return _list_runtimes(args)
    if args.command == "runtime":
        return _publish_runtime(args)
    if args.command == "lock":
        from .lock import lock_app

        lock_app(args.app_dir, upgrade=args.upgrade, generate_hashes=args.generate_hashes,
                 config_vars=load_config_vars(parse_env_assignments(args.env)),
                 cache_dir=args.cache_dir,
                 reporter=_reporter(args))
        return 0
    if args.command == "plan":
        return _plan(args)
    if args.command == "buildpack":
        return _buildpack(args)
    if args.command == "detect":
        app_dir = args.app_dir
        if args.app_base is not None and app_dir.is_dir():
            from .app_base import resolve_app_base

            app_dir = resolve_app_base(app_dir.absolute(), args.app_base, "--app-base")
        info = detect(app_dir)
        if args.json:
            print(json.dumps({
                "package_manager": info.package_manager, "lock_file": info.lock_file,
                "markers": list(info.markers), "frameworks": list(info.frameworks),
                "manage_py": info.manage_py,
            }, indent=2))
        else:
            print("Python" + (" (Django)" if info.is_django else ""))
        return 0
    if args.command == "stack":
        from .stack import stack_command

        return stack_command(args, Reporter(sys.stderr))
    raise AssertionError(args.command)


def _plan(args: argparse.Namespace) -> int:
    from .plan import plan_app, render_plan

    plan = plan_app(args.app_dir, cache_dir=args.cache_dir,
                    env=load_config_vars(parse_env_assignments(args.env), args.env_dir),
                    runtime_options=_runtime_options(args), buildpacks=args.buildpack or None,
                    constraints_from=args.constraints_from, app_base=args.app_base,
                    node_build=args.node_build, app_json_env=args.app_json_env)
    print(json.dumps(plan.as_dict(), indent=2) if args.json else render_plan(plan))
    return 0


def _buildpack(args: argparse.Namespace) -> int:
    from .bundled_buildpack import buildpack_dir, install_buildpack

    if args.buildpack_command == "path":
        print(buildpack_dir())
    else:
        print(install_buildpack(args.dir, force=args.force))
    return 0


def _publish_runtime(args: argparse.Namespace) -> int:
    """``slugbuild runtime publish TARGET --python X.Y[.Z]``."""
    from . import platform_info
    from .cache import Cache, default_cache_dir
    from .runtime.publish import publish_runtime
    from .slug_size import human

    cache = Cache(args.cache_dir if args.cache_dir is not None else default_cache_dir())
    try:
        published = publish_runtime(args.target, args.python, cache, platform_info.current(),
                                    _runtime_options(args), _reporter(args),
                                    registry_options(args))
    finally:
        cache.release_uses()
    if args.json:
        print(json.dumps({"target": args.target, **dataclasses.asdict(published)}, indent=2))
        return 0
    print(mask(f"Published Python {published.version} ({published.layer}, made from "
               f"{published.made_from}, part {human(published.part_size)}) to {args.target} "
               f"as {published.tag} ({human(published.sent)} sent)"))
    return 0


def _list_runtimes(args: argparse.Namespace) -> int:
    """Print every supported version each source offers (sources that fail are noted)."""
    from . import platform_info
    from .cache import Cache, default_cache_dir
    from .runtime import list_offers, make_sources
    from .versions import policy_for, sort_versions

    def status(version: str) -> str:
        row = policy_for(version)
        return row.status if row else "unknown"

    options = _runtime_options(args)
    platform = platform_info.current()
    cache = Cache(args.cache_dir if args.cache_dir is not None else default_cache_dir())
    sources = make_sources(options, cache, platform)
    names = [source.name for source in sources]
    offers, notes = list_offers(sources, options.allow_eol)
    order = {v: i for i, v in enumerate(sort_versions([o.version for o in offers]))}
    offers.sort(key=lambda o: (-order[o.version], names.index(o.source_name)))
    if args.json:
        print(json.dumps({
            "platform": platform.as_dict(),
            "sources": names,
            "offline": options.offline,
            "runtimes": [{"version": o.version, "source": o.source_name, "origin": o.origin,
                          "status": status(o.version)} for o in offers],
            "unavailable_sources": [mask(note) for note in notes],
        }, indent=2))
        return 0
    print(f"Python runtimes for {platform.stack} ({platform.key}), sources in order: "
          f"{', '.join(names)}{' (offline)' if options.offline else ''}")
    for offer in offers:
        print(mask(f"  {offer.version:<9} {status(offer.version):<10} {offer.source_name:<9} "
                   f"{offer.origin}"))
    if not offers:
        print("  (none)")
    for note in notes:
        print(mask(f" !     source unavailable: {note}"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
