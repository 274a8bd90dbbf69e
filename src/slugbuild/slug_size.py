"""Slug size: the limit Heroku enforces, what takes the space, and what to do about it.

Heroku refuses a slug whose *compressed* size (the .tgz file) exceeds 500 MB,
where Heroku's MB is 2^20 bytes (its build log prints sizes such as "Done:
85.9M" in binary units): 524,288,000 bytes. slugbuild compares the same
thing, the size of the slug file, against ``--max-slug-size``.

The breakdown is measured from the slug alone (``measure_slug``), streaming
and in bounded memory, so ``slugbuild inspect --sizes`` gives the same figures
for any slug as the build wrote to slug.json. Each compressed chunk read from
the file is attributed to the uncompressed bytes it produced, and those to the
tar entry they belong to; entries are grouped into the runtime, each installed
distribution (by its RECORD), the app's top-level directories, collectstatic
output and "other" (directory entries, tar headers and end blocks, gzip
framing). Rounding puts whole bytes where the largest fractions are, so the
parts sum exactly to the file's size. The attribution is accurate to a slice
(16 KiB of compressed data), which is noise for anything worth reporting.
A build measures each cached layer's part once and keeps the figures beside
it, so a warm build decompresses only the app's part.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TypedDict

from . import errors
from .records import parse_record

if TYPE_CHECKING:
    from .log import Reporter

MIB = 2 ** 20
# Heroku: "The maximum allowed slug size (after compression) is 500 MB", binary MB.
HEROKU_SLUG_LIMIT = 500 * MIB
# Heroku warns from here on ("exceeds our soft limit (300 MB) which may affect boot time").
HEROKU_SOFT_LIMIT = 300 * MIB
ENV_VAR = "SLUGBUILD_MAX_SLUG_SIZE"
_UNITS = {"": 1, "b": 1, "k": 2 ** 10, "kb": 2 ** 10, "kib": 2 ** 10, "m": MIB, "mb": MIB,
          "mib": MIB, "g": 2 ** 30, "gb": 2 ** 30, "gib": 2 ** 30}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_CHUNK = 16 * 1024
_MAX_RECORD = 32 * MIB  # a RECORD larger than this is not read (its files count as unknown)
_MAX_PAX = MIB
_MAX_RECORDS_TOTAL = 256 * MIB  # RECORDs past this are not read (a hostile slug's many)
# Packages that only development needs: found in a production lock, they are advice.
DEV_ONLY = frozenset({
    "pytest", "pytest-cov", "pytest-django", "pytest-xdist", "coverage", "tox", "nox",
    "black", "ruff", "flake8", "pylint", "mypy", "isort", "pre-commit", "ipython",
    "ipykernel", "jupyter", "jupyterlab", "notebook", "sphinx", "django-debug-toolbar",
    "factory-boy", "faker", "hypothesis", "types-requests", "django-stubs",
})
# App directories that are rarely needed at run time: .slugignore candidates.
_IGNORABLE_DIRS = frozenset({"data", "datasets", "media", "tests", "test", "docs", "doc",
                             "notebooks", "examples", "fixtures", ".git", "node_modules"})


def parse_size(text: str) -> int:
    """Bytes from ``500MB``, ``500M``, ``1.5GB``, ``524288000``; 0 or ``none``: no limit.

    K, M and G (with or without B, or as KiB/MiB/GiB) are binary, as Heroku's are.
    Raises ValueError on anything else."""
    if text.strip().lower() in {"none", "off"}:
        return 0
    match = _SIZE.match(text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (use e.g. 500MB, 1.5GB or bytes)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def human(size: int) -> str:
    """Binary units, as Heroku prints them (``512.0 MB``)."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


class PackedPart(Protocol):
    """Where a part lies in the slug file (``pack.PackedPart``; slug readers do not
    import the packer) and the file its measurement is kept in, valid for ``sha256``."""

    @property
    def start(self) -> int: ...

    @property
    def length(self) -> int: ...

    @property
    def sha256(self) -> str: ...

    @property
    def measure_path(self) -> Path | None: ...

    @property
    def measured_as(self) -> str: ...


class SizePart(TypedDict):
    """One line of the breakdown: a group of the slug's bytes (slug.json ``sizes.parts``)."""

    kind: str  # runtime, distribution, site-packages, app, collectstatic, other
    name: str
    compressed: int  # bytes of the slug file, rounded so that the parts sum to it
    unpacked: int


@dataclass(frozen=True)
class SizeLimit:
    """The largest compressed slug allowed; ``enforce`` False only warns."""

    limit: int  # bytes; 0: none
    enforce: bool
    source: str  # where it came from, for messages

    def as_dict(self) -> dict[str, Any]:
        return {"bytes": self.limit, "enforced": self.enforce, "source": self.source,
                "compared": "compressed slug (the size of the .tgz file)"}


def size_limit(explicit: int | str | None, layout: str) -> SizeLimit:
    """The limit for a build: given (argument, else $SLUGBUILD_MAX_SLUG_SIZE) it is an
    error in both layouts; else Heroku's 500 MB, an error for ``--layout heroku``
    (Heroku would refuse the slug) and a warning for herokuish."""
    source = "--max-slug-size"
    if explicit is None and os.environ.get(ENV_VAR, "").strip():
        explicit, source = os.environ[ENV_VAR], ENV_VAR
    if explicit is None:
        return SizeLimit(HEROKU_SLUG_LIMIT, layout == "heroku", "Heroku's slug size limit")
    if isinstance(explicit, str):
        try:
            explicit = parse_size(explicit)
        except ValueError as exc:
            raise errors.BAD_SLUG_SIZE.error(value=explicit, source=source, reason=exc) from exc
    if explicit < 0:
        raise errors.BAD_SLUG_SIZE.error(variant="negative", value=explicit, source=source)
    return SizeLimit(int(explicit), True, source)


# --- measuring ---------------------------------------------------------------------------


# Compressed bytes are counted in units of 1/2^16 byte, as integers: the sums do
# not depend on the order they are added in (parts measured apart, or the whole).
_UNIT = 2 ** 16


def _compressed_chunks(handle: BinaryIO, length: int | None = None
                       ) -> Iterator[tuple[bytes, int]]:
    """Uncompressed data of a (multi-member) gzip stream, each piece with the compressed
    bytes (in ``_UNIT``s) that produced it; a piece of framing with no output comes as
    ``b""``.

    The input is fed in slices that start at each member's start and every 16 KiB
    after it, so a run of members measures the same alone as within a larger file
    (a layer's part, measured once and kept). At most one slice's output is held:
    deflate expands at most ~1032 times. ``length``: read only this many bytes."""
    decompressor = zlib.decompressobj(31)
    member_pos = 0
    pending = b""
    left = length
    ended = False
    while True:
        take = _CHUNK - member_pos % _CHUNK
        while len(pending) < take and not ended:  # whole slices, wherever reads end
            want = _CHUNK if left is None else min(_CHUNK, left)
            more = handle.read(want) if want else b""
            if left is not None:
                left -= len(more)
            ended = not more
            pending += more
        if not pending:
            break
        piece, pending = pending[:take], pending[take:]
        raw = decompressor.decompress(piece)
        consumed = len(piece)
        if decompressor.eof:
            rest = decompressor.unused_data
            consumed -= len(rest)
            pending = rest + pending
            decompressor = zlib.decompressobj(31)
            member_pos = 0
        else:
            member_pos += consumed
        if consumed or raw:
            yield raw, consumed * _UNIT
    if member_pos:
        raise EOFError("the gzip stream ends in the middle of a member (truncated)")


class _Accounts:
    """Compressed (in ``_UNIT``s) and unpacked bytes per group key."""

    def __init__(self) -> None:
        self.compressed: dict[str, int] = {}
        self.unpacked: dict[str, int] = {}

    def add(self, key: str, compressed: int, unpacked: int = 0) -> None:
        self.compressed[key] = self.compressed.get(key, 0) + compressed
        if unpacked:
            self.unpacked[key] = self.unpacked.get(key, 0) + unpacked


_OTHER = "\0other"
_SITE = re.compile(r"^\.heroku/python/lib/python[\d.]+/site-packages/(.+)$")


def _entry_key(rel: str) -> str:
    """Group key of an entry (path relative to the app root)."""
    site = _SITE.match(rel)
    if site:
        parts = site.group(1).split("/")
        return "site:" + "/".join(parts[:2])
    if rel.startswith(".heroku/python/bin/"):
        return "bin:" + rel
    if rel.startswith(".heroku/python/") or rel == ".heroku/python":
        return "runtime"
    top = rel.split("/", 1)
    return "app:" + (top[0] if len(top) == 2 else "")


@dataclass
class _Entry:
    key: str
    remaining: int  # bytes of this entry (header, content, padding) still to come
    size: int
    record: bytearray | None  # a RECORD being read


class _TarWalker:
    """Follows a tar stream piece by piece, charging each byte's cost to its entry."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.accounts = _Accounts()
        self.header = bytearray()
        self.entry: _Entry | None = None
        self.pax_path: str | None = None
        self.pax: bytearray | None = None
        self.records: dict[str, bytes] = {}
        self._record_name = ""  # the RECORD ``entry.record`` is being read for
        self.static_dirs: set[str] = set()  # top-level dirs holding collectstatic's manifest
        self.record_bytes = 0
        self.pax_kind = b""

    def feed(self, data: bytes, cost: int) -> None:
        """``data`` came from ``cost`` units: byte range [a, b) of it is charged
        cost*b//len - cost*a//len, which adds up exactly."""
        if not data:
            self.accounts.add(_OTHER, cost)
            return
        total = len(data)
        done = 0
        view = memoryview(data)

        def share(take: int) -> int:
            return cost * (done + take) // total - cost * done // total

        while done < total:
            rest = view[done:]
            if self.entry is not None:
                entry = self.entry
                take = min(entry.remaining, len(rest))
                self.accounts.add(entry.key, share(take))
                if entry.record is not None:
                    entry.record += rest[:take]
                elif self.pax is not None and entry.key == _OTHER:
                    self.pax += rest[:take]
                entry.remaining -= take
                done += take
                if entry.remaining == 0:
                    self._finish(entry)
                continue
            take = min(512 - len(self.header), len(rest))
            self.header += rest[:take]
            charged = share(take)
            done += take
            self._start(charged)

    def _start(self, cost: int) -> None:
        if len(self.header) < 512:
            self.accounts.add(_OTHER, cost)
            return
        block, self.header = bytes(self.header), bytearray()
        if block == bytes(512):
            self.accounts.add(_OTHER, cost)
            return
        kind = block[156:157]
        size = _octal(block[124:136])
        padded = size + (-size % 512)
        if kind in (b"x", b"g", b"L"):  # names the next entry (pax, GNU long name)
            if size > _MAX_PAX:
                raise ValueError("a pax header is too large")
            self.pax = bytearray() if kind != b"g" else None
            self.pax_kind = kind
            self.accounts.add(_OTHER, cost)
            self._begin(_Entry(_OTHER, padded, size, None))
            return
        name = self.pax_path or _ustar_name(block)
        self.pax_path = None
        rel = self._relative(name)
        is_file = kind in (b"0", b"\0", b"7")
        # Links, devices, directories and fifos have no data, whatever size they claim.
        has_data = kind not in (b"1", b"2", b"3", b"4", b"5", b"6")
        key = _OTHER if rel is None or not is_file and kind != b"2" else _entry_key(rel)
        if kind == b"5":
            key = _OTHER
        record: bytearray | None = None
        if (is_file and rel is not None and rel.endswith(".dist-info/RECORD")
                and _SITE.match(rel) and size <= _MAX_RECORD
                and self.record_bytes + size <= _MAX_RECORDS_TOTAL):
            record = bytearray()
            self.record_bytes += size
            self._record_name = rel
        self.accounts.add(key, cost, size if is_file else 0)
        if rel is not None and rel.count("/") == 1 and rel.endswith("/staticfiles.json"):
            self.static_dirs.add(rel.split("/", 1)[0])
        self._begin(_Entry(key, padded if has_data else 0, size, record))

    def _begin(self, entry: _Entry) -> None:
        if entry.remaining:
            self.entry = entry
        else:
            self._finish(entry)

    def _finish(self, entry: _Entry) -> None:
        self.entry = None
        if entry.record is not None:
            self.records[self._record_name] = bytes(entry.record[:entry.size])
        elif self.pax is not None and entry.key == _OTHER:
            data = bytes(self.pax[:entry.size])
            self.pax_path = (data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                             if self.pax_kind == b"L" else _pax_path(data))
            self.pax = None

    def _relative(self, name: str) -> str | None:
        name = name[2:] if name.startswith("./") else name
        name = name.rstrip("/")
        if self.root:
            if not name.startswith(self.root + "/"):
                return None
            name = name[len(self.root) + 1:]
        return name or None


def _octal(field: bytes) -> int:
    if field[:1] == b"\x80":  # base-256
        return int.from_bytes(field[1:], "big")
    text = field.rstrip(b"\0 ").strip()
    return int(text, 8) if text else 0


def _ustar_name(block: bytes) -> str:
    name = block[0:100].split(b"\0", 1)[0]
    prefix = block[345:500].split(b"\0", 1)[0] if block[257:262] == b"ustar" else b""
    full = prefix + b"/" + name if prefix else name
    return full.decode("utf-8", "surrogateescape")


def _pax_path(data: bytes) -> str | None:
    found = None
    while data:
        length, _, rest = data.partition(b" ")
        try:
            size = int(length)
        except ValueError:
            return found
        record, data = data[len(length) + 1:size], data[size:]
        if size <= 0:
            return found
        key, _, value = record.partition(b"=")
        if key == b"path":
            found = value.rstrip(b"\n").decode("utf-8", "surrogateescape")
    return found


def _dist_name(record_path: str) -> str:
    folder = record_path.rsplit("/", 2)[-2][: -len(".dist-info")]
    name = folder.split("-", 1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist_version(record_path: str) -> str:
    folder = record_path.rsplit("/", 2)[-2][: -len(".dist-info")]
    return folder.split("-", 1)[1] if "-" in folder else ""


def _owners(records: dict[str, bytes]) -> dict[str, str | None]:
    """Group key -> distribution, from every RECORD; also "top:NAME" for a top-level
    name of site-packages one distribution alone installs (None when shared), for
    files no RECORD lists (bytecode compiled after the install)."""
    owners: dict[str, str | None] = {}
    for record_path, content in sorted(records.items()):
        site_dir = record_path.rsplit("/", 2)[0]
        label = _dist_name(record_path)
        for written, _digest, _size in parse_record(content.decode("utf-8", "replace")):
            path = os.path.normpath(f"{site_dir}/{written}")
            key = _entry_key(path)
            if key.startswith(("site:", "bin:")):
                owners.setdefault(key, label)
            if key.startswith("site:"):
                top = "top:" + _module_name(key[5:].split("/")[0])
                if owners.setdefault(top, label) != label:
                    owners[top] = None
    return owners


def _module_name(name: str) -> str:
    """``six.py`` and ``six.cpython-312.pyc`` (in ``__pycache__``) -> ``six``."""
    return name.split(".", 1)[0] if name.endswith((".py", ".pyc", ".so")) else name


def _owner(owners: dict[str, str | None], key: str) -> str | None:
    found = owners.get(key)
    if found or not key.startswith("site:"):
        return found
    parts = key[5:].split("/")
    top = parts[1] if parts[0] == "__pycache__" and len(parts) > 1 else parts[0]
    return owners.get("top:" + _module_name(top))


# Changes whenever what a part's measurement holds changes (kept measurements go stale).
MEASURE_FORMAT = 1


def _measure_range(handle: BinaryIO, root: str, length: int | None) -> dict[str, Any]:
    """The accounts of a run of whole gzip members holding whole tar entries."""
    walker = _TarWalker(root)
    for raw, cost in _compressed_chunks(handle, length):
        walker.feed(raw, cost)
    if walker.entry is not None or walker.header and length is not None:
        raise ValueError("a part ends inside a tar entry")
    return {"format": MEASURE_FORMAT, "compressed": walker.accounts.compressed,
            "unpacked": walker.accounts.unpacked,
            "records": {k: v.decode("latin-1") for k, v in walker.records.items()},
            "static": sorted(walker.static_dirs)}


def _digest(measured: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(measured, sort_keys=True).encode()).hexdigest()


def _kept_measure(path: Path | None, sha256: str, length: int) -> dict[str, Any] | None:
    """A kept measurement of the part with this ``sha256``, if it is intact and
    whole (its own digest matches, it accounts for every byte of the part)."""
    if path is None or not sha256:
        return None
    try:
        kept = json.loads(path.read_text())
        measured = kept["measured"]
        intact = (kept["sha256"] == sha256 and kept["digest"] == _digest(measured)
                  and measured["format"] == MEASURE_FORMAT
                  and sum(measured["compressed"].values()) == length * _UNIT)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
    return measured if intact else None


def _keep_measure(path: Path, sha256: str, measured: dict[str, Any]) -> None:
    """Best effort, atomically (the cache may be read-only, or the layer gone)."""
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        temporary.write_text(json.dumps({"sha256": sha256, "digest": _digest(measured),
                                         "measured": measured}))
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()


def measure_part_ahead(data: bytes | Path, sha256: str, layout: str, measure_path: Path) -> None:
    """Measure a layer's part (its compressed bytes, or the file holding them, whose
    SHA-256 is ``sha256``) and keep the figures at ``measure_path`` unless they are
    kept already: a build does it while later stages run, so measuring its slug reads
    them (``measure_slug``'s ``parts``). A file is read only when no figures are kept."""
    if isinstance(data, Path):
        try:
            size = data.stat().st_size
            if _kept_measure(measure_path, sha256, size) is not None:
                return
            data = data.read_bytes()
        except OSError:
            return  # measured from the slug instead
        if hashlib.sha256(data).hexdigest() != sha256:
            return
    if _kept_measure(measure_path, sha256, len(data)) is not None:
        return
    try:
        measured = _measure_range(io.BytesIO(data), "app" if layout == "heroku" else "",
                                  len(data))
    except (zlib.error, ValueError, EOFError):
        return  # measured from the slug instead, where a problem is reported
    _keep_measure(measure_path, sha256, measured)


def measure_slug(path: Path, layout: str, static_dirs: tuple[str, ...] = (),
                 parts: Sequence[PackedPart] = ()) -> dict[str, Any]:
    """What takes the space in the slug at ``path`` (see the module docstring).

    ``parts`` (``pack.PackedPart``s, from the build that just packed it): layer parts
    whose measurement is kept beside them are not decompressed again; the figures
    are the same as measuring the whole file."""
    total = path.stat().st_size
    root = "app" if layout == "heroku" else ""
    measured: list[dict[str, Any]] = []
    try:
        with open(path, "rb") as handle:
            if not parts:
                measured.append(_measure_range(handle, root, None))
            for part in parts:
                digest = part.sha256 or part.measured_as
                kept = _kept_measure(part.measure_path, digest, part.length)
                if kept is None:
                    handle.seek(part.start)
                    kept = _measure_range(handle, root, part.length)
                    if part.measure_path is not None and digest:
                        _keep_measure(part.measure_path, digest, kept)
                measured.append(kept)
    except (OSError, zlib.error, ValueError, EOFError) as exc:
        raise errors.SLUG_UNREADABLE.error(path=path, reason=str(exc)) from exc
    accounts = _Accounts()
    records: dict[str, bytes] = {}
    found_static: set[str] = set()
    for one in measured:
        for key, value in one["compressed"].items():
            accounts.add(key, value, one["unpacked"].get(key, 0))
        for key, value in one["unpacked"].items():
            if key not in one["compressed"]:
                accounts.add(key, 0, value)
        records.update({k: v.encode("latin-1") for k, v in one["records"].items()})
        found_static.update(one["static"])
    if sum(accounts.compressed.values()) != total * _UNIT:
        raise errors.SLUG_UNREADABLE.error(variant="parts-short", path=path)
    owners = _owners(records)
    versions: dict[str, set[str]] = {}
    for record_path in records:
        versions.setdefault(_dist_name(record_path), set()).add(_dist_version(record_path))
    groups: dict[tuple[str, str], list[int]] = {}
    for key, compressed in accounts.compressed.items():
        unpacked = accounts.unpacked.get(key, 0)
        if key.startswith(("site:", "bin:")):
            owner = _owner(owners, key)
            group = ("distribution", owner) if owner else (
                ("runtime", "python") if key.startswith("bin:") else
                ("site-packages", "files no RECORD names"))
        elif key == "runtime":
            group = ("runtime", "python")
        elif key.startswith("app:"):
            top = key[4:]
            if top in static_dirs or top in found_static:
                group = ("collectstatic", top + "/")
            elif top == ".heroku":
                group = ("other", ".heroku (not the runtime)")
            else:
                group = ("app", top + "/" if top else "(top-level files)")
        else:
            group = ("other", "directory entries, tar headers and padding, gzip framing")
        slot = groups.setdefault(group, [0, 0])
        slot[0] += compressed
        slot[1] += unpacked
    rounded = _largest_remainder({g: v[0] for g, v in groups.items()}, total)
    order = {"runtime": 0, "distribution": 1, "site-packages": 2, "app": 3, "collectstatic": 4,
             "other": 5}
    result_parts: list[SizePart] = [
        {"kind": kind, "name": name, "compressed": rounded[(kind, name)],
         "unpacked": int(groups[(kind, name)][1])}
        for kind, name in groups]
    result_parts.sort(key=lambda p: (order.get(p["kind"], 9), -p["compressed"], p["name"]))
    return {
        "compressed": total,
        "unpacked": sum(p["unpacked"] for p in result_parts),
        "parts": result_parts,
        "duplicates": sorted(name for name, found in versions.items() if len(found) > 1),
    }


def _largest_remainder(units: dict[Any, int], total: int) -> dict[Any, int]:
    """Whole bytes from amounts in ``_UNIT``s that sum to ``total`` bytes: each its
    floor, the bytes left to those with the largest remainders (ties by name)."""
    whole = {k: v // _UNIT for k, v in units.items()}
    short = total - sum(whole.values())
    by_fraction = sorted(units, key=lambda k: (-(units[k] % _UNIT), str(k)))
    for key in by_fraction[:short]:
        whole[key] += 1
    return whole


# --- advice --------------------------------------------------------------------------------


def advice(breakdown: dict[str, Any], limit: int) -> list[str]:
    """What could make this slug smaller, from what the breakdown found."""
    tips = []
    parts = breakdown["parts"]
    dists = {p["name"]: p for p in parts if p["kind"] == "distribution"}
    total = max(1, breakdown["compressed"])
    gpu = [n for n in dists if n.startswith("nvidia-") or n in {"triton", "cupy"}
           or n.startswith("cupy-")]
    if gpu:
        gpu_size = sum(dists[n]["compressed"] for n in gpu)
        tips.append(
            f"GPU libraries take {human(gpu_size)} ({', '.join(sorted(gpu)[:6])}"
            f"{', ...' if len(gpu) > 6 else ''}); Heroku dynos have no GPU. Install CPU-only "
            "wheels: for torch, add `--extra-index-url https://download.pytorch.org/whl/cpu` at "
            "the top of requirements.txt and pin `torch==X.Y.Z+cpu` (uv: an index with "
            "`explicit = true` for torch in pyproject.toml), then lock again.")
    dev = sorted(n for n in dists if n in DEV_ONLY)
    if dev:
        tips.append(f"Development-only packages are in the production lock: {', '.join(dev)}; "
                    "move them to a dev group or a separate requirements-dev.txt.")
    if breakdown.get("duplicates"):
        tips.append("Installed twice (two versions' metadata): "
                    f"{', '.join(breakdown['duplicates'])}; pin one version.")
    app = [p for p in parts if p["kind"] == "app" and p["name"].rstrip("/") in _IGNORABLE_DIRS
           and p["compressed"] * 50 >= total]
    if app:
        names = ", ".join(p["name"] for p in app)
        tips.append(f"App directories rarely needed at run time take space: {names}; list them "
                    "in .slugignore (data can be fetched at release or boot time instead).")
    elif any(p["kind"] == "app" and p["compressed"] * 5 >= total for p in parts):
        biggest = max((p for p in parts if p["kind"] == "app"), key=lambda p: p["compressed"])
        tips.append(f"The app's {biggest['name']} takes {human(biggest['compressed'])}: list "
                    "what is not needed at run time in .slugignore.")
    if limit and breakdown["compressed"] > limit:
        tips.append("A container image (Heroku's container registry) has no slug size limit.")
    return tips


def render(breakdown: dict[str, Any], top: int = 12) -> list[str]:
    """Lines for the build log or ``inspect --sizes``: largest parts, summing to the total."""
    lines = [f"{'compressed':>12} {'unpacked':>12}  part"]
    parts = breakdown["parts"]
    shown = parts
    if len(parts) > top + 1:  # the largest, in their order, then the rest as one line
        keep = sorted(parts, key=lambda p: -p["compressed"])[:top]
        rest = [p for p in parts if p not in keep]
        shown = [p for p in parts if p in keep] + [{
            "kind": "rest", "name": f"{len(rest)} smaller parts",
            "compressed": sum(p["compressed"] for p in rest),
            "unpacked": sum(p["unpacked"] for p in rest)}]
    for part in shown:
        lines.append(f"{human(part['compressed']):>12} {human(part['unpacked']):>12}  "
                     f"{part['kind']}: {part['name']}")
    lines.append(f"{human(breakdown['compressed']):>12} {human(breakdown['unpacked']):>12}  "
                 "total")
    return lines


def report(path: Path, layout: str, limit: SizeLimit, reporter: Reporter,
           static_dirs: tuple[str, ...] = (),
           parts: Sequence[PackedPart] = ()) -> dict[str, Any]:
    """Measure the slug at ``path``; log the breakdown and advice when it is large
    (over half the limit, or Heroku's 300 MB soft limit); raise slug-too-large when
    over an enforced limit, warn when over one that is not. Returns slug.json's ``sizes``."""
    breakdown = measure_slug(path, layout, static_dirs, parts)
    tips = advice(breakdown, limit.limit)
    size = breakdown["compressed"]
    over = bool(limit.limit) and size > limit.limit
    if over and limit.enforce:
        raise errors.SLUG_TOO_LARGE.error(
            variant="slug", size=human(size), size_bytes=f"{size:,}", limit=human(limit.limit),
            limit_bytes=f"{limit.limit:,}", source=limit.source,
            breakdown="\n".join(render(breakdown)),
            advice="".join(f"- {tip}\n" for tip in tips))
    if over:
        reporter.warn(f"The slug is {human(size)} compressed, over {human(limit.limit)} "
                      f"({limit.source}): Heroku would refuse it (publish does). "
                      "What takes the space:")
    if over or (limit.limit and size * 2 > limit.limit) or size > HEROKU_SOFT_LIMIT:
        if not over and size > HEROKU_SOFT_LIMIT:
            reporter.warn(f"The slug is {human(size)} compressed, over Heroku's soft limit "
                          f"of {human(HEROKU_SOFT_LIMIT)} (may affect boot time); what takes "
                          "the space:")
        elif not over:
            reporter.step(f"The slug is large ({human(size)} compressed, more than half the "
                          f"limit); what takes the space:")
        for line in render(breakdown):
            reporter.detail(line)
        for tip in tips:
            reporter.detail(f"Advice: {tip}")
    return {**breakdown, "limit": limit.as_dict(), "advice": tips}
