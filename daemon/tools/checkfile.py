"""`kravmottak validate FILE`: every problem in one file, without processing it.

Accepts a whole ebMS MIME message (as dropped in the inbox or written to the outbox)
or a bare XML document of one layer: SOAP envelope, MsgHead, or AppRec. In a MIME
message the envelope and every payload its eb:Manifest names are checked. A MsgHead
of Type ERM22/ERM23 (our vedtak and payment) is checked against the vedtak schemas.
"""

from __future__ import annotations

from pathlib import Path

from daemon.domain import Layer, Problem
from daemon.schemas import Schemas, validate
from daemon.settlement.vedtak import BODY_OF_TYPE
from daemon.transport import ebms, mime
from daemon.transport.unwrap import payload_of
from daemon.transport.xmlsafe import parse_untrusted

APPREC_TAG = "{http://www.kith.no/xmlstds/apprec/2004-11-21}AppRec"
MSGHEAD_TAG = "{http://www.kith.no/xmlstds/msghead/2006-05-24}MsgHead"
ENVELOPE_TAG = "{http://schemas.xmlsoap.org/soap/envelope/}Envelope"


def check_file(path: Path, settings) -> list[Problem]:
    raw = path.read_bytes()
    limit = settings.intake.max_file_bytes
    if len(raw) > limit:
        return [Problem(Layer.FILE, "T99", f"filen er {len(raw)} byte, over grensen på {limit}")]
    schemas = Schemas.load()
    if raw.lstrip()[:1] == b"<":
        return _check_xml(raw, schemas)
    multipart, problem = mime.parse(raw)
    if problem:
        return [problem]
    parsed = parse_untrusted(multipart.start.data, Layer.ENVELOPE)
    if parsed.problem:
        return [parsed.problem]
    problems = validate(schemas.envelope, parsed.root, Layer.ENVELOPE)
    header, header_problems = ebms.read_header(parsed.root)
    problems += header_problems
    for href in header.manifest if header else ():
        data, problem = payload_of(multipart, (href,), settings.intake.max_payload_bytes)
        problems += [problem] if problem else _check_xml(data, schemas)
    return problems


def _check_xml(raw: bytes, schemas: Schemas) -> list[Problem]:
    parsed = parse_untrusted(raw, Layer.PAYLOAD)
    if parsed.problem:
        return [parsed.problem]
    root = parsed.root
    by_root = {
        APPREC_TAG: (schemas.apprec, Layer.PAYLOAD),
        MSGHEAD_TAG: (schemas.msghead, Layer.MSGHEAD),
        ENVELOPE_TAG: (schemas.envelope, Layer.ENVELOPE),
    }
    if root.tag not in by_root:
        return [Problem(Layer.PAYLOAD, "T10", f"ukjent dokumenttype {root.tag}", "/")]
    schema, layer = by_root[root.tag]
    kind = root.find("{*}MsgInfo/{*}Type")
    if root.tag == MSGHEAD_TAG and kind is not None and kind.get("V") in BODY_OF_TYPE:
        schema = schemas.vedtak  # an utbetalingsvedtak or payment from the settlement
    return validate(schema, root, layer)
