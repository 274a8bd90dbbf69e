"""slugbuild and the Heroku Python buildpack on the same apps, build after build, same load.

For every app shape (SHAPES) and every run, each kind of build is made by both tools one
right after the other, the order swapped every run, so both see the same background load:

- cold: an empty cache;
- warm: the same cache again (a fresh copy of the app for the buildpack, as Heroku does);
- changed: a copy of the app with one more pinned requirement (app_changes.py), on the
  warm cache (Heroku discards its cache when the requirements change);
- loaded: two cold builds at once (each with its own cache), then two warm builds at once
  on those caches: the figures are each build's own wall time.

slugbuild is timed as a user runs it: the `slugbuild compile` process, wall clock. The
buildpack is timed as its `bin/compile` process (heroku_peer.py); making Heroku's slug
(`tar | gzip` of the build directory) is timed apart and reported beside it. The CPU time
(user + system) of each build's processes is recorded beside its wall time (not for the
loaded builds, which run at once): on a loaded machine a build's wall time is mostly
its wait for a core, and CPU time is the figure that stays put. The load average is
recorded at every step. Figures are printed and saved; nothing is asserted.

With a published runtime (run.py's `--published-runtime`: a loopback registry), each
shape's Python is published to it once before the timed runs (`slugbuild runtime
publish`, untimed, on a publisher cache of its own) and every slugbuild build is given
`--python-registry`: a cold build pulls the runtime layer instead of copying and
relocating a prefix, as the Heroku buildpack downloads its prebuilt runtime.
"""

from __future__ import annotations

import compileall
import concurrent.futures
import importlib.util
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from app_changes import add_requirement, extra_requirement_for
from heroku_peer import HerokuPeer, PeerFailed, PeerUnavailable, slug_of

REPO = Path(__file__).resolve().parent.parent
APPS = REPO / "fixtures" / "apps"
KINDS = ("cold", "warm", "changed", "loaded")
TOOLS = ("slugbuild", "heroku")
# The targets (slugbuild / Heroku), printed beside each ratio.
TARGETS = {"cold": 0.5, "warm": 0.3, "changed": 0.4, "loaded_cold": 0.5, "loaded_warm": 0.3}


def _unpin(app: Path) -> None:
    """`==X.Y.Z` -> `>=X.Y,<major+1`: the same app with version ranges (the resolver path)."""
    path = app / "requirements.txt"
    path.write_text(re.sub(r"==(\d+)\.(\d+)(\.\d+)*",
                           lambda m: f">={m[1]}.{m[2]},<{int(m[1]) + 1}", path.read_text()))


@dataclass(frozen=True)
class Shape:
    """An app shape: a fixture app, optionally changed first (`derive`)."""

    fixture: str
    what: str
    derive: Callable[[Path], None] | None = None


SHAPES: dict[str, Shape] = {
    "pinned-pip": Shape("flask-hello", "requirements.txt, all pinned"),
    "ranges": Shape("flask-hello", "requirements.txt with version ranges", _unpin),
    "sdist": Shape("pip-local-packages", "sdists compiled (crcmod, a local C extension)"),
    "pipenv": Shape("flask-pipenv", "Pipfile.lock"),
    "poetry": Shape("poetry-falcon", "poetry.lock"),
    "uv": Shape("uv-bottle", "uv.lock"),
    "django": Shape("django-tutorial", "Django, pinned, collectstatic"),
    "data-stack": Shape("django-data-stack", "Django + numpy, pandas, scipy, scikit-learn, "
                        "matplotlib, boto3, celery, ... (58 pinned)"),
}
# The shapes of the scaling table: small, Django, large.
SCALING = ("pinned-pip", "django", "data-stack")


def run(shapes: list[str], kinds: list[str], runs: int, peer_dir: Path | None,
        work: Path, progress: Callable[[dict[str, Any]], None] | None = None,
        slugbuild_src: Path | None = None, python_registry: str | None = None
        ) -> dict[str, Any]:
    """Bench every shape; returns the side-by-side results (printed as they come, and
    handed to `progress` after each shape, so a long bench stopped early keeps them).
    `slugbuild_src` builds with another checkout's src/ (e.g. a branch's) instead.
    `python_registry`: each shape's runtime published there first, and pulled by the
    slugbuild builds (module docstring)."""
    results: dict[str, Any] = {"peer": None, "shapes": {},
                               "slugbuild_src": str(slugbuild_src) if slugbuild_src else None,
                               "python_registry": python_registry,
                               "slugbuild_compiled": compile_slugbuild(slugbuild_src)}
    peer: HerokuPeer | None = None
    note = None
    if peer_dir is None:
        note = ("Heroku buildpack skipped: set HEROKU_PEER=../shared/heroku-peer "
                "(or --peer) to build side by side")
    else:
        try:
            peer = HerokuPeer(peer_dir, work / "peer").__enter__()
            results["peer"] = {"dir": str(peer_dir), "buildpack": peer.version}
        except PeerUnavailable as error:
            note = f"Heroku buildpack skipped: {error}"
    if note:
        print(note, flush=True)
        results["note"] = note
    try:
        for name in shapes:
            shape = SHAPES[name]
            print(f"== {name}: {shape.fixture} ({shape.what}), {runs} runs", flush=True)
            result = bench_shape(shape, kinds, runs, peer, work / name, slugbuild_src,
                                 python_registry, work / "publisher-cache")
            results["shapes"][name] = result
            print_shape(name, result)
            results["scaling"] = scaling(results["shapes"])
            if progress:
                progress(results)
    finally:
        if peer is not None:
            peer.__exit__(None, None, None)
    results["scaling"] = scaling(results["shapes"])
    print_scaling(results["scaling"])
    return results


def compile_slugbuild(src: Path | None) -> str:
    """Compile the benched slugbuild's modules, as installing it does (pip compiles a
    package's modules at install time); returns the package directory.

    A checkout or an exported src/ holds no pycs, and with PYTHONDONTWRITEBYTECODE set
    (as on this machine) Python never writes them: every `slugbuild compile` would then
    compile ~230 modules of its own before building, ~0.5 s of CPU no installed
    slugbuild pays. Python reads pycs whatever that variable says."""
    spec = None if src else importlib.util.find_spec("slugbuild")
    package = src / "slugbuild" if src else Path(spec.origin).parent  # type: ignore[union-attr]
    compileall.compile_dir(package, quiet=1)
    return str(package)


def bench_shape(shape: Shape, kinds: list[str], runs: int, peer: HerokuPeer | None,
                work: Path, slugbuild_src: Path | None = None,
                python_registry: str | None = None,
                publisher_cache: Path | None = None) -> dict[str, Any]:
    app = work / "app"
    shutil.copytree(APPS / shape.fixture, app, symlinks=True)
    if shape.derive:
        shape.derive(app)
    published = None
    if python_registry is not None:
        published = publish_runtime(app, python_registry, publisher_cache or work / "publisher",
                                    work / "publish.log", slugbuild_src)
    changed_app = work / "changed-app"
    shutil.copytree(app, changed_app, symlinks=True)
    extra = extra_requirement_for(app)
    changed_by = add_requirement(changed_app, work, extra) if "changed" in kinds else None
    tools = ["slugbuild"]
    peer_note = None
    if peer is not None:
        try:
            peer.prepare(app)
            tools.append("heroku")
        except PeerUnavailable as error:
            peer_note = f"Heroku buildpack cannot build this app here: {error}"
            print("  " + peer_note, flush=True)
    samples: dict[str, dict[str, list[float]]] = {t: {} for t in tools}
    cpu: dict[str, dict[str, list[float]]] = {t: {} for t in tools}
    loads: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    files: dict[str, int] = {}
    heroku_pack: list[float] = []
    failures: dict[str, str] = {}
    stages: dict[str, list[dict[str, float]]] = {}

    def record(tool: str, kind: str, seconds: float | None) -> None:
        if seconds is not None:
            samples[tool].setdefault(kind, []).append(seconds)

    for number in range(runs):
        order = tools if number % 2 == 0 else tools[::-1]
        root = work / f"run{number}"
        builders = {t: _Builder(t, app, root / t, peer, failures, slugbuild_src,
                                python_registry) for t in tools}
        for kind in ("cold", "warm", "changed"):
            if kind == "cold" and kind not in kinds and {"warm", "changed"} & set(kinds):
                # A warm (or changed) build follows a cold one on its cache: made, not timed.
                for tool in order:
                    builders[tool].build(kind, app)
                continue
            if kind not in kinds:
                continue
            if kind in kinds:
                loads.setdefault(kind, []).append(os.getloadavg()[0])
            for tool in order:
                seconds = builders[tool].build(kind, changed_app if kind == "changed" else app)
                if kind in kinds:
                    record(tool, kind, seconds)
                    if builders[tool].cpu is not None:
                        cpu[tool].setdefault(kind, []).append(builders[tool].cpu)
            if kind == "warm" and number == 0:
                for tool in order:
                    measured = builders[tool].measure()
                    if measured:
                        sizes[tool], files[tool] = measured[0], measured[1]
                        if tool == "heroku":
                            heroku_pack.append(measured[2])
        for kind, timings in builders["slugbuild"].stages.items():
            stages.setdefault(kind, []).append(timings)
        if "loaded" in kinds:
            pairs = {t: [_Builder(t, app, root / f"{t}-loaded{i}", peer, failures,
                                  slugbuild_src, python_registry) for i in (1, 2)]
                     for t in tools}
            for step in ("cold", "warm"):
                loads.setdefault(f"loaded_{step}", []).append(os.getloadavg()[0])
                for tool in order:
                    for seconds in _at_once(pairs[tool], step, app):
                        record(tool, f"loaded_{step}", seconds)
    medians = {t: {k: round(statistics.median(v), 2) for k, v in by_kind.items()}
               for t, by_kind in samples.items()}
    cpu_medians = {t: {k: round(statistics.median(v), 2) for k, v in by_kind.items()}
                   for t, by_kind in cpu.items()}
    ratios, cpu_ratios = {}, {}
    if "heroku" in medians:
        ratios = {k: round(v / medians["heroku"][k], 2) for k, v in medians["slugbuild"].items()
                  if medians["heroku"].get(k)}
        cpu_ratios = {k: round(v / cpu_medians["heroku"][k], 2)
                      for k, v in cpu_medians["slugbuild"].items()
                      if cpu_medians["heroku"].get(k)}
    return {"fixture": shape.fixture, "what": shape.what, "runs": runs,
            "changed_by": changed_by, "samples": samples, "medians": medians,
            "ratios": ratios, "cpu_samples": cpu, "cpu_medians": cpu_medians,
            "cpu_ratios": cpu_ratios,
            "load": {k: [round(x, 2) for x in v] for k, v in loads.items()},
            "slug_bytes": sizes, "python_files": files,
            "heroku_pack_seconds": heroku_pack[0] if heroku_pack else None,
            "peer_note": peer_note, "failures": failures, "published_runtime": published,
            "slugbuild_stages": {kind: {stage: round(statistics.median(
                t.get(stage, 0.0) for t in timings), 3) for stage in timings[0]}
                for kind, timings in stages.items() if timings and timings[0]}}


class _Builder:
    """One tool's builds of one app on one cache (cold, then warm, then changed)."""

    def __init__(self, tool: str, app: Path, root: Path, peer: HerokuPeer | None,
                 failures: dict[str, str], slugbuild_src: Path | None = None,
                 python_registry: str | None = None) -> None:
        self.tool, self.app, self.root, self.peer = tool, app, root, peer
        self.slugbuild_src = slugbuild_src
        self.python_registry = python_registry
        # slugbuild's own stage timings of each build made (its --json output).
        self.stages: dict[str, dict[str, float]] = {}
        self.failures = failures
        self.cache = root / "cache"
        self.last: Path | None = None
        # CPU seconds (user + system) of the last build's processes, when it ran alone.
        self.cpu: float | None = None

    def build(self, kind: str, app: Path, alone: bool = True) -> float | None:
        """Wall seconds of one build (None, and the reason kept, when it failed); its
        CPU seconds in ``cpu`` when it ran ``alone`` (the children's rusage would mix
        two builds at once)."""
        self.root.mkdir(parents=True, exist_ok=True)
        # Nothing left to write back from the step before (see run.py's _settle).
        os.sync()
        self.cpu = None
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        seconds = self._build(kind, app)
        if seconds is not None and alone:
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            self.cpu = round(after.ru_utime + after.ru_stime
                             - before.ru_utime - before.ru_stime, 3)
        return seconds

    def _build(self, kind: str, app: Path) -> float | None:
        try:
            if self.tool == "heroku":
                assert self.peer is not None
                self.last = self.root / f"build-{kind}"
                return self.peer.compile(app, self.last, self.cache,
                                         self.root / f"{kind}.log")
            self.last = self.root / f"{kind}.tgz"
            extra = (("--python-registry", self.python_registry)
                     if self.python_registry is not None else ())
            seconds, result = slugbuild_compile(app, self.last, self.cache,
                                                self.root / f"{kind}.log", self.slugbuild_src,
                                                extra)
            self.stages[kind] = result.get("timings") or {}
            return seconds
        except (PeerFailed, BuildFailed) as error:
            self.failures.setdefault(f"{self.tool} {kind}", str(error))
            print(f"  {self.tool} {kind} FAILED: {str(error).splitlines()[0]} (the log's "
                  "end is in the results)", flush=True)
            return None

    def measure(self) -> tuple[int, int, float] | None:
        """(slug bytes, files under .heroku/python, seconds to make Heroku's slug)."""
        if self.last is None or not self.last.exists():
            return None
        if self.tool == "heroku":
            size, seconds = slug_of(self.last, self.root / "heroku-slug.tgz")
            count = sum(len(f) for _, _, f in os.walk(self.last / ".heroku" / "python"))
            return size, count, seconds
        with tarfile.open(self.last) as tar:
            count = sum(1 for m in tar if not m.isdir() and "/.heroku/python/" in f"/{m.name}")
        return self.last.stat().st_size, count, 0.0


class BuildFailed(Exception):
    """A slugbuild build failed (the message holds the log's tail)."""


def publish_runtime(app: Path, reference: str, cache: Path, log: Path,
                    src: Path | None) -> dict[str, Any]:
    """Publish the Python `app` builds with (as `slugbuild plan` resolves it) to
    `reference`, untimed by the bench; what was published and how long it took."""
    env = {**os.environ, "PYTHONPATH": str(src)} if src else None
    planned = subprocess.run([sys.executable, "-m", "slugbuild", "plan", str(app), "--json",
                              "--cache-dir", str(cache)], capture_output=True, text=True,
                             env=env, check=True)
    version = json.loads(planned.stdout)["python"]["version"]
    start = time.perf_counter()
    with log.open("wb") as sink:
        done = subprocess.run([sys.executable, "-m", "slugbuild", "runtime", "publish",
                               reference, "--python", version, "--cache-dir", str(cache),
                               "--json"], stdout=subprocess.PIPE, stderr=sink, env=env)
    if done.returncode:
        raise BuildFailed(f"runtime publish failed; log {log}:\n  "
                          + log.read_text(errors="replace")[-2000:])
    published = {**json.loads(done.stdout), "seconds": round(time.perf_counter() - start, 2)}
    print(f"  published Python {version} to {reference} ({published['seconds']:.1f} s, "
          f"{published['sent']} bytes sent)", flush=True)
    return published


def slugbuild_compile(app: Path, out: Path, cache: Path, log: Path, src: Path | None,
                      extra: tuple[str, ...] = ()) -> tuple[float, dict[str, Any]]:
    """Wall seconds of `slugbuild compile` (with `extra` options), and its --json result
    (stage timings, the cache registry's bytes, the slug's sha256)."""
    command = [sys.executable, "-m", "slugbuild", "compile", str(app), "-o", str(out),
               "--cache-dir", str(cache), "--json", *extra]
    env = {**os.environ, "PYTHONPATH": str(src)} if src else None
    with log.open("wb") as sink:
        start = time.perf_counter()
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=sink,
                              stdin=subprocess.DEVNULL, env=env)
        seconds = time.perf_counter() - start
    if done.returncode:
        tail = log.read_text(errors="replace").strip().splitlines()[-40:]
        raise BuildFailed(f"exit {done.returncode}; log {log}:\n  " + "\n  ".join(tail))
    try:
        result = json.loads(done.stdout)
    except ValueError:
        result = {}
    return round(seconds, 3), result if isinstance(result, dict) else {}


def _at_once(pair: list[_Builder], kind: str, app: Path) -> list[float | None]:
    """Two builds started together; each one's own wall time."""
    with concurrent.futures.ThreadPoolExecutor(len(pair)) as pool:
        return list(pool.map(lambda b: b.build(kind, app, alone=False), pair))


def scaling(shapes: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the scaling table: time and size against installed files, per tool."""
    rows = []
    for name in SCALING:
        if name not in shapes:
            continue
        result = shapes[name]
        for tool, medians in result["medians"].items():
            if "cold" not in medians and "warm" not in medians:
                continue
            rows.append({"shape": name, "tool": tool,
                         "python_files": result["python_files"].get(tool),
                         "cold": medians.get("cold"), "warm": medians.get("warm"),
                         "slug_mb": round(result["slug_bytes"][tool] / 1e6, 1)
                         if tool in result["slug_bytes"] else None})
    return rows


def print_shape(name: str, result: dict[str, Any]) -> None:
    medians = result["medians"]
    print(f"{'kind':<13}{'slugbuild s':>12}{'heroku s':>10}{'ratio':>7}{'target':>8}"
          f"{'load (1 min)':>22}{'cpu s: slugbuild':>18}{'heroku':>8}{'ratio':>7}")
    for kind in ("cold", "warm", "changed", "loaded_cold", "loaded_warm"):
        ours = medians["slugbuild"].get(kind)
        if ours is None:
            continue
        theirs = medians.get("heroku", {}).get(kind)
        ratio = result["ratios"].get(kind)
        load = result["load"].get(kind, [])
        cpu = result.get("cpu_medians", {})
        print(f"{kind:<13}{ours:>12.2f}{_cell(theirs):>10}{_cell(ratio):>7}"
              f"{'<= ' + str(TARGETS[kind]):>8}{_load_range(load):>22}"
              f"{_cell(cpu.get('slugbuild', {}).get(kind)):>18}"
              f"{_cell(cpu.get('heroku', {}).get(kind)):>8}"
              f"{_cell(result.get('cpu_ratios', {}).get(kind)):>7}")
    sizes = result["slug_bytes"]
    if sizes:
        print("slug MB: " + ", ".join(f"{t} {b / 1e6:.1f}" for t, b in sizes.items())
              + (f" (Heroku's tar|gzip {result['heroku_pack_seconds']:.2f} s, not in its "
                 "time)" if result["heroku_pack_seconds"] else ""))
    for kind, timings in result["slugbuild_stages"].items():
        top = sorted(((v, k) for k, v in timings.items() if k != "total"), reverse=True)[:4]
        print(f"slugbuild {kind} stages: " + ", ".join(f"{k} {v:.2f}" for v, k in top))
    if result["changed_by"]:
        print("changed by:", result["changed_by"])
    for what, why in result["failures"].items():
        print(f"FAILED {what}: {why.splitlines()[0]}")


def print_scaling(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    print("\n== scaling: time and size against installed files (medians)")
    print(f"{'shape':<12}{'tool':<11}{'files':>8}{'cold s':>8}{'warm s':>8}{'slug MB':>9}")
    for row in rows:
        print(f"{row['shape']:<12}{row['tool']:<11}{_cell(row['python_files']):>8}"
              f"{_cell(row['cold']):>8}{_cell(row['warm']):>8}{_cell(row['slug_mb']):>9}")


def _cell(value: float | int | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _load_range(loads: list[float]) -> str:
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-"
