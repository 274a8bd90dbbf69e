"""A module imported when first used, not when the importing module is.

``requests`` (with urllib3, http.client, ssl...) takes a large part of the
command line's start-up, and a warm build never uses the network. Modules that
talk HTTP bind the name through ``lazy_module`` at run time and import the real
module under ``TYPE_CHECKING``, so type checkers see the real one.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule(ModuleType):
    """Stands for module ``name``: the first attribute read imports it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_target"] = name

    def __getattr__(self, attribute: str) -> Any:
        module = importlib.import_module(self.__dict__["_lazy_target"])
        # Later reads find the attribute here, not through __getattr__.
        self.__dict__.update(module.__dict__)
        return getattr(module, attribute)


def lazy_module(name: str) -> Any:
    """A stand-in for ``import name`` that imports it on first use."""
    return LazyModule(name)
