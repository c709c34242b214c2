"""pyrowire.http11 against real servers over TCP and TLS: kept-alive connections, chunked answers, certificates
verified, not HTTP at all."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor, ssl
from twisted.internet.error import ConnectionLost
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


def _self_signed(host: str) -> tuple[ssl.PrivateCertificate, ssl.Certificate]:
    """A key and a certificate for ``host``, signed by itself (trusted by no system)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256()))
    pem_cert = cert.public_bytes(serialization.Encoding.PEM)
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return ssl.PrivateCertificate.loadPEM(pem_key + pem_cert), ssl.Certificate.loadPEM(pem_cert)


class TrustOnly:
    """Verifies servers against one certificate only (as a test's own root)."""

    def __init__(self, root: ssl.Certificate) -> None:
        self.root = root

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return ssl.optionsForClientTLS(hostname.decode("ascii"), trustRoot=self.root)


@pytest_twisted.ensureDeferred
async def test_https_is_verified_and_an_untrusted_server_never_sees_the_request() -> None:
    """Over TLS the pool checks the server's certificate: with a root that trusts it the request goes
    through (kept alive); with the default policy (the system's roots) a self-signed server gets no
    byte of the request, so no Authorization header reaches it."""
    private, public = _self_signed("localhost")
    site = CountingSite(Answers())
    port = reactor.listenSSL(0, site, private.options(), interface="127.0.0.1")
    target = ("https", "localhost", port.getHost().port)
    trusting, default = Pool(reactor, tls=TrustOnly(public)), Pool(reactor)
    received: list[bytes] = []
    original = site.buildProtocol

    def recording(addr: Any) -> Any:
        protocol = original(addr)
        feed = protocol.dataReceived
        protocol.dataReceived = lambda data: (received.append(data), feed(data))[1]
        return protocol

    try:
        for i in range(2):
            answer = await trusting.request(target, _post(b"/json", b"%d" % i), 5)
            assert (answer.status, answer.body) == (200, b'{"got": "%d"}' % i)
        assert site.connections == 1
        site.buildProtocol = recording  # type: ignore[method-assign]
        with pytest.raises(ConnectionLost) as lost:
            await default.request(target, _post(b"/json", b"secret"), 5)
        assert "certificate verify failed" in str(lost.value)
        assert received == []
    finally:
        await trusting.close()
        await default.close()
        await port.stopListening()
