"""The operational endpoints of a pyrowire process: ``GET /health`` and ``GET /metrics``.

A Klein application, the root of every listening process's site (a worker started
with ``--listen`` serves only these); the webhook's ``/queue/`` is handed to its own
leaf resource before routing (:class:`pyrowire.site.WebSite`).
"""

from __future__ import annotations

import json
from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest

from pyrowire.errors import RedisReplyError, RedisUnavailable
from pyrowire.metrics import Metrics
from pyrowire.store import Store


class Operations:
    """Health and Prometheus metrics of one process, read from its store and its metrics."""

    router = Klein()

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics

    def resource(self) -> Any:
        return self.router.resource()

    @router.route("/metrics", methods=["GET"])
    async def metrics_page(self, request: IRequest) -> bytes:
        await self.metrics.refresh_depths(self.store)
        body, content_type = self.metrics.render()
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        return body

    @router.route("/health", methods=["GET"])
    async def health(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        try:
            await self.store.ping()
        except (RedisUnavailable, RedisReplyError):
            request.setResponseCode(503)
            return json.dumps({"status": "unavailable", "redis": "unreachable"}).encode()
        return json.dumps({"status": "ok", "redis": "ok"}).encode()
