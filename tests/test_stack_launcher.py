"""The image launcher, run with sh directly on an app tree (no container needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from slugbuild.oci.launcher import DEFAULT_PORT, launcher_files, launcher_script

PROFILE = 'export PATH="$HOME/bin:$PATH"\nexport FROM_PROFILE="profile saw HOME=$HOME"\n'
TYPES = {
    "web": 'echo "web on $PORT as $DYNO in $(pwd) via '
           '$(if [ -n "${BASH_VERSION:-}" ]; then echo bash; else echo sh; fi)"',
    "worker": "echo worker && echo \"$FROM_PROFILE\" && echo \"lang=$LANG\"",
    "on": "echo a type named on",
}
CONFIG = {"LANG": "en_US.UTF-8", "QUOTED": "it's $HOME `x`"}


def _install(root: Path, types: dict[str, str] = TYPES) -> tuple[Path, Path]:
    """An app at root/app with a profile script and a tool on its PATH, and the
    launcher's files at root/slugbuild, laid out as in an image."""
    app, launcher_dir = root / "app", root / "slugbuild"
    (app / ".profile.d").mkdir(parents=True)
    (app / ".profile.d" / "python.sh").write_text(PROFILE)
    (app / "bin").mkdir()
    tool = app / "bin" / "show-args"
    tool.write_text('#!/bin/sh\nfor a in "$@"; do printf "[%s]" "$a"; done; echo\n')
    tool.chmod(0o755)
    for path, (data, mode) in launcher_files(types, CONFIG, str(launcher_dir),
                                             str(app)).items():
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(mode)
    return app, launcher_dir / "launch"


def _launch(launch: Path, *args: str, env: dict[str, str] | None = None,
            shell: str = "/bin/sh") -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"]}
    return subprocess.run([shell, str(launch), *args], capture_output=True, text=True,
                          env={**base, **(env or {})}, timeout=30)


@pytest.fixture
def installed(tmp_path) -> tuple[Path, Path]:
    return _install(tmp_path)


def test_no_argument_runs_web_with_heroku_defaults_through_bash(installed):
    app, launch = installed
    done = _launch(launch)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"web on {DEFAULT_PORT} as web.1 in {app} via bash\n"
    given = _launch(launch, "web", env={"PORT": "8080", "DYNO": "web.3"})
    assert given.stdout.startswith("web on 8080 as web.3 ")


def test_a_named_type_sees_profile_and_release_defaults(installed):
    app, launch = installed
    done = _launch(launch, "worker")
    assert done.stdout.splitlines() == ["worker", f"profile saw HOME={app}", "lang=en_US.UTF-8"]
    overridden = _launch(launch, "worker", env={"LANG": "C.UTF-8"})
    assert overridden.stdout.splitlines()[-1] == "lang=C.UTF-8"
    assert _launch(launch, "on").stdout == "a type named on\n"


def test_one_off_keeps_every_argument_as_given(installed):
    app, launch = installed
    args = ["a b", "it's", '"q"', "$HOME", "*", "", "x\ny"]
    done = _launch(launch, "--", "show-args", *args)  # found through .profile.d's PATH
    assert done.returncode == 0, done.stderr
    assert done.stdout == "".join(f"[{a}]" for a in args) + "\n"
    # One argument is a command line, as `heroku run "..."`.
    line = _launch(launch, "--", 'echo "$DYNO" && show-args "$HOME" | tr -d "[]"')
    assert line.stdout.splitlines() == ["run.1", str(app)]
    quoted = _launch(launch, "--", "sh", "-c", 'printf "%s" "$QUOTED"')
    assert quoted.stdout == CONFIG["QUOTED"]


def test_exit_status_and_signals_belong_to_the_command(installed):
    _, launch = installed
    assert _launch(launch, "--", "sh", "-c", "exit 7").returncode == 7
    pid = _launch(launch, "--", "sh", "-c", 'echo $$; echo "$PPID"')
    # exec all the way: the command is not a child of the launcher's shell
    own, parent = pid.stdout.split()
    assert own != parent


def test_unknown_types_and_extra_arguments_are_refused_clearly(installed):
    _, launch = installed
    unknown = _launch(launch, "clock")
    assert unknown.returncode == 1
    assert "no process type 'clock'" in unknown.stderr and "on web worker" in unknown.stderr
    for bad in (["../etc/passwd"], [".hidden"], ["web", "extra"], ["--"]):
        refused = _launch(launch, *bad)
        assert refused.returncode == 1 and "slugbuild launcher:" in refused.stderr, bad


def test_without_bash_it_runs_everything_with_sh(tmp_path):
    app, launch = _install(tmp_path)
    tools = tmp_path / "tools"  # a run image without bash: only sh and a few tools
    tools.mkdir()
    for name in ("cat", "ls", "tr", "printf", "pwd"):
        os.symlink(shutil.which(name), tools / name)
    os.symlink("/bin/dash", tools / "sh")
    done = _launch(launch, env={"PATH": str(tools)}, shell="/bin/dash")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"web on {DEFAULT_PORT} as web.1 in {app} via sh\n"


def test_names_that_are_not_file_names_are_refused():
    with pytest.raises(ValueError):
        launcher_files({"../x": "echo"})
    with pytest.raises(ValueError):
        launcher_files({"web": "x"}, {"BAD NAME": "1"})
    with pytest.raises(ValueError):
        launcher_script("/app dir")


@pytest.mark.slow
def test_launcher_runs_django_checks_in_a_real_slug(django_unpacked, tmp_path):
    launch = tmp_path / "slugbuild" / "launch"
    for path, (data, mode) in launcher_files({"web": "true"}, {}, str(launch.parent),
                                             str(django_unpacked)).items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
        Path(path).chmod(mode)
    check = _launch(launch, "--", "python", "manage.py", "check")
    assert check.returncode == 0, check.stderr
    assert "no issues" in check.stdout
    argv = _launch(launch, "--", "python", "-c", "import sys; print(sys.argv[1:])", "a b", "c'd")
    assert argv.stdout == "['a b', \"c'd\"]\n"
