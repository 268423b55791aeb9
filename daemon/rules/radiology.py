"""Radiology rules (RULES.md "Radiology", source radiologi-refusjon-regelverk-2019).

A radiology line is a `Prosedyre/Kode` with `Kodeverk="R"` (or K/M/Q when its
procedure is one of the eligible NCSP/NCMP codes), its `kodeVerdi` a slash-separated
code string (`daemon.registers.ncrp`) and its `kodeBelop` the amount claimed for the exam.
The same-day rules (RAD-06..10) are judged once per claim in `daemon.rules.sameday`;
the functions here only look their finding up. The amount of a line (RAD-10, 11, 12)
is `amount_for`; RAD-14 compares it with what was claimed; RAD-15 is `payee`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal

from daemon.domain import Bill, Exam, Line
from daemon.registers import ncrp
from daemon.registers.ncrp import CodeString
from daemon.registers.radiology_tariffs import AMBULANT, TELE_NM, RadCode
from daemon.rules.base import Finding, rule
from daemon.rules.context import RuleContext

SOURCE = "radiologi-refusjon-regelverk-2019"
# NPR Kodeverk (8410) of a procedure line → the code systems it may name
PROCEDURE_SYSTEMS = {"K": ("NCSP",), "M": ("NCMP",), "Q": ("NCSP", "NCMP")}
CENT = Decimal("0.01")


def is_radiology(line: Line, ctx: RuleContext) -> bool:
    if line.kind != "prosedyre":
        return False
    if line.code_system == "R":
        return True
    systems = PROCEDURE_SYSTEMS.get(line.code_system or "")
    cs = code_string(line)
    if systems is None or cs is None:
        return False
    entry = ctx.tariffs.radiology.code(cs.procedure)
    return entry is not None and entry.code_system in systems


def code_string(line: Line) -> CodeString | None:
    found = ncrp.parsed(line.raw_code)
    return found if isinstance(found, CodeString) else None


def entry(line: Line, bill: Bill, ctx: RuleContext) -> tuple[CodeString, RadCode] | None:
    """The parsed code string and its register entry, when the line is a radiology
    line with a well-formed string and a code valid on the exam date with a category."""
    if not is_radiology(line, ctx):
        return None
    cs, day = code_string(line), bill.service_date
    if cs is None or day is None:
        return None
    code = ctx.tariffs.radiology.code(cs.procedure, day)
    if code is None or not code.valid_on(day) or code.category is None:
        return None
    return cs, code


def roles(cs: CodeString, ctx: RuleContext) -> set[str]:
    """The roles of the tilleggskoder in positions 3 and on."""
    found = (ctx.tariffs.radiology.addon(code) for code in cs.addons)
    return {addon.role for addon in found if addon is not None}


def exam_of(line: Line, number: int, bill: Bill, ctx: RuleContext) -> Exam | None:
    """The line as the same-day rules see it (None when it is not a usable exam)."""
    found = entry(line, bill, ctx)
    if found is None or bill.service_date is None:
        return None
    cs, code = found
    return Exam(
        code=code.code,
        side=cs.side,
        modality=code.modality,
        kind=code.kind,
        regions=code.regions,
        units=cs.units,
        instant=bill.instant,
        day=bill.service_date.isoformat(),
        regning_nr=bill.regning_nr,
        line=number,
        tele=cs.tele,
        ambulant="ambulant" in roles(cs, ctx),
    )


# --------------------------------------------------------------------------- the rules


@rule(
    id="RAD-01",
    scope="bill",
    source=f"RULES.md RAD-01; {SOURCE} §6",
    number="9201",
    text="Radiologi for innlagte pasienter gir ikke refusjon",
    credits=False,
)
def outpatients_only(bill: Bill, ctx: RuleContext) -> Finding | None:
    """kravGrunnlag (7464) 2 = inneliggende, 3 = innleggelse samme dag."""
    if bill.claim_basis in ("2", "3") and any(is_radiology(x, ctx) for x in bill.lines):
        return Finding(
            detail=f"kravGrunnlag {bill.claim_basis}", inputs=(("kravGrunnlag", bill.claim_basis),)
        )
    return None


@rule(
    id="RAD-02",
    scope="line",
    source=f"RULES.md RAD-02; {SOURCE} §6.2, §7.1 trinn 1",
    number="9202",
    text="Prosedyrekoden gir ikke rett til refusjon på undersøkelsesdatoen",
)
def code_in_register(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    if not is_radiology(line, ctx):
        return None
    cs, day = code_string(line), bill.service_date
    if cs is None:
        return None  # RAD-03 tells what is wrong with the string
    code = ctx.tariffs.radiology.code(cs.procedure, day)
    if code is None:
        what = "en tilleggskode" if ctx.tariffs.radiology.addon(cs.procedure) else "ukjent"
        return Finding(detail=f"{cs.procedure} er {what}", inputs=(("code", cs.procedure),))
    if day is None or not code.valid_on(day):
        valid = f"{code.valid_from or '…'}–{code.valid_to or '…'}"
        return Finding(
            detail=f"{cs.procedure} gjelder {valid}, undersøkt {day}",
            inputs=(("code", cs.procedure), ("date", str(day)), ("valid", valid)),
        )
    if code.category is None:
        return Finding(
            detail=f"{cs.procedure} har ingen refusjonskategori", inputs=(("code", cs.procedure),)
        )
    return None


@rule(
    id="RAD-03",
    scope="line",
    source=f"RULES.md RAD-03; {SOURCE} §6.2",
    number="9203",
    text="Kodestrengen er feil bygd (rekkefølge, skilletegn eller tomme felt)",
)
def code_string_well_formed(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    """Positions: 1 procedure, 2 side or empty, 3 teleradiology or empty (or another
    tilleggskode), 4… tilleggskoder; see `daemon.registers.ncrp`."""
    if not is_radiology(line, ctx):
        return None
    found = ncrp.parsed(line.raw_code)
    if isinstance(found, ncrp.CodeStringError):
        return Finding(
            detail=str(found),
            inputs=(("position", str(found.position)), ("found", found.code)),
        )
    register = ctx.tariffs.radiology
    for position, code in enumerate(found.addons, start=4 if found.third is None else 3):
        if register.code(code) is not None and register.addon(code) is None:
            return Finding(
                detail=f"posisjon {position}: {code} er en prosedyrekode; den hører i posisjon 1",
                inputs=(("position", str(position)), ("found", code)),
            )
    return None


@rule(
    id="RAD-04",
    scope="line",
    source=f"RULES.md RAD-04; {SOURCE} §6.2, §6.2.3",
    number="9204",
    text="Nukleærmedisinsk prosedyre mangler tilleggskode for radiofarmakum",
)
def nuclear_needs_radiopharmaceutical(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    found = entry(line, bill, ctx)
    if found is None or found[1].kind != "nuclear":
        return None
    cs, code = found
    if "radiopharmaceutical" in roles(cs, ctx):
        return None
    return Finding(
        detail=f"{code.code} uten ATC V09/V10 eller NCRP-radiofarmakum",
        inputs=(("code", code.code), ("addons", ",".join(cs.addons))),
    )


@rule(
    id="RAD-05",
    scope="line",
    source=f"RULES.md RAD-05; {SOURCE} §2, §6.2.2",
    number="9205",
    text="Intervensjon fra NCSP/NCMP mangler tilleggskode for bildeveiledning (ZXM)",
)
def intervention_needs_guidance(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    """JUK02 and JUK05 are exempt (the register says `needs_guidance` 0 for them)."""
    found = entry(line, bill, ctx)
    if found is None or not found[1].needs_guidance:
        return None
    cs, code = found
    if "guidance" in roles(cs, ctx):
        return None
    return Finding(
        detail=f"{code.code} ({code.code_system}) uten ZXM00/10/20/30/40/70",
        inputs=(("code", code.code), ("addons", ",".join(cs.addons))),
    )


def _same_day(rule_id: str, line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    """The judgement's finding of `rule_id` for this line (`daemon.rules.sameday`)."""
    outcome = ctx.same_day.get((id(bill), id(line)))
    found = [f for rid, f in (outcome.findings if outcome else ()) if rid == rule_id]
    return found[0] if found else None


@rule(
    id="RAD-06",
    scope="exam",
    source=f"RULES.md RAD-06; {SOURCE} §6.2.1",
    number="9206",
    text="Mer enn to CT-, MR- eller UL-undersøkelser for pasienten samme dag",
)
def at_most_two_a_day(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    """Two approved a day per group; a bill with three is invalid whole."""
    return _same_day("RAD-06", line, bill, ctx)


@rule(
    id="RAD-07",
    scope="exam",
    source=f"RULES.md RAD-07; {SOURCE} §6.2.1",
    number="9207",
    text="Undersøkelsene gir bare ett refusjonskrav samme dag (regionregelen)",
)
def region_rule(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    return _same_day("RAD-07", line, bill, ctx)


@rule(
    id="RAD-08",
    scope="exam",
    source=f"RULES.md RAD-08; {SOURCE} §6.2.1-3",
    number="9208",
    text="To eller flere like undersøkelser for samme pasient på samme tidspunkt",
)
def no_identical_exams(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    """The second identical exam is rejected; the first stands."""
    return _same_day("RAD-08", line, bill, ctx)


@rule(
    id="RAD-09",
    scope="exam",
    source=f"RULES.md RAD-09; {SOURCE} §2.2, §6.2.2-3",
    number="9209",
    text="Mer enn to bildeveiledede intervensjoner eller nukleærmedisinske undersøkelser samme dag",
)
def at_most_two_interventions_or_nuclear(line: Line, bill: Bill, ctx: RuleContext):
    return _same_day("RAD-09", line, bill, ctx)


@rule(
    id="RAD-10",
    scope="exam",
    source=f"RULES.md RAD-10; {SOURCE} §6.2, §6.4",
    number="9210",
    text="Bilateral undersøkelse betales dobbelt og kan ikke kreves sammen med samme undersøkelse",
)
def bilateral_paid_once(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    """The double amount itself is in `amount_for`; this finding is the other half of
    §6.4: a bilateral exam and the same exam (left, right or bilateral again) on the
    same day would pay one side twice."""
    return _same_day("RAD-10", line, bill, ctx)


@rule(
    id="RAD-11",
    scope="exam",
    source=f"RULES.md RAD-11; {SOURCE} §6.6",
    number="9211",
    text="Tillegget for ambulant undersøkelse (ZTX0AD) betales én gang per kontakt",
)
def ambulant_once_per_contact(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    """A contact is the institution, patient and day (one visit split over two bills
    is one contact). The first approved line with ZTX0AD gets the add-on; a later one
    keeps its exam and is paid the add-on less."""
    found = _same_day("RAD-11", line, bill, ctx)
    if found is None or bill.service_date is None:
        return None
    addition = ctx.tariffs.radiology.rate(AMBULANT, ctx.sector, bill.service_date)
    return replace(found, deduct=addition if addition is not None else Decimal("0"))


@rule(
    id="RAD-12",
    scope="line",
    source=f"RULES.md RAD-12; {SOURCE} §2, §6.7",
    number="9212",
    text="Teleradiologi kan ikke kreves slik",
)
def teleradiology(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    """Private røntgeninstitutt are outside teleradiology (§6.7): a teleradiology code
    from an institution with a driftsavtale is rejected. The split itself (1/3, 2/3,
    the fixed nuclear secondary reading) is in `amount_for`."""
    found = entry(line, bill, ctx)
    if found is None or found[0].tele is None:
        return None
    cs, _code = found
    if ctx.sector == "privat":
        return Finding(
            detail=f"{cs.tele_code}: private røntgeninstitutt omfattes ikke av teleradiologi",
            inputs=(("tele", cs.tele_code), ("sector", ctx.sector)),
        )
    return None


@rule(
    id="RAD-13",
    scope="line",
    source=f"RULES.md RAD-13; {SOURCE} §6.2.1, §6.3",
    number="9213",
    text="Ukjent tilleggskode",
)
def known_addons(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    """Every tilleggskode after position 2 must be a known one: interrupted (ZXF…),
    contrast (ZTX0E…), radiopharmaceutical, guidance and the rest. Contrast and
    interruption are information only: they do not change the amount."""
    found = entry(line, bill, ctx)
    if found is None:
        return None
    register = ctx.tariffs.radiology
    unknown = [c for c in found[0].addons if register.addon(c) is None]
    if unknown:
        return Finding(detail=", ".join(unknown), inputs=(("unknown", ",".join(unknown)),))
    return None


# the sender's words for a reading-only part of a teleradiology exam
READING = {"primary": "primærgransking", "secondary": "sekundærgransking"}


@dataclass(frozen=True, slots=True)
class Amount:
    """What a radiology line is worth, and how (for the remark and the trace)."""

    kroner: Decimal
    steps: tuple[str, ...]

    def explained(self) -> str:
        return " ".join(self.steps) + f" = {self.kroner:.2f}"


def amount_for(cs: CodeString, code: RadCode, bill: Bill, ctx: RuleContext) -> Amount | str:
    """The amount of one exam: the category's rate; × 2 bilateral (RAD-10); × 1/3 for
    image taking only, × 2/3 for primary or secondary reading only (RAD-12), rounded to
    øre half up; a nuclear secondary reading is the year's fixed amount instead
    (RAD-12); + the ambulant add-on (RAD-11). A str says which rate is missing."""
    register, day, sector = ctx.tariffs.radiology, bill.service_date, ctx.sector
    if code.kind == "nuclear" and cs.tele == "secondary":
        fixed = register.rate(TELE_NM, sector, day)
        if fixed is None:
            return f"ingen fast sats for nukleærmedisinsk sekundærgransking ({sector}) på {day}"
        total, steps = fixed, [f"sekundærgransking nukleærmedisin {fixed:.2f}"]
    else:
        base = register.rate(code.category, sector, day)
        if base is None:
            return f"ingen sats for kategori {code.category} ({sector}) på {day}"
        total, steps = base, [f"{code.category} {base:.2f}"]
        if cs.side == "bilateral":
            total, steps = total * 2, [*steps, "× 2 bilateral"]
        if cs.tele == "image":
            total, steps = total / 3, [*steps, "× 1/3 kun billedtaking"]
        elif cs.tele in READING:
            total, steps = total * 2 / 3, [*steps, f"× 2/3 kun {READING[cs.tele]}"]
        total = total.quantize(CENT, rounding=ROUND_HALF_UP)
    if "ambulant" in roles(cs, ctx):
        addition = register.rate(AMBULANT, sector, day)
        if addition is None:
            return f"ingen sats for ambulant tillegg ({sector}) på {day}"
        total, steps = total + addition, [*steps, f"+ {addition:.2f} ambulant"]
    return Amount(total, tuple(steps))


@rule(
    id="RAD-14",
    scope="line",
    source=f"RULES.md RAD-14; {SOURCE} §7.1 trinn 2",
    number="9214",
    text="Beløpet stemmer ikke med refusjonen for undersøkelsen",
)
def amount_matches(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    found = entry(line, bill, ctx)
    if found is None:
        return None  # RAD-02/03 speak for lines without a usable code
    cs, code = found
    amount = amount_for(cs, code, bill, ctx)
    if isinstance(amount, str):
        return Finding(detail=amount, inputs=(("category", str(code.category)),))
    if line.amount != amount.kroner:
        return Finding(
            detail=f"krevd {line.amount:.2f}, {amount.explained()}",
            inputs=(("claimed", f"{line.amount:.2f}"), ("computed", amount.explained())),
        )
    return None


@rule(
    id="RAD-15",
    scope="bill",
    source=f"RULES.md RAD-15; {SOURCE} §3",
    number="9215",
    text="Pasientens bostedskommune (komNrHjem) kan ikke plasseres; refusjonen går til "
    "institusjonens RHF",
    credits=False,
)
def home_municipality_known(bill: Bill, ctx: RuleContext) -> Finding | None:
    """The refund goes to the RHF of the patient's home municipality (`payee`). A
    number we cannot place (Svalbard 2100/2111, a retired number) is paid to the
    institution's RHF, with this remark: the hospital's money is not lost over a
    registry detail (RULES.md). Nothing is rejected."""
    if not any(is_radiology(x, ctx) for x in bill.lines) or bill.episode is None:
        return None
    number = bill.episode.municipality
    if not number or ctx.tariffs.rhf.is_no_municipality(number):
        return None
    if ctx.tariffs.rhf.for_municipality(number, bill.service_date) is None:
        return Finding(detail=f"komNrHjem {number}", inputs=(("komNrHjem", number),), note=True)
    return None


def payee(bill: Bill, ctx: RuleContext) -> str | None:
    """RAD-15 (§3): the RHF of the patient's home municipality at the time of contact;
    without a Norwegian municipality, none given, or one we cannot place: the
    institution's RHF (paid directly when it has none)."""
    number = bill.episode.municipality if bill.episode else None
    rhf = ctx.tariffs.rhf.for_municipality(number, bill.service_date) if number else None
    if rhf is not None:
        return f"RHF:{rhf.name}"
    inst = ctx.institution
    if inst is None:
        return None
    return f"RHF:{inst.rhf}" if inst.rhf else f"INST:{inst.orgnr}"
