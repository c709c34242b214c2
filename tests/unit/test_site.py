"""WebSite over a trivial resource, driven byte by byte through a StringTransport: no sockets, a task.Clock."""

from __future__ import annotations

import io
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import Request

from pyrowire.site import WebSite
from pyrowire.webhook import MAX_BODY
from tests.logged import LoggedErrors


class Recorder(Resource):
    """A leaf resource that answers with the size of the body it was given, and remembers it."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def render(self, request: Request) -> bytes:
        body = request.content.read()
        self.bodies.append(body)
        return b"got %d" % len(body)


class Boom(Resource):
    """A leaf resource whose rendering fails."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        raise RuntimeError("secret-in-the-traceback")


class Connection:
    """One HTTP connection to a WebSite, over a StringTransport."""

    def __init__(self, site: WebSite) -> None:
        self.transport = StringTransport()
        self.protocol: Any = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    @property
    def answer(self) -> bytes:
        return bytes(self.transport.value())

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

    def held(self) -> int:
        """The body bytes this connection holds: the requests' content plus the channel's buffer."""
        channel = self.protocol
        total = sum(len(b) for b in channel._dataBuffer)
        for request in channel.requests:
            content = request.content
            if content is not None and not content.closed:
                total += len(content.getvalue()) if isinstance(content, io.BytesIO) else content.tell()
        return total


def post_head(length: int | None = None, chunked: bool = False, extra: bytes = b"") -> bytes:
    head = b"POST /queue/echo HTTP/1.1\r\nHost: example.com\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    if length is not None:
        head += b"Content-Length: %d\r\n" % length
    if chunked:
        head += b"Transfer-Encoding: chunked\r\n"
    return head + extra + b"\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def site(recorder: Recorder) -> WebSite:
    return WebSite(recorder, reactor=Clock())


def test_site_defaults() -> None:
    """A WebSite shows no tracebacks, logs no factory start/stop, and limits bodies to 64 KiB unless told."""
    site = WebSite(Recorder(), reactor=Clock())
    assert site.displayTracebacks is False
    assert site.noisy is False
    assert site.max_body == MAX_BODY == 64 * 1024
    assert site.access_log is False


def test_small_body_reaches_the_resource(site: WebSite, recorder: Recorder) -> None:
    """A 1 KiB form body is handed whole to the resource, which answers 200."""
    c = Connection(site)
    body = b"Body=" + b"x" * 1019
    c.send(post_head(len(body)) + body)
    assert recorder.bodies == [body]
    assert c.answer.startswith(b"HTTP/1.1 200 ")
    assert c.answer.endswith(b"got 1024")
    assert not c.closed


def test_body_of_exactly_the_limit_is_accepted(site: WebSite, recorder: Recorder) -> None:
    """A body of exactly max_body bytes, announced or chunked, is not refused."""
    body = b"x" * MAX_BODY
    c = Connection(site)
    c.send(post_head(len(body)) + body)
    assert c.answer.startswith(b"HTTP/1.1 200 ")
    c = Connection(site)
    c.send(post_head(chunked=True) + chunk(body) + b"0\r\n\r\n")
    assert c.answer.startswith(b"HTTP/1.1 200 ")
    assert recorder.bodies == [body, body]


def test_huge_content_length_is_refused_before_the_body(site: WebSite, recorder: Recorder) -> None:
    """A Content-Length of 10 MB is answered 413 as soon as the headers are in, and the connection is closed."""
    c = Connection(site)
    c.send(post_head(10 * 1000 * 1000))
    answer = c.answer
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"\r\nConnection: close\r\n" in answer
    assert b"\r\nContent-Type: text/plain; charset=utf-8\r\n" in answer
    assert answer.endswith(b"\r\n\r\nThe request body is larger than 64 KiB.\n")
    assert c.closed
    # whatever still arrives is neither kept nor answered, and the resource is never called
    for _ in range(20):
        c.send(b"y" * 65536)
    assert c.held() == 0
    assert c.answer == answer
    assert recorder.bodies == []


def test_one_byte_over_the_limit_is_refused(site: WebSite, recorder: Recorder) -> None:
    """A Content-Length of max_body + 1 is refused, even when the whole body comes in the same packet."""
    c = Connection(site)
    c.send(post_head(MAX_BODY + 1) + b"x" * (MAX_BODY + 1))
    assert c.answer.startswith(b"HTTP/1.1 413 ")
    assert c.closed
    assert recorder.bodies == []


def test_expect_continue_gets_413_and_no_100(site: WebSite, recorder: Recorder) -> None:
    """A client that asks to continue with a too-large body gets the 413 alone, never a 100 Continue."""
    c = Connection(site)
    c.send(post_head(10 * 1000 * 1000, extra=b"Expect: 100-continue\r\n"))
    assert c.answer.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in c.answer
    assert c.closed


def test_chunked_body_over_the_limit_is_refused_while_reading(site: WebSite, recorder: Recorder) -> None:
    """A chunked body is counted as it arrives: 413 once it passes the limit, never holding much more than it."""
    c = Connection(site)
    c.send(post_head(chunked=True))
    piece = b"z" * 8192
    sent = 0
    while not c.closed:
        assert sent <= MAX_BODY + len(piece), "the limit was not enforced"
        c.send(chunk(piece))
        sent += len(piece)
        assert c.held() <= MAX_BODY
    answer = c.answer
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"\r\nConnection: close\r\n" in answer
    # more chunks and the final one change nothing
    for _ in range(20):
        c.send(chunk(piece))
    c.send(b"0\r\n\r\n")
    assert c.held() == 0
    assert c.answer == answer
    assert recorder.bodies == []


def test_one_large_chunk_is_refused(site: WebSite, recorder: Recorder) -> None:
    """A single chunk larger than the limit, announced in its size line, is refused without being kept."""
    c = Connection(site)
    c.send(post_head(chunked=True) + b"%x\r\n" % (10 * 1000 * 1000) + b"q" * 70000)
    assert c.answer.startswith(b"HTTP/1.1 413 ")
    assert c.closed
    assert c.held() == 0
    assert recorder.bodies == []


def test_max_body_is_configurable(recorder: Recorder) -> None:
    """A WebSite made with max_body=100 refuses 101 bytes and accepts 100."""
    site = WebSite(recorder, max_body=100, reactor=Clock())
    c = Connection(site)
    c.send(post_head(101))
    assert c.answer.startswith(b"HTTP/1.1 413 ")
    assert c.answer.endswith(b"larger than 100 bytes.\n")
    c = Connection(site)
    c.send(post_head(100) + b"a" * 100)
    assert c.answer.startswith(b"HTTP/1.1 200 ")


def test_errors_show_no_traceback(logged_errors: LoggedErrors) -> None:
    """A resource that raises gets a 500 page without the traceback or the exception's text (it is logged)."""
    logged = logged_errors.expect()
    c = Connection(WebSite(Boom(), reactor=Clock()))
    c.send(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert c.answer.startswith(b"HTTP/1.1 500 ")
    assert b"Traceback" not in c.answer
    assert b"secret-in-the-traceback" not in c.answer
    assert [e["log_failure"].type for e in logged] == [RuntimeError]


@pytest.mark.parametrize("access_log", [False, True])
def test_access_log_only_when_asked(recorder: Recorder, access_log: bool) -> None:
    """Requests are written to the access log only when the site was made with access_log=True."""
    site = WebSite(recorder, access_log=access_log, reactor=Clock())
    site.startFactory()
    logfile = io.BytesIO()
    site.logFile = logfile
    try:
        Connection(site).send(b"GET /x HTTP/1.1\r\nHost: example.com\r\n\r\n")
        assert (b'"GET /x HTTP/1.1" 200' in logfile.getvalue()) is access_log
    finally:
        site.stopFactory()


def test_a_client_that_never_finishes_is_counted_and_summarised_not_logged_one_by_one() -> None:
    """Idle connections are closed after the site's timeout as before; each is counted in
    pyrowire_http_timeouts_total, no line is logged per client, and one summary line follows within a minute."""
    from twisted.logger import capturedLogs, formatEvent

    from pyrowire.metrics import Metrics
    from pyrowire.site import TIMEOUT_SUMMARY_SECONDS

    clock, metrics = Clock(), Metrics(["echo"])
    site = WebSite(Recorder(), reactor=clock, metrics=metrics)
    with capturedLogs() as events:
        idle = [Connection(site) for _ in range(200)]
        idle[0].send(b"POST /queue/echo HTTP/1.1\r\nHost: example.com\r\n")  # a head that never ends
        clock.advance(site.timeOut)
        assert all(c.closed for c in idle)
        assert not any("Timing out client" in formatEvent(e) for e in events)
        assert b"pyrowire_http_timeouts_total 200.0" in metrics.render()[0]
        clock.advance(TIMEOUT_SUMMARY_SECONDS)
        site.doStop()
    said = [formatEvent(e) for e in events if "did not finish a request" in formatEvent(e)]
    assert said == [f"200 client(s) did not finish a request within {site.timeOut} s and were disconnected "
                    "(in the last 60 s; counted in pyrowire_http_timeouts_total)"]
    assert clock.getDelayedCalls() == []


def test_stopping_the_site_says_what_is_still_to_be_said() -> None:
    """A site stopped before its summary is due logs it at once and leaves no timer behind."""
    from twisted.logger import capturedLogs, formatEvent

    clock = Clock()
    site = WebSite(Recorder(), reactor=clock)
    site.doStart()
    with capturedLogs() as events:
        Connection(site)
        clock.advance(site.timeOut)
        clock.advance(site.protocol.abortTimeout)  # the channel's forced abort of a client that did not go
        site.doStop()
    said = [formatEvent(e).split(" did not")[0] for e in events if "did not finish" in formatEvent(e)]
    assert said == ["1 client(s)"]
    assert clock.getDelayedCalls() == []
