"""The Python runtime of a slug: where it comes from, and the layer made of it.

- ``sources.py``: the ``RuntimeSource`` protocol, its ``RuntimeOffer`` and the
  ``LocalRuntime`` prefix a source provides;
- ``local.py``, ``download.py``: the sources (installations on this machine;
  verified archives from python-build-standalone or Heroku);
- ``resolve.py``: the configured sources, made once per build, asked in order
  for the app's request;
- ``layer.py``: the cached runtime layer built from the provided prefix
  (trimmed, relocated with ``relocate.py``, compiled, checked).

Modules import downwards only (resolve -> download -> local -> sources; layer
-> sources). The names below are what the rest of slugbuild uses.
"""

from __future__ import annotations

from .layer import (
    cached_runtime_layer,
    damaged_layer_warning,
    ensure_runtime_layer,
    interpreter_before_layer,
    runtime_key,
    runtime_manifest,
)
from .resolve import Resolution, RuntimeOptions, choose_runtime, list_offers, make_sources
from .sources import LocalRuntime, RuntimeOffer, RuntimeSource, SourceUnavailable

__all__ = [
    "LocalRuntime", "Resolution", "RuntimeOffer", "RuntimeOptions", "RuntimeSource",
    "SourceUnavailable", "cached_runtime_layer", "choose_runtime", "damaged_layer_warning",
    "ensure_runtime_layer", "interpreter_before_layer", "list_offers", "make_sources",
    "runtime_key", "runtime_manifest",
]
