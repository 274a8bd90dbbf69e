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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TextIO

from .redact import mask

STEP = "-----> "
INDENT = "       "
WARN = " !     "
# What ``Reporter.lines`` (BuildResult.log) keeps; the stream gets it all.
MAX_KEPT_CHARACTERS = 32 * 1024 * 1024


EventKind = Literal["step", "detail", "warning"]
_PREFIX: dict[str, str] = {"step": STEP, "detail": INDENT, "warning": WARN}


@dataclass(frozen=True)
class LogEvent:
    """One line of build output, as data: what kind of line, and its text.

    ``message`` is already masked (``redact.mask``); ``line`` is the line as the
    command line prints it (herokuish prefix included).
    """

    kind: EventKind
    message: str

    @property
    def line(self) -> str:
        return (_PREFIX[self.kind] + self.message).rstrip()


class EventHandler(Protocol):
    """What ``Reporter(on_event=...)`` calls for every line: a library user's way to
    follow a build (a progress bar, a structured log) without parsing text."""

    def __call__(self, event: LogEvent) -> None: ...


class Reporter:
    """Writes build progress: to a text stream (stderr unless told), and/or to an
    ``on_event`` callback that receives each line as a ``LogEvent``.

    ``quiet`` keeps lines off the stream; ``on_event`` still gets them. Every
    line is also kept in ``lines`` (BuildResult.log).
    """

    def __init__(self, stream: TextIO | None = None, quiet: bool = False,
                 on_event: EventHandler | Callable[[LogEvent], None] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.on_event = on_event
        self.lines: list[str] = []
        self.events: list[LogEvent] = []
        self._kept = 0
        self._console: Any = None
        if not quiet and _is_terminal(self.stream):
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False, soft_wrap=True)

    def _emit(self, event: LogEvent) -> None:
        text = event.line
        if self._kept < MAX_KEPT_CHARACTERS:  # a tool printing without end is still
            self.lines.append(text)           # written out, but not kept in memory
            self.events.append(event)
            self._kept += len(text) + 1
            if self._kept >= MAX_KEPT_CHARACTERS:
                cut = LogEvent("warning", "(the rest of the log was not kept)")
                self.lines.append(cut.line)
                self.events.append(cut)
        if self.on_event is not None:
            self.on_event(event)
        if self.quiet:
            return
        self.stream.write(text + "\n")
        self.stream.flush()

    def step(self, message: str) -> None:
        self._emit(LogEvent("step", mask(message)))

    def detail(self, message: str) -> None:
        for line in message.splitlines() or [""]:
            self._emit(LogEvent("detail", mask(line)))

    def warn(self, message: str) -> None:
        for line in message.splitlines() or [""]:
            self._emit(LogEvent("warning", mask(line)))

    def held_back(self) -> Reporter:
        """A reporter that only collects lines: for work running beside the build,
        whose log is shown (``replay``) when the build reaches it, not interleaved."""
        return Reporter(self.stream, quiet=True)

    def replay(self, held: Reporter) -> None:
        """Write the lines a ``held_back`` reporter collected."""
        for event in held.events:
            self._emit(event)

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
