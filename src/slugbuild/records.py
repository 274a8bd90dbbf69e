"""Installed distributions' RECORD files: what each package says it installed.

Used three ways: after an install (is every file there, with the bytes the
package recorded? installers/uv.py), before a dependency layer is published
(is the layer complete for its key?) and before a cached one is used (does it
still hold what its RECORDs list?). The last two read digests from the layer's
files.json instead of hashing the files again.

Two distributions may install the same path (two wheels that both ship a
top-level ``tests/conftest.py``): the path then matches one of them, and the
other's RECORD line is an overlap, not damage.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from .digests import DIGESTS, file_sha256
from .textfiles import decimal

_SITE_PACKAGES = re.compile(r"^(?P<base>(?:lib/python\d+\.\d+/site-packages/)?)"
                            r"(?P<dist>[^/]+\.dist-info)/RECORD$")


@dataclass(frozen=True)
class Claim:
    """One RECORD line: a distribution says it installed ``path`` with these bytes."""

    dist_info: str  # "six-1.17.0.dist-info"
    digest: str | None  # hex SHA-256, None when the line has none (RECORD itself)
    size: int | None

    @property
    def project(self) -> str:
        return self.dist_info.split("-")[0]


def parse_record(text: str) -> list[tuple[str, str | None, int | None]]:
    """(path as written, hex SHA-256 or None, size or None) per line of a RECORD."""
    rows = []
    try:
        for row in csv.reader(io.StringIO(text)):
            if not row or not row[0]:
                continue
            digest = None
            if len(row) > 1 and row[1].startswith("sha256="):
                encoded = row[1][len("sha256="):]
                try:
                    digest = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).hex()
                except ValueError:
                    digest = "unreadable"
            size = decimal(row[2]) if len(row) > 2 else None
            rows.append((row[0], digest, size))
    except csv.Error:
        pass
    return rows


def record_line(path: str, data: bytes) -> str:
    """The RECORD line for a file at ``path`` (as RECORD writes it) holding ``data``."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return _csv_line([path, f"sha256={digest}", str(len(data))])


def rewrite_records(site_packages: Path, new_line: Callable[[str, str], str | None],
                    write: Callable[[Path, bytes], None]) -> None:
    """Rewrite lines of every dist-info RECORD in ``site_packages``.

    ``new_line(path as written, its absolute normalised path)`` gives a line's
    replacement, "" to drop it, or None to keep it as it is: lines nobody
    changes keep their bytes. A RECORD that changes is written with ``write``
    (relocate.write_replacing: a new file renamed over the old one).
    """
    for record in sorted(site_packages.glob("*.dist-info/RECORD")):
        lines = record.read_text().splitlines()
        changed = False
        kept = []
        for line in lines:
            fields = next(csv.reader([line]), None)
            path = fields[0] if fields else ""
            replacement = new_line(path, os.path.normpath(os.path.join(site_packages, path)))
            if replacement is None:
                kept.append(line)
                continue
            changed = True
            if replacement:
                kept.append(replacement)
        if changed:
            write(record, ("\n".join(kept) + "\n").encode())


def _csv_line(fields: list[str]) -> str:
    """One CSV row as RECORD writers write it (quoted only where needed, no line end)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue()


def claims_in(root: Path, record_paths: Iterable[str]) -> dict[str, list[Claim]]:
    """Every path (relative to ``root``, normalised) that the RECORDs at
    ``record_paths`` (relative to ``root``) list, with who claims it. Paths
    outside ``root`` (data files an sdist put elsewhere) are left out."""
    claims: dict[str, list[Claim]] = {}
    for record in sorted(record_paths):
        match = _SITE_PACKAGES.match(record)
        if match is None:
            continue
        base = match.group("base")
        try:
            text = (root / record).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            claims.setdefault(record, []).append(Claim(match.group("dist"), "unreadable", None))
            continue
        for path, digest, size in parse_record(text):
            rel = os.path.normpath(os.path.join(base, path))
            if rel.startswith(("../", "/")) or rel == "..":
                continue
            claims.setdefault(rel, []).append(Claim(match.group("dist"), digest, size))
    return claims


def winner(claimants: list[Claim]) -> Claim:
    """Of distributions installing one path, the one whose copy a layer keeps: the
    name sorting last (a fixed rule, so every build ships the same bytes)."""
    return max(claimants, key=lambda c: (canonicalize_name(c.project), c.dist_info))


def overlaps(claims: dict[str, list[Claim]]) -> dict[str, list[Claim]]:
    """The paths more than one distribution installs."""
    return {rel: found for rel, found in claims.items()
            if len({c.dist_info for c in found}) > 1}


def layer_problems(tree: Path, index: dict[str, Any]) -> list[str]:
    """Why a dependency layer (``tree`` and its files.json ``index``) does not hold
    what its distributions' RECORDs list: a missing file, or one whose size or
    digest differs (an overlapped path must match one of its claimants; which
    one the installer settles, see installers/uv.py). Empty: complete."""
    files, symlinks = index["files"], index["symlinks"]
    records = [rel for rel in files if rel.endswith(".dist-info/RECORD")]
    problems = []
    for rel, found in sorted(claims_in(tree, records).items()):
        if rel in symlinks:
            continue
        recorded = files.get(rel)
        if recorded is None:
            problems.append(f"{rel} (of {found[0].project}) is missing")
        elif not any((c.digest is None or c.digest == recorded[3])
                     and (c.size is None or c.size == recorded[0]) for c in found):
            problems.append(f"{rel} (of {found[0].project}) is not what its RECORD lists")
    return problems


def file_matches(path: str, claim: Claim) -> bool:
    """Whether the file at ``path`` exists with the claimed size and digest.

    The digest is remembered (``cache.DIGESTS``): files.json, written when the
    layer is published, takes it from there for every file still unchanged.
    """
    try:
        if claim.size is not None and os.path.getsize(path) != claim.size:
            return False
        if claim.digest is None:
            return os.path.lexists(path)
        digest = file_sha256(path) if os.path.islink(path) else DIGESTS.sha256(path)[0]
    except OSError:
        return False  # missing: an install that lost a file is not complete
    return digest == claim.digest
