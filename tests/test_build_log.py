"""The build log (issue 18 §1): live, honest, familiar; and the machine-readable edges (§2).

The reporter's behaviour on a terminal is checked through a pseudo-terminal; the
log's order and timing with an installer that prints, sleeps in silence, and
prints again, in a real build.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
import subprocess
import sys
import threading
import time

import pytest

from slugbuild import errors
from slugbuild.cli import main
from slugbuild.log import LogEvent, LoggingHandler, Reporter, color_wanted, current_stage

from .helpers import MINIMAL, REPO, make_app, make_buildpack, run_cli

COMMANDS = ("compile", "run", "inspect", "publish", "runtimes", "lock", "detect", "plan")


class TimedStream(io.StringIO):
    """A log stream that remembers when each line was written."""

    def __init__(self) -> None:
        super().__init__()
        self.timed: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        for line in text.splitlines():
            self.timed.append((time.monotonic(), line))
        return super().write(text)


# --- the reporter ----------------------------------------------------------------------

def test_deferred_lines_wait_for_release_then_stream_as_they_come():
    seen: list[LogEvent] = []
    stream = io.StringIO()
    reporter = Reporter(stream, on_event=seen.append)
    beside = reporter.deferred()
    beside.step("Installing requirements with uv 0.13.9")
    reporter.step("Installing Python 3.12.1")
    assert stream.getvalue().splitlines() == ["-----> Installing Python 3.12.1"]
    beside.release()
    beside.detail("+ six==1.17.0")
    assert stream.getvalue().splitlines() == [
        "-----> Installing Python 3.12.1", "-----> Installing requirements with uv 0.13.9",
        "       + six==1.17.0"]
    assert [e.line for e in seen] == stream.getvalue().splitlines() == reporter.lines


def test_a_chunk_of_tool_output_is_written_at_once_and_every_line_kept():
    """A tool printing many short lines cost a write and a flush per line; each chunk
    read from the tool is now one write, in order, and every line still reaches the
    callbacks and ``lines`` (a deferred reporter writes through its parent)."""
    from slugbuild.proc import run_tool

    class CountingStream(io.StringIO):
        writes = 0

        def write(self, text: str) -> int:
            CountingStream.writes += 1
            return super().write(text)

    printed = [f"line {i} http://user:pw@host/?token=t \x1b" for i in range(2000)]
    shown = [f"       line {i} http://***@host/?token=*** \\x1b" for i in range(2000)]
    seen: list[LogEvent] = []
    stream = CountingStream()
    reporter = Reporter(stream, on_event=seen.append)
    beside = reporter.deferred()
    beside.release()
    script = f"print({chr(10).join(printed)!r})"
    for target in (reporter, beside):
        output = run_tool([sys.executable, "-c", script], target, dict(os.environ))
        assert output.splitlines() == printed
    assert stream.getvalue().splitlines() == shown * 2
    assert [event.line for event in seen] == reporter.lines == shown * 2
    assert CountingStream.writes < 40  # 2 x 2000 lines in a few chunks


def test_a_silent_wait_gets_a_heartbeat_and_a_talking_one_does_not():
    stream = io.StringIO()
    reporter = Reporter(stream, heartbeat_seconds=0.2)
    with reporter.waiting("installing dependencies"):
        time.sleep(0.7)
    beats = [line for line in stream.getvalue().splitlines() if "still" in line]
    assert beats and all(re.fullmatch(r" {7}still installing dependencies \(\d+ s\)", b)
                         for b in beats)
    talking = io.StringIO()
    reporter = Reporter(talking, heartbeat_seconds=0.3)
    with reporter.waiting("installing dependencies"):
        for _ in range(8):
            reporter.detail("Downloading...")
            time.sleep(0.1)
    assert "still" not in talking.getvalue()


def _terminal() -> tuple[int, io.TextIOWrapper]:
    master, slave = pty.openpty()
    return master, io.TextIOWrapper(os.fdopen(slave, "wb", buffering=0), encoding="utf-8",
                                    write_through=True)


def _read_all(master: int) -> str:
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode("utf-8", "replace")


def test_on_a_terminal_a_spinner_turns_and_steps_are_coloured(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    master, terminal = _terminal()
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(_read_all(master)))
    reader.start()
    reporter = Reporter(terminal, heartbeat_seconds=0.1)
    assert reporter.terminal and reporter.color
    reporter.step("Installing requirements with uv 0.13.9")
    with reporter.waiting("installing dependencies"):
        time.sleep(0.5)
    reporter.detail("done")
    terminal.close()
    reader.join(10)
    out = received[0]
    assert "\x1b[1m-----> Installing requirements with uv 0.13.9\x1b[0m" in out
    assert "installing dependencies (0 s)" in out and "\r\x1b[K" in out
    assert "still installing" not in out  # a terminal gets the spinner, not heartbeat lines
    assert out.rstrip().endswith("       done")  # the spinner was cleared before the line


@pytest.mark.parametrize("env, choice, wanted", [
    ({}, "auto", True), ({"NO_COLOR": "1"}, "auto", False), ({"TERM": "dumb"}, "auto", False),
    ({"NO_COLOR": "1"}, "always", True), ({}, "never", False)])
def test_color_choice_on_a_terminal_follows_no_color_and_dumb_terminals(monkeypatch, env,
                                                                        choice, wanted):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    master, terminal = _terminal()
    try:
        assert color_wanted(choice, terminal) is wanted
    finally:
        terminal.close()
        os.close(master)
    assert color_wanted("auto", io.StringIO()) is False  # not a terminal
    assert color_wanted("always", io.StringIO()) is True


def test_events_carry_their_stage_and_time_and_reach_a_logger(caplog):
    from slugbuild.context import StageTimer

    logger = logging.getLogger("deployer.build")
    reporter = Reporter(io.StringIO(), logger=logger)
    timer = StageTimer()
    with caplog.at_level(logging.DEBUG, logger="deployer.build"):
        with timer.stage("collectstatic", deadline=False):
            reporter.step("$ python manage.py collectstatic --noinput")
        reporter.warn("careful")
    assert current_stage.get() == ""
    first, second = reporter.events
    assert (first.stage, first.kind, second.stage, second.kind) == (
        "collectstatic", "step", "", "warning")
    assert 0 <= first.elapsed <= second.elapsed
    records = [r for r in caplog.records if r.name == "deployer.build"]
    assert [(r.levelno, r.getMessage(), r.stage, r.kind) for r in records] == [
        (logging.INFO, "$ python manage.py collectstatic --noinput", "collectstatic", "step"),
        (logging.WARNING, "careful", "", "warning")]
    seen: list[LogEvent] = []
    Reporter(io.StringIO(), on_event=seen.append, logger=logger).detail("both")
    assert seen == [LogEvent("detail", "both")] and callable(LoggingHandler(logger))


def test_quiet_and_verbose(tmp_path):
    quiet, normal, verbose = io.StringIO(), io.StringIO(), io.StringIO()
    for stream, verbosity in ((quiet, "quiet"), (normal, "normal"), (verbose, "verbose")):
        reporter = Reporter(stream, verbosity=verbosity)
        reporter.step("Installing")
        reporter.debug("resolver chatter")
        reporter.warn("careful")
    assert quiet.getvalue().splitlines() == [" !     careful"]
    assert normal.getvalue().splitlines() == ["-----> Installing", " !     careful"]
    assert "       resolver chatter" in verbose.getvalue().splitlines()


def test_scratch_paths_are_shown_as_the_app_will_see_them(tmp_path):
    stream = io.StringIO()
    reporter = Reporter(stream)
    build_dir = tmp_path / "cache" / "tmp" / "x.build.abc" / "app"
    reporter.show_path_as(build_dir, "/app")
    reporter.deferred().show_path_as(tmp_path / "cache" / "runtimes" / "tree",
                                     "/app/.heroku/python")
    reporter.detail(f"129 static files copied to '{build_dir}/staticfiles'.")
    reporter.detail(f"Using CPython at: {tmp_path}/cache/runtimes/tree/bin/python3.12")
    assert stream.getvalue().splitlines() == [
        "       129 static files copied to '/app/staticfiles'.",
        "       Using CPython at: /app/.heroku/python/bin/python3.12"]


def test_a_third_party_buildpack_prints_through_unchanged(tmp_path):
    from slugbuild.proc import run_tool

    reporter = Reporter(io.StringIO())
    run_tool(["printf", "-----> Node.js app detected\\n       installing\\n"], reporter,
             dict(os.environ), passthrough=True)
    run_tool(["printf", "pip says\\n"], reporter, dict(os.environ))
    assert reporter.lines == ["-----> Node.js app detected", "       installing",
                              "       pip says"]


# --- errors and the command line (§2) --------------------------------------------------

def test_every_error_names_its_code_and_where_it_is_documented():
    documented = set(re.findall(r"^## ([a-z0-9-]+)$",
                                (REPO / "docs" / "errors.md").read_text(), re.M))
    for code, kind in errors.CATALOG.items():
        assert code in documented
        variant = next(iter(kind.variants), None) if not kind.found else None
        error = kind.error(variant=variant, **{f: "x" for f in kind.fields})
        rendered = error.render()
        assert rendered.startswith(f" !     Error [{code}]: ")
        assert rendered.endswith(f" !     Documented in docs/errors.md#{code}")
        assert error.as_dict()["docs"] == f"docs/errors.md#{code}"


def test_json_failure_is_json_on_stdout(tmp_path, capsys):
    assert main(["compile", str(tmp_path / "missing"), "-o", str(tmp_path / "s.tgz"),
                 "--json"]) == 1
    out, err = capsys.readouterr()
    error = json.loads(out)["error"]
    assert set(error) == {"code", "title", "found", "action", "output", "docs"}
    assert error["code"] == "app-dir-missing" and "Error [app-dir-missing]" in err
    assert main(["detect", str(tmp_path / "missing"), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["code"]


def test_usage_errors_exit_2_with_the_commands_usage(tmp_path, capsys, monkeypatch):
    app = make_app(tmp_path / "app", MINIMAL)
    monkeypatch.chdir(tmp_path)
    for args, code in ((["compile", app, "--bad-flag"], "usage-error"),
                       (["compile", app, "--env", "FOO"], "invalid-config-var"),
                       (["run", tmp_path / "s.tgz", "--env", "s3cr3t-pasted"],
                        "invalid-config-var")):
        status = main([str(arg) for arg in args])
        stderr = capsys.readouterr().err
        assert status == 2, stderr
        assert stderr.startswith(f"usage: slugbuild {args[0]} ")
        assert re.findall(r"Error \[([a-z0-9-]+)\]", stderr) == [code]
        assert "s3cr3t-pasted" not in stderr and "Traceback" not in stderr
    assert not (tmp_path / "slug.tgz").exists()
    # The same from a shell: exit status 2, and with --json the error on stdout too.
    result = run_cli("compile", str(app), "--bad-flag", "--json")
    assert result.returncode == 2
    assert json.loads(result.stdout)["error"]["code"] == "usage-error"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_commands_help_shows_defaults_environment_examples_and_docs(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and f"docs/cli.md#slugbuild-{command}" in text
    assert "SLUGBUILD_VERBOSE" in text and "(default: auto)" not in text
    assert re.search(r"--color \{auto,always,never\}\s+colour the log: auto \(the default\)",
                     text)
    if command == "publish":
        assert "HEROKU_API_KEY" in text and "https://api.heroku.com" in text
    if command == "run":
        assert "(default: 5000)" in text and "(default: web)" in text
    if command == "compile":
        assert "(default: herokuish)" in text and "--metadata-output FILE" in text
    documented = (REPO / "docs" / "cli.md").read_text()
    assert f"## slugbuild {command}\n" in documented
    for name in re.findall(r"^  ([A-Z][A-Z0-9_]+) ", text, re.M):
        assert f"`{name}`" in documented, f"{name} is not in docs/cli.md"


def test_json_on_stdout_is_never_overwritten_by_the_metadata(tmp_path):
    out = tmp_path / "out.json"
    out.write_text("")
    with out.open("w") as stdout:
        result = subprocess.run(
            [sys.executable, "-m", "slugbuild", "compile", str(tmp_path), "-o",
             str(tmp_path / "out.tgz"), "--json"],
            stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120)
    assert result.returncode == 1
    assert re.findall(r"Error \[([a-z0-9-]+)\]", result.stderr) == ["output-not-writable"]
    assert "--metadata-output" in result.stderr
    assert json.loads(out.read_text())["error"]["code"] == "output-not-writable"
    assert not (tmp_path / "out.tgz").exists()


# --- a real build with a slow installer --------------------------------------------------

SLOW = ("import sys, time\n"
        "print('fake installer: first line', flush=True)\n"
        "time.sleep(2.5)\n"
        "print('fake installer: last line', flush=True)\n")


@pytest.mark.slow
@pytest.mark.alone  # it times lines of a live log: another worker's build slows them
def test_the_install_streams_live_with_a_heartbeat_and_slug_json_states_facts(
        tmp_path, cache_dir, monkeypatch):
    """An installer that prints, stays silent 2.5 s, and prints again: its first line is
    in the log before the install ends, a heartbeat fills the silence, and the log
    names neither the build's scratch directory nor the cache's runtime tree."""
    from slugbuild import compile_app, dependency_stage
    from slugbuild.proc import run_tool

    real_installer_for = dependency_stage.installer_for
    finished: list[float] = []

    class SlowInstaller:
        def __init__(self, real):
            self.real, self.name = real, real.name

        def plan(self, *args):
            return self.real.plan(*args)

        def prefetch(self, *args):
            return self.real.prefetch(*args)

        def install_baseline(self, *args):
            return self.real.install_baseline(*args)

        def install(self, job, plan):
            run_tool([sys.executable, "-c", SLOW], job.reporter, dict(os.environ))
            self.real.install(job, plan)
            finished.append(time.monotonic())

    # The runtime layer cached first (as on any warm machine): the build reaches the
    # dependency step at once, and from there its log is live.
    compile_app(make_app(tmp_path / "warm", MINIMAL), tmp_path / "warm.tgz",
                cache_dir=cache_dir, reporter=Reporter(quiet=True))
    monkeypatch.setattr(dependency_stage, "installer_for",
                        lambda *a: SlowInstaller(real_installer_for(*a)))
    # A requirements file no earlier build had: the layer is installed, not restored.
    app = make_app(tmp_path / "app", {**MINIMAL, "requirements.txt":
                                      f"six==1.17.0\n# {tmp_path.name} {time.time()}\n"})
    stream = TimedStream()
    (tmp_path / "out").mkdir()
    (tmp_path / "meta").mkdir()
    result = compile_app(app, tmp_path / "out" / "s.tgz", cache_dir=cache_dir,
                         metadata_output=tmp_path / "meta" / "s.json",
                         reporter=Reporter(stream, heartbeat_seconds=0.5))
    lines = [line for _, line in stream.timed]
    when = {line: moment for moment, line in stream.timed}
    step = next(line for line in lines if line.startswith("-----> Installing requirements"))
    assert re.fullmatch(r"-----> Installing requirements with pip-compatible uv "
                        r"\d+\.\d+\.\d+ \(every requirement pinned\)", step)
    first, last = "       fake installer: first line", "       fake installer: last line"
    assert lines.index(step) < lines.index(first) < lines.index(last)
    assert when[first] < finished[0] - 2.0  # shown while the installer still ran
    beats = [line for line in lines[lines.index(first):lines.index(last)] if "still" in line]
    assert beats and beats[0].startswith("       still installing dependencies (")
    text = stream.getvalue()
    assert str(cache_dir) not in text and str(tmp_path / "out") in text
    assert result.metadata_path == tmp_path / "meta" / "s.json"
    assert not (tmp_path / "out" / "s.json").exists()
    manager = json.loads(result.metadata_path.read_text())["package_manager"]
    from importlib.metadata import version

    assert (manager["installer"], manager["installer_version"]) == ("uv", version("uv"))
    assert "pinned" in manager["installer_reason"]
    assert manager["tools"] == [f"uv=={version('uv')}"]
    assert result.log == lines


@pytest.mark.slow
def test_the_command_on_a_terminal(tmp_path, cache_dir):
    """`slugbuild compile` under a pseudo-terminal: coloured steps; NO_COLOR and --quiet."""
    app = make_app(tmp_path / "app", MINIMAL)
    outputs = {}
    for label, extra_env, flags in (("tty", {}, []), ("no_color", {"NO_COLOR": "1"}, []),
                                    ("quiet", {}, ["--quiet"])):
        master, slave = pty.openpty()
        env = {name: value for name, value in os.environ.items() if name != "NO_COLOR"}
        env.update(TERM="xterm", **extra_env)
        process = subprocess.Popen(
            [sys.executable, "-m", "slugbuild", "compile", str(app), "-o",
             str(tmp_path / f"{label}.tgz"), "--cache-dir", str(cache_dir), *flags],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave, env=env)
        os.close(slave)
        outputs[label] = _read_all(master)
        os.close(master)
        assert process.wait(600) == 0, outputs[label]
    assert "\x1b[1m-----> Python app detected\x1b[0m" in outputs["tty"]
    assert "\x1b[1m" not in outputs["no_color"] and "-----> Python app detected" in \
        outputs["no_color"]
    assert "----->" not in outputs["quiet"]


def test_a_buildpacks_failure_output_is_shown_once(tmp_path, cache_dir):
    buildpack = make_buildpack(tmp_path / "bp", "echo '-----> Own header'\n"
                                                "echo 'BOOM happened'\nexit 3\n")
    app = make_app(tmp_path / "app", MINIMAL)
    result = run_cli("compile", app, "-o", tmp_path / "s.tgz", "--cache-dir", cache_dir,
                     "--buildpack", buildpack)
    assert result.returncode == 1
    assert result.stderr.count("BOOM happened") == 1
    assert "\n-----> Own header\n" in result.stderr
    assert "Error [buildpack-compile-failed]" in result.stderr


def test_errors_are_red_only_when_colour_is_asked_for(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    missing = str(tmp_path / "missing")
    assert main(["compile", missing, "--color", "always"]) == 1
    err = capsys.readouterr().err
    assert "\x1b[31m !     Error [app-dir-missing]: " in err
    assert all(line.startswith("\x1b[31m") for line in err.splitlines() if line)
    assert main(["compile", missing]) == 1  # captured stderr is no terminal: auto is off
    assert "\x1b[" not in capsys.readouterr().err
