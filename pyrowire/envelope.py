"""What is queued for one inbound message: the message and when it was accepted.

A payload is JSON text written once by the webhook and compared byte for byte by the
scripts (``LREM``), so nothing re-encodes it on its way from the queue to its record:
the scripts read it (its sid, its sender) and never write it back changed. How many
runs of it were started is kept beside it in Redis (``runs``), not inside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Envelope:
    """One queued message as a worker reads it."""

    message: dict[str, Any]
    received_at: float | None
    keyword: str | None = None  # "out", "in" or "help": an opt-out keyword, recorded, not handled
    kind: str = "message"  # or "status": a delivery status change for the topic's on_status function


def encode(message: dict[str, Any], received_at: float, keyword: str | None = None) -> str:
    """The payload queued for ``message`` (a keyword message says which keyword it is)."""
    if keyword is None:
        return json.dumps({"message": message, "received_at": received_at})
    return json.dumps({"message": message, "received_at": received_at, "keyword": keyword})


def decode(payload: str) -> Envelope:
    """Read a payload taken from the queue (raises ValueError when it is not an envelope)."""
    data = json.loads(payload)
    if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
        raise ValueError("not a pyrowire envelope")
    received_at = data.get("received_at")
    if received_at is not None and not isinstance(received_at, (int, float)):
        raise ValueError("not a pyrowire envelope: received_at is not a number")
    keyword = data.get("keyword")
    kind = data.get("kind")
    return Envelope(data["message"], None if received_at is None else float(received_at),
                    keyword if isinstance(keyword, str) else None, kind if isinstance(kind, str) else "message")
