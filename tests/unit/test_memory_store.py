"""What the in-memory store adds to fakeredis: time from a Clock, pops parked on Deferreds, a switch for Redis down.

What the queue does is pinned for both stores by tests/contract/test_store.py.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from pyrowire.errors import RedisUnavailable
from pyrowire.keys import DEDUPE_SECONDS
from pyrowire.testing.memory import MemoryStore
from tests.deferreds import failure_of, result_of

T = TypeVar("T")
W = "host:1:abcd"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """The result of an in-memory store call, which finishes without waiting."""
    return result_of(Deferred.fromCoroutine(coro))  # type: ignore[no-any-return]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> MemoryStore:
    return MemoryStore(clock, prefix="test")


def test_keys_expire_on_the_injected_clock(store: MemoryStore, clock: Clock) -> None:
    """De-duplication lasts DEDUPE_SECONDS of the clock's time, then the MessageSid is new again."""
    run(store.accept("echo", "SM1", "a", "p1"))
    clock.advance(DEDUPE_SECONDS)
    assert run(store.accept("echo", "SM1", "a", "p2")) == "a"
    clock.advance(0.001)  # as Redis: expired once its time is strictly past
    assert run(store.accept("echo", "SM1", "a", "p2")) is None
    assert run(store.lrange(store.keys("echo").queue)) == ["p2", "p1"]


def test_a_parked_pop_times_out_on_the_clock(store: MemoryStore, clock: Clock) -> None:
    """A pop parked on an empty queue fires with None when its timeout passes on the clock, not before."""
    fired: list[object] = []
    store.popper().pop(store.keys("echo"), W, 5).addBoth(fired.append)
    clock.advance(4.9)
    assert fired == []
    clock.advance(0.1)
    assert fired == [None]
    run(store.accept("echo", "SM1", "a", "p1"))
    assert run(store.llen(store.keys("echo").queue)) == 1


def test_a_parked_pop_fires_in_the_same_turn_as_the_push(store: MemoryStore) -> None:
    """A parked pop is served by the command that queued its message, with no reactor turn in between."""
    d = store.popper().pop(store.keys("echo"), W, 0)
    run(store.accept("echo", "SM1", "a", "p1"))
    assert result_of(d) == "p1"


def test_down_fails_commands_and_parked_pops_until_it_is_back(store: MemoryStore) -> None:
    """With ``down`` set, commands raise RedisUnavailable and parked pops fail; clearing it brings Redis back."""
    popper = store.popper()
    parked = popper.pop(store.keys("echo"), W, 0)
    store.down = True
    failure_of(parked, RedisUnavailable)
    failure_of(Deferred.fromCoroutine(store.ping()), RedisUnavailable)
    failure_of(popper.pop(store.keys("echo"), W, 0), RedisUnavailable)
    assert not store.connected and not popper.connected
    store.down = False
    assert run(store.ping())
    assert run(store.accept("echo", "SM1", "a", "p1")) is None
    assert result_of(popper.pop(store.keys("echo"), W, 0)) == "p1"


def test_a_stopped_store_starts_again_with_its_data(store: MemoryStore) -> None:
    """stop refuses commands as a closed pool does; start accepts them again, with the data kept."""
    run(store.accept("echo", "SM1", "a", "p1"))
    result_of(store.stop())
    failure_of(Deferred.fromCoroutine(store.llen(store.keys("echo").queue)), RedisUnavailable)
    store.start()
    assert run(store.llen(store.keys("echo").queue)) == 1
