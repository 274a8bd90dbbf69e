"""The one place the TOML reader is chosen: ``tomllib`` from 3.11, ``tomli`` before.

slugbuild runs on Pythons older than 3.11 too, and several modules read TOML
(pyproject.toml, poetry.lock, uv.lock): they import ``tomllib`` from here
rather than each choosing the reader.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

__all__ = ["tomllib"]
