"""An in-memory twin of :class:`pyrowire.store.RedisStore`, for unit tests and examples.

Same public methods, same return types, same semantics as the Lua scripts of
:mod:`pyrowire.store`: lists hold strings with index 0 as Redis's LEFT end,
queues are pushed LEFT and popped RIGHT into a worker's in-flight list,
``seen``/``alive`` keys expire on the injected clock, and blocking pops wait
with Deferreds (no threads, no real time) until an item is queued or their
timeout elapses on that clock.

Set ``store.down = True`` to simulate losing Redis: every operation then
raises :class:`~pyrowire.errors.RedisUnavailable`, and parked pops fail with
it, as they would when the connection drops.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from pyrowire.errors import RedisUnavailable
from pyrowire.keys import DEDUPE_SECONDS, HEARTBEAT_SECONDS, TopicKeys, topic_keys
from pyrowire.runconfig import RedisAddress


def _span(length: int, start: int, stop: int) -> tuple[int, int]:
    """Redis's inclusive (start, stop) with negative indices, as a Python slice's bounds."""
    if start < 0:
        start = max(length + start, 0)
    if stop < 0:
        stop = length + stop
    stop = min(stop, length - 1)
    if start > stop:
        return 0, 0
    return start, stop + 1


@dataclass
class _Waiter:
    """One parked blocking pop."""

    source: str
    destination: str
    deferred: Deferred[str | None]
    timer: IDelayedCall | None


class MemoryPopper:
    """The twin of :class:`pyrowire.store.Popper`: blocking pops that wait on Deferreds."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._closed = False
        self._waiting: set[Deferred[str | None]] = set()

    @property
    def connected(self) -> bool:
        return not self._closed and self._store.connected

    def pop(self, keys: TopicKeys, worker: str, timeout: int) -> Deferred[str | None]:
        """Move the oldest queued message into this worker's in-flight list, waiting up to timeout s.

        As BLMOVE does, a timeout of 0 waits for ever; the wait ends with None
        when the timeout elapses on the store's clock. Cancelling the Deferred
        gives up the wait and moves nothing.
        """
        if self._closed:
            return fail(RedisUnavailable("this popper is closed"))
        try:
            self._store._check()
        except RedisUnavailable:
            return fail()
        value = self._store._move_right_to_left(keys.queue, keys.inflight(worker))
        if value is not None:
            return succeed(value)
        d: Deferred[str | None] = Deferred(lambda d: self._store._forget(d))
        self._waiting.add(d)
        d.addBoth(self._done, d)
        timer = None
        if timeout > 0:
            timer = self._store.clock.callLater(timeout, self._store._time_out, d)
        self._store._park(_Waiter(keys.queue, keys.inflight(worker), d, timer))
        return d

    def _done(self, result: object, d: Deferred[str | None]) -> object:
        self._waiting.discard(d)
        return result

    def close(self) -> Deferred[None]:
        """Close the connection: a parked pop fails with RedisUnavailable and moves nothing."""
        self._closed = True
        for d in list(self._waiting):
            self._store._fail_waiter(d, RedisUnavailable("the popper was closed"))
        return succeed(None)


def _bump_attempts(item: str) -> str:
    """What store.RECLAIM does to a dead worker's message: one more interrupted run in its envelope."""
    try:
        envelope = json.loads(item)
    except ValueError:
        return item
    if not isinstance(envelope, dict):
        return item
    envelope["attempts"] = int(envelope.get("attempts") or 0) + 1
    return json.dumps(envelope)


def _reset_attempts(item: str) -> str:
    """What store.REQUEUE does to a dead letter: its interrupted runs forgotten."""
    try:
        envelope = json.loads(item)
    except ValueError:
        return item
    if not isinstance(envelope, dict) or "attempts" not in envelope:
        return item
    del envelope["attempts"]
    return json.dumps(envelope)


class MemoryStore:
    """pyrowire's queue operations on dicts in memory, with time from ``clock``."""

    def __init__(self, clock: IReactorTime, prefix: str = "pyrowire") -> None:
        self.clock = clock
        self.prefix = prefix
        self.address: RedisAddress | None = None
        self._started = True
        self._down = False
        self._strings: dict[str, tuple[str, float | None]] = {}
        self._lists: dict[str, list[str]] = {}  # index 0 is Redis's LEFT end
        self._sets: dict[str, set[str]] = {}
        self._hashes: dict[str, dict[str, str]] = {}
        self._waiters: list[_Waiter] = []

    def __repr__(self) -> str:
        return f"<MemoryStore prefix={self.prefix!r} down={self._down} lists={len(self._lists)}>"

    # --- the same surface as RedisStore ----------------------------------

    def keys(self, topic: str) -> TopicKeys:
        return topic_keys(self.prefix, topic)

    def start(self, address: RedisAddress | None = None) -> None:
        """Accept commands again (a new MemoryStore starts accepting them at once)."""
        if address is not None:
            self.address = address
        self._started = True

    def stop(self) -> Deferred[None]:
        """Refuse commands from now on; parked pops fail with RedisUnavailable."""
        self._started = False
        self._fail_all("the store was stopped")
        return succeed(None)

    def popper(self) -> MemoryPopper:
        return MemoryPopper(self)

    @property
    def connected(self) -> bool:
        return self._started and not self._down

    @property
    def down(self) -> bool:
        """True while Redis is simulated as unreachable."""
        return self._down

    @down.setter
    def down(self, value: bool) -> None:
        self._down = value
        if value:
            self._fail_all("Redis is down")

    async def ping(self) -> bool:
        self._check()
        return True

    async def accept(self, topic: str, sid: str, answer: str, payload: str | None) -> str | None:
        """Remember ``answer`` for ``sid`` and queue ``payload``, or return the earlier answer."""
        self._check()
        k = self.keys(topic)
        prior = self._get(k.seen(sid))
        if prior is not None:
            return prior
        self._set(k.seen(sid), answer, DEDUPE_SECONDS)
        if payload:
            self._lpush(k.queue, payload)
            self._serve(k.queue)
        return None

    async def finish(
        self, topic: str, worker: str, payload: str, sid: str, record: str, kind: str, retention: int,
        dead: bool = False,
    ) -> None:
        """Drop ``payload`` from the worker's in-flight list; record it as ``kind``; with ``dead``, dead-letter it."""
        self._check()
        k = self.keys(topic)
        self._lrem_first(k.inflight(worker), payload)
        target: str = getattr(k, kind)
        self._lpush(target, record)
        self._ltrim(target, 0, retention - 1)
        self._hashes.pop(k.sent(sid), None)
        if dead:
            self._lpush(k.dead, payload)
        self._serve(target)

    async def record_sent(self, topic: str, sid: str, index: int, outbound: str) -> None:
        self._check()
        self._hashes.setdefault(self.keys(topic).sent(sid), {})[str(index)] = outbound

    async def sent(self, topic: str, sid: str) -> dict[int, str]:
        self._check()
        return {int(k): v for k, v in self._hashes.get(self.keys(topic).sent(sid), {}).items()}

    async def requeue_dead(self, topic: str) -> int:
        self._check()
        k = self.keys(topic)
        dead = self._lists.pop(k.dead, [])
        queue = self._lists.setdefault(k.queue, [])
        # as RPOP + LPUSH one by one: behind everything queued, oldest first, attempts reset
        queue[:0] = [_reset_attempts(item) for item in dead]
        self._serve(k.queue)
        return len(dead)

    async def heartbeat(self, topics: Iterable[str], worker: str, ttl: int = HEARTBEAT_SECONDS) -> None:
        """Say this worker is alive for ``ttl`` seconds, for every topic it serves."""
        self._check()
        for topic in topics:
            k = self.keys(topic)
            self._sets.setdefault(k.workers, set()).add(worker)
            self._set(k.alive(worker), "1", ttl)

    async def workers(self, topic: str) -> list[str]:
        self._check()
        return sorted(self._sets.get(self.keys(topic).workers, ()))

    async def reclaim(self, topic: str, worker: str, force: bool = False) -> int:
        """Put a worker's in-flight messages back on the queue; -1 when it is alive and not forced."""
        self._check()
        k = self.keys(topic)
        if not force and self._get(k.alive(worker)) is not None:
            return -1
        inflight = self._lists.pop(k.inflight(worker), [])
        # LMOVE inflight LEFT -> queue RIGHT, one at a time: the oldest ends up rightmost,
        # which is the end pops take from
        queue = self._lists.setdefault(k.queue, [])
        for item in inflight:
            queue.append(item if force else _bump_attempts(item))
        if not queue:
            del self._lists[k.queue]
        members = self._sets.get(k.workers)
        if members is not None:
            members.discard(worker)
            if not members:
                del self._sets[k.workers]
        self._strings.pop(k.alive(worker), None)
        self._serve(k.queue)
        return len(inflight)

    async def answer_for(self, topic: str, sid: str) -> str | None:
        self._check()
        return self._get(self.keys(topic).seen(sid))

    async def push_capped(self, key: str, item: str, retention: int) -> None:
        self._check()
        self._lpush(key, item)
        self._ltrim(key, 0, retention - 1)
        self._serve(key)

    async def lrange(self, key: str, start: int = 0, stop: int = -1) -> list[str]:
        self._check()
        items = self._lists.get(key, [])
        lo, hi = _span(len(items), start, stop)
        return items[lo:hi]

    async def llen(self, key: str) -> int:
        self._check()
        return len(self._lists.get(key, ()))

    # --- for tests: look without going through the "network" ---------------

    def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires; None when it does not exist or never expires."""
        entry = self._strings.get(key)
        if entry is None or entry[1] is None or self._get(key) is None:
            return None
        return entry[1] - self.clock.seconds()

    def exists(self, key: str) -> bool:
        """True when ``key`` holds a live string, a non-empty list or a non-empty set."""
        return self._get(key) is not None or bool(self._lists.get(key)) or bool(self._sets.get(key))

    # --- internals ---------------------------------------------------------

    def _check(self) -> None:
        if self._down:
            raise RedisUnavailable("Redis (in memory) is down")
        if not self._started:
            raise RedisUnavailable("not connected to Redis (in memory): the store is stopped")

    def _get(self, key: str) -> str | None:
        entry = self._strings.get(key)
        if entry is None:
            return None
        value, expires_at = entry
        if expires_at is not None and self.clock.seconds() >= expires_at:
            del self._strings[key]
            return None
        return value

    def _set(self, key: str, value: str, ttl: float) -> None:
        self._strings[key] = (value, self.clock.seconds() + ttl)

    def _lpush(self, key: str, item: str) -> None:
        self._lists.setdefault(key, []).insert(0, item)

    def _ltrim(self, key: str, start: int, stop: int) -> None:
        items = self._lists.get(key)
        if items is None:
            return
        lo, hi = _span(len(items), start, stop)
        kept = items[lo:hi]
        if kept:
            self._lists[key] = kept
        else:
            del self._lists[key]

    def _lrem_first(self, key: str, item: str) -> None:
        items = self._lists.get(key)
        if items is None:
            return
        try:
            items.remove(item)  # LREM key 1 item: the first match from the LEFT
        except ValueError:
            return
        if not items:
            del self._lists[key]

    def _move_right_to_left(self, source: str, destination: str) -> str | None:
        items = self._lists.get(source)
        if not items:
            return None
        value = items.pop()
        if not items:
            del self._lists[source]
        self._lpush(destination, value)
        return value

    def _park(self, waiter: _Waiter) -> None:
        self._waiters.append(waiter)

    def _take(self, d: Deferred[str | None]) -> _Waiter | None:
        for i, waiter in enumerate(self._waiters):
            if waiter.deferred is d:
                del self._waiters[i]
                if waiter.timer is not None and waiter.timer.active():
                    waiter.timer.cancel()
                return waiter
        return None

    def _forget(self, d: Deferred[str | None]) -> None:
        self._take(d)

    def _time_out(self, d: Deferred[str | None]) -> None:
        waiter = self._take(d)
        if waiter is not None:
            d.callback(None)

    def _fail_waiter(self, d: Deferred[str | None], error: Exception) -> None:
        if self._take(d) is not None:
            d.errback(error)

    def _fail_all(self, why: str) -> None:
        for waiter in list(self._waiters):
            self._fail_waiter(waiter.deferred, RedisUnavailable(why))

    def _serve(self, key: str) -> None:
        """Hand items newly pushed to ``key`` to the pops parked on it, longest-waiting first."""
        ready: list[tuple[Deferred[str | None], str]] = []
        for waiter in list(self._waiters):
            if waiter.source != key:
                continue
            value = self._move_right_to_left(waiter.source, waiter.destination)
            if value is None:
                break
            self._take(waiter.deferred)
            ready.append((waiter.deferred, value))
        # every move is done before any waiter runs, as Redis replies after the command
        for d, value in ready:
            d.callback(value)
