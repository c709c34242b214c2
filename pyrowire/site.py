"""The HTTP site of a pyrowire process: no tracebacks, quiet logs, and request bodies of bounded size.

twisted.web's ``HTTPChannel`` reads a whole request body into ``Request.content``
before the resource sees it, so a size limit checked by the resource comes too
late.  ``LimitedRequest`` checks it while the body arrives: a ``Content-Length``
over the limit is answered with 413 as soon as the headers are in, before any
body byte is read, and a chunked body is counted chunk by chunk and refused
the moment it passes the limit.  Either way nothing more is kept, the
connection is closed, and the resource is never called.
"""

from __future__ import annotations

from collections.abc import Mapping
from io import BytesIO
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from pyrowire.webhook import MAX_BODY


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


class WebSite(Site):
    """twisted.web's Site without tracebacks in error pages, access logs only when asked, bodies bounded."""

    displayTracebacks = False
    noisy = False
    requestFactory = LimitedRequest

    def __init__(self, resource: IResource, access_log: bool = False, max_body: int = MAX_BODY,
                 reactor: IReactorTime | None = None) -> None:
        super().__init__(resource, reactor=reactor)
        self.access_log = access_log
        self.max_body = max_body

    def log(self, request: Any) -> None:
        if self.access_log:
            super().log(request)
