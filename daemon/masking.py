"""Fødselsnummer-shaped values out of every text we write.

A sender may put a fødselsnummer (or D-nummer) anywhere it chooses the text: a file
name, the ebXML MessageId or ConversationId, a regningNr. Whatever we write (logs,
AppRecs, Acks, vedtak, `.err.json` files, the ledger) gets such a value as
`***********`: eleven digits, or six and five with one separator between
(`010453-42227`, `160980 38063`, `160980.38063`), not part of a longer number.

UUIDs and long hexadecimal runs (hashes, tokens) are left whole: their digits are not
a person's (a UUID's last group `d82545899289` holds eleven digits in a row about once
in 250 UUIDs), and a changed MessageId would no longer name the message it answers.
"""

from __future__ import annotations

import re

_HEX = "[0-9A-Fa-f]"
_PATTERN = re.compile(
    rf"(?P<keep>{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
    rf"|(?<![0-9A-Za-z]){_HEX}{{16,}}(?![0-9A-Za-z]))"
    r"|(?<![0-9])[0-9]{6}[-\s.]?[0-9]{5}(?![0-9])"
)
MASK = "*" * 11


def _replace(found: re.Match[str]) -> str:
    return found.group("keep") or MASK


def mask(text: str) -> str:
    """`text` with every fødselsnummer-shaped value replaced by `***********`."""
    return _PATTERN.sub(_replace, text)


def mask_optional(text: str | None) -> str | None:
    return None if text is None else mask(text)
