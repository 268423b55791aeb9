"""MIME multipart/related: the transport packaging of an ebMS 2.0 message.

Reading uses the standard library's email parser (it copes with folded headers,
SMTP trace headers before the MIME entity, and every transfer encoding). Writing is
done by hand so that the same answer is always the same bytes (deterministic
boundary, fixed header order), which replay and crash recovery depend on.
"""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
from dataclasses import dataclass
from email.message import Message

from daemon.domain import Layer, Problem


@dataclass(frozen=True, slots=True)
class Part:
    content_id: str | None  # without angle brackets
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Multipart:
    start: Part  # the SOAP envelope part
    attachments: tuple[Part, ...]

    def by_cid(self, cid: str) -> Part | None:
        for part in self.attachments:
            if part.content_id == cid:
                return part
        return None


def _strip_brackets(value: object) -> str | None:
    if value is None:
        return None
    value = str(value).strip()  # a header with 8-bit bytes comes back as a Header object
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    return value


def parse(data: bytes) -> tuple[Multipart | None, Problem | None]:
    """Split a multipart/related message into its start part and attachments."""
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    if msg.get_content_type() != "multipart/related":
        found = msg.get_content_type() if msg.get("Content-Type") else "ingen MIME-struktur"
        return None, Problem(
            Layer.MIME,
            "T10",
            f"forventet en ebXML-melding som MIME multipart/related, fant {found}",
            "Content-Type",
        )
    defects = [*msg.defects]
    if msg.is_multipart():
        defects += [d for p in msg.get_payload() for d in p.defects]
    if defects or not msg.is_multipart():
        names = ", ".join(type(d).__name__ for d in defects) or "ingen deler funnet"
        return None, Problem(Layer.MIME, "T01", f"ødelagt MIME-struktur: {names}", "/")
    parts = [_part(p) for p in msg.get_payload()]
    if not parts:
        return None, Problem(Layer.MIME, "T01", "MIME-meldingen har ingen deler", "/")
    cids = [p.content_id for p in parts if p.content_id]
    repeated = sorted({c for c in cids if cids.count(c) > 1})
    if repeated:
        text = f"Content-ID brukt av flere deler: {', '.join(repeated)}"
        return None, Problem(Layer.MIME, "T01", text, "Content-ID")
    start_cid = _strip_brackets(msg.get_param("start"))
    start = next((p for p in parts if start_cid and p.content_id == start_cid), None)
    if start_cid and start is None:
        text = f"start-delen <{start_cid}> finnes ikke i meldingen"
        return None, Problem(Layer.MIME, "T01", text, "Content-Type;start")
    start = start or parts[0]
    return Multipart(start, tuple(p for p in parts if p is not start)), None


def _part(p: Message) -> Part:
    data = p.get_payload(decode=True)
    if data is None:  # a nested multipart: keep its raw text, it is not a payload we read
        data = p.as_bytes()
    return Part(_strip_brackets(p.get("Content-ID")), p.get_content_type(), data)


# --------------------------------------------------------------------------- writing

CRLF = b"\r\n"


def build(parts: list[Part], *, extra_headers: dict[str, str] | None = None) -> bytes:
    """A multipart/related message; the first part is the SOAP envelope (start).

    XML parts are sent as `binary` (readable in the outbox; lxml writes long lines,
    which `8bit` forbids), everything else base64. The boundary is derived from the
    content, so equal input gives equal bytes.
    """
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.data)
    boundary = f"----=_kravmottak_{digest.hexdigest()[:32]}"
    start = parts[0]
    head = [
        "MIME-Version: 1.0",
        f'Content-Type: multipart/related; type="text/xml"; boundary="{boundary}"; '
        f'start="<{start.content_id}>"',
        'SOAPAction: "ebXML"',
    ]
    head += [f"{k}: {v}" for k, v in (extra_headers or {}).items()]
    out = [CRLF.join(h.encode("ascii") for h in head), CRLF, CRLF]
    for part in parts:
        out += [b"--", boundary.encode("ascii"), CRLF]
        is_xml = part.content_type in ("text/xml", "application/xml")
        ctype = f"{part.content_type}; charset=UTF-8" if is_xml else part.content_type
        headers = [f"Content-Type: {ctype}", f"Content-ID: <{part.content_id}>"]
        if is_xml:
            headers.append("Content-Transfer-Encoding: binary")
            body = part.data
        else:
            headers.append("Content-Transfer-Encoding: base64")
            body = base64.encodebytes(part.data).replace(b"\n", CRLF)
        out += [CRLF.join(h.encode("ascii") for h in headers), CRLF, CRLF, body]
        if not body.endswith(CRLF):
            out.append(CRLF)
    out += [b"--", boundary.encode("ascii"), b"--", CRLF]
    return b"".join(out)
