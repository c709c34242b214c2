"""Turn Twilio's webhook parameters into the message dict handed to validators and handlers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pyrowire.errors import BadRequest

MAX_MEDIA = 10  # Twilio attaches at most ten media to one message
DEFAULT_CONTENT_TYPE = "application/octet-stream"

_MEDIA_URL = tuple(f"MediaUrl{i}" for i in range(MAX_MEDIA))
_MEDIA_TYPE = tuple(f"MediaContentType{i}" for i in range(MAX_MEDIA))


def first(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    """The first value of parameter ``name``, or None when it is absent."""
    values = params.get(name)
    if values is None or isinstance(values, str):
        return values  # a plain str value (a dict of str) is accepted as one value
    return values[0] if values else None


def _required(params: Mapping[str, Sequence[str]], name: str, allow_empty: bool = False) -> str:
    value = first(params, name)
    if value is None:
        raise BadRequest(400, f"The {name} parameter is missing.")
    if not value and not allow_empty:
        raise BadRequest(400, f"The {name} parameter is empty.")
    return value


def _media_count(raw: str | None) -> int:
    if raw is None:
        return 0
    if not (raw.isascii() and raw.isdigit()):
        raise BadRequest(400, f"The NumMedia parameter must be a whole number, not {raw[:20]!r}.")
    # leading zeros go first, so a huge string never reaches int()
    significant = raw.lstrip("0")
    count = int(significant) if 0 < len(significant) <= 2 else len(significant) * 100
    if count > MAX_MEDIA:
        raise BadRequest(400, f"The NumMedia parameter must be at most {MAX_MEDIA}.")
    return count


def _media(params: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    count = _media_count(first(params, "NumMedia"))
    media: dict[str, str] = {}
    for i in range(count):
        url = _required(params, _MEDIA_URL[i])
        media[url] = first(params, _MEDIA_TYPE[i]) or DEFAULT_CONTENT_TYPE
    return {"count": count, "media": media}


def parse_message(topic: str, params: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Build the message dict of SPEC section 5; BadRequest(400) names a missing or malformed field."""
    sid = _required(params, "MessageSid")
    number = _required(params, "From")
    body = _required(params, "Body", allow_empty=True)
    return {
        "message": body,
        "number": number,
        "sid": sid,
        "topic": topic,
        "to": first(params, "To") or None,
        "from_city": first(params, "FromCity") or None,
        "from_state": first(params, "FromState") or None,
        "from_country": first(params, "FromCountry") or None,
        "from_zip": first(params, "FromZip") or None,
        "media": _media(params),
        "reply": None,
    }
