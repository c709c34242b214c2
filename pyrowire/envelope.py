"""What is queued for one inbound message: the message, when it was accepted, runs interrupted.

A payload is JSON text written once by the webhook and compared byte for byte by the
``FINISH`` script (``LREM``), so nothing re-encodes it on the way. Recovery records an
interrupted run by writing ``{"attempts": N, `` at its head (:data:`pyrowire.scripts.RECLAIM`,
plain string operations, no cjson); re-queueing a dead letter removes that head again.
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
    interrupted: int  # runs of it that a dead worker started and never finished


def encode(message: dict[str, Any], received_at: float) -> str:
    """The payload queued for ``message``. Its text starts with ``{"message": ``, never with attempts."""
    return json.dumps({"message": message, "received_at": received_at})


def decode(payload: str) -> Envelope:
    """Read a payload taken from the queue (raises ValueError when it is not an envelope)."""
    data = json.loads(payload)
    if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
        raise ValueError("not a pyrowire envelope")
    received_at = data.get("received_at")
    return Envelope(data["message"], None if received_at is None else float(received_at),
                    int(data.get("attempts") or 0))
