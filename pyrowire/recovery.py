"""Heartbeats, and putting back the in-flight messages of workers that died.

Every worker process refreshes ``alive:<worker>`` (expiring after its
heartbeat TTL, HEARTBEAT_TTL unless told otherwise) for each topic it serves.
Three times per TTL each worker process beats and looks at the topic's
registered workers; one whose heartbeat has expired was killed, and its
in-flight messages go back to the front of the queue (one Lua script, so two
recovering processes cannot both move them). A SIGKILLed worker's messages are
thus handled again within 4/3 of the TTL (20 s by default).

The supervisor also moves failed messages whose retry is due from the topic's schedule
back to the queue (every DUE_SECONDS, any worker process may), and sweeps its own
in-flight list: a message there that no loop of this process holds (its pop's answer
was lost with a connection) is put back once two beats in a row have seen it so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from pyrowire.errors import RedisReplyError, RedisUnavailable
from pyrowire.keys import HEARTBEAT_TTL

if TYPE_CHECKING:
    from pyrowire.runtime import Runtime
    from pyrowire.worker import TopicWorker



DUE_SECONDS = 1.0


def beat_interval(heartbeat_ttl: int) -> float:
    """How often a worker beats and looks for dead workers: three times per heartbeat TTL."""
    return heartbeat_ttl / 3


class Supervisor(Service):
    """Keeps this worker's heartbeat, reclaims dead workers' messages, puts back its own on stop."""

    log = Logger()
    name = "supervisor"

    def __init__(self, runtime: Runtime, topics: Sequence[str], workers: Sequence[TopicWorker],
                 heartbeat_ttl: int = HEARTBEAT_TTL) -> None:
        self.runtime = runtime
        self.topics = tuple(topics)
        self.workers = workers
        self.heartbeat_ttl = heartbeat_ttl
        self.interval = beat_interval(heartbeat_ttl)
        self._due = LoopingCall(self._due_tick)
        self._due.clock = runtime.clock
        # per topic, the in-flight payloads the last sweep found held by no loop
        self._suspects: dict[str, set[str]] = {}
        self._beat = LoopingCall(self._tick)
        self._beat.clock = runtime.clock
        # what Redis refused (OOM, READONLY) the last time it was tried: said once, until it passes again
        self._refused: set[str] = set()

    def first_beat(self) -> Deferred[None]:
        """Register this worker before it takes any message."""
        return Deferred.fromCoroutine(self.runtime.store.heartbeat(self.topics, self.runtime.worker_id,
                                                                  self.heartbeat_ttl))

    def startService(self) -> None:
        super().startService()
        self._beat.start(self.interval, now=False)
        self._due.start(DUE_SECONDS, now=False)

    async def _beat_and_recover(self) -> None:
        store = self.runtime.store
        try:
            await store.heartbeat(self.topics, self.runtime.worker_id, self.heartbeat_ttl)
            await self.recover()
            await self.sweep()
            try:
                await self.tally()
            except (RedisUnavailable, RedisReplyError):
                pass  # the counts wait for the next beat; a refusal is said by the loops and the heartbeat
        except RedisUnavailable as e:
            if store.connected:  # Redis away altogether is said once for the process, by pyrowire.redis_watch
                self.log.warn("heartbeat failed: {error}", error=str(e))
        except RedisReplyError as e:
            self._refusal("heartbeat", e)
        except Exception:
            self.log.failure("heartbeat or recovery failed")
        else:
            self._refused.discard("heartbeat")

    def _refusal(self, what: str, error: RedisReplyError) -> None:
        """Redis answered with an error (out of memory, a read-only replica): a warning, once until it passes."""
        if what not in self._refused:
            self._refused.add(what)
            self.log.warn("{what} refused by Redis, retrying: {error}", what=what, error=str(error))

    def _tick(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._beat_and_recover())

    def _due_tick(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._move_due())

    async def _move_due(self) -> None:
        try:
            await self.due()
        except RedisUnavailable:
            pass  # the beat says so, once
        except RedisReplyError as e:
            self._refusal("moving due retries", e)
        except Exception:
            self.log.failure("moving due retries failed")
        else:
            self._refused.discard("moving due retries")

    async def due(self) -> int:
        """Put back every served topic's failed messages whose retry is due; how many."""
        store = self.runtime.store
        now = self.runtime.clock.seconds()
        moved = 0
        for topic in self.topics:
            moved += await store.due(topic, now)
        return moved

    async def sweep(self) -> int:
        """Put back this process's in-flight messages that no loop has held for two beats in a row."""
        store = self.runtime.store
        me = self.runtime.worker_id
        moved = 0
        for worker in self.workers:
            if not worker.running:
                continue
            topic = worker.topic.name
            unheld = set(await store.lrange(store.keys(topic).inflight(me))) - worker.held
            orphans = unheld & self._suspects.get(topic, set())
            self._suspects[topic] = unheld - orphans
            if orphans:
                n = await store.sweep(topic, me, sorted(orphans))
                if n:
                    self.log.warn("put back {n} {topic} messages in flight here that no handler held",
                                  n=n, topic=topic)
                    moved += n
        return moved

    async def tally(self) -> None:
        """Add the messages this process finished since the last beat to the topics' per-minute counts
        (the console's chart): one small script per topic per beat, nothing per message."""
        metrics = self.runtime.metrics
        if metrics is None:
            return
        minute = int(self.runtime.clock.seconds() // 60)
        finished = metrics.take_finished()
        try:
            for topic, count in finished.items():
                await self.runtime.store.tally(topic, minute, count)
                finished[topic] = 0
        finally:
            for topic, count in finished.items():  # what Redis did not take is added on the next beat
                if count:
                    metrics.handled_later(topic, count)

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
        if self._due.running:
            self._due.stop()
        try:
            await self.tally()
        except (RedisUnavailable, RedisReplyError):
            pass  # the chart misses this process's last seconds
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
