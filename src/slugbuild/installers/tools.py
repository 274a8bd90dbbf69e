"""Package manager tools (Pipenv, Poetry) kept in the cache, never in a slug.

Each tool is installed once per version with uv into ``CACHE/tools/<name>``
(``uv pip install --target``) and run as ``python -m <tool>`` from slugbuild's
own interpreter with that directory on PYTHONPATH. The slug only ever gets
the app's packages; the tools only export what their lock file pins.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from .. import errors
from ..proc import ToolFailed, run_tool
from . import InstallJob
from .common import DEFAULT_INDEX_URL, redact
from .uv import index_env, uv_binary, uv_env, uv_version

# The pinned version of each tool; bumping one changes every layer key that used it.
TOOL_REQUIREMENTS = {
    "pipenv": ("pipenv==2026.10.3",),
    "poetry": ("poetry==2.5.1", "poetry-plugin-export==1.10.1"),
    # pip for runtimes older than slugbuild's own pip supports (installers/pip.py OLDER_PIP).
    "pip-26.0.1": ("pip==26.0.1",),
}
TOOL_FORMAT = 1


def tool_version(name: str) -> str:
    return " + ".join(TOOL_REQUIREMENTS[name])


def ensure_tool(name: str, job: InstallJob) -> Path:
    """The directory holding ``name`` and its dependencies, installed if missing."""
    requirements = TOOL_REQUIREMENTS[name]
    inputs = {
        "tool": name,
        "requirements": list(requirements),
        "python": f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}",
        "platform": sys.platform,
        "uv": uv_version(),
        "format": TOOL_FORMAT,
    }
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    layer_name = f"{name}-{key[:12]}"
    (job.cache.root / "tools").mkdir(exist_ok=True)
    layer = job.cache.lookup("tools", layer_name, key)
    if layer is not None:
        return layer.tree
    with job.cache.lock("tools", layer_name):
        layer = job.cache.lookup("tools", layer_name, key)
        if layer is not None:
            return layer.tree
        job.reporter.step(f"Installing {tool_version(name)} (build tool, cached; not in the slug)")
        with job.cache.new_layer("tools", layer_name, key, inputs) as tree:
            argv = [uv_binary(), "pip", "install", "--python", sys.executable,
                    "--target", str(tree), "--link-mode", "copy", *requirements]
            try:
                run_tool(argv, job.reporter, uv_env(job, index_env(job.config_vars)),
                         show=False)
            except ToolFailed as failed:
                raise errors.MANAGER_TOOL_FAILED.error(
                    tool=name, version=tool_version(name), exit_code=failed.exit_code,
                    index=redact(job.config_vars.get("PIP_INDEX_URL") or DEFAULT_INDEX_URL),
                    output=failed.tail,
                ) from failed
    layer = job.cache.lookup("tools", layer_name, key)
    assert layer is not None
    return layer.tree


def tool_command(name: str, module: str | None = None) -> list[str]:
    """How to run a cached tool: slugbuild's interpreter, no user site."""
    return [sys.executable, "-s", "-m", module or name]
