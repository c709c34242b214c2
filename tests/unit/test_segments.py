"""pyrowire.segments against a table of texts whose Twilio segment counts are known."""

from __future__ import annotations

import pytest

import pyrowire

TABLE = [
    ("", ("GSM-7", 0)),
    ("hello", ("GSM-7", 1)),
    ("a" * 160, ("GSM-7", 1)),
    ("a" * 161, ("GSM-7", 2)),
    ("a" * 306, ("GSM-7", 2)),
    ("a" * 307, ("GSM-7", 3)),
    ("Ça va? Über straße, ¿qué tal? 5€", ("GSM-7", 1)),  # all GSM 03.38, € from the extension table
    ("€" * 80, ("GSM-7", 1)),  # each extension character is two septets: 160
    ("€" * 81, ("GSM-7", 2)),
    ("{}[]~|^\\" * 20, ("GSM-7", 3)),  # 160 characters, 320 septets
    ("a" * 152 + "€" + "a" * 152, ("GSM-7", 3)),  # 306 septets, but the escape pair is not split
    ("line one\nline two\r", ("GSM-7", 1)),
    ("ça va", ("UCS-2", 1)),  # lower-case c cedilla is not in GSM 03.38
    ("“smart quotes”", ("UCS-2", 1)),
    ("a" * 70, ("GSM-7", 1)),
    ("a" * 70 + "’", ("UCS-2", 2)),  # one curly apostrophe: 71 UTF-16 units, parts of 67
    ("a" * 159 + "’", ("UCS-2", 3)),
    ("😀", ("UCS-2", 1)),  # two UTF-16 units
    ("😀" * 35, ("UCS-2", 1)),  # 70 units
    ("😀" * 36, ("UCS-2", 2)),
    ("a" * 66 + "😀" + "a" * 66, ("UCS-2", 3)),  # 134 units, but a surrogate pair is not split
    ("日本語のテキスト", ("UCS-2", 1)),
]


@pytest.mark.parametrize(("text", "expected"), TABLE)
def test_segments_as_twilio_counts_them(text: str, expected: tuple[str, int]) -> None:
    """Each text costs the segments Twilio bills for it, in the encoding Twilio picks."""
    assert pyrowire.segments(text) == expected


def test_every_send_record_carries_its_segments_and_they_are_counted() -> None:
    """A sandbox send records its segment count, and pyrowire_twilio_segments_total adds it up per topic."""
    from pyrowire.metrics import Metrics
    from tests.unit.test_worker import Harness, now

    h = Harness()
    h.runtime.sender.metrics = metrics = Metrics(["echo"])

    def handler(message: dict[str, object]) -> object:
        message["reply"] = "😀" * 36
        return h.app.sms(message)

    h.start(handler)
    h.queue("SM1")
    [record] = h.outbox()
    assert record["segments"] == 2
    text, _ = metrics.render()
    assert b'pyrowire_twilio_segments_total{topic="echo"} 2.0' in text
    assert now(h.store.llen(h.keys.outbox)) == 1
