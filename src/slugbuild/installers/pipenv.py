"""Pipenv: what ``pipenv install --deploy`` installs, from Pipfile.lock.

``pipenv verify`` refuses a lock whose Pipfile hash is stale (what --deploy
checks); ``pipenv requirements --hash`` exports the default category's pins,
which uv installs exactly (``--no-deps --require-hashes``). Pipenv itself
lives in the tool cache and never reaches the slug.
"""

from __future__ import annotations

from pathlib import Path

from ..proc import clean_env
from . import InstallJob
from .locks import check_syntax, local_source_files, run_lock_tool, shown, write_export
from .tools import ensure_tool, tool_command, tool_version
from .uv import install_exported, uv_version

RELOCK = "pipenv lock"


class PipenvInstaller:
    name = "pipenv"

    def version(self) -> str:
        return f"{tool_version('pipenv')} + uv=={uv_version()}"

    def key_files(self, app_dir: Path, lock_file: str, config_vars: dict) -> list[str]:
        manifest = ["Pipfile"] if (app_dir / "Pipfile").is_file() else []
        return ["Pipfile.lock", *manifest, *local_source_files(app_dir, lock_file)]

    def install(self, job: InstallJob) -> None:
        check_syntax(job.app_dir, job.lock_file, RELOCK)
        tool = ensure_tool("pipenv", job)
        env = clean_env({
            "PYTHONPATH": str(tool), "PIPENV_VERBOSITY": "-1", "PIPENV_NOSPIN": "1",
            "PIPENV_YES": "1", "PIPENV_IGNORE_VIRTUALENVS": "1", "NO_COLOR": "1",
            "PIPENV_PIPFILE": str(job.app_dir / "Pipfile"),
        })
        if (job.app_dir / "Pipfile").is_file():
            run_lock_tool(job, [*tool_command("pipenv"), "verify"], env,
                          shown("pipenv", "verify"), "Pipfile", RELOCK)
        else:
            job.reporter.warn("Pipfile.lock has no Pipfile beside it: installing the lock "
                              "as it is, without checking it is current.")
            env["PIPENV_PIPFILE"] = str(job.scratch / "Pipfile")
            (job.scratch / "Pipfile").write_text("")
            (job.scratch / "Pipfile.lock").write_bytes((job.app_dir / job.lock_file).read_bytes())
        exported = run_lock_tool(job, [*tool_command("pipenv"), "requirements", "--hash"], env,
                                 shown("pipenv", "requirements", "--hash"), "Pipfile", RELOCK)
        job.reporter.detail("Installing the [packages] pinned in Pipfile.lock "
                            "(as `pipenv install --deploy`)")
        install_exported(job, write_export(job, exported, "pipenv-export.txt"), "pipenv")
