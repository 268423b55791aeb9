"""Signature and identity stages: the ebXML header signature, the MsgHead signature
and sender, and the message's own dates.

Certificates are checked against the partner's registered certificates, or, with a
CA bundle, one issued to that partner (its subject names the partner's organisation
number or HER-id). Validity is checked at the time of receipt (`ctx.now`, give or
take `[trust] clock_skew_seconds`), never at a time the sender wrote into the
message: a backdated Timestamp or GenDate cannot revive an expired certificate.
Replay sets the clock to the message's recorded time, so it replays the same way.

A partner whose agreement requires signatures is refused when a signature is
missing; a signature that is present is always checked, required or not.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from daemon.domain import OSLO, Layer, Problem
from daemon.records import Context, Work
from daemon.transport.ebms import read_header
from daemon.transport.trust import (
    Trusted,
    TrustError,
    parse_time,
    signed_view,
    verify_envelope,
    verify_msghead,
)

_HEADER = "/SOAP:Envelope/SOAP:Header/eb:MessageHeader"
_TIMESTAMP = f"{_HEADER}/eb:MessageData/eb:Timestamp"
_GEN_DATE = "/MsgHead/MsgInfo/GenDate"
_SENDER = "/MsgHead/MsgInfo/Sender/Organisation"


def _trusted(work: Work, ctx: Context) -> Trusted:
    ca_file = ctx.settings.ca_file
    partner = work.partner
    return Trusted(
        partner.certs if partner else (),
        str(ca_file) if ca_file else None,
        orgnr=partner.orgnr if partner else None,
        her_id=partner.her_id if partner else None,
        skew=timedelta(seconds=ctx.settings.trust.clock_skew_seconds),
    )


def _required(work: Work) -> bool:
    return work.partner is not None and work.partner.require_signature


def _out_of_window(
    value: str | None, name: str, ctx: Context, layer: Layer, where: str
) -> Problem | None:
    """A Timestamp or GenDate that is unreadable, later than receipt (beyond the clock
    skew) or older than the configured age."""
    if not value:
        return None  # a missing one is the schema's (or read_header's) to report
    moment = parse_time(value, None)
    if moment is None:
        return Problem(layer, "T02", f"{name} {value!r} er ikke et tidspunkt", where)
    window = ctx.settings.trust
    skew = timedelta(seconds=window.clock_skew_seconds)
    oldest = ctx.now - timedelta(days=window.max_message_age_days)
    if moment > ctx.now + skew:
        text = (
            f"{name} {moment:%Y-%m-%dT%H:%M:%SZ} er etter mottakstidspunktet "
            f"{ctx.now:%Y-%m-%dT%H:%M:%SZ} (tillatt klokkeavvik {window.clock_skew_seconds:g} s)"
        )
        return Problem(layer, "E10", text, where)
    if moment < oldest:
        text = (
            f"{name} {moment:%Y-%m-%dT%H:%M:%SZ} er mer enn {window.max_message_age_days:g} "
            f"dager før mottakstidspunktet {ctx.now:%Y-%m-%dT%H:%M:%SZ}"
        )
        return Problem(layer, "E10", text, where)
    return None


def verify_envelope_signature(work: Work, ctx: Context) -> Work:
    """The header signature at receipt time; then the header as read must be the one
    the signature covers."""
    attachments = {p.content_id: p.data for p in work.multipart.attachments if p.content_id}
    try:
        signed = verify_envelope(
            work.soap,
            attachments,
            work.header.manifest,
            _trusted(work, ctx),
            ctx.now,
            required=_required(work),
        )
    except TrustError as exc:
        return work.failed(exc.problem)
    if signed:
        covered, _problems = read_header(signed_view(work.soap))
        if covered != work.header:
            text = "eb:MessageHeader slik den leses er ikke den signaturen dekker"
            return work.failed(Problem(Layer.ENVELOPE, "S01", text, _HEADER))
    return work


def verify_payload_signature(work: Work, ctx: Context) -> Work:
    """The MsgHead signature at receipt time; the ebXML Timestamp and the GenDate near
    the time of receipt; the MsgHead Sender the same party as the ebXML From."""
    try:
        verify_msghead(work.msghead, _trusted(work, ctx), ctx.now, required=_required(work))
    except TrustError as exc:
        return work.failed(exc.problem)
    info = work.msghead_info
    for value, name, layer, where in (
        (work.header.timestamp, "eb:Timestamp", Layer.ENVELOPE, _TIMESTAMP),
        (info.gen_date if info else None, "GenDate", Layer.MSGHEAD, _GEN_DATE),
    ):
        late = _out_of_window(value, name, ctx, layer, where)
        if late:
            return work.failed(late)
    other = _other_sender(work, ctx)
    return work.failed(other) if other else work


def _other_sender(work: Work, ctx: Context) -> Problem | None:
    """The MsgHead Sender must be the party the ebXML From names: its HER-id, or the
    organisation number registered for that partner. An organisation number other
    than the partner's must be an institution the partner is registered to send for
    (a hub sending for several hospitals). A message signed by A that names B as its
    sender is refused."""
    info, partner = work.msghead_info, work.partner
    if info is None or partner is None:
        return None
    hers = {value for kind, value in info.sender_ids if kind == "HER"}
    orgnrs = {value for kind, value in info.sender_ids if kind == "ENH"}

    def sends_for(orgnr: str) -> bool:
        institution = ctx.registry.institution(orgnr)
        return institution is not None and institution.may_be_claimed_by(partner)

    # the partner itself, or an institution it is registered to send for (a hub)
    ours = partner.her_id in hers or any(o == partner.orgnr or sends_for(o) for o in orgnrs)
    others = [o for o in orgnrs if o != partner.orgnr and not sends_for(o)]
    if ours and not others:
        return None
    named = ", ".join(f"{kind} {value}" for kind, value in info.sender_ids) or "ingen id"
    expected = f"HER {partner.her_id}" + (f" / ENH {partner.orgnr}" if partner.orgnr else "")
    text = f"MsgHead-avsender ({named}) er ikke samme part som ebXML-avsenderen ({expected})"
    return Problem(Layer.AGREEMENT, "E10", text, _SENDER)


def check_dates(work: Work, ctx: Context) -> Work:
    """A message dated (Timestamp or GenDate) before every service it claims for and
    before the period it claims for cannot have been written then: it is backdated."""
    claim = work.claim
    if claim is None:
        return work
    days = [b.service_date for b in claim.bills if b.service_date is not None]
    with contextlib.suppress(ValueError):
        days.append(datetime.fromisoformat(claim.period_from).date())
    if not days:
        return work
    first = min(days)
    skew = timedelta(seconds=ctx.settings.trust.clock_skew_seconds)
    info = work.msghead_info
    stamps = (
        ("eb:Timestamp", work.header.timestamp, Layer.ENVELOPE, _TIMESTAMP),
        ("GenDate", info.gen_date if info else None, Layer.MSGHEAD, _GEN_DATE),
    )
    for name, value, layer, where in stamps:
        moment = parse_time(value, None) if value else None
        if moment is not None and (moment + skew).astimezone(OSLO).date() < first:
            text = f"{name} {value} er før tjenestene meldingen krever refusjon for ({first})"
            return work.failed(Problem(layer, "E10", text, where))
    return work
