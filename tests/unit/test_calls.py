"""Tests for pyrowire.calls: user code answering with values, Deferreds or coroutines."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed

from pyrowire.calls import as_deferred, call_user, is_pending
from tests.deferreds import failure_of, result_of


def test_plain_value() -> None:
    """A plain return value arrives in an already-fired Deferred."""
    d = call_user(lambda a, b=0: a + b, 1, b=2)
    assert isinstance(d, Deferred)
    assert result_of(d) == 3


def test_none_value() -> None:
    """None is a value like any other."""
    assert result_of(call_user(lambda: None)) is None


def test_deferred_is_passed_through() -> None:
    """A returned Deferred is waited for, the result firing when it fires."""
    pending: Deferred[str] = Deferred()
    d = call_user(lambda: pending)
    assert not d.called
    pending.callback("later")
    assert result_of(d) == "later"


def test_coroutine_is_run() -> None:
    """An async def function is run as a coroutine, its awaits resolved through Deferreds."""
    pending: Deferred[int] = Deferred()

    async def f(x: int) -> int:
        return x + await pending

    d = call_user(f, 40)
    assert not d.called
    pending.callback(2)
    assert result_of(d) == 42


def test_synchronous_exception_becomes_failure() -> None:
    """An exception raised while calling becomes a failed Deferred, not a raise."""

    def boom() -> None:
        raise ValueError("no")

    assert str(failure_of(call_user(boom), ValueError)) == "no"


def test_coroutine_exception_becomes_failure() -> None:
    """An exception inside a coroutine fails the Deferred."""

    async def boom() -> None:
        raise KeyError("k")

    failure_of(call_user(boom), KeyError)


def test_failed_deferred_is_passed_through() -> None:
    """A returned Deferred that fails fails the result."""
    d: Deferred[Any] = Deferred()
    result = call_user(lambda: d)
    d.errback(RuntimeError("x"))
    failure_of(result, RuntimeError)


def test_is_pending() -> None:
    """Deferreds and coroutines are pending; plain values, even generators, are not."""

    async def co() -> None:
        return None

    coroutine = co()
    assert is_pending(succeed(1))
    assert is_pending(coroutine)
    coroutine.close()
    assert not is_pending(1)
    assert not is_pending(None)
    assert not is_pending(x for x in range(0))


def test_as_deferred_wraps_a_value() -> None:
    """A plain value becomes a fired Deferred."""
    assert result_of(as_deferred("v")) == "v"
