"""Hostile inputs: the staged tree, outputs, bounded reading of slugs, timeouts, signals.

Every refusal is checked the same way (``assert_refused``): the catalogue
error's title, a non-zero exit, no traceback, no temporary directory left and
no slug written. Memory and CPU bounds are checked with resource limits on a
subprocess (``limited``), never by timing.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from slugbuild import compile_app, errors
from slugbuild.hooks import run_hook
from slugbuild.log import Reporter
from slugbuild.proc import build_limits

from ..helpers import (
    assert_refused,
    cli,
    default_sigint,
    limited,
    make_app,
    make_buildpack,
    run_cli,
)


def quiet_env(tmp: Path, **extra: str) -> dict:
    """The host environment with a private TMPDIR (to see what is left in it)."""
    tmp.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmp), **extra}


def tarball(path: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def file_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, read without holding them."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


# --- (B) outputs and the build tree ------------------------------------------------------

def test_cache_and_outputs_inside_the_app_stay_out_of_the_slug(tmp_path):
    """`cd app && slugbuild compile .` twice, cache under the app (GitLab CI's
    layout): the same slug, holding neither the cache nor the outputs."""
    pack = make_buildpack(tmp_path / "bp", 'echo "-----> nothing to do"\n')
    app = make_app(tmp_path / "app", {"app.txt": "mine\n",
                                      # a foreign cache (CACHEDIR.TAG) and a partial output
                                      "other-cache/CACHEDIR.TAG":
                                          "Signature: 8a477f597d28d172789f06886806bc55\n",
                                      "other-cache/tmp/secret": "SECRET=1\n",
                                      ".other.tgz.123.partial": "half a slug"})
    env = quiet_env(tmp_path / "tmp")
    digests = []
    for _ in range(2):
        result = limited(cli("compile", ".", "--buildpack", pack, "--cache-dir", ".cache",
                             "--json"), cwd=app, env=env)
        assert result.returncode == 0, result.stderr
        digests.append(json.loads(result.stdout)["sha256"])
    assert digests[0] == digests[1]
    with tarfile.open(app / "slug.tgz") as tar:
        names = set(tar.getnames())
    assert "./app.txt" in names
    leaked = [n for n in names if n.startswith(("./.cache", "./other-cache", "./slug"))
              or n.endswith(".partial")]
    assert leaked == []


def test_cache_dir_that_is_the_app_is_refused(tmp_path):
    pack = make_buildpack(tmp_path / "bp", "true\n")
    app = make_app(tmp_path / "app", {"app.txt": "mine\n"})
    result = limited(cli("compile", ".", "-o", tmp_path / "slug.tgz", "--buildpack", pack,
                         "--cache-dir", "."), cwd=app)
    assert_refused(result, errors.CACHE_DIR_UNUSABLE, outputs=(tmp_path / "slug.tgz",))
    assert sorted(p.name for p in app.iterdir()) == ["app.txt"]  # nothing made in the app


@pytest.mark.parametrize("target", ["a-directory", "/proc/slugbuild-cannot-write.tgz"])
def test_unusable_output_is_refused_before_the_build(tmp_path, target):
    pack = make_buildpack(tmp_path / "bp", f'touch "{tmp_path}/compiled"\n')
    app = make_app(tmp_path / "app", {"app.txt": "mine\n"})
    output = tmp_path / target if not target.startswith("/") else Path(target)
    if target == "a-directory":
        output.mkdir()
    cache = tmp_path / "cache"
    result = run_cli("compile", app, "-o", output, "--buildpack", pack, "--cache-dir", cache)
    stderr = assert_refused(result, errors.OUTPUT_NOT_WRITABLE)
    assert not (tmp_path / "compiled").exists()  # refused before any step ran
    assert ("is a directory" in stderr) == (target == "a-directory")


@pytest.mark.parametrize("link", ["/etc/passwd", "../../outside"])
def test_build_step_leaving_a_link_outside_the_slug_is_refused(tmp_path, link):
    pack = make_buildpack(tmp_path / "bp", f'mkdir -p "$1/sub"; ln -s {link} "$1/sub/evil"\n')
    app = make_app(tmp_path / "app", {"app.txt": "mine\n"})
    cache, slug = tmp_path / "cache", tmp_path / "out" / "slug.tgz"
    slug.parent.mkdir()
    result = run_cli("compile", app, "-o", slug, "--buildpack", pack, "--cache-dir", cache)
    stderr = assert_refused(result, errors.SYMLINK_LEAVES_SLUG, cache=cache,
                            outputs=(slug, slug.with_suffix(".json")))
    assert f"sub/evil -> {link}" in stderr


def test_compile_and_readers_agree_on_links(tmp_path):
    """What compile accepts, `inspect` accepts: a relative link inside the app."""
    pack = make_buildpack(tmp_path / "bp", 'mkdir -p "$1/a"; ln -s ../app.txt "$1/a/link"\n')
    app = make_app(tmp_path / "app", {"app.txt": "mine\n", "Procfile": "show: cat a/link\n"})
    slug = tmp_path / "slug.tgz"
    result = run_cli("compile", app, "-o", slug, "--buildpack", pack,
                     "--cache-dir", tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    shown = run_cli("run", slug, "show")  # not `web`: a web process must serve
    assert shown.returncode == 0 and shown.stdout == "mine\n", shown.stderr


# --- (C) bounded reading of slugs from elsewhere --------------------------------------------

def test_sparse_entry_is_refused_within_a_small_memory_limit(tmp_path):
    """GNU tar's 2 GiB sparse Procfile (a slug of a few hundred bytes)."""
    work = tmp_path / "w"
    work.mkdir()
    with open(work / "Procfile", "wb") as handle:
        handle.truncate(2 << 30)
    slug = tmp_path / "sparse.tgz"
    subprocess.run(["tar", "-czSf", slug, "-C", work, "Procfile"], check=True)
    assert slug.stat().st_size < 4096
    tmp = tmp_path / "tmp"
    for command in (["inspect", slug], ["run", slug, "web"]):
        result = limited(cli(*command), memory=512 << 20, cpu=60, env=quiet_env(tmp))
        stderr = assert_refused(result, errors.UNSAFE_SLUG, tmp=tmp)
        assert "not sparse" in stderr


def test_large_metadata_file_is_refused_and_the_limit_can_be_raised(tmp_path):
    procfile = b"web: x\n" + b"# padding\n" * 20_000  # ~200 KB
    slug = tarball(tmp_path / "big.tgz", [(file_info("./Procfile", len(procfile)), procfile)])
    tmp = tmp_path / "tmp"
    env = quiet_env(tmp, SLUGBUILD_MAX_METADATA_SIZE="64K")
    result = limited(cli("inspect", slug, "--json"), memory=512 << 20, env=env)
    stderr = assert_refused(result, errors.SLUG_LIMIT_EXCEEDED, tmp=tmp)
    assert "SLUGBUILD_MAX_METADATA_SIZE" in stderr
    raised = limited(cli("inspect", slug, "--json"), memory=512 << 20,
                     env={**env, "SLUGBUILD_MAX_METADATA_SIZE": "1M"})
    assert raised.returncode == 0, raised.stderr
    assert json.loads(raised.stdout)["process_types"] == {"web": "x"}


def test_gzip_bomb_is_refused_before_unpacking_and_leaves_nothing(tmp_path):
    slug = tmp_path / "bomb.tgz"
    with gzip.open(slug, "wb", compresslevel=9) as stream, \
            tarfile.open(fileobj=stream, mode="w") as tar:
        tar.addfile(file_info("./Procfile", 10), io.BytesIO(b"web: true\n"))
        tar.addfile(file_info("./zeros", 64 << 20), _Zeros(64 << 20))
    assert slug.stat().st_size < 1 << 20
    tmp = tmp_path / "tmp"
    env = quiet_env(tmp, SLUGBUILD_MAX_UNPACKED_SIZE="16M")
    result = limited(cli("run", slug, "web"), memory=512 << 20, env=env)
    stderr = assert_refused(result, errors.SLUG_LIMIT_EXCEEDED, tmp=tmp)
    assert "SLUGBUILD_MAX_UNPACKED_SIZE" in stderr
    kept = tmp_path / "kept"
    result = limited(cli("run", slug, "web", "--unpack-to", kept), env=env)
    assert_refused(result, errors.SLUG_LIMIT_EXCEEDED, tmp=tmp)
    assert not kept.exists()  # made by the refused run: removed


def test_too_many_entries_and_huge_headers_are_refused(tmp_path):
    many = tarball(tmp_path / "many.tgz", [(file_info(f"./f{i}", 0), b"") for i in range(50)])
    tmp = tmp_path / "tmp"
    result = limited(cli("inspect", many), env=quiet_env(tmp, SLUGBUILD_MAX_SLUG_ENTRIES="20"))
    assert_refused(result, errors.SLUG_LIMIT_EXCEEDED, tmp=tmp)
    # A pax header declaring 2 GiB: tarfile would read it all into memory.
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 2 << 30
    raw = header.tobuf(format=tarfile.USTAR_FORMAT) + b"0" * 4096
    bomb = tmp_path / "pax.tgz"
    bomb.write_bytes(gzip.compress(raw))
    for command in (["inspect", bomb], ["run", bomb, "web"]):
        result = limited(cli(*command), memory=512 << 20, env=quiet_env(tmp))
        assert_refused(result, errors.UNSAFE_SLUG, tmp=tmp)


def test_truncated_slug_is_refused_and_the_temp_dir_removed(tmp_path):
    data = os.urandom(300_000)
    slug = tarball(tmp_path / "whole.tgz", [(file_info("./Procfile", 10), b"web: true\n"),
                                            (file_info("./data", len(data)), data)])
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(slug.read_bytes()[:-120_000])
    tmp = tmp_path / "tmp"
    result = limited(cli("run", cut, "web"), env=quiet_env(tmp))
    assert_refused(result, errors.SLUG_UNREADABLE, tmp=tmp)


def test_hostile_slug_json_is_ignored(tmp_path):
    """slug.json beside the slug names its checksum but is not slugbuild's shape."""
    slug = tarball(tmp_path / "s.tgz", [(file_info("./Procfile", 10), b"web: true\n")])
    import hashlib

    digest = hashlib.sha256(slug.read_bytes()).hexdigest()
    (tmp_path / "s.json").write_text(json.dumps({"checksum": f"SHA256:{digest}",
                                                 "process_types": ["not", "a", "dict"]}))
    result = run_cli("inspect", slug)
    assert result.returncode == 0, result.stderr
    assert "tarball" in result.stdout


# --- (C) the build's own resources ---------------------------------------------------------

def test_staging_and_leak_scan_do_not_grow_with_a_sparse_file(tmp_path):
    """A 3 GiB sparse file: staged sparse, scanned in chunks, under a 400 MB limit."""
    app = make_app(tmp_path / "app", {"app.txt": "mine\n"})
    with open(app / "huge.bin", "wb") as handle:
        handle.seek(3 << 30)
        handle.write(b"/build/dir/mentioned at the end")
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from slugbuild.stage import stage_sources\n"
        "from slugbuild.relocate import find_references\n"
        "app, build = Path(sys.argv[1]), Path(sys.argv[2])\n"
        "stage_sources(app, build)\n"
        "staged = os.stat(build / 'huge.bin')\n"
        "print(staged.st_size, staged.st_blocks * 512)\n"
        "print([(p.name, n) for p, n in find_references(build, ['/build/dir'])])\n"
    )
    result = limited([sys.executable, "-c", script, app, tmp_path / "build"],
                     memory=400 << 20, cpu=120)
    assert result.returncode == 0, result.stderr
    sizes, found = result.stdout.splitlines()
    size, allocated = sizes.split()
    assert int(size) > 3 << 30 and int(allocated) < 1 << 20  # still sparse
    assert found == "[('huge.bin', '/build/dir')]"


# --- (C) timeouts and signals ---------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _wait_gone(pids: list[int], seconds: float = 10) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pids = [pid for pid in pids if _alive(pid)]
        if not pids:
            return []
        time.sleep(0.1)
    return pids


SLEEPER = ('sleep 300 & echo $! > "$(cat "$3/PIDS")/child"\n'
           'echo $$ > "$(cat "$3/PIDS")/compile"\n'
           'echo "-----> sleeping"\n'
           'wait\n')


def _pids(directory: Path) -> list[int]:
    return [int((directory / name).read_text()) for name in ("compile", "child")]


def test_build_timeout_kills_the_buildpack_and_its_children(tmp_path):
    pack = make_buildpack(tmp_path / "bp", SLEEPER)
    app = make_app(tmp_path / "app", {"app.txt": "mine\n"})
    pids, cache, slug = tmp_path / "pids", tmp_path / "cache", tmp_path / "slug.tgz"
    pids.mkdir()
    result = limited(cli("compile", app, "-o", slug, "--buildpack", pack, "--cache-dir", cache,
                         "--timeout", "2", "--env", f"PIDS={pids}"), timeout=120)
    stderr = assert_refused(result, errors.BUILD_TIMED_OUT, cache=cache, outputs=(slug,))
    assert "bin/compile" in stderr and "time limit of 2 s" in stderr
    assert _wait_gone(_pids(pids)) == []


def test_timeout_from_the_environment_and_bad_values(tmp_path):
    app = make_app(tmp_path / "app", {"app.txt": "mine\n"})
    pack = make_buildpack(tmp_path / "bp", "true\n")
    result = limited(cli("compile", app, "-o", tmp_path / "s.tgz", "--buildpack", pack,
                         "--cache-dir", tmp_path / "cache"),
                     env={**os.environ, "SLUGBUILD_BUILD_TIMEOUT": "soon"})
    assert_refused(result, errors.INVALID_LIMIT, outputs=(tmp_path / "s.tgz",))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_slugbuild_alone_kills_the_build_and_removes_scratch(tmp_path, signum):
    pack = make_buildpack(tmp_path / "bp", SLEEPER)
    app = make_app(tmp_path / "app", {"app.txt": "mine\n"})
    pids, cache, slug = tmp_path / "pids", tmp_path / "cache", tmp_path / "slug.tgz"
    pids.mkdir()
    process = subprocess.Popen(
        cli("compile", app, "-o", slug, "--buildpack", pack, "--cache-dir", cache,
            "--env", f"PIDS={pids}", "--env", "SECRET_KEY=plain-text-secret"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    try:
        deadline = time.monotonic() + 60
        while not ((pids / "child").exists() and (pids / "compile").exists()):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        scratch = [p for p in (cache / "tmp").iterdir() if (p / "env").is_dir()]
        assert scratch and (scratch[0] / "env" / "SECRET_KEY").is_file()
        process.send_signal(signum)  # to slugbuild only, not its process group
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    assert f"Interrupted ({signal.Signals(signum).name})" in stderr
    assert _wait_gone(_pids(pids)) == []
    assert list((cache / "tmp").iterdir()) == []  # the env dir with the secret went too
    assert not slug.exists()


def test_background_process_holding_stdout_does_not_stall_the_build(tmp_path):
    # One background process stays in the group (killed), one escapes it with setsid.
    pack = make_buildpack(tmp_path / "bp", 'pids=$(cat "$3/PIDS")\n'
                                           'sleep 300 & echo $! > "$pids/grouped"\n'
                                           'setsid sleep 300 & echo $! > "$pids/escaped"\n'
                                           'echo "-----> done"\n')
    app = make_app(tmp_path / "app", {"app.txt": "mine\n"})
    pids, slug = tmp_path / "pids", tmp_path / "slug.tgz"
    pids.mkdir()
    try:
        result = limited(cli("compile", app, "-o", slug, "--buildpack", pack,
                             "--cache-dir", tmp_path / "cache", "--env", f"PIDS={pids}"),
                         timeout=120)
        assert result.returncode == 0, result.stderr
        assert slug.is_file()
        assert _wait_gone([int((pids / "grouped").read_text())]) == []
    finally:
        escaped = pids / "escaped"
        if escaped.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(escaped.read_text()), signal.SIGKILL)


def test_hook_stops_at_the_deadline(tmp_path):
    make_app(tmp_path, {"bin/post_compile": "sleep 30 & echo $! > child.pid\nsleep 30\n"})
    started = time.monotonic()
    with pytest.raises(errors.SlugbuildError) as caught, build_limits(1):
        run_hook("post_compile", tmp_path, Path(sys.executable), {}, Reporter(quiet=True))
    assert caught.value.code == "build-timed-out"
    assert "bin/post_compile" in caught.value.found
    assert time.monotonic() - started < 20
    assert _wait_gone([int((tmp_path / "child.pid").read_text())]) == []


def test_compile_app_timeout_parameter(tmp_path):
    pack = make_buildpack(tmp_path / "bp", "sleep 30\n")
    app = make_app(tmp_path / "app", {"app.txt": "mine\n"})
    with pytest.raises(errors.SlugbuildError) as caught:
        compile_app(app, tmp_path / "slug.tgz", cache_dir=tmp_path / "cache",
                    buildpacks=[str(pack)], timeout=1, reporter=Reporter(quiet=True))
    assert caught.value.code == "build-timed-out"
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_endless_tool_output_does_not_grow_memory(tmp_path):
    """300 MB printed as one line, then as short lines, under a 500 MB limit."""
    pack = make_buildpack(tmp_path / "bp", "head -c 300000000 /dev/zero | tr '\\0' x\n"
                                           "yes | head -n 3000000\n")
    app = make_app(tmp_path / "app", {"app.txt": "mine\n"})
    slug = tmp_path / "slug.tgz"
    result = subprocess.run(
        [sys.executable, "-c", "import resource, sys\n"
         "resource.setrlimit(resource.RLIMIT_AS, (500 << 20, 500 << 20))\n"
         "from slugbuild.cli import main\n"
         "sys.argv[0] = 'slugbuild'\n"
         "sys.exit(main(sys.argv[1:]))",
         "compile", app, "-o", slug, "--buildpack", pack, "--cache-dir", tmp_path / "cache"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    assert result.returncode == 0
    assert slug.is_file()


@pytest.mark.slow
def test_compile_memory_does_not_grow_with_the_largest_file(tmp_path):
    """A whole build (staging, leak scan, pack) of an app holding a 600 MiB sparse
    file, under a 450 MB address-space limit."""
    pack = make_buildpack(tmp_path / "bp", "true\n")
    app = make_app(tmp_path / "app", {"app.txt": "mine\n"})
    with open(app / "big.bin", "wb") as handle:
        handle.truncate(600 << 20)
    slug = tmp_path / "slug.tgz"
    result = limited(cli("compile", app, "-o", slug, "--buildpack", pack,
                         "--cache-dir", tmp_path / "cache"), memory=450 << 20, timeout=300)
    assert result.returncode == 0, result.stderr
    with tarfile.open(slug) as tar:
        assert tar.getmember("./big.bin").size == 600 << 20


def test_deep_paths_are_checked_in_linear_time_and_overlong_ones_refused(tmp_path):
    link = tarfile.TarInfo("./z")
    link.type, link.linkname = tarfile.SYMTYPE, "app.txt"
    deep = "./" + "a/" * 1990
    entries = [(link, None)] + [(file_info(f"{deep}{i}", 0), b"") for i in range(1500)]
    slug = tarball(tmp_path / "deep.tgz", entries)
    tmp = tmp_path / "tmp"
    result = limited(cli("inspect", slug, "--json"), cpu=30, memory=1 << 30,
                     env=quiet_env(tmp))
    assert result.returncode == 0, result.stderr
    long = tarball(tmp_path / "long.tgz", [(file_info("./" + "b" * 5000, 0), b"")])
    result = limited(cli("run", long, "web"), env=quiet_env(tmp))
    stderr = assert_refused(result, errors.UNSAFE_SLUG, tmp=tmp)
    assert "longer than 4096 bytes" in stderr


def test_timeout_values(monkeypatch):
    from slugbuild.proc import DEFAULT_BUILD_TIMEOUT, build_timeout_from_env

    monkeypatch.delenv("SLUGBUILD_BUILD_TIMEOUT", raising=False)
    assert build_timeout_from_env() == DEFAULT_BUILD_TIMEOUT == 900
    assert build_timeout_from_env(0) is None and build_timeout_from_env(2.5) == 2.5
    monkeypatch.setenv("SLUGBUILD_BUILD_TIMEOUT", "60")
    assert build_timeout_from_env() == 60 and build_timeout_from_env(5) == 5
    monkeypatch.setenv("SLUGBUILD_BUILD_TIMEOUT", "0")
    assert build_timeout_from_env() is None
    for bad in ("-3", "nan", "soon"):
        monkeypatch.setenv("SLUGBUILD_BUILD_TIMEOUT", bad)
        with pytest.raises(errors.SlugbuildError) as caught:
            build_timeout_from_env()
        assert caught.value.code == "invalid-limit"
    with pytest.raises(errors.SlugbuildError):
        build_timeout_from_env(-1)


def test_waiting_for_a_prefetch_stops_at_the_deadline():
    from slugbuild.proc import wait_for

    process = subprocess.Popen(["sleep", "30"], start_new_session=True)
    with pytest.raises(errors.SlugbuildError) as caught, build_limits(1):
        wait_for(process, "the installer's download")
    assert caught.value.code == "build-timed-out"
    assert process.returncode == -signal.SIGKILL
