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
