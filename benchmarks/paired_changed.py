"""The "changed" build (one more pinned requirement, added as the app's package manager
adds it) of one app, two versions of slugbuild side by side: each on a cache of its own,
alternating, medians (docs/benchmarks.md).

    .venv/bin/python benchmarks/paired_changed.py fixtures/apps/django-tutorial \
        --before /tmp/before/src --after src --runs 5 --extra six==1.17.0

Before each sample the cache is put back to how the warm build left it: the changed
build's dependency layer and collectstatic output removed, the pycs it stored removed,
the app's history (the layer the build starts from) restored. Wall clock and CPU (the
process and its children) are printed with the 1-minute load average and the slug's
SHA-256 (every sample of both versions must give the same).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from app_changes import add_requirement  # benchmarks/ is on sys.path


def _build(src: str, app: Path, out: Path, cache: Path) -> tuple[float, float, dict[str, Any], str]:
    env = {**os.environ, "PYTHONPATH": src}
    started, before = time.perf_counter(), os.times()
    done = subprocess.run([sys.executable, "-m", "slugbuild", "compile", str(app), "-o", str(out),
                           "--cache-dir", str(cache), "--json"],
                          env=env, capture_output=True, text=True)
    wall, after = time.perf_counter() - started, os.times()
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    cpu = (after.children_user - before.children_user) + (after.children_system
                                                          - before.children_system)
    sha = hashlib.sha256(out.read_bytes()).hexdigest()[:12]
    return wall, cpu, json.loads(done.stdout)["timings"], sha


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", type=Path)
    parser.add_argument("--before", required=True, help="src/ of the version before")
    parser.add_argument("--after", required=True, help="src/ of the version after")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--extra", default="six==1.17.0", help="the pin the change adds")
    parser.add_argument("--work", type=Path, default=Path("/tmp/slugbuild-paired-changed"))
    args = parser.parse_args()
    versions = {"before": str(Path(args.before).absolute()),
                "after": str(Path(args.after).absolute())}
    state = {}
    for name, src in versions.items():
        work = args.work / args.app.name / name
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        app = shutil.copytree(args.app, work / "app")
        cache = work / "cache"
        _build(src, app, work / "cold.tgz", cache)
        warm = _build(src, app, work / "warm.tgz", cache)
        print(f"{name} warm {warm[0]:.2f} s, slug {warm[3]}", flush=True)
        history = next((cache / "history").glob("*.json"))
        kept = {"history": history.read_bytes(), "layers": set(os.listdir(cache / "layers")),
                "static": set(os.listdir(cache / "static")) if (cache / "static").is_dir()
                else set(), "since": time.time()}
        # As its package manager would: requirements.txt, Pipfile.lock, poetry.lock, uv.lock.
        add_requirement(app, work, args.extra)
        state[name] = (app, cache, history, kept, work)
    samples: dict[str, list[tuple[float, float, dict[str, Any], str, float]]] = \
        {name: [] for name in versions}
    for run in range(args.runs):
        for name in (list(versions) if run % 2 == 0 else list(versions)[::-1]):
            app, cache, history, kept, work = state[name]
            for entry in set(os.listdir(cache / "layers")) - kept["layers"]:
                shutil.rmtree(cache / "layers" / entry)
            if (cache / "static").is_dir():
                for entry in set(os.listdir(cache / "static")) - kept["static"]:
                    shutil.rmtree(cache / "static" / entry)
            for pyc in (cache / "pyc").rglob("*"):
                if pyc.is_file() and pyc.stat().st_mtime > kept["since"]:
                    pyc.unlink()
            history.write_bytes(kept["history"])
            subprocess.run(["sync"], check=False)
            load = os.getloadavg()[0]
            wall, cpu, timings, sha = _build(versions[name], app, work / f"changed{run}.tgz", cache)
            samples[name].append((wall, cpu, timings, sha, load))
            top = {k: v for k, v in sorted(timings.items(), key=lambda kv: -kv[1])
                   if v > 0.1 and k != "total"}
            print(f"{name:6} run {run}: wall {wall:.2f} s, CPU {cpu:.2f} s, load {load:.1f}, "
                  f"slug {sha}, {top}", flush=True)
    for name, found in samples.items():
        stages = {k: round(statistics.median(s[2].get(k, 0.0) for s in found), 2)
                  for k in found[0][2]}
        print(f"{name}: median wall {statistics.median(s[0] for s in found):.2f} s, CPU "
              f"{statistics.median(s[1] for s in found):.2f} s, loads "
              f"{[round(s[4], 1) for s in found]}, slugs {sorted({s[3] for s in found})}")
        print(f"   stages {({k: v for k, v in stages.items() if v > 0.05})}")
    (args.work / args.app.name / "results.json").write_text(json.dumps(samples))


if __name__ == "__main__":
    main()
