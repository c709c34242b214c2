"""The queue in Redis, spoken to with txredisapi and hidden behind one small class.

Every state change that must not be split by a crash is one Lua script, so
one round trip: accept (de-duplicate + enqueue), finish (drop from in-flight +
record + trim), reclaim (move a dead worker's in-flight messages back).
A worker's blocking pop runs on a connection of its own (:class:`Popper`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import txredisapi
from twisted.internet import defer
from twisted.internet.defer import Deferred, succeed

from pyrowire.errors import RedisUnavailable
from pyrowire.keys import DEDUPE_SECONDS, HEARTBEAT_SECONDS, TopicKeys, topic_keys
from pyrowire.redis_watch import quiet
from pyrowire.runconfig import RedisAddress

# KEYS: seen, queue. ARGV: answer, ttl, payload ('' = answer only, nothing queued).
# Returns the earlier answer when the MessageSid was seen before, else nil.
ACCEPT = """
local prior = redis.call('GET', KEYS[1])
if prior then return prior end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[3] ~= '' then redis.call('LPUSH', KEYS[2], ARGV[3]) end
return false
"""

# KEYS: inflight, records, sent, dead. ARGV: payload, record, retention, dead ('1' or '').
# Drops the message from in-flight, records it, forgets its sends; a dead message is also
# kept whole in the dead-letter list (never trimmed: nothing is dropped silently).
FINISH = """
redis.call('LREM', KEYS[1], 1, ARGV[1])
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
redis.call('DEL', KEYS[3])
if ARGV[4] == '1' then redis.call('LPUSH', KEYS[4], ARGV[1]) end
return 1
"""

# KEYS: dead, queue. Moves every dead letter to the back of the queue, oldest first, with
# its count of interrupted runs reset: a re-queued message gets max_attempts afresh.
REQUEUE = """
local n = 0
while true do
  local item = redis.call('RPOP', KEYS[1])
  if not item then break end
  local ok, envelope = pcall(cjson.decode, item)
  if ok and type(envelope) == 'table' and envelope['attempts'] then
    envelope['attempts'] = nil
    item = cjson.encode(envelope)
  end
  redis.call('LPUSH', KEYS[2], item)
  n = n + 1
end
return n
"""

# KEYS: sent. ARGV: index, outbound sid, ttl.
SENT = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: inflight, queue, alive, workers. ARGV: worker id, 'force' or ''.
# Moves the worker's in-flight messages back to the consuming end of the queue, oldest
# first, unless the worker is still alive and this is not forced. A dead worker's messages
# may have been started: each counts one interrupted run ("attempts" in its envelope), so a
# message that kills every worker that takes it still ends as a dead letter.
RECLAIM = """
if ARGV[2] ~= 'force' and redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local n = 0
while true do
  local item = redis.call('LPOP', KEYS[1])
  if not item then break end
  if ARGV[2] ~= 'force' then
    local ok, envelope = pcall(cjson.decode, item)
    if ok and type(envelope) == 'table' then
      envelope['attempts'] = (tonumber(envelope['attempts']) or 0) + 1
      item = cjson.encode(envelope)
    end
  end
  redis.call('RPUSH', KEYS[2], item)
  n = n + 1
end
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('DEL', KEYS[3])
return n
"""

# KEYS: workers, alive. ARGV: worker id, ttl.
HEARTBEAT = """
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
return 1
"""

# KEYS: list. ARGV: item, retention.
PUSH_CAPPED = """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
return 1
"""


_SHAS: dict[str, str] = {}
FIRST_CONNECT_SECONDS = 3.0


def _connect(address: RedisAddress, poolsize: int, reply_timeout: float | None) -> Any:
    common: dict[str, Any] = {
        "dbid": address.db,
        "password": address.password,
        "connectTimeout": 5,
        "replyTimeout": reply_timeout,
        "convertNumbers": False,
    }
    if address.username:
        common["username"] = address.username
    if address.kind == "unix":
        return quiet(txredisapi.lazyUnixConnectionPool(address.path, poolsize=poolsize, **common))
    return quiet(txredisapi.lazyConnectionPool(
        address.host, address.port, poolsize=poolsize, ssl_context_factory=address.kind == "tls", **common
    ))


class PopperLike(Protocol):
    """A connection that only does blocking pops."""

    @property
    def connected(self) -> bool: ...

    def pop(self, keys: TopicKeys, worker: str, timeout: int) -> Deferred[str | None]: ...

    def close(self) -> Deferred[None]: ...


class Store(Protocol):
    """The queue operations pyrowire needs: RedisStore, and MemoryStore for tests, provide them."""

    def keys(self, topic: str) -> TopicKeys: ...

    def popper(self) -> PopperLike: ...

    @property
    def connected(self) -> bool: ...

    async def ping(self) -> bool: ...

    async def accept(self, topic: str, sid: str, answer: str, payload: str | None) -> str | None: ...

    async def finish(self, topic: str, worker: str, payload: str, sid: str, record: str, kind: str,
                     retention: int, dead: bool = False) -> None: ...

    async def heartbeat(self, topics: Iterable[str], worker: str, ttl: int = HEARTBEAT_SECONDS) -> None: ...

    async def workers(self, topic: str) -> list[str]: ...

    async def reclaim(self, topic: str, worker: str, force: bool = False) -> int: ...

    async def record_sent(self, topic: str, sid: str, index: int, outbound: str) -> None: ...

    async def sent(self, topic: str, sid: str) -> dict[int, str]: ...

    async def requeue_dead(self, topic: str) -> int: ...

    async def answer_for(self, topic: str, sid: str) -> str | None: ...

    async def push_capped(self, key: str, item: str, retention: int) -> None: ...

    async def lrange(self, key: str, start: int = 0, stop: int = -1) -> list[str]: ...

    async def llen(self, key: str) -> int: ...


class Popper:
    """One connection that only does blocking pops, so a parked pop stalls nothing else."""

    def __init__(self, address: RedisAddress) -> None:
        self._conn = _connect(address, 1, None)

    @property
    def connected(self) -> bool:
        return bool(self._conn._factory.size)

    def pop(self, keys: TopicKeys, worker: str, timeout: int) -> Deferred[str | None]:
        """Move the oldest queued message into this worker's in-flight list, waiting up to timeout s."""
        d: Deferred[str | None] = self._conn.execute_command(
            "BLMOVE", keys.queue, keys.inflight(worker), "RIGHT", "LEFT", timeout
        )
        return d

    def close(self) -> Deferred[None]:
        d: Deferred[None] = self._conn.disconnect()
        return d


class RedisStore:
    """pyrowire's queue operations on one Redis, through a small connection pool."""

    def __init__(self, address: RedisAddress, prefix: str = "pyrowire", poolsize: int = 4,
                 reply_timeout: float = 5.0) -> None:
        self.address = address
        self.prefix = prefix
        self._poolsize = poolsize
        self._reply_timeout = reply_timeout
        self._pool: Any = None
        self._connecting = False
        self._waiters: list[Deferred[None]] = []

    def keys(self, topic: str) -> TopicKeys:
        return topic_keys(self.prefix, topic)

    def start(self, address: RedisAddress | None = None) -> None:
        """Open the pool. Until its first connection (at most FIRST_CONNECT_SECONDS) commands wait
        for it; after that they fail fast with RedisUnavailable whenever Redis is away."""
        if address is not None:
            self.address = address
        self._pool = _connect(self.address, self._poolsize, self._reply_timeout)
        self._connecting = True
        self._pool._factory.deferred.addBoth(self._first_connection)

    def _first_connection(self, result: Any) -> Any:
        self._connecting = False
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(None)
        return result

    async def _until_first_connection(self) -> None:
        from twisted.internet import reactor

        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        waiter.addTimeout(FIRST_CONNECT_SECONDS, reactor)
        try:
            await waiter
        except defer.TimeoutError:
            self._connecting = False  # Redis is not there: from now on, fail fast

    def stop(self) -> Deferred[None]:
        pool, self._pool = self._pool, None
        if pool is None:
            return succeed(None)
        d: Deferred[None] = pool.disconnect()
        return d

    def popper(self) -> Popper:
        return Popper(self.address)

    @property
    def connected(self) -> bool:
        return self._pool is not None and bool(self._pool._factory.size)

    async def _run(self, method: str, *args: Any) -> Any:
        if self._connecting and not self.connected:
            await self._until_first_connection()  # e.g. an app.resource() mounted a moment ago
        if not self.connected:
            raise RedisUnavailable(f"not connected to Redis at {self.address.display()}")
        try:
            return await getattr(self._pool, method)(*args)
        except (txredisapi.ConnectionError, txredisapi.TimeoutError) as e:
            raise RedisUnavailable(f"Redis at {self.address.display()}: {e}") from None

    async def _script(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA with the script's digest computed once; EVAL (which loads it) when Redis lost it."""
        sha = _SHAS.get(script)
        if sha is None:
            sha = _SHAS[script] = hashlib.sha1(script.encode()).hexdigest()
        try:
            return await self._run("execute_command", "EVALSHA", sha, len(keys), *keys, *args)
        except txredisapi.ResponseError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise
        return await self._run("execute_command", "EVAL", script, len(keys), *keys, *args)

    async def ping(self) -> bool:
        return bool(await self._run("ping"))

    async def accept(self, topic: str, sid: str, answer: str, payload: str | None) -> str | None:
        """Remember ``answer`` for ``sid`` and queue ``payload``, or return the earlier answer."""
        k = self.keys(topic)
        prior = await self._script(ACCEPT, (k.seen(sid), k.queue), (answer, DEDUPE_SECONDS, payload or ""))
        return None if prior is None else str(prior)

    async def finish(self, topic: str, worker: str, payload: str, sid: str, record: str, kind: str,
                     retention: int, dead: bool = False) -> None:
        """Drop ``payload`` from the worker's in-flight list and record it under ``kind`` (complete or errors).

        With ``dead``, the message also goes to the topic's dead-letter list.
        """
        k = self.keys(topic)
        await self._script(
            FINISH,
            (k.inflight(worker), getattr(k, kind), k.sent(sid), k.dead),
            (payload, record, retention, "1" if dead else ""),
        )

    async def record_sent(self, topic: str, sid: str, index: int, outbound: str) -> None:
        """Remember that the handler's ``index``-th send for inbound ``sid`` went out as ``outbound``."""
        await self._script(SENT, (self.keys(topic).sent(sid),), (index, outbound, DEDUPE_SECONDS))

    async def sent(self, topic: str, sid: str) -> dict[int, str]:
        """The sends already made for inbound ``sid``, by index."""
        found = await self._run("hgetall", self.keys(topic).sent(sid))
        return {int(k): str(v) for k, v in found.items()}

    async def requeue_dead(self, topic: str) -> int:
        """Move every dead letter of ``topic`` back to the queue; returns how many."""
        k = self.keys(topic)
        return int(await self._script(REQUEUE, (k.dead, k.queue), ()))

    async def heartbeat(self, topics: Iterable[str], worker: str, ttl: int = HEARTBEAT_SECONDS) -> None:
        """Say this worker is alive for ``ttl`` seconds, for every topic it serves."""
        for topic in topics:  # one script per topic: a script's keys must share one Cluster slot
            k = self.keys(topic)
            await self._script(HEARTBEAT, (k.workers, k.alive(worker)), (worker, ttl))

    async def workers(self, topic: str) -> list[str]:
        members = await self._run("smembers", self.keys(topic).workers)
        return sorted(str(m) for m in members)

    async def reclaim(self, topic: str, worker: str, force: bool = False) -> int:
        """Put a worker's in-flight messages back on the queue; -1 when it is alive and not forced."""
        k = self.keys(topic)
        n = await self._script(
            RECLAIM, (k.inflight(worker), k.queue, k.alive(worker), k.workers), (worker, "force" if force else "")
        )
        return int(n)

    async def answer_for(self, topic: str, sid: str) -> str | None:
        """The answer remembered for inbound ``sid`` (``a`` accepted, ``v:<validator>`` refused), if any."""
        value = await self._run("get", self.keys(topic).seen(sid))
        return None if value is None else str(value)

    async def push_capped(self, key: str, item: str, retention: int) -> None:
        await self._script(PUSH_CAPPED, (key,), (item, retention))

    async def lrange(self, key: str, start: int = 0, stop: int = -1) -> list[str]:
        items = await self._run("lrange", key, start, stop)
        return [str(i) for i in items]

    async def llen(self, key: str) -> int:
        return int(await self._run("llen", key))
