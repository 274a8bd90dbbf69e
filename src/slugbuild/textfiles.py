"""Reading the app's text files the way the tool that owns each format reads them.

Editors on Windows save files as UTF-16 with a byte order mark, or with CRLF
line ends. pip decodes a requirements file by its BOM (UTF-8, UTF-16, UTF-32),
then by a PEP 263 ``# -*- coding: ... -*-`` line in its first two lines, then
as UTF-8 (``pip._internal.req.req_file._decode_req_file``); slugbuild's own
readers of requirements files, their ``-r``/``-c`` includes, the Procfile and
.slugignore do the same, so what slugbuild checks (pins, includes, local
packages) is what pip installs. Line ends (CRLF, CR) are made ``\\n``.

pip's last resort, the locale's encoding, is left out: a build's locale is
not the developer's, so a file that needs it is ``file-not-text``.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
from pathlib import Path

from . import errors

# Longest first: the UTF-16 LE BOM is a prefix of the UTF-32 LE one (pip's order).
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
)
_PEP263 = re.compile(rb"coding[:=]\s*([-\w.]+)")
_LINE_END = re.compile(r"\r\n?")


def encoding_like_pip(data: bytes) -> tuple[str, int]:
    """The encoding pip would decode ``data`` with, and the length of its BOM."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return encoding, len(bom)
    for line in data.split(b"\n")[:2]:
        if line[:1] == b"#":
            match = _PEP263.search(line)
            if match is not None:
                return match.group(1).decode("ascii"), 0
    return "utf-8", 0


def decode_like_pip(data: bytes, name: str) -> str:
    """``data`` as pip reads a requirements file, line ends made ``\\n``.

    A file pip could not decode either is FILE_NOT_TEXT (pip would stop with a
    traceback), never text with NUL bytes or replacement characters in it.
    """
    encoding, skip = encoding_like_pip(data)
    try:
        text = data[skip:].decode(encoding)
    except LookupError:
        raise errors.FILE_NOT_TEXT.error(
            variant="unknown-coding", file=name, encoding=encoding) from None
    except UnicodeDecodeError as exc:
        raise errors.FILE_NOT_TEXT.error(
            variant="undecodable", file=name, reason=exc.reason, encoding=encoding) from None
    if "\x00" in text:  # no line of any of these formats holds one; pip stops on it too
        raise errors.FILE_NOT_TEXT.error(variant="nul-bytes", file=name)
    return _LINE_END.sub("\n", text)


def read_text_like_pip(path: Path, name: str | None = None) -> str:
    """The text of ``path`` as pip would read it (see ``decode_like_pip``)."""
    return decode_like_pip(path.read_bytes(), name or path.name)


def best_effort_text(path: Path) -> str:
    """``path`` as pip would read it, or with undecodable bytes replaced: for a
    guess (detection), where an unreadable file is reported by the step that
    needs it."""
    return best_effort_decode(path.read_bytes(), path.name)


def best_effort_decode(data: bytes, name: str) -> str:
    """``data`` as pip would read it, or with undecodable bytes replaced (a file
    checked when it was built, read again from a slug)."""
    try:
        return decode_like_pip(data, name)
    except errors.SlugbuildError:
        return _LINE_END.sub("\n", data.decode("utf-8", "replace"))


def plain_utf8(data: bytes) -> bool:
    """Whether ``data`` is UTF-8 (a UTF-8 BOM allowed) with no other decoding rule
    applying: what every tool reads the same way, uv included."""
    encoding, _skip = encoding_like_pip(data)
    if not _known(encoding) or codecs.lookup(encoding).name != "utf-8":
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _known(encoding: str) -> bool:
    try:
        codecs.lookup(encoding)
    except LookupError:
        return False
    return True


def read_utf8(path: Path, name: str, bom_allowed: bool) -> str:
    """A UTF-8 file whose tool reads only UTF-8 (uv.lock, poetry.lock, Pipfile.lock).

    uv skips a UTF-8 BOM in uv.lock and pyproject.toml (``bom_allowed``);
    Poetry (tomllib) and Pipenv (json) refuse one, so it is kept and their
    parser's complaint is reported. Anything not UTF-8 is FILE_NOT_TEXT, not
    replacement characters a parser trips over later.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.FILE_NOT_TEXT.error(
            variant="undecodable", file=name, reason=exc.reason, encoding="utf-8") from None
    return text.removeprefix("\ufeff") if bom_allowed else text


def decimal(text: str, digits: int = 18) -> int | None:
    """``text`` as a non-negative integer if it is 1 to ``digits`` ASCII digits, else None.

    ``str.isdigit`` says yes to ``²`` and to 100,000-digit strings, which ``int``
    then refuses (a traceback): every number read from a file, a header or a
    variable slugbuild did not write goes through this instead.
    """
    if not text or len(text) > digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def small_regular_file(path: Path, limit: int) -> bytes | None:
    """The bytes of ``path`` if it is a regular file (a symlink to one counts) of at
    most ``limit`` bytes; None for anything else or an error. For metadata a build
    step could have planted: a directory, a fifo (opened without blocking, never read)
    or ``/dev/zero`` must neither crash, hang nor fill memory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks) if left > 0 else None
