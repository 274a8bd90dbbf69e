"""Apps whose assets are built by Node beside the Python app.

A Django app with a ``package.json`` whose ``build`` script makes the CSS that
templates and collectstatic's manifest name builds fine and then answers 500:
on Heroku such apps add the Node.js buildpack before Python. slugbuild does
not run Node itself, so when such a script sits in the app and no Node.js
buildpack runs before the Python stages, it says so, and how to add one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

PACKAGE_JSON = "package.json"
# The scripts heroku-buildpack-nodejs runs after installing (the first one defined).
BUILD_SCRIPTS = ("heroku-postbuild", "build")
_NODE = re.compile(r"node", re.IGNORECASE)


def build_script(app_dir: Path) -> str | None:
    """The script Heroku's Node.js buildpack would run for ``package.json``, if any."""
    try:
        data = json.loads((app_dir / PACKAGE_JSON).read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    scripts = data.get("scripts") if isinstance(data, dict) else None
    if not isinstance(scripts, dict):
        return None
    for name in BUILD_SCRIPTS:
        command = scripts.get(name)
        if isinstance(command, str) and command.strip():
            return name
    return None


def is_node_buildpack(names: Sequence[str]) -> bool:
    """Whether a buildpack (by its spec or the name its bin/detect printed) is Node's."""
    return any(_NODE.search(name) for name in names if name)


def node_assets_warning(app_dir: Path, before: Sequence[Sequence[str]],
                        after: Sequence[Sequence[str]]) -> str | None:
    """A warning when ``package.json`` has a build script but no Node.js buildpack runs
    before the Python stages (``before`` and ``after``: the names of the buildpacks
    that run before and after them)."""
    script = build_script(app_dir)
    if script is None or any(is_node_buildpack(names) for names in before):
        return None
    if any(is_node_buildpack(names) for names in after):
        return (f"{PACKAGE_JSON} defines a `{script}` script, and a Node.js buildpack is "
                f"listed, but after Python: collectstatic and bin/post_compile run before "
                f"the assets are built. List the Node.js buildpack first.")
    return (f"{PACKAGE_JSON} defines a `{script}` script, but no Node.js buildpack runs in "
            f"this build, so the files it builds (CSS or JS that templates and "
            f"collectstatic's manifest name) will be missing from the slug. Add the Node.js "
            f"buildpack before Python, as `heroku buildpacks:add --index 1 heroku/nodejs` "
            f"does on Heroku: a .buildpacks file with the lines `heroku/nodejs` and "
            f"`heroku/python` (or app.json `buildpacks`, or `--buildpack heroku/nodejs "
            f"--buildpack python`).")
