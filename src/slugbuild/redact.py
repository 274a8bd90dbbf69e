"""Hiding credentials that ride inside URLs (``https://user:token@host/…``).

Index URLs, buildpack git URLs and download URLs may carry them; whatever
slugbuild prints, writes to slug.json or uses as a cache path goes through
``redact_url`` first.
"""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


def redact_url(text: str) -> str:
    """``text`` with the user and password part of every URL replaced by ``***``."""
    return _USERINFO.sub(r"\g<scheme>***@", text)
