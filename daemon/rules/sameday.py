"""Same patient, same day: the radiology limits (RAD-06..11), judged row by row.

The rule text checks a claim row by row ("kravet (aktuell rad) blir forkastet", 001
§7.1) and says what may be *approved* (RULES.md "Judgement order and same-day limits"):

- **One order.** Exams are judged in one deterministic order: the exams approved in
  earlier messages first (as the ledger recorded them), then this message's by the
  exam's TransDatoTid, then by their order in the file. Each is judged against the
  exams *already approved* for the patient and day; the first within a limit are paid,
  the one that would exceed a limit or complete a forbidden pair is rejected. So the
  outcome does not depend on how a hospital batches its bills into messages.
- **The one exception**: a single bill with three (units; bilateral counts two) exams
  of one CT/MR/UL limit group is invalid whole: all of them rejected (RAD-06).
- **Only approved exams count.** The caller says which lines passed every other rule
  (`Candidate.eligible`); the others take no slot and get no same-day finding.
- **Teleradiology parts are one exam** (001 §6.7): image taking (ZTX0BA), the primary
  reading (ZTX0BB) and a secondary reading (ZTX0BC) of the same code and side on the
  same day join the exam already approved instead of counting as another; a nuclear
  secondary reading never takes a RAD-09 slot. Two identical parts (same code, side,
  part and instant) are RAD-08.
- **RAD-11**: the ambulant add-on (ZTX0AD) is paid once per contact (institution,
  patient, day); a later approved line with it keeps the exam and loses the add-on.
- **Remarks** say which rule and how many exams were already approved; they name the
  claiming institution's own exams, never another institution's codes, bill numbers,
  times or message ids (issue #14 finding 3). The trace (ours only) keeps the detail.

Groups: CT (CT, CTA, CT+CTA), MR (MR, MRA, MR+MRA) and UL, at most two a day each
(RAD-06; CT/CTA and MR/MRA may be split by `[rules]`); interventions and nuclear
medicine, two a day each (RAD-09). Conventional X-ray has no limit.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field, replace

from daemon.domain import Exam
from daemon.rule_settings import RuleSettings
from daemon.rules.base import Finding

DAILY_LIMIT = 2
RAD06_GROUPS = ("CT", "CTA", "MR", "MRA", "UL")
_PAIRS_CT = (
    ("Hode", "Hals"),
    ("Hals", "Toraks"),
    ("Toraks", "Abdomen"),
    ("Abdomen", "Bekken"),
    ("Bekken", "Underekstremitet"),
)
_PAIRS_UL = (*_PAIRS_CT, ("Overekstremitet", "Mamma"))
PAIRS_CT = frozenset(frozenset(p) for p in _PAIRS_CT)  # CT, CTA, MRA (and mixed MR/MRA)
PAIRS_UL = frozenset(frozenset(p) for p in _PAIRS_UL)
MR_PROPER = ("MR", "MR+MRA")

Key = Hashable  # identifies one line of this message


@dataclass(frozen=True, slots=True)
class Candidate:
    """One radiology line of this message, in the judgement order. `bill` identifies
    its bill (the RAD-06 one-bill exception); `eligible`: it passed every other rule."""

    key: Key
    bill: Key
    exam: Exam
    eligible: bool
    institution_id: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the judgement found for one line: (rule id, finding) pairs. RAD-06..10
    reject the line; RAD-11 (a second ambulant add-on in one contact) only takes the
    add-on off. `exam`: the exam as approved (None when rejected)."""

    findings: tuple[tuple[str, Finding], ...] = ()
    exam: Exam | None = None


def group_of(exam: Exam, settings: RuleSettings) -> str | None:
    """The limit group: CT, MR, UL (RAD-06), intervention or nuclear (RAD-09); None for
    conventional X-ray. CTA and MRA are their own groups when the settings split them."""
    if exam.kind in ("intervention", "nuclear"):
        return exam.kind
    if exam.modality in ("CT", "CTA", "CT+CTA"):
        return "CT" if settings.ct_cta_share_limit or exam.modality == "CT" else "CTA"
    if exam.modality in ("MR", "MRA", "MR+MRA"):
        return "MR" if settings.mr_mra_share_limit or exam.modality == "MR" else "MRA"
    if exam.modality == "UL":
        return "UL"
    return None


def _rule_of(group: str) -> str:
    return "RAD-09" if group in ("intervention", "nuclear") else "RAD-06"


def _pair_list(a: Exam, b: Exam) -> str:
    """Which list of §6.2.1 applies: MR's when both exams are MR proper; UL's for two
    ultrasound exams; otherwise the one for CT, CTA and MRA."""
    if a.modality in MR_PROPER and b.modality in MR_PROPER:
        return "MR"
    return "UL" if a.modality == b.modality == "UL" else "CT"


def _region_family(exam: Exam) -> str | None:
    if exam.modality in ("CT", "CTA", "CT+CTA"):
        return "CT"
    if exam.modality in ("MR", "MRA", "MR+MRA"):
        return "MR"
    return "UL" if exam.modality == "UL" else None


def one_claim_only(a: Exam, b: Exam, settings: RuleSettings) -> str | None:
    """Why `a` and `b` may not both be paid (RAD-07), or None when they may."""
    family = _region_family(a)
    if family is None or family != _region_family(b) or a.kind in ("intervention", "nuclear"):
        return None
    ra, rb = a.regions or ("Uspesifisert",), b.regions or ("Uspesifisert",)
    for region in settings.one_claim_regions:
        if region in ra and region in rb:
            return f"begge i regionen {region}, der bare én undersøkelse gir refusjon"
    which = _pair_list(a, b)
    pairs = {
        "CT": PAIRS_CT,
        "UL": PAIRS_UL,
        "MR": frozenset(frozenset(p.split("+")) for p in settings.mr_pairs),
    }[which]
    for x in ra:
        for y in rb:
            if x != y and frozenset((x, y)) in pairs:
                return f"{x} og {y} gir bare ett krav for {which}"
    return None


def _identical(a: Exam, b: Exam) -> bool:
    """RAD-08: the same code, side and teleradiology part at the same instant."""
    return (a.code, a.side, a.tele, a.instant) == (b.code, b.side, b.tele, b.instant)


@dataclass
class Day:
    """The exams approved for one patient on one day, in the order they were approved:
    `exams` every approved line; `counted` the ones that took a slot (parts that joined
    an exam, and nuclear secondary readings, did not)."""

    settings: RuleSettings
    exams: list[Exam] = field(default_factory=list)
    counted: list[Exam] = field(default_factory=list)
    ambulant_contacts: set[str] = field(default_factory=set)

    def joins(self, exam: Exam) -> bool:
        """A teleradiology part of an exam already approved (same code and side): one
        exam for the limits (001 §6.7). A nuclear secondary reading takes no slot."""
        if exam.tele == "secondary" and exam.kind == "nuclear":
            return True
        if exam.tele is None:
            return False
        for other in self.exams:
            if (other.code, other.side) != (exam.code, exam.side):
                continue
            if exam.tele == "secondary" or (other.tele is not None and other.tele != exam.tele):
                return True
        return False

    def used(self, group: str) -> int:
        return sum(e.units for e in self.counted if group_of(e, self.settings) == group)

    def add(self, exam: Exam, joined: bool) -> None:
        self.exams.append(exam)
        if not joined:
            self.counted.append(exam)
        if exam.ambulant:
            self.ambulant_contacts.add(exam.institution_id)

    @classmethod
    def of(cls, earlier: Iterable[Exam], settings: RuleSettings) -> Day:
        """The day as the earlier messages left it, replayed in their order."""
        day = cls(settings)
        for exam in earlier:
            day.add(exam, day.joins(exam))
        return day


def _their(other: Exam, own: str) -> str:
    """How a remark may name an exam: the claiming institution's own by code and bill,
    another institution's not at all (#14 finding 3)."""
    if other.institution_id == own:
        return f"{other.code} i regning {other.regning_nr}"
    return "en undersøkelse som en annen institusjon har fått godkjent"


def _trace(exam: Exam, day: Day) -> tuple[tuple[str, str], ...]:
    """The same-day picture a reader of `explain` needs (kept by us, never sent)."""
    return (("exam", exam.describe()), *(("earlier", e.describe()) for e in day.exams))


def _one_bill_exception(
    candidates: list[Candidate], settings: RuleSettings
) -> dict[Key, tuple[str, Finding]]:
    """RAD-06: "et refusjonskrav med tre undersøkelser alltid være ugyldig": a bill
    with more than two (units) eligible exams of one CT/MR/UL group, all rejected."""
    per_bill: dict[tuple[Key, str], list[Candidate]] = {}
    for c in candidates:
        group = group_of(c.exam, settings)
        if c.eligible and group in RAD06_GROUPS:
            per_bill.setdefault((c.bill, group), []).append(c)
    out = {}
    for (_bill, group), items in per_bill.items():
        units = sum(c.exam.units for c in items)
        if units > DAILY_LIMIT:
            detail = (
                f"{units} {group}-undersøkelser i samme regning (bilateral teller som to);"
                " et krav med tre er alltid ugyldig"
            )
            inputs = (("bill_units", str(units)), ("group", group))
            for c in items:
                out[c.key] = ("RAD-06", Finding(detail, inputs))
    return out


def judge(
    candidates: Iterable[Candidate], earlier: Iterable[Exam], settings: RuleSettings
) -> dict[Key, Outcome]:
    """Outcomes per line of this message, for one patient and one day. `candidates`
    come in the judgement order; `earlier` are the exams approved before this message
    (in the order they were approved)."""
    candidates = list(candidates)
    day = Day.of(earlier, settings)
    whole_bill = _one_bill_exception(candidates, settings)
    out: dict[Key, Outcome] = {}
    for c in candidates:
        if not c.eligible:
            continue  # rejected for another reason: takes no slot (RULES.md)
        if c.key in whole_bill:
            out[c.key] = Outcome((whole_bill[c.key],))
            continue
        findings = _findings(c, day)
        if findings:
            out[c.key] = Outcome(tuple(findings))
            continue
        exam, again = c.exam, ()
        if exam.ambulant and c.institution_id in day.ambulant_contacts:
            exam = replace(exam, ambulant=False)
            detail = "tillegget er allerede godkjent for samme kontakt; undersøkelsen betales"
            again = (("RAD-11", Finding(detail, (("contact", "ambulant already paid"),))),)
        out[c.key] = Outcome(again, exam)
        day.add(exam, day.joins(exam))
    return out


def _findings(c: Candidate, day: Day) -> list[tuple[str, Finding]]:
    exam, own, settings = c.exam, c.institution_id, day.settings
    found: list[tuple[str, Finding]] = []
    for other in day.exams:
        if _identical(exam, other):
            detail = "lik undersøkelse på samme tidspunkt er allerede godkjent: "
            detail += _their(other, own)
            found.append(("RAD-08", Finding(detail, _trace(exam, day))))
            return found
    if day.joins(exam):
        return found  # a part of an exam already approved: judged with that exam
    group = group_of(exam, settings)
    if group is not None:
        used = day.used(group)
        if used + exam.units > DAILY_LIMIT:
            detail = (
                f"{used} {group}-undersøkelse(r) er allerede godkjent for pasienten denne dagen;"
                f" grensen er {DAILY_LIMIT} (bilateral teller som to)"
            )
            found.append((_rule_of(group), Finding(detail, _trace(exam, day))))
    for other in day.counted:
        reason = one_claim_only(exam, other, settings)
        if reason is not None:
            if other.institution_id != own:
                reason = "regionregelen gir bare ett krav"
            detail = f"{reason}; allerede godkjent: {_their(other, own)}"
            found.append(("RAD-07", Finding(detail, _trace(exam, day))))
            break
    for other in day.counted:
        if exam.code == other.code and "bilateral" in (exam.side, other.side):
            detail = "bilateral og samme undersøkelse samme dag; allerede godkjent: "
            detail += _their(other, own)
            found.append(("RAD-10", Finding(detail, _trace(exam, day))))
            break
    return found
