"""``python -m slugbuild`` and the ``slugbuild`` command run the command line."""

from __future__ import annotations

import gc
import signal
import sys
from types import FrameType


def _interrupted_while_loading(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(130)


def entry() -> int:
    """Run the command line. A Ctrl-C while its modules still load ends it with
    130 and no traceback, as one during a build does (cli.main handles those).

    The garbage collector is off while the modules load (they make many objects and
    no cycles worth collecting: each generation-2 pass would walk them all), then
    what they made is frozen out of every later collection: a build's collections
    walk only the build's own objects."""
    previous = signal.signal(signal.SIGINT, _interrupted_while_loading)
    collecting = gc.isenabled()
    gc.disable()
    try:
        from .cli import main
    finally:
        signal.signal(signal.SIGINT, previous)
        gc.freeze()
        if collecting:
            gc.enable()
    return main()


if __name__ == "__main__":
    sys.exit(entry())
