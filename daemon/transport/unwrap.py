"""Unwrapping, in two stages with the agreement check between them:
`open_envelope` (MIME → SOAP envelope → ebMS header) and `extract_payload`
(manifest → payload bytes). A sender we have no agreement with is refused before
its payload is even looked at.

The payload is found through `eb:Manifest` (`xlink:href="cid:..."`), never by
position. Compressed payloads are inflated with a hard size limit (gzip bombs).
Encrypted payloads (CMS enveloped-data) are opened with our key (`daemon.transport.trust.decrypt`).
"""

from __future__ import annotations

import hashlib
import zlib

from daemon.domain import Layer, Problem
from daemon.records import Context, Work
from daemon.transport import ebms, mime
from daemon.transport.trust import KeyPair, decrypt
from daemon.transport.xmlsafe import parse_untrusted

GZIP_TYPES = {"application/gzip", "application/x-gzip"}
CMS_TYPES = {"application/pkcs7-mime", "application/x-pkcs7-mime"}
XML_TYPES = {"text/xml", "application/xml"}
PAYLOAD_TYPES = XML_TYPES | GZIP_TYPES | CMS_TYPES | {"application/octet-stream"}
PEEK_BYTES = 1024 * 1024  # where the SOAP header of a broken message is looked for


def open_envelope(work: Work, ctx: Context) -> Work:
    """MIME → SOAP envelope → ebXML header (who sent it, to whom, under which CPA)."""
    multipart, problem = mime.parse(work.raw)
    if problem:
        # a broken structure (too many parts, a repeated Content-ID, cut short): the
        # sender is still told when the SOAP header in the first part can be read, as
        # for a file over the size limit; the header is used only to address the refusal
        header = peek_header(work.raw[:PEEK_BYTES]) if problem.code == "T01" else None
        return work.with_(header=header).failed(problem)
    nodes = ctx.settings.intake.max_xml_nodes
    parsed = parse_untrusted(
        multipart.start.data, Layer.ENVELOPE, max_nodes=nodes, max_attributes=2 * nodes
    )
    if parsed.problem:
        return work.with_(multipart=multipart).failed(parsed.problem)
    header, problems = ebms.read_header(parsed.root)
    work = work.with_(multipart=multipart, soap=parsed.root, header=header)
    if header is not None and header.manifest and header.manifest[0].startswith("cid:"):
        part = multipart.by_cid(header.manifest[0][4:])
        if part is not None:
            work = work.with_(payload_part_hash=hashlib.sha256(part.data).hexdigest())
    return work.failed(*problems) if problems else work


def extract_payload(work: Work, ctx: Context) -> Work:
    """The part eb:Manifest points at, decrypted and inflated."""
    limit = ctx.settings.intake.payload_ceiling
    must_encrypt = work.partner is not None and work.partner.encrypts_to_us
    payload, problem = payload_of(
        work.multipart, work.header.manifest, limit, keys=ctx.keys, must_encrypt=must_encrypt
    )
    return work.failed(problem) if problem else work.with_(payload=payload)


def peek_header(prefix: bytes):
    """The ebXML header from the first bytes of a file too large to read whole.

    Used only to address the refusal; returns None when the header is not there.
    """
    data = mime.first_part(prefix)
    if data is None:
        return None
    parsed = parse_untrusted(data, Layer.ENVELOPE)
    if parsed.problem:
        return None
    header, _problems = ebms.read_header(parsed.root)
    return header


def payload_of(
    multipart: mime.Multipart,
    manifest: tuple[str, ...],
    limit: int,
    *,
    keys: KeyPair | None = None,
    must_encrypt: bool = False,
) -> tuple[bytes | None, Problem | None]:
    where = "/SOAP:Envelope/SOAP:Body/eb:Manifest"
    if not manifest:
        return None, Problem(
            Layer.ENVELOPE, "E10", "eb:Manifest med en eb:Reference mangler", where
        )
    if len(manifest) != 1:
        text = f"forventet én nyttelast i eb:Manifest, fant {len(manifest)}"
        return None, Problem(Layer.ENVELOPE, "T10", text, where)
    href = manifest[0]
    if not href.startswith("cid:"):
        text = f"nyttelasten må refereres med cid:, fant {href!r}"
        return None, Problem(Layer.ENVELOPE, "T10", text, f"{where}/eb:Reference/@xlink:href")
    part = multipart.by_cid(href[4:])
    if part is None:
        text = f"MIME-delen {href} som eb:Manifest viser til finnes ikke"
        return None, Problem(Layer.MIME, "E10", text, f"{where}/eb:Reference/@xlink:href")
    data, ctype = part.data, part.content_type
    if ctype not in PAYLOAD_TYPES:
        text = f"nyttelasten har en innholdstype vi ikke leser: {ctype}"
        return None, Problem(Layer.MIME, "T10", text, f"{where}/eb:Reference")
    if ctype in CMS_TYPES:
        data, problem = decrypt(data, keys)
        if problem:
            return None, problem
        ctype = "application/octet-stream"
    elif must_encrypt:
        text = f"avtalen krever kryptert nyttelast (CMS), fant {ctype}"
        return None, Problem(Layer.AGREEMENT, "S99", text, f"{where}/eb:Reference")
    if ctype in GZIP_TYPES or data[:2] == b"\x1f\x8b":
        return inflate(data, limit)
    if len(data) > limit:
        return None, _too_large(limit)
    return data, None


def _too_large(limit: int) -> Problem:
    return Problem(Layer.MIME, "T99", f"nyttelasten er større enn grensen på {limit} byte")


def inflate(data: bytes, limit: int) -> tuple[bytes | None, Problem | None]:
    """gunzip with a ceiling on the inflated size."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        return None, Problem(Layer.MIME, "T01", f"ødelagt gzip-komprimering: {exc}")
    if len(out) > limit or inflater.unconsumed_tail:
        return None, _too_large(limit)
    if not inflater.eof:
        return None, Problem(Layer.MIME, "T01", "gzip-strømmen er avkortet")
    return out, None
