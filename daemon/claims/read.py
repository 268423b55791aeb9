"""Read: the validated NPR-behandlerkravmelding → frozen domain objects.

Bills (`Krav/EnkeltRegning`) point at episodes by `episodeID`; episodes sit under
`Pasient`. The reader joins them so each Bill carries its patient and its lines:
`Kontakt/Takst` (NLK and other takst codes) and `Tjeneste/Tiltak/Prosedyre/Kode`
(procedure codes; `Kodeverk="R"` is radiology with a slash-separated `kodeVerdi`).
Amounts become `Decimal` exactly as written.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from lxml import etree

from daemon.claims.validate import BKM_183, CONTENT, MH, NPR_BKM
from daemon.domain import (
    Bill,
    Claim,
    Episode,
    Layer,
    Line,
    Patient,
    Problem,
    Unit,
    pseudonym,
)
from daemon.masking import mask
from daemon.records import Context, Work

N = f"{{{NPR_BKM}}}"
CONSULTATION_TYPES = {"1", "2", "3"}  # kontaktType (8432): utredning, behandling, kontroll


def read(work: Work, ctx: Context) -> Work:
    melding = work.msghead.find("mh:Document/mh:RefDoc/mh:Content/*", MH)
    if etree.QName(melding).namespace == BKM_183:
        text = (
            "Behandlerkrav 1.8.3 (privatpraktiserende) er gyldig, men behandles ikke av "
            "denne mottakeren; send NPR-behandlerkravmelding 0.78"
        )
        return work.failed(Problem(Layer.PAYLOAD, "T10", text, "/MsgHead/Document/RefDoc/Content"))
    shared = _episode_ids_shared_by_patients(melding)
    if shared:
        text = (
            f"episodeID {', '.join(shared)} finnes under flere pasienter; regninger som viser "
            "til dem kan ikke knyttes til én pasient"
        )
        return work.failed(Problem(Layer.PAYLOAD, "T99", text, f"{CONTENT}/Melding/Institusjon"))
    try:
        claim = read_claim(melding, ctx.patient_secret, egenandel_takster(ctx))
    except (InvalidOperation, ValueError) as exc:  # the schema should have caught it
        return work.failed(Problem(Layer.PAYLOAD, "T02", f"uleselig verdi: {exc}"))
    # the XML is read: no later stage needs the trees or the payload bytes. Letting go
    # of them here frees the lxml tree (about 5 kB per bill, the largest share of a big
    # claim's memory) before the rules, the answer and the ledger need theirs (#17.4)
    return work.with_(claim=claim, msghead=None, payload=None, soap=None, multipart=None)


def _episode_ids_shared_by_patients(melding: etree._Element) -> list[str]:
    """The schema keys episodeID per Pasient only; bills point at it across patients."""
    owners: dict[str, int] = {}
    shared = set()
    for i, pasient in enumerate(melding.iterfind(f"{N}Institusjon/{N}Pasient")):
        for ep in pasient.iterfind(f"{N}Episode"):
            eid = ep.get("episodeID", "")
            if owners.setdefault(eid, i) != i:
                shared.add(eid)
    return sorted(shared)


def _money(value: str | None) -> Decimal:
    return Decimal(value) if value else Decimal("0")


def egenandel_takster(ctx: Context) -> frozenset[str]:
    """The takst codes that carry a bill's egenandel (the egenandel register), for both
    the whole-message reader and the streamed one."""
    return frozenset(ctx.tariffs.egenandel.takster) if ctx.tariffs is not None else frozenset()


def claim_header(melding, institution) -> dict[str, str]:
    """The claim's own fields from `Melding` and `Institusjon`: the same for the
    whole-message reader and the streamed one (daemon.rules.chunked)."""
    return {
        "version": melding.get("versjon", ""),
        "period_from": melding.get("fraDatoPeriode", ""),
        "period_to": melding.get("tilDatoPeriode", ""),
        "extracted_on": melding.get("uttakDato", ""),
        "sender_reference": melding.get("meldRefNr", ""),
        "institution_id": institution.get("institusjonID", ""),
    }


def read_claim(
    melding: etree._Element,
    patient_secret: bytes | None = None,
    egenandel_takster: frozenset[str] = frozenset(),
) -> Claim:
    """`egenandel_takster`: the takst codes that carry a bill's egenandel (the egenandel
    register's `[takster]`): they become lines of kind `egenandel`, judged by EG-01..12
    and not by the lab rules."""
    institution = melding.find(f"{N}Institusjon")
    episodes = {
        ep.episode_id: ep
        for pasient in institution.iterfind(f"{N}Pasient")
        for ep in _episodes(pasient, patient_secret, egenandel_takster)
    }
    units = tuple(_unit(enhet, episodes) for enhet in institution.iterfind(f"{N}Enhet"))
    return Claim(**claim_header(melding, institution), units=units)


def _unit(enhet: etree._Element, episodes: dict[str, Episode]) -> Unit:
    krav = enhet.find(f"{N}Krav")
    bills = tuple(_bill(r, episodes) for r in krav.iterfind(f"{N}EnkeltRegning"))
    return Unit(
        enhet_id=enhet.get("enhetID", ""),
        enhet_kode=enhet.get("enhetKode", ""),
        resh_id=enhet.get("reshID", ""),
        name=enhet.get("enhetLokal"),
        claimed_count=int(krav.get("antallRegninger", "0")),
        claimed_sum=_money(krav.get("sumKravBelop")),
        bills=bills,
    )


def _bill(r: etree._Element, episodes: dict[str, Episode]) -> Bill:
    episode_id = r.get("episodeID")
    return bill_of(r.attrib, r.sourceline, episodes.get(episode_id) if episode_id else None)


def bill_of(attrs, source_line: int | None, episode: Episode | None) -> Bill:
    """A Bill from an `EnkeltRegning`'s attributes (any mapping), joined to its episode:
    the one way both the whole-message reader and the streamed one make bills."""
    uuid = attrs.get("uuid")
    return Bill(
        regning_nr=mask(attrs.get("regningNr", "")),  # echoed in AppRec and vedtak
        uuid=uuid.strip().upper() if uuid else None,  # GUIDs: any case
        transaction_type=attrs.get("typeTransaksjon", ""),
        claimed_at=attrs.get("TransDatoTid", ""),
        episode_id=attrs.get("episodeID"),
        sum_amount=_money(attrs.get("sumBelop")),
        claim_basis=attrs.get("kravGrunnlag", ""),
        egenandel_code=attrs.get("kodeEgenandel"),
        episode=episode,
        source_line=source_line,
    )


def _patient(pasient: etree._Element, secret: bytes | None) -> Patient:
    ex = pasient.find(f"{N}PasientEx")
    if ex is None:
        return Patient(None, None, None, None)
    ident = ex.find(f"{N}Ident")
    alt = ex.find(f"{N}AltIdent")
    number = ident.get("id") if ident is not None else None
    return Patient(
        ident=number,
        key=pseudonym(secret, number) if number and secret else None,
        ident_type=ident.get("typeId") if ident is not None else None,
        birth_date=alt.get("fodselsDato") if alt is not None else None,
        sex=ex.get("kjonn"),
        family_name=ex.get("etternavn"),
        given_name=ex.get("fornavn"),
    )


def _episodes(
    pasient: etree._Element, secret: bytes | None, egenandel_takster: frozenset[str] = frozenset()
) -> list[Episode]:
    patient = _patient(pasient, secret)
    out = []
    for ep in pasient.iterfind(f"{N}Episode"):
        lines: list[Line] = []
        contact_types = []
        personnel = []
        consultation = False
        for kontakt in ep.iterfind(f"{N}Kontakt"):
            contact_types.append(kontakt.get("kontaktType", ""))
            personnel.extend(h.get("polUtforende", "") for h in kontakt.iterfind(f"{N}Helseperson"))
            if kontakt.get("kontaktType") in CONSULTATION_TYPES and (
                kontakt.find(f"{N}Helseperson") is not None
            ):
                consultation = True
            for takst in kontakt.iterfind(f"{N}Takst"):
                lines.append(
                    Line(
                        kind="egenandel" if takst.get("kode") in egenandel_takster else "takst",
                        raw_code=takst.get("kode", ""),
                        code_system=None,
                        count=int(takst.get("antall") or 1),
                        amount=_money(takst.get("takstBelop")),
                        source_line=takst.sourceline,
                    )
                )
        for kode in ep.iterfind(f"{N}Tjeneste/{N}Tiltak/{N}Prosedyre/{N}Kode"):
            lines.append(
                Line(
                    kind="prosedyre",
                    raw_code=kode.get("kodeVerdi", ""),
                    code_system=kode.get("Kodeverk"),
                    count=1,
                    amount=_money(kode.get("kodeBelop")),
                    code_version=kode.get("kodeVersjon"),
                    source_line=kode.sourceline,
                )
            )
        diagnoses = tuple(k.get("kodeVerdi", "") for k in ep.iterfind(f"{N}Tilstand/{N}Kode"))
        out.append(
            Episode(
                episode_id=ep.get("episodeID", ""),
                debitor=ep.get("debitor", ""),
                municipality=ep.get("komNrHjem"),
                patient=patient,
                contact_types=tuple(contact_types),
                diagnoses=diagnoses,
                lines=tuple(lines),
                consultation=consultation,
                personnel=tuple(personnel),
            )
        )
    return out
