"""A small HTTP/1.1 client for one API: persistent connections, one request at a time on each.

The Twilio client sends the same kind of request many times a second to one host: a POST of a
short form with headers that never change. twisted.web's ``Agent`` serves every use of HTTP and
pays for it on each request (a ``Request`` object and its writer, a body producer, a ``Response``
with its own protocol, a stateful parser, a pool lookup by a key built each time, several
Deferreds); here a request is one write of bytes built mostly once per account, the answer is
parsed in one place (status line, headers, a body by ``Content-Length``, chunked or up to the
close) and handed back whole as an :class:`Answer`.

Failures are Twisted's own: ``DNSLookupError`` and ``ConnectError`` (connecting), ``TimeoutError``
(no whole answer within the timeout, connecting included), ``ConnectionLost`` (the connection
ended before a whole answer), :class:`BadAnswer` (what came back is not HTTP), and
``CancelledError`` when the caller cancels. A request is never sent twice here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from twisted.internet.defer import CancelledError, Deferred, DeferredList, TimeoutError, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectingCancelledError, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IPolicyForHTTPS

MAX_HEAD = 65536  # bytes of status line and headers
MAX_BODY = 4 * 1024 * 1024
# a connection idle longer than this is closed rather than used again: servers close idle connections
# (often after 60 s or more), and a request written just as one does is lost with it
IDLE_SECONDS = 15.0
_END_OF_HEAD = b"\r\n\r\n"

# how the body of an answer is framed
_HEAD, _LENGTH, _CHUNKED, _TO_CLOSE = range(4)

Target = tuple[str, str, int]  # scheme ("http" or "https"), host, port


class Answer(NamedTuple):
    status: int
    headers: dict[bytes, bytes]  # names lower-cased; repeated headers joined with ", "
    body: bytes


class BadAnswer(Exception):
    """The server's answer was not HTTP/1.x as this client reads it."""


class _Connection(Protocol):
    """One persistent connection: a request is written whole, its answer read whole."""

    def __init__(self, pool: Pool, target: Target) -> None:
        self._pool = pool
        self._target = target
        self._waiting: Deferred[Answer] | None = None
        self._timer: Any = None
        self._buffer = b""
        self._state = _HEAD
        self._status = 0
        self._headers: dict[bytes, bytes] = {}
        self._need = 0  # bytes of body still to come (_LENGTH), or of the current chunk (_CHUNKED)
        self._body: list[bytes] = []
        self._size = 0
        self._keep = False
        self.lost = False
        self.idle_since = 0.0
        self.closed: Deferred[None] = Deferred()
        self._t: Any = None  # the transport (an ITCPTransport, or TLS over one)

    def connectionMade(self) -> None:
        self._t = self.transport

    # --- the request -------------------------------------------------------------

    def request(self, data: bytes, timeout: float) -> Deferred[Answer]:
        self._state, self._buffer, self._body, self._size = _HEAD, b"", [], 0
        d: Deferred[Answer] = Deferred(self._cancel)
        self._waiting = d
        self._timer = self._pool.reactor.callLater(timeout, self._expire)
        self._t.write(data)
        return d

    def _cancel(self, d: Deferred[Answer]) -> None:
        if self._waiting is d:
            self._waiting = None
            self._stop_timer()
            self._t.abortConnection()  # the answer may still come: this connection cannot be reused

    def _expire(self) -> None:
        self._timer = None
        self._fail(Failure(TimeoutError()))

    def _stop_timer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _fail(self, failure: Failure, abort: bool = True) -> None:
        d, self._waiting = self._waiting, None
        self._stop_timer()
        if abort:
            self._t.abortConnection()
        if d is not None:
            d.errback(failure)

    def _done(self, body: bytes) -> None:
        d, self._waiting = self._waiting, None
        self._stop_timer()
        answer = Answer(self._status, self._headers, body)
        if self._keep and not self.lost and not self._buffer:
            self._pool.release(self)
        else:
            self._t.loseConnection()
        if d is not None:
            d.callback(answer)

    # --- the answer --------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._waiting is None:
            self._t.abortConnection()  # bytes nobody asked for: the connection is out of step
            return
        self._buffer += data
        try:
            self._read()
        except BadAnswer as e:
            self._fail(Failure(e))

    def _read(self) -> None:
        while self._waiting is not None:
            if self._state == _HEAD:
                end = self._buffer.find(_END_OF_HEAD)
                if end < 0:
                    if len(self._buffer) > MAX_HEAD:
                        raise BadAnswer("the answer's headers are too long")
                    return
                head, self._buffer = self._buffer[:end], self._buffer[end + 4:]
                self._head(head)
            elif self._state == _LENGTH:
                if len(self._buffer) < self._need:
                    return
                body, self._buffer = self._buffer[:self._need], self._buffer[self._need:]
                self._done(body)
            elif self._state == _CHUNKED:
                if not self._chunk():
                    return
            else:  # _TO_CLOSE: everything up to the end of the connection
                self._take(self._buffer)
                self._buffer = b""
                return

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise BadAnswer(f"the answer does not start with an HTTP/1 status line: {lines[0][:80]!r}")
        status = int(parts[1])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                raise BadAnswer("an answer header has no colon")
            name, value = name.strip().lower(), value.strip()
            headers[name] = headers[name] + b", " + value if name in headers else value
        if 100 <= status < 200:
            return  # an interim answer (100 Continue): the real one follows
        self._status, self._headers = status, headers
        connection = headers.get(b"connection", b"").lower()
        self._keep = b"close" not in connection and (parts[0] != b"HTTP/1.0" or b"keep-alive" in connection)
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            self._state, self._need = _CHUNKED, -1
        elif b"content-length" in headers:
            try:
                self._need = int(headers[b"content-length"])
            except ValueError:
                raise BadAnswer("the answer's Content-Length is not a number") from None
            if not 0 <= self._need <= MAX_BODY:
                raise BadAnswer("the answer's Content-Length is out of bounds")
            self._state = _LENGTH
        elif status in (204, 304):
            self._state, self._need = _LENGTH, 0
        else:
            self._state, self._keep = _TO_CLOSE, False

    def _chunk(self) -> bool:
        """Read what the buffer holds of a chunked body; False when more must come."""
        if self._need == -1:  # a chunk-size line
            end = self._buffer.find(b"\r\n")
            if end < 0:
                if len(self._buffer) > 1024:
                    raise BadAnswer("a chunk size line is too long")
                return False
            size = self._buffer[:end].split(b";", 1)[0].strip()
            try:
                self._need = int(size, 16)
            except ValueError:
                raise BadAnswer("a chunk size is not a hexadecimal number") from None
            self._buffer = self._buffer[end + 2:]
            if self._need == 0:
                self._need = -2  # the trailers, up to an empty line
        if self._need == -2:
            end = self._buffer.find(b"\r\n")
            while end > 0:  # a trailer line: skipped
                self._buffer = self._buffer[end + 2:]
                end = self._buffer.find(b"\r\n")
            if end < 0:
                return False
            self._buffer = self._buffer[2:]
            self._done(b"".join(self._body))
            return True
        if len(self._buffer) < self._need + 2:
            return False
        self._take(self._buffer[:self._need])
        self._buffer = self._buffer[self._need + 2:]
        self._need = -1
        return True

    def _take(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_BODY:
            raise BadAnswer("the answer's body is too long")
        self._body.append(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.lost = True
        self._pool.forget(self)
        if self._waiting is not None:
            if self._state == _TO_CLOSE:
                self._done(b"".join(self._body))
            else:
                why = f"the connection ended before a whole answer came: {reason.getErrorMessage()}"
                self._fail(Failure(ConnectionLost(why)), abort=False)
        self.closed.callback(None)


class _Connecting(Factory):
    def __init__(self, pool: Pool, target: Target) -> None:
        self.pool, self.target = pool, target

    def buildProtocol(self, addr: Any) -> _Connection:
        return _Connection(self.pool, self.target)


class Pool:
    """Persistent connections per (scheme, host, port); up to ``max_idle`` kept open per target, each
    for at most ``idle_seconds`` between requests.

    ``endpoint_for`` (tests) gives the endpoint to reach a target by; by default a ``HostnameEndpoint``,
    under TLS for ``https``, the server's certificate verified by ``tls`` (by default as a browser
    does: the system's trusted roots and the host name).
    """

    def __init__(self, reactor: IReactorTime, max_idle: int = 64,
                 endpoint_for: Callable[[Target], IStreamClientEndpoint] | None = None,
                 tls: IPolicyForHTTPS | None = None, idle_seconds: float = IDLE_SECONDS) -> None:
        self.reactor = reactor
        self.max_idle = max_idle
        self.idle_seconds = idle_seconds
        self._endpoint_for = endpoint_for or self._default_endpoint
        self._idle: dict[Target, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._endpoints: dict[Target, IStreamClientEndpoint] = {}
        self._tls = tls or BrowserLikePolicyForHTTPS()

    def request(self, target: Target, data: bytes, timeout: float) -> Deferred[Answer]:
        """Send ``data`` (a whole request) on an idle connection to ``target``, or a new one."""
        idle = self._idle.get(target)
        if idle:
            connection = idle.pop()  # the most recently used: the others may time out unused
            if self.reactor.seconds() - connection.idle_since <= self.idle_seconds:
                return connection.request(data, timeout)
            # the most recent is too old, so are the others
            for stale in [connection, *idle]:
                stale._t.loseConnection()
            idle.clear()
        return Deferred.fromCoroutine(self._connect_and_request(target, data, timeout))

    async def _connect_and_request(self, target: Target, data: bytes, timeout: float) -> Answer:
        started = self.reactor.seconds()
        connecting: Deferred[Any] = self._endpoint(target).connect(_Connecting(self, target))
        timer = self.reactor.callLater(timeout, connecting.cancel)
        try:
            connection: _Connection = await connecting
        except (CancelledError, ConnectingCancelledError):
            if not timer.active():
                raise TimeoutError() from None
            raise CancelledError() from None
        finally:
            if timer.active():
                timer.cancel()
        self._open.add(connection)
        return await connection.request(data, max(0.0, timeout - (self.reactor.seconds() - started)))

    def _endpoint(self, target: Target) -> IStreamClientEndpoint:
        endpoint = self._endpoints.get(target)
        if endpoint is None:
            endpoint = self._endpoints[target] = self._endpoint_for(target)
        return endpoint

    def _default_endpoint(self, target: Target) -> IStreamClientEndpoint:
        scheme, host, port = target
        endpoint: IStreamClientEndpoint = HostnameEndpoint(self.reactor, host, port)
        if scheme == "https":
            endpoint = wrapClientTLS(self._tls.creatorForNetloc(host.encode("idna"), port), endpoint)
        return endpoint

    def release(self, connection: _Connection) -> None:
        idle = self._idle.setdefault(connection._target, [])
        if len(idle) < self.max_idle:
            connection.idle_since = self.reactor.seconds()
            idle.append(connection)
        else:
            connection._t.loseConnection()

    def forget(self, connection: _Connection) -> None:
        self._open.discard(connection)
        idle = self._idle.get(connection._target)
        if idle and connection in idle:
            idle.remove(connection)

    def close(self) -> Deferred[None]:
        """Close every connection (a request under way fails); fires when all are closed."""
        connections = list(self._open)
        self._idle.clear()
        if not connections:
            return succeed(None)
        for connection in connections:
            connection._t.loseConnection()
        d = DeferredList([c.closed for c in connections], consumeErrors=True)
        return d.addCallback(lambda _: None)


__all__ = ["Answer", "BadAnswer", "Pool", "Target"]
