"""The backoff policy, Retry-After parsing and the clock-driven sleep of pyrowire.retry."""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from pyrowire.retry import MAX_RETRY_AFTER, RetryPolicy, backoff, handler_delay, redis_delay, retry_after, sleep

NOW = 1_700_000_000.0


def fixed(value: float) -> Any:
    """A jitter that always draws ``value``."""
    return lambda: value


def test_backoff_doubles_from_the_initial_delay() -> None:
    """With the top jitter the delays are 0.5, 1, 2, 4 and 8 seconds."""
    assert [backoff(n, jitter=fixed(1.0)) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_backoff_is_capped_at_the_maximum() -> None:
    """Delays stop growing at ``maximum``, even for an attempt number that would overflow a float."""
    assert [backoff(n, jitter=fixed(1.0)) for n in (6, 7, 10)] == [30.0, 30.0, 30.0]
    assert backoff(10_000, jitter=fixed(1.0)) == 30.0
    assert backoff(3, initial=1.0, factor=3.0, maximum=10.0, jitter=fixed(1.0)) == 10.0


def test_equal_jitter_keeps_at_least_half_the_delay() -> None:
    """Jitter 0 gives half the nominal delay, 0.5 three quarters, 1 all of it."""
    assert [backoff(2, jitter=fixed(j)) for j in (0.0, 0.5, 1.0)] == [1.0, 1.5, 2.0]


def test_jitter_is_injectable_and_clamped() -> None:
    """The jitter callable is called once per delay, and a draw outside [0, 1] is clamped."""
    draws = iter([0.25, 7.0, -3.0])
    assert [backoff(1, jitter=lambda: next(draws)) for _ in range(3)] == [0.625, 1.0, 0.5]


def test_default_jitter_stays_in_bounds() -> None:
    """With the default random jitter every delay lies between half and all of the nominal one."""
    for n in range(8):
        nominal = min(0.5 * 2**n, 30.0)
        assert all(nominal / 2 <= backoff(n) <= nominal for _ in range(50))


def test_negative_attempt_is_the_first() -> None:
    """A negative attempt number is treated as the first retry."""
    assert backoff(-1, jitter=fixed(1.0)) == 0.5


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"1", 1.0),
        ("120", 60.0),
        (b" 2 ", 2.0),
        ("1.5", 1.5),
        ("0", 0.0),
        (None, None),
        (b"", None),
        ("soon", None),
        ("-1", None),
        ("1e3", None),
    ],
)
def test_retry_after_seconds(header: bytes | str | None, expected: float | None) -> None:
    """Retry-After in seconds is read (fractions too) and capped; missing or unreadable gives None."""
    assert retry_after(header, now=NOW) == expected


def test_retry_after_http_date() -> None:
    """Retry-After as an HTTP-date is measured from ``now``; a past date is 0; far future is capped."""
    assert retry_after(formatdate(NOW + 30, usegmt=True), now=NOW) == 30.0
    assert retry_after(formatdate(NOW + 30, usegmt=True).encode(), now=NOW) == 30.0
    assert retry_after(formatdate(NOW - 30, usegmt=True), now=NOW) == 0.0
    assert retry_after(formatdate(NOW + 3600, usegmt=True), now=NOW) == MAX_RETRY_AFTER
    assert retry_after("Mon, 32 Foo 2024 99:99:99 GMT", now=NOW) is None


def test_retry_after_maximum_is_a_parameter() -> None:
    """The cap on Retry-After can be chosen by the caller."""
    assert retry_after("90", maximum=120.0) == 90.0
    assert retry_after("90", maximum=5.0) == 5.0


def test_policy_defaults_and_delay() -> None:
    """The default policy makes 5 attempts with a 120 s deadline and delays of 0.5 s doubling to 30 s."""
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.initial, policy.maximum, policy.deadline) == (5, 0.5, 30.0, 120.0)
    assert [policy.delay(n, fixed(1.0)) for n in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert RetryPolicy(initial=2.0, factor=1.0).delay(5, fixed(0.0)) == 1.0


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"initial": -1.0}, {"maximum": -1.0}, {"factor": 0.5}, {"deadline": -1.0}],
)
def test_policy_refuses_nonsense(kwargs: dict[str, Any]) -> None:
    """A policy with no attempt, a negative delay or deadline, or a shrinking factor is a ValueError."""
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_sleep_waits_on_the_clock_and_can_be_cancelled() -> None:
    """sleep fires after exactly the delay on the clock, and cancelling it removes the delayed call."""
    clock = Clock()
    d = Deferred.fromCoroutine(sleep(clock, 2.0))
    clock.advance(1.999)
    assert not d.called
    clock.advance(0.001)
    assert d.called
    cancelled = Deferred.fromCoroutine(sleep(clock, 5.0))
    cancelled.cancel()
    results: list[Any] = []
    cancelled.addErrback(results.append)
    assert isinstance(results[0], Failure) and results[0].check(CancelledError)
    assert clock.getDelayedCalls() == []


def test_handler_delay_doubles_from_one_second_without_jitter() -> None:
    """A failed handler is run again after 1, 2, 4 … seconds, capped at a minute."""
    assert [handler_delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert handler_delay(30) == 60.0


def test_redis_delay_bridges_a_blip_then_polls_every_five_seconds() -> None:
    """Reconnect waits start short and settle at 5 s."""
    assert [redis_delay(n) for n in range(7)] == [0.1, 0.5, 1.0, 2.0, 5.0, 5.0, 5.0]
