"""A fresh runner with a warm cache registry against a local warm build and a cold one
(issue 17: fresh <= 1.5 x warm, <= 0.3 x cold), for one or more versions of slugbuild,
alternating, medians (docs/benchmarks.md).

    .venv/bin/python benchmarks/paired_fresh.py fixtures/apps/django-tutorial \
        --src before=/tmp/before/src --src after=src --runs 5

Each version first makes a cold build that pushes to a loopback registry (its own
repository), then every run makes, for each version in turn (the order swapped every
run): a warm build on that cache, a fresh runner's build (an empty cache, the registry),
and, for the first --cold-runs runs, a cold build (an empty cache, no registry). Each is a
`slugbuild compile` process, timed by wall clock and by CPU (user + system of it and its
children), with the 1-minute load. Without --src the installed slugbuild is measured.
Every fresh runner's slug must be the cold build's, byte for byte.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from loopback import loopback_registry  # benchmarks/ is on sys.path
from side_by_side import compile_slugbuild, slugbuild_compile

KINDS = ("warm", "fresh", "cold")


def timed_build(app: Path, out: Path, cache: Path, src: Path | None,
                extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """One `slugbuild compile`: wall and CPU seconds, its --json result, the load."""
    os.sync()  # nothing of the step before left to write back (run.py's _settle)
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, result = slugbuild_compile(app, out, cache, out.with_suffix(".log"), src, extra)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"wall": wall, "cpu": round(cpu, 3), "load": round(load, 2),
            "sha256": result.get("sha256"), "timings": result.get("timings") or {},
            "cache_registry": result.get("cache_registry")}


def bench(app: Path, versions: dict[str, Path | None], runs: int, cold_runs: int,
          work: Path, registry: str) -> dict[str, Any]:
    """Every version's samples, medians and ratios."""
    state: dict[str, dict[str, Any]] = {}
    for name, src in versions.items():
        compile_slugbuild(src)
        root = work / name
        root.mkdir(parents=True)
        copy = shutil.copytree(app, root / "app", symlinks=True)
        reference = f"{registry}/paired-fresh/{app.name.lower()}-{name.lower()}"
        seed = timed_build(copy, root / "seed.tgz", root / "cache", src,
                           ("--cache-registry", reference))
        pushed = (seed["cache_registry"] or {}).get("bytes_sent", 0)
        print(f"{name}: cold build pushed {pushed / 1e6:.1f} MB, slug {seed['sha256'][:12]}",
              flush=True)
        state[name] = {"src": src, "root": root, "app": copy, "reference": reference,
                       "seed": seed, "pushed": pushed,
                       "samples": {kind: [] for kind in KINDS}}
    for run in range(runs):
        for name in (list(versions) if run % 2 == 0 else list(versions)[::-1]):
            version = state[name]
            root, src, copy = version["root"], version["src"], version["app"]
            builds = {"warm": (root / "cache", ()),
                      "fresh": (root / f"fresh-cache{run}",
                                ("--cache-registry", version["reference"]))}
            if run < cold_runs:
                builds["cold"] = (root / f"cold-cache{run}", ())
            for kind, (cache, extra) in builds.items():
                sample = timed_build(copy, root / f"{kind}{run}.tgz", cache, src, extra)
                if sample["sha256"] != version["seed"]["sha256"]:
                    raise SystemExit(f"{name} {kind} run {run}: slug {sample['sha256']} is "
                                     f"not the cold build's {version['seed']['sha256']}")
                if kind == "fresh":
                    moved = sample["cache_registry"] or {}
                    if moved.get("failed") or not moved.get("pulled"):
                        raise SystemExit(f"{name}: the fresh runner pulled nothing: {moved}")
                version["samples"][kind].append(sample)
                top = {k: v for k, v in sorted(sample["timings"].items(), key=lambda kv: -kv[1])
                       if v >= 0.05 and k != "total"}
                print(f"{name:8} run {run} {kind:5}: wall {sample['wall']:.2f} s, CPU "
                      f"{sample['cpu']:.2f} s, load {sample['load']:.1f}, {top}", flush=True)
            shutil.rmtree(root / f"fresh-cache{run}", ignore_errors=True)
            shutil.rmtree(root / f"cold-cache{run}", ignore_errors=True)
    return {name: summary(version) for name, version in state.items()}


def summary(version: dict[str, Any]) -> dict[str, Any]:
    """Medians of wall and CPU per kind, the issue's ratios, the bytes moved."""
    samples = version["samples"]
    medians = {kind: {measure: round(statistics.median(s[measure] for s in found), 3)
                      for measure in ("wall", "cpu")}
               for kind, found in samples.items() if found}
    ratios = {f"fresh_vs_{base}_{measure}": round(medians["fresh"][measure]
                                                  / medians[base][measure], 2)
              for base in ("warm", "cold") if base in medians for measure in ("wall", "cpu")}
    pulled = [s["cache_registry"]["bytes_received"] for s in samples["fresh"]]
    return {"medians": medians, "ratios": ratios, "bytes_pushed": version["pushed"],
            "bytes_pulled": statistics.median(pulled) if pulled else None,
            "loads": {kind: [s["load"] for s in found] for kind, found in samples.items()},
            "samples": samples}


def print_summary(app: str, results: dict[str, Any]) -> None:
    print(f"\n== {app}: median seconds, wall (CPU)")
    for name, result in results.items():
        cells = ", ".join(f"{kind} {m['wall']:.2f} ({m['cpu']:.2f})"
                          for kind, m in result["medians"].items())
        ratios = result["ratios"]
        verdict = ", ".join(f"{key} {value:.2f}" for key, value in ratios.items())
        print(f"{name}: {cells}")
        print(f"   ratios (targets: fresh <= 1.5 x warm, <= 0.3 x cold): {verdict}")
        print(f"   cache registry: {result['bytes_pushed'] / 1e6:.1f} MB pushed by the cold "
              f"build, {(result['bytes_pulled'] or 0) / 1e6:.1f} MB pulled by a fresh runner")


def run_apps(apps: list[Path], versions: dict[str, Path | None], runs: int,
             cold_runs: int) -> dict[str, Any]:
    """Bench each app (a registry and scratch of their own); returns the results by app."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="slugbuild-paired-fresh-") as scratch, \
            loopback_registry(Path(scratch)) as registry:
        if registry is None:
            return results
        for app in apps:
            print(f"== {app.name}: {', '.join(versions)}, {runs} runs", flush=True)
            results[app.name] = bench(app, versions, runs, cold_runs,
                                      Path(scratch) / app.name, registry)
            print_summary(app.name, results[app.name])
    return results


def _version(text: str) -> tuple[str, Path]:
    name, _, src = text.partition("=")
    if not src:
        raise argparse.ArgumentTypeError("--src NAME=PATH (a src/ directory)")
    return name, Path(src).absolute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("apps", type=Path, nargs="+")
    parser.add_argument("--src", type=_version, action="append", default=[],
                        help="NAME=PATH: a version's src/ (default: the installed slugbuild)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cold-runs", type=int, default=1,
                        help="runs that also make a cold build (default 1)")
    parser.add_argument("--output", type=Path, help="write the results here as JSON")
    args = parser.parse_args()
    versions: dict[str, Path | None] = dict(args.src) or {"installed": None}
    results = run_apps(args.apps, versions, args.runs, args.cold_runs)
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
