"""Worker loops: each takes one message at a time from Redis and runs the topic's handler.

A message moves atomically from the topic's queue into this worker's
in-flight list (BLMOVE), so a SIGKILL at any point leaves it where
:mod:`pyrowire.recovery` finds it. Finishing a message (drop from in-flight,
write the record) is one Lua script.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from pyrowire.calls import call_user
from pyrowire.errors import RedisUnavailable
from pyrowire.settings import Topic

if TYPE_CHECKING:
    from pyrowire.runtime import Runtime

POP_TIMEOUT = 5
RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)


def _json_default(value: Any) -> Any:
    return repr(value)


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
                if failures == 1:
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
        envelope = json.loads(payload)
        message: dict[str, Any] = envelope["message"]
        sid = message.get("sid", "")
        started = self.clock.seconds()
        outbound = rt.outbound.setdefault(sid, [])
        kind = "complete"
        try:
            result = await call_user(self.handler, message)
        except Exception:
            kind = "errors"
            tb = traceback.format_exc()
            record: dict[str, Any] = {"message": message, "error": tb.splitlines()[-1], "traceback": tb}
            self.log.failure("handler for {topic} failed on {sid}", topic=self.topic.name, sid=sid, outcome="error")
        else:
            record = {"message": message, "result": message if result is None else result}
        finally:
            rt.outbound.pop(sid, None)
        finished = self.clock.seconds()
        record.update(
            sids=outbound,
            worker=rt.worker_id,
            received_at=envelope.get("received_at"),
            started_at=started,
            finished_at=finished,
        )
        text = json.dumps(record, default=_json_default)
        await self._finish(payload, text, kind)
        self.log.info(
            "{topic} {sid} {outcome} in {duration:.3f}s",
            topic=self.topic.name, sid=sid, outcome=kind, duration=finished - started,
        )

    async def _finish(self, payload: str, record: str, kind: str) -> None:
        store = self.runtime.store
        for attempt, delay in enumerate((*RETRY_DELAYS, None)):
            try:
                await store.finish(self.topic.name, self.runtime.worker_id, payload, record, kind,
                                   self.topic.retention)
                return
            except RedisUnavailable as e:
                if delay is None or (not self.running and attempt > 1):
                    # left in the in-flight list: recovery puts it back once this worker is gone
                    self.log.error("could not record {topic} message: {error}", topic=self.topic.name, error=str(e))
                    return
                await deferLater(self.clock, delay)

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
            waiting = defer.DeferredList(handling, consumeErrors=True)
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
