"""Worker loops: each takes one message at a time from Redis and runs the topic's handler.

A message moves atomically from the topic's queue into this worker's
in-flight list (BLMOVE), so a SIGKILL at any point leaves it where
:mod:`pyrowire.recovery` finds it. Finishing a message (drop from in-flight,
write the record) is one Lua script.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from pyrowire import logs
from pyrowire.calls import call_user
from pyrowire.errors import RedisUnavailable
from pyrowire.redis_watch import explains
from pyrowire.runtime import Exchange
from pyrowire.settings import Topic

if TYPE_CHECKING:
    from pyrowire.runtime import Runtime

T = TypeVar("T")

POP_TIMEOUT = 5
RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)


def backoff(attempt: int) -> float:
    """Seconds to wait before re-running a failed handler: 1, 2, 4 … capped at 60."""
    return float(min(2 ** (attempt - 1), 60))


def _observe(d: Deferred[Any]) -> Deferred[None]:
    """A Deferred that fires when ``d`` does, and whose cancellation leaves ``d`` running."""
    observer: Deferred[None] = Deferred()

    def fired(result: object) -> object:
        if not observer.called:
            observer.callback(None)
        return result

    d.addBoth(fired)
    return observer


def _json_default(value: Any) -> Any:
    return repr(value)


# built once: json.dumps(..., default=) would build a new encoder for every record
_RECORD_ENCODER = json.JSONEncoder(default=_json_default)


class TopicWorker(Service):
    """``concurrency`` pop loops for one topic, each on its own Redis connection."""

    log = Logger()

    def __init__(self, runtime: Runtime, topic: Topic, handler: Callable[..., Any], concurrency: int,
                 grace: float) -> None:
        self.runtime = runtime
        self.topic = topic
        self.handler = handler
        self.concurrency = concurrency
        self.grace = grace
        self.name = f"worker:{topic.name}"
        self._waiting: set[Deferred[Any]] = set()
        self._loops: list[Deferred[None]] = []
        self._handling: set[Deferred[None]] = set()
        self._poppers: list[Any] = []

    @property
    def clock(self) -> IReactorTime:
        return self.runtime.clock

    def startService(self) -> None:
        super().startService()
        for _ in range(self.concurrency):
            popper = self.runtime.store.popper()
            self._poppers.append(popper)
            self._loops.append(Deferred.fromCoroutine(self._loop(popper)))

    async def _loop(self, popper: Any) -> None:
        store = self.runtime.store
        keys = store.keys(self.topic.name)
        worker = self.runtime.worker_id
        failures = 0
        while self.running:
            try:
                value = await self._interruptible(popper.pop(keys, worker, POP_TIMEOUT))
            except Exception as e:
                if not self.running:
                    return
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                if failures == 1 and not explains(e):  # Redis away: said once for the process by redis_watch
                    self.log.warn("pop from {topic} failed, retrying: {error}", topic=self.topic.name, error=str(e))
                await self._sleep(delay)
                continue
            if not self.running:
                # what this pop moved stays in flight: put back when the worker stops
                return
            failures = 0
            if value is None:
                continue
            d = Deferred.fromCoroutine(self._handle(str(value)))
            self._handling.add(d)
            try:
                await d
            finally:
                self._handling.discard(d)

    async def _interruptible(self, d: Deferred[Any]) -> Any:
        """Await ``d``, which stopping the worker cancels."""
        self._waiting.add(d)
        try:
            return await d
        finally:
            self._waiting.discard(d)

    async def _sleep(self, seconds: float) -> None:
        try:
            await self._interruptible(deferLater(self.clock, seconds))
        except CancelledError:
            pass

    async def _handle(self, payload: str) -> None:
        rt = self.runtime
        topic = self.topic.name
        envelope = json.loads(payload)
        message: dict[str, Any] = envelope["message"]
        sid = str(message.get("sid", ""))
        store = rt.store
        # runs interrupted by a dead worker were counted when recovery put the message back
        # (store.RECLAIM), so a message that kills its workers still uses up its attempts
        attempt = int(envelope.get("attempts") or 0) + 1
        exchange = Exchange(sid)
        if attempt > 1:
            exchange.previous = await self._persist(lambda: store.sent(topic, sid)) or {}
        rt.exchanges[sid] = exchange
        try:
            while True:
                started = self.clock.seconds()
                exchange.next_index = 0
                exchange.sids = []
                try:
                    result = await call_user(self.handler, message)
                except Exception:
                    tb = traceback.format_exc()
                    record: dict[str, Any] = {"message": message, "error": tb.splitlines()[-1], "traceback": tb}
                    kind, dead = "errors", attempt >= self.topic.max_attempts
                    self.log.failure("handler for {topic} failed on {sid} (attempt {attempt} of {max})",
                                     topic=topic, sid=sid, attempt=attempt, max=self.topic.max_attempts,
                                     outcome="dead" if dead else "retry")
                else:
                    record = {"message": message, "result": message if result is None else result}
                    kind, dead = "complete", False
                finished = self.clock.seconds()
                if rt.metrics is not None:
                    rt.metrics.handled(topic, "complete" if kind == "complete" else "dead" if dead else "retry",
                                       finished - started)
                record.update(sids=list(exchange.sids), worker=rt.worker_id, attempt=attempt,
                              received_at=envelope.get("received_at"), started_at=started, finished_at=finished)
                text = _RECORD_ENCODER.encode(record)
                if kind == "complete" or dead:
                    exchange.settle()
                    await self._persist(partial(store.finish, topic, rt.worker_id, payload, sid, text, kind,
                                                self.topic.retention, dead))
                    if logs.enabled(logging.INFO):
                        self.log.info("{topic} {sid} {outcome} in {duration:.3f}s", topic=topic, sid=sid,
                                      outcome="complete" if kind == "complete" else "dead",
                                      duration=finished - started)
                    return
                await self._persist(partial(store.push_capped, store.keys(topic).errors, text, self.topic.retention))
                await self._sleep(backoff(attempt))
                if not self.running:
                    return  # not started again: put back on stop
                attempt += 1
        finally:
            rt.exchanges.pop(sid, None)

    def handle(self, payload: str) -> Deferred[None]:
        """Handle one payload already moved to this worker's in-flight list (pyrowire.testing uses it)."""
        return Deferred.fromCoroutine(self._handle(payload))

    async def _persist(self, operation: Callable[[], Awaitable[T]]) -> T | None:
        """Run a Redis operation until it succeeds, backing off while Redis is away; None if stopped first."""
        failures = 0
        while True:
            try:
                return await operation()
            except RedisUnavailable as e:
                if not self.running:
                    self.log.warn("{topic}: Redis away while stopping; message left in flight: {error}",
                                  topic=self.topic.name, error=str(e))
                    return None
                if failures == 0:
                    self.log.warn("{topic}: Redis away, retrying: {error}", topic=self.topic.name, error=str(e))
                await deferLater(self.clock, RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)])
                failures += 1

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        for d in list(self._waiting):
            d.cancel()
        handling = list(self._handling)
        if handling:
            self.log.info("waiting up to {grace}s for {n} {topic} handlers", grace=self.grace,
                          n=len(handling), topic=self.topic.name)
            # wait on detached observers: the timeout must not cancel the handlers themselves
            waiting = defer.DeferredList([_observe(d) for d in handling], consumeErrors=True)
            waiting.addTimeout(self.grace, self.clock)
            try:
                await waiting
            except defer.TimeoutError:
                self.log.warn("{n} {topic} handlers still running after {grace}s; their messages stay in flight",
                              n=len(self._handling), topic=self.topic.name, grace=self.grace)
        await defer.DeferredList([p.close() for p in self._poppers], consumeErrors=True)
        self._poppers = []
        self._loops = []

    @property
    def busy(self) -> int:
        """How many handlers are running now."""
        return len(self._handling)
