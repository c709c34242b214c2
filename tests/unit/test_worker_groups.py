"""The worker's group take and group finish, with Redis round trips that take time (a Clock).

MemoryStore answers at once, so no group ever forms in the other unit tests; here every command
answers a millisecond later, as a real server does, and many loops meet at the take and the finish.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import capturedLogs, formatEvent

from pyrowire import scripts
from pyrowire.testing.memory import MemoryStore
from tests.deferreds import result_of
from tests.unit.test_worker import Harness, now

ROUND_TRIP = 0.001
BY_SHA = {s.sha: s.name for s in scripts.ALL}


class RoundTripStore(MemoryStore):
    """A MemoryStore whose every command answers one round trip later, counting the scripts it ran."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scripts: Counter[str] = Counter()
        self.slow = False  # the test reads and writes at once; the worker's commands take a round trip

    async def _execute(self, *command: Any) -> Any:
        if self.slow:
            if command[0] == "EVALSHA":
                self.scripts[BY_SHA.get(str(command[1]), "?")] += 1
            await deferLater(self.clock, ROUND_TRIP)
        return await super()._execute(*command)

    def read(self, read: Any) -> Any:
        slow, self.slow = self.slow, False
        try:
            return read()
        finally:
            self.slow = slow


def test_many_loops_are_finished_and_fed_in_groups_and_every_conversation_keeps_its_order() -> None:
    h = Harness(concurrency=16, store=RoundTripStore, retention=1000)
    store = h.store
    assert isinstance(store, RoundTripStore)
    seen: dict[str, list[int]] = {}

    def handler(message: dict[str, Any]) -> Any:
        number, n = message["number"], int(message["message"])
        seen.setdefault(number, []).append(n)
        return deferLater(h.clock, 0.002, lambda: message)

    senders = [f"+1555000{i:04d}" for i in range(24)]
    for n in range(5):
        for number in senders:
            h.queue(f"SM{number[-4:]}{n}", str(n), number)
    h.start(handler)
    store.slow = True
    for _ in range(2000):
        h.clock.advance(ROUND_TRIP)
        if store.read(lambda: len(h.records("complete"))) == 120:
            break
    store.slow = False
    assert len(h.records("complete")) == 120
    assert all(seen[number] == [0, 1, 2, 3, 4] for number in senders), seen
    assert h.length(h.keys.queue) == 0 and h.length(h.keys.inflight("me:1:cafe")) == 0
    # 120 messages in far fewer round trips than one take and one finish each
    assert store.scripts["finish_many"] > 0 and store.scripts["take_many"] > 0
    finishes = store.scripts["finish_many"] + store.scripts["finish"]
    assert finishes < 60, store.scripts
    stopping = h.stop()
    h.clock.advance(30)
    result_of(stopping)


def test_a_deep_queue_is_taken_ahead_and_a_stop_puts_what_was_not_started_back_uncounted() -> None:
    """While the queue is deep the worker keeps concurrency // 4 messages taken ahead (in flight, runs
    counted), so a loop ending a message starts the next at once; stopping puts the ones no loop started
    back at the front of the queue, oldest first out, with their runs taken back."""
    h = Harness(concurrency=16, store=RoundTripStore, retention=1000)
    store = h.store
    assert isinstance(store, RoundTripStore)
    release: list[Deferred[None]] = []

    def handler(message: dict[str, Any]) -> Any:
        d: Deferred[None] = Deferred()
        release.append(d)
        return d.addCallback(lambda _: message)

    sids = [f"SM{i:03d}" for i in range(40)]
    for i, sid in enumerate(sids):
        h.queue(sid, "hello", f"+1555000{i:04d}")
    worker = h.start(handler)
    assert worker.prefetch == 4
    store.slow = True
    for _ in range(50):
        h.clock.advance(ROUND_TRIP)
    assert len(release) == 16  # every loop busy, and more taken ahead: the stock is topped up when half gone
    ahead = store.read(lambda: h.length(h.keys.inflight("me:1:cafe"))) - 16
    assert 2 <= ahead <= 4
    with capturedLogs() as events:
        stopping = h.stop()
        for d in release:
            d.callback(None)
        for _ in range(50):
            h.clock.advance(ROUND_TRIP)
        result_of(stopping)
    store.slow = False
    assert len(h.records("complete")) == 16
    # the ones not started wait in the queue, oldest at the consuming end, none with a run counted
    queue = [json.loads(p)["message"]["sid"] for p in reversed(now(store.lrange(h.keys.queue)))]
    assert queue == sids[16:]
    assert now(store._execute("HLEN", h.keys.runs)) == 0
    assert any(f"put back {ahead} echo messages taken ahead" in formatEvent(e) for e in events)
