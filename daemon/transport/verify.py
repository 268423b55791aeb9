"""Signature stages: the ebXML header signature, then the MsgHead signature.

Both are checked against the partner's registered certificates (or the configured
CA), at the message's own timestamp, so an archived message replays the same way.
A partner whose agreement requires signatures is refused when a signature is
missing; a signature that is present is always checked, required or not.
"""

from __future__ import annotations

from daemon.records import Context, Work
from daemon.transport.trust import Trusted, TrustError, parse_time, verify_envelope, verify_msghead


def _trusted(work: Work, ctx: Context) -> Trusted:
    ca_file = ctx.settings.ca_file
    return Trusted(work.partner.certs if work.partner else (), str(ca_file) if ca_file else None)


def verify_envelope_signature(work: Work, ctx: Context) -> Work:
    at = parse_time(work.header.timestamp, ctx.now)
    attachments = {p.content_id: p.data for p in work.multipart.attachments if p.content_id}
    try:
        verify_envelope(
            work.soap,
            attachments,
            work.header.manifest,
            _trusted(work, ctx),
            at,
            required=work.partner is not None and work.partner.require_signature,
        )
    except TrustError as exc:
        return work.failed(exc.problem)
    return work


def verify_payload_signature(work: Work, ctx: Context) -> Work:
    info = work.msghead_info
    at = parse_time(info.gen_date if info else None, parse_time(work.header.timestamp, ctx.now))
    try:
        verify_msghead(
            work.msghead,
            _trusted(work, ctx),
            at,
            required=work.partner is not None and work.partner.require_signature,
        )
    except TrustError as exc:
        return work.failed(exc.problem)
    return work
