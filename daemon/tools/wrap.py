"""Wrap a bare MsgHead document in an inbound ebMS 2.0 MIME message.

What a hospital's ebXML handler does before dropping a file in our inbox. Used by
tests, the benchmark generator and (later) replay of bare recorded payloads.
"""

from __future__ import annotations

import gzip as gzip_module
import re
import uuid
from datetime import UTC, datetime

from cryptography import x509

from daemon.domain import PartyRef
from daemon.transport import ebms, mime, trust
from daemon.transport.trust import KeyPair

_GEN_DATE = re.compile(rb"<(?:\w+:)?GenDate>\s*([^<\s]+)\s*</(?:\w+:)?GenDate>")


def sent_at(msghead: bytes) -> datetime:
    """When a handler would send `msghead`: at its GenDate when that is readable (the
    application hands the message over as it makes it), else now."""
    found = _GEN_DATE.search(msghead[:65536])
    if found:
        try:
            moment = datetime.fromisoformat(found.group(1).decode().replace("Z", "+00:00"))
        except (ValueError, UnicodeDecodeError):
            return datetime.now(UTC)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return datetime.now(UTC)


def wrap(
    msghead: bytes,
    *,
    from_her: str,
    cpa_id: str,
    to_her: str = "79768",
    message_id: str | None = None,
    conversation_id: str | None = None,
    timestamp: datetime | None = None,
    ack_requested: bool = True,
    gzip: bool = False,
    service: str = "BehandlerKrav",
    action: str = "OppgjorsMelding",
    signer: KeyPair | None = None,
    encrypt_to: x509.Certificate | None = None,
) -> bytes:
    """An inbound ebMS message around `msghead`, as the partner's handler makes it:
    optionally gzipped, then CMS-encrypted to our certificate (`encrypt_to`), and the
    envelope signed with the partner's key (`signer`) over itself and the payload.
    The Timestamp is `timestamp`, else the MsgHead's GenDate, else now."""
    message_id = message_id or str(uuid.uuid4())
    stamp = (timestamp or sent_at(msghead)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    route = ebms.Route(
        from_party=PartyRef(from_her, "HER", "Behandler"),
        to_party=PartyRef(to_her, "HER", "KontrollUtbetaler"),
        cpa_id=cpa_id,
        conversation_id=conversation_id or str(uuid.uuid4()),
        service=service,
        action=action,
        message_id=message_id,
        timestamp=stamp,
    )
    cid = f"payload-{message_id}@sender"
    env = ebms.envelope(route, manifest=(cid,), ack_requested=ack_requested)
    data, ctype = msghead, "text/xml"
    if gzip:
        data, ctype = gzip_module.compress(msghead, mtime=0), "application/gzip"
    if encrypt_to is not None:
        data, ctype = trust.encrypt(data, encrypt_to), "application/pkcs7-mime"
    payload = mime.Part(cid, ctype, data)
    if signer is not None:
        env = trust.sign_envelope(env, {cid: data}, signer)
    soap = mime.Part(f"soap-{message_id}@sender", "text/xml", ebms.to_bytes(env))
    return mime.build([soap, payload])
