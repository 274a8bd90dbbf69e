"""The ``slugbuild`` command: a thin layer over the library."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from . import __version__
from .build import compile_app, load_config_vars, parse_env_assignments, read_env_file
from .detect import detect
from .errors import SlugbuildError
from .log import Reporter
from .pack import LAYOUTS
from .runtimes import RuntimeOptions


def _add_runtime_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--python-source", metavar="SOURCES",
                        help="runtime sources to try, in order, comma-separated: local, "
                             "download, heroku (default: $SLUGBUILD_PYTHON_SOURCE or "
                             "local,download)")
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


def _runtime_options(args: argparse.Namespace) -> RuntimeOptions:
    return RuntimeOptions.from_env(args.python_source, args.offline, args.python_download_url,
                                   args.allow_eol_python, args.python_patch_fallback)


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < 86400:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds above 0")
    return seconds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slugbuild", description="Compile Python web apps into Heroku-style slugs."
    )
    parser.add_argument("--version", action="version", version=f"slugbuild {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    compile_ = sub.add_parser("compile", help="build a slug from an app directory")
    compile_.add_argument("app_dir", type=Path)
    compile_.add_argument("-o", "--output", type=Path, default=Path("slug.tgz"),
                          help="slug path (default: ./slug.tgz); slug.json is written beside it")
    compile_.add_argument("--cache-dir", type=Path,
                          help="cache directory (default: $SLUGBUILD_CACHE_DIR or "
                               "~/.cache/slugbuild)")
    compile_.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                          help="build config var (repeatable); never stored in the slug")
    compile_.add_argument("--env-dir", type=Path,
                          help="directory of config vars, one file per var (Heroku ENV_DIR)")
    compile_.add_argument("--layout", choices=sorted(LAYOUTS), default="herokuish",
                          help="herokuish: paths under ./ ; heroku: paths under ./app/")
    compile_.add_argument("--buildpack", action="append", default=[], metavar="PATH|GIT_URL[#REF]",
                          help="run this Heroku-API buildpack (repeatable, in order; `python` "
                               "is the built-in one); default: the app's .buildpacks file")
    compile_.add_argument("--app-base", metavar="DIR",
                          help="build only this subdirectory of the app (Heroku's monorepo "
                               "APP_BASE; default: the APP_BASE config var, else the root)")
    compile_.add_argument("--node-build", action="store_true",
                          help="before Python, run the built-in Node step: npm ci and the "
                               "package.json build script with the machine's node "
                               "(node_modules is left out of the slug)")
    compile_.add_argument("--boot-check", action="store_true",
                          help="after packing, start the slug's web process on 127.0.0.1 and "
                               "fail the build (writing no slug) unless it answers HTTP")
    compile_.add_argument("--boot-check-timeout", type=_positive_seconds, metavar="SECONDS",
                          help="how long the boot check waits for an answer (default: 30; "
                               "implies --boot-check)")
    compile_.add_argument("--json", action="store_true",
                          help="print the result as JSON on stdout (the log stays on stderr)")
    compile_.add_argument("--timeout", type=float, metavar="SECONDS",
                          help="stop the build (and everything it started) after this long "
                               "(default: $SLUGBUILD_BUILD_TIMEOUT or 900, as Heroku; 0: none)")
    _add_runtime_options(compile_)

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

    run = sub.add_parser("run", help="run a process type from a slug")
    run.add_argument("slug", type=Path, help="slug tarball or unpacked slug directory")
    run.add_argument("process", nargs="?", default="web", help="process type (default: web)")
    run.add_argument("--port", type=int, default=5000)
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

    publish = sub.add_parser("publish", help="deploy a slug to a Heroku app (Platform API)")
    publish.add_argument("slug", type=Path, help="a slug compiled with --layout heroku")
    publish.add_argument("--heroku-app", required=True, metavar="NAME")
    publish.add_argument("--stack", help="Heroku stack, e.g. heroku-24 (default: the app's)")
    publish.add_argument("--api-url", help="Platform API base URL (default: %(default)s)",
                         default=None)

    lock = sub.add_parser("lock", help="pin requirements.in / pyproject.toml dependencies "
                                       "into requirements.txt (pip-tools)")
    lock.add_argument("app_dir", type=Path)
    lock.add_argument("--upgrade", action="store_true",
                      help="move every pin to the newest allowed version")
    lock.add_argument("--generate-hashes", action="store_true",
                      help="add --hash lines (installs then run with --require-hashes)")
    lock.add_argument("--cache-dir", type=Path, help="cache directory (as for compile)")
    lock.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                      help="config var for the resolver, e.g. PIP_EXTRA_INDEX_URL=...")

    detect_ = sub.add_parser("detect", help="say whether a directory is a Python app")
    detect_.add_argument("app_dir", type=Path)
    detect_.add_argument("--app-base", metavar="DIR",
                         help="detect this subdirectory of the app (as compile --app-base)")
    detect_.add_argument("--json", action="store_true")
    return parser


class Stopped(KeyboardInterrupt):
    """SIGTERM, SIGHUP or SIGINT, raised where the main thread is, so that every
    ``finally`` runs: the build's tools are killed and its scratch removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def _stop_on_signals() -> dict:
    """The first of these signals stops slugbuild cleanly; later ones are ignored
    while it cleans up (SIGKILL still ends it, and the next build removes what it
    left). Returns the handlers replaced."""
    def stop(signum: int, _frame: object) -> None:
        for each in _STOPPING_SIGNALS:
            signal.signal(each, signal.SIG_IGN)
        raise Stopped(signum)

    previous = {}
    for each in _STOPPING_SIGNALS:
        if signal.getsignal(each) in (signal.SIG_DFL, signal.default_int_handler):
            previous[each] = signal.signal(each, stop)
    return previous


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    replaced = (_stop_on_signals() if threading.current_thread() is threading.main_thread()
                else {})
    try:
        return _dispatch(args)
    except SlugbuildError as error:
        print(error.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt as stopped:
        signum = stopped.signum if isinstance(stopped, Stopped) else signal.SIGINT
        print(f" !     Interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum
    finally:
        for each, handler in replaced.items():
            signal.signal(each, handler)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "compile":
        config = load_config_vars(parse_env_assignments(args.env), args.env_dir)
        result = compile_app(
            args.app_dir, args.output, cache_dir=args.cache_dir, env=config,
            layout=args.layout, reporter=Reporter(sys.stderr),
            runtime_options=_runtime_options(args), buildpacks=args.buildpack or None,
            constraints_from=args.constraints_from, timeout=args.timeout,
            app_base=args.app_base, node_build=args.node_build,
            boot_check=(args.boot_check_timeout if args.boot_check_timeout is not None
                        else args.boot_check),
        )
        if args.json:
            print(json.dumps(result.as_dict(), indent=2))
        return 0
    if args.command == "run":
        from .run import run_slug

        env = read_env_file(args.env_file) if args.env_file else {}
        env.update(parse_env_assignments(args.env))
        return run_slug(args.slug, args.process, port=args.port, host=args.host,
                        env=load_config_vars(env), unpack_to=args.unpack_to)
    if args.command == "inspect":
        from .inspect_slug import describe_slug, render_table

        description = describe_slug(args.slug)
        if args.json:
            print(json.dumps(description, indent=2))
        else:
            render_table(description, sys.stdout)
        return 0
    if args.command == "publish":
        from .publish import publish_slug

        release = publish_slug(args.slug, args.heroku_app, api_url=args.api_url,
                               stack=args.stack, reporter=Reporter(sys.stderr))
        print(json.dumps({"release": release.get("id"), "version": release.get("version")}))
        return 0
    if args.command == "runtimes":
        return _list_runtimes(args)
    if args.command == "lock":
        from .lock import lock_app

        lock_app(args.app_dir, upgrade=args.upgrade, generate_hashes=args.generate_hashes,
                 config_vars=parse_env_assignments(args.env), cache_dir=args.cache_dir,
                 reporter=Reporter(sys.stderr))
        return 0
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
    raise AssertionError(args.command)


def _list_runtimes(args: argparse.Namespace) -> int:
    """Print every supported version each source offers (sources that fail are noted)."""
    from . import platform_info
    from .cache import Cache, default_cache_dir
    from .runtimes import list_offers, make_sources
    from .versions import policy_for, sort_versions

    def status(version: str) -> str:
        row = policy_for(version)
        return row.status if row else "unknown"

    options = _runtime_options(args)
    platform = platform_info.current()
    cache = Cache(args.cache_dir if args.cache_dir is not None else default_cache_dir())
    offers, notes = list_offers(make_sources(options, cache, platform), options.allow_eol)
    order = {v: i for i, v in enumerate(sort_versions([o.version for o in offers]))}
    offers.sort(key=lambda o: (-order[o.version], options.sources.index(o.source_name)))
    if args.json:
        print(json.dumps({
            "platform": platform.as_dict(),
            "sources": list(options.sources),
            "offline": options.offline,
            "runtimes": [{"version": o.version, "source": o.source_name, "origin": o.origin,
                          "status": status(o.version)} for o in offers],
            "unavailable_sources": notes,
        }, indent=2))
        return 0
    print(f"Python runtimes for {platform.stack} ({platform.key}), sources in order: "
          f"{', '.join(options.sources)}{' (offline)' if options.offline else ''}")
    for offer in offers:
        print(f"  {offer.version:<9} {status(offer.version):<10} {offer.source_name:<9} "
              f"{offer.origin}")
    if not offers:
        print("  (none)")
    for note in notes:
        print(f" !     source unavailable: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
