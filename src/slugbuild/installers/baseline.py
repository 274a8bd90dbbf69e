"""What a dependency layer holds before the app's own requirements: Heroku's baseline.

Heroku's Python buildpack (v351, ``lib/pip.sh``) installs ``setuptools==70.3.0``
before ``pip install -r requirements.txt`` when the app uses pip on Python
3.10, 3.11 or 3.12 (and did on 3.9 while it built 3.9). Packages that still
import ``pkg_resources`` without declaring ``setuptools<82`` (gunicorn 20.x,
for one) therefore keep working there: pip sees setuptools installed and
satisfying ``setuptools>=3.0``, so it never pulls today's setuptools (82 and
later ship no ``pkg_resources``). Pipenv, Poetry and uv apps get no baseline
there, nor do pip apps on 3.13 and later: neither here.

The app's requirements are installed on top, exactly as on Heroku: a
requirement asking for another setuptools replaces the baseline's.

``SLUGBUILD_KEEP_PIP=1`` (a build config var) adds pip itself, for apps that
run ``pip`` inside the slug (``heroku run pip list``); Heroku's buildpack keeps
pip in every pip app's slug, slugbuild only when asked (docs/package-managers.md).
"""

from __future__ import annotations

from collections.abc import Mapping

from packaging.version import Version

# Heroku's pin (lib/pip.sh SETUPTOOLS_VERSION), hard-coded there too.
SETUPTOOLS_VERSION = "70.3.0"
# The newest Python that gets it: Heroku's `+(3.10|3.11|3.12)`.
SETUPTOOLS_BASELINE_UNTIL = (3, 12)
KEEP_PIP_CONFIG_VAR = "SLUGBUILD_KEEP_PIP"


def keep_pip(config_vars: Mapping[str, str]) -> bool:
    """SLUGBUILD_KEEP_PIP set to anything but empty, 0, false or no."""
    value = config_vars.get(KEEP_PIP_CONFIG_VAR, "").strip().lower()
    return value not in ("", "0", "false", "no")


def baseline_requirements(package_manager: str, python_version: str,
                          config_vars: Mapping[str, str],
                          pip_version: str | None = None) -> tuple[str, ...]:
    """The requirements installed before the app's, as ``name==version`` lines.

    ``pip_version`` is the pip the build installs with (kept in the slug when
    asked for); slugbuild's own pip when not given.
    """
    wanted: list[str] = []
    release = Version(python_version).release
    if package_manager == "pip" and tuple(release[:2]) <= SETUPTOOLS_BASELINE_UNTIL:
        wanted.append(f"setuptools=={SETUPTOOLS_VERSION}")
    if keep_pip(config_vars):
        if pip_version is None:
            from importlib.metadata import version  # email, zipfile...: only here

            pip_version = version("pip")
        wanted.append(f"pip=={pip_version}")
    return tuple(wanted)
