"""slugbuild: compile Python web apps into Heroku-style slugs.

    import slugbuild
    result = slugbuild.compile_app("./myapp", output="myapp.tgz")
    print(result.slug_path, result.sha256, result.process_types)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import SlugbuildError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .oci.assemble import ImageResult, build_image, rebase_image
    from .pipeline import BuildResult, compile_app

__all__ = ["BuildResult", "ImageResult", "SlugbuildError", "build_image", "compile_app",
           "rebase_image", "__version__"]


def __getattr__(name: str) -> object:
    """The pipeline is imported when first used, not with the package: the command
    line can then take Ctrl-C quietly while it still loads (see __main__.entry)."""
    if name in ("BuildResult", "compile_app"):
        from . import pipeline

        return getattr(pipeline, name)
    if name in ("ImageResult", "build_image", "rebase_image"):
        from .oci import assemble

        return getattr(assemble, name)
    raise AttributeError(f"module 'slugbuild' has no attribute {name!r}")
