"""Agreement: is this message one we have agreed to receive?

The ebXML header must name us as the receiving party, a partner we have an
agreement with (HER-id + CPAId) as the sender, and a Service/Action that agreement
allows. A MessageId we already accepted with other content is refused too: an id is
a promise that the content is the same.
"""

from __future__ import annotations

from daemon.domain import Layer, Problem
from daemon.records import Context, Work

_HEADER = "/SOAP:Envelope/SOAP:Header/eb:MessageHeader"


def check_agreement(work: Work, ctx: Context) -> Work:
    header = work.header
    party = ctx.settings.party
    problems = []
    for name, p in (("From", header.from_party), ("To", header.to_party)):
        if p.party_type != "HER":
            text = f"eb:{name}/eb:PartyId må ha eb:type HER, fant {p.party_type or 'ingen'}"
            problems.append(
                Problem(Layer.AGREEMENT, "E10", text, f"{_HEADER}/eb:{name}/eb:PartyId")
            )
    if header.to_party.party_id != party.her_id:
        text = (
            f"meldingen er adressert til {header.to_party.party_id}, ikke til oss ({party.her_id})"
        )
        problems.append(Problem(Layer.AGREEMENT, "E21", text, f"{_HEADER}/eb:To/eb:PartyId"))
    partner = ctx.registry.partner(header.from_party.party_id, header.cpa_id)
    if partner is None:
        text = (
            f"ingen samarbeidsavtale (CPA) {header.cpa_id!r} med avsender "
            f"HER {header.from_party.party_id}"
        )
        problems.append(Problem(Layer.AGREEMENT, "E10", text, f"{_HEADER}/eb:CPAId"))
    elif partner.broken:  # our configuration's fault: retryable (Layer.AGREEMENT)
        text = (
            f"avtalen med HER {partner.her_id} kan ikke brukes nå (sertifikatet kan ikke"
            " leses hos mottaker); send meldingen på nytt senere"
        )
        problems.append(Problem(Layer.AGREEMENT, "X99", text, f"{_HEADER}/eb:CPAId"))
    elif not partner.allows(header.service, header.action):
        text = f"avtalen tillater ikke Service/Action {header.service}/{header.action}"
        problems.append(Problem(Layer.AGREEMENT, "E10", text, f"{_HEADER}/eb:Action"))
    return work.failed(*problems) if problems else work.with_(partner=partner)


def check_history(work: Work, ctx: Context) -> Work:
    """An ebXML MessageId we accepted before. The same payload part in a new envelope
    (a retransmission: new Timestamp, new MIME boundary) gets the stored answer; other
    content under a used MessageId is refused."""
    earlier = ctx.history.accepted(work.header.message_id)
    if earlier is None or earlier[0] == work.content_hash:
        return work
    content_hash, part_hash = earlier
    if part_hash is not None and part_hash == work.payload_part_hash:
        return work.with_(retransmission_of=content_hash)
    text = (
        f"MessageId {work.header.message_id} er allerede mottatt med et annet innhold; "
        "en ny melding må ha en ny MessageId"
    )
    where = f"{_HEADER}/eb:MessageData/eb:MessageId"
    return work.failed(Problem(Layer.LEDGER, "E10", text, where))
