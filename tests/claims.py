"""Build real NPR-behandlerkravmelding 0.78 claims (in a MsgHead) from small specs.

Every person is invented; the default fødselsnumre are made-up numbers that pass mod-11.
"""

from __future__ import annotations

import functools
import uuid as uuid_module
from dataclasses import dataclass, field
from decimal import Decimal
from xml.sax.saxutils import quoteattr

FNRS = ("15057810014", "02039010065", "31128810016")


@dataclass(frozen=True)
class L:
    """A lab line: Kontakt/Takst."""

    code: str
    unit: str  # takstBelop per unit
    count: int = 1


@dataclass(frozen=True)
class P:
    """A procedure line: Tjeneste/Tiltak/Prosedyre/Kode."""

    code: str
    amount: str
    system: str = "R"


@dataclass(frozen=True)
class B:
    lines: tuple = ()
    regning_nr: str | None = None
    transaction_type: str = "1"
    basis: str = "1"  # kravGrunnlag
    date: str = "2026-10-05T09:30:00"
    uuid: str | None = None
    fnr: str | None = FNRS[0]
    consultation: bool = False  # a Kontakt type 1 with Helseperson
    diagnoses: tuple[str, ...] = ()
    sum: str | None = None  # default: the lines' sum
    no_episode: bool = False
    municipality: str | None = "0301"  # komNrHjem (Oslo)
    egenandel: str | None = None  # kodeEgenandel (7461)
    contact_type: str | None = None  # kontaktType; default 1 with consultation, else 5
    personnel: str = "1"  # polUtforende of the consultation's Helseperson (8401)
    debitor: str = "1"

    def total(self) -> Decimal:
        if self.sum is not None:
            return Decimal(self.sum)
        out = Decimal("0")
        for line in self.lines:
            out += Decimal(line.unit) * line.count if isinstance(line, L) else Decimal(line.amount)
        return out


@dataclass(frozen=True)
class C:
    bills: tuple[B, ...]
    institution: str = "983974678"
    msg_id: str = field(default_factory=lambda: str(uuid_module.uuid4()))
    krav_count: int | None = None
    krav_sum: str | None = None
    resh: str = "101797"  # Enhet reshID


def _bill_xml(i: int, b: B) -> str:
    nr = b.regning_nr or str(1000 + i)
    uid = b.uuid or f"{{{uuid_module.uuid4()}}}".upper()
    episode = "" if b.no_episode else f' episodeID="{i}"'
    copay = f' kodeEgenandel="{b.egenandel}"' if b.egenandel else ""
    return (
        f'<EnkeltRegning uuid={quoteattr(uid)} typeTransaksjon="{b.transaction_type}"{copay} '
        f'kravGrunnlag="{b.basis}" regningNr="{nr}" TransDatoTid="{b.date}"{episode} '
        f'sumBelop="{b.total():.2f}"/>'
    )


def _patient_xml(i: int, b: B) -> str:
    ident = (
        f'<Ident typeId="FNR" id="{b.fnr}"/>' if b.fnr else '<AltIdent fodselsDato="1980-01-01"/>'
    )
    contact_type = b.contact_type or ("1" if b.consultation else "5")
    helseperson = f'<Helseperson polUtforende="{b.personnel}"/>' if b.consultation else ""
    takster = "".join(
        f'<Takst kode="{x.code}" antall="{x.count}" takstBelop="{x.unit}"/>'
        for x in b.lines
        if isinstance(x, L)
    )
    diagnoses = "".join(
        f'<Tilstand tilstNr="{n}"><Kode kodeNr="1" Kodeverk="D" kodeVersjon="2026" '
        f'kodeVerdi="{d}"/></Tilstand>'
        for n, d in enumerate(b.diagnoses, start=1)
    )
    procedures = "".join(
        f'<Tjeneste><Tiltak typeTiltak="1"><Prosedyre prosNr="{n}"><Kode kodeNr="1" '
        f'Kodeverk="{x.system}" kodeVersjon="2026" kodeVerdi="{x.code}" kodeBelop="{x.amount}"/>'
        f"</Prosedyre></Tiltak></Tjeneste>"
        for n, x in enumerate((x for x in b.lines if isinstance(x, P)), start=1)
    )
    home = f' komNrHjem="{b.municipality}"' if b.municipality else ""
    return (
        f'<Pasient><PasientEx kjonn="2">{ident}</PasientEx>'
        f'<Episode episodeID="{i}" debitor="{b.debitor}"{home}>'
        f'<Kontakt kontaktType="{contact_type}">{helseperson}{takster}</Kontakt>'
        f"{diagnoses}{procedures}</Episode></Pasient>"
    )


def msghead(claim: C) -> bytes:
    bills = "".join(_bill_xml(i, b) for i, b in enumerate(claim.bills, start=1))
    patients = "".join(
        _patient_xml(i, b) for i, b in enumerate(claim.bills, start=1) if not b.no_episode
    )
    total = Decimal("0")
    for b in claim.bills:
        total += (
            -b.total()
            if b.transaction_type == "5"
            else (Decimal("0") if b.transaction_type == "4" else b.total())
        )
    count = claim.krav_count if claim.krav_count is not None else len(claim.bills)
    krav_sum = claim.krav_sum if claim.krav_sum is not None else f"{total:.2f}"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24">
  <MsgInfo>
    <Type V="POM" DN="Poliklinisk oppgjørsmelding"/>
    <MIGversion>v1.2 2006-05-24</MIGversion>
    <GenDate>2026-11-02T08:15:00+01:00</GenDate>
    <MsgId>{claim.msg_id}</MsgId>
    <Sender><Organisation><OrganisationName>Demo sykehus HF</OrganisationName>
      <Ident><Id>983974678</Id><TypeId V="ENH" S="2.16.578.1.12.4.1.1.9051"/></Ident>
      <Ident><Id>90001</Id><TypeId V="HER" S="2.16.578.1.12.4.1.1.9051"/></Ident>
    </Organisation></Sender>
    <Receiver><Organisation><OrganisationName>HELFO</OrganisationName>
      <Ident><Id>79768</Id><TypeId V="HER" S="2.16.578.1.12.4.1.1.9051"/></Ident>
    </Organisation></Receiver>
  </MsgInfo>
  <Document><RefDoc><MsgType V="XML"/><Content>
    <Melding xmlns="http://www.npr.no/xmlstds" versjon="0.78" fraDatoPeriode="2026-10-01"
             tilDatoPeriode="2026-10-31" uttakDato="2026-11-02" kontPerson="Ola Kontakt"
             meldEpost1="krav@demo-sykehus.example" meldRefNr="TEST">
      <Institusjon institusjonID="{claim.institution}">
        <Enhet enhetID="1" enhetKode="8151" reshID="{claim.resh}">
          <Krav antallRegninger="{count}" sumKravBelop="{krav_sum}">{bills}</Krav>
        </Enhet>
        {patients}
      </Institusjon>
    </Melding>
  </Content></RefDoc></Document>
</MsgHead>
""".encode()


def person_number(n: int, born: str = "010180") -> str:
    """The n-th made-up fødselsnummer born on `born` that passes mod-11 (deterministic)."""
    return _numbers(born)[n]


@functools.cache
def _numbers(born: str) -> tuple[str, ...]:
    return tuple(
        candidate
        for individual in range(100, 1000)
        for control in range(100)
        if _mod11(candidate := f"{born}{individual}{control:02d}")
    )


def _mod11(number: str) -> bool:
    d = [int(c) for c in number]
    for weights, pos in (((3, 7, 6, 1, 8, 9, 4, 5, 2), 9), ((5, 4, 3, 2, 7, 6, 5, 4, 3, 2), 10)):
        k = 11 - sum(w * x for w, x in zip(weights, d, strict=False)) % 11
        k = 0 if k == 11 else k
        if k == 10 or k != d[pos]:
            return False
    return True


@dataclass(frozen=True)
class I:  # noqa: E742 (reads as the spec letters B, C, L, P)
    """An institution in the registry a test sandbox uses (`institutions.toml`).
    `sender`: the demo partner (HER 90001) may claim for it; the demo hospital is
    claimed for by its own partner (same orgnr) and needs none."""

    orgnr: str
    name: str
    rhf: str
    kinds: tuple[str, ...] = ("hf",)
    sender: bool = True

    def toml(self) -> str:
        kinds = ", ".join(f'"{k}"' for k in self.kinds)
        senders = 'senders = ["90001"]\n' if self.sender else ""
        return (
            f'[[institution]]\norgnr = "{self.orgnr}"\nname = {quoteattr(self.name)}\n'
            f'rhf = "{self.rhf}"\nkinds = [{kinds}]\n{senders}'
        )


DEMO_HF = I("983974678", "Demo sykehus HF", "Helse Sør-Øst RHF", sender=False)


def registry(*institutions: I) -> str:
    """The text of an institutions.toml holding `institutions`."""
    return "\n".join(i.toml() for i in institutions)
