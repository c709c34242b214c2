"""How many SMS segments a text costs, as Twilio counts and bills them.

A text whose every character is in the GSM 03.38 default alphabet (3GPP TS 23.038,
section 6.2.1) is sent as GSM-7: 160 septets fit one SMS, and a longer text is split
into parts of 153 septets (7 go to the concatenation header). The characters of the
alphabet's extension table (``^ { } \\ [ ~ ] | €`` and form feed) take two septets, an
escape and the character, and a part never ends between the two.

Any other character makes the whole text UCS-2: UTF-16 code units, 70 in one SMS or 67
per part, and a part never ends between the two halves of a surrogate pair (an emoji is
two units). These are the rules of Twilio's segment documentation and its open-source
segment calculator.
"""

from __future__ import annotations

GSM_7 = "GSM-7"
UCS_2 = "UCS-2"

# the 128 characters of the GSM 03.38 default alphabet (0x1B, the escape, is not a character)
_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# the extension table: each costs an escape septet too
_EXTENDED = frozenset("^{}\\[~]|€\f")

SINGLE = {GSM_7: 160, UCS_2: 70}
PART = {GSM_7: 153, UCS_2: 67}


def _units(text: str) -> tuple[str, list[int]] | None:
    """The encoding and each character's size in its units (septets or UTF-16 code units)."""
    sizes: list[int] = []
    for char in text:
        if char in _BASIC:
            sizes.append(1)
        elif char in _EXTENDED:
            sizes.append(2)
        else:
            return None
    return GSM_7, sizes


def _pack(sizes: list[int], part: int) -> int:
    """How many parts of ``part`` units hold characters of these sizes, none split between two parts."""
    parts, used = 1, 0
    for size in sizes:
        if used + size > part:
            parts += 1
            used = 0
        used += size
    return parts


def segments(text: str) -> tuple[str, int]:
    """``(encoding, count)``: ``"GSM-7"`` or ``"UCS-2"``, and the segments Twilio bills for ``text``.

    An empty text is no segment (Twilio refuses an empty SMS body).
    """
    found = _units(text)
    if found is None:
        encoding = UCS_2
        sizes = [2 if ord(char) > 0xFFFF else 1 for char in text]
    else:
        encoding, sizes = found
    total = sum(sizes)
    if total == 0:
        return encoding, 0
    if total <= SINGLE[encoding]:
        return encoding, 1
    return encoding, _pack(sizes, PART[encoding])
