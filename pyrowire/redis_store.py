"""The queue on a real Redis, spoken to with txredisapi (the daemon's store).

Commands go through a small connection pool; each worker loop's blocking pop
holds a connection of its own (:class:`RedisPopper`), so a parked pop stalls
nothing else. Behind a ``redis+sentinel://`` address every connection follows the
primary (:mod:`pyrowire.sentinel`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import txredisapi
from twisted.internet import defer
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from pyrowire.errors import RedisReplyError, RedisUnavailable
from pyrowire.keys import TopicKeys
from pyrowire.redis_watch import quiet
from pyrowire.runconfig import RedisAddress
from pyrowire.sentinel import SentinelPrimary, not_primary
from pyrowire.store import ScriptMissing, Store

FIRST_CONNECT_SECONDS = 3.0
FOLLOW_POLL_SECONDS = 0.02


def _connect(address: RedisAddress, poolsize: int, reply_timeout: float | None,
             primary: SentinelPrimary | None = None) -> Any:
    if primary is not None:
        return primary.connect(poolsize, reply_timeout)
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


def _moved(connection: Any, primary: SentinelPrimary | None, error: BaseException | None) -> bool:
    """Whether ``error`` says the server behind ``connection`` is no longer the Sentinels' primary (which
    then hears of it, to reconnect elsewhere): an unavailable Redis for the caller, as during any outage."""
    if primary is None or error is None or not not_primary(error):
        return False
    primary.refused(connection)
    return True


async def _run(connection: Any, address: RedisAddress, command: Sequence[Any],
               primary: SentinelPrimary | None = None) -> Any:
    """One command on a txredisapi connection or pool, its failures as pyrowire's errors."""
    try:
        return await connection.execute_command(*command)
    except (txredisapi.ConnectionError, txredisapi.TimeoutError) as e:
        raise RedisUnavailable(f"Redis at {address.display()}: {e}") from None
    except txredisapi.ResponseError as e:
        if _moved(connection, primary, e):
            raise RedisUnavailable(f"Redis at {address.display()}: {e}") from None
        if str(e).startswith("NOSCRIPT"):
            raise ScriptMissing(str(e)) from None
        raise RedisReplyError(f"Redis at {address.display()} answered {command[0]}: {e}") from None


class RedisPopper:
    """A worker loop's own connection: its blocking pops (BLMOVE), and the scripts that take work."""

    def __init__(self, address: RedisAddress, primary: SentinelPrimary | None = None) -> None:
        self.address = address
        self._primary = primary
        self._conn = _connect(address, 1, None, primary)

    @property
    def connected(self) -> bool:
        return bool(self._conn._factory.size)

    def pop(self, keys: TopicKeys, worker: str, timeout: float) -> Deferred[str | None]:
        d: Deferred[str | None] = self._conn.execute_command(
            "BLMOVE", keys.queue, keys.inflight(worker), "RIGHT", "LEFT", timeout
        )
        return d.addErrback(self._unavailable)

    def _unavailable(self, failure: Failure) -> Failure:
        """A lost or closed connection, as the RedisUnavailable every store operation raises for it."""
        if failure.check(txredisapi.ConnectionError, txredisapi.TimeoutError) or _moved(
                self._conn, self._primary, failure.value):
            raise RedisUnavailable(f"Redis pop connection: {failure.getErrorMessage()}")
        return failure

    def execute(self, *command: Any) -> Deferred[Any]:
        return Deferred.fromCoroutine(_run(self._conn, self.address, command, self._primary))

    def close(self) -> Deferred[None]:
        d: Deferred[None] = self._conn.disconnect()
        return d


class RedisStore(Store):
    """pyrowire's queue operations on one Redis, through a small connection pool."""

    def __init__(self, address: RedisAddress, prefix: str = "pyrowire", poolsize: int = 4,
                 reply_timeout: float = 5.0) -> None:
        self.address = address
        self.prefix = prefix
        self._poolsize = poolsize
        self._reply_timeout = reply_timeout
        self._pool: Any = None
        self._primary: SentinelPrimary | None = None
        self._connecting = False
        self._waiters: list[Deferred[None]] = []

    def start(self, address: RedisAddress | None = None) -> None:
        """Open the pool. Until its first connection (at most FIRST_CONNECT_SECONDS) commands wait
        for it; after that they fail fast with RedisUnavailable whenever Redis is away."""
        if address is not None:
            self.address = address
        if self.address.kind == "sentinel":
            self._primary = SentinelPrimary(self.address).start()
        self._pool = _connect(self.address, self._poolsize, self._reply_timeout, self._primary)
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
        primary, self._primary = self._primary, None
        if pool is None:
            return succeed(None)
        d: Deferred[None] = pool.disconnect()
        if primary is not None:
            d.addBoth(lambda _: primary.stop()).addCallback(lambda _: None)
        return d

    def popper(self) -> RedisPopper:
        return RedisPopper(self.address, self._primary)

    @property
    def connected(self) -> bool:
        """Connected, or following the Sentinels' primary to where it moved a moment ago."""
        return self._pool is not None and (bool(self._pool._factory.size) or self._following())

    def _following(self) -> bool:
        return self._primary is not None and self._primary.moving

    async def _until_reconnected(self) -> None:
        """Wait (briefly: while the primary is moving) for the pool to reach the new primary."""
        from twisted.internet import reactor

        while self._pool is not None and self._primary is not None and not self._primary.reconnected(self._pool):
            if not self._following():
                raise RedisUnavailable(f"not connected to Redis at {self.address.display()}")
            await deferLater(reactor, FOLLOW_POLL_SECONDS)

    async def _execute(self, *command: Any) -> Any:
        if self._connecting and not self.connected:
            await self._until_first_connection()  # e.g. an app.resource() mounted a moment ago
        if not self.connected:
            raise RedisUnavailable(f"not connected to Redis at {self.address.display()}")
        if self._following():
            await self._until_reconnected()
        try:
            return await _run(self._pool, self.address, command, self._primary)
        except RedisUnavailable:
            if not self._following():
                raise
        # the command reached the old primary (its connection closed under it, or it answered READONLY),
        # whose writes of this moment the failover discards anyway: once more, on the new primary
        await self._until_reconnected()
        return await _run(self._pool, self.address, command, self._primary)
