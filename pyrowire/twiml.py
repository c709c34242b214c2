"""The TwiML answered to a webhook: one escaped <Message>, or an empty <Response/>."""

from __future__ import annotations

import re
from functools import lru_cache

_HEADER = '<?xml version="1.0" encoding="UTF-8"?>'
_EMPTY = (_HEADER + "<Response/>").encode("utf-8")

# everything outside XML 1.0's Char production: control characters other than
# tab, newline and carriage return, lone surrogates, U+FFFE and U+FFFF
_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

# "\r" is written as a character reference, or an XML parser would turn it into "\n"
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})


def clean(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot carry."""
    return _ILLEGAL.sub("", text)


@lru_cache(maxsize=1024)
def response(text: str | None) -> bytes:
    """UTF-8 TwiML replying ``text``; ``<Response/>`` when there is nothing to say."""
    if not text:
        return _EMPTY
    legal = clean(text)
    if not legal:
        return _EMPTY
    return f"{_HEADER}<Response><Message>{legal.translate(_ESCAPES)}</Message></Response>".encode()
