"""Poetry: the main group of poetry.lock, as ``poetry sync --only main --no-root``.

Poetry's own installer resolves against the index's JSON API, which some
networks (this project's CI among them) cannot reach. So ``poetry check
--lock`` refuses a stale lock, ``poetry export --only main`` turns the lock
into hashed pins without touching the network, and uv installs them exactly.
Poetry and its export plugin live in the tool cache, never in the slug.
"""

from __future__ import annotations

from pathlib import Path

from ..proc import clean_env
from . import InstallJob
from .locks import check_syntax, local_source_files, run_lock_tool, shown, write_export
from .tools import ensure_tool, tool_command, tool_version
from .uv import install_exported, uv_version

RELOCK = "poetry lock"


class PoetryInstaller:
    name = "poetry"

    def version(self) -> str:
        return f"{tool_version('poetry')} + uv=={uv_version()}"

    def key_files(self, app_dir: Path, lock_file: str, config_vars: dict) -> list[str]:
        return ["poetry.lock", "pyproject.toml", *local_source_files(app_dir, lock_file)]

    def install(self, job: InstallJob) -> None:
        check_syntax(job.app_dir, job.lock_file, RELOCK)
        tool = ensure_tool("poetry", job)
        home = job.scratch / "poetry-home"
        env = clean_env({
            "PYTHONPATH": str(tool), "NO_COLOR": "1", "POETRY_NO_INTERACTION": "1",
            "POETRY_VIRTUALENVS_CREATE": "false",
            # Poetry's config and caches stay in the scratch dir: no machine config.
            "POETRY_CONFIG_DIR": str(home / "config"), "POETRY_CACHE_DIR": str(home / "cache"),
            "POETRY_DATA_DIR": str(home / "data"),
        })
        poetry = tool_command("poetry")
        run_lock_tool(job, [*poetry, "check", "--lock"], env,
                      shown("poetry", "check", "--lock"), "pyproject.toml", RELOCK)
        target = job.scratch / "poetry-export.txt"
        run_lock_tool(job, [*poetry, "export", "--only", "main", "--format", "requirements.txt",
                            "--output", str(target)], env,
                      shown("poetry", "export", "--only", "main"), "pyproject.toml", RELOCK)
        job.reporter.detail("Installing the main group pinned in poetry.lock "
                            "(as `poetry sync --only main --no-root`)")
        install_exported(job, write_export(job, target.read_text(), "poetry-export.txt"),
                         "poetry")
