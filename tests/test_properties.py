"""Property-based tests of the parsers: any input gives a result or our own error."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from slugbuild import errors
from slugbuild.procfile import parse_procfile
from slugbuild.stage import IgnoreRules

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


@given(st.lists(st.text(max_size=30), max_size=10), st.text(max_size=60), st.booleans())
@settings(max_examples=300)
def test_ignore_rules_accept_any_pattern(lines, path, is_dir):
    assert IgnoreRules(lines).ignored(path, is_dir) in (True, False)


@given(st.lists(st.from_regex(r"[a-z]{1,8}(/[a-z]{1,8}){0,3}", fullmatch=True), min_size=1,
                max_size=5))
def test_literal_patterns_match_themselves(paths):
    rules = IgnoreRules(["/" + p for p in paths])
    assert all(rules.ignored(p, False) for p in paths)
