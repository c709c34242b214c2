"""Heartbeats, and putting back the in-flight messages of workers that died.

Every worker process refreshes ``alive:<worker>`` (expiring after
HEARTBEAT_SECONDS) for each topic it serves. Every BEAT_SECONDS each
worker process looks at the topic's registered workers; one whose heartbeat
has expired was killed, and its in-flight messages go back to the front of
the queue (one Lua script, so two recovering processes cannot both move
them). A SIGKILLed worker's messages are thus handled again within
HEARTBEAT_SECONDS + BEAT_SECONDS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from pyrowire.errors import RedisUnavailable
from pyrowire.keys import HEARTBEAT_SECONDS

if TYPE_CHECKING:
    from pyrowire.runtime import Runtime
    from pyrowire.worker import TopicWorker

BEAT_SECONDS = 5.0


class Supervisor(Service):
    """Keeps this worker's heartbeat, reclaims dead workers' messages, puts back its own on stop."""

    log = Logger()
    name = "supervisor"

    def __init__(self, runtime: Runtime, topics: Sequence[str], workers: Sequence[TopicWorker]) -> None:
        self.runtime = runtime
        self.topics = tuple(topics)
        self.workers = workers
        self._beat = LoopingCall(self._tick)
        self._beat.clock = runtime.clock

    def first_beat(self) -> Deferred[None]:
        """Register this worker before it takes any message."""
        return Deferred.fromCoroutine(self.runtime.store.heartbeat(self.topics, self.runtime.worker_id,
                                                                  HEARTBEAT_SECONDS))

    def startService(self) -> None:
        super().startService()
        self._beat.start(BEAT_SECONDS, now=False)

    async def _beat_and_recover(self) -> None:
        store = self.runtime.store
        try:
            await store.heartbeat(self.topics, self.runtime.worker_id, HEARTBEAT_SECONDS)
            await self.recover()
        except RedisUnavailable as e:
            if store.connected:  # Redis away altogether is said once for the process, by pyrowire.redis_watch
                self.log.warn("heartbeat failed: {error}", error=str(e))
        except Exception:
            self.log.failure("heartbeat or recovery failed")

    def _tick(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._beat_and_recover())

    async def recover(self) -> int:
        """Put back the messages of every registered worker whose heartbeat expired."""
        store = self.runtime.store
        moved = 0
        for topic in self.topics:
            for worker in await store.workers(topic):
                if worker == self.runtime.worker_id:
                    continue
                n = await store.reclaim(topic, worker)
                if n > 0:
                    self.log.warn("put back {n} {topic} messages of dead worker {worker}",
                                  n=n, topic=topic, worker=worker)
                    moved += n
        return moved

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._beat.running:
            self._beat.stop()
        busy = {w.topic.name for w in self.workers if w.busy}
        for topic in self.topics:
            if topic in busy:
                continue  # its heartbeat expires and another worker reclaims what is still running
            try:
                n = await self.runtime.store.reclaim(topic, self.runtime.worker_id, force=True)
            except RedisUnavailable as e:
                self.log.warn("could not put back {topic} messages: {error}", topic=topic, error=str(e))
                continue
            if n:
                self.log.info("put back {n} {topic} messages not started", n=n, topic=topic)
