"""The utbetalingsvedtak: what one settlement run decides to pay one payee.

Modelled on the KITH eResept messages (R1508): the *Oppgjørsresultat* (M22: one
`Regning` per bill, with the claimed and approved amount, a status from code list 7410
and the remarks) and the *Utbetaling* (M23: the payment itself). The M22 body is the
official one (its namespace and elements), so any M22 reader understands it; the
payment is M23-style in our own namespace, because M23 has no place for the account.

Both go out in a KITH MsgHead 1.2 (`ERM22` Oppgjorsresultat, `ERM23` Utbetaling) with
our organisation number and HER-id as Sender and the payee as Receiver, signed with an
enveloped XML signature (`daemon.transport.trust.sign_msghead`) when keys are given. Schemas:
`schemas/kith/m22.xsd`, `schemas/utbetaling.xsd`, both through the driver
`schemas/vedtak.xsd` (`Schemas.vedtak`); `validate_vedtak` is the check before anything
is recorded or sent.

Pure: values in, bytes out. The settlement shell (`daemon.settlement.settle`) decides what goes
into a vedtak, records it in the ledger and delivers the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from lxml import etree

from daemon.schemas import NAMESPACE_IN_MESSAGE, Schemas, readable_path
from daemon.transport import trust, xmlsafe

if TYPE_CHECKING:
    from daemon.config import OwnParty

# code list 7410, status of a bill in an oppgjørsresultat
STATUS_REJECTED = "1"  # Avvist
STATUS_APPROVED = "2"  # Godkjent
STATUS_REDUCED = "3"  # Avkortet
STATUS_TEXT = {STATUS_REJECTED: "Avvist", STATUS_APPROVED: "Godkjent", STATUS_REDUCED: "Avkortet"}


@dataclass(frozen=True, slots=True)
class Payee:
    """Who is paid: an RHF (`RHF:<name>`) or an institution paid directly
    (`INST:<orgnr>`), with what the messages need to address it."""

    key: str
    name: str
    orgnr: str
    account: str | None = None  # kontonummer (11 digits), when configured


@dataclass(frozen=True, slots=True)
class VedtakLine:
    """One `Regning` of the oppgjørsresultat: a bill's share for this payee.

    `claimed` is what the bill claimed (negative for a credit), `approved` what is paid
    now: a correction pays the difference, a credit takes back (negative)."""

    regning_nr: str
    claimed: Decimal
    approved: Decimal
    status: str  # STATUS_*
    remarks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Vedtak:
    oppgjors_nr: str  # unique per vedtak (OppgjorsNr)
    payee: Payee
    decided_on: date  # BehandlingDato
    cutoff: datetime  # lines of claims answered up to this instant
    lines: tuple[VedtakLine, ...]

    @property
    def total(self) -> Decimal:
        return sum((line.approved for line in self.lines), Decimal("0"))

    @property
    def claimed_total(self) -> Decimal:
        return sum((line.claimed for line in self.lines), Decimal("0"))


@dataclass(frozen=True, slots=True)
class Utbetaling:
    """The payment of one vedtak (M23-style): amount, account and date."""

    utbetalings_nr: str
    payee: Payee
    amount: Decimal
    paid_on: date
    oppgjors_nr: str


# --------------------------------------------------------------------------- rendering

MSGHEAD = "http://www.kith.no/xmlstds/msghead/2006-05-24"
M22 = "http://www.kith.no/xmlstds/eresept/m22/2006-10-06"  # official eResept M22
UTBETALING = "http://kravmottak.no/xmlstds/utbetaling/2026-11-23"  # ours, M23-style
MIG_VERSION = "v1.2 2006-05-24"
OID_9051 = "2.16.578.1.12.4.1.1.9051"  # identifier types: ENH, HER, ...
ID_TYPE_TEXT = {"ENH": "Organisasjonsnummeret i Enhetsregister", "HER": "HER-id"}
TYPE_OPPGJORSRESULTAT = ("ERM22", "Oppgjorsresultat")
TYPE_UTBETALING = ("ERM23", "Utbetaling")
# the Content body each MsgInfo/Type carries
BODY_OF_TYPE = {
    TYPE_OPPGJORSRESULTAT[0]: f"{{{M22}}}Oppgjorsresultat",
    TYPE_UTBETALING[0]: f"{{{UTBETALING}}}Utbetaling",
}
_CENT = Decimal("0.01")


def money(value: Decimal) -> str:
    """An amount as KITH MO/@V: two decimals, `-120.00` for a credit. Refuses what is
    not whole øre rather than round it away."""
    if not value.is_finite():
        raise ValueError(f"amount {value} is not a number")
    cents = value.quantize(_CENT)
    if cents != value:
        raise ValueError(f"amount {value} is not whole øre")
    return f"{cents if cents else Decimal('0.00'):.2f}"  # never "-0.00"


def utbetaling_for(vedtak: Vedtak, *, utbetalings_nr: str, paid_on: date) -> Utbetaling:
    """The payment of a vedtak: its payee, its total, its OppgjorsNr."""
    return Utbetaling(utbetalings_nr, vedtak.payee, vedtak.total, paid_on, vedtak.oppgjors_nr)


def render_oppgjorsresultat(
    vedtak: Vedtak,
    *,
    us: OwnParty,
    msg_id: str,
    gen_date: datetime,
    keys: trust.KeyPair | None,
) -> bytes:
    """The vedtak as an eResept M22 Oppgjørsresultat in a MsgHead of Type ERM22, from
    `us` to the payee: one `Regning` per line; signed when `keys` are given."""
    body = etree.Element(f"{{{M22}}}Oppgjorsresultat", nsmap={"m22": M22})
    _sub(body, M22, "OppgjorsNr", vedtak.oppgjors_nr)
    _sub(body, M22, "BehandlingDato", f"{vedtak.decided_on:%Y-%m-%d}")
    for line in vedtak.lines:
        regning = _sub(body, M22, "Regning")
        _sub(regning, M22, "RegningsNr", line.regning_nr)
        _sub(regning, M22, "Krav", U="NOK", V=money(line.claimed))
        _sub(regning, M22, "Godkjent", U="NOK", V=money(line.approved))
        _sub(regning, M22, "Status", V=line.status, DN=STATUS_TEXT.get(line.status))
        for remark in line.remarks:
            _sub(regning, M22, "Merknad", remark)
    return _msghead(
        TYPE_OPPGJORSRESULTAT,
        body,
        vedtak.payee,
        us=us,
        msg_id=msg_id,
        gen_date=gen_date,
        keys=keys,
    )


def render_utbetaling(
    utbetaling: Utbetaling,
    *,
    us: OwnParty,
    msg_id: str,
    gen_date: datetime,
    keys: trust.KeyPair | None,
) -> bytes:
    """The payment as our M23-style `Utbetaling` (namespace `UTBETALING`) in a MsgHead
    of Type ERM23: payee, account when known, amount, date and the oppgjør it pays."""
    payee = utbetaling.payee
    body = etree.Element(f"{{{UTBETALING}}}Utbetaling", nsmap={"utb": UTBETALING})
    _sub(body, UTBETALING, "Utbetalingsnr", utbetaling.utbetalings_nr)
    mottaker = _sub(body, UTBETALING, "Mottaker")
    _sub(mottaker, UTBETALING, "Navn", payee.name)
    _sub(mottaker, UTBETALING, "Orgnr", payee.orgnr)
    if payee.account:
        _sub(body, UTBETALING, "Kontonummer", payee.account)
    _sub(body, UTBETALING, "Utbetalt", U="NOK", V=money(utbetaling.amount))
    _sub(body, UTBETALING, "UtbetaltDato", f"{utbetaling.paid_on:%Y-%m-%d}")
    oppgjor = _sub(body, UTBETALING, "Oppgjor")
    _sub(oppgjor, UTBETALING, "OppgjorsNr", utbetaling.oppgjors_nr)
    _sub(oppgjor, UTBETALING, "Godkjent", U="NOK", V=money(utbetaling.amount))
    return _msghead(
        TYPE_UTBETALING, body, payee, us=us, msg_id=msg_id, gen_date=gen_date, keys=keys
    )


def _sub(parent: etree._Element, ns: str, name: str, text: str | None = None, **attrs):
    el = etree.SubElement(parent, f"{{{ns}}}{name}", {k: v for k, v in attrs.items() if v})
    if text is not None:
        el.text = text
    return el


def _timestamp(moment: datetime) -> str:
    """xs:dateTime in UTC; a naive value is read as UTC (never as the host's zone)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return f"{aware.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def _organisation(parent: etree._Element, name: str, ids: list[tuple[str, str]]) -> None:
    organisation = _sub(parent, MSGHEAD, "Organisation")
    _sub(organisation, MSGHEAD, "OrganisationName", name)
    for id_type, value in ids:
        ident = _sub(organisation, MSGHEAD, "Ident")
        _sub(ident, MSGHEAD, "Id", value)
        _sub(ident, MSGHEAD, "TypeId", V=id_type, S=OID_9051, DN=ID_TYPE_TEXT[id_type])


def _msghead(
    kind: tuple[str, str],
    body: etree._Element,
    receiver: Payee,
    *,
    us: OwnParty,
    msg_id: str,
    gen_date: datetime,
    keys: trust.KeyPair | None,
) -> bytes:
    """MsgHead 1.2 around `body` (R1508 §4.1.2/4.1.3: sender and receiver organisation
    name and identifiers), signed with an enveloped signature when keys are given."""
    root = etree.Element(f"{{{MSGHEAD}}}MsgHead", nsmap={"mh": MSGHEAD})
    info = _sub(root, MSGHEAD, "MsgInfo")
    _sub(info, MSGHEAD, "Type", V=kind[0], DN=kind[1])
    _sub(info, MSGHEAD, "MIGversion", MIG_VERSION)
    _sub(info, MSGHEAD, "GenDate", _timestamp(gen_date))
    _sub(info, MSGHEAD, "MsgId", msg_id)
    _organisation(_sub(info, MSGHEAD, "Sender"), us.name, [("ENH", us.orgnr), ("HER", us.her_id)])
    _organisation(_sub(info, MSGHEAD, "Receiver"), receiver.name, [("ENH", receiver.orgnr)])
    document = _sub(root, MSGHEAD, "Document")
    _sub(document, MSGHEAD, "DocumentConnection", V="H", DN="Hoveddokument")
    refdoc = _sub(document, MSGHEAD, "RefDoc")
    _sub(refdoc, MSGHEAD, "MsgType", V="XML", DN="XML-instans")
    _sub(refdoc, MSGHEAD, "Content").append(body)
    etree.indent(root, space="  ")  # one element a line: errors point at a useful line
    if keys is not None:  # after indenting: the signature covers the bytes as sent
        root = trust.sign_msghead(root, keys)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


# --------------------------------------------------------------------------- checking

_NS = {"mh": MSGHEAD, "utb": UTBETALING}


def validate_vedtak(xml_bytes: bytes, schemas: Schemas) -> list[str]:
    """Why a rendered vedtak must not be sent, each reason with its line; empty when it
    may. The schema (`Schemas.vedtak`), then what it cannot say: the body matches
    MsgInfo/Type, and an Utbetaling's Utbetalt is the sum of its Oppgjor."""
    try:
        root = etree.fromstring(xml_bytes, xmlsafe.new_parser())
    except etree.XMLSyntaxError as exc:
        line = exc.position[0] if exc.position else None
        return [f"line {line}: not well-formed XML: {exc.msg}"]
    schema = schemas.vedtak
    errors = []
    if not schema.validate(root):
        for entry in schema.error_log:
            where = readable_path(root, entry.path)
            errors.append(
                f"line {entry.line}: {where}: {NAMESPACE_IN_MESSAGE.sub('', entry.message)}"
            )
    return errors + _body_errors(root)


def _body_errors(root: etree._Element) -> list[str]:
    kind = root.find("mh:MsgInfo/mh:Type", _NS)
    if kind is None:
        return []  # the schema has said so
    expected = BODY_OF_TYPE.get(kind.get("V", ""))
    if expected is None:
        known = " or ".join(BODY_OF_TYPE)
        return [f"line {kind.sourceline}: MsgInfo/Type V={kind.get('V')!r} is not {known}"]
    wanted = etree.QName(expected).localname
    bodies = root.findall("mh:Document/mh:RefDoc/mh:Content/*", _NS)
    if not bodies:
        return [f"line {kind.sourceline}: no {wanted} in Document/RefDoc/Content"]
    errors = []
    for body in bodies:
        if body.tag != expected:
            name = etree.QName(body).localname
            errors.append(
                f"line {body.sourceline}: Content holds {name}, but MsgInfo/Type "
                f"{kind.get('V')} carries {wanted}"
            )
        elif body.tag == BODY_OF_TYPE[TYPE_UTBETALING[0]]:
            errors += _sum_errors(body)
    return errors


def _sum_errors(body: etree._Element) -> list[str]:
    paid = body.find("utb:Utbetalt", _NS)
    parts = body.findall("utb:Oppgjor/utb:Godkjent", _NS)
    try:
        total = Decimal(paid.get("V"))
        summed = sum((Decimal(p.get("V")) for p in parts), Decimal("0"))
    except (AttributeError, TypeError, ArithmeticError):
        return []  # missing or malformed amounts: the schema has said so
    if total == summed:
        return []
    return [f"line {paid.sourceline}: Utbetalt {total} is not the sum of Oppgjor/Godkjent {summed}"]
