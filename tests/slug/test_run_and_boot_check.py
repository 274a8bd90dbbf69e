"""How `slugbuild run` runs a process type (bash -c, process groups, web processes
that never serve) and the opt-in boot check of `compile`.

The quick tests use small hand-made slugs whose processes are the test's own
Python; the slow ones compile fixture apps and boot the real slugs.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from slugbuild import compile_app
from slugbuild.errors import SlugbuildError
from slugbuild.log import Reporter
from slugbuild.pack import pack_tree
from slugbuild.release import release_yaml
from slugbuild.slug.boot_check import check_boot, timeout_of
from slugbuild.slug.run import run_slug

from ..helpers import FIXTURE_APPS, REPO, Server, copy_app, make_app, run_cli

# The tests look for leftover processes by their command line across the machine: two
# of them at once on two workers (the same fixture app) see each other's processes.
pytestmark = pytest.mark.xdist_group("boot-check-processes")

PYTHON = shlex.quote(sys.executable)
SERVE = f"exec {PYTHON} -m http.server $PORT --bind 127.0.0.1"


def _slug_dir(directory: Path, procfile: str, release: str | None = None) -> Path:
    files = {"Procfile": procfile, "sub/marker.txt": "in sub\n",
             ".profile.d/test.sh": "export FROM_PROFILE=profile-was-sourced\n"}
    if release is not None:
        files[".release"] = release
    return make_app(directory, files)


def _packed(tmp_path: Path, procfile: str, release: str | None = None) -> Path:
    root = _slug_dir(tmp_path / "tree", procfile, release)
    slug = tmp_path / "slug.tgz"
    with open(slug, "wb") as handle:
        pack_tree(root, handle)
    return slug


def _processes_with(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line holds ``marker``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ")
            state = Path(f"/proc/{name}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != b"Z":
            found.append(int(name))
    return found


# --- slugbuild run ------------------------------------------------------------------

def test_lines_run_as_bash_c_with_profile_sourced(tmp_path):
    slug = _slug_dir(tmp_path / "slug", (
        "worker: false || echo fallback; cd sub && MSG=set-inline bash -c "
        "'echo $MSG $(cat marker.txt) $FROM_PROFILE port=${PORT:-none}' | tr a-z A-Z\n"))
    result = run_cli("run", slug, "worker", "--port", "6123", timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "fallback", "SET-INLINE IN SUB PROFILE-WAS-SOURCED PORT=6123"]


def test_exit_codes_pass_through_for_other_process_types(tmp_path):
    slug = _slug_dir(tmp_path / "slug", "fails: echo one && exit 7\nok: true\n")
    assert run_slug(slug, "fails") == 7
    assert run_slug(slug, "ok") == 0


def test_a_web_process_that_exits_without_serving_is_an_error(tmp_path):
    # What `exec python manage.py migrate && gunicorn ...` used to do: migrate, exit 0.
    slug = _slug_dir(tmp_path / "slug", "web: echo migrated\n")
    with pytest.raises(SlugbuildError) as caught:
        run_slug(slug, "web")
    assert caught.value.code == "web-process-exited"
    assert "exited with code 0" in caught.value.found


def test_compound_web_line_serves_and_stops_with_its_group(tmp_path):
    marker = f"{tmp_path.name}-leftover"
    slug = _slug_dir(tmp_path / "slug", (
        f"web: (exec -a {marker} sleep 300 &) ; echo migrating && cd sub && {SERVE}\n"))
    with Server(slug) as server:
        assert requests.get(server.base + "/marker.txt", timeout=5).text == "in sub\n"
        assert _processes_with(marker)
    code, output = server.stop()
    assert code == 128 + signal.SIGTERM, output
    assert "migrating" in output
    deadline = time.monotonic() + 15
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _processes_with(marker), "the process group outlived `slugbuild run`"


# --- boot check (quick) ---------------------------------------------------------------

def test_timeout_argument():
    assert timeout_of(False) is None and timeout_of(None) is None
    assert timeout_of(True) == 30.0 and timeout_of(2.5) == 2.5
    with pytest.raises(ValueError):
        timeout_of(0)


def test_boot_check_passes_with_build_config_vars_over_release_defaults(tmp_path):
    release = release_yaml({}, {"BOOT_A": "from-release", "BOOT_B": "from-release"})
    slug = _packed(tmp_path, (
        'web: test "$BOOT_A/$BOOT_B" = from-release/from-build && cd sub && ' + SERVE + "\n"),
        release)
    work = tmp_path / "work"
    # PORT and HOST config vars cannot move the server away from the check.
    result = check_boot(slug, config_vars={"BOOT_B": "from-build", "PORT": "1",
                                           "HOST": "0.0.0.0"}, timeout=20, workdir=work)
    assert result.status_line.startswith("HTTP/1.0 200")
    assert not work.exists()


@pytest.mark.parametrize("web, timeout, problem, output", [
    ("echo 'ImportError: no module named pkg_resources' >&2; exit 3", 20,
     "it exited with code 3 before answering HTTP", "no module named pkg_resources"),
    (f"{PYTHON} manage.py migrate && echo done", 20,  # the line `exec` used to cut short
     "it exited with code 2 before answering HTTP", "manage.py"),
    (f"echo idle; exec {PYTHON} -c 'import time; time.sleep(300)' never-listens", 1.5,
     "did not answer HTTP within 1.5 seconds", "idle"),
    (f"exec {PYTHON} -c \"import os, socket, time; s = socket.socket(); "
     "s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen(); c, _ = s.accept(); "
     "c.sendall(b'SSH-2.0-x\\r\\n'); time.sleep(300)\"", 20,
     "something answered on $PORT, but not with HTTP", None),
])
def test_boot_check_fails_with_the_process_output(tmp_path, web, timeout, problem, output):
    slug = _packed(tmp_path, f"web: {web}\n")
    started = time.monotonic()
    with pytest.raises(SlugbuildError) as caught:
        check_boot(slug, config_vars={}, timeout=timeout, workdir=tmp_path / "work",
                   reported_as=tmp_path / "out.tgz")
    error = caught.value
    assert error.code == "boot-check-failed"
    assert problem in error.found and web in error.found
    if output is not None:
        assert output in error.output
    assert f"No slug was written to {tmp_path / 'out.tgz'}" in error.action
    assert time.monotonic() - started < timeout + 12
    assert not (tmp_path / "work").exists()
    if "never-listens" in web:
        assert not _processes_with("never-listens")  # the process group was stopped


def test_boot_check_without_a_web_process(tmp_path):
    slug = _packed(tmp_path, "worker: python worker.py\n")
    with pytest.raises(SlugbuildError) as caught:
        check_boot(slug, config_vars={}, timeout=5, workdir=tmp_path / "work")
    assert caught.value.code == "boot-check-failed"
    assert "no `web` process type" in caught.value.found


# --- boot check on compiled fixture apps (slow) ---------------------------------------

@pytest.mark.slow
def test_boot_check_passes_on_the_django_fixture(django_build, tmp_path):
    result = check_boot(django_build.slug_path, config_vars={}, timeout=60,
                        workdir=tmp_path / "work")
    assert result.status_line.startswith("HTTP/")


def _compile(name: str, tmp_path: Path, cache_dir: Path, **options):
    app = copy_app(FIXTURE_APPS / name, tmp_path / name)
    return compile_app(app, tmp_path / f"{name}.tgz", cache_dir=cache_dir,
                       reporter=Reporter(quiet=True), **options)


@pytest.mark.slow
def test_compound_procfile_fixture_boots_and_serves(tmp_path, cache_dir):
    result = _compile("procfile-compound", tmp_path, cache_dir, boot_check=True)
    assert any("answered `HTTP/" in line for line in result.log)
    with Server(result.slug_path) as server:
        body = requests.get(server.base + "/", timeout=5).text
    assert body == f"compound: migrated for port {server.port}\n"


@pytest.mark.slow
def test_crash_at_import_fails_the_build_with_the_apps_error(tmp_path, cache_dir):
    with pytest.raises(SlugbuildError) as caught:
        _compile("boot-crash-at-import", tmp_path, cache_dir, boot_check=60)
    assert caught.value.code == "boot-check-failed"
    assert "RuntimeError: boot-fixture: BOOT_FIXTURE_DATABASE_URL is not set" in (
        caught.value.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boot-crash-at-import"]
    # With the build config var it needs, the same app boots.
    fixed = _compile("boot-crash-at-import", tmp_path / "fixed", cache_dir, boot_check=60,
                     env={"BOOT_FIXTURE_DATABASE_URL": "postgres://localhost/x"})
    assert fixed.slug_path.is_file() and fixed.metadata_path.is_file()


@pytest.mark.slow
def test_cli_boot_check_times_out_on_an_app_that_never_listens(tmp_path, cache_dir):
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("compile", FIXTURE_APPS / "boot-never-listens", "-o", out / "slug.tgz",
                     "--cache-dir", cache_dir, "--boot-check-timeout", "2")
    assert result.returncode == 1
    assert "The slug did not boot" in result.stderr
    assert "did not answer HTTP within 2 seconds" in result.stderr
    assert "idle: waiting for jobs" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(out.iterdir()) == []
    assert not _processes_with("idle.py")


@pytest.mark.slow
def test_buildpack_runs_the_boot_check_when_the_config_var_asks(tmp_path, buildpack_cache_dir):
    app = copy_app(FIXTURE_APPS / "boot-never-listens", tmp_path / "build")
    before = sorted(p.name for p in app.iterdir())
    env_dir = make_app(tmp_path / "env", {"SLUGBUILD_BOOT_CHECK": "1",
                                          "SLUGBUILD_BOOT_CHECK_TIMEOUT": "2"})
    result = subprocess.run(
        [str(REPO / "buildpacks" / "python" / "bin" / "compile"), str(app),
         str(buildpack_cache_dir), str(env_dir)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "SLUGBUILD_PYTHON_BIN": sys.executable})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "The slug did not boot" in result.stdout
    assert "did not answer HTTP within 2 seconds" in result.stdout
    assert sorted(p.name for p in app.iterdir()) == before


@pytest.mark.slow
def test_a_stdlib_module_the_python_removed_fails_the_boot_check(tmp_path, cache_dir):
    with pytest.raises(SlugbuildError) as caught:
        _compile("boot-removed-stdlib", tmp_path, cache_dir, boot_check=60)
    assert "ModuleNotFoundError: No module named 'cgi'" in caught.value.output
