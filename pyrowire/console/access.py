"""Who may see the console, and the anti-forgery token of its actions.

SPEC section 10: with a password (``console_password`` or ``PYROWIRE_CONSOLE_PASSWORD``) the
console asks for HTTP Basic credentials, any user name, the password compared in constant
time; without one it is served only in a ``debug`` profile, to loopback clients whose
request carries no ``X-Forwarded-For`` (a proxy in front would make every client look
local), and is a plain 404 to everyone else — as if it were not there.

Actions are POSTs carrying a token that must equal the one in the console's cookie (a
double-submit token: another site can make a browser send the cookie, but cannot read it
to put it in the form). The cookie is ``SameSite=Strict`` and ``HttpOnly``; the pages carry
the token for their forms and their script. Nothing is kept on the server, so any number of
web processes serve the same console.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import secrets
from typing import Any

COOKIE = b"pyrowire_console"
TOKEN_HEADER = b"x-console-token"


class Refused(Exception):
    """The request may not see or do this; ``status`` and a plain sentence say why."""

    def __init__(self, status: int, sentence: str) -> None:
        super().__init__(sentence)
        self.status = status
        self.sentence = sentence


def _loopback(host: Any) -> bool:
    try:
        address = ipaddress.ip_address(str(host))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class Access:
    """The console's access rule for one process."""

    def __init__(self, password: str | None, debug: bool) -> None:
        self._password = (password or "").encode("utf-8")
        self.debug = debug

    @property
    def served(self) -> bool:
        """Whether anybody at all can see the console of this process."""
        return bool(self._password) or self.debug

    def check(self, request: Any) -> None:
        """Raise Refused unless ``request`` may see the console."""
        if self._password:
            if not self._credentials_match(request.getHeader(b"authorization")):
                request.setHeader(b"WWW-Authenticate", b'Basic realm="pyrowire console", charset="UTF-8"')
                raise Refused(401, "The console needs its password (any user name).")
            return
        if not self.debug or request.getHeader(b"x-forwarded-for") is not None:
            raise Refused(404, "There is no such page.")
        if not _loopback(getattr(request.getClientAddress(), "host", None)):
            raise Refused(404, "There is no such page.")

    def _credentials_match(self, header: bytes | str | None) -> bool:
        if not header:
            return False
        raw = header.encode("latin-1") if isinstance(header, str) else header
        scheme, _, encoded = raw.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        _user, colon, given = decoded.partition(b":")
        return bool(colon) and hmac.compare_digest(given, self._password)


def token(request: Any) -> str:
    """The request's anti-forgery token: its cookie's, or a new one set as the cookie."""
    current = request.getCookie(COOKIE)
    if current and len(current) == 43 and all(c in _ALPHABET for c in current):
        return str(current.decode("ascii"))
    fresh = secrets.token_urlsafe(32)
    request.addCookie(COOKIE, fresh.encode("ascii"), path=b"/console", httpOnly=True, sameSite="strict")
    return fresh


_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def check_token(request: Any, given: str | bytes | None) -> None:
    """Raise Refused unless ``given`` (from the form or the header) is the request's cookie token, and the
    request, when it says where it comes from, comes from this site."""
    cookie = request.getCookie(COOKIE)
    if isinstance(given, str):
        given = given.encode("utf-8", "replace")
    if not cookie or not given or not hmac.compare_digest(cookie, given):
        raise Refused(403, "This action needs the console's anti-forgery token: reload the page and try again.")
    origin = request.getHeader(b"origin")
    host = request.getHeader(b"host")
    if origin and origin != b"null" and host and origin.split(b"://", 1)[-1] != host:
        raise Refused(403, "This action came from another site.")
