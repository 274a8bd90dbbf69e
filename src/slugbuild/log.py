"""Build output in herokuish style, live.

``-----> Step`` when a stage starts, tool output indented by seven spaces as it
arrives, warnings behind `` !     ``; a third-party buildpack's own output passes
through unchanged, as herokuish and Heroku show it. Every line goes through
``redact.mask``: config var values and URL credentials are masked, control
characters escaped, whoever wrote it (slugbuild, an installer, the app's hooks).
The build's scratch directory is shown as the path the app will have (``/app``).

While slugbuild waits on work that prints nothing (a silent installer, a
download), ``waiting`` keeps the log alive: a spinner on a terminal, else a
heartbeat line (``still installing dependencies (45 s)``) when nothing was
printed for ``heartbeat_seconds``.

The same lines reach a library user as ``LogEvent``s (stage, kind, text,
elapsed): through ``on_event`` (any callable, ``EventHandler``) or a
``logging.Logger`` (``logger=``, ``LoggingHandler``).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol, TextIO

from .redact import mask

STEP = "-----> "
INDENT = "       "
WARN = " !     "
# What ``Reporter.lines`` (BuildResult.log) keeps; the stream gets it all.
MAX_KEPT_CHARACTERS = 32 * 1024 * 1024
# How long the log may stay silent while slugbuild waits, in a non-terminal log,
# before a heartbeat line says what it waits for (SLUGBUILD_HEARTBEAT_SECONDS).
HEARTBEAT_SECONDS = 30.0
SPINNER_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

# step: a ``-----> `` header; detail: an indented line (slugbuild's or a tool's);
# warning: `` !     ``; output: a third-party buildpack's line, unchanged;
# debug: a tool's output slugbuild does not show unless verbose;
# heartbeat: ``still ... (45 s)`` while waiting on silent work.
EventKind = Literal["step", "detail", "warning", "output", "debug", "heartbeat"]
Verbosity = Literal["quiet", "normal", "verbose"]
ColorChoice = Literal["auto", "always", "never"]
_PREFIX: dict[str, str] = {"step": STEP, "detail": INDENT, "warning": WARN, "output": "",
                           "debug": INDENT, "heartbeat": INDENT}
# What each verbosity writes to the stream (callbacks and ``lines`` get every kind
# but debug, which they get when verbose).
_SHOWN: dict[str, frozenset[str]] = {
    "quiet": frozenset({"warning"}),
    "normal": frozenset({"step", "detail", "warning", "output", "heartbeat"}),
    "verbose": frozenset({"step", "detail", "warning", "output", "heartbeat", "debug"}),
}
_COLORS = {"step": "\x1b[1m", "warning": "\x1b[33m", "heartbeat": "\x1b[2m", "debug": "\x1b[2m",
           "error": "\x1b[31m"}
_RESET = "\x1b[0m"


def painted(text: str, kind: str) -> str:
    """``text`` in the colour of ``kind`` (``error`` for an error's message), line by
    line, so that every line of a message reads coloured on its own."""
    color = _COLORS[kind]
    return "\n".join(f"{color}{line}{_RESET}" if line else line
                      for line in text.split("\n"))

# The build stage running in this thread (``StageTimer.stage`` sets it); a background
# install runs in a copy of the build's context, so its lines name its own stage.
current_stage: contextvars.ContextVar[str] = contextvars.ContextVar(
    "slugbuild_stage", default="")


@dataclass(frozen=True)
class LogEvent:
    """One line of build output, as data: what kind of line, its text, the build
    stage it came from, and when (seconds since the reporter was made).

    ``message`` is already masked (``redact.mask``); ``line`` is the line as the
    command line prints it (herokuish prefix included). Two events are equal when
    their lines are: ``stage`` and ``elapsed`` say where and when, not what.
    """

    kind: EventKind
    message: str
    stage: str = field(default="", compare=False)
    elapsed: float = field(default=0.0, compare=False)

    @property
    def line(self) -> str:
        return (_PREFIX[self.kind] + self.message).rstrip()


class EventHandler(Protocol):
    """What ``Reporter(on_event=...)`` calls for every line: a library user's way to
    follow a build (a progress bar, a structured log) without parsing text."""

    def __call__(self, event: LogEvent) -> None: ...


_LOG_LEVELS = {"step": logging.INFO, "detail": logging.INFO, "output": logging.INFO,
               "heartbeat": logging.INFO, "warning": logging.WARNING, "debug": logging.DEBUG}


class LoggingHandler:
    """An ``EventHandler`` that sends each event to a ``logging.Logger``: the message
    as the record's text, ``stage``/``kind``/``elapsed`` as record attributes
    (``extra``), warnings at WARNING, a tool's hidden output at DEBUG."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def __call__(self, event: LogEvent) -> None:
        self.logger.log(_LOG_LEVELS[event.kind], "%s", event.message,
                        extra={"stage": event.stage, "kind": event.kind,
                               "elapsed": event.elapsed})


def color_wanted(choice: ColorChoice, stream: TextIO) -> bool:
    """``--color``: ``auto`` colours a terminal unless NO_COLOR is set or TERM=dumb."""
    if choice == "always":
        return True
    if choice == "never":
        return False
    return (_is_terminal(stream) and not os.environ.get("NO_COLOR")
            and os.environ.get("TERM", "") != "dumb")


class Reporter:
    """Writes build progress: to a text stream (stderr unless told), and/or to an
    ``on_event`` callback or ``logger`` that receives each line as a ``LogEvent``.

    ``quiet`` keeps every line off the stream (``verbosity="quiet"`` keeps
    warnings); ``on_event``/``logger`` still get them. ``verbosity="verbose"``
    also shows the output of tools slugbuild runs for itself. ``color``: None
    colours a terminal (see ``color_wanted``). Every line is also kept in
    ``lines`` (BuildResult.log). Safe to use from several threads.
    """

    def __init__(self, stream: TextIO | None = None, quiet: bool = False,
                 on_event: EventHandler | Callable[[LogEvent], None] | None = None, *,
                 verbosity: Verbosity = "normal", color: bool | None = None,
                 logger: logging.Logger | None = None,
                 heartbeat_seconds: float | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.verbosity: Verbosity = verbosity
        self.on_event = on_event
        self.logger_handler = LoggingHandler(logger) if logger is not None else None
        self.lines: list[str] = []
        self.events: list[LogEvent] = []
        self.started = time.monotonic()
        self.terminal = _is_terminal(self.stream)
        self.color = color if color is not None else color_wanted("auto", self.stream)
        self.heartbeat_seconds = (heartbeat_seconds if heartbeat_seconds is not None
                                  else _heartbeat_from_env())
        self._kept = 0
        self._lock = threading.RLock()
        self._aliases: list[tuple[str, str]] = []
        self._last_line = time.monotonic()
        self._spinner_shown = False
        self._batch_depth = 0
        self._batched_text: list[str] = []

    # -- what callers use ------------------------------------------------------

    def step(self, message: str) -> None:
        self._emit(self._event("step", mask(message)))

    def detail(self, message: str) -> None:
        for line in message.splitlines() or [""]:
            self._emit(self._event("detail", mask(line)))

    def warn(self, message: str) -> None:
        for line in message.splitlines() or [""]:
            self._emit(self._event("warning", mask(line)))

    def output(self, message: str) -> None:
        """A line a third-party buildpack printed: shown as it is (its own
        ``-----> `` headers stay headers), masked like every line."""
        for line in message.splitlines() or [""]:
            self._emit(self._event("output", mask(line)))

    def debug(self, message: str) -> None:
        """A line of a tool's output slugbuild does not show unless verbose."""
        for line in message.splitlines() or [""]:
            self._emit(self._event("debug", mask(line)))

    def show_path_as(self, path: str | os.PathLike[str], shown: str) -> None:
        """Print ``shown`` wherever ``path`` (a scratch directory) appears in a line,
        e.g. the build directory as ``/app``, the path the app has when it runs."""
        text = str(path)
        if text and text != shown:
            with self._lock:
                self._aliases.append((text, shown))
                self._aliases.sort(key=lambda alias: -len(alias[0]))  # deepest first
                resolved = os.path.realpath(text)
                if resolved != text:
                    self._aliases.append((resolved, shown))
                    self._aliases.sort(key=lambda alias: -len(alias[0]))

    def held_back(self) -> Reporter:
        """A reporter that only collects lines: for work running beside the build,
        whose log is shown (``replay``) when the build reaches it, not interleaved."""
        held = Reporter(self.stream, quiet=True)
        held.started = self.started  # its events' times count from the build's start
        return held

    def replay(self, held: Reporter) -> None:
        """Write the lines a ``held_back`` reporter collected."""
        for event in held.events:
            self._emit(event)

    def deferred(self) -> DeferredReporter:
        """A reporter for work running beside the build: its lines wait until the
        build reaches that work (``DeferredReporter.release``), then the rest of
        them is written as it comes."""
        return DeferredReporter(self)

    @contextlib.contextmanager
    def batched(self) -> Iterator[None]:
        """Write the lines emitted inside to the stream at the end, at once: a tool's
        output arrives in chunks of many lines, and one write (and flush) per line
        made a chatty tool's log cost a system call a line. Callbacks and ``lines``
        still get each line as it is emitted."""
        with self._lock:
            self._batch_depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._batch_depth -= 1
                if self._batch_depth == 0 and self._batched_text:
                    text = "".join(self._batched_text)
                    self._batched_text.clear()
                    self._write_raw(text)

    @contextlib.contextmanager
    def working(self, message: str) -> Iterator[None]:
        """A spinner on a terminal while a long step runs; on a plain log, a
        heartbeat line when it stays silent (see ``waiting``)."""
        with self.waiting(message):
            yield

    @contextlib.contextmanager
    def waiting(self, what: str) -> Iterator[None]:
        """Keep the log alive while ``what`` (e.g. ``installing dependencies``) runs:
        a spinner on a terminal, else ``still <what> (45 s)`` after every
        ``heartbeat_seconds`` without a line. Lines printed meanwhile go through."""
        stop = threading.Event()
        spin = (self.terminal and not self.quiet and self.verbosity != "quiet"
                and os.environ.get("TERM", "") != "dumb")
        begun = time.monotonic()

        def tick() -> None:
            frame = 0
            while not stop.wait(0.1 if spin else min(1.0, self.heartbeat_seconds / 4)):
                seconds = int(time.monotonic() - begun)
                try:
                    if spin:
                        with self._lock:
                            shown = SPINNER_FRAMES[frame % len(SPINNER_FRAMES)]
                            self._write_raw(f"\r\x1b[K{shown} {what} ({seconds} s)")
                            self._spinner_shown = True
                        frame += 1
                    elif time.monotonic() - self._last_line >= self.heartbeat_seconds:
                        self._emit(self._event("heartbeat", f"still {what} ({seconds} s)"))
                except (OSError, ValueError):  # the log's stream went away: the work
                    return                     # goes on, and its failure is reported

        ticker = threading.Thread(target=tick, name="slugbuild-heartbeat", daemon=True)
        ticker.start()
        try:
            yield
        finally:
            stop.set()
            ticker.join()
            with self._lock:
                self._clear_spinner()

    # -- how lines are written -------------------------------------------------

    def _event(self, kind: EventKind, message: str) -> LogEvent:
        return LogEvent(kind, message, current_stage.get(),
                        round(time.monotonic() - self.started, 3))

    def _emit(self, event: LogEvent) -> None:
        with self._lock:
            for path, shown in self._aliases:
                if path in event.message:
                    event = replace(event, message=event.message.replace(path, shown))
            if event.kind == "debug" and self.verbosity != "verbose":
                return
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
            if self.logger_handler is not None:
                self.logger_handler(event)
            self._last_line = time.monotonic()  # a heartbeat is for silence only
            if self.quiet or event.kind not in _SHOWN[self.verbosity]:
                return
            self._clear_spinner()
            shown = painted(text, event.kind) if self.color and event.kind in _COLORS else text
            self._write_raw(shown + "\n")

    def _write_raw(self, text: str) -> None:
        if self._batch_depth:
            self._batched_text.append(text)
            return
        self.stream.write(text)
        self.stream.flush()

    def _clear_spinner(self) -> None:
        if self._spinner_shown:
            self._write_raw("\r\x1b[K")
            self._spinner_shown = False


class DeferredReporter(Reporter):
    """Lines of work started beside the build: held until ``release``, then written
    through the build's reporter as they come (see ``Reporter.deferred``)."""

    def __init__(self, parent: Reporter) -> None:
        super().__init__(parent.stream, quiet=True, verbosity=parent.verbosity,
                         heartbeat_seconds=parent.heartbeat_seconds)
        self.parent = parent
        self.started = parent.started
        self._released = False

    def _emit(self, event: LogEvent) -> None:
        with self._lock:
            if not self._released:
                self.events.append(event)
                return
        self.parent._emit(event)

    def show_path_as(self, path: str | os.PathLike[str], shown: str) -> None:
        self.parent.show_path_as(path, shown)

    @contextlib.contextmanager
    def batched(self) -> Iterator[None]:
        with self.parent.batched():  # released lines are written by the parent
            yield

    def release(self) -> None:
        """Write what was held, and from now on every line as it comes."""
        with self._lock:
            held, self.events = self.events, []
            for event in held:
                self.parent._emit(event)
            self._released = True


def _heartbeat_from_env() -> float:
    try:
        seconds = float(os.environ.get("SLUGBUILD_HEARTBEAT_SECONDS", ""))
    except ValueError:
        return HEARTBEAT_SECONDS
    return seconds if 0 < seconds < 86400 else HEARTBEAT_SECONDS


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):
        return False

