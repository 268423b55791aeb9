"""Laboratory rules (RULES.md "Laboratory (NLK)", source lab-refusjon-regler-2019.txt).

A lab line is a `Kontakt/Takst`; its `kode` is an NLK code. LAB-10 (who is paid) is
`payee()` below; LAB-11 (categories of new codes) is applied when tariffs are imported.
"""

from __future__ import annotations

from decimal import Decimal

from daemon.domain import Bill, Line
from daemon.registers.registry import Institution
from daemon.registers.tariffs import NlkCode
from daemon.rules.base import Finding, rule
from daemon.rules.context import RuleContext

SOURCE = "lab-refusjon-regler-2019"
MEDICAL_GENETICS = "MG"
PHARMACOLOGY = "KF"


def is_lab(line: Line) -> bool:
    return line.kind == "takst"


def _code(line: Line, bill: Bill, ctx: RuleContext) -> NlkCode | None:
    """The register entry, if the code exists and is valid on the service date."""
    day = bill.service_date
    code = ctx.tariffs.code(line.raw_code, day) if day is not None else None
    if code is None or not code.valid_on(day):
        return None
    return code


@rule(
    id="LAB-01",
    scope="bill",
    source=f"RULES.md LAB-01; {SOURCE} §3",
    number="9101",
    text="Laboratorieanalyser for innlagte pasienter gir ikke refusjon",
    credits=False,
)
def outpatients_only(bill: Bill, ctx: RuleContext) -> Finding | None:
    """kravGrunnlag (7464) 2 = inneliggende, 3 = innleggelse samme dag."""
    if bill.claim_basis in ("2", "3") and any(is_lab(line) for line in bill.lines):
        return Finding(
            detail=f"kravGrunnlag {bill.claim_basis}", inputs=(("kravGrunnlag", bill.claim_basis),)
        )
    return None


@rule(
    id="LAB-02",
    scope="line",
    source=f"RULES.md LAB-02; {SOURCE} §6 trinn 1",
    number="9102",
    text="NLK-koden finnes ikke i kodeverket eller er ikke gyldig på analysedatoen",
)
def code_in_register(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    if not is_lab(line):
        return None
    day = bill.service_date
    code = ctx.tariffs.code(line.raw_code, day)
    if code is None:
        return Finding(detail=f"{line.raw_code} er ukjent", inputs=(("code", line.raw_code),))
    if day is None or not code.valid_on(day):
        valid = f"{code.valid_from or '…'}–{code.valid_to or '…'}"
        replaced = f"; erstattet av {code.replaced_by}" if code.replaced_by else ""
        return Finding(
            detail=f"{line.raw_code} gjelder {valid}, analysert {day}{replaced}",
            inputs=(("code", line.raw_code), ("date", str(day)), ("valid", valid)),
        )
    if code.category is None:  # e.g. Patologi: in NLK, outside the five fields (§3)
        return Finding(
            detail=f"{line.raw_code} ({code.field}) er utenfor refusjonsordningen",
            inputs=(("code", line.raw_code), ("field", code.field_prefix)),
        )
    return None


@rule(
    id="LAB-03",
    scope="line",
    source=f"RULES.md LAB-03; {SOURCE} §5.2.2",
    number="9103",
    text="Antall må være minst 1; gjentatte analyser betales per gjentakelse",
)
def repeats_paid_per_repetition(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    """antall > 1 is allowed (panels, titrations, antigens, crossmatch per unit) and the
    amount is paid antall times; an antall below 1 claims nothing that can be paid."""
    if is_lab(line) and line.count < 1:
        return Finding(detail=f"antall {line.count}", inputs=(("antall", str(line.count)),))
    return None


def _is_genetics_lab(bill: Bill, ctx: RuleContext) -> bool:
    """The unit claiming the bill is approved for medical genetics (LAB-04)."""
    return "genetics" in ctx.services(bill)


@rule(
    id="LAB-04",
    scope="line",
    source=f"RULES.md LAB-04; {SOURCE} §3",
    number="9104",
    text="Medisinsk genetiske analyser kan bare kreves av medisinsk genetisk laboratorium",
)
def genetics_codes_by_genetics_labs(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    code = _code(line, bill, ctx) if is_lab(line) else None
    if (
        code is not None
        and code.field_prefix == MEDICAL_GENETICS
        and not _is_genetics_lab(bill, ctx)
    ):
        return Finding(detail=line.raw_code, inputs=(("code", line.raw_code), ("field", "MG")))
    return None


@rule(
    id="LAB-05",
    scope="line",
    source=f"RULES.md LAB-05; {SOURCE} §3",
    number="9105",
    text="Et medisinsk genetisk laboratorium kan bare kreve MG-koder og farmakogenetiske KF-koder",
)
def genetics_labs_claim_genetics(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    """Applies to a unit approved for medical genetics and not for other lab fields:
    the genetics department of an HF registered as a unit, or a genetics lab on its
    own. A unit approved for both (registered so on purpose) may claim other fields
    too; LAB-06 still forbids mixing them with MG codes on one bill."""
    services = ctx.services(bill)
    if "genetics" not in services or "lab" in services:
        return None
    code = _code(line, bill, ctx) if is_lab(line) else None
    if code is None or code.field_prefix == MEDICAL_GENETICS:
        return None
    if code.field_prefix == PHARMACOLOGY and code.pharmacogenetic:
        return None
    return Finding(
        detail=f"{line.raw_code} er fra fagområde {code.field_prefix}",
        inputs=(("code", line.raw_code), ("field", code.field_prefix)),
    )


@rule(
    id="LAB-06",
    scope="bill",
    source=f"RULES.md LAB-06; {SOURCE} §3",
    number="9106",
    text="MG-koder kan ikke kombineres med koder fra andre fagområder i samme regning",
    credits=False,
)
def genetics_not_combined(bill: Bill, ctx: RuleContext) -> Finding | None:
    fields = set()
    for line in bill.lines:
        code = _code(line, bill, ctx) if is_lab(line) else None
        if code is not None:
            fields.add(code.field_prefix)
    if MEDICAL_GENETICS in fields and len(fields) > 1:
        others = ",".join(sorted(fields - {MEDICAL_GENETICS}))
        return Finding(
            detail=f"MG sammen med {others}", inputs=(("fields", ",".join(sorted(fields))),)
        )
    return None


@rule(
    id="LAB-07",
    scope="line",
    source=f"RULES.md LAB-07; {SOURCE} §3",
    number="9107",
    text="Stjernekoder utført som del av en konsultasjon finansieres av ISF, ikke her",
)
def starred_codes_outside_consultations(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    code = _code(line, bill, ctx) if is_lab(line) else None
    if code is not None and code.starred and bill.episode is not None and bill.episode.consultation:
        return Finding(
            detail=line.raw_code, inputs=(("code", line.raw_code), ("consultation", "true"))
        )
    return None


def is_hpv(code: NlkCode) -> bool:
    return "papillomavirus" in code.name.lower()


@rule(
    id="LAB-08",
    scope="line",
    source=f"RULES.md LAB-08; {SOURCE} §5.2.3",
    number="9108",
    text="HPV-test gir bare refusjon etter kriteriene for livmorhalsprogrammet eller oppfølging",
)
def hpv_within_criteria(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    """The episode must carry a qualifying condition code (configurable list)."""
    code = _code(line, bill, ctx) if is_lab(line) else None
    if code is None or not is_hpv(code):
        return None
    diagnoses = [
        d.replace(".", "").upper() for d in (bill.episode.diagnoses if bill.episode else ())
    ]
    if any(d.startswith(c) for d in diagnoses for c in ctx.settings.hpv_conditions):
        return None
    return Finding(
        detail=f"{line.raw_code} uten kvalifiserende tilstand ({', '.join(diagnoses) or 'ingen'})",
        inputs=(("code", line.raw_code), ("diagnoses", ",".join(diagnoses))),
    )


def rate_for(line: Line, bill: Bill, ctx: RuleContext) -> Decimal | None:
    code = _code(line, bill, ctx)
    if code is None or code.category is None or bill.service_date is None:
        return None
    return ctx.tariffs.rate(code.category, ctx.sector, bill.service_date)


@rule(
    id="LAB-09",
    scope="line",
    source=f"RULES.md LAB-09; {SOURCE} §6 trinn 2",
    number="9109",
    text="Beløpet per analyse stemmer ikke med refusjonssatsen for kategorien",
)
def amount_matches_rate(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    """takstBelop is per unit and must equal rate(category, sector, date)."""
    code = _code(line, bill, ctx) if is_lab(line) else None
    if code is None or code.category is None:
        return None  # LAB-02 speaks for unknown codes and codes outside the scheme
    rate = rate_for(line, bill, ctx)
    if rate is None:
        category = code.category or "ukjent kategori"
        detail = f"ingen sats for {category} ({ctx.sector}) på {bill.service_date}"
        return Finding(
            detail=detail, inputs=(("category", str(code.category)), ("sector", ctx.sector))
        )
    if line.amount != rate:
        return Finding(
            detail=f"{line.raw_code} ({code.category}): krevd {line.amount:.2f}, sats {rate:.2f}",
            inputs=(
                ("category", code.category),
                ("claimed", f"{line.amount:.2f}"),
                ("rate", f"{rate:.2f}"),
            ),
        )
    return None


def payee(inst: Institution | None) -> str | None:
    """LAB-10 (§4): paid to the RHF that owns the institution or has its driftsavtale;
    an institution not owned by an RHF (registered without one) is paid directly."""
    if inst is None:
        return None
    return f"RHF:{inst.rhf}" if inst.rhf else f"INST:{inst.orgnr}"
