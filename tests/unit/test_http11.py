"""pyrowire.http11: the Twilio client's own HTTP/1.1 pool, on a Clock and in-memory transports.

Every answer is fed byte by byte as well as whole: a parser must not care where TCP cuts.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from pyrowire.http11 import Answer, BadAnswer, Pool, Target
from tests.deferreds import result_of

TARGET: Target = ("http", "api.test", 80)
REQUEST = b"POST /m HTTP/1.1\r\nHost: api.test\r\nContent-Length: 3\r\n\r\nx=1"


class Endpoints:
    """Connects every attempt at once to a new in-memory transport, kept in ``transports``."""

    def __init__(self) -> None:
        self.transports: list[StringTransport] = []
        self.protocols: list[Any] = []
        self.hang = False

    def __call__(self, target: Target) -> Endpoints:
        return self

    def connect(self, factory: Factory) -> Deferred[Any]:
        if self.hang:
            return Deferred()
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.transports.append(transport)
        self.protocols.append(protocol)
        return succeed(protocol)


def _pool(max_idle: int = 64) -> tuple[Pool, Endpoints, Clock]:
    clock, endpoints = Clock(), Endpoints()
    return Pool(clock, max_idle, endpoint_for=endpoints), endpoints, clock


EMPTY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def _answered(head: bytes = EMPTY) -> tuple[Pool, Endpoints]:
    """A pool whose first request got ``head`` (whole) as its answer, a 200."""
    pool, endpoints, _ = _pool()
    d = pool.request(TARGET, REQUEST, 5)
    _feed(endpoints, head, True)
    assert result_of(d).status == 200
    return pool, endpoints


def _feed(endpoints: Endpoints, data: bytes, whole: bool, n: int = -1) -> None:
    protocol = endpoints.protocols[n]
    if whole:
        protocol.dataReceived(data)
    else:
        for i in range(len(data)):
            protocol.dataReceived(data[i:i + 1])


def _lose(endpoints: Endpoints, n: int = -1, reason: BaseException | None = None) -> None:
    endpoints.transports[n].loseConnection()
    endpoints.protocols[n].connectionLost(Failure(reason or ConnectionDone()))


def _failure(d: Deferred[Any], kind: type[BaseException]) -> BaseException:
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures, "the Deferred has not failed"
    assert failures[0].check(kind), failures[0]
    return failures[0].value


@pytest.fixture(params=["whole", "bytewise"])
def whole(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "whole")


def test_a_request_is_written_whole_and_its_answer_read_by_content_length(whole: bool) -> None:
    pool, endpoints, _ = _pool()
    d = pool.request(TARGET, REQUEST, 5)
    assert endpoints.transports[0].value() == REQUEST
    _feed(endpoints, b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-A: 1\r\nx-a: 2\r\n"
                     b"Content-Length: 12\r\n\r\n{\"sid\":\"SM\"}", whole)
    answer = result_of(d)
    assert answer == Answer(201, {b"content-type": b"application/json", b"x-a": b"1, 2", b"content-length": b"12"},
                            b'{"sid":"SM"}')


def test_a_connection_is_used_again_for_the_next_request_and_its_timer_is_gone() -> None:
    pool, endpoints, clock = _pool()
    for i in range(3):
        d = pool.request(TARGET, REQUEST, 5)
        _feed(endpoints, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % i, True)
        assert result_of(d).body == b"%d" % i
    assert len(endpoints.transports) == 1 and endpoints.transports[0].value() == REQUEST * 3
    assert not clock.getDelayedCalls()


def test_concurrent_requests_each_get_a_connection_and_idle_ones_beyond_the_limit_are_closed() -> None:
    pool, endpoints, _ = _pool(max_idle=2)
    pending = [pool.request(TARGET, REQUEST, 5) for _ in range(3)]
    assert len(endpoints.transports) == 3
    for n in range(3):
        _feed(endpoints, EMPTY, True, n)
    assert [result_of(d).status for d in pending] == [200, 200, 200]
    assert [t.disconnecting for t in endpoints.transports] == [False, False, True]


def test_a_chunked_answer_with_extensions_and_trailers(whole: bool) -> None:
    pool, endpoints, _ = _pool()
    d = pool.request(TARGET, REQUEST, 5)
    _feed(endpoints, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5;name=value\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n", whole)
    assert result_of(d).body == b"hello, world"
    again = pool.request(TARGET, REQUEST, 5)
    _feed(endpoints, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", whole)
    assert result_of(again).body == b"" and len(endpoints.transports) == 1


def test_an_interim_answer_is_skipped(whole: bool) -> None:
    pool, endpoints, _ = _pool()
    d = pool.request(TARGET, REQUEST, 5)
    _feed(endpoints, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", whole)
    assert result_of(d).status == 204


def test_an_answer_without_length_is_read_to_the_close_and_that_connection_is_not_kept(whole: bool) -> None:
    pool, endpoints, _ = _pool()
    d = pool.request(TARGET, REQUEST, 5)
    _feed(endpoints, b"HTTP/1.1 200 OK\r\n\r\nall of ", whole)
    _feed(endpoints, b"it", whole)
    assert not d.called
    _lose(endpoints)
    assert result_of(d).body == b"all of it"
    pool.request(TARGET, REQUEST, 5)
    assert len(endpoints.transports) == 2


@pytest.mark.parametrize("head", [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                                  b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"])
def test_connection_close_and_http_1_0_answers_close_their_connection(head: bytes) -> None:
    pool, endpoints = _answered(head)
    assert endpoints.transports[0].disconnecting
    pool.request(TARGET, REQUEST, 5)
    assert len(endpoints.transports) == 2


def test_no_whole_answer_within_the_timeout_is_a_timeout_and_drops_the_connection() -> None:
    pool, endpoints, clock = _pool()
    d = pool.request(TARGET, REQUEST, 5)
    _feed(endpoints, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", True)
    clock.advance(4.9)
    assert not d.called
    clock.advance(0.1)
    _failure(d, TimeoutError)
    assert endpoints.transports[0].disconnecting
    _lose(endpoints)
    pool.request(TARGET, REQUEST, 5)
    assert len(endpoints.transports) == 2


def test_connecting_counts_against_the_timeout() -> None:
    pool, endpoints, clock = _pool()
    endpoints.hang = True
    d = pool.request(TARGET, REQUEST, 3)
    clock.advance(3)
    _failure(d, TimeoutError)


def test_cancelling_a_request_drops_its_connection() -> None:
    pool, endpoints, clock = _pool()
    d = pool.request(TARGET, REQUEST, 5)
    d.cancel()
    _failure(d, CancelledError)
    assert endpoints.transports[0].disconnecting and not clock.getDelayedCalls()
    endpoints.hang = True
    connecting = pool.request(TARGET, REQUEST, 5)
    connecting.cancel()
    _failure(connecting, CancelledError)


def test_a_connection_lost_before_the_whole_answer_is_a_connection_lost(whole: bool) -> None:
    pool, endpoints, _ = _pool()
    d = pool.request(TARGET, REQUEST, 5)
    _feed(endpoints, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", whole)
    _lose(endpoints, reason=ConnectionLost())
    _failure(d, ConnectionLost)


def test_an_idle_connection_closed_by_the_server_is_not_used_again() -> None:
    pool, endpoints = _answered()
    _lose(endpoints)
    pool.request(TARGET, REQUEST, 5)
    assert len(endpoints.transports) == 2


def test_bytes_on_an_idle_connection_drop_it() -> None:
    _, endpoints = _answered()
    _feed(endpoints, b"HTTP/1.1 200 OK\r\n", True)
    assert endpoints.transports[0].disconnecting


@pytest.mark.parametrize("answer", [
    b"SSH-2.0-OpenSSH\r\n\r\n",
    b"HTTP/1.1 OK 200\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000,
])
def test_what_is_not_http_is_a_bad_answer(answer: bytes) -> None:
    pool, endpoints, _ = _pool()
    d = pool.request(TARGET, REQUEST, 5)
    _feed(endpoints, answer, True)
    _failure(d, BadAnswer)
    assert endpoints.transports[0].disconnecting


def test_close_closes_every_connection_and_fires_when_they_are_gone() -> None:
    assert result_of(_pool()[0].close()) is None
    pool, endpoints = _answered()
    pending = pool.request(TARGET, REQUEST, 5)
    closing = pool.close()
    assert all(t.disconnecting for t in endpoints.transports) and not closing.called
    for n in range(len(endpoints.transports)):
        _lose(endpoints, n)
    assert result_of(closing) is None
    _failure(pending, ConnectionLost)


def test_connections_idle_too_long_are_closed_instead_of_used() -> None:
    pool, endpoints = _answered()
    clock = pool.reactor
    assert isinstance(clock, Clock)
    clock.advance(15)
    d = pool.request(TARGET, REQUEST, 5)  # idle 15 s: still used
    _feed(endpoints, EMPTY, True)
    result_of(d)
    assert len(endpoints.transports) == 1
    clock.advance(15.5)
    pool.request(TARGET, REQUEST, 5)
    assert len(endpoints.transports) == 2 and endpoints.transports[0].disconnecting
