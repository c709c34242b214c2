"""Outbound messages: to Twilio's REST API or the topic's sandbox outbox, and the bookkeeping that
keeps a handler's sends from going out twice when its message is run again.

:class:`Sender` sends one message. :class:`Outbound` is what a running service holds for
sending on behalf of the application: it numbers each send a handler makes while
handling one inbound message (an :class:`Exchange`), re-uses the SID of a send an
earlier run of the same message already made, and records new sends in Redis so that
a re-run after a crash skips them too.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from pyrowire import logs, status
from pyrowire.errors import TwilioError
from pyrowire.metrics import Metrics
from pyrowire.segments import segments
from pyrowire.settings import Topic
from pyrowire.store import Store


class Twilio(Protocol):
    def send(self, creds: Any, *, to: str, body: str | None = None, media_urls: Sequence[str] = (),
             status_callback: str | None = None, observer: Any = None) -> Any: ...


# Twilio's error for a send to a number that replied STOP to the sending number
OPTED_OUT_CODE = 21610


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
        # whether a topic has an on_status function (the service sets it from the app)
        self.watches_status: Callable[[str], bool] = lambda _topic: False

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
        count = segments(body)[1] if body else 0
        if topic.twilio.sandbox:
            return await self._sandbox(topic, to, body, media_urls, in_reply_to, count)
        sid: str = await self.twilio.send(
            topic.twilio, to=to, body=body, media_urls=media_urls, status_callback=topic.status_callback,
            observer=self._observer(topic.name),
        )
        if self.metrics is not None and count:
            self.metrics.segments(topic.name, count)
        if logs.enabled(logging.INFO):
            self.log.info("sent {sid} to {to} for {topic} ({segments} segments)", sid=sid, to=to,
                          topic=topic.name, outcome="sent", segments=count)
        return sid

    def suppressed(self, topic: Topic, to: str, in_reply_to: str | None) -> None:
        """Count and log a send not made because ``to`` opted out of the topic."""
        if self.metrics is not None:
            self.metrics.twilio_send(topic.name, "suppressed")
        self.log.info("not sending to {to} for {topic}: opted out", to=to, topic=topic.name, outcome="suppressed",
                      in_reply_to=in_reply_to)

    async def _sandbox(self, topic: Topic, to: str, body: str | None, media_urls: Sequence[str],
                       in_reply_to: str | None, count: int) -> str:
        sid = sandbox_sid()
        record = {
            "sid": sid,
            "to": to,
            "from": topic.twilio.from_number or topic.twilio.messaging_service_sid,
            "body": body,
            "media_urls": list(media_urls),
            "in_reply_to": in_reply_to,
            "at": self.clock.seconds(),
            "segments": count,
        }
        await self.store.push_capped(self.store.keys(topic.name).outbox, json.dumps(record), topic.retention)
        if self.metrics is not None:
            self.metrics.twilio_send(topic.name, "sandbox")
            if count:
                self.metrics.segments(topic.name, count)
        # no carrier in the sandbox: the message is delivered at once, so statuses can be watched
        await status.record(self.store, self.clock.seconds(), topic.name, sid, "delivered", "", to,
                            self.watches_status(topic.name), self.metrics)
        media = f" +{len(media_urls)} media" if media_urls else ""
        self.log.info("sandbox reply {sid} to {to} for {topic}: {body!r}{media}", sid=sid, to=to,
                      topic=topic.name, body=body, media=media, outcome="sandbox")
        return sid


@dataclass
class Exchange:
    """One inbound message while its handler runs: the sends it made, and those of earlier runs."""

    sid: str
    sids: list[str] = field(default_factory=list)
    previous: dict[int, str] = field(default_factory=dict)
    next_index: int = 0
    # sends not yet recorded in Redis, and the call that records them on the next reactor turn
    unsaved: dict[int, str] = field(default_factory=dict)
    # each new send's details (JSON: sid, to, body, media), recorded with it for the replies endpoint
    details: dict[int, str] = field(default_factory=dict)
    saving: IDelayedCall | None = None
    # the Deferreds app.sms/app.mms gave the handler, awaited or not
    pending: list[Deferred[Any]] = field(default_factory=list)
    # whether the inbound message's sender had opted out of the topic when it was taken
    opted_out: bool = False

    async def settle_sends(self) -> Failure | None:
        """Wait for every send the handler started; the first failure nobody consumed (now consumed here).

        A send the handler awaited (or returned, or handled) is its own business; one it left
        behind, in the 2014 style ``app.sms(message); return message``, is accounted for here.
        """
        pending, self.pending = self.pending, []
        waiting = [d for d in pending if not d.called]
        if waiting:
            await DeferredList([_observe(d) for d in waiting], consumeErrors=True)
        first: Failure | None = None
        for d in pending:
            result = getattr(d, "result", None)
            if isinstance(result, Failure):
                d.addErrback(lambda _: None)
                first = first or result
        return first

    def settle(self) -> dict[int, str]:
        """The message is finishing (its record drops the send records): nothing left to record here.

        Returns the details of the sends not recorded yet, by index: the finish records them.
        """
        if self.saving is not None and self.saving.active():
            self.saving.cancel()
        self.saving = None
        left = {index: self.details[index] for index in self.unsaved if index in self.details}
        self.unsaved.clear()
        return left


def _observe(d: Deferred[Any]) -> Deferred[None]:
    """Fires when ``d`` does, leaving ``d``'s result as it was."""
    observer: Deferred[None] = Deferred()

    def fired(result: object) -> object:
        observer.callback(None)
        return result

    d.addBoth(fired)
    return observer


class Outbound:
    """Sends for a running service: replies tracked per inbound message, and sends that answer nothing."""

    log = Logger()

    def __init__(self, sender: Sender, store: Store, clock: IReactorTime) -> None:
        self.sender = sender
        self.store = store
        self.clock = clock
        # inbound MessageSid -> its exchange, while its handler runs
        self.exchanges: dict[str, Exchange] = {}

    def begin(self, sid: str, previous: dict[int, str], opted_out: bool = False) -> Exchange:
        """A handler starts on inbound ``sid``; ``previous`` are the sends earlier runs of it made."""
        exchange = self.exchanges[sid] = Exchange(sid, previous=previous, opted_out=opted_out)
        return exchange

    def end(self, sid: str) -> None:
        self.exchanges.pop(sid, None)

    def track(self, message: Mapping[str, Any], d: Deferred[Any]) -> Deferred[Any]:
        """Note a send the handler of ``message`` started, so its exchange waits for it; returns ``d``."""
        inbound = message.get("sid")
        exchange = self.exchanges.get(inbound) if inbound is not None else None
        if exchange is not None:
            exchange.pending.append(d)
        return d

    async def reply(self, topic: Topic, message: Mapping[str, Any], body: str | None,
                    media_urls: Sequence[str]) -> str | None:
        """Send to ``message['number']``; a send an earlier run of this message made is not made again.

        None when the number opted out of the topic (the send is recorded as suppressed).
        """
        inbound = message.get("sid")
        to = message["number"]
        exchange = self.exchanges.get(inbound) if inbound is not None else None
        if exchange is None:
            return await self.send(topic, to, body, media_urls, in_reply_to=inbound)
        index = exchange.next_index
        exchange.next_index += 1
        sid = exchange.previous.get(index)
        if sid is not None:
            self.log.info("{topic} {inbound}: send {index} already went out as {sid}, not sending again",
                          topic=topic.name, inbound=inbound, index=index, sid=sid)
        else:
            # whether the sender opted out came with the message, in the script that took it
            known = exchange.opted_out if to == message.get("number") else None
            sid = await self.send(topic, to, body, media_urls, in_reply_to=inbound, opted_out=known)
            if sid is None:
                exchange.opted_out = True
                return None
            exchange.previous[index] = sid
            exchange.details[index] = json.dumps({"sid": sid, "to": to, "body": body, "media": list(media_urls)})
            # recorded on the next reactor turn, unless the handler finishes first (then the finish
            # record makes it moot): a fast handler costs no extra round trip per send
            exchange.unsaved[index] = sid
            if exchange.saving is None:
                exchange.saving = self.clock.callLater(0, self._save_sends, topic.name, exchange)
        exchange.sids.append(sid)
        return sid

    async def send(self, topic: Topic, to: str, body: str | None, media_urls: Sequence[str],
                   in_reply_to: str | None = None, opted_out: bool | None = None) -> str | None:
        """One send, unless ``to`` opted out of the topic: then None, recorded and counted as suppressed.

        ``opted_out`` is what the caller already knows (None: ask Redis). Twilio's error 21610
        (the number replied STOP to the sending number) opts the number out the same way.
        """
        if topic.opt_out:
            if opted_out is None:
                opted_out = await self.store.opted_out(topic.name, to)
            if opted_out:
                self.sender.suppressed(topic, to, in_reply_to)
                return None
        twilio = topic.twilio
        if twilio.mps is not None and not twilio.sandbox:
            await self._pace(topic, body)
        try:
            return await self.sender.send(topic, to=to, body=body, media_urls=media_urls, in_reply_to=in_reply_to)
        except TwilioError as e:
            if e.code != OPTED_OUT_CODE or not topic.opt_out:
                raise
        await self.store.opt_out(topic.name, to)
        self.log.warn("{to} opted out of {topic} (Twilio error 21610); not sending to it any more",
                      to=to, topic=topic.name, outcome="suppressed")
        self.sender.suppressed(topic, to, in_reply_to)
        return None

    async def _pace(self, topic: Topic, body: str | None) -> None:
        """Wait for this send's turn at the sender's ``mps`` (SPEC section 9), without blocking anything else."""
        twilio = topic.twilio
        assert twilio.mps is not None
        sender = twilio.sender
        cost = max(1, segments(body)[1] if body else 1)
        wait = await self.store.pace(sender, twilio.mps, cost, self.clock.seconds())
        if wait <= 0:
            return
        metrics = self.sender.metrics
        if metrics is not None:
            metrics.pacing(sender, +1)
        try:
            await deferLater(self.clock, wait)
        finally:
            if metrics is not None:
                metrics.pacing(sender, -1)

    def _save_sends(self, topic: str, exchange: Exchange) -> None:
        exchange.saving = None
        for index, sid in list(exchange.unsaved.items()):
            d = Deferred.fromCoroutine(self.store.record_sent(topic, exchange.sid, index, sid,
                                                              exchange.details.get(index, "")))
            d.addErrback(self._not_saved, sid)
        exchange.unsaved.clear()

    def _not_saved(self, failure: Any, sid: str) -> None:
        self.log.warn("could not record send {sid}: {error}", sid=sid, error=failure.getErrorMessage())

    def send_accept(self, topic: Topic, message: Mapping[str, Any]) -> None:
        """Send the accept response through the REST API too (``send_on_accept``), in the background."""
        d = Deferred.fromCoroutine(self.reply(topic, message, topic.accept_response, ()))
        d.addErrback(lambda f: self.log.failure("send_on_accept for {topic} failed", f, topic=topic.name))
