"""``GET /queue/<topic>/replies?MessageSid=SM…``: what the handler sent for one inbound message so far.

SPEC section 5. The answer is JSON ``{"handled": bool, "replies": [{"sid", "to", "body",
"media", "status"}, …]}``, read from Redis by :meth:`pyrowire.store.Store.replies`: the
replies in the order the handler sent them (sandbox or real), each with its delivery
status (None before any), and whether the message's handling is finished. A message a
validator refused is handled at once and adds ``"refused": "<validator>"``; one that ended as
a dead letter adds ``"error"``, its record's error line. ``pyrowire send --wait`` and
``pyrowire chat`` poll it, so they work whichever Redis the daemon uses.

It is signed as the webhook's ``GET`` is (the topic's auth token over the full URL, where the
topic validates signatures). Order of checks: method (405), topic (404), signature (403),
``MessageSid`` (400); 503 while Redis cannot be read.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from twisted.web.iweb import IRequest

from pyrowire.errors import BadRequest, RedisReplyError, RedisUnavailable

if TYPE_CHECKING:
    from pyrowire.webhook import Webhook

#: the path segment after ``/queue/<topic>/``
SEGMENT = b"replies"


class RepliesEndpoint:
    """The replies endpoint of one application, using its webhook's topics, checks and store."""

    def __init__(self, webhook: Webhook) -> None:
        self.webhook = webhook

    async def answer(self, request: IRequest, topic: str) -> bytes:
        """Answer one request for the replies to a message of ``topic`` (status and headers set on ``request``)."""
        webhook = self.webhook
        try:
            sid = webhook.checked(request, topic, b"GET", ("MessageSid",))["MessageSid"]
        except BadRequest as e:
            return webhook._plain(request, e.status, e.sentence)
        try:
            found = await webhook.store.replies(topic, sid)
        except (RedisUnavailable, RedisReplyError):
            # the outage itself is logged once for the process (redis_watch), not once per poll
            return webhook._plain(request, 503, "Redis cannot be reached now; try again.")
        body: dict[str, Any] = {"handled": found.handled, "replies": found.replies}
        if found.refused is not None:
            body["refused"] = found.refused
        if found.error is not None:
            body["error"] = found.error
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        return json.dumps(body).encode("utf-8")
