"""Twilio's X-Twilio-Signature: HMAC-SHA1 of the URL and sorted parameters, in base64."""

from __future__ import annotations

import hmac
from base64 import b64encode
from collections.abc import Mapping, Sequence
from hashlib import sha1
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"https": 443, "http": 80}


def compute(url: str, params: Mapping[str, Sequence[str]], auth_token: str) -> str:
    """The signature Twilio sends for a request to ``url`` carrying ``params``.

    As Twilio's own validator does: the URL, then each distinct parameter name in
    sorted order followed by each of its distinct values in sorted order.
    """
    parts = [url]
    for name in sorted(set(params)):
        values = params[name]
        if isinstance(values, str):
            values = (values,)
        for value in sorted(set(values)):
            parts.append(name)
            parts.append(value)
    mac = hmac.new(auth_token.encode("utf-8"), "".join(parts).encode("utf-8"), sha1)
    return b64encode(mac.digest()).decode("ascii")


def url_variants(url: str) -> tuple[str, ...]:
    """``url`` as given, then with its scheme's default port added or removed."""
    try:
        split = urlsplit(url)
        port = split.port
    except ValueError:
        return (url,)
    default = _DEFAULT_PORTS.get(split.scheme)
    start = url.find("//") + 2
    if default is None or not split.netloc or start < 2:
        return (url,)
    netloc = split.netloc
    end = start + len(netloc)
    if url[start:end] != netloc:
        return (url,)
    if port is None:
        if netloc.endswith(":"):  # "host:" names no port; leave such a URL alone
            return (url,)
        return url, url[:end] + f":{default}" + url[end:]
    if port == default:
        cut = netloc.rindex(":")
        return url, url[: start + cut] + url[end:]
    return (url,)


def is_valid(url: str, params: Mapping[str, Sequence[str]], signature: str | None, auth_token: str) -> bool:
    """True when ``signature`` is Twilio's for this request, with or without the default port."""
    if not signature or not signature.isascii():
        return False
    given = signature.encode("ascii")
    found = False
    for variant in url_variants(url):
        # compare every variant, so the time taken does not depend on which one matched
        found |= hmac.compare_digest(compute(variant, params, auth_token).encode("ascii"), given)
    return found
