"""The HTTP site of a pyrowire process: no tracebacks, quiet logs, and request bodies of bounded size.

twisted.web's ``HTTPChannel`` reads a whole request body into ``Request.content``
before the resource sees it, so a size limit checked by the resource comes too
late.  ``LimitedRequest`` checks it while the body arrives: a ``Content-Length``
over the limit is answered with 413 as soon as the headers are in, before any
body byte is read, and a chunked body is counted chunk by chunk and refused
the moment it passes the limit.  Either way nothing more is kept, the
connection is closed, and the resource is never called.

twisted.web closes a connection whose client does not finish a request within a minute
(good), logging a line for each; 2,000 idle connections write 2,000 lines. The site counts
them instead (``pyrowire_http_timeouts_total``) and logs one summary a minute at most.
"""

from __future__ import annotations

from collections.abc import Mapping
from io import BytesIO
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import ILogObserver, Logger
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site
from zope.interface import provider

from pyrowire.metrics import Metrics
from pyrowire.webhook import MAX_BODY

#: at most one line a minute about clients that timed out
TIMEOUT_SUMMARY_SECONDS = 60.0


def _size(limit: int) -> str:
    return f"{limit // 1024} KiB" if limit % 1024 == 0 else f"{limit} bytes"


def too_large_response(limit: int) -> bytes:
    """The raw HTTP/1.1 413 response, complete with its headers, that closes the connection."""
    body = f"The request body is larger than {_size(limit)}.\n".encode("ascii")
    head = (
        b"HTTP/1.1 413 Content Too Large\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\n"
        b"Connection: close\r\n"
        b"\r\n" % len(body)
    )
    return head + body


class LimitedRequest(Request):
    """A twisted.web Request that refuses a body over its site's ``max_body`` while it is being received."""

    log = Logger()
    _received = 0
    refused = False

    def _limit(self) -> int:
        site = getattr(self.channel, "site", None)
        return int(getattr(site, "max_body", MAX_BODY))

    def gotLength(self, length: int | None) -> None:
        """Refuse at once when the announced Content-Length is over the limit, else prepare to receive."""
        if length is not None and length > self._limit() and isinstance(self.channel, HTTPChannel):
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        """Keep a chunk of the body, or refuse the request once the bytes received pass the limit."""
        if self.refused:
            return
        self._received += len(data)
        if self._received > self._limit() and isinstance(self.channel, HTTPChannel):
            self._refuse()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """Hand a complete request to the resource, unless it was refused while arriving."""
        if self.refused:
            return
        headers = self.requestHeaders
        ctype = headers.getRawHeaders(b"content-type")
        if command == b"POST" and ctype and ctype[0][:33].lower() == b"application/x-www-form-urlencoded":
            # twisted.web would parse this form through the email package's header parser, a large
            # share of a webhook's cost; pyrowire's webhook parses the body itself
            headers.removeHeader(b"content-type")
            try:
                super().requestReceived(command, path, version)
            finally:
                headers.setRawHeaders(b"content-type", ctype)
            return
        super().requestReceived(command, path, version)

    def _refuse(self) -> None:
        self.refused = True
        if self.content is not None:
            self.content.close()
        self.content = BytesIO()
        # we will not read the body, so no "100 Continue" either (HTTPChannel sends it after gotLength)
        self.requestHeaders.removeHeader(b"expect")
        channel: Any = self.channel
        limit = self._limit()
        self.log.debug("refused a request body over {limit} bytes", limit=limit, status=413)
        channel.transport.write(too_large_response(limit))
        channel.loseConnection()


class Root(Resource):
    """A site's root: the first path segments named in ``leaves`` go straight to their leaf resource
    (the webhook's ``queue``), everything else to ``routed``, a Klein application that routes on the
    whole path. The webhook thus costs one dict lookup, not a router's matching."""

    def __init__(self, routed: IResource, leaves: Mapping[bytes, IResource] | None = None) -> None:
        super().__init__()
        self.routed = routed
        self.leaves = dict(leaves or {})

    def getChildWithDefault(self, path: bytes, request: Any) -> IResource:
        leaf = self.leaves.get(path)
        if leaf is not None:
            return leaf
        # give the segment back: the routed application sees the path as if it were the root
        request.postpath.insert(0, request.prepath.pop())
        return self.routed

    def render(self, request: Any) -> Any:
        return self.routed.render(request)


@provider(ILogObserver)
def _discard(event: Mapping[str, Any]) -> None:
    """Where a channel's own per-client timeout lines go: the site counts and summarises them instead."""


class QuietChannel(HTTPChannel):
    """twisted.web's HTTP/1.1 channel, whose timed-out client is counted by its site rather than logged."""

    # HTTPChannel logs through this only "Timing out client" and "Forcibly timing out client"
    _log = Logger(observer=_discard)

    def timeoutConnection(self) -> None:
        site = getattr(self, "site", None)
        if isinstance(site, WebSite):
            site.client_timed_out()
        super().timeoutConnection()


class WebSite(Site):
    """twisted.web's Site without tracebacks in error pages, access logs only when asked, bodies bounded,
    and timed-out clients counted and summarised instead of logged one by one."""

    displayTracebacks = False
    noisy = False
    requestFactory = LimitedRequest
    # plain HTTP/1.1, what Twilio speaks, without twisted.web's HTTP/2-negotiating wrapper (which would need
    # TLS with ALPN here, and always builds a stock HTTPChannel); its type says "the wrapper", any channel works
    protocol = QuietChannel  # type: ignore[assignment]
    _logger = Logger()  # Site.log is the access log

    def __init__(self, resource: IResource, access_log: bool = False, max_body: int = MAX_BODY,
                 reactor: IReactorTime | None = None, metrics: Metrics | None = None) -> None:
        super().__init__(resource, reactor=reactor)
        self.access_log = access_log
        self.max_body = max_body
        self.metrics = metrics
        self.timed_out = 0  # since the last summary
        self._summary: IDelayedCall | None = None

    def client_timed_out(self) -> None:
        """Count a client that did not finish its request in time; a summary line follows within a minute."""
        self.timed_out += 1
        if self.metrics is not None:
            self.metrics.http_timeout()
        if self._summary is None:
            self._summary = self.reactor.callLater(TIMEOUT_SUMMARY_SECONDS, self._summarise)

    def _summarise(self) -> None:
        self._summary = None
        count, self.timed_out = self.timed_out, 0
        if count:
            self._logger.info(
                "{count} client(s) did not finish a request within {timeout} s and were disconnected "
                "(in the last {seconds:.0f} s; counted in pyrowire_http_timeouts_total)",
                count=count, timeout=self.timeOut, seconds=TIMEOUT_SUMMARY_SECONDS, outcome="timeout")

    def stopFactory(self) -> None:
        """Say what is still to be said about timed-out clients, and leave no timer behind."""
        if self._summary is not None:
            if self._summary.active():
                self._summary.cancel()
            self._summarise()
        super().stopFactory()

    def log(self, request: Any) -> None:
        if self.access_log:
            super().log(request)
