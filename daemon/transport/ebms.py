"""ebMS 2.0 over SOAP 1.1: reading the header, writing messages and signals.

Names and structure from the OASIS ebMS 2.0 specification and the health network's
framework (HIS 1037): parties are identified by HER-id (`eb:PartyId eb:type="HER"`),
BehandlerKrav uses the roles Behandler → KontrollUtbetaler.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from daemon.domain import EbxmlHeader, Layer, PartyRef, Problem
from daemon.masking import mask, mask_optional

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
EB = "http://www.oasis-open.org/committees/ebxml-msg/schema/msg-header-2_0.xsd"
XLINK = "http://www.w3.org/1999/xlink"
DS = "http://www.w3.org/2000/09/xmldsig#"
NS = {"SOAP": SOAP, "eb": EB, "xlink": XLINK, "ds": DS}

EBMS_SERVICE = "urn:oasis:names:tc:ebxml-msg:service"
TO_PARTY_MSH = "urn:oasis:names:tc:ebxml-msg:actor:toPartyMSH"


def text_of(el: etree._Element) -> str:
    """An element's whole string value (XPath `string()`): every text node inside it.

    Never `el.text`, which stops at the first comment or processing instruction: C14N
    drops comments, so `<eb:MessageId>a<!--x-->b</eb:MessageId>` keeps a signature
    valid while `.text` would read `a`. The schema check refuses child elements later.
    """
    return el.xpath("string()")


def _text(root: etree._Element, path: str) -> str | None:
    found = root.find(path, NS)
    if found is None:
        return None
    return text_of(found).strip() or None


def _party(mh: etree._Element, which: str) -> tuple[PartyRef | None, list[Problem]]:
    where = f"/SOAP:Envelope/SOAP:Header/eb:MessageHeader/eb:{which}"
    el = mh.find(f"eb:{which}", NS)
    if el is None:
        return None, [Problem(Layer.ENVELOPE, "E10", f"eb:{which} mangler", where)]
    ids = el.findall("eb:PartyId", NS)
    her = next((i for i in ids if i.get(f"{{{EB}}}type") == "HER"), None)
    chosen = her if her is not None else (ids[0] if ids else None)
    if chosen is None or not text_of(chosen).strip():
        return None, [Problem(Layer.ENVELOPE, "E10", f"eb:{which}/eb:PartyId mangler", where)]
    role = _text(el, "eb:Role") or ""
    party = PartyRef(text_of(chosen).strip(), chosen.get(f"{{{EB}}}type") or "", role)
    return party, []


def read_header(root: etree._Element) -> tuple[EbxmlHeader | None, list[Problem]]:
    """Pick the routing facts out of a SOAP envelope; report what is missing.

    Leniency is deliberate: the schema check comes later and reports every error;
    here we only need enough to know whom to answer.
    """
    if root.tag != f"{{{SOAP}}}Envelope":
        text = f"rotelementet er {root.tag}, ikke SOAP:Envelope"
        return None, [Problem(Layer.ENVELOPE, "T10", text, "/")]
    headers = root.findall("SOAP:Header/eb:MessageHeader", NS)
    if not headers:
        where = "/SOAP:Envelope/SOAP:Header"
        return None, [Problem(Layer.ENVELOPE, "E10", "eb:MessageHeader mangler", where)]
    base = "/SOAP:Envelope/SOAP:Header/eb:MessageHeader"
    problems: list[Problem] = []
    anywhere = root.findall(".//eb:MessageHeader", NS)
    if len(anywhere) > 1:
        # a second header (e.g. one for the next MSH, which the signature's XPath filter
        # leaves out) is a wrapping attack: which one would we believe? Neither; the
        # refusal is addressed from the one without an actor.
        text = f"meldingen har {len(anywhere)} eb:MessageHeader; forventet nøyaktig én"
        problems.append(Problem(Layer.ENVELOPE, "E10", text, base))
    plain = [h for h in headers if h.get(f"{{{SOAP}}}actor") is None]
    mh = plain[0] if plain else headers[0]
    if mh.get(f"{{{SOAP}}}actor") is not None:
        text = (
            "eb:MessageHeader har SOAP:actor; headeren er til mottakeren selv og må dekkes "
            "av signaturen"
        )
        problems.append(Problem(Layer.ENVELOPE, "E10", text, f"{base}/@SOAP:actor"))
    from_party, p1 = _party(mh, "From")
    to_party, p2 = _party(mh, "To")
    problems += p1 + p2
    required = {
        "cpa_id": "eb:CPAId",
        "conversation_id": "eb:ConversationId",
        "service": "eb:Service",
        "action": "eb:Action",
        "message_id": "eb:MessageData/eb:MessageId",
        "timestamp": "eb:MessageData/eb:Timestamp",
    }
    values: dict[str, str] = {}
    for key, path in required.items():
        value = _text(mh, path)
        if not value:
            problems.append(Problem(Layer.ENVELOPE, "E10", f"{path} mangler", f"{base}/{path}"))
        values[key] = mask(value) if value else ""  # never echo a fødselsnummer
    # enough to address an answer: who, to whom, under which agreement, about what
    addressable = ("cpa_id", "conversation_id", "message_id")
    if from_party is None or to_party is None or not all(values[k] for k in addressable):
        return None, problems
    service_el = mh.find("eb:Service", NS)
    ack = root.find("SOAP:Header/eb:AckRequested", NS)
    manifest = tuple(
        ref.get(f"{{{XLINK}}}href", "")
        for ref in root.findall("SOAP:Body/eb:Manifest/eb:Reference", NS)
    )
    header = EbxmlHeader(
        from_party=from_party,
        to_party=to_party,
        service_type=service_el.get(f"{{{EB}}}type"),
        ref_to_message_id=mask_optional(_text(mh, "eb:MessageData/eb:RefToMessageId")),
        ack_requested=ack is not None,
        ack_signed=ack is not None and ack.get(f"{{{EB}}}signed") == "true",
        duplicate_elimination=mh.find("eb:DuplicateElimination", NS) is not None,
        manifest=manifest,
        **values,
    )
    return header, problems


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True, slots=True)
class Route:
    """Addressing of an outbound message: who, under which agreement, about what."""

    from_party: PartyRef
    to_party: PartyRef
    cpa_id: str
    conversation_id: str
    service: str
    action: str
    message_id: str
    timestamp: str
    ref_to_message_id: str | None = None
    service_type: str | None = "string"


def reply_route(
    inbound: EbxmlHeader,
    us: PartyRef,
    *,
    action: str,
    message_id: str,
    timestamp: str,
    service: str | None = None,
    service_type: str | None = "string",
) -> Route:
    """Back to the sender: from `us` (never whatever the inbound To said), same
    agreement and conversation, referring to the inbound id."""
    return Route(
        from_party=us,
        to_party=inbound.from_party,
        cpa_id=inbound.cpa_id,
        conversation_id=inbound.conversation_id,
        service=service or inbound.service,
        service_type=service_type,
        action=action,
        message_id=message_id,
        timestamp=timestamp,
        ref_to_message_id=inbound.message_id,
    )


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def _add(parent: etree._Element, name: str, text: str | None = None, **attrs: str):
    el = etree.SubElement(parent, _q(EB, name), {_q(EB, k): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def _party_el(parent: etree._Element, name: str, party: PartyRef) -> None:
    el = _add(parent, name)
    _add(el, "PartyId", party.party_id, **({"type": party.party_type} if party.party_type else {}))
    if party.role:
        _add(el, "Role", party.role)


def envelope(
    route: Route,
    *,
    manifest: tuple[str, ...] = (),
    ack_requested: bool = False,
    body_extra: tuple[etree._Element, ...] = (),
    header_extra: tuple[etree._Element, ...] = (),
) -> etree._Element:
    """A SOAP envelope with eb:MessageHeader (+ AckRequested, Manifest)."""
    env = etree.Element(_q(SOAP, "Envelope"), nsmap={"SOAP": SOAP, "eb": EB, "xlink": XLINK})
    header = etree.SubElement(env, _q(SOAP, "Header"))
    mh = _add(header, "MessageHeader", version="2.0")
    mh.set(_q(SOAP, "mustUnderstand"), "1")
    _party_el(mh, "From", route.from_party)
    _party_el(mh, "To", route.to_party)
    _add(mh, "CPAId", route.cpa_id)
    _add(mh, "ConversationId", route.conversation_id)
    _add(
        mh, "Service", route.service, **({"type": route.service_type} if route.service_type else {})
    )
    _add(mh, "Action", route.action)
    data = _add(mh, "MessageData")
    _add(data, "MessageId", route.message_id)
    _add(data, "Timestamp", route.timestamp)
    if route.ref_to_message_id:
        _add(data, "RefToMessageId", route.ref_to_message_id)
    for el in header_extra:
        header.append(el)
    if ack_requested:
        ack = _add(header, "AckRequested", version="2.0", signed="false")
        ack.set(_q(SOAP, "mustUnderstand"), "1")
        ack.set(_q(SOAP, "actor"), TO_PARTY_MSH)
    body = etree.SubElement(env, _q(SOAP, "Body"))
    if manifest:
        man = _add(body, "Manifest", version="2.0")
        for cid in manifest:
            ref = _add(man, "Reference")
            ref.set(_q(XLINK, "href"), f"cid:{cid}")
            ref.set(_q(XLINK, "type"), "simple")
    for el in body_extra:
        body.append(el)
    return env


def acknowledgment(
    inbound: EbxmlHeader, us: PartyRef, *, message_id: str, timestamp: str
) -> etree._Element:
    """The ebMS reliable-messaging Acknowledgment signal for `inbound`."""
    route = reply_route(
        inbound,
        us,
        action="Acknowledgment",
        message_id=message_id,
        timestamp=timestamp,
        service=EBMS_SERVICE,
        service_type=None,
    )
    ack = etree.Element(_q(EB, "Acknowledgment"), nsmap={"eb": EB})
    ack.set(_q(EB, "version"), "2.0")
    ack.set(_q(SOAP, "mustUnderstand"), "1")
    ack.set(_q(SOAP, "actor"), TO_PARTY_MSH)
    _add(ack, "Timestamp", timestamp)
    _add(ack, "RefToMessageId", inbound.message_id)
    from_el = _add(ack, "From")
    _add(from_el, "PartyId", us.party_id, type=us.party_type)
    return envelope(route, header_extra=(ack,))


@dataclass(frozen=True, slots=True)
class ErrorItem:
    """One eb:Error: an ebMS error code (ValueNotRecognized, SecurityFailure, ...)."""

    code: str
    description: str
    location: str = ""


def message_error(
    inbound: EbxmlHeader, us: PartyRef, errors: list[ErrorItem], *, message_id: str, timestamp: str
) -> etree._Element:
    """The ebMS MessageError signal: the transport layer could not accept `inbound`."""
    route = reply_route(
        inbound,
        us,
        action="MessageError",
        message_id=message_id,
        timestamp=timestamp,
        service=EBMS_SERVICE,
        service_type=None,
    )
    error_list = etree.Element(_q(EB, "ErrorList"), nsmap={"eb": EB})
    error_list.set(_q(EB, "version"), "2.0")
    error_list.set(_q(SOAP, "mustUnderstand"), "1")
    error_list.set(_q(EB, "highestSeverity"), "Error")
    for i, item in enumerate(errors, start=1):
        err = _add(
            error_list,
            "Error",
            errorCode=item.code,
            severity="Error",
            codeContext="urn:oasis:names:tc:ebxml-msg:service:errors",
        )
        err.set(_q(EB, "id"), f"error-{i}")
        if item.location:
            err.set(_q(EB, "location"), item.location)
        desc = _add(err, "Description", item.description)
        desc.set("{http://www.w3.org/XML/1998/namespace}lang", "no")
    return envelope(route, header_extra=(error_list,))


def to_bytes(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
