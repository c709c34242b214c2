"""pyrowire.http11 against real servers over TCP: kept-alive connections, chunked answers, not HTTP at all."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from pyrowire.errors import TwilioError
from pyrowire.http11 import Pool
from pyrowire.retry import RetryPolicy
from pyrowire.settings import TwilioConfig
from pyrowire.twilio import TwilioClient


class Answers(Resource):
    isLeaf = True

    def render_POST(self, request: Request) -> bytes:
        body = request.content.read()
        if request.path == b"/chunked":
            request.write(b"got ")  # no Content-Length: twisted.web answers HTTP/1.1 chunked
            request.write(body)
            return b""
        request.setHeader(b"content-type", b"application/json")
        return b'{"got": "%s"}' % body


class CountingSite(Site):
    def __init__(self, resource: Resource) -> None:
        super().__init__(resource)
        self.connections = 0

    def buildProtocol(self, addr: Any) -> Any:
        self.connections += 1
        return super().buildProtocol(addr)


def _post(path: bytes, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s" % (path, len(body), body)


@pytest_twisted.ensureDeferred
async def test_requests_one_after_another_share_one_connection_and_chunked_answers_are_read() -> None:
    site = CountingSite(Answers())
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    pool = Pool(reactor)
    target = ("http", "127.0.0.1", port.getHost().port)
    try:
        for i in range(5):
            answer = await pool.request(target, _post(b"/json", b"%d" % i), 5)
            assert (answer.status, answer.body) == (200, b'{"got": "%d"}' % i)
            assert answer.headers[b"content-type"] == b"application/json"
        chunked = await pool.request(target, _post(b"/chunked", b"it all"), 5)
        assert (chunked.status, chunked.body) == (200, b"got it all")
        assert b"chunked" in chunked.headers[b"transfer-encoding"]
        assert site.connections == 1
    finally:
        await pool.close()
        await port.stopListening()


class NotHTTP(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")


@pytest_twisted.ensureDeferred
async def test_the_twilio_client_says_when_an_answer_is_not_http() -> None:
    """A server that does not speak HTTP gives a retryable TwilioError that says so, without a status."""
    port = reactor.listenTCP(0, Factory.forProtocol(NotHTTP), interface="127.0.0.1")
    client = TwilioClient(reactor, timeout=5, policy=RetryPolicy(max_attempts=1))
    creds = TwilioConfig("AC" + "a" * 32, "token", "+15005550006", None, False,
                         f"http://127.0.0.1:{port.getHost().port}")
    try:
        with pytest.raises(TwilioError) as info:
            await client.send(creds, to="+15551234567", body="x")
        assert (info.value.status, info.value.retryable) == (None, True)
        assert info.value.message.startswith("The Twilio API's answer could not be read: the answer does not start")
    finally:
        await client.close()
        await port.stopListening()
