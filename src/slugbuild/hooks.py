"""Build hooks: the app's ``bin/pre_compile`` and ``bin/post_compile``.

As in Heroku's Python buildpack, ``pre_compile`` runs before dependencies are
installed and ``post_compile`` after collectstatic. Each runs from the app
root of the build directory with the build's config vars exported and the
slug's Python first on PATH; a hook that exits non-zero fails the build.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from . import errors
from .importcheck import diagnose_missing_module
from .log import Reporter
from .proc import ToolFailed, clean_env, exported_config, run_tool
from .step_jail import StepRunner

PRE_COMPILE = "pre_compile"
POST_COMPILE = "post_compile"


def run_hook(
    name: str,
    build_dir: Path,
    python: Path,
    config_vars: Mapping[str, str],
    reporter: Reporter,
    python_version: str | None = None,
    lock_file: str = "requirements.txt",
    exports: Mapping[str, str] | None = None,
    layers: StepRunner | None = None,
) -> bool:
    """Run ``bin/<name>`` of the app if it has one; return whether it ran.
    ``exports``: what earlier buildpacks exported (proc.clean_env). ``layers``: how
    it reaches the cached layers (an overlay of their trees, or materialised;
    context.StepLayers) with the cache sealed, or only how it is sealed
    (step_jail.SealedStep).

    With ``python_version`` (the runtime's), a failure caused by a missing module
    says why it is missing (``importcheck``).
    """
    path = build_dir / "bin" / name
    if not path.is_file():
        return False
    reporter.step(f"Running {name} hook")
    with open(path, "rb") as handle:
        has_shebang = handle.read(2) == b"#!"
    if has_shebang:
        # The copy in the build directory, never the user's file.
        os.chmod(path, os.stat(path).st_mode | 0o111)
        argv: list[str | Path] = [path]
    else:
        # A file without #! is a shell script, as bash itself would run it.
        argv = ["bash", path]
    with tempfile.TemporaryDirectory(prefix="slugbuild-no-pip-") as no_pip:
        env = clean_env(exported_config(config_vars), exports=exports,
                        path_first=[python.parent, _pip_stand_ins(Path(no_pip), python_version)])
        _run(name, path, argv, has_shebang, build_dir, env, reporter, python_version,
             lock_file, layers)
    return True


def _pip_stand_ins(directory: Path, python_version: str | None) -> Path:
    """``pip``, ``pip3`` and ``pip3.N`` in ``directory`` that fail saying pip is not
    in the slug: without them a hook's ``pip install`` finds the host's pip next on
    PATH (pyenv's shims, /usr/bin/pip) and installs into the host's Python, never the
    slug, so the app fails only when it runs (Heroku's hooks get the slug's pip)."""
    names = {"pip", "pip3"}
    if python_version:
        names.add("pip" + ".".join(python_version.split(".")[:2]))
    for name in names:
        stand_in = directory / name
        stand_in.write_text(
            "#!/bin/sh\n"
            f"echo \"{name}: No module named 'pip' in the slug's Python; the host's pip "
            "was not run\" >&2\nexit 1\n")
        stand_in.chmod(0o755)
    return directory


def _run(name: str, path: Path, argv: list[str | Path], has_shebang: bool, build_dir: Path,
         env: dict[str, str], reporter: Reporter, python_version: str | None,
         lock_file: str, layers: StepRunner | None) -> None:
    """Start the hook (sealed or wrapped by ``layers`` if given); a failure is
    ``hook-failed``, with the likely cause of a missing module."""
    if layers is not None:
        missing = _missing_interpreter(path, build_dir) if has_shebang else None
        if missing is not None:  # the wrapper's shell would only say "not found"
            raise errors.HOOK_FAILED.error(variant="not-started", hook=name, reason=missing)
    try:
        if layers is not None:
            layers.run_step(argv, lambda command: run_tool(command, reporter, env, cwd=build_dir,
                                                      step=f"bin/{name}"))
        else:
            run_tool(argv, reporter, env, cwd=build_dir, step=f"bin/{name}")
    except ToolFailed as failed:
        if failed.not_started is not None:
            raise errors.HOOK_FAILED.error(
                variant="not-started", hook=name, reason=failed.not_started) from failed
        cause = (diagnose_missing_module(failed.output, python_version, lock_file,
                                         hide=str(build_dir))
                 if python_version else None)
        # Its output is in the log above already: kept on the error, not printed twice.
        raise errors.HOOK_FAILED.error(
            variant="missing-module" if cause else None, hook=name,
            exit_code=failed.exit_code, cause=cause, output=failed.tail, output_shown=True,
        ) from failed


def _missing_interpreter(path: Path, build_dir: Path) -> str | None:
    """Why the kernel would not start the hook's #! interpreter, if it would not."""
    with open(path, "rb") as handle:
        words = handle.readline()[2:].decode("utf-8", "replace").split()
    if not words:
        return f"[Errno 8] Exec format error: '{path}'"
    interpreter = build_dir / words[0]  # a relative one is found from the working directory
    if not os.access(interpreter, os.X_OK) or interpreter.is_dir():
        return f"[Errno 2] No such file or directory: '{words[0]}' (its #! interpreter)"
    return None
