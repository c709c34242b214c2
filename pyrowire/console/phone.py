"""The console's phone: a text sent as a phone would, through this process's own webhook.

The webhook is called over HTTP on the very address and port the browser reached the
console on, signed with the topic's auth token exactly as Twilio signs it (over
``public_url`` + path when the profile has one, else over the URL called), so the text
takes the real path: size limit, signature, validators, de-duplication, the queue.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

from pyrowire import signature
from pyrowire.settings import Topic

TIMEOUT = 10.0


def new_sid() -> str:
    """A MessageSid shaped like Twilio's (SM and 32 hex digits)."""
    return "SM" + uuid.uuid4().hex


def _messages(twiml: str) -> list[str]:
    try:
        root = ElementTree.fromstring(twiml.encode("utf-8"))
    except ElementTree.ParseError:
        return []
    return [m.text or "" for m in root.iter("Message")]


class Phone:
    """Posts signed webhooks to the process it runs in; ``http`` is treq or anything shaped like it."""

    def __init__(self, http: Any, public_url: str | None = None) -> None:
        self.http = http
        self.public_url = public_url

    async def text(self, request: Any, topic: Topic, number: str, body: str) -> dict[str, Any]:
        """Send ``body`` from ``number`` to ``topic``; the webhook's answer and the MessageSid used."""
        local = request.getHost()
        address = str(getattr(local, "host", "127.0.0.1"))
        netloc = f"[{address}]:{local.port}" if ":" in address else f"{address}:{local.port}"
        path = "/queue/" + quote(topic.name, safe="")
        url = f"http://{netloc}{path}"
        sid = new_sid()
        params = {"MessageSid": sid, "SmsMessageSid": sid, "AccountSid": topic.twilio.account_sid or "AC" + "0" * 32,
                  "From": number, "To": topic.twilio.from_number or "+15005550006", "Body": body, "NumMedia": "0",
                  "NumSegments": "1", "SmsStatus": "received", "ApiVersion": "2010-04-01"}
        signed = (self.public_url + path) if self.public_url else url
        digest = signature.compute(signed, {k: [v] for k, v in params.items()}, topic.twilio.auth_token or "")
        response = await self.http.post(url, data=params, headers={"X-Twilio-Signature": digest, "Host": netloc},
                                        timeout=TIMEOUT)
        text = (await response.content()).decode("utf-8", "replace")
        return {"sid": sid, "status": response.code, "twiml": text, "messages": _messages(text)}
