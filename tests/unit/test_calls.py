"""Tests for pyrowire.calls: user code answering with values, Deferreds or coroutines."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from pyrowire.calls import as_deferred, call_user, is_pending


def fired(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has already fired, raising its failure if it failed."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def failed(d: Deferred[Any], kind: type[BaseException]) -> BaseException:
    """The exception of a Deferred that has already failed with ``kind``."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    assert isinstance(box[0], Failure), f"the Deferred succeeded with {box[0]!r}"
    assert isinstance(box[0].value, kind)
    return box[0].value


def test_plain_value() -> None:
    """A plain return value arrives in an already-fired Deferred."""
    d = call_user(lambda a, b=0: a + b, 1, b=2)
    assert isinstance(d, Deferred)
    assert fired(d) == 3


def test_none_value() -> None:
    """None is a value like any other."""
    assert fired(call_user(lambda: None)) is None


def test_deferred_is_passed_through() -> None:
    """A returned Deferred is waited for, the result firing when it fires."""
    pending: Deferred[str] = Deferred()
    d = call_user(lambda: pending)
    assert not d.called
    pending.callback("later")
    assert fired(d) == "later"


def test_coroutine_is_run() -> None:
    """An async def function is run as a coroutine, its awaits resolved through Deferreds."""
    pending: Deferred[int] = Deferred()

    async def f(x: int) -> int:
        return x + await pending

    d = call_user(f, 40)
    assert not d.called
    pending.callback(2)
    assert fired(d) == 42


def test_synchronous_exception_becomes_failure() -> None:
    """An exception raised while calling becomes a failed Deferred, not a raise."""

    def boom() -> None:
        raise ValueError("no")

    assert str(failed(call_user(boom), ValueError)) == "no"


def test_coroutine_exception_becomes_failure() -> None:
    """An exception inside a coroutine fails the Deferred."""

    async def boom() -> None:
        raise KeyError("k")

    failed(call_user(boom), KeyError)


def test_failed_deferred_is_passed_through() -> None:
    """A returned Deferred that fails fails the result."""
    d: Deferred[Any] = Deferred()
    result = call_user(lambda: d)
    d.errback(RuntimeError("x"))
    failed(result, RuntimeError)


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
    assert fired(as_deferred("v")) == "v"
