"""Run one `slugbuild ARGS...` in this process and write, to OUT, the wall and CPU seconds
of each stage (BuildResult.timings' stages) and of the whole process (fresh_stages.py).

    python benchmarks/stage_cpu.py OUT.json compile APP -o SLUG --cache-dir DIR ...

A stage's CPU is the process's (user + system of every thread) while the stage ran: a
stage that waits for a background thread (dependency_layer, for the install or pull
started at the beginning) is charged what that thread did meanwhile, and the thread's
own stage (dependency_layer_apart) overlaps the runtime's. "(start-up)" is what ran
before the first stage (imports, the command line, opening the cache and the registry).
"""

from __future__ import annotations

import contextlib
import json
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    out = Path(sys.argv[1])
    started, started_cpu = time.perf_counter(), _cpu()
    stages: list[dict[str, Any]] = []

    from slugbuild import context  # the timer every stage runs under

    original = context.StageTimer.stage

    @contextlib.contextmanager
    def stage(self: context.StageTimer, name: str, deadline: bool = True) -> Iterator[None]:
        wall, cpu = time.perf_counter(), _cpu()
        if not stages:  # what ran before the first stage: imports, options, the cache
            stages.append({"stage": "(start-up)", "at": 0.0, "wall": round(wall - started, 3),
                           "cpu": round(cpu - started_cpu, 3)})
        try:
            with original(self, name, deadline):
                yield
        finally:
            stages.append({"stage": name, "at": round(wall - started, 3),
                           "wall": round(time.perf_counter() - wall, 3),
                           "cpu": round(_cpu() - cpu, 3)})

    context.StageTimer.stage = stage  # type: ignore[method-assign,assignment]
    from slugbuild.__main__ import entry  # as `slugbuild` runs (its gc settings too)

    sys.argv = ["slugbuild", *sys.argv[2:]]
    try:
        code = entry()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out.write_text(json.dumps({"wall": round(time.perf_counter() - started, 3),
                               "cpu": round(_cpu() - started_cpu, 3), "stages": stages}))
    return code


if __name__ == "__main__":
    sys.exit(main())
