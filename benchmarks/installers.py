"""pip vs uv: install the same pinned package set into a fresh copy of a runtime.

For each fixture app's requirements.txt (resolved by both installers, as
`pip install -r` does) and for each installer, the set is installed RUNS
times into a fresh copy of the slug runtime. "warm" runs share one download
cache (what a CI machine with a cache sees); "cold" runs start from an empty
cache each time (network included). Prints a table of medians.

    python benchmarks/installers.py [--runs 5] [--cold-runs 1] [APP ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from slugbuild import compile_app  # noqa: E402
from slugbuild.installers.common import DEFAULT_INDEX_URL, trusted_ca_bundle  # noqa: E402
from slugbuild.installers.uv import uv_binary  # noqa: E402
from slugbuild.log import Reporter  # noqa: E402
from slugbuild.proc import clean_env  # noqa: E402

DEFAULT_APPS = ("fastapi-uvicorn", "django-tutorial")


def pip_command(python: Path, requirements: Path, cache: Path) -> tuple[list[str], dict]:
    argv = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-input",
            "--disable-pip-version-check", "--no-compile", "--progress-bar", "off",
            "--cache-dir", str(cache), "--index-url", DEFAULT_INDEX_URL,
            "--cert", trusted_ca_bundle() or "", "-r", str(requirements)]
    return argv, clean_env({"PIP_CONFIG_FILE": os.devnull})


def uv_command(python: Path, requirements: Path, cache: Path) -> tuple[list[str], dict]:
    argv = [uv_binary(), "pip", "install", "--python", str(python), "--link-mode", "copy",
            "--index-url", DEFAULT_INDEX_URL, "-r", str(requirements)]
    env = clean_env({"UV_NO_CONFIG": "1", "UV_CACHE_DIR": str(cache),
                     "SSL_CERT_FILE": trusted_ca_bundle() or ""})
    return argv, env


INSTALLERS = {"pip": pip_command, "uv": uv_command}


def runtime_tree(app: Path, cache_dir: Path) -> tuple[Path, str]:
    """Build the app once so its runtime layer is in the cache; return that layer."""
    out = cache_dir.parent / "bench-slug.tgz"
    result = compile_app(app, out, cache_dir=cache_dir, reporter=Reporter(quiet=True))
    name = result.metadata["runtime"]["resolved"]
    python_name = "python" + ".".join(name.split(".")[:2])
    layers = sorted((cache_dir / "runtimes").glob(f"cpython-{name}-*/tree"))
    return layers[-1], python_name


def time_install(installer: str, base: Path, python_name: str, requirements: Path,
                 download_cache: Path) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        home = Path(tmp) / "python"
        shutil.copytree(base, home, symlinks=True)
        argv, env = INSTALLERS[installer](home / "bin" / python_name, requirements,
                                          download_cache)
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, cwd=requirements.parent)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("apps", nargs="*", default=list(DEFAULT_APPS))
    parser.add_argument("--runs", type=int, default=5, help="warm runs per installer")
    parser.add_argument("--cold-runs", type=int, default=1, help="cold runs per installer")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="slugbuild-bench-") as tmp:
        work = Path(tmp)
        for app_name in args.apps:
            app = REPO / "fixtures" / "apps" / app_name
            base, python_name = runtime_tree(app, work / "cache")
            requirements = app / "requirements.txt"
            count = sum(1 for line in requirements.read_text().splitlines()
                        if "==" in line and not line.lstrip().startswith("#"))
            for installer in INSTALLERS:
                cold = []
                for run in range(args.cold_runs):
                    cold.append(time_install(installer, base, python_name, requirements,
                                             work / f"cold-{installer}-{app_name}-{run}"))
                warm_cache = work / f"warm-{installer}-{app_name}"
                time_install(installer, base, python_name, requirements, warm_cache)  # fill
                warm = [time_install(installer, base, python_name, requirements, warm_cache)
                        for _ in range(args.runs)]
                rows.append((app_name, count, installer,
                             statistics.median(cold) if cold else float("nan"), len(cold),
                             statistics.median(warm), len(warm)))
    print(f"{'app':<18} {'pins':>4} {'installer':<9} {'cold median s':>14} {'n':>2} "
          f"{'warm median s':>14} {'n':>2}")
    for app_name, count, installer, cold, n_cold, warm, n_warm in rows:
        print(f"{app_name:<18} {count:>4} {installer:<9} {cold:>14.2f} {n_cold:>2} "
              f"{warm:>14.2f} {n_warm:>2}")
    by_key = {(r[0], r[2]): r for r in rows}
    for app_name in args.apps:
        pip_row, uv_row = by_key[(app_name, "pip")], by_key[(app_name, "uv")]
        print(f"{app_name}: uv is {pip_row[5] / uv_row[5]:.1f}x faster warm, "
              f"{pip_row[3] / uv_row[3]:.1f}x cold")


if __name__ == "__main__":
    main()
