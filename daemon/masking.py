"""Fødselsnummer-shaped values out of every text we write.

A sender may put a fødselsnummer (or D-nummer) anywhere it chooses the text: a file
name, the ebXML MessageId or ConversationId, a regningNr. Whatever we write (logs,
AppRecs, Acks, vedtak, `.err.json` files, the ledger) gets such a value as
`***********`: eleven digits, or six and five with one separator between
(`010453-42227`, `160980 38063`, `160980.38063`), not part of a longer number.
"""

from __future__ import annotations

import re

PERSON_NUMBER = re.compile(r"(?<![0-9])[0-9]{6}[-\s.]?[0-9]{5}(?![0-9])")
MASK = "*" * 11


def mask(text: str) -> str:
    """`text` with every fødselsnummer-shaped value replaced by `***********`."""
    return PERSON_NUMBER.sub(MASK, text)


def mask_optional(text: str | None) -> str | None:
    return None if text is None else mask(text)
