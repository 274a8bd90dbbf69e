"""Apps whose assets are built by Node beside the Python app.

A Django app with a ``package.json`` whose ``build`` script makes the CSS that
templates and collectstatic's manifest name builds fine and then answers 500:
on Heroku such apps add the Node.js buildpack before Python. When such a
script sits in the app and no Node.js step runs before the Python stages,
slugbuild says so, and how to add one.

The opt-in built-in Node step (``--node-build``, or ``slugbuild:node`` in a
buildpack list) runs ``npm ci`` (``npm install`` without a lock) and the build
script with the Node.js that package.json's ``engines.node`` asks for (a
cached runtime layer, node_runtime.py), then removes ``node_modules``: the slug
gets the built assets, not the tools that built them (nor Node.js itself).

npm's cache is shared by every app's build, and the packages' install scripts and
the build script are code slugbuild did not write. So with a seal for them
(``scripts``), npm installs with ``--ignore-scripts`` (npm's own code alone
writes its cache, sealed but for it), then ``npm rebuild`` (the packages' and the
root's install scripts, unless the lock shows none), the root's ``prepare`` (if
it has one) and the build script run sealed
with npm's shared cache read-only, npm's cache and global prefix for them a
private directory of the build's scratch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

from . import errors
from .cache import Cache
from .log import Reporter
from .proc import ToolFailed, clean_env, exported_config, run_tool
from .step_jail import StepRunner, Unsealed

PACKAGE_JSON = "package.json"
# The scripts heroku-buildpack-nodejs runs after installing (the first one defined).
BUILD_SCRIPTS = ("heroku-postbuild", "build")
_NODE = re.compile(r"node", re.IGNORECASE)
# Names of the built-in Node step in --buildpack, .buildpacks and app.json.
NATIVE_NODE_NAMES = frozenset({"slugbuild:node", "slugbuild:nodejs"})
NODE_STEP_DESCRIPTION = "Node.js (slugbuild built-in: npm)"
# Lock files of other Node package managers, which npm would silently ignore.
_OTHER_LOCKS = {"yarn.lock": "Yarn", "pnpm-lock.yaml": "pnpm", "bun.lockb": "Bun",
                "bun.lock": "Bun"}
_NPM_LOCKS = ("package-lock.json", "npm-shrinkwrap.json")


def _read_json(path: Path) -> object:
    """``path`` as JSON (a BOM allowed), or None when it cannot be read as such."""
    try:
        return json.loads(path.read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None


def _scripts(app_dir: Path) -> dict[str, object]:
    """package.json's ``scripts`` (empty when it has none or cannot be read)."""
    data = _read_json(app_dir / PACKAGE_JSON)
    scripts = data.get("scripts") if isinstance(data, dict) else None
    return scripts if isinstance(scripts, dict) else {}


def install_scripts_to_run(app_dir: Path, lock: str | None) -> list[list[str]]:
    """What runs the scripts ``npm ci`` would have after ``--ignore-scripts``:
    ``npm rebuild`` (the packages' and the root's install scripts) unless the lock
    (version 2 or later, which marks ``hasInstallScript``) and package.json show none,
    and ``npm run prepare`` when the root has one. Each skipped one saves an npm start."""
    scripts = _scripts(app_dir)
    commands = []
    data = _read_json(app_dir / lock) if lock is not None else None
    packages = data.get("packages") if isinstance(data, dict) else None
    if (not isinstance(packages, dict) or not isinstance(data, dict)
            or not isinstance(data.get("lockfileVersion"), int) or data["lockfileVersion"] < 2
            or any(isinstance(entry, dict) and entry.get("hasInstallScript")
                   for entry in packages.values())
            or any(name in scripts for name in ("preinstall", "install", "postinstall"))):
        commands.append(["rebuild"])
    if any(name in scripts for name in ("preprepare", "prepare", "postprepare")):
        commands.append(["run", "--if-present", "prepare"])
    return commands


def build_script(app_dir: Path) -> str | None:
    """The script Heroku's Node.js buildpack would run for ``package.json``, if any."""
    scripts = _scripts(app_dir)
    for name in BUILD_SCRIPTS:
        command = scripts.get(name)
        if isinstance(command, str) and command.strip():
            return name
    return None


def is_heroku_nodejs(spec: str) -> bool:
    """Whether ``spec`` (expanded) is Heroku's Node.js buildpack, at any ref."""
    url = spec.split("#", 1)[0].rstrip("/")
    url = url[:-len(".git")] if url.endswith(".git") else url
    return url.lower() == "https://github.com/heroku/heroku-buildpack-nodejs"


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


def _npm(reporter: Reporter, env: Mapping[str, str], cwd: Path,
         command: list[str | Path]) -> str:
    return run_tool(command, reporter, env, cwd=cwd)


def run_node_build(build_dir: Path, config_vars: Mapping[str, str], npm_cache: Path,
                   reporter: Reporter, cache: Cache | None = None,
                   offline: bool = False, exports: Mapping[str, str] | None = None,
                   runner: StepRunner | None = None,
                   scripts: tuple[StepRunner, Path] | None = None) -> None:
    """``npm ci`` (or ``npm install``) and the build script in ``build_dir``, then
    ``node_modules`` removed; one catalogue error when it cannot be done. ``runner``:
    how npm is started (the build's cache sealed but for ``npm_cache``, step_jail.py).
    ``scripts``: how the scripts are started (sealed, ``npm_cache`` read-only) and
    the private directory they get as npm's cache; then the install runs no script
    and ``npm rebuild`` runs them (the module docstring).

    Node.js is the one package.json's ``engines.node`` asks for, kept as a runtime
    layer in ``cache`` (node_runtime.py); without a cache to keep it in (library
    callers), the machine's node and npm run the step. ``offline`` (--offline): the
    runtime must be in the cache already.
    """
    if not (build_dir / PACKAGE_JSON).is_file():
        raise errors.NODE_BUILD_UNSUPPORTED.error(variant="no-package-json")
    lock = next((name for name in _NPM_LOCKS if (build_dir / name).is_file()), None)
    other = next((name for name in _OTHER_LOCKS if (build_dir / name).is_file()), None)
    if lock is None and other is not None:
        raise errors.NODE_BUILD_UNSUPPORTED.error(
            variant="other-lock", manager=_OTHER_LOCKS[other], lock_file=other)
    env = clean_env({**exported_config(config_vars), "npm_config_cache": str(npm_cache),
                     "npm_config_update_notifier": "false",
                     "NODE_ENV": config_vars.get("NODE_ENV", "production")},
                    exports=exports)
    # Here, not at the top: a build without the Node step never loads the Node runtime code.
    from .node_npm import with_requested_npm
    from .node_runtime import provide_machine_node, provide_node, read_engines

    reporter.step("Installing Node.js")
    if cache is None:
        tools = provide_machine_node(env.get("PATH"), reporter)
    else:
        tools = provide_node(build_dir, config_vars, cache, env.get("PATH"), reporter,
                             offline)
        tools = with_requested_npm(tools, read_engines(build_dir).get("npm"), config_vars,
                                   cache, reporter)
        # `npm install -g` in a build script must not write into the cached runtime.
        env["npm_config_prefix"] = str(npm_cache / "global")
    env["PATH"] = os.pathsep.join([str(tools.bin_dir), env.get("PATH", os.defpath)])
    reporter.step(f"Building assets with Node.js {tools.version} (npm, from {tools.origin})")
    npm_cache.mkdir(parents=True, exist_ok=True)
    # Bundlers are usually devDependencies: install them whatever NODE_ENV says,
    # as heroku-buildpack-nodejs does.
    install = ["ci" if lock else "install", "--include=dev", "--no-audit", "--no-fund"]
    script = build_script(build_dir)
    commands = [(install, runner or Unsealed(), env)]
    script_env = env
    if scripts is not None:
        script_runner, private = scripts
        private.mkdir(parents=True, exist_ok=True)
        script_env = {**env, "npm_config_cache": str(private),
                      **({"npm_config_prefix": str(private / "global")}
                         if "npm_config_prefix" in env else {})}
        commands = [([*install, "--ignore-scripts"], runner or Unsealed(), env)]
        commands += [(arguments, script_runner, script_env)
                     for arguments in install_scripts_to_run(build_dir, lock)]
    if script:
        commands.append((["run", script], scripts[0] if scripts else runner or Unsealed(),
                         script_env))
    try:
        for arguments, starter, step_env in commands:
            try:
                starter.run_step([*tools.npm, *arguments],
                                 partial(_npm, reporter, step_env, build_dir))
            except ToolFailed as failed:
                raise errors.NODE_BUILD_FAILED.error(
                    command=" ".join(["npm", *arguments]), exit_code=failed.exit_code,
                    output=failed.tail) from failed
            except OSError as exc:
                raise errors.NODE_NOT_FOUND.error(
                    missing=f"{tools.npm[0]}", reason=exc.strerror or str(exc)) from exc
        if script is None:
            reporter.detail("package.json has no build or heroku-postbuild script")
    finally:
        shutil.rmtree(build_dir / "node_modules", ignore_errors=True)
