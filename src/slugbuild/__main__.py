"""``python -m slugbuild`` and the ``slugbuild`` command run the command line."""

from __future__ import annotations

import signal
import sys
from types import FrameType


def _interrupted_while_loading(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(130)


def entry() -> int:
    """Run the command line. A Ctrl-C while its modules still load ends it with
    130 and no traceback, as one during a build does (cli.main handles those)."""
    previous = signal.signal(signal.SIGINT, _interrupted_while_loading)
    try:
        from .cli import main
    finally:
        signal.signal(signal.SIGINT, previous)
    return main()


if __name__ == "__main__":
    sys.exit(entry())
