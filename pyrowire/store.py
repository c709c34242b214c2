"""pyrowire's queue operations, written once over any Redis-speaking connection.

:class:`Store` holds every queue operation pyrowire performs, each one command or one
script of :mod:`pyrowire.scripts`. A subclass supplies only the connection: how one
command is executed (``_execute``), how a blocking pop is made (``popper``), and
whether it is connected. :class:`pyrowire.redis_store.RedisStore` does that with
txredisapi against a real server; :class:`pyrowire.testing.MemoryStore` with fakeredis
in-process. Importing this module imports neither.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from pyrowire import scripts
from pyrowire.keys import DEDUPE_SECONDS, HEARTBEAT_TTL, TopicKeys, topic_keys
from pyrowire.scripts import Script


class ScriptMissing(Exception):
    """Redis answered NOSCRIPT: it does not hold the script (restarted, or SCRIPT FLUSH)."""


class Popper(Protocol):
    """A connection of its own that only does blocking pops."""

    @property
    def connected(self) -> bool: ...

    def pop(self, keys: TopicKeys, worker: str, timeout: float) -> Deferred[str | None]:
        """Move the oldest queued message into ``worker``'s in-flight list, waiting up to ``timeout`` s.

        Fires with the message, or None when the timeout passed first (0 waits for ever).
        """
        ...

    def close(self) -> Deferred[None]: ...


def _pairs(reply: Any) -> dict[str, str]:
    """A HGETALL reply as a dict (a flat list from the wire, or already a dict)."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    items = list(reply)
    return {str(k): str(v) for k, v in zip(items[::2], items[1::2], strict=True)}


class Store(ABC):
    """The queue operations pyrowire needs, over a connection a subclass provides.

    Every method raises :class:`~pyrowire.errors.RedisUnavailable` when Redis cannot be
    reached, and :class:`~pyrowire.errors.RedisReplyError` when it answers with an error.
    """

    prefix: str

    def keys(self, topic: str) -> TopicKeys:
        return topic_keys(self.prefix, topic)

    # --- what a subclass provides --------------------------------------------

    @property
    @abstractmethod
    def connected(self) -> bool: ...

    @abstractmethod
    def stop(self) -> Deferred[None]:
        """Close the connections; from then on every operation raises RedisUnavailable."""

    @abstractmethod
    def popper(self) -> Popper:
        """A new connection for one worker loop's blocking pops."""

    @abstractmethod
    async def _execute(self, *command: Any) -> Any:
        """Run one command; raise ScriptMissing on NOSCRIPT, RedisReplyError on another error reply."""

    # --- built on it -----------------------------------------------------------

    async def _script(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA by the script's digest; EVAL (which also loads it) when Redis does not hold it."""
        try:
            return await self._execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except ScriptMissing:
            return await self._execute("EVAL", script.source, len(keys), *keys, *args)

    async def ping(self) -> bool:
        return str(await self._execute("PING")) == "PONG"

    async def accept(self, topic: str, sid: str, answer: str, payload: str | None) -> str | None:
        """Remember ``answer`` for ``sid`` and queue ``payload``, or return the earlier answer."""
        k = self.keys(topic)
        prior = await self._script(scripts.ACCEPT, (k.seen(sid), k.queue), (answer, DEDUPE_SECONDS, payload or ""))
        return None if prior is None else str(prior)

    async def finish(self, topic: str, worker: str, payload: str, sid: str, record: str, kind: str,
                     retention: int, dead: bool = False) -> None:
        """Drop ``payload`` from the worker's in-flight list and record it under ``kind`` (complete or errors).

        With ``dead``, the message also goes to the topic's dead-letter list.
        """
        k = self.keys(topic)
        await self._script(
            scripts.FINISH,
            (k.inflight(worker), getattr(k, kind), k.sent(sid), k.dead),
            (payload, record, retention, "1" if dead else ""),
        )

    async def record_sent(self, topic: str, sid: str, index: int, outbound: str) -> None:
        """Remember that the handler's ``index``-th send for inbound ``sid`` went out as ``outbound``."""
        await self._script(scripts.SENT, (self.keys(topic).sent(sid),), (index, outbound, DEDUPE_SECONDS))

    async def sent(self, topic: str, sid: str) -> dict[int, str]:
        """The sends already made for inbound ``sid``, by index."""
        found = _pairs(await self._execute("HGETALL", self.keys(topic).sent(sid)))
        return {int(k): v for k, v in found.items()}

    async def requeue_dead(self, topic: str) -> int:
        """Move every dead letter of ``topic`` back to the queue; returns how many."""
        k = self.keys(topic)
        return int(await self._script(scripts.REQUEUE, (k.dead, k.queue), ()))

    async def heartbeat(self, topics: Iterable[str], worker: str, ttl: int = HEARTBEAT_TTL) -> None:
        """Say this worker is alive for ``ttl`` seconds, for every topic it serves."""
        for topic in topics:  # one script per topic: a script's keys must share one Cluster slot
            k = self.keys(topic)
            await self._script(scripts.HEARTBEAT, (k.workers, k.alive(worker)), (worker, ttl))

    async def workers(self, topic: str) -> list[str]:
        """The worker ids that have taken messages of ``topic`` and were not reclaimed since."""
        members = await self._execute("SMEMBERS", self.keys(topic).workers)
        return sorted(str(m) for m in members)

    async def reclaim(self, topic: str, worker: str, force: bool = False) -> int:
        """Put a worker's in-flight messages back on the queue; -1 when it is alive and not forced."""
        k = self.keys(topic)
        n = await self._script(scripts.RECLAIM, (k.inflight(worker), k.queue, k.alive(worker), k.workers),
                               (worker, "force" if force else ""))
        return int(n)

    async def answer_for(self, topic: str, sid: str) -> str | None:
        """The answer remembered for inbound ``sid`` (``a`` accepted, ``v:<validator>`` refused), if any."""
        value = await self._execute("GET", self.keys(topic).seen(sid))
        return None if value is None else str(value)

    async def push_capped(self, key: str, item: str, retention: int) -> None:
        """Push ``item`` on the left of list ``key``, keeping its ``retention`` newest items."""
        await self._script(scripts.PUSH_CAPPED, (key,), (item, retention))

    async def lrange(self, key: str, start: int = 0, stop: int = -1) -> list[str]:
        return [str(i) for i in await self._execute("LRANGE", key, start, stop)]

    async def llen(self, key: str) -> int:
        return int(await self._execute("LLEN", key))

    async def ttl(self, key: str) -> int:
        """Seconds until ``key`` expires: -1 when it never does, -2 when it does not exist."""
        return int(await self._execute("TTL", key))
