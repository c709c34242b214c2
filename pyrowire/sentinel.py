"""Finding the primary through Redis Sentinel, and following it when it moves.

A ``redis+sentinel://`` address names Sentinels and the service they watch. One
:class:`SentinelPrimary` per store asks them where the primary is, and every connection
of the store (its pool and each worker loop's popper) is a txredisapi Sentinel
connection, which asks again before each (re)connection and checks with ``ROLE`` that it
reached a primary.

That alone follows a failover too late: the old primary stays writable for seconds after
the Sentinels have promoted a replica (until they turn it into a replica of the new one
and close its clients), and what is written to it meanwhile is lost. So the primary also
asks every ``CHECK_SECONDS`` and, as soon as the Sentinels name another primary, closes
every connection to the old one; a ``READONLY`` answer (a primary turned replica) closes
the connections of whoever got it. The connections then find the new primary themselves.

Sentinels disagree for a moment after a failover (the others learn it from the leader);
the answer with the highest configuration epoch wins, and an older epoch never takes the
primary back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from weakref import WeakSet

import txredisapi
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from pyrowire.redis_watch import quiet
from pyrowire.runconfig import RedisAddress

#: how often the Sentinels are asked where the primary is
CHECK_SECONDS = 0.5
#: how long one Sentinel has to answer
ASK_SECONDS = 1.0
#: the longest wait between two attempts to reach the primary
RETRY_SECONDS = 2.0
#: how long after the primary moved commands wait for a connection to the new one instead of failing
FOLLOW_SECONDS = 3.0
#: error replies of a server that is no longer the primary (a blocking pop gets UNBLOCKED when it turns replica)
NOT_PRIMARY = ("READONLY", "UNBLOCKED", "MASTERDOWN")

Location = tuple[str, int]


def not_primary(error: BaseException) -> bool:
    """Whether ``error`` is a reply that only a server that stopped being the primary gives."""
    return isinstance(error, txredisapi.ResponseError) and str(error).startswith(NOT_PRIMARY)


def where(location: Location | None) -> str:
    if location is None:
        return "unknown"
    host, port = location
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _state(reply: Sequence[Any]) -> dict[str, str]:
    """``SENTINEL MASTER``'s flat list of fields and values, as a dict."""
    items = [str(v) for v in reply]
    return dict(zip(items[::2], items[1::2], strict=False))


class _Endpoint(txredisapi._SentinelEndpoint):  # type: ignore[misc]
    """txredisapi's endpoint without its log line per failed discovery (RedisWatch says Redis is away)."""

    def _discovery_failed(self, failure: Any) -> Any:
        failure.trap(txredisapi.MasterNotFoundError)
        return failure


class _Sentinels(txredisapi.Sentinel):  # type: ignore[misc]
    """txredisapi's Sentinel client, discovering the primary through :class:`SentinelPrimary`."""

    def __init__(self, primary: SentinelPrimary, addresses: Sequence[Location], **kwargs: Any) -> None:
        super().__init__(list(addresses), **kwargs)
        self._primary = primary

    def discover_master(self, service_name: str) -> Deferred[Location]:
        return Deferred.fromCoroutine(self._primary.discover())

    def _connect_factory_and_return_handler(self, factory: Any) -> Any:
        factory.startConnecting(_Endpoint(factory))
        return factory.handler


class SentinelPrimary:
    """Where the primary of a Sentinel-watched service is, and the connections that must follow it."""

    log = Logger()

    def __init__(self, address: RedisAddress, clock: IReactorTime | None = None,
                 interval: float = CHECK_SECONDS, timeout: float = ASK_SECONDS) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = reactor  # type: ignore[assignment]
        assert clock is not None
        self.address = address
        self.clock: IReactorTime = clock
        self.timeout = timeout
        self.interval = interval
        self._checked_at = float("-inf")  # when check() last asked
        self.location: Location | None = None
        self.epoch = -1
        self.failovers = 0
        self._moved_at: float | None = None
        self._lost = False  # said that no Sentinel answers, until one does again
        self._factories: WeakSet[Any] = WeakSet()
        self._dropped: WeakSet[Any] = WeakSet()  # connections closed because the primary moved
        self._sentinel: _Sentinels | None = None
        self.sentinels: list[Any] = []  # a connection to each Sentinel, once started
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock

    def start(self) -> SentinelPrimary:
        """Connect to the Sentinels and ask them every ``interval`` seconds from now on; returns self."""
        self._sentinel = _Sentinels(self, self.address.sentinels, replyTimeout=self.timeout,
                                    connectTimeout=self.timeout, convertNumbers=False)
        self.sentinels = [quiet(connection) for connection in self._sentinel.sentinels]
        self._loop.start(self.interval, now=False)
        return self

    def connect(self, poolsize: int, reply_timeout: float | None) -> Any:
        """A txredisapi handler with ``poolsize`` connections to the primary, wherever it is."""
        address = self.address
        assert self._sentinel is not None, "start() first"
        handler = self._sentinel.master_for(
            address.service, dbid=address.db, poolsize=poolsize, isLazy=True, password=address.password,
            username=address.username, replyTimeout=reply_timeout, convertNumbers=False,
        )
        # while the primary is away, try again at least every RETRY_SECONDS, so the connections reach a primary
        # promoted after a crash within seconds (txredisapi's default is 10; it is also its connect timeout)
        handler._factory.maxDelay = RETRY_SECONDS
        return quiet(self.follow(handler))

    def follow(self, handler: Any) -> Any:
        """Have ``handler``'s connections closed whenever the primary moves; returns it."""
        self._factories.add(handler._factory)
        return handler

    def stop(self) -> Deferred[Any]:
        """No more checks; close the connections to the Sentinels."""
        if self._loop.running:
            self._loop.stop()
        sentinel, self._sentinel = self._sentinel, None
        if sentinel is None:
            return defer.succeed(None)
        d: Deferred[Any] = sentinel.disconnect()
        return d

    # --- asking the Sentinels ------------------------------------------------------------

    async def _ask_one(self, connection: Any) -> tuple[Location, int] | None:
        d = connection.execute_command("SENTINEL", "MASTER", self.address.service)
        d.addTimeout(self.timeout, self.clock)
        state = _state(await d)
        flags = set(state.get("flags", "").split(","))
        if "master" not in flags or flags & {"s_down", "o_down"}:
            return None
        return (state["ip"], int(state["port"])), int(state.get("config-epoch", 0))

    async def ask(self) -> tuple[Location, int] | None:
        """The primary the Sentinels name, with the configuration epoch of that answer (the highest wins)."""
        asked = [Deferred.fromCoroutine(self._ask_one(c)) for c in self.sentinels]
        answers = await defer.DeferredList(asked, consumeErrors=True)
        found = [answer for ok, answer in answers if ok and answer is not None]
        return max(found, key=lambda answer: answer[1]) if found else None

    async def discover(self) -> Location:
        """Where to connect now (txredisapi asks before each connection attempt): what the last check found
        while it is fresh (every connection of every worker loop asks when the primary moves, and again
        at each retry while it is away), else what the Sentinels say now."""
        if self.clock.seconds() - self._checked_at > self.interval:
            found = await self.ask()
            if found is not None:
                self._learn(*found)
        if self.location is None:
            raise txredisapi.MasterNotFoundError(f"no Sentinel names a primary for {self.address.service}")
        return self.location

    def _tick(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.check())

    async def check(self) -> None:
        """Ask the Sentinels; when the primary moved, close every connection to the old one."""
        try:
            found = await self.ask()
        except Exception:  # ask() takes every Sentinel's failure; anything else is a bug, said and survived
            self.log.failure("asking the Sentinels of {redis} failed", redis=self.address.display())
            return
        self._checked_at = self.clock.seconds()
        if found is None:
            if not self._lost:
                self._lost = True
                self.log.warn("no Sentinel of {redis} names a primary for {service}; asking again",
                              redis=self.address.display(), service=self.address.service)
            return
        if self._lost:
            self._lost = False
            self.log.info("the Sentinels of {redis} answer again", redis=self.address.display())
        self._learn(*found)

    def _learn(self, location: Location, epoch: int) -> None:
        if location == self.location or epoch < self.epoch:
            self.epoch = max(self.epoch, epoch)
            return  # the same primary, or a Sentinel that has not heard of the latest failover yet
        previous, self.location, self.epoch = self.location, location, epoch
        if previous is None:
            self.log.info("Redis Sentinel: the primary of {service} is {primary}", service=self.address.service,
                          primary=where(location))
            return
        self.failovers += 1
        self.log.warn("Redis Sentinel: the primary of {service} moved from {old} to {new} (epoch {epoch}); "
                      "reconnecting", service=self.address.service, old=where(previous), new=where(location),
                      epoch=epoch, redis="failover")
        self._moved_at = self.clock.seconds()
        for factory in list(self._factories):
            self._drop(factory)

    @property
    def moving(self) -> bool:
        """Whether the connections are being moved to a new primary (for at most FOLLOW_SECONDS)."""
        return self._moved_at is not None and self.clock.seconds() - self._moved_at < FOLLOW_SECONDS

    # --- a server that is no longer the primary -------------------------------------------

    def refused(self, handler: Any) -> None:
        """``handler``'s server answered as a replica: close its connections and ask the Sentinels now."""
        self._moved_at = self.clock.seconds()
        self._drop(handler._factory)
        self.clock.callLater(0, self._tick)

    def _drop(self, factory: Any) -> None:
        for connection in list(factory.pool):
            self._dropped.add(connection)
            if connection.transport is not None:
                connection.transport.loseConnection()

    def reconnected(self, handler: Any) -> bool:
        """Whether ``handler`` has a connection made since the last move (its others are closing)."""
        return any(c not in self._dropped for c in handler._factory.pool)
