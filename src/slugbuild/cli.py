"""The ``slugbuild`` command: a thin layer over the library."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .build import compile_app, load_config_vars, parse_env_assignments
from .detect import detect
from .errors import SlugbuildError
from .log import Reporter
from .pack import LAYOUTS


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
    compile_.add_argument("--json", action="store_true",
                          help="print the result as JSON on stdout (the log stays on stderr)")
    compile_.add_argument("--constraints-from", type=Path, metavar="SLUG_JSON",
                          help="install the package versions an earlier build recorded in "
                               "its slug.json")

    run = sub.add_parser("run", help="run a process type from a slug")
    run.add_argument("slug", type=Path, help="slug tarball or unpacked slug directory")
    run.add_argument("process", nargs="?", default="web", help="process type (default: web)")
    run.add_argument("--port", type=int, default=5000)
    run.add_argument("--host", default="127.0.0.1",
                     help="address servers are told to bind (default: 127.0.0.1)")
    run.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--unpack-to", type=Path,
                     help="unpack a tarball here and keep it (default: a temporary directory)")

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
    detect_.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except SlugbuildError as error:
        print(error.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(" !     Interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "compile":
        config = load_config_vars(parse_env_assignments(args.env), args.env_dir)
        result = compile_app(
            args.app_dir, args.output, cache_dir=args.cache_dir, env=config,
            layout=args.layout, reporter=Reporter(sys.stderr),
            constraints_from=args.constraints_from,
        )
        if args.json:
            print(json.dumps(result.as_dict(), indent=2))
        return 0
    if args.command == "run":
        from .run import run_slug

        return run_slug(args.slug, args.process, port=args.port, host=args.host,
                        env=parse_env_assignments(args.env), unpack_to=args.unpack_to)
    if args.command == "lock":
        from .lock import lock_app

        lock_app(args.app_dir, upgrade=args.upgrade, generate_hashes=args.generate_hashes,
                 config_vars=parse_env_assignments(args.env), cache_dir=args.cache_dir,
                 reporter=Reporter(sys.stderr))
        return 0
    if args.command == "detect":
        info = detect(args.app_dir)
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


if __name__ == "__main__":
    sys.exit(main())
