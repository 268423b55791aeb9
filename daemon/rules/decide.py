"""Decide: run every rule on every bill and line; keep the trace.

- claim rules: a finding refuses the whole message (AppRec status 2);
- bill rules: a finding rejects the bill (all its lines approve 0);
- line rules: a finding rejects that line; the bill is reduced, or rejected when
  nothing is left.

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
from dataclasses import replace
from decimal import Decimal

from daemon.domain import (
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
from daemon.rules import common, lab, radiology, scope
from daemon.rules.base import Rulebook, collect
from daemon.rules.context import RuleContext

RULEBOOK: Rulebook = collect(common, lab, radiology, scope)
KRAV = "/MsgHead/Document/RefDoc/Content/Melding/Institusjon/Enhet/Krav"
ZERO = Decimal("0")


def rule_context(claim: Claim, ctx: Context, sender: Partner | None = None) -> RuleContext:
    return RuleContext(
        today=ctx.now.date(),
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
    """`progress(n)` is called after each bill (n bills judged) when given."""
    trace = Trace()
    problems = []
    for fn in book.claim:
        info, finding = fn.rule, fn(claim, rc)
        trace.add(info.id, "", 0, finding)
        if finding is not None:
            text = f"{info.text}: {finding.detail} [{info.id}]"
            problems.append(Problem(Layer.PAYLOAD, info.number, text, KRAV, scheme="8223"))
    if problems:
        return problems, Decision((), tuple(trace.fired), trace.count)
    if progress is None:
        bills = tuple(_bill(bill, rc, book, trace) for bill in claim.bills)
    else:
        judged = []
        for n, bill in enumerate(claim.bills, start=1):
            judged.append(_bill(bill, rc, book, trace))
            progress(n)
        bills = tuple(judged)
    return [], Decision(bills, tuple(trace.fired), trace.count)


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


def _bill(bill: Bill, rc: RuleContext, book: Rulebook, trace: Trace) -> BillDecision:
    remarks: list[Remark] = []
    credit = bill.transaction_type == TRANSACTION_CREDIT
    for fn in book.bill:
        if credit and not fn.rule.credits:
            continue
        info, finding = fn.rule, fn(bill, rc)
        trace.add(info.id, bill.regning_nr, 0, finding)
        if finding is not None:
            text = f"{info.text}: {finding.detail}" if finding.detail else info.text
            remarks.append(Remark(info.id, info.number, f"{text} [{info.id}]", bill.regning_nr))
    bill_rejected = bool(remarks)
    lines = []
    for number, line in enumerate(() if credit else bill.lines, start=1):
        fired = False
        for fn in book.line:
            info, finding = fn.rule, fn(line, bill, rc)
            trace.add(info.id, bill.regning_nr, number, finding)
            if finding is not None:
                fired = True
                if bill_rejected:
                    continue  # traced, but the sender hears only why the bill failed
                text = f"linje {number} ({line.raw_code}): {info.text}"
                text += f": {finding.detail}" if finding.detail else ""
                remarks.append(
                    Remark(info.id, info.number, f"{text} [{info.id}]", bill.regning_nr, number)
                )
        paid = not (fired or bill_rejected)
        lines.append(_line(number, line, bill, rc, paid))
    approved = sum((ld.approved for ld in lines), ZERO)
    if bill_rejected or (remarks and approved == ZERO):
        verdict, approved = Verdict.REJECTED, ZERO
    elif remarks:
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


def _payments(bill: Bill, lines: list[LineDecision], verdict: Verdict, rc: RuleContext):
    """Who gets what. A new bill: its lines grouped by payee. A correction or credit
    moves money with the payees of the bill it names (COM-07 made sure it was paid): a
    credit takes back what each was paid, a correction pays each the difference between
    the judged amount and what it was paid. Rejected: the same payees, 0."""
    judged: dict[str | None, list[Decimal]] = {}
    for ld in lines:
        claimed, approved = judged.setdefault(ld.payee, [ZERO, ZERO])
        judged[ld.payee] = [claimed + ld.claimed, approved + ld.approved]
    if len(judged) == 1:  # the bill as claimed, whatever its lines add up to
        (only,) = judged
        judged[only][0] = bill.sum_amount
    if bill.is_new:
        if not judged:  # no lines (no episode): the institution's payee sees it rejected
            return (Payment(lab.payee(rc.institution), bill.sum_amount, ZERO),)
        return tuple(Payment(p, c, a) for p, (c, a) in judged.items())
    paid = rc.history.paid_by_payee(rc.claim.institution_id, bill.uuid) if bill.uuid else {}
    credit = bill.transaction_type == TRANSACTION_CREDIT
    if verdict == Verdict.REJECTED or not paid:
        payees = list(paid) or list(judged) or [lab.payee(rc.institution)]
        claimed = -bill.sum_amount if credit else bill.sum_amount
        return tuple(Payment(p, claimed if i == 0 else ZERO, ZERO) for i, p in enumerate(payees))
    if credit:
        return tuple(Payment(p, -amount, -amount) for p, amount in paid.items())
    out = []
    for payee in dict.fromkeys([*judged, *paid]):
        claimed, approved = judged.get(payee, [ZERO, ZERO])
        out.append(Payment(payee, claimed, approved - paid.get(payee, ZERO)))
    return tuple(out)


def _line(number: int, line: Line, bill: Bill, rc: RuleContext, paid: bool) -> LineDecision:
    """A line's outcome: the category its amount came from, who is paid for it (LAB-10
    for lab lines, RAD-15 for radiology) and, for radiology, the exam the same-day rules
    remember once it is approved."""
    category = exam = None
    payee = lab.payee(rc.institution)  # lab lines (LAB-10) and lines without a rule set
    if line.kind == "takst":
        code = rc.tariffs.code(line.raw_code, bill.service_date)
        category = code.category if code else None
    elif radiology.is_radiology(line, rc):
        found = radiology.entry(line, bill, rc)
        category = found[1].category if found else None
        payee = radiology.payee(bill, rc)
        exam = radiology.exam_of(line, number, bill, rc) if paid else None
        if exam is not None:
            exam = replace(exam, institution_id=rc.claim.institution_id, uuid=bill.uuid)
    return LineDecision(
        line=number,
        code=line.raw_code,
        count=line.count,
        claimed=line.total,
        approved=line.total if paid else ZERO,
        verdict=Verdict.APPROVED if paid else Verdict.REJECTED,
        category=category,
        payee=payee,
        exam=exam,
    )
