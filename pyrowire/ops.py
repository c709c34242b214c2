"""The operational endpoints of a pyrowire process: ``GET /health`` and ``GET /metrics``.

A Klein application, the root of every listening process's site (a worker started
with ``--listen`` serves only these); the webhook's ``/queue/`` is handed to its own
leaf resource before routing (:class:`pyrowire.site.WebSite`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest

from pyrowire.errors import RedisReplyError, RedisUnavailable
from pyrowire.metrics import Metrics
from pyrowire.store import Store


class Operations:
    """Health and Prometheus metrics of one process, read from its store and its metrics."""

    router = Klein()

    def __init__(self, store: Store, metrics: Metrics,
                 workers: Callable[[], Mapping[str, Mapping[str, int]]] | None = None) -> None:
        self.store = store
        self.metrics = metrics
        # this process's worker loops per topic (running, concurrency, restarts, busy), if it runs any
        self.workers = workers

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
        answer: dict[str, Any] = {"status": "ok", "redis": "ok"}
        if self.workers is not None:
            answer["workers"] = self.workers()
        try:
            await self.store.ping()
        except (RedisUnavailable, RedisReplyError):
            request.setResponseCode(503)
            answer.update(status="unavailable", redis="unreachable")
        return json.dumps(answer).encode()
