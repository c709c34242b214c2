"""pyrowire's queue in memory: the daemon's own Lua scripts, run in-process by fakeredis.

:class:`MemoryStore` is a :class:`pyrowire.store.Store` whose connection is a
fakeredis server in this process: every queue operation is the same command or the
same script of :mod:`pyrowire.scripts` that the daemon sends to Redis, so there is
one implementation of the queue's semantics. What fakeredis cannot do for a reactor
is provided here:

* **time** comes from the injected clock (a ``task.Clock`` in unit tests), so keys
  expire when the test advances it;
* **blocking pops** never block a thread: fakeredis's ``BLMOVE`` answers at once, so
  a pop that finds nothing parks a Deferred here, and every command that runs
  afterwards hands newly queued messages to the parked pops, longest-waiting first,
  with ``LMOVE``. As on Redis, cancelling a parked pop's Deferred does not withdraw
  the pop: it stays parked, and may still move a message, until it times out or its
  popper is closed.

Set ``store.down = True`` to simulate losing Redis: commands raise
:class:`~pyrowire.errors.RedisUnavailable`, and parked pops fail with it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

try:
    import fakeredis
    from fakeredis._core import Database
except ImportError as e:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "pyrowire.testing needs fakeredis with Lua: install pyrowire's 'testing' extra, "
        "or pip install 'fakeredis[lua]'"
    ) from e
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from pyrowire.errors import RedisReplyError, RedisUnavailable
from pyrowire.keys import TopicKeys
from pyrowire.runconfig import RedisAddress
from pyrowire.store import ScriptMissing, Store


class _ClockDatabase(Database):  # type: ignore[misc]
    """A fakeredis database whose "now", for expiries, is the injected clock's."""

    def __init__(self, lock: Any, clock: IReactorTime) -> None:
        self._clock = clock
        super().__init__(lock)

    @property  # type: ignore[override]
    def time(self) -> float:
        return self._clock.seconds()

    @time.setter
    def time(self, value: float) -> None:
        pass  # fakeredis sets the wall-clock time before each command; the clock wins


@dataclass
class _Parked:
    """One blocking pop waiting for a message."""

    popper: MemoryPopper
    source: str
    destination: str
    deferred: Deferred[str | None]
    timer: IDelayedCall | None


class MemoryPopper:
    """A blocking-pop "connection" of a :class:`MemoryStore`."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._closed = False

    @property
    def connected(self) -> bool:
        return not self._closed and self._store.connected

    def pop(self, keys: TopicKeys, worker: str, timeout: float) -> Deferred[str | None]:
        """As ``BLMOVE queue inflight RIGHT LEFT timeout``: a timeout of 0 waits for ever."""
        if self._closed:
            return fail(RedisUnavailable("this popper is closed"))
        try:
            value = self._store._move(keys.queue, keys.inflight(worker))
        except RedisUnavailable:
            return fail()
        if value is not None:
            return succeed(value)
        # cancelling gives the caller CancelledError; the pop itself stays parked, as on Redis
        d: Deferred[str | None] = Deferred(lambda _: None)
        parked = _Parked(self, keys.queue, keys.inflight(worker), d, None)
        if timeout > 0:
            parked.timer = self._store.clock.callLater(timeout, self._store._expire, parked)
        self._store._parked.append(parked)
        return d

    def execute(self, *command: Any) -> Deferred[Any]:
        if self._closed:
            return fail(RedisUnavailable("this popper is closed"))
        return Deferred.fromCoroutine(self._store._execute(*command))

    def close(self) -> Deferred[None]:
        """Close the connection: its parked pop is withdrawn and fails with RedisUnavailable."""
        self._closed = True
        self._store._unpark(lambda p: p.popper is self, RedisUnavailable("the popper was closed"))
        return succeed(None)


class MemoryStore(Store):
    """pyrowire's queue operations on a fakeredis server in this process, with time from ``clock``."""

    def __init__(self, clock: IReactorTime, prefix: str = "pyrowire") -> None:
        self.clock = clock
        self.prefix = prefix
        self.address: RedisAddress | None = None
        self.server = fakeredis.FakeServer()
        self.server.dbs = defaultdict(lambda: _ClockDatabase(self.server.lock, clock))
        client = fakeredis.FakeRedis(server=self.server, decode_responses=True)
        # a bare connection: replies as they come off the wire, without redis-py's conversions
        self._connection = client.connection_pool.get_connection()
        self._started = True
        self._down = False
        self._parked: list[_Parked] = []

    def __repr__(self) -> str:
        return f"<MemoryStore prefix={self.prefix!r} down={self._down} parked={len(self._parked)}>"

    def start(self, address: RedisAddress | None = None) -> None:
        """Accept commands again (a new MemoryStore accepts them at once)."""
        if address is not None:
            self.address = address
        self._started = True

    def stop(self) -> Deferred[None]:
        """Refuse commands from now on; parked pops fail with RedisUnavailable."""
        self._started = False
        self._unpark(lambda _: True, RedisUnavailable("the store was stopped"))
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
            self._unpark(lambda _: True, RedisUnavailable("Redis is down"))

    async def _execute(self, *command: Any) -> Any:
        reply = self._command(*command)
        self._serve()
        return reply

    # --- the in-process connection -------------------------------------------

    def _command(self, *command: Any) -> Any:
        if self._down:
            raise RedisUnavailable("Redis (in memory) is down")
        if not self._started:
            raise RedisUnavailable("not connected to Redis (in memory): the store is stopped")
        self._connection.send_command(*command)
        try:
            return self._connection.read_response()
        except Exception as e:
            # fakeredis raises its client library's error-reply classes; told apart by name, so this
            # module imports no Redis client of its own
            kinds = {cls.__name__ for cls in type(e).__mro__}
            if "NoScriptError" in kinds:
                raise ScriptMissing(str(e)) from None
            if "ResponseError" in kinds:
                raise RedisReplyError(f"Redis (in memory) answered {command[0]}: {e}") from None
            raise

    def _move(self, source: str, destination: str) -> str | None:
        value = self._command("LMOVE", source, destination, "RIGHT", "LEFT")
        return None if value is None else str(value)

    def _serve(self) -> None:
        """Hand what the last command queued to the parked pops, longest-waiting first."""
        if not self._parked:
            return
        ready: list[tuple[Deferred[str | None], str]] = []
        db = self.server.dbs[0]
        for parked in list(self._parked):
            if parked.source.encode() not in db:
                continue  # nothing queued there: no need to ask
            value = self._move(parked.source, parked.destination)
            if value is None:
                continue
            self._withdraw(parked)
            ready.append((parked.deferred, value))
        # every move is done before any pop's caller runs, as Redis replies after the command
        for d, value in ready:
            if not d.called:  # a cancelled pop still moved the message, as on Redis
                d.callback(value)

    def _withdraw(self, parked: _Parked) -> None:
        self._parked.remove(parked)
        if parked.timer is not None and parked.timer.active():
            parked.timer.cancel()

    def _expire(self, parked: _Parked) -> None:
        if parked in self._parked:
            self._parked.remove(parked)
            if not parked.deferred.called:
                parked.deferred.callback(None)

    def _unpark(self, which: Any, error: Exception) -> None:
        for parked in [p for p in self._parked if which(p)]:
            self._withdraw(parked)
            if not parked.deferred.called:
                parked.deferred.errback(error)
