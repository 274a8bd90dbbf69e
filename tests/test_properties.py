"""Property-based tests of the parsers: any input gives a result or our own error."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from slugbuild import errors
from slugbuild.procfile import parse_procfile

NAMES = st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True)
COMMANDS = st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\n\r"),
                   min_size=1, max_size=80).map(str.strip).filter(bool)


@given(st.dictionaries(NAMES, COMMANDS, min_size=1, max_size=8))
def test_procfile_round_trip(processes):
    text = "\n".join(f"{name}: {command}" for name, command in processes.items())
    assert parse_procfile("# header\n\n" + text + "\n") == processes


@given(st.text(max_size=400))
@settings(max_examples=300)
def test_procfile_never_fails_unexpectedly(text):
    try:
        parsed = parse_procfile(text)
    except errors.SlugbuildError as error:
        assert error.code == "procfile-malformed"
        assert "line " in error.found
    else:
        assert all(command.strip() == command and command for command in parsed.values())


@given(st.text(max_size=200))
@settings(max_examples=300)
def test_version_file_parsers_only_raise_their_error(text):
    from slugbuild.versions import _parse_python_version, _parse_runtime_txt

    for parse in (_parse_python_version, _parse_runtime_txt):
        try:
            version = parse(text)
        except errors.SlugbuildError as error:
            assert error.code == "invalid-python-version"
        else:
            assert all(part.isdigit() for part in version.split("."))


REQUIREMENT_LINES = st.one_of(
    st.from_regex(r"[A-Za-z][A-Za-z0-9._-]{0,10}(==[0-9]{1,3}(\.[0-9]{1,3}){0,2})?",
                  fullmatch=True),
    st.sampled_from(["-r other.txt", "-rother.txt", "--requirement=other.txt",
                     "-c constraints.txt", "-r missing.txt", "-r ../outside.txt",
                     "# comment", "", "six==1.17.0 \\", "--hash=sha256:abc",
                     "-e .", "--index-url https://example.invalid/simple",
                     "pkg @ https://example.invalid/pkg.whl", "./local"]),
    st.text(max_size=40),
)


@given(st.lists(REQUIREMENT_LINES, max_size=12), st.lists(REQUIREMENT_LINES, max_size=6))
@settings(max_examples=200, deadline=None)
def test_requirements_parser_only_raises_its_own_errors(main_lines, other_lines):
    import tempfile
    from pathlib import Path

    from slugbuild.installers.requirements import requirements_files, unpinned_requirements

    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp) / "app"
        app.mkdir()
        (app / "requirements.txt").write_text("\n".join(main_lines) + "\n")
        (app / "other.txt").write_text("\n".join(other_lines) + "\n")
        (app / "constraints.txt").write_text("six<2\n")
        try:
            files = requirements_files(app, "requirements.txt")
        except errors.SlugbuildError as error:
            # file-not-text: NUL bytes or an unknown PEP 263 coding line (textfiles.py)
            assert error.code in ("requirements-file-missing", "requirements-outside-app",
                                  "file-not-text")
            return
        assert files[0] == "requirements.txt"
        assert len(files) == len(set(files))
        assert all((app / rel).is_file() for rel in files)
        assert all(isinstance(line, str) for line in unpinned_requirements(app,
                                                                           "requirements.txt"))


@given(st.sampled_from(["Pipfile.lock", "uv.lock", "poetry.lock"]),
       st.sampled_from(['[]', '"x"', '{"default": []}', '{"default": {"a": 1}}', 'package = 3',
                        'package = [1, "x"]', '[[package]]\nsource = "x"',
                        '[[package]]\nname = "a"\nsource = { directory = "." }']))
@settings(max_examples=50, deadline=None)
def test_lock_files_of_the_wrong_shape_do_not_crash(lock_file, text):
    import tempfile
    from pathlib import Path

    from slugbuild.installers.locks import local_source_files

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / lock_file).write_text(text)
        assert local_source_files(Path(tmp), lock_file) == []


# Characters that matter to shell words and to the log's masking, among ordinary ones.
SHELL_TEXT = st.text(st.sampled_from(list(" \t\r\n'\"\\#;|$=:/?&@x1é\x0b\x00\x1b\x85")),
                     max_size=40)


@given(SHELL_TEXT)
@settings(max_examples=500)
def test_command_words_are_shlexs(text):
    """The import check's linear word splitter gives shlex.split's words and errors."""
    import shlex

    from slugbuild.shellwords import split_command

    def outcome(split):
        try:
            return split(text)
        except ValueError as error:
            return ("ValueError", str(error))

    assert outcome(split_command) == outcome(shlex.split)


def test_a_long_command_word_is_split_whole():
    """shlex builds a word a character at a time: a 1 MiB word took minutes."""
    from slugbuild.shellwords import split_command

    word = "x" * (1024 ** 2)
    assert split_command(f'web: python -m http.server {word} "a\\"{word}"') == [
        "web:", "python", "-m", "http.server", word, f'a"{word}']


@given(st.text(st.sampled_from(list("ab:/@?&;=.-_ \tXsigtoken\x00\x1b\x7f\x9f\u2028é")),
               max_size=60))
@settings(max_examples=300)
def test_masking_skips_only_lines_its_patterns_cannot_match(text):
    """The log skips a pattern when the line lacks the pattern's literal (``://``,
    ``=``, an unprintable character): the result is the full scan's."""
    from slugbuild import redact

    scanned = redact._SECRET_QUERY.sub(r"\g<name>***",
                                       redact._USERINFO.sub(r"\g<scheme>***@", text))
    scanned = redact._CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", scanned)
    assert redact.mask(text) == scanned
