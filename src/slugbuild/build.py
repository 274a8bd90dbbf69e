"""Compatibility names: the pipeline moved to pipeline.py (see docs/architecture.md)."""

from __future__ import annotations

from .config_vars import load_config_vars, parse_env_assignments, read_env_file
from .outputs import metadata_path_for
from .pipeline import BuildResult, compile_app

__all__ = ["BuildResult", "compile_app", "load_config_vars", "metadata_path_for",
           "parse_env_assignments", "read_env_file"]
