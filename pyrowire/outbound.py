"""Outbound messages: to Twilio's REST API, or to the topic's sandbox outbox."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pyrowire import logs
from pyrowire.metrics import Metrics
from pyrowire.settings import Topic
from pyrowire.store import Store


class Twilio(Protocol):
    def send(self, creds: Any, *, to: str, body: str | None = None, media_urls: Sequence[str] = (),
             status_callback: str | None = None, observer: Any = None) -> Any: ...


def sandbox_sid() -> str:
    """A SID shaped like Twilio's, marked as the sandbox's by its ``SB`` prefix."""
    return "SB" + uuid.uuid4().hex


class Sender:
    """Sends one outbound message for a topic and returns its SID."""

    log = Logger()

    def __init__(self, twilio: Twilio, store: Store, clock: IReactorTime,
                 metrics: Metrics | None = None) -> None:
        self.twilio = twilio
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self._observers: dict[str, Callable[[str, Any], None]] = {}

    def _observer(self, topic: str) -> Callable[[str, Any], None] | None:
        metrics = self.metrics
        if metrics is None:
            return None
        observer = self._observers.get(topic)
        if observer is None:
            observer = self._observers[topic] = lambda outcome, _error: metrics.twilio_send(topic, outcome)
        return observer

    async def send(self, topic: Topic, *, to: str, body: str | None, media_urls: Sequence[str] = (),
                   in_reply_to: str | None = None) -> str:
        if topic.twilio.sandbox:
            return await self._sandbox(topic, to, body, media_urls, in_reply_to)
        sid: str = await self.twilio.send(
            topic.twilio, to=to, body=body, media_urls=media_urls, status_callback=topic.status_callback,
            observer=self._observer(topic.name),
        )
        if logs.enabled(logging.INFO):
            self.log.info("sent {sid} to {to} for {topic}", sid=sid, to=to, topic=topic.name, outcome="sent")
        return sid

    async def _sandbox(self, topic: Topic, to: str, body: str | None, media_urls: Sequence[str],
                       in_reply_to: str | None) -> str:
        sid = sandbox_sid()
        record = {
            "sid": sid,
            "to": to,
            "from": topic.twilio.from_number or topic.twilio.messaging_service_sid,
            "body": body,
            "media_urls": list(media_urls),
            "in_reply_to": in_reply_to,
            "at": self.clock.seconds(),
        }
        await self.store.push_capped(self.store.keys(topic.name).outbox, json.dumps(record), topic.retention)
        if self.metrics is not None:
            self.metrics.twilio_send(topic.name, "sandbox")
        media = f" +{len(media_urls)} media" if media_urls else ""
        self.log.info("sandbox reply {sid} to {to} for {topic}: {body!r}{media}", sid=sid, to=to,
                      topic=topic.name, body=body, media=media, outcome="sandbox")
        return sid
