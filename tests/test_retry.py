"""retry.py: the one retry loop (attempts, back-off, which failures are retried)."""

from __future__ import annotations

import pytest

from slugbuild.retry import GaveUp, backoff, retrying


class Flaky(Exception):
    def __init__(self, retryable: bool) -> None:
        super().__init__("flaky")
        self.retryable = retryable


def test_a_failure_worth_retrying_is_tried_again_until_it_passes_or_attempts_run_out():
    calls, told = [], []

    def action() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise Flaky(retryable=True)
        return "done"

    assert retrying(action, attempts=3, failure=Flaky, delay=lambda attempt: 0.0,
                    before_retry=lambda attempt, failed: told.append(attempt)) == "done"
    assert len(calls) == 3 and told == [1, 2]

    calls.clear()
    with pytest.raises(GaveUp) as gave_up:
        retrying(action, attempts=2, failure=Flaky, delay=lambda attempt: 0.0)
    assert gave_up.value.attempts == 2 and isinstance(gave_up.value.last, Flaky)


def test_a_failure_not_worth_retrying_or_of_another_kind_ends_at_once():
    def refused() -> None:
        raise Flaky(retryable=False)

    with pytest.raises(GaveUp) as gave_up:
        retrying(refused, attempts=5, failure=Flaky, retryable=lambda f: f.retryable,
                 delay=lambda attempt: 0.0)
    assert gave_up.value.attempts == 1

    def broken() -> None:
        raise KeyError("a bug, not a network failure")

    with pytest.raises(KeyError):
        retrying(broken, attempts=5, failure=Flaky, delay=lambda attempt: 0.0)


def test_backoff_doubles_and_is_capped():
    assert [backoff(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]


def test_the_nltk_index_is_read_again_after_a_503_but_not_after_a_404(tmp_path, monkeypatch):
    """The loop in use: nltk_data's GET retries what may pass and stops on what will not."""
    import http.server

    from slugbuild import errors, nltk_data, retry

    from .helpers import serve_directory

    monkeypatch.setattr(retry.time, "sleep", lambda seconds: None)
    (tmp_path / "index.xml").write_text("<nltk_data/>")
    served: list[str] = []

    class Flaky(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            served.append(self.path)
            if self.path == "/index.xml" and len(served) == 1:
                self.send_error(503)
                return
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    with serve_directory(tmp_path, Flaky) as base:
        assert nltk_data._get(f"{base}/index.xml", "index", None) == b"<nltk_data/>"
        assert served == ["/index.xml", "/index.xml"]
        served.clear()
        with pytest.raises(errors.SlugbuildError) as caught:
            nltk_data._get(f"{base}/missing.xml", "index", None)
        assert served == ["/missing.xml"] and "404" in str(caught.value)


def test_an_nltk_host_that_does_not_resolve_is_said_plainly_and_not_retried(monkeypatch):
    """No DNS (a build machine offline): one attempt, and the reason in a few words,
    as a runtime download gives it, not urllib3's exception repr cut mid-word."""
    import requests

    from slugbuild import errors, nltk_data, retry

    monkeypatch.setattr(retry.time, "sleep", lambda seconds: None)
    calls: list[str] = []
    url = "https://nltk-mirror.invalid/index.xml"

    def unresolvable(asked: str, **_kwargs: object) -> None:
        calls.append(asked)
        error = requests.exceptions.ConnectionError(
            "HTTPSConnectionPool(host='nltk-mirror.invalid', port=443): Max retries exceeded "
            "(Caused by NameResolutionError(\"HTTPSConnection(host='nltk-mirror.invalid'\"))")
        error.request = requests.Request("GET", asked).prepare()
        raise error

    monkeypatch.setattr(nltk_data.requests, "get", unresolvable)
    with pytest.raises(errors.SlugbuildError) as caught:
        nltk_data._get(url, "index", None)
    assert calls == [url]
    assert caught.value.code == "nltk-index-unusable"
    assert "cannot resolve the host name nltk-mirror.invalid (no DNS or no network)" \
        in caught.value.found
    assert "HTTPSConnectionPool" not in caught.value.found
