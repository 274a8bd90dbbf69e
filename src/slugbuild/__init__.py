"""slugbuild: compile Python web apps into Heroku-style slugs.

    import slugbuild
    result = slugbuild.compile_app("./myapp", output="myapp.tgz")
    print(result.slug_path, result.sha256, result.process_types)
"""

__version__ = "0.1.0"

from .errors import SlugbuildError  # noqa: E402
from .pipeline import BuildResult, compile_app  # noqa: E402

__all__ = ["BuildResult", "SlugbuildError", "compile_app", "__version__"]
