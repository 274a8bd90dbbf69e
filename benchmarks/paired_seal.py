"""What sealing a step costs (step_jail.py), paired and alternating: each step run
as before this session (unsealed: ``SLUGBUILD_SEAL_CACHE=0``) then sealed, back to
back, ``--runs`` times.

Steps: a bare ``true`` through ``CacheSeal.step`` and ``install_step`` (the wrapper
alone), the resolution of a version range (``uv pip compile``, warm uv cache, the
machine's local index when there is one), and the Node step of a small app with
install scripts (session 9's one sealed ``npm ci``, against ``--ignore-scripts``,
``npm rebuild``, ``npm run prepare`` and the build script sealed). Prints wall and
CPU (user+sys of the children) medians per step; the load (``uptime``) before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from slugbuild.cache import Cache
from slugbuild.installers import InstallPlan
from slugbuild.installers.ranges import resolve_plan
from slugbuild.log import Reporter
from slugbuild.node_assets import run_node_build
from slugbuild.proc import run_tool
from slugbuild.step_jail import SEAL_ENV, CacheSeal, StepRunner, Unsealed

LOCAL_INDEX = Path("/opt/pypi/simple")
ONLY = [""]  # --only


def measure(run: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU (user+sys of this process and its children) seconds of ``run``."""
    before_self, before_children = (resource.getrusage(resource.RUSAGE_SELF),
                                    resource.getrusage(resource.RUSAGE_CHILDREN))
    start = time.perf_counter()
    run()
    wall = time.perf_counter() - start
    after_self, after_children = (resource.getrusage(resource.RUSAGE_SELF),
                                  resource.getrusage(resource.RUSAGE_CHILDREN))
    cpu = sum(getattr(after, field) - getattr(before, field)
              for before, after in ((before_self, after_self),
                                    (before_children, after_children))
              for field in ("ru_utime", "ru_stime"))
    return wall, cpu


def paired(name: str, unsealed: Callable[[], object], sealed: Callable[[], object],
           runs: int) -> dict[str, object]:
    """Both variants once to warm, then ``runs`` alternating pairs; medians and deltas."""
    if ONLY[0] not in name:
        return {}
    unsealed()
    sealed()
    samples: dict[str, list[tuple[float, float]]] = {"unsealed": [], "sealed": []}
    for _ in range(runs):
        samples["unsealed"].append(measure(unsealed))
        samples["sealed"].append(measure(sealed))
    result: dict[str, object] = {"step": name}
    for variant, values in samples.items():
        result[variant] = {"wall": statistics.median(v[0] for v in values),
                           "cpu": statistics.median(v[1] for v in values)}
    deltas = [(s[0] - u[0], s[1] - u[1]) for u, s in zip(samples["unsealed"],
                                                          samples["sealed"])]
    result["delta"] = {"wall": statistics.median(d[0] for d in deltas),
                       "cpu": statistics.median(d[1] for d in deltas)}
    return result


def seal_off(run: Callable[[], object]) -> Callable[[], object]:
    def off() -> object:
        os.environ[SEAL_ENV] = "0"
        try:
            return run()
        finally:
            del os.environ[SEAL_ENV]
    return off


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--only", default="", help="only the steps whose name holds this")
    args = parser.parse_args()
    ONLY[0] = args.only
    print("load before:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    work = Path(tempfile.mkdtemp(prefix="paired-seal."))
    reporter = Reporter(quiet=True)
    results = []
    try:
        cache = Cache(work / "cache")
        scratch = cache.scratch_dir("build")
        (scratch / "app").mkdir()
        seal = CacheSeal(cache.root, scratch, lambda: cache.scratch_dir("seal"),
                         Reporter(quiet=True))

        def bare(runner: StepRunner) -> Callable[[], object]:
            return lambda: runner.run_step(
                ["true"], lambda command: run_tool(command, reporter, dict(os.environ)))

        results.append(paired("`true` (CacheSeal.step)", bare(Unsealed()),
                              bare(seal.step("bench")), args.runs))
        results.append(paired("`true` (CacheSeal.install_step)", bare(Unsealed()),
                              bare(seal.install_step("bench")), args.runs))

        app = work / "ranges"
        app.mkdir()
        (app / "requirements.txt").write_text("six>=1.16\n")
        config = {"PIP_INDEX_URL": LOCAL_INDEX.as_uri() + "/"} if (LOCAL_INDEX / "six").is_dir() \
            else {}
        plan = InstallPlan(name="pip", tool="uv", version="uv",
                           key_files=("requirements.txt",), resolves=True)

        def resolve() -> object:
            return resolve_plan(plan, app_dir=app, lock_file="requirements.txt",
                                python_version="3.12", config_vars=config, cache=cache,
                                reporter=reporter)

        results.append(paired("range resolution (`uv pip compile`)", seal_off(resolve),
                              resolve, args.runs))

        if shutil.which("npm"):
            node = work / "node"

            def node_build(sealed: bool, installs: bool = True) -> Callable[[], object]:
                def run() -> object:
                    shutil.rmtree(node, ignore_errors=True)
                    (node / "dep").mkdir(parents=True)
                    script = "node -e \"require('fs').appendFileSync('ran', 'x')\""
                    hooks = {"postinstall": script} if installs else {}
                    (node / "package.json").write_text(json.dumps({
                        "name": "a", "version": "1.0.0", "dependencies": {"dep": "file:dep"},
                        "scripts": {**hooks, "build": script}}))
                    (node / "dep" / "package.json").write_text(json.dumps({
                        "name": "dep", "version": "1.0.0", "scripts": hooks}))
                    (node / "package-lock.json").write_bytes(lock)
                    # Before: session 9's one `npm ci` sealed with npm's cache writable.
                    return run_node_build(node, {}, cache.root / "npm", reporter,
                                          runner=seal.step("npm", [cache.root / "npm"]),
                                          scripts=(seal.step("npm's scripts"),
                                                   scratch / "npm-scripts")
                                          if sealed else None)
                return run

            (node / "dep").mkdir(parents=True)
            (node / "package.json").write_text(json.dumps({
                "name": "a", "version": "1.0.0", "dependencies": {"dep": "file:dep"}}))
            (node / "dep" / "package.json").write_text('{"name": "dep", "version": "1.0.0"}')
            subprocess.run(["npm", "install", "--package-lock-only", "--ignore-scripts"],
                           cwd=node, check=True, capture_output=True)
            lock = (node / "package-lock.json").read_bytes()
            results.append(paired("Node step (npm ci + scripts, split)",
                                  node_build(False), node_build(True), args.runs))
            results.append(paired("Node step, no install scripts",
                                  node_build(False, False), node_build(True, False), args.runs))
        seal.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'step':42} {'before wall/cpu':>20} {'after wall/cpu':>20} "
          f"{'delta wall/cpu (ms)':>22}")
    for row in filter(None, results):
        u, s, d = row["unsealed"], row["sealed"], row["delta"]
        print(f"{row['step']:42} {u['wall']:8.3f}/{u['cpu']:.3f} s   "  # type: ignore[index]
              f"{s['wall']:8.3f}/{s['cpu']:.3f} s   "  # type: ignore[index]
              f"{d['wall'] * 1000:8.0f}/{d['cpu'] * 1000:.0f}")  # type: ignore[index]
    print("load after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
