"""Decide: run every rule on every bill and line; keep the trace.

- claim rules: a finding refuses the whole message (AppRec status 2);
- bill rules: a finding rejects the bill (all its lines approve 0);
- line rules: a finding rejects that line; the bill is reduced, or rejected when
  nothing is left;
- exam rules (RAD-06..11): run last, on the radiology lines that passed every other
  rule, in one judgement order against the exams already approved (`sameday`).

The engine never stops at the first finding: the sender is told everything at once,
and every evaluation is counted; the ones that fire land in the trace as (rule, bill,
line, fired, inputs).
An approved line is paid antall × unit amount, which LAB-09 has checked against the
rate. A credit (typeTransaksjon 5) claims nothing: rules declared `credits=False`
and all line rules are not run on it, and if it passes it takes back what its uuid
has been paid (a negative amount). A correction pays only the difference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC
from decimal import Decimal

from daemon.domain import (
    OSLO,
    TRANSACTION_CREDIT,
    Bill,
    BillDecision,
    Claim,
    Decision,
    Layer,
    Line,
    LineDecision,
    Payment,
    Problem,
    Remark,
    TraceEntry,
    Verdict,
)
from daemon.records import Context, Work
from daemon.registers.registry import Partner
from daemon.registers.tariffs import Tariffs
from daemon.rules import common, egenandel, lab, radiology, sameday, scope
from daemon.rules.base import Rulebook, collect
from daemon.rules.context import RuleContext

RULEBOOK: Rulebook = collect(common, egenandel, lab, radiology, scope)
KRAV = "/MsgHead/Document/RefDoc/Content/Melding/Institusjon/Enhet/Krav"
ZERO = Decimal("0")
RECORDED = "egenandel-registrert"  # the category of a recorded egenandel line (EG-03)


def rule_context(claim: Claim, ctx: Context, sender: Partner | None = None) -> RuleContext:
    now = ctx.now if ctx.now.tzinfo is not None else ctx.now.replace(tzinfo=UTC)
    return RuleContext(
        today=now.astimezone(OSLO).date(),  # COM-08: "today" is the date in Norway
        claim=claim,
        tariffs=ctx.tariffs if ctx.tariffs is not None else Tariffs.empty(),
        institution=ctx.registry.institution(claim.institution_id),
        history=ctx.history,
        settings=ctx.settings.rules,
        sender=sender,
    )


def decide(work: Work, ctx: Context) -> Work:
    rc = rule_context(work.claim, ctx, work.partner)
    every = ctx.settings.intake.progress_every_bills
    progress = None
    if ctx.progress is not None and len(work.claim.bills) >= every:
        total, tell = len(work.claim.bills), ctx.progress

        def progress(done: int) -> None:
            if done % every == 0:
                tell("decide", done, total)

    problems, decision = evaluate(work.claim, rc, RULEBOOK, progress)
    work = work.with_(decision=decision)
    return work.failed(*problems) if problems else work


def evaluate(
    claim: Claim, rc: RuleContext, book: Rulebook, progress: Callable[[int], None] | None = None
) -> tuple[list[Problem], Decision]:
    """Claim rules; then every bill's bill and line rules; then the same-day judgement
    of the radiology lines that passed them, in the judgement order (`_same_day`); then
    the exam rules, which read that judgement. `progress(n)` is called after each bill
    (n bills judged) when given."""
    trace = Trace()
    problems, refused = claim_rules(claim, rc, book, trace)
    if refused is not None:
        return problems, refused
    judged = []
    for n, bill in enumerate(claim.bills, start=1):
        judged.append(_judge(bill, rc, book, trace))
        if progress is not None:
            progress(n)
    outcomes, basis = _same_day(judged, rc)
    rc = replace(rc, same_day=outcomes)
    bills = tuple(_finish(j, rc, book, trace) for j in judged)
    return [], Decision(bills, tuple(trace.fired), trace.count, basis)


def claim_rules(
    claim: Claim, rc: RuleContext, book: Rulebook, trace: Trace
) -> tuple[list[Problem], Decision | None]:
    """The claim rules; when one fires, its problems and the decision that judges no
    bill (the whole message is refused)."""
    problems = []
    for fn in book.claim:
        info, finding = fn.rule, fn(claim, rc)
        trace.add(info.id, "", 0, finding)
        if finding is not None:
            text = f"{info.text}: {finding.detail} [{info.id}]"
            layer = Layer.REGISTRY if info.retryable else Layer.PAYLOAD
            problems.append(Problem(layer, info.number, text, KRAV, scheme="8223"))
    if problems:
        return problems, Decision((), tuple(trace.fired), trace.count)
    return [], None


class Trace:
    """What the rules found: every evaluation is counted, the ones that fired are kept
    with their inputs. (Keeping the silent ones too cost about 5 kB per bill: a
    100 000-bill claim would hold half a gigabyte of them.)"""

    __slots__ = ("count", "fired")

    def __init__(self) -> None:
        self.count = 0
        self.fired: list[TraceEntry] = []

    def add(self, rule_id: str, regning_nr: str, line: int, finding) -> None:
        self.count += 1
        if finding is not None:
            self.fired.append((rule_id, regning_nr, line, True, finding.inputs))


@dataclass
class _Judged:
    """A bill after its bill and line rules: the remarks so far, whether the bill is
    rejected, and per line whether a rule rejected it and what it is paid less."""

    bill: Bill
    remarks: list[Remark]
    rejected: bool
    line_rejected: list[bool]
    deducted: list[Decimal]

    @property
    def credit(self) -> bool:
        return self.bill.transaction_type == TRANSACTION_CREDIT


def _judge(bill: Bill, rc: RuleContext, book: Rulebook, trace: Trace) -> _Judged:
    credit = bill.transaction_type == TRANSACTION_CREDIT
    j = _Judged(bill, [], False, [], [])
    for fn in book.bill:
        if credit and not fn.rule.credits:
            continue
        info, finding = fn.rule, fn(bill, rc)
        trace.add(info.id, bill.regning_nr, 0, finding)
        if finding is not None:
            text = f"{info.text}: {finding.detail}" if finding.detail else info.text
            j.remarks.append(Remark(info.id, info.number, f"{text} [{info.id}]", bill.regning_nr))
            j.rejected = j.rejected or finding.rejects
    for number, line in enumerate(() if credit else bill.lines, start=1):
        j.line_rejected.append(False)
        j.deducted.append(ZERO)
        _line_rules(j, number, line, book.lines_for(line.kind), rc, trace)
    return j


def _line_rules(j: _Judged, number: int, line: Line, rules, rc: RuleContext, trace: Trace):
    bill = j.bill
    for fn in rules:
        info, finding = fn.rule, fn(line, bill, rc)
        trace.add(info.id, bill.regning_nr, number, finding)
        if finding is None:
            continue
        if finding.rejects:
            j.line_rejected[number - 1] = True
        elif finding.deduct is not None:
            j.deducted[number - 1] += finding.deduct
        if j.rejected:
            continue  # traced, but the sender hears only why the bill failed
        text = f"linje {number} ({line.raw_code}): {info.text}"
        text += f": {finding.detail}" if finding.detail else ""
        j.remarks.append(
            Remark(info.id, info.number, f"{text} [{info.id}]", bill.regning_nr, number)
        )


def _same_day(judged: list[_Judged], rc: RuleContext):
    """The radiology lines of the claim as candidates for the same-day judgement, per
    patient and day, in the judgement order: by the exam's TransDatoTid (as a UTC
    instant), then by the order in the file. A line rejected by another rule, or on a
    rejected bill, is a candidate that takes no slot."""
    inst = rc.claim.institution_id
    order = []
    for position, j in enumerate(judged):
        bill = j.bill
        patient = bill.episode.patient.key if bill.episode else None
        if patient is None or j.credit:
            continue
        for number, line in enumerate(bill.lines, start=1):
            exam = radiology.exam_of(line, number, bill, rc)
            if exam is None:
                continue
            exam = replace(exam, institution_id=inst, uuid=bill.uuid)
            eligible = not (j.rejected or j.line_rejected[number - 1])
            key = (id(bill), id(line))
            candidate = sameday.Candidate(key, id(bill), exam, eligible, inst)
            order.append(((bill.instant, position, number), (patient, exam.day), candidate))
    days: dict[tuple[str, str], list[sameday.Candidate]] = {}
    for _, day, candidate in sorted(order, key=lambda o: o[0]):
        days.setdefault(day, []).append(candidate)
    return rc.judge_same_day(days) if days else ({}, ())


def _finish(j: _Judged, rc: RuleContext, book: Rulebook, trace: Trace) -> BillDecision:
    bill = j.bill
    lines = []
    for number, line in enumerate(() if j.credit else bill.lines, start=1):
        _line_rules(j, number, line, book.exam, rc, trace)
        paid = not (j.line_rejected[number - 1] or j.rejected)
        lines.append(_line(number, line, bill, rc, paid, j.deducted[number - 1]))
    remarks = j.remarks
    approved = sum((ld.approved for ld in lines), ZERO)
    # a recorded egenandel (typeTransaksjon 2-4, EG-03) asks no refund: it is approved
    # at 0 and does not make the bill "reduced"
    claimed = sum((ld.claimed for ld in lines if ld.category != RECORDED), ZERO)
    rejecting = j.rejected or any(j.line_rejected)
    if j.rejected or (rejecting and approved == ZERO and not _recorded(lines)):
        verdict, approved = Verdict.REJECTED, ZERO
    elif rejecting or approved < claimed:
        verdict = Verdict.REDUCED
    else:
        verdict = Verdict.APPROVED
    payments = _payments(bill, lines, verdict, rc)
    if not bill.is_new:
        approved = sum((p.approved for p in payments), ZERO)
    payees = {p.payee for p in payments if p.approved != ZERO}
    return BillDecision(
        regning_nr=bill.regning_nr,
        uuid=bill.uuid,
        verdict=verdict,
        claimed=bill.sum_amount,
        approved=approved,
        remarks=tuple(remarks),
        lines=tuple(lines),
        payee=payees.pop() if len(payees) == 1 else None,
        transaction_type=bill.transaction_type,
        payments=payments,
    )


def _recorded(lines: list[LineDecision]) -> bool:
    """Does the bill hold a recorded egenandel that passed its rules (EG-03)? Then it
    is not rejected, even when it moves no money."""
    return any(ld.category == RECORDED and ld.verdict == Verdict.APPROVED for ld in lines)


def _kind(ld: LineDecision) -> str:
    return "egenandel" if ld.category in ("egenandel", RECORDED) else "refusjon"


def _payments(bill: Bill, lines: list[LineDecision], verdict: Verdict, rc: RuleContext):
    """Who gets what. A new bill: its lines grouped by payee. A correction or credit
    moves money with the payees of the bill it names (COM-07 made sure it was paid): a
    credit takes back what each was paid, a correction pays each the difference between
    the judged amount and what it was paid. Rejected: the same payees, 0."""
    judged: dict[str | None, list[Decimal]] = {}
    kinds: dict[str | None, str] = {}
    for ld in lines:
        if ld.category == RECORDED and len(lines) > 1:
            continue  # a recorded egenandel beside other lines moves no money (EG-03)
        claimed, approved = judged.setdefault(ld.payee, [ZERO, ZERO])
        judged[ld.payee] = [claimed + ld.claimed, approved + ld.approved]
        kinds.setdefault(ld.payee, _kind(ld))
    if len(judged) == 1:  # the bill as claimed, whatever its lines add up to
        (only,) = judged
        judged[only][0] = bill.sum_amount
    if bill.is_new:
        if not judged:  # no lines (no episode): the institution's payee sees it rejected
            return (Payment(lab.payee(rc.institution), bill.sum_amount, ZERO),)
        return tuple(Payment(p, c, a, kinds[p]) for p, (c, a) in judged.items())
    paid = rc.history.paid_by_payee(rc.claim.institution_id, bill.uuid) if bill.uuid else {}
    # a correction or credit of an egenandel moves the institution's egenandel money
    copay = egenandel.payee(rc) if any(egenandel.is_egenandel(x) for x in bill.lines) else None
    kinds.update({p: "egenandel" for p in [*paid, *judged] if p == copay})
    if copay is not None:
        kinds.setdefault(copay, "egenandel")
    credit = bill.transaction_type == TRANSACTION_CREDIT
    if verdict == Verdict.REJECTED or not paid:
        payees = list(paid) or list(judged) or [copay or lab.payee(rc.institution)]
        claimed = -bill.sum_amount if credit else bill.sum_amount
        return tuple(
            Payment(p, claimed if i == 0 else ZERO, ZERO, kinds.get(p, "refusjon"))
            for i, p in enumerate(payees)
        )
    if credit:
        return tuple(
            Payment(p, -amount, -amount, kinds.get(p, "refusjon")) for p, amount in paid.items()
        )
    out = []
    for payee in dict.fromkeys([*judged, *paid]):
        claimed, approved = judged.get(payee, [ZERO, ZERO])
        kind = kinds.get(payee, "refusjon")
        out.append(Payment(payee, claimed, approved - paid.get(payee, ZERO), kind))
    return tuple(out)


def _line(
    number: int, line: Line, bill: Bill, rc: RuleContext, paid: bool, deducted: Decimal
) -> LineDecision:
    """A line's outcome: the category its amount came from, who is paid for it (LAB-10
    for lab lines, RAD-15 for radiology) and, for radiology, the exam the same-day rules
    remember once it is approved (as the judgement approved it)."""
    category = exam = None
    payee = lab.payee(rc.institution)  # lab lines (LAB-10) and lines without a rule set
    if line.kind == "egenandel":  # EG-02: the hospital's own lost income
        payee = egenandel.payee(rc)
        if bill.transaction_type != egenandel.EXEMPT:
            # EG-03: recorded, no refund; a rule that rejects it still rejects it
            verdict = Verdict.APPROVED if paid else Verdict.REJECTED
            return LineDecision(
                number, line.raw_code, line.count, line.total, ZERO, verdict, RECORDED, payee
            )
        category = "egenandel"
    elif line.kind == "takst":
        code = rc.tariffs.code(line.raw_code, bill.service_date)
        category = code.category if code else None
    elif radiology.is_radiology(line, rc):
        found = radiology.entry(line, bill, rc)
        category = found[1].category if found else None
        payee = radiology.payee(bill, rc)
        outcome = rc.same_day.get((id(bill), id(line)))
        exam = outcome.exam if paid and outcome is not None else None
    approved = max(line.total - deducted, ZERO) if paid else ZERO
    return LineDecision(
        line=number,
        code=line.raw_code,
        count=line.count,
        claimed=line.total,
        approved=approved,
        verdict=Verdict.APPROVED if paid else Verdict.REJECTED,
        category=category,
        payee=payee,
        exam=exam,
    )
