"""When to try again: every backoff pyrowire uses (Twilio sends, handler re-runs, Redis
reconnects), Retry-After parsing, and a clock-driven sleep.

Modelled on Twisted's ``backoffPolicy`` (``twisted.application.internet``): the delay is
a pure function of the attempt number, and the randomness comes in as a parameter, so
tests pass a constant and get exact delays.

Jitter is "equal jitter": half of the exponential delay is fixed and the other half is
random.  Full jitter (anything from 0 to the delay) spreads competing clients best, but
it can also draw a delay near 0, and with only a handful of attempts per send a retry
thrown away a few milliseconds after a 5xx buys nothing.  Equal jitter still spreads the
workers of a deployment apart (so they do not hammer Twilio in lock-step after an
outage) while every retry is guaranteed to wait at least half its nominal delay.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

# The longest Retry-After honoured: a server asking for more is waited on for this long.
MAX_RETRY_AFTER = 60.0
_SECONDS = re.compile(r"^[0-9]+(?:\.[0-9]+)?$")


def backoff(
    attempt: int,
    *,
    initial: float = 0.5,
    factor: float = 2.0,
    maximum: float = 30.0,
    jitter: Callable[[], float] = random.random,
) -> float:
    """The delay before retry number ``attempt`` (0 for the first retry), in seconds.

    The nominal delay ``initial * factor ** attempt`` is capped at ``maximum``; the result
    lies in ``[nominal / 2, nominal]``, placed there by ``jitter()`` (a number in [0, 1]).
    """
    # the exponent is bounded so that a huge attempt number cannot overflow a float
    nominal = min(initial * factor ** min(max(attempt, 0), 100), maximum)
    share = min(max(jitter(), 0.0), 1.0)
    return nominal / 2 + share * nominal / 2


def handler_delay(attempt: int) -> float:
    """Seconds before running a failed handler again after its ``attempt``-th run: 1, 2, 4 … capped at 60.

    No jitter: a handler's retries are spread by when each message failed.
    """
    return backoff(attempt - 1, initial=1.0, maximum=60.0, jitter=lambda: 1.0)


# the waits between tries while Redis is away: a blip is bridged at once, an outage polled every 5 s
REDIS_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)


def redis_delay(failures: int) -> float:
    """Seconds before trying Redis again after ``failures`` failed tries in a row (0 for the first)."""
    return REDIS_DELAYS[min(max(failures, 0), len(REDIS_DELAYS) - 1)]


def retry_after(
    header: bytes | str | None, now: float | None = None, maximum: float = MAX_RETRY_AFTER
) -> float | None:
    """The wait a ``Retry-After`` header asks for, in seconds, capped at ``maximum``.

    Both forms of RFC 9110 are understood: delay-seconds (``"1"``; Twilio also sends
    fractions such as ``"1.5"``) and an HTTP-date, measured from ``now`` (POSIX seconds,
    ``time.time()`` when None).  A date in the past is 0; a missing or unreadable header
    is None.
    """
    if header is None:
        return None
    text = header.decode("latin-1") if isinstance(header, bytes) else header
    text = text.strip()
    if not text:
        return None
    if _SECONDS.match(text):
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is read as such
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), maximum)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts per send, the backoff curve, and an overall deadline.

    ``max_attempts`` counts every attempt, the first included (1 means no retry).
    ``deadline`` (seconds, None for none) bounds the time from the first attempt to the
    start of the last one: a retry that would start later is not made.
    """

    max_attempts: int = 5
    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    deadline: float | None = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial < 0 or self.maximum < 0:
            raise ValueError("initial and maximum must not be negative")
        if self.factor < 1:
            raise ValueError("factor must be at least 1")
        if self.deadline is not None and self.deadline < 0:
            raise ValueError("deadline must not be negative")

    def delay(self, attempt: int, jitter: Callable[[], float] = random.random) -> float:
        """The backoff before retry number ``attempt`` (0 for the first retry)."""
        return backoff(attempt, initial=self.initial, factor=self.factor, maximum=self.maximum, jitter=jitter)


async def sleep(clock: IReactorTime, seconds: float) -> None:
    """Wait ``seconds`` on ``clock``; cancelling the caller's Deferred cancels the wait."""
    await deferLater(clock, seconds)
