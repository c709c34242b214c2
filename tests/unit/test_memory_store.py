"""MemoryStore, the in-memory twin of RedisStore, pinned to the Lua scripts' semantics."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock

from pyrowire.errors import RedisUnavailable
from pyrowire.keys import DEDUPE_SECONDS
from pyrowire.memory_store import MemoryStore
from tests.deferreds import result_of

T = TypeVar("T")
W = "host:1:abcd"


def run(coro: Coroutine[Any, Any, T] | Deferred[T]) -> T:
    """The result of an in-memory store call, which finishes without waiting."""
    d = coro if isinstance(coro, Deferred) else Deferred.fromCoroutine(coro)
    return result_of(d)  # type: ignore[no-any-return]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> MemoryStore:
    return MemoryStore(clock, prefix="test")


def test_accept_queues_once_and_returns_the_prior_answer(store: MemoryStore) -> None:
    """A second accept of the same sid answers the first answer and queues nothing more."""
    assert run(store.accept("echo", "SM1", "a", "p1")) is None
    assert run(store.accept("echo", "SM1", "v:length", "p1-again")) == "a"
    assert run(store.lrange(store.keys("echo").queue)) == ["p1"]


def test_accept_without_payload_remembers_the_answer_only(store: MemoryStore) -> None:
    """An accept with no payload (a validator refused it) records the answer and queues nothing."""
    assert run(store.accept("echo", "SM1", "v:length", None)) is None
    assert run(store.llen(store.keys("echo").queue)) == 0
    assert run(store.accept("echo", "SM1", "a", "p")) == "v:length"


def test_seen_keys_expire_after_a_day(store: MemoryStore, clock: Clock) -> None:
    """De-duplication lasts DEDUPE_SECONDS on the clock, then the sid is new again."""
    run(store.accept("echo", "SM1", "a", "p1"))
    assert store.ttl(store.keys("echo").seen("SM1")) == DEDUPE_SECONDS
    clock.advance(DEDUPE_SECONDS - 1)
    assert run(store.accept("echo", "SM1", "a", "p2")) == "a"
    clock.advance(1)
    assert run(store.accept("echo", "SM1", "a", "p2")) is None
    assert run(store.lrange(store.keys("echo").queue)) == ["p2", "p1"]


def test_queue_is_first_in_first_out(store: MemoryStore) -> None:
    """Pops take the oldest queued message first and push it on the left of the in-flight list."""
    k = store.keys("echo")
    for i in range(3):
        run(store.accept("echo", f"SM{i}", "a", f"p{i}"))
    popper = store.popper()
    assert [run(popper.pop(k, W, 5)) for _ in range(3)] == ["p0", "p1", "p2"]
    assert run(store.lrange(k.inflight(W))) == ["p2", "p1", "p0"]
    assert run(store.llen(k.queue)) == 0


def test_finish_removes_from_in_flight_and_trims_the_record_list(store: MemoryStore) -> None:
    """finish drops the payload from in-flight and keeps only the newest ``retention`` records."""
    k = store.keys("echo")
    popper = store.popper()
    for i in range(3):
        run(store.accept("echo", f"SM{i}", "a", f"p{i}"))
    for i in range(3):
        assert run(popper.pop(k, W, 5)) == f"p{i}"
        run(store.finish("echo", W, f"p{i}", f"SM{i}", f"r{i}", "complete", 2))
    assert run(store.llen(k.inflight(W))) == 0
    assert run(store.lrange(k.complete)) == ["r2", "r1"]
    run(store.finish("echo", W, "gone", "SMx", "e0", "errors", 2))
    assert run(store.lrange(k.errors)) == ["e0"]


def test_finish_removes_only_one_copy_from_the_left(store: MemoryStore) -> None:
    """finish is LREM count 1: of two identical in-flight payloads one stays."""
    k = store.keys("echo")
    run(store.accept("echo", "SM1", "a", "same"))
    run(store.accept("echo", "SM2", "a", "same"))
    popper = store.popper()
    run(popper.pop(k, W, 5))
    run(popper.pop(k, W, 5))
    run(store.finish("echo", W, "same", "SMs", "r", "complete", 10))
    assert run(store.lrange(k.inflight(W))) == ["same"]


def test_reclaim_refuses_a_live_worker(store: MemoryStore) -> None:
    """reclaim answers -1 and moves nothing while the worker's heartbeat lives, unless forced."""
    k = store.keys("echo")
    run(store.heartbeat(["echo"], W, 15))
    run(store.accept("echo", "SM1", "a", "p1"))
    run(store.popper().pop(k, W, 5))
    assert run(store.reclaim("echo", W)) == -1
    assert run(store.lrange(k.inflight(W))) == ["p1"]
    assert run(store.reclaim("echo", W, force=True)) == 1
    assert run(store.lrange(k.queue)) == ["p1"]


def test_reclaim_moves_a_dead_workers_messages_back_oldest_first(store: MemoryStore, clock: Clock) -> None:
    """Once the heartbeat expires, reclaim puts the messages back so the oldest is popped first."""
    k = store.keys("echo")
    run(store.heartbeat(["echo"], W, 15))
    for i in range(3):
        run(store.accept("echo", f"SM{i}", "a", f"p{i}"))
    run(store.accept("echo", "SM9", "a", "later"))
    popper = store.popper()
    for _ in range(3):
        run(popper.pop(k, W, 5))
    clock.advance(15)
    assert run(store.workers("echo")) == [W]
    assert run(store.reclaim("echo", W)) == 3
    assert run(store.llen(k.inflight(W))) == 0
    assert run(store.workers("echo")) == []
    other = "other:2:ef01"
    assert [run(popper.pop(k, other, 5)) for _ in range(4)] == ["p0", "p1", "p2", "later"]


def test_heartbeat_registers_the_worker_for_every_topic(store: MemoryStore, clock: Clock) -> None:
    """heartbeat adds the worker to each topic's set and sets its alive key with the given ttl."""
    run(store.heartbeat(["a", "b"], W, 7))
    assert run(store.workers("a")) == [W] == run(store.workers("b"))
    assert store.ttl(store.keys("b").alive(W)) == 7
    clock.advance(7)
    assert not store.exists(store.keys("b").alive(W))


def test_pop_waits_for_a_push(store: MemoryStore, clock: Clock) -> None:
    """A pop on an empty queue parks without blocking and fires when a message is accepted."""
    k = store.keys("echo")
    d = store.popper().pop(k, W, 5)
    assert not d.called
    clock.advance(4)
    run(store.accept("echo", "SM1", "a", "p1"))
    assert run(d) == "p1"
    assert run(store.lrange(k.inflight(W))) == ["p1"]
    assert run(store.llen(k.queue)) == 0
    assert clock.getDelayedCalls() == []


def test_pop_times_out_on_the_clock(store: MemoryStore, clock: Clock) -> None:
    """A parked pop fires with None when its timeout elapses on the injected clock."""
    d = store.popper().pop(store.keys("echo"), W, 5)
    clock.advance(4.9)
    assert not d.called
    clock.advance(0.1)
    assert run(d) is None
    run(store.accept("echo", "SM1", "a", "p1"))
    assert run(store.llen(store.keys("echo").queue)) == 1


def test_parked_pops_are_served_in_arrival_order(store: MemoryStore) -> None:
    """Two parked pops are served longest-waiting first, one message each."""
    k = store.keys("echo")
    first = store.popper().pop(k, "w1", 5)
    second = store.popper().pop(k, "w2", 5)
    run(store.accept("echo", "SM1", "a", "p1"))
    assert run(first) == "p1"
    assert not second.called
    run(store.accept("echo", "SM2", "a", "p2"))
    assert run(second) == "p2"


def test_cancelled_pop_moves_nothing(store: MemoryStore, clock: Clock) -> None:
    """Cancelling a parked pop gives up the wait: a later message stays queued."""
    d = store.popper().pop(store.keys("echo"), W, 5)
    d.cancel()
    with pytest.raises(CancelledError):
        run(d)
    run(store.accept("echo", "SM1", "a", "p1"))
    assert run(store.llen(store.keys("echo").queue)) == 1
    assert clock.getDelayedCalls() == []


def test_down_makes_every_operation_fail(store: MemoryStore) -> None:
    """With ``down`` set, every command raises RedisUnavailable and parked pops fail with it."""
    k = store.keys("echo")
    parked = store.popper().pop(k, W, 5)
    store.down = True
    assert not store.connected
    with pytest.raises(RedisUnavailable):
        run(parked)
    calls: list[Any] = [
        store.ping(),
        store.accept("echo", "SM1", "a", "p"),
        store.finish("echo", W, "p", "SMp", "r", "complete", 1),
        store.heartbeat(["echo"], W),
        store.workers("echo"),
        store.reclaim("echo", W),
        store.push_capped("k", "i", 1),
        store.lrange("k"),
        store.llen("k"),
    ]
    for call in calls:
        with pytest.raises(RedisUnavailable):
            run(call)
    with pytest.raises(RedisUnavailable):
        run(store.popper().pop(k, W, 5))
    store.down = False
    assert run(store.ping()) is True


def test_stop_refuses_commands_until_start(store: MemoryStore) -> None:
    """A stopped store refuses commands, as RedisStore does without a pool, and start brings it back."""
    run(store.stop())
    assert not store.connected
    with pytest.raises(RedisUnavailable):
        run(store.ping())
    store.start()
    assert run(store.ping()) is True


def test_closed_popper_fails_its_parked_pop(store: MemoryStore) -> None:
    """Closing a popper fails its parked pop and later pops on it."""
    popper = store.popper()
    d = popper.pop(store.keys("echo"), W, 0)
    run(popper.close())
    with pytest.raises(RedisUnavailable):
        run(d)
    assert not popper.connected


def test_push_capped_and_lrange_follow_redis_indices(store: MemoryStore) -> None:
    """push_capped keeps the newest items; lrange takes Redis's inclusive and negative indices."""
    for i in range(5):
        run(store.push_capped("box", str(i), 3))
    assert run(store.lrange("box")) == ["4", "3", "2"]
    assert run(store.lrange("box", 0, 0)) == ["4"]
    assert run(store.lrange("box", -2, -1)) == ["3", "2"]
    assert run(store.lrange("box", 1, 100)) == ["3", "2"]
    assert run(store.lrange("box", 2, 1)) == []
    assert run(store.lrange("missing")) == []
    assert run(store.llen("box")) == 3
