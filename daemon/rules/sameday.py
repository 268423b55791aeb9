"""Same patient, same day: the radiology limits across lines, bills and messages.

RAD-06, RAD-07, RAD-08, RAD-09 and RAD-10 judge an exam against every other exam of
the same patient on the same day: the other radiology lines of this message, and the
exams approved earlier (in other messages, from any institution), which the ledger
remembers (`BillHistory.exams_on`).

How it decides (RULES.md leaves the order open; this is the documented choice):

- **Within one message** the judgement is symmetric, so it does not depend on the
  order of bills or lines: when the exams of a group break a limit, *every* exam of that
  group in the message is rejected ("a claim with three is always invalid"); when two
  exams form a forbidden pair, both are rejected.
- **Across messages** the first approved wins: an earlier approved exam is never taken
  back by a later message; the later exams that break the limit are rejected.
- Every radiology exam in the message counts, whatever else is wrong with it; of the
  earlier ones only the approved count (a rejected exam was never paid). An exam whose
  bill is corrected or credited in this message no longer counts.
- Exams of a patient without a fødselsnummer/D-nummer (no pseudonym) are not grouped.

Groups (per modality family, §6.2.1 "samme modalitet"): CT (CT, CTA, CT+CTA), MR (MR,
MRA, MR+MRA) and UL, at most two exams a day each (RAD-06); interventions and nuclear
medicine, at most two a day each (RAD-09). A bilateral exam counts as two.
Conventional X-ray (RG, RGA, RGV) has no limit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable

from daemon.domain import Exam
from daemon.rules.base import Finding

DAILY_LIMIT = 2
LIMIT_RULE = {"CT": "RAD-06", "MR": "RAD-06", "UL": "RAD-06"}
LIMIT_RULE |= {"intervention": "RAD-09", "nuclear": "RAD-09"}
REGION_GROUPS = ("CT", "MR", "UL")
# within these regions only one claim a day (Hals is named in neither list of §6.2.1:
# treated as one-claim, RULES.md RAD-07); Hode, Toraks, Mamma, Overekstremitet and
# Underekstremitet allow two separate exams
ONE_CLAIM_REGIONS = ("Kolumna", "Abdomen", "Bekken", "Uspesifisert", "Hals")
_PAIRS_CT = (
    ("Hode", "Hals"),
    ("Hals", "Toraks"),
    ("Toraks", "Abdomen"),
    ("Abdomen", "Bekken"),
    ("Bekken", "Underekstremitet"),
)
_PAIRS_UL = (*_PAIRS_CT, ("Overekstremitet", "Mamma"))
_PAIRS_MR = (
    ("Hode", "Hals"),
    ("Hode", "Kolumna"),
    ("Toraks", "Abdomen"),
    ("Abdomen", "Bekken"),
    ("Bekken", "Kolumna"),
)
ONE_CLAIM_PAIRS = {
    "CT": frozenset(frozenset(p) for p in _PAIRS_CT),  # CT, CTA, MRA (and mixed MR/MRA)
    "UL": frozenset(frozenset(p) for p in _PAIRS_UL),
    "MR": frozenset(frozenset(p) for p in _PAIRS_MR),
}
MR_PROPER = ("MR", "MR+MRA")

Key = Hashable  # identifies one line of this message


def pair_list(a: Exam, b: Exam) -> str:
    """Which list of §6.2.1 applies: MR's when both exams are MR proper; UL's for two
    ultrasound exams; otherwise the one for CT, CTA and MRA."""
    if a.modality in MR_PROPER and b.modality in MR_PROPER:
        return "MR"
    return "UL" if a.group == b.group == "UL" else "CT"


def one_claim_only(a: Exam, b: Exam) -> str | None:
    """Why `a` and `b` may not both be paid (RAD-07), or None when they may."""
    if a.group != b.group or a.group not in REGION_GROUPS:
        return None
    ra, rb = a.regions or ("Uspesifisert",), b.regions or ("Uspesifisert",)
    for region in ONE_CLAIM_REGIONS:
        if region in ra and region in rb:
            return f"begge i regionen {region}, der bare én undersøkelse gir refusjon"
    pairs = ONE_CLAIM_PAIRS[pair_list(a, b)]
    for x in ra:
        for y in rb:
            if x != y and frozenset((x, y)) in pairs:
                return f"{x} og {y} gir bare ett krav for {pair_list(a, b)}"
    return None


def judge(
    current: Iterable[tuple[Key, Exam]], earlier: Iterable[Exam]
) -> dict[Key, list[tuple[str, Finding]]]:
    """Findings per line of this message, for one patient and one day."""
    current, earlier = list(current), list(earlier)
    out: dict[Key, list[tuple[str, Finding]]] = defaultdict(list)
    by_group: dict[str, list[tuple[Key, Exam]]] = defaultdict(list)
    for key, exam in current:
        if exam.group is not None:
            by_group[exam.group].append((key, exam))
    for group, items in by_group.items():
        before = [e for e in earlier if e.group == group]
        total = sum(e.units for _, e in items) + sum(e.units for e in before)
        if total > DAILY_LIMIT:
            context = _context(before, [e for _, e in items])
            detail = (
                f"{total} {group}-undersøkelser samme dag, grensen er {DAILY_LIMIT}"
                " (bilateral teller som to)"
            )
            if before:
                detail += "; godkjent tidligere: " + ", ".join(e.describe() for e in before)
            for key, _ in items:
                out[key].append((LIMIT_RULE[group], Finding(detail, context)))
    for i, (key, exam) in enumerate(current):
        for other in earlier:
            _pairwise(out, key, exam, other, "godkjent tidligere")
        for j, (_, other) in enumerate(current):
            if i != j:
                _pairwise(out, key, exam, other, "i samme melding")
    return out


def _pairwise(out, key: Key, exam: Exam, other: Exam, when: str) -> None:
    context = (("exam", exam.describe()), ("other", other.describe()))
    reason = one_claim_only(exam, other)
    if reason is not None:
        out[key].append(("RAD-07", Finding(f"{reason}; {when}: {other.describe()}", context)))
    if exam.code == other.code and exam.side == other.side and exam.instant == other.instant:
        out[key].append(
            (
                "RAD-08",
                Finding(f"lik undersøkelse samme tidspunkt, {when}: {other.describe()}", context),
            )
        )
    if exam.code == other.code and "bilateral" in (exam.side, other.side):
        out[key].append(
            (
                "RAD-10",
                Finding(
                    f"bilateral og en annen {exam.code} samme dag, {when}: {other.describe()}",
                    context,
                ),
            )
        )


def _context(before: list[Exam], now: list[Exam]) -> tuple[tuple[str, str], ...]:
    """The same-day picture a reader of `explain` needs: what was there already."""
    return tuple(("earlier", e.describe()) for e in before) + tuple(
        ("this_message", e.describe()) for e in now
    )
