"""Egenandel (patient co-payment) rules EG-01..12 (RULES.md, "Egenandel").

A bill's egenandel part is its lines of kind `egenandel` (the Kontakt/Takst codes the
egenandel register names, `daemon.claims.read`); these rules judge only them, and the lab
and radiology lines of the same bill keep their own rules (EG-12). What the bill says
about the egenandel: `typeTransaksjon` (7463) 1 = no egenandel (exempt), 2 = not paid,
3 = paid, 4 = correction "egenandel er betalt", 5 = credit; `kodeEgenandel` (7461) the
exemption. An exempt egenandel approved under EG-02 is paid to the institution (payee
`INST:<orgnr>`, the hospital's lost income); 2, 3 and 4 pay nothing and are recorded
per patient pseudonym (the frikort basis, `egenandeler` in the ledger).

Amounts, codes, age limits, the unit table and the personnel list are data with validity
dates (`config/tariffs/egenandel.toml`, `Tariffs.egenandel`), never constants here.
"""

from __future__ import annotations

from datetime import date

from daemon.domain import Bill, Line
from daemon.registers.egenandel import EgenandelRegister
from daemon.rules.base import Finding, rule
from daemon.rules.context import RuleContext

EGENANDEL = ("egenandel",)  # the line kind these rules judge (the others never see them)
EXEMPT = "1"  # typeTransaksjon: regning uten egenandel
RECORDED = ("2", "3", "4")  # not paid, paid, correction to paid: recorded, no refund
INPATIENT = ("2", "3")  # kravGrunnlag (7464): inneliggende, innleggelse samme dag
TELEPHONE_VIDEO = ("6", "7")  # kontaktType: video, telefon (EG-11)


def is_egenandel(line: Line) -> bool:
    return line.kind == "egenandel"


def register(ctx: RuleContext) -> EgenandelRegister:
    return ctx.tariffs.egenandel


def payee(ctx: RuleContext) -> str:
    """EG-02: the exempt egenandel is the hospital's lost income: paid to the institution
    itself (its organisation number), not to its RHF."""
    return f"INST:{ctx.claim.institution_id}"


def unit_kind(bill: Bill, ctx: RuleContext) -> str:
    """somatikk, PHV, TSB, LAR or PUT: the unit (Enhet) that claims the bill, by the
    register's unit table (reshID first, then enhetKode)."""
    unit = ctx.unit_of(bill)
    return register(ctx).unit_kind(unit.resh_id, unit.enhet_kode) if unit else "somatikk"


def birth_date(bill: Bill) -> date | None:
    """From the fødselsnummer / D-nummer (DDMMYY + individual number, whose range gives
    the century), or from `AltIdent/@fodselsDato`."""
    patient = bill.episode.patient if bill.episode else None
    if patient is None:
        return None
    number = patient.ident
    if number and len(number) == 11 and number.isdigit():
        day, month, year = int(number[:2]), int(number[2:4]), int(number[4:6])
        if day > 40:  # D-nummer: 4 added to the first digit
            day -= 40
        individual = int(number[6:9])
        if individual <= 499:
            century = 1900
        elif individual <= 749 and year >= 54:
            century = 1800
        elif year <= 39:
            century = 2000
        else:
            century = 1900
        try:
            return date(century + year, month, day)
        except ValueError:
            return None
    if patient.birth_date:
        try:
            return date.fromisoformat(patient.birth_date[:10])
        except ValueError:
            return None
    return None


def age_on(born: date, day: date) -> int:
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def _kind(line: Line, ctx: RuleContext) -> str:
    return register(ctx).takster.get(line.raw_code, "")


def _ins(bill: Bill, line: Line) -> tuple[tuple[str, str], ...]:
    return (
        ("typeTransaksjon", bill.transaction_type),
        ("kodeEgenandel", bill.egenandel_code or ""),
        ("takst", line.raw_code),
    )


@rule(
    id="EG-01",
    scope="line",
    kinds=EGENANDEL,
    source="Helfo-praksis; lab-refusjon §3 (000 l.66), radiologi §6 (001 l.173)",
    number="9301",
    text="Inneliggende pasienter har ingen egenandel og ingen refusjon av egenandel",
    credits=False,
)
def inpatients_have_no_egenandel(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    if not is_egenandel(line) or bill.claim_basis not in INPATIENT:
        return None
    return Finding(f"kravGrunnlag {bill.claim_basis}", (("kravGrunnlag", bill.claim_basis),))


@rule(
    id="EG-02",
    scope="line",
    kinds=EGENANDEL,
    source="ISF-møte 2025 (003 l.1130-1131); NPR-BKM 0.78-eksempelet regning 3",
    number="9302",
    text="Refusjon av egenandel krever fritakskode og egenandelen for tjenesten på datoen",
    credits=False,
)
def exempt_egenandel_paid_at_rate(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    if not is_egenandel(line) or bill.transaction_type != EXEMPT:
        return None
    reg, code = register(ctx), bill.egenandel_code or ""
    ins = _ins(bill, line)
    if not code:
        return Finding("regning uten egenandel og uten kodeEgenandel gir 0", ins)
    if code not in reg.exemptions:
        return Finding(f"kodeEgenandel {code} er ikke en fritakskode (7461)", ins)
    kind, day = _kind(line, ctx), bill.service_date
    found = reg.amount(kind, day) if kind and day else None
    if found is None:
        return Finding(f"ingen egenandel for {kind or line.raw_code} på {day}", ins)
    if line.total != found.kroner:
        return Finding(
            f"krevd {line.total}, egenandel for {kind} på {day} er {found.kroner}",
            (*ins, ("sats", str(found.kroner))),
        )
    return None


@rule(
    id="EG-03",
    scope="line",
    kinds=EGENANDEL,
    source="NPR-BKM kodeverk 7463; COM-07",
    number="9303",
    text="Egenandel registrert i frikortgrunnlaget, ingen refusjon",
    credits=False,
)
def unpaid_and_paid_are_recorded(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    """2 and 3 (and 4, the correction to paid): recorded, no refund; the sender is told
    (a note, nothing rejected). A correction must turn an earlier 'not paid' into
    'paid': an earlier bill recorded otherwise rejects it."""
    if not is_egenandel(line) or bill.transaction_type not in RECORDED:
        return None
    status = {"2": "ikke betalt", "3": "betalt", "4": "betalt (korrigert)"}
    ins = _ins(bill, line)
    if bill.transaction_type == "4" and bill.uuid:
        earlier = ctx.history.egenandel_status(ctx.claim.institution_id, bill.uuid)
        if earlier != "ikke betalt":
            told = f"registrert som {earlier}" if earlier else "som ikke er registrert"
            return Finding(f"korrigering av en egenandel {told}", ins)
    return Finding(f"{status[bill.transaction_type]}, {line.total}", ins, note=True)


@rule(
    id="EG-04",
    scope="line",
    kinds=EGENANDEL,
    source="kodeverk 7461 (B); aldersgrensen er et valg (16 år i gjeldende forskrift)",
    number="9304",
    text="Fritak B (barn) gjelder bare under aldersgrensen på tjenestedatoen",
    credits=False,
)
def children_below_age_limit(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    if not is_egenandel(line) or bill.service_date is None:
        return None
    born, limit = birth_date(bill), register(ctx).child_age_limit
    if born is None:
        return None
    child = age_on(born, bill.service_date) < limit
    ins = (*_ins(bill, line), ("aldersgrense", str(limit)), ("barn", str(child).lower()))
    if bill.egenandel_code == "B" and bill.transaction_type == EXEMPT and not child:
        return Finding(f"pasienten var {limit} år eller eldre", ins)
    if child and bill.transaction_type == "3":
        return Finding(f"betalt egenandel for et barn under {limit} år", ins, note=True)
    return None


@rule(
    id="EG-05",
    scope="line",
    kinds=EGENANDEL,
    source="ISF-møte 2025 (003 l.1132-1135); ISF-regelverket 2026 §8.7 (002 l.3329-3334)",
    number="9305",
    text="PHV/TSB: ingen refusjon av egenandel til og med året pasienten fyller grensen",
    credits=False,
)
def phv_tsb_young_patients(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    if not is_egenandel(line) or bill.service_date is None:
        return None
    kind, born, reg = unit_kind(bill, ctx), birth_date(bill), register(ctx)
    if born is None or kind == "somatikk":
        return None
    turns = bill.service_date.year - born.year  # the age the patient turns that year
    ins = (*_ins(bill, line), ("enhet", kind), ("fyller", str(turns)))
    limit_year = ctx.settings.egenandel_youth_includes_limit_year
    young = turns <= reg.phv_tsb_age_limit if limit_year else turns < reg.phv_tsb_age_limit
    if kind in ("PHV", "TSB") and young:
        if bill.transaction_type == EXEMPT:
            return Finding(f"{kind}, pasienten fyller {turns} år (ISF-poengtillegg)", ins)
        return None
    if kind in ("LAR", "PUT") and turns <= reg.lar_put_age_limit:
        detail = f"{kind}, pasienten fyller {turns} år: refusjonen ligger i enhetsrefusjonen"
        return Finding(detail, ins, note=True)
    return None


@rule(
    id="EG-06",
    scope="line",
    kinds=EGENANDEL,
    source="ISF-møte 2025 (003 l.1381-1385): personell nevnt i forskriften",
    number="9306",
    text="Bare personell nevnt i forskriften kan utløse egenandel",
    credits=False,
)
def personnel_in_regulation(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    if not is_egenandel(line) or bill.episode is None:
        return None
    allowed = register(ctx).personnel
    if any(p in allowed for p in bill.episode.personnel):
        return None
    named = ", ".join(bill.episode.personnel) or "ingen"
    return Finding(f"polUtforende {named}", (*_ins(bill, line), ("polUtforende", named)))


@rule(
    id="EG-07",
    scope="line",
    kinds=EGENANDEL,
    source="ISF-møte 2025 (003 l.1387-1391); ISF-regelverket 2026 (002 l.1586)",
    number="9307",
    text="Ingen egenandel når det ikke ytes helsehjelp til pasienten",
    credits=False,
)
def health_care_to_the_patient(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    if not is_egenandel(line) or bill.episode is None:
        return None
    reg, episode = register(ctx), bill.episode
    guidance = reg.codes("guidance_procedures")
    found = [x.raw_code for x in episode.lines if x.raw_code.split("/")[0].upper() in guidance]
    if found:
        return Finding(f"veiledning uten pasienten ({found[0]})", _ins(bill, line))
    indirect = set(reg.rules.get("indirect_contact_types", ()))
    if episode.contact_types and all(t in indirect for t in episode.contact_types):
        types = ",".join(episode.contact_types)
        return Finding(f"indirekte kontakt (kontaktType {types})", _ins(bill, line))
    return None


def _programme(bill: Bill, ctx: RuleContext) -> bool:
    reg, episode = register(ctx), bill.episode
    if episode is None:
        return False
    types = set(reg.rules.get("programme_contact_types", ()))
    codes = reg.codes("programme_codes")
    return any(t in types for t in episode.contact_types) or any(
        x.raw_code.split("/")[0].upper() in codes for x in episode.lines
    )


@rule(
    id="EG-08",
    scope="line",
    kinds=EGENANDEL,
    source="ISF-regelverket 2026 (002 l.724-726); ISF-møte 2025 (003 l.1393-1397)",
    number="9308",
    text="Kurs og gruppeprogram: én egenandel per program og pasient (flagget, "
    "meldingen identifiserer ikke programmet)",
    credits=False,
)
def one_egenandel_per_programme(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    """NPR-BKM 0.78 cannot identify the programme: a second programme egenandel of the
    same patient in a somatic unit is flagged (a note), not rejected. PHV/TSB group
    treatment over several days may carry several."""
    if not is_egenandel(line) or not _programme(bill, ctx) or bill.episode is None:
        return None
    if unit_kind(bill, ctx) in ("PHV", "TSB"):
        return None
    patient = bill.episode.patient.key or bill.episode.patient.ident
    if patient is None or not bill.is_new:
        return None
    first = _first_programme_bills(ctx).get(patient)
    if first is None or first >= ctx.positions[id(bill)]:
        return None
    other = ctx.claim.bills[first]
    return Finding(
        f"pasienten har en egenandel for gruppeprogram i regning {other.regning_nr}",
        _ins(bill, line),
        note=ctx.settings.egenandel_flag_programmes,
    )


def _first_programme_bills(ctx: RuleContext) -> dict[str, int]:
    """Patient → the position of the claim's first new programme bill with an egenandel
    (somatic units), built once per claim (`RuleContext.first_of`): EG-08 stays linear."""
    key = ("EG-08", None)
    if key not in ctx.first_of:
        index: dict[str, int] = {}
        for position, other in enumerate(ctx.claim.bills):
            if other.episode is None or not other.is_new:
                continue
            if not any(is_egenandel(x) for x in other.lines) or not _programme(other, ctx):
                continue
            if unit_kind(other, ctx) in ("PHV", "TSB"):
                continue
            patient = other.episode.patient.key or other.episode.patient.ident
            if patient is not None:
                index.setdefault(patient, position)
        ctx.first_of[key] = index
    return ctx.first_of[key]


@rule(
    id="EG-09",
    scope="line",
    kinds=EGENANDEL,
    source="ISF-regelverket 2026 (002 l.3198)",
    number="9309",
    text="LAR-utlevering uten konsultasjon utløser ingen egenandel",
    credits=False,
)
def lar_dispensing(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    if not is_egenandel(line) or bill.episode is None or not bill.episode.diagnoses:
        return None
    main = bill.episode.diagnoses[0].replace(".", "").upper()
    codes = register(ctx).codes("lar_dispensing_conditions")
    if any(main.startswith(c) for c in codes):
        return Finding(f"hovedtilstand {main}", (*_ins(bill, line), ("hovedtilstand", main)))
    return None


@rule(
    id="EG-10",
    scope="line",
    kinds=EGENANDEL,
    source="ISF-regelverket 2026 (002 l.1895-1900, 2382-2388)",
    number="9310",
    text="Pasientbetaling er ikke egenandel: ingen refusjon, teller ikke mot frikort",
    credits=False,
)
def pasientbetaling_is_not_egenandel(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    if not is_egenandel(line) or bill.episode is None:
        return None
    if bill.episode.debitor in register(ctx).rules.get("pasientbetaling_debitors", ()):
        debitor = bill.episode.debitor
        return Finding(f"debitor {debitor}", (*_ins(bill, line), ("debitor", debitor)))
    return None


@rule(
    id="EG-11",
    scope="line",
    kinds=EGENANDEL,
    source="ISF-regelverket 2026 (002 l.1136-1149)",
    number="9311",
    text="Telefon- og videokonsultasjon har samme egenandel som konsultasjon",
    credits=False,
)
def telephone_and_video(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    """kontaktType 6 and 7 are accepted although the 0.78 list lacks them: the sender
    is told the egenandel was judged as a consultation's (a note)."""
    if not is_egenandel(line) or bill.episode is None:
        return None
    types = [t for t in bill.episode.contact_types if t in TELEPHONE_VIDEO]
    if not types:
        return None
    return Finding(
        f"kontaktType {types[0]}", (*_ins(bill, line), ("kontaktType", types[0])), note=True
    )


@rule(
    id="EG-12",
    scope="bill",
    source="ISF-regelverket 2026 §3.2.1 g (002 l.328-329)",
    number="9312",
    text="Egenandelen vurderes etter EG-reglene; lab- og radiologilinjene etter sine egne",
    credits=False,
)
def egenandel_part_only(bill: Bill, ctx: RuleContext) -> Finding | None:
    """A bill whose main content is lab or radiology stays in the NLK/NCRP refund: the
    egenandel rules judge only its egenandel lines (a note on a mixed bill)."""
    copay = [x for x in bill.lines if is_egenandel(x)]
    other = [x for x in bill.lines if not is_egenandel(x)]
    if not copay or not other:
        return None
    return Finding(
        f"{len(copay)} egenandelslinje(r), {len(other)} andre linje(r)",
        (("egenandel", str(len(copay))), ("andre", str(len(other)))),
        note=True,
    )
