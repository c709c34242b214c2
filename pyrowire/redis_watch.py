"""Redis going away and coming back, said once each instead of once per connection.

While Redis is away, each of a process's txredisapi connections (a small pool, and one
per worker loop) reconnects on its own, and Twisted's ClientService logs every attempt:
about a hundred lines in fifteen seconds. Instead:

* :func:`quiet` marks a txredisapi pool's connections as summarised here, and pyrowire's
  log observer (:mod:`pyrowire.logs`) drops what :func:`is_chatter` recognises: their
  retry lines and txredisapi's own lost-connection lines;
* :class:`RedisWatch` looks at the store's connection once a second and logs one error
  when Redis goes away (naming what that stops), a reminder at most every
  ``REMINDER_SECONDS`` while it stays away, and one line when it is back.

Nothing here imports txredisapi, so modules that only ask :func:`explains` stay free of it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from weakref import WeakSet

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from pyrowire.errors import RedisUnavailable

REMINDER_SECONDS = 30.0
CHECK_SECONDS = 1.0

# the ClientService of every connection of a quiet pool (the source of its retry lines)
_QUIET: WeakSet[Any] = WeakSet()
# txredisapi's own lines (twisted.python.log, so without a source) for a connection lost while Redis is away
_LEGACY_CHATTER = re.compile(
    r"^(?:Discarding dead connection\.|Redis error: could not set dbid=\d+: (?:Lost connection|Not connected))$"
)


def quiet(pool: Any) -> Any:
    """Have ``pool``'s connections summarised by RedisWatch rather than logged one retry at a time; returns it."""
    factory = getattr(pool, "_factory", None)
    for slot in getattr(factory, "slots", ()):
        service = getattr(slot, "service", None)
        if service is not None:
            _QUIET.add(service)
    return pool


def is_chatter(event: Mapping[str, Any]) -> bool:
    """Whether ``event`` is connection chatter of a quiet pool, which RedisWatch summarises instead."""
    source = event.get("log_source")
    if source is not None:
        try:
            if source in _QUIET:
                return True
        except TypeError:  # an unhashable source is not one of ours
            return False
    if event.get("log_namespace") == "log_legacy":
        text = event.get("log_text")
        if text is None:
            message = event.get("message")
            text = " ".join(str(m) for m in message) if isinstance(message, tuple) else None
        return isinstance(text, str) and _LEGACY_CHATTER.match(text) is not None
    return False


def explains(error: BaseException) -> bool:
    """Whether ``error`` only says that Redis is away, which RedisWatch reports once for the whole process."""
    if isinstance(error, RedisUnavailable):
        return True
    txredisapi = sys.modules.get("txredisapi")  # the error came from it, so it is imported if it matters
    return txredisapi is not None and isinstance(error, (txredisapi.ConnectionError, txredisapi.TimeoutError))


def affected(role: str, topics: Sequence[str], listens: bool) -> str:
    """What a process of ``role`` stops doing while Redis is away, for the line that says it went."""
    parts = []
    if role in ("all", "web"):
        parts.append("the webhook answers each topic's error_response")
    if role in ("all", "worker") and topics:
        parts.append(f"the workers of {', '.join(topics)} wait (accepted messages stay in Redis)")
    if listens:
        parts.append("/health answers 503")
    return "; ".join(parts) or "nothing can be read or written"


class RedisWatch:
    """Logs once when ``connected()`` turns false, every ``reminder`` seconds while it stays so, once when back."""

    log = Logger()

    def __init__(self, connected: Callable[[], bool], clock: IReactorTime, where: str, affects: str,
                 reminder: float = REMINDER_SECONDS, interval: float = CHECK_SECONDS) -> None:
        self._connected = connected
        self.clock = clock
        self.where = where
        self.affects = affects
        self.reminder = reminder
        self.interval = interval
        self.away_since: float | None = None
        self._reminded = 0.0
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock

    def start(self) -> RedisWatch:
        """Check every ``interval`` seconds from now on; returns the watch."""
        if not self._loop.running:
            self._loop.start(self.interval, now=False)
        return self

    def stop(self) -> None:
        """No more checks and no more lines (before the connections are closed on purpose)."""
        if self._loop.running:
            self._loop.stop()

    def check(self) -> None:
        """Compare the connection with what was last said, and say what changed (or remind)."""
        now = self.clock.seconds()
        if self._connected():
            if self.away_since is not None:
                self.log.info("Redis at {where} is back after {seconds:.0f} s", where=self.where,
                              seconds=now - self.away_since, redis="up")
                self.away_since = None
            return
        if self.away_since is None:
            self.away_since = self._reminded = now
            self.log.error("Redis at {where} is unreachable: {affects}; reconnecting in the background",
                           where=self.where, affects=self.affects, redis="down")
        elif now - self._reminded >= self.reminder:
            self._reminded = now
            self.log.error("Redis at {where} still unreachable after {seconds:.0f} s: {affects}", where=self.where,
                           seconds=now - self.away_since, affects=self.affects, redis="down")


def watch(store: Any, clock: IReactorTime, role: str, topics: Sequence[str], listens: bool) -> RedisWatch:
    """A started RedisWatch of ``store``'s connection, for a process of ``role``."""
    return RedisWatch(lambda: bool(store.connected), clock, store.address.display(),
                      affected(role, topics, listens)).start()
