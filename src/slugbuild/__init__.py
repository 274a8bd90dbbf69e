"""slugbuild: compile Python web apps into Heroku-style slugs.

    import slugbuild
    result = slugbuild.compile_app("./myapp", output="myapp.tgz")
    print(result.slug_path, result.sha256, result.process_types)

Everything in ``__all__`` is the public API (docs/api.md): build, detect,
inspect, run or start, publish and lock slugs; the reporter and its events; the
runtime options; every error class (one per code, under the area classes) and
the catalogue of codes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import errors as _errors

# Imported now, not lazily: the module slugbuild.detect would otherwise take the
# name ``slugbuild.detect`` from the function whenever anything imported it.
from .detect import AppInfo, detect
from .errors import (
    AREAS,
    BuildStepError,
    DependencyError,
    ErrorDict,
    HostError,
    InputError,
    InternalError,
    OutputError,
    PublishError,
    PythonRuntimeError,
    SlugbuildError,
    SlugError,
    exception_class,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .arguments import PathArg
    from .bundled_buildpack import buildpack_dir, install_buildpack
    from .lock import lock_app
    from .log import EventHandler, EventKind, LogEvent, LoggingHandler, Reporter, Verbosity
    from .oci.assemble import ImageResult, build_image, rebase_image
    from .pipeline import BuildResult, compile_app
    from .plan import BuildPlan, plan_app
    from .results import (
        BuildResultDict,
        BuildRuntimeDict,
        PackageDict,
        SlugDescription,
        SlugJsonDict,
        SlugRuntimeDict,
    )
    from .runtime import RuntimeOptions
    from .slug.inspect import describe_slug, slug_sizes
    from .slug.publish import publish_slug
    from .slug.run import SlugProcess, run_slug, start_slug

    # The short aliases, for type checkers (at run time: _LAZY).
    inspect = describe_slug
    publish = publish_slug
    run = run_slug
    start = start_slug

#: Every error code of the catalogue (docs/errors.md); ``exception_class(code)``
#: is its class, ``error.code`` the code of a raised one.
ERROR_CODES: tuple[str, ...] = tuple(_errors.CATALOG)

# Each area's class (also those added after this list was written) and each code's
# own class (``PythonVersionUnavailableError``...), importable from here.
_KIND_CLASSES = {cls.__name__: cls for cls in AREAS}
_KIND_CLASSES.update({kind.exception.__name__: kind.exception
                      for kind in _errors.CATALOG.values()})
globals().update(_KIND_CLASSES)

# Public name -> (module, attribute), imported when first used (see __getattr__).
_LAZY: dict[str, tuple[str, str]] = {
    "BuildPlan": (".plan", "BuildPlan"),
    "BuildResult": (".pipeline", "BuildResult"),
    "BuildResultDict": (".results", "BuildResultDict"),
    "BuildRuntimeDict": (".results", "BuildRuntimeDict"),
    "EventHandler": (".log", "EventHandler"),
    "ImageResult": (".oci.assemble", "ImageResult"),
    "EventKind": (".log", "EventKind"),
    "LogEvent": (".log", "LogEvent"),
    "LoggingHandler": (".log", "LoggingHandler"),
    "Verbosity": (".log", "Verbosity"),
    "PackageDict": (".results", "PackageDict"),
    "PathArg": (".arguments", "PathArg"),
    "Reporter": (".log", "Reporter"),
    "RuntimeOptions": (".runtime", "RuntimeOptions"),
    "SlugDescription": (".results", "SlugDescription"),
    "SlugJsonDict": (".results", "SlugJsonDict"),
    "SlugProcess": (".slug.run", "SlugProcess"),
    "SlugRuntimeDict": (".results", "SlugRuntimeDict"),
    "build_image": (".oci.assemble", "build_image"),
    "buildpack_dir": (".bundled_buildpack", "buildpack_dir"),
    "compile_app": (".pipeline", "compile_app"),
    "describe_slug": (".slug.inspect", "describe_slug"),
    "inspect": (".slug.inspect", "describe_slug"),
    "install_buildpack": (".bundled_buildpack", "install_buildpack"),
    "lock_app": (".lock", "lock_app"),
    "plan_app": (".plan", "plan_app"),
    "publish": (".slug.publish", "publish_slug"),
    "publish_slug": (".slug.publish", "publish_slug"),
    "rebase_image": (".oci.assemble", "rebase_image"),
    "run": (".slug.run", "run_slug"),
    "run_slug": (".slug.run", "run_slug"),
    "slug_sizes": (".slug.inspect", "slug_sizes"),
    "start": (".slug.run", "start_slug"),
    "start_slug": (".slug.run", "start_slug"),
}

__all__ = [
    "AREAS", "AppInfo", "BuildPlan", "BuildResult", "BuildResultDict", "BuildRuntimeDict",
    "BuildStepError", "DependencyError", "ERROR_CODES", "ErrorDict", "EventHandler", "EventKind",
    "HostError", "ImageResult", "InputError", "InternalError", "LogEvent", "LoggingHandler",
    "OutputError", "PackageDict",
    "PathArg", "PublishError", "PythonRuntimeError", "Reporter", "RuntimeOptions",
    "SlugDescription", "SlugError", "SlugJsonDict", "SlugProcess", "SlugRuntimeDict",
    "SlugbuildError", "Verbosity", "__version__", "build_image", "buildpack_dir", "compile_app",
    "describe_slug", "detect", "exception_class", "install_buildpack", "lock_app", "plan_app",
    "publish_slug", "rebase_image", "run_slug", "slug_sizes", "start_slug",
]
# The short aliases (slugbuild.inspect, .run, .start, .publish) are attributes only:
# a star import must not shadow the inspect module or a caller's own run().
_ALIASES = ("inspect", "publish", "run", "start")
# ... and every area's and code's class.
__all__ += sorted(set(_KIND_CLASSES) - set(__all__))


def __getattr__(name: str) -> object:
    """The pipeline and the slug tools are imported when first used, not with the
    package: the command line can then take Ctrl-C quietly while it still loads
    (see __main__.entry), and ``import slugbuild`` stays cheap."""
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module, __name__), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'slugbuild' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_ALIASES))
