"""Common rules for every claim (RULES.md "Common rules", COM-04..09).

COM-01..03 (agreement, XSD, signatures) are the intake's technical checks; they refuse
the message before any rule runs.
"""

from __future__ import annotations

import calendar
from datetime import date
from decimal import Decimal

from daemon.domain import (
    TRANSACTION_CORRECTION,
    TRANSACTION_CREDIT,
    Bill,
    Claim,
)
from daemon.rules import radiology
from daemon.rules.base import Finding, rule
from daemon.rules.context import RuleContext

LAB_SERVICES = {"lab", "genetics"}  # a lab line needs one of these (LAB-04/05 say which)


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


@rule(
    id="COM-04",
    scope="claim",
    source="RULES.md COM-04; regelverk 000 §6 trinn 2",
    number="9040",
    text="Krav/antallRegninger eller sumKravBelop stemmer ikke med regningene",
)
def krav_totals_match_bills(claim: Claim, ctx: RuleContext) -> Finding | None:
    """antallRegninger = number of bills; sumKravBelop = Σ sumBelop of new/resent bills
    minus credits (typeTransaksjon 5); corrections (4) restate a bill and are not added.
    (This reading is the one both official NPR examples satisfy.)"""
    for unit in claim.units:
        count = len(unit.bills)
        total = Decimal("0")
        for bill in unit.bills:
            if bill.transaction_type == TRANSACTION_CREDIT:
                total -= bill.sum_amount
            elif bill.transaction_type != TRANSACTION_CORRECTION:
                total += bill.sum_amount
        if count != unit.claimed_count or total != unit.claimed_sum:
            return Finding(
                detail=(
                    f"enhet {unit.enhet_id}: antallRegninger {unit.claimed_count} mot {count}, "
                    f"sumKravBelop {_money(unit.claimed_sum)} mot {_money(total)}"
                ),
                inputs=(("count", str(count)), ("sum", _money(total))),
            )
    return None


@rule(
    id="COM-04",
    scope="bill",
    source="RULES.md COM-04; regelverk 000 §6 trinn 2",
    number="9004",
    text="Regningens sumBelop er ikke lik summen av linjene",
    credits=False,
)
def bill_sum_equals_lines(bill: Bill, ctx: RuleContext) -> Finding | None:
    """Each bill's `sumBelop` equals the sum of its lines (unit amount × antall).

    A bill whose episodeID is missing or points nowhere has no lines: its sum is 0.
    A credit needs no lines (it reverses what was paid), so it is not judged here."""
    lines_sum = sum((line.total for line in bill.lines), Decimal("0"))
    if lines_sum != bill.sum_amount:
        return Finding(
            detail=f"sumBelop {_money(bill.sum_amount)}, linjene summerer til {_money(lines_sum)}",
            inputs=(("sumBelop", _money(bill.sum_amount)), ("lines", _money(lines_sum))),
        )
    return None


def valid_person_number(number: str) -> bool:
    """Fødselsnummer / D-nummer: 11 digits and both mod-11 control digits right."""
    if len(number) != 11 or not number.isdigit():
        return False
    digits = [int(c) for c in number]
    for weights, position in (
        ((3, 7, 6, 1, 8, 9, 4, 5, 2), 9),
        ((5, 4, 3, 2, 7, 6, 5, 4, 3, 2), 10),
    ):
        control = 11 - sum(w * d for w, d in zip(weights, digits, strict=False)) % 11
        control = 0 if control == 11 else control
        if control == 10 or control != digits[position]:
            return False
    return True


@rule(
    id="COM-05",
    scope="bill",
    source="RULES.md COM-05; NPR-behandlerkravmelding 0.78 (Ident)",
    number="9005",
    text="Pasientens fødselsnummer eller D-nummer er ugyldig (kontrollsiffer)",
)
def patient_identity_is_valid(bill: Bill, ctx: RuleContext) -> Finding | None:
    """Identities of type FNR/DNR must pass mod-11; patients identified otherwise (AltIdent,
    EØS documents) are not judged here. The identity itself never enters the trace."""
    patient = bill.episode.patient if bill.episode else None
    if patient is None or patient.ident is None or patient.ident_type not in ("FNR", "DNR"):
        return None
    if not valid_person_number(patient.ident):
        return Finding(detail=f"type {patient.ident_type}", inputs=(("type", patient.ident_type),))
    return None


@rule(
    id="COM-06",
    scope="bill",
    source="RULES.md COM-06; regelverk 000 §6 trinn 1, 001 §6.2.1",
    number="9006",
    text="Dobbeltregning: regningen er allerede mottatt",
)
def not_a_duplicate(bill: Bill, ctx: RuleContext) -> Finding | None:
    """A new bill (typeTransaksjon 1-3) is a duplicate when its uuid was paid before, or
    the same patient, code set and instant (TransDatoTid) was paid before, or when an
    earlier bill in this claim has the same uuid, the same episode or the same service.
    Corrections and credits refer to earlier bills on purpose (COM-07 judges them)."""
    if not bill.is_new:
        return None
    if bill.uuid and ctx.paid_bill(bill.uuid) is not None:
        return Finding(detail=f"uuid {bill.uuid} er betalt før", inputs=(("uuid", bill.uuid),))
    patient = bill.episode.patient.key if bill.episode else None
    codes = bill.codes
    if patient and bill.lines and ctx.service_seen(patient, codes, bill.instant):
        return Finding(
            detail="samme pasient, koder og tidspunkt er betalt før",
            inputs=(("codes", codes), ("when", bill.instant)),
        )
    same_file = (
        (bill.uuid and ("uuid", bill.uuid), f"uuid {bill.uuid}"),
        (bill.episode_id and ("episode", bill.episode_id), f"episodeID {bill.episode_id}"),
        (patient and ("service", patient, codes, bill.instant), "samme pasient, koder og tid"),
    )
    for key, what in same_file:
        if key and ctx.earlier_in_claim(bill, key):
            detail = f"{what} står allerede i denne meldingen"
            return Finding(detail=detail, inputs=(("same", what),))
    return None


@rule(
    id="COM-07",
    scope="bill",
    source="RULES.md COM-07; NPR-behandlerkravmelding 0.78, beskrivelse av eksempelfil",
    number="9007",
    text="Korreksjon/kreditering må vise til en tidligere betalt regning (uuid) i en annen fil",
)
def correction_refers_to_earlier_bill(bill: Bill, ctx: RuleContext) -> Finding | None:
    """A correction (4) or credit (5) names a bill paid in an earlier file by its uuid,
    that bill still has money on it (not credited already), and it is the only
    correction/credit of that uuid in this file."""
    if bill.is_new:
        return None
    if not bill.uuid:
        return Finding(detail="uuid mangler", inputs=(("uuid", ""),))
    here = ctx.positions[id(bill)]
    same_file = [(p, t) for p, t in ctx.bills_by_uuid[bill.uuid] if p != here]
    if any(t not in (TRANSACTION_CORRECTION, TRANSACTION_CREDIT) for _, t in same_file):
        return Finding(
            detail=f"opprinnelig regning {bill.uuid} står i samme fil",
            inputs=(("uuid", bill.uuid), ("same_file", "true")),
        )
    if any(p < here for p, _ in same_file):
        return Finding(
            detail=f"regning {bill.uuid} er allerede korrigert eller kreditert i denne filen",
            inputs=(("uuid", bill.uuid), ("repeated", "true")),
        )
    balance = ctx.paid_bill(bill.uuid)
    if balance is None:
        return Finding(
            detail=f"ingen tidligere betalt regning med uuid {bill.uuid}",
            inputs=(("uuid", bill.uuid), ("found", "false")),
        )
    # a recorded egenandel (typeTransaksjon 2/3, EG-03) was paid nothing: it stands
    # while its record is active (a credit withdraws it)
    recorded = balance == 0 and ctx.history.egenandel_status(ctx.claim.institution_id, bill.uuid)
    if balance <= 0 and not recorded:
        return Finding(
            detail=f"regning {bill.uuid} er allerede kreditert (saldo {_money(balance)})",
            inputs=(("uuid", bill.uuid), ("balance", _money(balance))),
        )
    return None


def months_before(day: date, months: int) -> date:
    """The same day `months` calendar months earlier (the month's last day when it has
    no such day: 31 August − 6 months = 28/29 February)."""
    total = day.year * 12 + day.month - 1 - months
    year, month = divmod(total, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


@rule(
    id="COM-08",
    scope="bill",
    source="RULES.md COM-08; KUHR-praksis (foreldelse)",
    number="9008",
    text="Tjenestedatoen er i fremtiden eller eldre enn fristen for krav",
    credits=False,
)
def service_date_in_window(bill: Bill, ctx: RuleContext) -> Finding | None:
    """ "Today" is the date in Europe/Oslo (`ctx.today`); the deadline is counted in
    calendar months (`[rules] max_age_months`). Credits return money whatever the age
    of the bill they credit."""
    day = bill.service_date
    if day is None:
        return Finding(detail=f"TransDatoTid {bill.claimed_at!r} er ikke en dato")
    if day > ctx.today:
        return Finding(detail=f"{day} er etter {ctx.today}", inputs=(("date", str(day)),))
    months = ctx.settings.max_age_months
    oldest = months_before(ctx.today, months)
    if day < oldest:
        return Finding(
            detail=f"{day} er eldre enn {months} måneder (eldste dato {oldest})",
            inputs=(("date", str(day)), ("oldest", str(oldest))),
        )
    return None


@rule(
    id="COM-09",
    scope="claim",
    source="RULES.md COM-09; regelverk 000 §3-4, 001 §5-6",
    number="9090",
    text="Institusjonen er ikke registrert, eller avsenderen kan ikke kreve for den",
    retryable=True,
)
def institution_is_registered(claim: Claim, ctx: RuleContext) -> Finding | None:
    """The claiming institution must be in the registry and claimed for by its own
    partner (or one it names as a sender). Otherwise the whole message is refused, and
    not for good: after the institution is registered, a resend is processed."""
    inst = ctx.institution
    if inst is None:
        text = f"institusjonID {claim.institution_id} finnes ikke i registeret"
        return Finding(detail=text, inputs=(("institution", claim.institution_id),))
    if not inst.may_be_claimed_by(ctx.sender):
        text = f"avsender HER {ctx.sender.her_id} kan ikke kreve refusjon for {inst.orgnr}"
        return Finding(detail=text, inputs=(("sender", ctx.sender.her_id),))
    return None


@rule(
    id="COM-09",
    scope="bill",
    source="RULES.md COM-09, LAB-04; regelverk 000 §3-4, 001 §5-6",
    number="9009",
    text="Institusjonen (enheten) er ikke registrert med rett til refusjon for tjenesten",
)
def unit_may_claim_the_service(bill: Bill, ctx: RuleContext) -> Finding | None:
    """The unit that claims the bill (or the institution, when its units are not
    registered) must be approved for the kind of lines on it: lab lines need lab or
    genetics (LAB-04/05 tell MG apart), radiology lines need radiology."""
    if ctx.institution is None:
        return None  # the claim rule refused the message
    services = set(ctx.services(bill))
    lab = any(line.kind == "takst" for line in bill.lines) and not LAB_SERVICES & services
    rad = any(radiology.is_radiology(x, ctx) for x in bill.lines) and "radiology" not in services
    if lab or rad:
        what = "laboratorieanalyser" if lab else "radiologi"
        return Finding(
            detail=f"{ctx.institution.name} er ikke registrert for {what}"
            f" (registrert: {', '.join(sorted(services)) or 'ingen tjenester'})",
            inputs=(("services", ",".join(sorted(services))),),
        )
    return None
