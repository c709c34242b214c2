"""Embedding pyrowire in an existing Twisted program: app.resource() and app.service() on a real Redis."""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
import treq
from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import Site

import pyrowire
from pyrowire.redis_store import RedisStore
from pyrowire.runconfig import parse_redis_url
from tests.redis_server import RedisServer, free_port

SETTINGS: dict[str, Any] = {
    "TOPICS": {"echo": {"validators": {"length": "Too long."}, "accept_response": "Got it."}},
    "PROFILES": {"dev": {"host": "127.0.0.1"}},
}
FORM = {"MessageSid": "SMembed1", "From": "+15551234567", "To": "+15005550006", "Body": "hello"}


async def eventually(check: Any, seconds: float = 5.0) -> Any:
    for _ in range(int(seconds / 0.02)):
        value = await check()
        if value:
            return value
        await deferLater(reactor, 0.02)
    raise AssertionError("condition not met in time")


@pytest_twisted.ensureDeferred
async def test_resource_mounted_under_another_site_queues_messages(redis_server: RedisServer) -> None:
    """app.resource() under /sms of someone else's site answers TwiML and queues the message in Redis, and serves
    the message's replies beside the webhook."""
    app = pyrowire.App(SETTINGS)
    root = Resource()
    root.putChild(b"sms", app.resource(redis=redis_server.url, environ={}))
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(root))
    store = RedisStore(parse_redis_url(redis_server.url))
    store.start()
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/sms/queue/echo"
        # at once: the resource's first request waits for its first Redis connection
        response = await treq.post(url, data=FORM)
        assert response.code == 200
        body = (await response.content()).decode()
        assert body.endswith("<Response><Message>Got it.</Message></Response>")

        async def queued() -> list[str]:
            return await store.lrange(store.keys("echo").queue) if store.connected else []

        [payload] = await eventually(queued)
        assert json.loads(payload)["message"]["message"] == "hello"
        replies = await treq.get(f"{url}/replies?MessageSid=SMembed1")
        assert (replies.code, await replies.json()) == (200, {"handled": False, "replies": []})
    finally:
        await port.stopListening()
        await store.stop()
        app.runtime = None


@pytest_twisted.ensureDeferred
async def test_service_attached_to_a_multiservice_runs_and_stops(redis_server: RedisServer) -> None:
    """app.service() as a child of the host's MultiService serves, handles, replies (sandbox) and stops."""
    app = pyrowire.App(SETTINGS)
    handled: list[str] = []

    @app.handler(topic="echo")
    async def echo(message: dict[str, Any]) -> dict[str, Any]:
        message["reply"] = message["message"].upper()
        await app.sms(message)
        handled.append(message["sid"])
        return message

    host = MultiService()
    listen = free_port()
    service = app.service(role="all", redis=redis_server.url, listen=f"tcp:{listen}:interface=127.0.0.1",
                          concurrency=2, environ={})
    service.setServiceParent(host)
    host.startService()
    try:
        await service.ready  # type: ignore[attr-defined]
        response = await treq.post(f"http://127.0.0.1:{listen}/queue/echo", data=FORM)
        assert response.code == 200
        await response.content()

        async def done() -> bool:
            return handled == ["SMembed1"]

        await eventually(done)
        store = service.store  # type: ignore[attr-defined]
        [reply] = [json.loads(r) for r in await store.lrange(store.keys("echo").outbox)]
        assert (reply["to"], reply["body"], reply["in_reply_to"]) == ("+15551234567", "HELLO", "SMembed1")
    finally:
        await host.stopService()
    assert app.runtime is None
