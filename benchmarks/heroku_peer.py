"""The Heroku Python buildpack as a side-by-side peer, driven one `bin/compile` at a time.

`HEROKU_PEER` (e.g. ../shared/heroku-peer) holds the buildpack (v351, `buildpack/`) and
`run-peer.sh`, which runs cold + warm compiles of one app. The bench needs finer steps
(alternating with slugbuild build by build, a "changed" build on a warm cache, two builds
at once), so this module drives `bin/compile` itself, the way run-peer.sh does:

- the runtime: run-peer.sh packages a local pyenv CPython into the archive layout the
  buildpack downloads (once per Python version, on a stand-in app, untimed); this module
  serves that mirror on 127.0.0.1 and points the buildpack copy's hard-coded
  `S3_BASE_URL` at it;
- uv: the buildpack downloads its pinned uv (requirements/uv.txt) from astral's release
  host, which this machine cannot reach; the same uv release is fetched as a wheel from
  PyPI, repacked in the release tarball's layout and served from the same mirror;
- the environment: `env -i` with HOME, LANG, PATH, STACK, TMPDIR, `PIP_CONFIG_FILE=/dev/null`
  (so /etc/pip.conf's local indexes cannot feed the build) and the CA variables; HOME is a
  new empty directory for each compile, as a Heroku build dyno's is (uv and Poetry keep
  their caches there; a "cold" build must not find the last compile's downloads);
- the build directory must not be under /tmp: there the buildpack puts uv's cache at
  /tmp/uv-cache, which on Heroku is the build's own but here outlives every compile
  (run.py's side-by-side section works elsewhere, see there);
- `/app`: the buildpack links `/app/.heroku/python` to the build directory and puts it on
  PATH, so two builds at once would share it. Each compile runs in a mount namespace of its
  own with a private tmpfs on /app (needs root; /app is created as an empty mount point if
  absent, and removed again at the end).

Only PyPI is reached over the network (by pip and uv inside the buildpack, and for the uv
wheel); the runtime comes over loopback.
"""

from __future__ import annotations

import fcntl
import functools
import http.server
import io
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
import zipfile
from pathlib import Path
from types import TracebackType

STACK = "heroku-24"
_VERSION_FILES = (".python-version", "runtime.txt")
_CA_AND_PROXY = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                 "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")
_UV_RELEASES = "https://releases.astral.sh/github/uv/releases/download"


class PeerUnavailable(Exception):
    """The peer cannot run here, or cannot build this app (the reason is the message)."""


class HerokuPeer:
    """One buildpack copy, one loopback mirror, and `compile` for each timed build."""

    def __init__(self, peer_dir: Path, work: Path, runtime_work: Path | None = None) -> None:
        self.peer_dir = peer_dir.resolve()
        self.work = work
        # run-peer.sh's own work directory, whose mirror/ keeps the runtime archives it
        # made (stamped with their source, so reusing them across benches is safe).
        default = Path.home() / ".cache" / "slugbuild-bench" / "heroku-peer"
        self.runtime_work = runtime_work or Path(
            os.environ.get("SLUGBUILD_BENCH_PEER_CACHE", default))
        self.mirror = self.runtime_work / "mirror"
        self.buildpack = work / "buildpack"
        self._prepared: dict[str, str | None] = {}
        self._server: http.server.ThreadingHTTPServer | None = None
        self._made_app_dir = False

    def __enter__(self) -> HerokuPeer:
        source = self.peer_dir / "buildpack"
        for needed in (self.peer_dir / "run-peer.sh", source / "bin" / "compile",
                       source / "lib" / "python.sh"):
            if not needed.exists():
                raise PeerUnavailable(f"{needed} is missing: HEROKU_PEER must name the "
                                      "heroku-peer directory (run-peer.sh, buildpack/)")
        if os.geteuid() != 0 or not shutil.which("unshare"):
            raise PeerUnavailable("the buildpack writes /app/.heroku; the bench runs each "
                                  "compile in a mount namespace of its own, which needs root")
        self.mirror.mkdir(parents=True, exist_ok=True)
        handler = functools.partial(_QuietHandler, directory=str(self.mirror))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self._copy_buildpack(source, f"http://127.0.0.1:{self._server.server_address[1]}")
        if not os.path.lexists("/app"):
            os.mkdir("/app")
            self._made_app_dir = True
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._made_app_dir:
            try:
                os.rmdir("/app")
            except OSError:
                pass

    @property
    def version(self) -> str:
        """The buildpack's release, from its changelog."""
        changelog = self.peer_dir / "buildpack" / "CHANGELOG.md"
        match = re.search(r"^## \[(v\d+)\]", changelog.read_text() if changelog.is_file()
                          else "", re.M)
        return match.group(1) if match else "unknown"

    def prepare(self, app: Path) -> None:
        """Make the runtime archive the app's Python version needs (untimed, once per version).

        Raises PeerUnavailable when the buildpack would not build the app here.
        """
        key = "|".join((app / f).read_text().strip() if (app / f).is_file() else ""
                       for f in _VERSION_FILES)
        if key not in self._prepared:
            self._prepared[key] = self._make_runtime(app)
        reason = self._prepared[key]
        if reason:
            raise PeerUnavailable(reason)

    def compile(self, app: Path, build_dir: Path, cache_dir: Path, log: Path) -> float:
        """Copy the app into a fresh build directory and time `bin/compile` on it (wall seconds)."""
        if build_dir.exists():
            shutil.rmtree(build_dir)
        shutil.copytree(app, build_dir, symlinks=True,
                        ignore=shutil.ignore_patterns(".git", ".hg", ".svn"))
        cache_dir.mkdir(parents=True, exist_ok=True)
        env_dir = build_dir.parent / f"{build_dir.name}.env"
        env_dir.mkdir(exist_ok=True)
        (self.work / "tmp").mkdir(exist_ok=True)
        # A HOME of its own, empty, as on Heroku (HOME=/app on a fresh build dyno): the
        # caches tools keep there (uv's, Poetry's) must not carry over from the last compile.
        home = build_dir.parent / f"{build_dir.name}.home"
        if home.exists():
            shutil.rmtree(home)
        home.mkdir()
        env = [f"HOME={home}", "LANG=C.UTF-8",
               "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               f"STACK={STACK}", "PIP_CONFIG_FILE=/dev/null", f"TMPDIR={self.work / 'tmp'}"]
        env += [f"{name}={os.environ[name]}" for name in _CA_AND_PROXY if os.environ.get(name)]
        if any(os.environ.get(n) for n in ("http_proxy", "https_proxy", "HTTP_PROXY",
                                           "HTTPS_PROXY")):
            env += ["no_proxy=127.0.0.1,localhost", "NO_PROXY=127.0.0.1,localhost"]
        # A private /app for this compile alone; `exec` so the timed process is the compile.
        script = 'mount -t tmpfs -o size=1m,mode=755 tmpfs /app && exec env -i "$@"'
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                   *env, "./bin/compile", str(build_dir), str(cache_dir), str(env_dir)]
        with log.open("wb") as out:
            start = time.perf_counter()
            done = subprocess.run(command, cwd=self.buildpack, stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            seconds = time.perf_counter() - start
        if done.returncode:
            # The log goes with the bench's scratch: the reason must be in the results.
            tail = log.read_text(errors="replace").strip().splitlines()[-40:]
            raise PeerFailed(f"bin/compile exited {done.returncode}; log {log}:\n  "
                             + "\n  ".join(tail))
        return round(seconds, 3)

    def _make_runtime(self, app: Path) -> str | None:
        """Have run-peer.sh package the runtime into the mirror, on a stand-in app that holds
        only the app's version files (so its own compiles are short); None when it worked."""
        stand_in = self.work / "stand-in"
        if stand_in.exists():
            shutil.rmtree(stand_in)
        stand_in.mkdir(parents=True)
        for name in _VERSION_FILES:
            if (app / name).is_file():
                shutil.copy2(app / name, stand_in / name)
        (stand_in / "requirements.txt").write_text("")
        log = self.work / "runtime.log"
        self.runtime_work.mkdir(parents=True, exist_ok=True)
        # run-peer.sh's work directory is shared by benches run at the same time: one at a time.
        with (self.runtime_work / ".lock").open("w") as lock, log.open("wb") as out:
            fcntl.flock(lock, fcntl.LOCK_EX)
            done = subprocess.run(
                ["bash", str(self.peer_dir / "run-peer.sh"), "--stack", STACK, "--work",
                 str(self.runtime_work), str(stand_in), str(self.peer_dir / "buildpack")],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if done.returncode:
            errors = [line for line in log.read_text(errors="replace").splitlines()
                      if "error:" in line]
            return (errors[-1].split("error:", 1)[1].strip() if errors
                    else f"run-peer.sh failed (log {log})")
        return None

    def _copy_buildpack(self, source: Path, mirror_url: str) -> None:
        if self.buildpack.exists():
            shutil.rmtree(self.buildpack)
        for part in ("bin", "lib", "requirements", "vendor"):
            shutil.copytree(source / part, self.buildpack / part, symlinks=True)
        python_sh = self.buildpack / "lib" / "python.sh"
        text, count = re.subn(r"(?m)^S3_BASE_URL=.*$", f'S3_BASE_URL="{mirror_url}"',
                              python_sh.read_text())
        if count != 1:
            raise PeerUnavailable(f"{python_sh}: no S3_BASE_URL line to point at the mirror")
        python_sh.write_text(text)
        uv_sh = self.buildpack / "lib" / "uv.sh"
        if uv_sh.is_file() and _UV_RELEASES in uv_sh.read_text():
            uv_sh.write_text(uv_sh.read_text().replace(_UV_RELEASES, f"{mirror_url}/uv"))
            self._mirror_uv()

    def _mirror_uv(self) -> None:
        """The buildpack's pinned uv, from its PyPI wheel, in the release tarball's layout."""
        pin = (self.buildpack / "requirements" / "uv.txt").read_text()
        match = re.search(r"^uv==(\S+)", pin, re.M)
        if not match:
            return
        version = match.group(1)
        arch = os.uname().machine
        target = self.mirror / "uv" / version / f"uv-{arch}-unknown-linux-gnu.tar.gz"
        if target.is_file():
            return
        wheels = self.runtime_work / "uv-wheel"
        subprocess.run(
            ["pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
             "--platform", f"manylinux_2_17_{arch}", "--index-url", "https://pypi.org/simple",
             "--dest", str(wheels), f"uv=={version}"],
            check=True, env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
        wheel = next(wheels.glob(f"uv-{version}-*.whl"))
        target.parent.mkdir(parents=True, exist_ok=True)
        folder = f"uv-{arch}-unknown-linux-gnu"
        partial = f"{target}.{os.getpid()}"
        with zipfile.ZipFile(wheel) as zipped, tarfile.open(partial, "w:gz") as tar:
            for binary in ("uv", "uvx"):
                member = f"uv-{version}.data/scripts/{binary}"
                data = zipped.read(member)
                info = tarfile.TarInfo(f"{folder}/{binary}")
                info.size, info.mode = len(data), 0o755
                tar.addfile(info, io.BytesIO(data))
        os.replace(partial, target)


class PeerFailed(Exception):
    """A peer compile failed (the message holds the log's tail)."""


def slug_of(build_dir: Path, out: Path) -> tuple[int, float]:
    """Heroku's slug of a compiled build directory: `tar | gzip` of it (size, seconds)."""
    start = time.perf_counter()
    subprocess.run(["bash", "-c", 'tar -C "$1" -cf - . | gzip -6 > "$2"', "_",
                    str(build_dir), str(out)], check=True)
    return out.stat().st_size, round(time.perf_counter() - start, 3)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """The mirror's requests are not the bench's output."""
