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
    from .pipeline import BuildResult, compile_app
    from .plan import BuildPlan, plan_app

__all__ = ["BuildPlan", "BuildResult", "SlugbuildError", "compile_app", "plan_app",
           "__version__"]


def __getattr__(name: str) -> object:
    """The pipeline is imported when first used, not with the package: the command
    line can then take Ctrl-C quietly while it still loads (see __main__.entry)."""
    if name in ("BuildResult", "compile_app"):
        from . import pipeline

        return getattr(pipeline, name)
    if name in ("BuildPlan", "plan_app"):  # docs/plan.md
        from . import plan

        return getattr(plan, name)
    raise AttributeError(f"module 'slugbuild' has no attribute {name!r}")
