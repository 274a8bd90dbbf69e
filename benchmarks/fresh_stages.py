"""Where a fresh runner's time goes, stage by stage, against a local warm build (issue 17):
wall and CPU seconds of each stage, medians, warm and fresh builds alternating.

    .venv/bin/python benchmarks/fresh_stages.py fixtures/apps/django-tutorial --runs 5

Per app: a cold build pushes to a loopback registry; then each run makes a warm build on
that cache and a fresh runner's build (an empty cache, the registry), the order swapped
every run, each a process of its own run by stage_cpu.py (a stage's CPU is the whole
process's while it ran: docs/benchmarks.md, session 10). Every slug must be the cold
build's. paired_fresh.py gives the whole builds' figures; this says which stages differ.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from loopback import loopback_registry  # benchmarks/ is on sys.path
from side_by_side import compile_slugbuild, slugbuild_compile

HERE = Path(__file__).resolve().parent


def staged_build(app: Path, out: Path, cache: Path, src: Path | None,
                 extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """One `slugbuild compile` under stage_cpu.py: its stages, wall, CPU, slug sha256."""
    os.sync()
    figures = out.with_suffix(".stages.json")
    env = {**os.environ, "PYTHONPATH": str(src)} if src else None
    with out.with_suffix(".log").open("wb") as log:
        done = subprocess.run([sys.executable, str(HERE / "stage_cpu.py"), str(figures),
                               "compile", str(app), "-o", str(out), "--cache-dir", str(cache),
                               "--json", *extra], stdout=subprocess.PIPE, stderr=log,
                              stdin=subprocess.DEVNULL, env=env)
    if done.returncode:
        raise SystemExit(f"build failed (exit {done.returncode}); log {out.with_suffix('.log')}")
    result = json.loads(figures.read_text())
    result["sha256"] = json.loads(done.stdout).get("sha256")
    result["load"] = round(os.getloadavg()[0], 2)
    return result


def bench(app: Path, src: Path | None, runs: int, work: Path, registry: str
          ) -> dict[str, Any]:
    """Each kind's per-stage medians over ``runs``."""
    copy = shutil.copytree(app, work / "app", symlinks=True)
    reference = f"{registry}/fresh-stages/{app.name.lower()}"
    _, seed = slugbuild_compile(copy, work / "seed.tgz", work / "cache", work / "seed.log", src,
                                ("--cache-registry", reference))
    samples: dict[str, list[dict[str, Any]]] = {"warm": [], "fresh": []}
    for run in range(runs):
        for kind in (("warm", "fresh") if run % 2 == 0 else ("fresh", "warm")):
            cache, extra = ((work / "cache", ()) if kind == "warm" else
                            (work / f"fresh-cache{run}", ("--cache-registry", reference)))
            sample = staged_build(copy, work / f"{kind}{run}.tgz", cache, src, extra)
            if sample["sha256"] != seed.get("sha256"):
                raise SystemExit(f"{kind} run {run}: not the cold build's slug")
            samples[kind].append(sample)
            print(f"run {run} {kind:5}: wall {sample['wall']:.2f} s, CPU {sample['cpu']:.2f} s, "
                  f"load {sample['load']:.1f}", flush=True)
        shutil.rmtree(work / f"fresh-cache{run}", ignore_errors=True)
    return {kind: summary(found) for kind, found in samples.items()}


def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the whole build and of each stage (0 for a stage a sample lacks)."""
    names = list(dict.fromkeys(s["stage"] for sample in samples for s in sample["stages"]))

    def median(name: str, measure: str) -> float:
        return round(statistics.median(
            sum(s[measure] for s in sample["stages"] if s["stage"] == name)
            for sample in samples), 3)

    return {"wall": statistics.median(s["wall"] for s in samples),
            "cpu": statistics.median(s["cpu"] for s in samples),
            "loads": [s["load"] for s in samples],
            "stages": {name: {"wall": median(name, "wall"), "cpu": median(name, "cpu")}
                       for name in names}}


def print_table(app: str, result: dict[str, Any]) -> None:
    warm, fresh = result["warm"], result["fresh"]
    print(f"\n== {app}: medians, seconds (loads warm {warm['loads']}, fresh {fresh['loads']})")
    print(f"{'stage':26} {'warm wall':>9} {'warm CPU':>9} {'fresh wall':>10} {'fresh CPU':>9} "
          f"{'CPU +':>7}")
    for name in dict.fromkeys([*fresh["stages"], *warm["stages"]]):
        w = warm["stages"].get(name, {"wall": 0.0, "cpu": 0.0})
        f = fresh["stages"].get(name, {"wall": 0.0, "cpu": 0.0})
        if max(w["wall"], f["wall"]) < 0.005:
            continue
        print(f"{name:26} {w['wall']:9.3f} {w['cpu']:9.3f} {f['wall']:10.3f} {f['cpu']:9.3f} "
              f"{f['cpu'] - w['cpu']:+7.3f}")
    print(f"{'whole process':26} {warm['wall']:9.3f} {warm['cpu']:9.3f} {fresh['wall']:10.3f} "
          f"{fresh['cpu']:9.3f} {fresh['cpu'] - warm['cpu']:+7.3f}")
    print(f"fresh / warm: wall {fresh['wall'] / warm['wall']:.2f}, "
          f"CPU {fresh['cpu'] / warm['cpu']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("apps", type=Path, nargs="+")
    parser.add_argument("--src", type=Path, help="a src/ directory (default: installed)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--output", type=Path, help="write the results here as JSON")
    args = parser.parse_args()
    src = args.src.absolute() if args.src else None
    compile_slugbuild(src)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="slugbuild-fresh-stages-") as scratch, \
            loopback_registry(Path(scratch)) as registry:
        if registry is None:
            return
        for app in args.apps:
            work = Path(scratch) / app.name
            work.mkdir()
            results[app.name] = bench(app, src, args.runs, work, registry)
            print_table(app.name, results[app.name])
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
