"""Warm builds of one app by one or more versions of slugbuild and, when given the peer,
by the Heroku Python buildpack (issue 20: warm <= 0.3 x Heroku), alternating, medians
of wall and CPU time (docs/benchmarks.md).

    .venv/bin/python benchmarks/paired_warm.py fixtures/apps/django-tutorial \
        --src before=/tmp/before/src --src after=src --peer ../shared/heroku-peer --runs 5

Each builder (a version of slugbuild, the buildpack) first makes an untimed cold build
on a cache of its own; then every run makes one warm build with each, the order turned
around every run. The builds are side_by_side.py's (`slugbuild compile` processes timed
as a user runs them, the buildpack's `bin/compile` as Heroku runs it); without --src
the installed slugbuild is measured, without --peer (or $HEROKU_PEER) only slugbuild.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from heroku_peer import HerokuPeer, PeerUnavailable  # benchmarks/ is on sys.path
from side_by_side import TARGETS, _Builder, compile_slugbuild


def bench(app: Path, versions: dict[str, Path | None], peer: HerokuPeer | None, runs: int,
          work: Path) -> dict[str, Any]:
    """Every builder's warm samples (wall, CPU, load) and their medians."""
    failures: dict[str, str] = {}
    builders: dict[str, _Builder] = {}
    for name, src in versions.items():
        compile_slugbuild(src)
        builders[name] = _Builder("slugbuild", app, work / name, None, failures, src)
    if peer is not None:
        try:
            peer.prepare(app)
            builders["heroku"] = _Builder("heroku", app, work / "heroku", peer, failures)
        except PeerUnavailable as error:
            print(f"Heroku buildpack cannot build this app here: {error}", flush=True)
    for builder in builders.values():
        builder.build("cold", app)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in builders}
    for run in range(runs):
        for name in (list(builders) if run % 2 == 0 else list(builders)[::-1]):
            load = os.getloadavg()[0]
            wall = builders[name].build("warm", app)
            if wall is None:
                raise SystemExit(f"{name}: the warm build failed: {failures}")
            cpu = builders[name].cpu or 0.0
            samples[name].append({"wall": wall, "cpu": cpu, "load": round(load, 2)})
            print(f"{name:8} run {run}: wall {wall:.2f} s, CPU {cpu:.2f} s, load {load:.1f}",
                  flush=True)
    medians = {name: {measure: round(statistics.median(s[measure] for s in found), 3)
                      for measure in ("wall", "cpu")} for name, found in samples.items()}
    return {"samples": samples, "medians": medians}


def print_summary(app: str, result: dict[str, Any]) -> None:
    medians = result["medians"]
    print(f"\n== {app}: warm, median seconds, wall (CPU)")
    heroku = medians.get("heroku")
    for name, median in medians.items():
        line = f"{name}: {median['wall']:.2f} ({median['cpu']:.2f})"
        if heroku and name != "heroku":
            line += (f"; vs Heroku {median['wall'] / heroku['wall']:.2f} "
                     f"(CPU {median['cpu'] / heroku['cpu']:.2f}), target <= {TARGETS['warm']}")
        print(line)


def _version(text: str) -> tuple[str, Path]:
    name, _, src = text.partition("=")
    if not src or name == "heroku":
        raise argparse.ArgumentTypeError("--src NAME=PATH (a src/ directory; not 'heroku')")
    return name, Path(src).absolute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", type=Path)
    parser.add_argument("--src", type=_version, action="append", default=[],
                        help="NAME=PATH: a version's src/ (default: the installed slugbuild)")
    parser.add_argument("--peer", type=Path, default=os.environ.get("HEROKU_PEER") or None,
                        help="the heroku-peer directory (default: $HEROKU_PEER)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--output", type=Path, help="write the results here as JSON")
    args = parser.parse_args()
    versions: dict[str, Path | None] = dict(args.src) or {"slugbuild": None}
    # Not under /tmp: the buildpack keeps uv's cache in /tmp when it builds there
    # (side_by_side.py says why).
    outside = "/var/tmp" if os.path.isdir("/var/tmp") else None
    with tempfile.TemporaryDirectory(prefix="slugbuild-paired-warm-", dir=outside) as scratch:
        peer = None
        if args.peer is not None:
            try:
                peer = HerokuPeer(args.peer, Path(scratch) / "peer").__enter__()
            except PeerUnavailable as error:
                print(f"Heroku buildpack skipped: {error}", flush=True)
        try:
            result = bench(args.app.absolute(), versions, peer, args.runs, Path(scratch))
        finally:
            if peer is not None:
                peer.__exit__(None, None, None)
    print_summary(args.app.name, result)
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
