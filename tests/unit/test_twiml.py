"""Tests for pyrowire.twiml: escaped, always well-formed TwiML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrowire.twiml import clean, response

HEADER = b'<?xml version="1.0" encoding="UTF-8"?>'


def message_text(body: bytes) -> str | None:
    """Parse TwiML and return the text of its one <Message>, or None when it has none."""
    root = ET.fromstring(body)
    assert root.tag == "Response"
    children = list(root)
    if not children:
        return None
    assert len(children) == 1
    assert children[0].tag == "Message"
    assert list(children[0]) == []
    return children[0].text or ""


def test_plain_message() -> None:
    """A plain text is wrapped in Response/Message after Twilio's XML declaration."""
    assert response("Hello") == HEADER + b"<Response><Message>Hello</Message></Response>"


@pytest.mark.parametrize("text", [None, ""])
def test_nothing_to_say_is_empty_response(text: str | None) -> None:
    """None or an empty text gives <Response/>."""
    assert response(text) == HEADER + b"<Response/>"
    assert message_text(response(text)) is None


def test_markup_is_escaped() -> None:
    """&, < and > are escaped, so a message cannot inject TwiML."""
    text = "a & b < c > d</Message><Redirect>http://evil</Redirect>"
    body = response(text)
    assert b"<Redirect>" not in body
    assert b"a &amp; b &lt; c &gt; d" in body
    assert message_text(body) == text


def test_quotes_survive() -> None:
    """Quotes in the text come back unchanged."""
    assert message_text(response("he said \"hi\" & 'bye'")) == "he said \"hi\" & 'bye'"


def test_utf8_output() -> None:
    """Non-ASCII text is encoded as UTF-8."""
    body = response("café 😀")
    assert "café 😀".encode() in body
    assert message_text(body) == "café 😀"


def test_illegal_characters_are_dropped() -> None:
    """Control characters, lone surrogates and U+FFFE/U+FFFF are removed, keeping the rest."""
    body = response("a\x00b\x1fc\ud800d\ufffee\uffff\tf\ng")
    body.decode("utf-8")
    assert message_text(body) == "abcde\tf\ng"


def test_only_illegal_characters_is_empty_response() -> None:
    """A text left empty after cleaning gives <Response/>."""
    assert response("\x00\x01") == HEADER + b"<Response/>"


def test_carriage_returns_round_trip() -> None:
    """A carriage return is kept as a character reference, so a parser does not turn it into \\n."""
    assert message_text(response("a\r\nb\rc")) == "a\r\nb\rc"


def test_answers_are_cached() -> None:
    """The same text gives the very same bytes object."""
    assert response("cached text") is response("cached text")


TRICKY = "&<>\"'\r\n\t\x00\x1f\x7f\ud800\udfff\ufffe\uffff\U0001f600]]>"


@given(st.text(alphabet=st.one_of(st.characters(exclude_categories=()), st.sampled_from(TRICKY))))
def test_any_text_gives_well_formed_twiml(text: str) -> None:
    """Any text, even with surrogates and control characters, gives TwiML keeping its legal characters."""
    legal = clean(text)
    body = response(text)
    assert body.startswith(HEADER)
    got = message_text(body)
    if legal:
        assert got == legal
    else:
        assert got is None
