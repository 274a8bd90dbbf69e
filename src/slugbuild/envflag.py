"""On/off switches read from slugbuild's own environment (``SLUGBUILD_*``).

Every switch reads the same words, so ``SLUGBUILD_SHOW_SECRETS=false`` means off
(it showed every config var in the log, since only empty and ``0`` were "no"), and
a switch that guards something (masking, read-only) falls to its safe side on a
word it does not know.
"""

from __future__ import annotations

import os

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def env_flag(name: str, *, unset: bool, unknown: bool, empty: bool | None = None) -> bool:
    """The switch ``name``: ``unset`` when it is not set (``empty`` when set to nothing,
    ``unset`` again if None), True or False for the words above (any case, spaces
    around), ``unknown`` for any other value (choose the safe side)."""
    return flag_value(os.environ.get(name), unset=unset, unknown=unknown, empty=empty)


def flag_value(value: str | None, *, unset: bool, unknown: bool,
               empty: bool | None = None) -> bool:
    """``env_flag`` for a value already read (None: not set)."""
    if value is None:
        return unset
    text = value.strip().lower()
    if not text:
        return unset if empty is None else empty
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    return unknown
