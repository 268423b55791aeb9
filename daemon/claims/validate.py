"""Validate: every layer against the project's XSDs, all errors collected.

Envelope (SOAP 1.1 + ebMS 2.0) and payload (MsgHead 1.2 carrying NPR-behandler-
kravmelding 0.78 or Behandlerkrav 1.8.3) are both checked even when the first has
errors, so the sender learns everything that is wrong in one answer. The MsgHead
facts the answer refers to (MsgId, Type, GenDate) are read even from an invalid
payload, when it is at least well-formed.
"""

from __future__ import annotations

from lxml import etree

from daemon.domain import Layer, MsgHeadInfo, Problem
from daemon.masking import mask
from daemon.records import Context, Work
from daemon.schemas import validate as xsd_validate
from daemon.transport.ebms import text_of
from daemon.transport.xmlsafe import parse_untrusted

MSGHEAD = "http://www.kith.no/xmlstds/msghead/2006-05-24"
NPR_BKM = "http://www.npr.no/xmlstds"
BKM_183 = "http://www.kith.no/xmlstds/bkm/2006-12-20"
SUPPORTED_PAYLOADS = {NPR_BKM: "NPR-behandlerkravmelding 0.78", BKM_183: "Behandlerkrav 1.8.3"}
MH = {"mh": MSGHEAD}
# MsgHead Type for claims: poliklinisk (POM) and laboratorie/røntgen (LROM) oppgjørsmelding
CLAIM_TYPES = {"POM", "LROM"}
CONTENT = "/MsgHead/Document/RefDoc/Content"
# No NPR-BKM attribute (codes, ids, dates, amounts, regningNr) is anywhere near this
# long; the XSD says only xs:string for several. A longer one is refused before it is
# read, so it cannot be multiplied into remarks, traces and answers.
MAX_VALUE = 256
_OVERLONG = etree.XPath(".//@*[string-length(.) > $n]")


def validate(work: Work, ctx: Context) -> Work:
    problems: list[Problem] = list(xsd_validate(ctx.schemas.envelope, work.soap, Layer.ENVELOPE))
    nodes = ctx.settings.intake.max_xml_nodes
    parsed = parse_untrusted(work.payload, Layer.MSGHEAD, max_nodes=nodes, max_attributes=2 * nodes)
    if parsed.problem:
        return work.failed(*problems, parsed.problem)
    return validate_root(work, ctx, parsed.root, problems)


def validate_root(
    work: Work, ctx: Context, root: etree._Element, problems: list[Problem] | None = None,
    *, skeleton: bool = False,
) -> Work:  # fmt: skip
    """The checks of a parsed MsgHead: its type, its one payload and the schema. A
    streamed payload's skeleton (`daemon.claims.stream`) is checked here the same way
    (with the envelope, whose problems come first)."""
    if skeleton:
        problems = list(xsd_validate(ctx.schemas.envelope, work.soap, Layer.ENVELOPE))
    problems = [] if problems is None else problems
    if root.tag != f"{{{MSGHEAD}}}MsgHead":
        text = f"nyttelasten er {etree.QName(root).localname}, ikke en KITH MsgHead 1.2"
        return work.failed(*problems, Problem(Layer.MSGHEAD, "T10", text, "/", root.sourceline))
    info = msghead_info(root)
    work = work.with_(msghead=root, msghead_info=info)
    if info.msg_type not in CLAIM_TYPES:
        text = f"MsgHead Type {info.msg_type!r} er ikke en oppgjørsmelding (POM eller LROM)"
        problems.append(Problem(Layer.MSGHEAD, "T10", text, "/MsgHead/MsgInfo/Type/@V"))
    contents = root.findall("mh:Document/mh:RefDoc/mh:Content", MH)
    payloads = [el for c in contents for el in c.iterchildren("{*}*")]
    if len(payloads) != 1:
        text = f"MsgHead må bære nøyaktig ett behandlerkrav, fant {len(payloads)}"
        problems.append(Problem(Layer.PAYLOAD, "T10", text, CONTENT))
    elif info.payload_namespace not in SUPPORTED_PAYLOADS:
        text = f"innholdet i MsgHead har ukjent navnerom {info.payload_namespace!r}"
        problems.append(Problem(Layer.PAYLOAD, "T10", text, CONTENT))
    else:
        problems += _overlong(payloads[0])
        problems += _split_layers(xsd_validate(ctx.schemas.msghead, root, Layer.MSGHEAD))
    return work.failed(*problems) if problems else work


def _overlong(payload: etree._Element, report: int = 10) -> list[Problem]:
    """Attribute values longer than MAX_VALUE (the first `report` of them)."""
    out = []
    for value in _OVERLONG(payload, n=MAX_VALUE)[:report]:
        owner = value.getparent()
        where = f"{CONTENT}//{etree.QName(owner).localname}/@{value.attrname}"
        text = f"verdien er {len(value)} tegn lang; høyst {MAX_VALUE} er tillatt"
        out.append(Problem(Layer.PAYLOAD, "T02", text, where, owner.sourceline))
    return out


def _split_layers(problems: list[Problem]) -> list[Problem]:
    """Errors inside Document/RefDoc/Content belong to the payload layer."""
    out = []
    for p in problems:
        if "/Content/" in p.location:
            out.append(Problem(Layer.PAYLOAD, p.code, p.text, p.location, p.line, p.column))
        else:
            out.append(p)
    return out


def _first_text(root: etree._Element, path: str) -> str | None:
    """The element's whole string value (comments inside signed text cannot cut it
    short: see `daemon.transport.ebms.text_of`)."""
    el = root.find(path, MH)
    return (text_of(el).strip() or None) if el is not None else None


def msghead_info(root: etree._Element) -> MsgHeadInfo:
    type_el = root.find("mh:MsgInfo/mh:Type", MH)
    sender = root.find("mh:MsgInfo/mh:Sender/mh:Organisation", MH)
    ids: list[tuple[str, str]] = []
    name = None
    if sender is not None:
        name = _first_text(sender, "mh:OrganisationName")
        for ident in sender.findall("mh:Ident", MH):
            id_text = _first_text(ident, "mh:Id")
            type_el2 = ident.find("mh:TypeId", MH)
            if id_text and type_el2 is not None:
                ids.append((type_el2.get("V", ""), id_text))
    payload = root.find("mh:Document/mh:RefDoc/mh:Content/*", MH)  # elements only
    payload_ns = etree.QName(payload).namespace if payload is not None else None
    return MsgHeadInfo(
        msg_type=type_el.get("V", "") if type_el is not None else "",
        msg_id=mask(_first_text(root, "mh:MsgInfo/mh:MsgId") or ""),
        gen_date=_first_text(root, "mh:MsgInfo/mh:GenDate") or "",
        sender_name=name,
        sender_ids=tuple(ids),
        payload_namespace=payload_ns,
    )
