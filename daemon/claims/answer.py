"""Answer: build every outbound message for what the stages learnt.

- AppRec 1.0 for every message whose sender we can address (status from code list
  8258: 1 OK, 2 Avvist, 3 OK med feil i delmelding), technical errors from list 8221
  with their location in `OT`, bill remarks with `OT` = regningNr.
- ebMS Acknowledgment when the sender asked for one and the envelope was usable.
- ebMS MessageError when the transport layer (MIME, envelope, agreement) failed.

Every envelope is signed with our key (header signature over the envelope and each
payload part); the AppRec payload is gzipped and/or encrypted to the partner's
certificate when its agreement says so.

Each goes out as an ebMS 2.0 MIME message. Ids are derived from the inbound content
hash, so the same input always gives the same answer.

Every value echoed back is bounded (`bounded`: texts to MAX_TEXT, references such as
regningNr, ids and names to MAX_REF characters) and an AppRec lists at most MAX_ERRORS
errors, the rest summed up in one last line: a small hostile input cannot make a
large answer (or a large ledger row: the problems stored are the bounded ones).
"""

from __future__ import annotations

import dataclasses
import gzip
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from lxml import etree

from daemon import __version__
from daemon.domain import Layer, PartyRef, Problem, Remark
from daemon.records import Context, Work
from daemon.registers.registry import Partner
from daemon.transport import ebms, mime, trust

APPREC = "http://www.kith.no/xmlstds/apprec/2004-11-21"
OID_8221 = "2.16.578.1.12.4.1.1.8221"
OID_8223 = "2.16.578.1.12.4.1.1.8223"
OID_8258 = "2.16.578.1.12.4.1.1.8258"
STATUS_TEXT = {"1": "OK", "2": "Avvist", "3": "OK, feil i delmelding"}
TRANSPORT_LAYERS = {Layer.FILE, Layer.MIME, Layer.ENVELOPE, Layer.AGREEMENT}

# ebMS 2.0 error codes (spec §4.2.3.4.1) for each kind of transport problem
_EBMS_CODE = {
    ("T01", Layer.MIME): "MimeProblem",
    ("T10", Layer.MIME): "MimeProblem",
    ("T99", Layer.MIME): "MimeProblem",
    ("E10", Layer.AGREEMENT): "ValueNotRecognized",
    ("E21", Layer.AGREEMENT): "ValueNotRecognized",
    ("E10", Layer.MIME): "MimeProblem",
    ("S01", Layer.ENVELOPE): "SecurityFailure",
    ("S02", Layer.ENVELOPE): "SecurityFailure",
    ("S99", Layer.ENVELOPE): "SecurityFailure",
    ("S99", Layer.MIME): "SecurityFailure",
    ("S99", Layer.AGREEMENT): "SecurityFailure",
    ("X99", Layer.AGREEMENT): "DeliveryFailure",  # ours to repair: send again later
}


@dataclass(frozen=True, slots=True)
class Output:
    kind: str  # "apprec" | "ack" | "error"
    name: str  # file name in the outbox
    content: bytes


# problems of our making or our configuration: the same file sent again is processed
# again (after the fix, the size limit change or the new agreement) instead of re-answered
RETRYABLE_LAYERS = {Layer.INTERNAL, Layer.AGREEMENT, Layer.FILE, Layer.REGISTRY}


@dataclass(frozen=True, slots=True)
class Answer:
    state: str  # "answered" | "quarantined"
    status: str | None  # AppRec status (8258), None when no AppRec could be addressed
    outputs: tuple[Output, ...]
    problems: tuple[Problem, ...]

    @property
    def final(self) -> bool:
        return not any(p.layer in RETRYABLE_LAYERS for p in self.problems)


class InvalidOutput(Exception):
    """We built an answer our own schema refuses: a bug, handled as an internal error."""


MAX_TEXT = 1000  # an error text (DN): what and where (our texts; quoted input cut)
MAX_REF = 100  # a reference (OT: regningNr or a location), a name, an id
MAX_ID = 256  # ebXML ids echoed in our envelopes (MessageId, ConversationId, CPAId ...)
MAX_ERRORS = 1000  # Error lines in one AppRec; the rest are counted in one more line


def bounded(value: str | None, limit: int) -> str | None:
    """`value` cut to `limit` characters (an ellipsis marks the cut)."""
    if value is None or len(value) <= limit:
        return value
    return value[: limit - 1] + "…"


def _bounded_problem(p: Problem) -> Problem:
    return dataclasses.replace(
        p, text=bounded(p.text, MAX_TEXT), location=bounded(p.location, MAX_TEXT)
    )


def _bounded_fields(obj):
    """A copy of a header (or party) dataclass with every string field bounded."""
    changes = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, str) and len(value) > MAX_ID:
            changes[f.name] = bounded(value, MAX_ID)
        elif isinstance(value, PartyRef):
            changes[f.name] = _bounded_fields(value)
        elif isinstance(value, tuple) and any(isinstance(v, str) for v in value):
            changes[f.name] = tuple(bounded(v, MAX_ID) for v in value[:MAX_ERRORS])
    return dataclasses.replace(obj, **changes) if changes else obj


def timestamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def answer(work: Work, ctx: Context) -> Answer:
    problems = tuple(_bounded_problem(p) for p in work.problems[:MAX_ERRORS])
    state = "quarantined" if problems else "answered"
    if work.header is None:  # nobody to answer: the quarantine's .err.json is the answer
        return Answer(state, None, (), problems)
    header = _bounded_fields(work.header)
    dropped = len(work.problems) - len(problems)
    work = work.with_(header=header, problems=problems)
    stamp = timestamp(ctx.now)
    us = PartyRef(ctx.settings.party.her_id, "HER", ctx.settings.party.role)
    outputs = []
    transport = [p for p in problems if p.layer in TRANSPORT_LAYERS]
    if transport:
        items = [
            ebms.ErrorItem(_ebms_code(p), f"{p.code}: {p.text}", p.location) for p in transport
        ]
        env = ebms.message_error(
            header, us, items, message_id=work.ids.new("error"), timestamp=stamp
        )
        outputs.append(_signal("error", env, ctx))
    elif header.ack_requested:
        env = ebms.acknowledgment(header, us, message_id=work.ids.new("ack"), timestamp=stamp)
        outputs.append(_signal("ack", env, ctx))
    status = _status(work)
    apprec_id = work.ids.new("apprec")
    apprec = build_apprec(work, ctx, status, apprec_id, stamp, dropped=dropped)
    if not ctx.schemas.apprec.validate(apprec):  # never send what the schema refuses
        raise InvalidOutput(f"AppRec does not validate: {ctx.schemas.apprec.error_log.last_error}")
    route = ebms.reply_route(
        header, us, action="Svarmelding", message_id=work.ids.new("apprec-ebms"), timestamp=stamp
    )
    payload = payload_part(
        f"apprec-{apprec_id}@kravmottak",
        etree.tostring(apprec, xml_declaration=True, encoding="UTF-8"),
        work.partner,
    )
    env = ebms.envelope(route, manifest=(payload.content_id,))
    content = ebms_message(env, [payload], ctx)
    outputs.append(Output("apprec", f"apprec-{route.message_id}.msg", content))
    return Answer(state, status, tuple(outputs), problems)


def payload_part(cid: str, xml: bytes, partner: Partner | None) -> mime.Part:
    """The payload as the partner's agreement wants it: gzipped, encrypted, or plain."""
    if partner is not None and partner.compress:
        data, ctype = gzip.compress(xml, mtime=0), "application/gzip"
    else:
        data, ctype = xml, "text/xml"
    if partner is not None and partner.encrypt:
        data, ctype = trust.encrypt(data, partner.encryption_cert), "application/pkcs7-mime"
    return mime.Part(cid, ctype, data)


def ebms_message(env: etree._Element, attachments: list[mime.Part], ctx: Context) -> bytes:
    """Sign the envelope over itself and every attachment, then package as MIME."""
    if ctx.keys is not None:
        env = trust.sign_envelope(env, {p.content_id: p.data for p in attachments}, ctx.keys)
    message_id = env.findtext(".//eb:MessageData/eb:MessageId", namespaces=ebms.NS)
    soap = mime.Part(f"soap-{message_id}@kravmottak", "text/xml", ebms.to_bytes(env))
    return mime.build([soap, *attachments])


def _ebms_code(p: Problem) -> str:
    return _EBMS_CODE.get((p.code, p.layer), "Inconsistent" if p.code == "T02" else "OtherXml")


def _signal(kind: str, env: etree._Element, ctx: Context) -> Output:
    """Acknowledgment or MessageError: a signed SOAP-only ebMS message."""
    message_id = env.findtext(".//eb:MessageData/eb:MessageId", namespaces=ebms.NS)
    return Output(kind, f"{kind}-{message_id}.msg", ebms_message(env, [], ctx))


def _status(work: Work) -> str:
    if work.problems:
        return "2"
    if work.decision and work.decision.remarks:
        return "3"
    return "1"


# --------------------------------------------------------------------------- AppRec

_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$")


def _valid_datetime(value: str | None) -> bool:
    """An xs:dateTime we can echo: the shape, and a real calendar date and time."""
    if not value or _DATETIME.match(value) is None:
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:  # 2026-02-30, 25:61, year 0
        return False
    return True


def _el(parent: etree._Element, name: str, text: str | None = None, **attrs: str):
    el = etree.SubElement(parent, f"{{{APPREC}}}{name}", {k: v for k, v in attrs.items() if v})
    if text is not None:
        el.text = text
    return el


def _inst(parent: etree._Element, name: str | None, ids: list[tuple[str, str]]) -> None:
    """HCP/Inst with the main id (ENH when known) and the others as AdditionalId."""
    hcp = _el(parent, "HCP")
    inst = _el(hcp, "Inst")
    if name:
        _el(inst, "Name", name)
    ordered = sorted(ids, key=lambda t: t[0] != "ENH")
    if ordered:
        _el(inst, "Id", ordered[0][1])
        _el(inst, "TypeId", V=ordered[0][0])
    for id_type, value in ordered[1:]:
        extra = _el(inst, "AdditionalId")
        _el(extra, "Id", value)
        _el(extra, "Type", V=id_type)


def build_apprec(
    work: Work, ctx: Context, status: str, apprec_id: str, stamp: str, *, dropped: int = 0
):
    party = ctx.settings.party
    header = work.header
    info = work.msghead_info
    root = etree.Element(f"{{{APPREC}}}AppRec", nsmap={None: APPREC})
    _el(root, "MsgType", V="APPREC")
    _el(root, "MIGversion", "1.0 2004-11-21")
    _el(root, "SoftwareName", "kravmottak")
    _el(root, "SoftwareVersion", __version__)
    _el(root, "GenDate", stamp)
    _el(root, "Id", apprec_id)
    _inst(_el(root, "Sender"), party.name, [("ENH", party.orgnr), ("HER", party.her_id)])
    receiver_ids = list(info.sender_ids) if info and info.sender_ids else []
    if not any(t == "HER" for t, _ in receiver_ids):
        receiver_ids.append(("HER", header.from_party.party_id))
    receiver_ids = [(bounded(t, MAX_REF), bounded(v, MAX_REF)) for t, v in receiver_ids[:10]]
    name = bounded(info.sender_name, MAX_REF) if info else None
    _inst(_el(root, "Receiver"), name, receiver_ids)
    _el(root, "Status", V=status, DN=STATUS_TEXT[status])
    listed = 0
    for p in work.problems:
        oid = OID_8223 if p.scheme == "8223" else OID_8221
        _el(root, "Error", V=p.code, S=oid, DN=p.text, OT=bounded(p.where(), MAX_TEXT))
        listed += 1
    remarks = _remarks(work)
    for r in remarks[: max(0, MAX_ERRORS - listed)]:
        text, ref = bounded(r.text, MAX_TEXT), bounded(r.regning_nr, MAX_REF)
        _el(root, "Error", V=r.number, S=OID_8223, DN=text, OT=ref)
    left_out = dropped + len(work.problems) + len(remarks) - MAX_ERRORS
    if left_out > 0:
        text = f"{left_out} merknader til er ikke tatt med i svaret (høyst {MAX_ERRORS})"
        _el(root, "Error", V="X99", S=OID_8221, DN=text)
    original = _el(root, "OriginalMsgId")
    if info and info.msg_type:
        _el(original, "MsgType", V=bounded(info.msg_type, MAX_REF))
    else:
        _el(original, "MsgType", V="POM", DN="ukjent; antatt poliklinisk oppgjørsmelding")
    if info and _valid_datetime(info.gen_date):
        issued = info.gen_date
    elif _valid_datetime(header.timestamp):
        issued = header.timestamp
    else:
        issued = stamp
    _el(original, "IssueDate", issued)
    _el(original, "Id", bounded(info.msg_id if info and info.msg_id else header.message_id, MAX_ID))
    return root


def _remarks(work: Work) -> tuple[Remark, ...]:
    return work.decision.remarks if work.decision else ()
