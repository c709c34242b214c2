"""Twilio's status callbacks: ``POST /status/<topic>``, one per change of an outbound message.

Callbacks arrive out of order (``sent`` after ``delivered`` is common), so the status
kept per outbound SID only moves forward: ``accepted``/``scheduled``/``queued`` <
``sending`` < ``sent`` < the final statuses, a final status changes only from
``delivered`` to ``read``, and a repeated event changes nothing. Every event is kept.
A change is queued for the topic's ``@app.on_status`` function, when it has one, and run
by a worker like any message. Error 21610 in a callback opts the recipient out.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from twisted.logger import Logger
from twisted.web.iweb import IRequest

from pyrowire.errors import BadRequest, RedisUnavailable

if TYPE_CHECKING:
    from pyrowire.metrics import Metrics
    from pyrowire.store import Store
    from pyrowire.webhook import Webhook

RANKS = {"accepted": 0, "scheduled": 0, "queued": 0, "sending": 1, "sent": 2,
         "delivered": 3, "undelivered": 3, "failed": 3, "canceled": 3, "read": 4}
FINAL = frozenset({"delivered", "undelivered", "failed", "canceled", "read"})
OPTED_OUT_CODE = "21610"


def rank(status: str) -> int:
    """Where ``status`` stands in a message's life; -1 for a status that is not an outbound message's."""
    return RANKS.get(status, -1)


class StatusCallbacks:
    """The status callback endpoint of one application, using its webhook's checks."""

    log = Logger()

    def __init__(self, webhook: Webhook) -> None:
        self.webhook = webhook

    async def answer(self, request: IRequest, topic: str) -> bytes:
        """Answer one status callback for ``topic`` (status and headers set on ``request``)."""
        webhook = self.webhook
        try:
            values = webhook.checked(request, topic, b"POST", ("MessageSid", "MessageStatus"))
        except BadRequest as e:
            return webhook._plain(request, e.status, e.sentence)
        try:
            await self._record(topic, values)
        except RedisUnavailable as e:
            self.log.warn("status callback for {topic} not recorded, Twilio will retry: {error}",
                          topic=topic, error=str(e))
            return webhook._plain(request, 503, "Not recorded now; try again.")
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b""

    async def _record(self, topic: str, values: dict[str, str]) -> None:
        webhook = self.webhook
        await record(webhook.store, webhook.clock.seconds(), topic, values["MessageSid"], values["MessageStatus"],
                     values.get("ErrorCode") or "", values.get("To") or "", webhook.inbound.watches_status(topic),
                     webhook.metrics)


async def record(store: Store, now: float, topic: str, sid: str, status: str, code: str, to: str, watched: bool,
                 metrics: Metrics | None = None) -> bool:
    """Keep one status event of outbound ``sid``; queue the change for on_status when ``watched``.

    True when the status moved forward. Also used for the sandbox's simulated delivery.
    """
    status = status.lower()
    event = json.dumps({"status": status, "error_code": code or None, "at": now, "to": to or None})
    hook = None
    if watched:
        # the on_status message, queued by the script with the status it replaced spliced in
        change = json.dumps({"sid": sid, "status": status, "error_code": code or None, "to": to or None,
                             "topic": topic, "previous": None})
        before = change[: change.rindex("null")]
        head = f'{{"kind": "status", "received_at": {now!r}, "message": '
        hook = (head + before, change[len(before) + 4:] + "}")
    opt_out = to if code == OPTED_OUT_CODE else ""
    changed, previous = await store.record_status(topic, sid, status, rank(status), code, event, hook, opt_out)
    if changed and metrics is not None:
        metrics.delivery(topic, status)
    StatusCallbacks.log.debug("{topic} {sid}: {status} ({change})", topic=topic, sid=sid, status=status,
                              change=f"was {previous}" if changed else "no change")
    return changed
