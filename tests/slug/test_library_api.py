"""The library as a deployer embeds it: what ``slugbuild`` exports, bad arguments
as library errors, ``run_slug`` off the main thread, ``start_slug`` handles and
one-off commands (``slugbuild run SLUG -- COMMAND``).

Quick: the slugs are small hand-made trees whose processes are the test's own
Python (docs/api.md's example, a real build, is tested in test_api_docs.py).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path, PurePath

import pytest
import requests

import slugbuild
from slugbuild import errors
from slugbuild.pack import pack_tree

from ..helpers import make_app, run_cli

PYTHON = shlex.quote(sys.executable)
SERVE = f"exec {PYTHON} -m http.server $PORT --bind 127.0.0.1"


def _slug(tmp_path: Path, procfile: str, packed: bool = False) -> Path:
    root = make_app(tmp_path / "tree", {
        "Procfile": procfile, "hello.txt": "hello from the slug\n",
        ".profile.d/test.sh": "export FROM_PROFILE=sourced\n",
        ".release": "---\nconfig_vars:\n  GREETING: from-release\n"})
    if not packed:
        return root
    slug = tmp_path / "slug.tgz"
    with open(slug, "wb") as handle:
        pack_tree(root, handle)
    return slug


# --- what `import slugbuild` offers -------------------------------------------------

def test_the_public_names_are_exported_lazily():
    # A fresh interpreter: importing the package loads neither the pipeline nor the slug tools.
    probe = ("import sys, slugbuild; "
             "print(sorted(m for m in sys.modules if m.startswith('slugbuild.')))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True).stdout
    assert "slugbuild.pipeline" not in loaded and "slugbuild.slug.run" not in loaded
    for name in ("compile_app", "BuildResult", "detect", "describe_slug", "run_slug",
                 "start_slug", "SlugProcess", "publish_slug",
                 "lock_app", "Reporter", "LogEvent", "EventHandler", "RuntimeOptions",
                 "SlugbuildError", "InputError", "SlugError", "ERROR_CODES",
                 "exception_class", "buildpack_dir", "install_buildpack", "PathArg"):
        assert name in slugbuild.__all__, name
        assert getattr(slugbuild, name) is not None
    for name in slugbuild.__all__:  # every listed name resolves
        assert hasattr(slugbuild, name), name
    assert slugbuild.inspect is slugbuild.describe_slug and slugbuild.run is slugbuild.run_slug
    assert slugbuild.start is slugbuild.start_slug and slugbuild.publish is slugbuild.publish_slug
    assert not {"inspect", "run", "start", "publish"} & set(slugbuild.__all__)  # attributes only
    # Every code has its class, importable by name from the package.
    assert set(slugbuild.ERROR_CODES) == set(errors.CATALOG)
    for code in slugbuild.ERROR_CODES:
        cls = slugbuild.exception_class(code)
        assert getattr(slugbuild, cls.__name__) is cls and cls.__name__ in slugbuild.__all__
    with pytest.raises(AttributeError):
        slugbuild.no_such_name  # noqa: B018


@pytest.mark.parametrize("call, argument", [
    (lambda t: slugbuild.compile_app(t, t / "o.tgz", layout="docker"), "layout"),
    (lambda t: slugbuild.compile_app(42), "app_dir"),
    (lambda t: slugbuild.compile_app(t, output=3.5), "output"),
    (lambda t: slugbuild.compile_app(t, t / "o.tgz", boot_check=-1), "boot_check"),
    (lambda t: slugbuild.detect(None), "app_dir"),
    (lambda t: slugbuild.describe_slug(b"/slug.tgz"), "path"),
    (lambda t: slugbuild.run_slug(t, port=70000), "port"),
    (lambda t: slugbuild.start_slug(t, port="80"), "port"),
    (lambda t: slugbuild.start_slug(t, command=""), "command"),
    (lambda t: slugbuild.start_slug(t, command=["echo", 3]), "command"),
    (lambda t: slugbuild.run_slug(t, env={"DEBUG": 0}), "env"),
    (lambda t: slugbuild.start_slug(t, host=None), "host"),
    (lambda t: slugbuild.run_slug(t, process=None), "process"),
    (lambda t: slugbuild.install_buildpack(7), "target"),
    (lambda t: slugbuild.lock_app(t, config_vars=["A=1"]), "config_vars"),
    (lambda t: slugbuild.compile_app(t, t / "o.tgz", buildpacks=[None]), "buildpacks"),
    (lambda t: slugbuild.compile_app(t, t / "o.tgz", buildpacks=5), "buildpacks"),
    (lambda t: slugbuild.compile_app(t, t / "o.tgz", env="A=1"), "env"),
    (lambda t: slugbuild.compile_app(t, t / "o.tgz", timeout="60"), "timeout"),
    (lambda t: slugbuild.compile_app(t, t / "o.tgz", reporter=print), "reporter"),
    (lambda t: slugbuild.compile_app(t, t / "o.tgz", runtime_options="local"),
     "runtime_options"),
    (lambda t: slugbuild.compile_app(t, t / "o.tgz", source_date_epoch="0"),
     "source_date_epoch"),
    (lambda t: slugbuild.compile_app(t, t / "o.tgz", app_base=3), "app_base"),
    (lambda t: slugbuild.compile_app(t, t / "o.tgz", max_slug_size=[1]), "max_slug_size"),
    (lambda t: slugbuild.compile_app(t, t / "o.tgz", node_build="yes"), "node_build"),
])
def test_bad_arguments_raise_the_librarys_error(tmp_path, call, argument):
    make_app(tmp_path, {"Procfile": "web: true\n", "requirements.txt": ""})
    with pytest.raises(slugbuild.InvalidArgumentError) as caught:
        call(tmp_path)
    error = caught.value
    assert isinstance(error, slugbuild.InputError) and isinstance(error, ValueError)
    assert error.code == "invalid-argument" and error.argument == argument
    assert f"{argument}=" in error.found


def test_paths_accept_str_and_pathlike(tmp_path):
    class OwnPath(os.PathLike):
        def __init__(self, path: Path) -> None:
            self.path = path

        def __fspath__(self) -> str:
            return str(self.path)

    slug = _slug(tmp_path, "web: true\n", packed=True)
    for given in (str(slug), slug, OwnPath(slug)):
        assert slugbuild.describe_slug(given)["process_types"] == {"web": "true"}
    app = make_app(tmp_path / "app", {"requirements.txt": ""})
    assert slugbuild.detect(str(app)).package_manager == "pip"
    assert isinstance(PurePath(slugbuild.buildpack_dir()), PurePath)


# --- run_slug and start_slug ----------------------------------------------------------

def test_run_slug_works_off_the_main_thread_and_leaves_signals_alone(tmp_path):
    slug = _slug(tmp_path, "job: echo $GREETING $FROM_PROFILE; exit 3\n")
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    results: list[object] = []

    def worker() -> None:
        try:
            results.append(slugbuild.run_slug(slug, "job"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            results.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(60)
    assert results == [3]
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_start_slug_returns_a_handle_that_serves_logs_and_stops(tmp_path):
    slug = _slug(tmp_path, f"web: echo booting $GREETING; {SERVE}\n", packed=True)
    handle = slugbuild.start_slug(slug, env={"GREETING": "from-env"})
    try:
        assert handle.running and handle.pid > 0 and handle.process == "web"
        handle.wait_for_port(timeout=30)
        answer = requests.get(f"http://127.0.0.1:{handle.port}/hello.txt", timeout=5)
        assert answer.text == "hello from the slug\n"
        directory = handle.directory
        assert (directory / "hello.txt").is_file()
        with pytest.raises(subprocess.TimeoutExpired):
            handle.wait(timeout=0.2)
    finally:
        code = handle.stop(grace=10)
    assert code == 128 + signal.SIGTERM
    assert "booting from-env" in handle.logs() and "GET /hello.txt" in handle.logs()
    assert not directory.exists(), "the unpacked slug outlived its process"
    assert handle.stop() == code and not handle.running  # stopping twice is harmless


def test_start_slug_never_removes_the_directory_under_a_running_process(tmp_path):
    slug = _slug(tmp_path, "web: true\n", packed=True)
    # A one-off that outlives its handle's owner: the directory goes only after the group.
    handle = slugbuild.start_slug(slug, command=["bash", "-c", "sleep 0.5; cat hello.txt"])
    assert handle.process == "run"
    assert handle.wait(timeout=30) == 0
    assert handle.logs() == "hello from the slug\n"
    assert not handle.directory.exists()


def test_a_handle_left_running_is_stopped_when_the_interpreter_exits(tmp_path):
    marker = f"{tmp_path.name}-at-exit"
    slug = _slug(tmp_path, f"worker: exec -a {marker} sleep 300\n", packed=True)
    script = ("import sys, slugbuild; h = slugbuild.start_slug(sys.argv[1], 'worker'); "
              "print(h.pid, h.directory, flush=True)")
    result = subprocess.run([sys.executable, "-c", script, str(slug)], capture_output=True,
                            text=True, timeout=60, check=True)
    pid, directory = result.stdout.split()
    with pytest.raises(ProcessLookupError):
        os.killpg(int(pid), 0)
    assert not Path(directory).exists()


def test_a_garbage_collected_handle_stops_its_group(tmp_path):
    marker = f"{tmp_path.name}-orphan"
    slug = _slug(tmp_path, f"worker: exec -a {marker} sleep 300\n")
    handle = slugbuild.start_slug(slug, "worker")
    pid = handle.pid
    del handle
    import gc

    gc.collect()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


def test_wait_for_port_waits_for_the_process_not_for_whoever_has_the_port(tmp_path):
    import socket

    with socket.socket() as taken:  # something else already listens on the port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        slug = _slug(tmp_path, "web: sleep 30\n")
        with slugbuild.start_slug(slug, port=port) as handle, \
                pytest.raises(slugbuild.SlugError) as caught:
            handle.wait_for_port(timeout=0.5)
    assert caught.value.code == "slug-process-not-listening"


def test_wait_for_port_reports_a_web_process_that_exits(tmp_path):
    slug = _slug(tmp_path, "web: echo migrated\n")
    with slugbuild.start_slug(slug) as handle, pytest.raises(slugbuild.SlugError) as caught:
        handle.wait_for_port(timeout=30)
    assert caught.value.code == "web-process-exited"
    never = _slug(tmp_path / "never", "web: sleep 30\n")
    with slugbuild.start_slug(never) as handle, pytest.raises(slugbuild.SlugError) as caught:
        handle.wait_for_port(timeout=0.3)
    assert caught.value.code == "slug-process-not-listening"


# --- one-off commands ----------------------------------------------------------------

def test_cli_runs_a_one_off_command_in_the_slugs_environment(tmp_path):
    slug = _slug(tmp_path, "web: true\n", packed=True)
    result = run_cli("run", slug, "--port", "6001", "--env", "EXTRA=x", "--", "bash", "-c",
                     "echo $DYNO $GREETING $FROM_PROFILE $EXTRA $PORT; cat hello.txt; exit 4",
                     timeout=60)
    assert result.returncode == 4, result.stderr
    assert result.stdout.splitlines() == ["run.1 from-release sourced x 6001",
                                          "hello from the slug"]
    both = run_cli("run", slug, "web", "--", "true")
    assert both.returncode == 2 and "not both" in both.stderr


def test_a_one_off_command_reads_the_terminal(tmp_path):
    # `slugbuild run SLUG -- python manage.py shell` is interactive: stdin is the terminal.
    import pty
    import time

    slug = _slug(tmp_path, "web: true\n")
    pid, terminal = pty.fork()
    if pid == 0:  # the child: slugbuild on the pseudo-terminal
        os.execv(sys.executable, [sys.executable, "-m", "slugbuild", "run", str(slug), "--",
                                  "bash", "-c", "read answer; echo got:$answer; tty"])
    os.write(terminal, b"typed-in\n")
    seen, deadline = b"", time.monotonic() + 60
    while b"/dev/" not in seen and time.monotonic() < deadline:
        try:
            seen += os.read(terminal, 1024)
        except OSError:
            break
    _, status = os.waitpid(pid, 0)
    os.close(terminal)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b"got:typed-in" in seen and b"/dev/pts/" in seen, seen
