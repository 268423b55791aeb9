"""The radiology code string (RAD-03): `kodeVerdi` of a `Prosedyre/Kode Kodeverk="R"`.

The rule text (radiologi-refusjon-regelverk-2019 §6.2) fixes the order of the
slash-separated elements:

1. the procedure code (diagnostic, intervention or nuclear medicine), always;
2. the side code (ZTX0XA høyre, ZTX0XB venstre, ZTX0XC bilateral), or empty;
3. the teleradiology code (ZTX0BA, ZTX0BB, ZTX0BC), or empty;
4. … further tilleggskoder, as many as needed.

An empty field is written as a slash before and after it: two slashes when one fixed
field is empty, three when both are (`SA0AG///ZX5EA`). The rule text's own examples
also put another tilleggskode in position 3 when there is no teleradiology
(`SNG0AA/ZTX0XA/ZTX0FE`, `TSY0AN//V09BA01`), so the binding constraints are: the
procedure only in position 1, a side code only in position 2, a teleradiology code only
in position 3, and empty fields only in positions 2-3. The NCSP side codes ZXA00/05/10
are side codes too (the official NCRP sample uses them on NCSP codes).

`parse` is pure and total: it returns a `CodeString` or raises `CodeStringError`
naming the position, the code found there and what was expected. A valid string
round-trips: `str(parse(s)) == s`; trailing empty fields (`SSC0AA///`, RAD-03) are
tolerated and dropped, so `str(parse("SSC0AA///")) == "SSC0AA"`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

SIDE_CODES = {
    "ZTX0XA": "right",
    "ZTX0XB": "left",
    "ZTX0XC": "bilateral",
    "ZXA00": "right",  # NCSP side codes, for NCSP/NCMP procedures
    "ZXA05": "left",
    "ZXA10": "bilateral",
}
TELE_CODES = {
    "ZTX0BA": "image",  # kun billedtaking: 1/3
    "ZTX0BB": "primary",  # kun primærgransking: 2/3
    "ZTX0BC": "secondary",  # kun sekundærgransking: 2/3 (nuclear: a fixed amount)
}
CODE_RE = re.compile(r"[A-Z0-9]{3,10}")
SIDE_LIST = "ZTX0XA, ZTX0XB, ZTX0XC (NCSP: ZXA00, ZXA05, ZXA10)"
TELE_LIST = "ZTX0BA, ZTX0BB, ZTX0BC"
TRAILING_EMPTY_UP_TO = 4  # `P///`: positions 2, 3 and an empty 4th after the third slash


class CodeStringError(ValueError):
    """A malformed code string: `position` is 1-based (0 for the string as a whole)."""

    def __init__(self, position: int, code: str, expected: str) -> None:
        self.position, self.code, self.expected = position, code, expected
        where = f"posisjon {position}" if position else "kodestrengen"
        found = f"{code!r}" if code else "tomt felt"
        super().__init__(f"{where}: fant {found}, forventet {expected}")


@dataclass(frozen=True, slots=True)
class CodeString:
    """A parsed code string. `third` is position 3 when it holds a tilleggskode other
    than teleradiology; `tail` is positions 4 and on."""

    procedure: str
    side_code: str | None = None
    tele_code: str | None = None
    third: str | None = None
    tail: tuple[str, ...] = ()

    def __str__(self) -> str:
        fields = [self.procedure, self.side_code or "", self.tele_code or self.third or ""]
        fields += self.tail
        while fields and not fields[-1]:
            fields.pop()
        return "/".join(fields)

    @property
    def side(self) -> str | None:
        """right, left, bilateral or None."""
        return SIDE_CODES.get(self.side_code) if self.side_code else None

    @property
    def tele(self) -> str | None:
        """image, primary, secondary or None."""
        return TELE_CODES.get(self.tele_code) if self.tele_code else None

    @property
    def addons(self) -> tuple[str, ...]:
        """The tilleggskoder after position 2 (position 3 and the tail), in order."""
        third = (self.third,) if self.third else ()
        return third + self.tail

    @property
    def units(self) -> int:
        """How many exams this line counts as for the same-day limits (bilateral: 2)."""
        return 2 if self.side == "bilateral" else 1


def parse(text: str) -> CodeString:
    if not text:
        raise CodeStringError(0, "", "minst en prosedyrekode")
    if text != text.strip():
        raise CodeStringError(0, text, "ingen mellomrom før eller etter kodene")
    fields = text.split("/")
    # trailing empty fields up to the three slashes the text asks for are tolerated
    # (RULES.md RAD-03: `SSC0AA///`, `SSC0AA//` and `SSC0AA` mean the same)
    while len(fields) > 1 and fields[-1] == "" and len(fields) <= TRAILING_EMPTY_UP_TO:
        fields.pop()
    if fields[-1] == "" and len(fields) > 1:
        raise CodeStringError(
            len(fields),
            "",
            "en kode etter siste skråstrek (tomme felt markeres bare foran en kode)",
        )
    for position, code in enumerate(fields, start=1):
        if code and not CODE_RE.fullmatch(code):
            raise CodeStringError(position, code, "en kode av store bokstaver og sifre (3-10 tegn)")
    procedure = fields[0]
    if not procedure:
        raise CodeStringError(1, "", "prosedyrekoden i posisjon 1")
    if procedure in SIDE_CODES or procedure in TELE_CODES:
        raise CodeStringError(1, procedure, "prosedyrekoden i posisjon 1, ikke en tilleggskode")
    side = fields[1] if len(fields) > 1 else ""
    if side and side not in SIDE_CODES:
        what = (
            "en teleradiologikode (hører i posisjon 3)" if side in TELE_CODES else "en annen kode"
        )
        raise CodeStringError(2, side, f"sidekode ({SIDE_LIST}) eller tomt felt; {side} er {what}")
    third = fields[2] if len(fields) > 2 else ""
    if third in SIDE_CODES:
        raise CodeStringError(
            3,
            third,
            f"teleradiologikode ({TELE_LIST}), annen tilleggskode "
            "eller tomt felt; sidekoden hører i posisjon 2",
        )
    tail = tuple(fields[3:])
    for position, code in enumerate(tail, start=4):
        if not code:
            raise CodeStringError(position, "", "en tilleggskode (tomme felt bare i posisjon 2-3)")
        if code in SIDE_CODES:
            raise CodeStringError(position, code, "en tilleggskode; sidekoden hører i posisjon 2")
        if code in TELE_CODES:
            raise CodeStringError(
                position, code, "en tilleggskode; teleradiologikoden hører i posisjon 3"
            )
    return CodeString(
        procedure=procedure,
        side_code=side or None,
        tele_code=third if third in TELE_CODES else None,
        third=third if third and third not in TELE_CODES else None,
        tail=tail,
    )


@lru_cache(maxsize=65536)
def parsed(text: str) -> CodeString | CodeStringError:
    """`parse`, remembered, with the error as a value (rules ask several times per line)."""
    try:
        return parse(text)
    except CodeStringError as exc:
        return exc
