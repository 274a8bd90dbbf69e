"""Build output in herokuish style.

``-----> Step`` for each stage, tool output indented by seven spaces, warnings
behind `` !     ``. Every line goes through ``redact.mask``: config var values
and URL credentials are masked, control characters escaped, whoever wrote it
(slugbuild, an installer, the app's hooks). When the stream is a terminal, long steps show a rich
spinner; otherwise output is plain text so CI logs stay readable.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TextIO

from .redact import mask

STEP = "-----> "
INDENT = "       "
WARN = " !     "
# What ``Reporter.lines`` (BuildResult.log) keeps; the stream gets it all.
MAX_KEPT_CHARACTERS = 32 * 1024 * 1024


class Reporter:
    """Writes build progress; library users may pass their own or a quiet one."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.lines: list[str] = []
        self._kept = 0
        self._console = None
        if not quiet and _is_terminal(self.stream):
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False, soft_wrap=True)

    def _write(self, text: str) -> None:
        text = mask(text)
        if self._kept < MAX_KEPT_CHARACTERS:  # a tool printing without end is still
            self.lines.append(text)           # written out, but not kept in memory
            self._kept += len(text) + 1
            if self._kept >= MAX_KEPT_CHARACTERS:
                self.lines.append(f"{WARN}(the rest of the log was not kept)")
        if self.quiet:
            return
        self.stream.write(text + "\n")
        self.stream.flush()

    def step(self, message: str) -> None:
        self._write(STEP + message)

    def detail(self, message: str) -> None:
        for line in message.splitlines() or [""]:
            self._write((INDENT + line).rstrip())

    def warn(self, message: str) -> None:
        for line in message.splitlines() or [""]:
            self._write((WARN + line).rstrip())

    def held_back(self) -> Reporter:
        """A reporter that only collects lines: for work running beside the build,
        whose log is shown (``replay``) when the build reaches it, not interleaved."""
        return Reporter(self.stream, quiet=True)

    def replay(self, held: Reporter) -> None:
        """Write the lines a ``held_back`` reporter collected."""
        for line in held.lines:
            self._write(line)

    @contextlib.contextmanager
    def working(self, message: str) -> Iterator[None]:
        """A spinner on a terminal while a long step runs; nothing extra otherwise."""
        if self._console is None:
            yield
            return
        with self._console.status(message, spinner="dots"):
            yield


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
