"""Splitting a Procfile command into words as ``shlex.split`` does, in linear time.

``shlex`` builds each word one character at a time (``token = token + char``), so
a single long word costs time quadratic in its length: a 1 MiB Procfile command
took minutes in the import check. ``split_command`` gives the same words and the
same ``ValueError`` messages (POSIX mode, no comments), taking runs of ordinary
characters at once.
"""

from __future__ import annotations

import re

# shlex's POSIX whitespace, and what is neither whitespace, a quote nor an escape.
_WHITESPACE = " \t\r\n"
_PLAIN = re.compile(r"[^ \t\r\n'\"\\]+")
# Inside double quotes everything but the closing quote and the escape is literal.
_DOUBLE_QUOTED_PLAIN = re.compile(r'[^"\\]+')


def split_command(command: str) -> list[str]:
    """The words of ``command`` as ``shlex.split(command)`` gives them.

    Raises ``ValueError("No closing quotation")`` or
    ``ValueError("No escaped character")`` where shlex does.
    """
    words: list[str] = []
    parts: list[str] = []
    in_word = False  # a word has begun (an empty quoted word counts)
    index, end = 0, len(command)
    while index < end:
        char = command[index]
        if char in _WHITESPACE:
            if in_word:
                words.append("".join(parts))
                parts, in_word = [], False
            index += 1
            continue
        in_word = True
        if char == "'":
            closing = command.find("'", index + 1)
            if closing < 0:
                raise ValueError("No closing quotation")
            parts.append(command[index + 1:closing])
            index = closing + 1
        elif char == '"':
            index = _double_quoted(command, index + 1, parts)
        elif char == "\\":
            if index + 1 >= end:
                raise ValueError("No escaped character")
            parts.append(command[index + 1])
            index += 2
        else:
            match = _PLAIN.match(command, index)
            assert match is not None  # char is none of the characters it excludes
            parts.append(match.group())
            index = match.end()
    if in_word:
        words.append("".join(parts))
    return words


def _double_quoted(command: str, index: int, parts: list[str]) -> int:
    """Append the text of a double-quoted run starting at ``index`` (after the
    opening quote); return the index after its closing quote. A backslash escapes
    only ``"`` and ``\\`` there, and is kept before anything else."""
    end = len(command)
    while True:
        match = _DOUBLE_QUOTED_PLAIN.match(command, index)
        if match is not None:
            parts.append(match.group())
            index = match.end()
        if index >= end:
            raise ValueError("No closing quotation")
        if command[index] == '"':
            return index + 1
        if index + 1 >= end:  # a backslash ends the text
            raise ValueError("No escaped character")
        escaped = command[index + 1]
        if escaped not in '"\\':
            parts.append("\\")
        parts.append(escaped)
        index += 2
