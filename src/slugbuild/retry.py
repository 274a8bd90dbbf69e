"""The one retry loop: try an action a few times, backing off, for failures that may pass.

Network reads (runtime archives, index listings, NLTK data) fail transiently:
a dropped connection, a 5xx, a 429. Each caller says which of its failures are
worth another attempt; the loop, the back-off and the count live here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
E = TypeVar("E", bound=Exception)


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): 0.5, 1, 2, 4, 4, …"""
    return min(0.5 * 2.0 ** (attempt - 1), 4.0)


class GaveUp(Exception, Generic[E]):
    """The action failed for good: out of attempts, or a failure not worth retrying.

    ``last`` is its last failure, ``attempts`` how many attempts were made.
    """

    def __init__(self, last: E, attempts: int) -> None:
        super().__init__(str(last))
        self.last = last
        self.attempts = attempts


def retrying(action: Callable[[], T], *, attempts: int, failure: type[E],
             retryable: Callable[[E], bool] = lambda failed: True,
             before_retry: Callable[[int, E], None] | None = None,
             delay: Callable[[int], float] = backoff) -> T:
    """``action()``'s result, trying up to ``attempts`` times.

    A ``failure`` it raises is retried, after ``delay(attempt)`` seconds, while
    ``retryable`` says so (``before_retry(attempt, failed)`` is told first);
    then ``GaveUp`` is raised from it. Any other exception passes through.
    """
    attempts = max(1, attempts)
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except failure as failed:
            if not retryable(failed) or attempt == attempts:
                raise GaveUp(failed, attempt) from failed
            if before_retry is not None:
                before_retry(attempt, failed)
            time.sleep(delay(attempt))
    raise AssertionError("unreachable: the last attempt returns or raises")
