"""SLUGBUILD_* switches read one set of words (envflag.py). A switch that guards
something falls to its safe side on a word it does not know: SHOW_SECRETS=false
showed every config var (only empty and 0 meant no), and READONLY=on let an
untrusted build push into the shared cache."""

from __future__ import annotations

import pytest

from slugbuild import incremental, layer_artifact, layer_overlay, python_buildpack
from slugbuild.redact import forget_secrets, mask, register_secrets, showing_secrets
from slugbuild.runtime.resolve import RuntimeOptions
from slugbuild.versions import allow_eol_from_env


@pytest.mark.parametrize(("value", "shown"), [
    ("1", True), ("true", True), (" YES ", True), ("on", True),
    ("0", False), ("false", False), ("no", False), ("off", False), ("", False),
    ("2", False), ("please", False),
])
def test_show_secrets_shows_them_only_when_asked_in_so_many_words(
        monkeypatch: pytest.MonkeyPatch, value: str, shown: bool) -> None:
    monkeypatch.setenv("SLUGBUILD_SHOW_SECRETS", value)
    register_secrets(["s3cr3t-value"])
    try:
        assert showing_secrets() is shown
        assert ("s3cr3t-value" in mask("DB s3cr3t-value")) is shown
    finally:
        forget_secrets()


def _set(monkeypatch: pytest.MonkeyPatch, value: str | None, *names: str) -> None:
    """Every switch of ``names`` set to ``value`` (None: unset)."""
    for name in names:
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


@pytest.mark.parametrize(("value", "on"), [
    (None, True), ("1", True), ("", False), ("0", False), ("false", False), ("off", False),
    ("no", False), ("maybe", True),
])
def test_the_off_switches_read_the_same_words(monkeypatch: pytest.MonkeyPatch,
                                              value: str | None, on: bool) -> None:
    _set(monkeypatch, value, "SLUGBUILD_INCREMENTAL", "SLUGBUILD_LAYER_VIEWS")
    assert python_buildpack.layer_views_wanted() is on
    why = incremental.why_not_incremental(None, {}, None, True, False)  # type: ignore[arg-type]
    assert (why == "SLUGBUILD_INCREMENTAL=0") is not on


@pytest.mark.parametrize(("value", "on"), [
    (None, False), ("", False), ("1", True), ("true", True), (" On ", True),
    ("0", False), ("false", False), ("no", False), ("off", False), ("2", False),
    ("please", False),
])
def test_guarding_runtime_switches_turn_on_only_in_so_many_words(
        monkeypatch: pytest.MonkeyPatch, value: str | None, on: bool) -> None:
    """SLUGBUILD_ALLOW_EOL_PYTHON=false built an end-of-life Python, and
    SLUGBUILD_PYTHON_PATCH_FALLBACK=off another patch than the pin (only empty and 0
    meant no); SLUGBUILD_OFFLINE=maybe stays off the network."""
    _set(monkeypatch, value, "SLUGBUILD_ALLOW_EOL_PYTHON", "SLUGBUILD_PYTHON_PATCH_FALLBACK",
         "SLUGBUILD_OFFLINE")
    options = RuntimeOptions.from_env()
    assert allow_eol_from_env() is on
    assert options.allow_eol is on and options.patch_fallback is on
    assert options.offline is (on or value in ("2", "please"))


@pytest.mark.parametrize(("value", "on"), [
    (None, True), ("1", True), ("", False), ("0", False), ("false", False), ("OFF", False),
    ("no", False), ("maybe", True),
])
def test_overlay_and_part_only_switches_read_the_same_words(
        monkeypatch: pytest.MonkeyPatch, value: str | None, on: bool) -> None:
    _set(monkeypatch, value, "SLUGBUILD_LAYER_OVERLAY", "SLUGBUILD_PART_ONLY")
    assert layer_overlay.overlay_wanted() is on
    assert layer_artifact.part_only_wanted() is on


@pytest.mark.parametrize(("value", "on"), [
    (None, True), ("1", True), ("", True), ("0", False), ("false", False), ("OFF", False),
    ("no", False), ("maybe", True), ("2", True),
])
def test_the_cache_seal_stays_on_unless_turned_off_in_so_many_words(
        monkeypatch: pytest.MonkeyPatch, value: str | None, on: bool) -> None:
    """SLUGBUILD_SEAL_CACHE guards the shared cache from build steps: empty or a word it
    does not know keeps the seal (step_jail.py)."""
    from slugbuild.step_jail import seal_wanted
    _set(monkeypatch, value, "SLUGBUILD_SEAL_CACHE")
    assert seal_wanted() is on
