"""Package manager tools (Pipenv, Poetry) kept in the cache, never in a slug.

Each tool is installed once per version with uv into ``CACHE/tools/<name>``
(``uv pip install --target``) and run as ``python -m <tool>`` from slugbuild's
own interpreter with that directory on PYTHONPATH. The slug only ever gets
the app's packages; the tools only export what their lock file pins.

A tool is shared by every app using the cache, so no app may decide what another
app's tool is. Its key names the indexes it came from, config vars and earlier
buildpacks' exports alike (an app's own index may
serve any ``pipenv==2026.10.3`` it likes, installed for that app's index only);
it is installed from wheels only (``--no-build``: no package's code runs) and
sealed as an install (step_jail.py), into the build's private scratch, its
bytecode compiled there, checked to hold exactly the pinned distributions, then
published by rename (``Cache.new_layer``). The tool's runs (the lock exports)
are sealed too, with ``tools/`` read-only: Python cannot leave a ``.pyc`` in it.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from .. import errors
from ..proc import ToolFailed
from . import InstallJob
from .common import DEFAULT_INDEX_URL, redact, run_install_tool
from .uv import index_env, uv_binary, uv_env, uv_version

# The pinned version of each tool; bumping one changes every layer key that used it.
TOOL_REQUIREMENTS = {
    "pipenv": ("pipenv==2026.10.3",),
    "poetry": ("poetry==2.5.1", "poetry-plugin-export==1.10.1"),
    # pip for runtimes older than slugbuild's own pip supports (installers/pip.py OLDER_PIP).
    "pip-26.0.1": ("pip==26.0.1",),
}
# 2: keyed by the indexes, installed from wheels only with its bytecode compiled.
TOOL_FORMAT = 2
# Config vars that change what an installer fetches for the tool (indexes, links,
# uv's and pip's settings): a tool installed with them is theirs alone.
_INSTALL_SETTINGS = re.compile(r"^(UV_|PIP_)")


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
        "sources_sha256": sources_sha256(job.config_vars, job.exports),
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
                    "--target", str(tree), "--link-mode", "copy", "--no-build",
                    "--compile-bytecode", *requirements]
            index = redact(job.config_vars.get("PIP_INDEX_URL") or DEFAULT_INDEX_URL)
            try:
                # --no-build: uv runs no package code, so argv is its own wheel-only
                # run (run_install_tool: sealed with uv's shared cache writable; guarded
                # once it, or an earlier run of the install, failed); the tree being
                # made is written.
                run_install_tool(job, argv, uv_env(job, index_env(job.config_vars)),
                                 show=False, wheel_only=argv, writes=[tree])
            except ToolFailed as failed:
                raise errors.MANAGER_TOOL_FAILED.error(
                    tool=name, version=tool_version(name), exit_code=failed.exit_code,
                    index=index, output=failed.tail,
                ) from failed
            missing = [requirement for requirement in requirements
                       if not _installed(tree, requirement)]
            if missing:  # never published: the next build installs it again
                raise errors.MANAGER_TOOL_FAILED.error(
                    variant="incomplete", tool=name, version=tool_version(name),
                    index=index, missing=", ".join(missing))
    layer = job.cache.lookup("tools", layer_name, key)
    assert layer is not None
    return layer.tree


def sources_sha256(config_vars: Mapping[str, str],
                   exports: Mapping[str, str] | None = None) -> str:
    """The digest of what decides where a tool's files come from: the indexes as uv
    is given them and every UV_/PIP_ config var (credentials never shown, only hashed),
    and every UV_/PIP_ variable an earlier buildpack exported: they reach uv too
    (``uv_env``), and ``UV_INDEX`` or ``UV_FIND_LINKS`` there chooses the tool's files."""
    settings: dict[str, object] = {
        **{name: value for name, value in config_vars.items()
           if _INSTALL_SETTINGS.match(name)}, **index_env(config_vars)}
    exported = {name: value for name, value in (exports or {}).items()
                if _INSTALL_SETTINGS.match(name)}
    if exported:  # absent without them: the keys of tools installed before stay
        settings["exported"] = exported
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _installed(tree: Path, requirement: str) -> bool:
    """Whether ``tree`` holds the distribution ``name==version`` pins (its dist-info)."""
    name, _, version = requirement.partition("==")
    wanted = re.sub(r"[-_.]+", "_", name).lower()
    return any(re.sub(r"[-_.]+", "_", path.name[:-len(f"-{version}.dist-info")]).lower()
               == wanted for path in tree.glob(f"*-{version}.dist-info"))


def tool_command(name: str, module: str | None = None) -> list[str]:
    """How to run a cached tool: slugbuild's interpreter, no user site."""
    return [sys.executable, "-s", "-m", module or name]
