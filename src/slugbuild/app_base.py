"""Apps in a subdirectory: Heroku's monorepo convention (``APP_BASE``).

heroku-buildpack-monorepo copies the content of ``$APP_BASE`` (a path relative
to the repository root) over the build directory before the language buildpack
runs, so the slug holds only that directory's content, at ``/app``. slugbuild
does the same without a buildpack: ``--app-base DIR`` (or the ``APP_BASE``
config var, or ``compile_app(app_base=...)``) makes that directory the app,
so detection, version files, ``.slugignore``, ``.buildpacks`` and the
Procfile are read there and nothing beside it reaches the slug.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from . import errors
from .log import Reporter

APP_BASE_VAR = "APP_BASE"


def choose_app_base(given: str | None, config_vars: Mapping[str, str]) -> tuple[str, str] | None:
    """The app base to use and where it came from (the parameter wins over the config var)."""
    if given is not None and given.strip():
        return given, "--app-base"
    value = config_vars.get(APP_BASE_VAR, "")
    if value.strip():
        return value, f"the {APP_BASE_VAR} config var"
    return None


def resolve_app_base(root: Path, value: str, source: str) -> Path:
    """``root``/``value`` as the app directory; refuse a value that leaves ``root`` or
    does not name a directory inside it.

    The value is a relative POSIX path (``backend``, ``services/api``, with or without
    ``./`` and a trailing ``/``). Absolute paths, ``..`` and symlinks that resolve
    outside the root are refused: the build reads only the app it was given.
    """
    def invalid(variant: str, real: Path | None = None) -> errors.SlugbuildError:
        return errors.APP_BASE_INVALID.error(variant=variant, value=value, source=source,
                                             root=root, real=real)

    text = value.strip()
    if "\0" in text or "\n" in text:
        raise invalid("control-character")
    relative = PurePosixPath(text)
    if relative.is_absolute() or text.startswith("~"):
        raise invalid("absolute")
    if ".." in relative.parts:
        raise invalid("climbs-out")
    if relative == PurePosixPath("."):
        return root
    candidate = root.joinpath(*relative.parts)
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(candidate))
    if real != real_root and real_root not in real.parents:
        raise invalid("symlink-out", real)
    if not candidate.exists():
        raise invalid("missing")
    if not candidate.is_dir():
        raise invalid("not-a-directory")
    # A symlinked base (``app -> services/api``) is the directory it names.
    return root.joinpath(*real.relative_to(real_root).parts)


def apply_app_base(app_dir: Path, given: str | None, config_vars: Mapping[str, str],
                   reporter: Reporter) -> tuple[Path, Path | None]:
    """The directory to build and, with an app base, the repository root it is in
    (``given``, else the ``APP_BASE`` config var; None: the whole ``app_dir``)."""
    chosen = choose_app_base(given, config_vars)
    if chosen is None:
        return app_dir, None
    base = resolve_app_base(app_dir, *chosen)
    reporter.step(f"Using the app base {chosen[0].strip()} (from {chosen[1]}): "
                  f"only its content is built into the slug")
    return base, app_dir
