"""`make bench`: build times and slug sizes against their floors and the Heroku buildpack.

Sections (--sections, default all, in this order; SECTIONS at the end of this file):
floors (below), fresh (paired_fresh.py: a fresh runner with a warm cache registry
against a local warm build and a cold one, each a `slugbuild compile` process timed by
wall clock and CPU, alternating; the Django fixture and a lock-file one unless --apps
names others) and side-by-side (side_by_side.py: every app shape built by slugbuild and
by the Heroku Python buildpack when HEROKU_PEER names ../shared/heroku-peer, alternating,
cold, warm, changed and two at once, plus the scaling table).

floors: for each fixture app (all of fixtures/apps/ unless --apps names some):
- cold: a build with an empty cache (runtime prepared, packages downloaded);
- warm: the same build again (layers restored);
- changed: a warm build after one more pinned requirement (`app_changes.py`: how
  for each package manager);
- floor_pack: `tar -c | gzip -4` (the slug's level) of the final slug tree (what
  packing alone costs);
- floor_venv: `python -m venv && pip install -r requirements.txt --no-cache-dir`
  (what a plain install costs; for a lock file app, the exact packages its
  slug holds, pinned with ==).
- fresh_registry: a build on an empty cache (a fresh CI runner) with a cache
  registry the cold build pushed to (a Distribution registry on loopback, when
  `docker-registry` is installed: its layers, collectstatic's output, the
  passed import check; the cold figure leaves the push out), with the bytes
  pulled and pushed (cache_registry.py).
Medians of --runs runs (default 5) and the ratios the targets are stated in:
warm <= 1.3 x floor_pack, cold <= 0.6 x floor_venv, fresh_registry <= 1.5 x
warm and <= 0.3 x cold. Sizes: the slug, and the
same app packed with an untrimmed runtime plus pip/setuptools (what Heroku's
buildpack ships). Results of every section go to stdout and benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable

import paired_fresh
import side_by_side
from app_changes import add_requirement, clean_env, extra_requirement_for
from image_bench import bench_image  # benchmarks/ is on sys.path
from loopback import loopback_registry

import slugbuild
from slugbuild.log import Reporter
from slugbuild.pack import DEFAULT_LEVEL

REPO = Path(__file__).resolve().parent.parent
APPS = REPO / "fixtures" / "apps"

# How each app's "changed" build changed it (printed with the results).
changes: dict[str, str] = {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--apps", nargs="*",
                        help="fixture app names (default: all); also narrows --shapes to "
                        "the shapes built from these apps")
    parser.add_argument("--shapes", nargs="*", choices=side_by_side.SHAPES,
                        help="app shapes built side by side with Heroku (default: all)")
    parser.add_argument("--kinds", nargs="*", choices=side_by_side.KINDS,
                        default=list(side_by_side.KINDS), help="side-by-side builds to make")
    parser.add_argument("--sections", nargs="*", choices=SECTIONS, default=list(SECTIONS),
                        help="what to measure (default: everything)")
    parser.add_argument("--peer", type=Path, default=os.environ.get("HEROKU_PEER") or None,
                        help="the heroku-peer directory (default: $HEROKU_PEER); without "
                        "it the Heroku side is skipped with a note")
    parser.add_argument("--slugbuild-src", type=Path,
                        help="side by side and fresh: build with this src/ (another "
                        "branch's export) instead of the installed slugbuild")
    parser.add_argument("--published-runtime", action="store_true",
                        help="side by side: publish each shape's Python to a loopback "
                        "registry first (slugbuild runtime publish) and build with "
                        "--python-registry (cold builds pull the runtime layer)")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results.json")
    args = parser.parse_args()
    # A stopped bench still stops its servers and puts /app back (heroku_peer.py).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: dict = {"runs": args.runs, "machine": _machine()}
    # Every run's files are kept until the end: see _settle.
    with tempfile.TemporaryDirectory(prefix="slugbuild-bench-") as keep:
        for section in args.sections:
            SECTIONS[section](args, Path(keep) / section, results)
        # Saved before the runs' files go (deleting a large bench's trees takes minutes).
        args.output.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nsaved {args.output}", flush=True)
    return 0


def floors_section(args: argparse.Namespace, keep: Path, results: dict) -> None:
    """Each app against its floors (`tar | gzip`, venv+pip) and a fresh runner with a
    cache registry."""
    global _REGISTRY
    names = args.apps or sorted(p.name for p in APPS.iterdir() if p.is_dir())
    results["apps"] = {}
    keep.mkdir(parents=True, exist_ok=True)
    with loopback_registry(keep) as _REGISTRY:
        for name in names:
            print(f"== {name} ({args.runs} runs)", flush=True)
            results["apps"][name] = bench_app(APPS / name, args.runs, keep / name)
            _print_app(name, results["apps"][name])


# Issue 17's apps: the Django fixture and one lock-file fixture.
FRESH_APPS = ("django-tutorial", "flask-pipenv")


def fresh_section(args: argparse.Namespace, keep: Path, results: dict) -> None:
    """A fresh runner against a local warm build and a cold one (paired_fresh.py)."""
    apps = [APPS / name for name in (args.apps or FRESH_APPS)]
    print(f"\n==== a fresh runner with a warm cache registry: "
          f"{', '.join(a.name for a in apps)}", flush=True)
    results["fresh_runner"] = paired_fresh.run_apps(
        apps, {"slugbuild": args.slugbuild_src}, args.runs, cold_runs=1)
    args.output.write_text(json.dumps(results, indent=2) + "\n")


def side_by_side_section(args: argparse.Namespace, keep: Path, results: dict) -> None:
    """Each app shape built by slugbuild and by the Heroku buildpack, alternating."""
    shapes = args.shapes or [name for name, shape in side_by_side.SHAPES.items()
                             if not args.apps or shape.fixture in args.apps]
    print(f"\n==== side by side with the Heroku buildpack: {', '.join(shapes)}", flush=True)

    def progress(so_far: dict) -> None:
        results["side_by_side"] = so_far
        args.output.write_text(json.dumps(results, indent=2) + "\n")

    # Not under /tmp when the bench's files are there: the buildpack keeps uv's cache in
    # /tmp/uv-cache when the build directory is under /tmp (on Heroku /tmp is the build's
    # own and empty; here it outlives every compile, so each "cold" uv build would find
    # the last one's downloads). Elsewhere uv's cache goes to the compile's own HOME
    # (heroku_peer.py), on the same file system, so it hard-links as on Heroku.
    outside = "/var/tmp" if keep.resolve().is_relative_to("/tmp") and \
        os.path.isdir("/var/tmp") else None
    with tempfile.TemporaryDirectory(prefix="slugbuild-bench-", dir=outside) as work, \
            loopback_registry(Path(work)) if args.published_runtime \
            else contextlib.nullcontext() as registry:
        published = f"{registry}/published-runtimes" if registry else None
        if args.published_runtime and published is None:
            print("(no loopback registry: built without a published runtime)", flush=True)
        results["side_by_side"] = side_by_side.run(shapes, args.kinds, args.runs, args.peer,
                                                   Path(work), progress, args.slugbuild_src,
                                                   published)
        args.output.write_text(json.dumps(results, indent=2) + "\n")


def bench_app(app: Path, runs: int, work_root: Path) -> dict:
    samples: dict[str, list[float]] = {k: [] for k in
                                       ("cold", "warm", "changed", "floor_pack", "floor_venv",
                                        "fresh_registry")}
    stages: dict[str, list[dict]] = {"cold": [], "warm": []}
    sizes: dict[str, int] = {}
    for run in range(runs):
        # In its own directory, deleted with all the others at the end (_settle).
        tmp_path = work_root / str(run)
        tmp_path.mkdir(parents=True)
        work = shutil.copytree(app, tmp_path / "app")
        cache = tmp_path / "cache"
        # With a registry, the cold runner pushes what it made (its layers, collectstatic's
        # output, the import check) as a CI runner would; the push is not counted.
        reference = f"{_REGISTRY}/bench/{app.name}-{run}" if _REGISTRY else None
        cold = _build(work, tmp_path / "cold.tgz", cache, reference)
        samples["cold"].append(round(cold.timings["total"]
                                     - cold.timings.get("cache_registry_push", 0.0), 3))
        stages["cold"].append(cold.timings)
        warm = _build(work, tmp_path / "warm.tgz", cache)
        samples["warm"].append(warm.timings["total"])
        stages["warm"].append(warm.timings)
        sizes["slug"] = warm.size
        if reference:
            fresh, moved = _fresh_runner(work, tmp_path, cold, reference)
            samples["fresh_registry"].append(fresh)
            sizes.update(moved)
        requirements = work / "requirements.txt"
        extra = extra_requirement_for(work)
        changes[app.name] = add_requirement(work, tmp_path, extra)
        changed = _build(work, tmp_path / "changed.tgz", cache)
        samples["changed"].append(changed.timings["total"])
        if requirements.is_file():
            requirements.write_text(requirements.read_text().replace(
                extra + "\n", ""))
        tree = tmp_path / "tree"
        with tarfile.open(warm.slug_path) as tar:
            tar.extractall(tree, **({"filter": "tar"} if hasattr(tarfile, "tar_filter")
                                    else {}))
        # At the slug's own level, so that only the packing differs.
        samples["floor_pack"].append(_time_shell(f"tar -cf - -C {tree} . | "
                                                 f"gzip -{DEFAULT_LEVEL} "
                                                 f"> {tmp_path / 'floor.tgz'}"))
        # A lock file app's floor installs the exact set its slug holds, pinned.
        if not requirements.is_file():
            requirements = tmp_path / "pinned-requirements.txt"
            requirements.write_text("".join(f"{p['name']}=={p['version']}\n"
                                            for p in warm.packages))
        python = _python_for(warm.runtime["resolved"])
        samples["floor_venv"].append(_time_shell(
            f"{python} -m venv {tmp_path / 'venv'} && "
            f"{tmp_path / 'venv/bin/pip'} install -q --no-cache-dir "
            f"--disable-pip-version-check -r {requirements}",
            env={**clean_env(), "PIP_CONFIG_FILE": os.devnull}))
        if "heroku_like" not in sizes:
            sizes["heroku_like"] = _heroku_like_size(tree, warm.runtime["resolved"], tmp_path)
        if run == 0:  # image build and push figures (benchmarks/image_bench.py), once
            image = bench_image(work, cache, tmp_path / "image")
    medians = {k: round(statistics.median(v), 3) for k, v in samples.items() if v}
    ratios = {}
    if "floor_pack" in medians:
        ratios["warm_vs_pack_floor"] = round(medians["warm"] / medians["floor_pack"], 2)
    if "floor_venv" in medians:
        ratios["cold_vs_venv_pip"] = round(medians["cold"] / medians["floor_venv"], 2)
    if "fresh_registry" in medians:
        ratios["fresh_registry_vs_warm"] = round(medians["fresh_registry"] / medians["warm"], 2)
        ratios["fresh_registry_vs_cold"] = round(medians["fresh_registry"] / medians["cold"], 2)
    stage_medians = {
        kind: {stage: round(statistics.median(t[stage] for t in timings), 3)
               for stage in timings[0]}
        for kind, timings in stages.items()
    }
    return {"median_seconds": medians, "samples": samples, "ratios": ratios,
            "stage_medians": stage_medians, "sizes": sizes,
            "changed_by": changes.get(app.name), "image": image}


def _settle() -> None:
    """Give each measured step the same disk: nothing left to write back.

    This machine's ext4 has no journal, so every new inode is checked against
    recently deleted ones (the kernel's ``recently_deleted``: a minute, six if
    their inode table is not yet written back). Creating files right after a
    big deletion costs up to 2.5 times as much, which would charge whichever
    step follows one: the runs' directories are therefore deleted only at the
    end, and the disk is synced before each step.
    """
    os.sync()


def _build(app: Path, out: Path, cache: Path, registry: str | None = None):
    _settle()
    return slugbuild.compile_app(app, out, cache_dir=cache, reporter=Reporter(quiet=True),
                                 cache_registry=registry)


# docker://HOST:PORT of the loopback registry main() starts (None: not installed).
_REGISTRY: str | None = None


def _fresh_runner(app: Path, tmp_path: Path, cold, reference: str
                  ) -> tuple[float, dict[str, int]]:
    """A build on an empty cache with the registry the cold build pushed to; its
    seconds and the bytes moved each way."""
    fresh = _build(app, tmp_path / "fresh.tgz", tmp_path / "fresh-cache", reference)
    assert fresh.cache_registry and not fresh.cache_registry["failed"], fresh.cache_registry
    assert fresh.sha256 == cold.sha256, "a fresh runner's slug differs from the cold one's"
    return fresh.timings["total"], {"registry_bytes_pushed": cold.cache_registry["bytes_sent"],
                                    "registry_bytes_pulled":
                                        fresh.cache_registry["bytes_received"]}


def _time_shell(command: str, env: dict | None = None) -> float:
    _settle()
    start = time.perf_counter()
    subprocess.run(["bash", "-c", command], check=True, env=env, stdout=subprocess.DEVNULL)
    return round(time.perf_counter() - start, 3)


def _python_for(version: str) -> str:
    from slugbuild.runtime.local import LocalInterpreterSource

    for runtime in LocalInterpreterSource().runtimes():
        if runtime.version == version:
            return str(runtime.prefix / "bin" / runtime.python_name)
    return sys.executable


def _heroku_like_size(tree: Path, version: str, tmp_path: Path) -> int:
    """The slug with the untrimmed local prefix and pip/setuptools, as Heroku ships it."""
    from slugbuild.runtime.local import LocalInterpreterSource

    runtime = next(r for r in LocalInterpreterSource().runtimes() if r.version == version)
    heroku_tree = tmp_path / "heroku-tree"
    shutil.copytree(tree, heroku_tree, symlinks=True)
    site = f"lib/{runtime.python_name}/site-packages"
    installed = heroku_tree / ".heroku" / "python" / site
    packages = tmp_path / "packages"
    shutil.copytree(installed, packages, symlinks=True)
    shutil.rmtree(heroku_tree / ".heroku" / "python")
    # The whole local prefix: its stdlib untrimmed, and the pip it ships in site-packages.
    shutil.copytree(runtime.prefix, heroku_tree / ".heroku" / "python", symlinks=True)
    shutil.copytree(packages, heroku_tree / ".heroku" / "python" / site, symlinks=True,
                    dirs_exist_ok=True)
    target = tmp_path / "heroku-like.tgz"
    subprocess.run(["bash", "-c", f"tar -cf - -C {heroku_tree} . | gzip -6 > {target}"],
                   check=True)
    return target.stat().st_size


def _machine() -> dict:
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0],
            "slugbuild": slugbuild.__version__}


def _print_app(name: str, result: dict) -> None:
    medians = result["median_seconds"]
    print(f"{'measure':<14}{'median s':>10}")
    for key, value in medians.items():
        print(f"{key:<14}{value:>10.2f}")
    for key, value in result["ratios"].items():
        target = {"warm_vs_pack_floor": 1.3, "cold_vs_venv_pip": 0.6,
                  "fresh_registry_vs_warm": 1.5, "fresh_registry_vs_cold": 0.3}[key]
        verdict = "meets" if value <= target else "misses"
        print(f"{key:<22}{value:>6.2f}  (target <= {target}: {verdict})")
    sizes = result["sizes"]
    if "heroku_like" in sizes:
        print(f"slug size {sizes['slug'] / 1e6:.1f} MB vs heroku-like "
              f"{sizes['heroku_like'] / 1e6:.1f} MB")
    if "registry_bytes_pulled" in sizes:
        print(f"cache registry: {sizes['registry_bytes_pushed'] / 1e6:.1f} MB pushed by the "
              f"cold runner, {sizes['registry_bytes_pulled'] / 1e6:.1f} MB pulled by a fresh one")
    print("changed by:", result["changed_by"])
    image = result["image"]
    print(f"image: cold push {image['cold_push_seconds']:.2f} s, warm (app layer only) "
          f"{image['warm_push_seconds']:.2f} s, warm push uploaded "
          f"{image['warm_blobs_uploaded']} blob(s), {image['warm_bytes_uploaded'] / 1e3:.1f} kB "
          f"of a {image['image_bytes'] / 1e6:.1f} MB image")
    print("warm stages:", result["stage_medians"]["warm"])


# The bench's sections, in the order they run; a new measurement adds itself here.
SECTIONS: dict[str, Callable[[argparse.Namespace, Path, dict], None]] = {
    "floors": floors_section,
    "fresh": fresh_section,
    "side-by-side": side_by_side_section,
}


if __name__ == "__main__":
    sys.exit(main())
