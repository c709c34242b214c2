"""SentinelPrimary: which Sentinel to believe, when to move the connections, and for how long commands wait."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
import txredisapi
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from pyrowire.runconfig import parse_redis_url
from pyrowire.sentinel import FOLLOW_SECONDS, SentinelPrimary, not_primary

ADDRESS = parse_redis_url("redis+sentinel://:pw@s1:1,s2:2,s3:3/mymaster/0")


class FakeSentinel:
    """A Sentinel connection answering SENTINEL MASTER with what the test sets (an exception to fail)."""

    def __init__(self, ip: str = "10.0.0.1", port: int = 6379, epoch: int = 0, flags: str = "master") -> None:
        self.answer: Any = None
        self.set(ip, port, epoch, flags)

    def set(self, ip: str, port: int, epoch: int, flags: str = "master") -> None:
        self.answer = ["name", "mymaster", "ip", ip, "port", str(port), "flags", flags, "config-epoch", str(epoch)]

    def execute_command(self, *command: Any) -> Deferred[Any]:
        assert command == ("SENTINEL", "MASTER", "mymaster")
        if isinstance(self.answer, Exception):
            return defer.fail(self.answer)
        return defer.succeed(self.answer)


class FakeTransport:
    def __init__(self) -> None:
        self.closed = False

    def loseConnection(self) -> None:
        self.closed = True


class FakeConnection:
    def __init__(self) -> None:
        self.transport = FakeTransport()


class FakeFactory:
    def __init__(self, n: int = 2) -> None:
        self.pool = [FakeConnection() for _ in range(n)]


class FakeHandler:
    def __init__(self, n: int = 2) -> None:
        self._factory = FakeFactory(n)


def primary_with(*sentinels: FakeSentinel) -> tuple[SentinelPrimary, Clock]:
    clock = Clock()
    primary = SentinelPrimary(ADDRESS, clock=clock)
    primary.sentinels = list(sentinels)
    return primary, clock


@pytest_twisted.ensureDeferred
async def test_the_highest_configuration_epoch_wins() -> None:
    """Of the Sentinels' answers, the one with the highest epoch names the primary; down or failing ones count not."""
    failing = FakeSentinel()
    failing.answer = txredisapi.ResponseError("ERR No such master with that name")
    primary, _ = primary_with(FakeSentinel("10.0.0.1", 6379, 3), FakeSentinel("10.0.0.2", 6380, 4),
                              FakeSentinel("10.0.0.3", 6381, 9, "master,s_down"), failing)
    assert await primary.ask() == (("10.0.0.2", 6380), 4)


@pytest_twisted.ensureDeferred
async def test_no_answer_is_none() -> None:
    """With no Sentinel naming a healthy primary, ask() says None and discover() fails as txredisapi expects."""
    primary, _ = primary_with(FakeSentinel(flags="master,o_down"))
    assert await primary.ask() is None
    with pytest.raises(txredisapi.MasterNotFoundError):
        await primary.discover()


@pytest_twisted.ensureDeferred
async def test_a_move_closes_every_followed_connection() -> None:
    """When the Sentinels name another primary, every connection of every followed handler is closed."""
    sentinel = FakeSentinel("10.0.0.1", 6379, 1)
    primary, _ = primary_with(sentinel)
    pool, popper = primary.follow(FakeHandler(4)), primary.follow(FakeHandler(1))
    await primary.check()
    assert primary.location == ("10.0.0.1", 6379)
    assert not any(c.transport.closed for h in (pool, popper) for c in h._factory.pool)
    sentinel.set("10.0.0.2", 6379, 2)
    await primary.check()
    assert (primary.location, primary.failovers) == (("10.0.0.2", 6379), 1)
    assert all(c.transport.closed for h in (pool, popper) for c in h._factory.pool)
    assert not primary.reconnected(pool)
    pool._factory.pool.append(FakeConnection())  # a connection made after the move
    assert primary.reconnected(pool)


@pytest_twisted.ensureDeferred
async def test_an_older_epoch_never_takes_the_primary_back() -> None:
    """A Sentinel that has not heard of the latest failover yet does not move the connections back."""
    sentinel = FakeSentinel("10.0.0.2", 6379, 5)
    primary, _ = primary_with(sentinel)
    handler = primary.follow(FakeHandler())
    await primary.check()
    sentinel.set("10.0.0.1", 6379, 4)
    await primary.check()
    assert primary.location == ("10.0.0.2", 6379)
    assert not any(c.transport.closed for c in handler._factory.pool)


@pytest_twisted.ensureDeferred
async def test_commands_wait_for_the_new_primary_only_for_a_while() -> None:
    """``moving`` holds for FOLLOW_SECONDS after a move, after which an unreachable primary is an outage."""
    sentinel = FakeSentinel("10.0.0.1", 6379, 1)
    primary, clock = primary_with(sentinel)
    await primary.check()
    assert not primary.moving
    sentinel.set("10.0.0.2", 6379, 2)
    await primary.check()
    assert primary.moving
    clock.advance(FOLLOW_SECONDS)
    assert not primary.moving


@pytest_twisted.ensureDeferred
async def test_a_replica_answer_closes_that_handler_and_asks_again() -> None:
    """READONLY on a connection closes its handler's connections at once and asks the Sentinels on the next turn."""
    sentinel = FakeSentinel("10.0.0.1", 6379, 1)
    primary, clock = primary_with(sentinel)
    await primary.check()
    refused, other = primary.follow(FakeHandler()), primary.follow(FakeHandler())
    sentinel.set("10.0.0.2", 6379, 2)
    primary.refused(refused)
    assert all(c.transport.closed for c in refused._factory.pool)
    assert primary.moving and primary.location == ("10.0.0.1", 6379)
    clock.advance(0)
    assert primary.location == ("10.0.0.2", 6379)
    assert all(c.transport.closed for c in other._factory.pool)


@pytest_twisted.ensureDeferred
async def test_discovery_reuses_a_fresh_answer() -> None:
    """Reconnecting connections get the last check's answer while it is fresh, and ask again when it is not."""
    sentinel = FakeSentinel("10.0.0.1", 6379, 1)
    primary, clock = primary_with(sentinel)
    await primary.check()
    sentinel.set("10.0.0.2", 6379, 2)
    assert await primary.discover() == ("10.0.0.1", 6379)
    clock.advance(primary.interval + 0.01)
    assert await primary.discover() == ("10.0.0.2", 6379)


def test_only_replica_replies_mean_the_primary_moved() -> None:
    """READONLY, UNBLOCKED and MASTERDOWN replies say the server is no longer the primary; others do not."""
    assert not_primary(txredisapi.ResponseError("READONLY You can't write against a read only replica."))
    assert not_primary(txredisapi.ResponseError("UNBLOCKED force unblock from blocking operation"))
    assert not not_primary(txredisapi.ResponseError("OOM command not allowed"))
    assert not not_primary(txredisapi.ConnectionError("Lost connection"))
