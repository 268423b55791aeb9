"""Decide: run every rule on every bill and line; keep the trace.

- claim rules: a finding refuses the whole message (AppRec status 2);
- bill rules: a finding rejects the bill (all its lines approve 0);
- line rules: a finding rejects that line; the bill is reduced, or rejected when
  nothing is left.

The engine never stops at the first finding: the sender is told everything at once,
and every evaluation lands in the trace as (rule, bill, line, fired, inputs).
An approved line is paid antall × unit amount, which LAB-09 has checked against the
rate. A credit (typeTransaksjon 5) claims nothing: rules declared `credits=False`
and all line rules are not run on it, and if it passes it takes back what its uuid
has been paid (a negative amount). A correction pays only the difference.
"""

from __future__ import annotations

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
    Problem,
    Remark,
    TraceEntry,
    Verdict,
)
from daemon.pipeline import Context, Work
from daemon.registry import Partner
from daemon.rules import common, lab, radiology, scope
from daemon.rules.base import Rulebook, collect
from daemon.rules.context import RuleContext
from daemon.tariffs import Tariffs

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
    problems, decision = evaluate(work.claim, rc, RULEBOOK)
    work = work.with_(decision=decision)
    return work.failed(*problems) if problems else work


def evaluate(claim: Claim, rc: RuleContext, book: Rulebook) -> tuple[list[Problem], Decision]:
    trace: list[TraceEntry] = []
    problems = []
    for fn in book.claim:
        info, finding = fn.rule, fn(claim, rc)
        trace.append((info.id, "", 0, finding is not None, finding.inputs if finding else ()))
        if finding is not None:
            text = f"{info.text}: {finding.detail} [{info.id}]"
            problems.append(Problem(Layer.PAYLOAD, info.number, text, KRAV, scheme="8223"))
    if problems:
        return problems, Decision((), tuple(trace))
    bills = tuple(_bill(bill, rc, book, trace) for bill in claim.bills)
    return [], Decision(bills, tuple(trace))


def _bill(bill: Bill, rc: RuleContext, book: Rulebook, trace: list[TraceEntry]) -> BillDecision:
    remarks: list[Remark] = []
    credit = bill.transaction_type == TRANSACTION_CREDIT
    for fn in book.bill:
        if credit and not fn.rule.credits:
            continue
        info, finding = fn.rule, fn(bill, rc)
        trace.append(
            (info.id, bill.regning_nr, 0, finding is not None, finding.inputs if finding else ())
        )
        if finding is not None:
            text = f"{info.text}: {finding.detail}" if finding.detail else info.text
            remarks.append(Remark(info.id, info.number, f"{text} [{info.id}]", bill.regning_nr))
    bill_rejected = bool(remarks)
    lines = []
    for number, line in enumerate(() if credit else bill.lines, start=1):
        fired = False
        for fn in book.line:
            info, finding = fn.rule, fn(line, bill, rc)
            inputs = finding.inputs if finding else ()
            trace.append((info.id, bill.regning_nr, number, finding is not None, inputs))
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
    if verdict != Verdict.REJECTED and not bill.is_new:
        # what this uuid has been paid so far (COM-07 made sure there is something):
        # a credit takes it all back, a correction pays only the difference
        balance = rc.history.paid_bill(rc.claim.institution_id, bill.uuid) or ZERO
        approved = -balance if credit else approved - balance
    payees = {ld.payee for ld in lines if ld.approved != ZERO}
    if not bill.is_new:  # money back to, or more to, whoever was paid before
        payee = rc.history.payee_of(rc.claim.institution_id, bill.uuid) or next(iter(payees), None)
    else:
        payee = payees.pop() if len(payees) == 1 else None
    return BillDecision(
        regning_nr=bill.regning_nr,
        uuid=bill.uuid,
        verdict=verdict,
        claimed=bill.sum_amount,
        approved=approved,
        remarks=tuple(remarks),
        lines=tuple(lines),
        payee=payee if approved != ZERO else None,
        transaction_type=bill.transaction_type,
    )


def _line(number: int, line: Line, bill: Bill, rc: RuleContext, paid: bool) -> LineDecision:
    """A line's outcome: the category its amount came from, who is paid for it (LAB-10
    for lab lines, RAD-15 for radiology) and, for radiology, the exam the same-day rules
    remember once it is approved."""
    category = payee = exam = None
    if line.kind == "takst":
        code = rc.tariffs.code(line.raw_code, bill.service_date)
        category, payee = (code.category if code else None), lab.payee(rc.institution)
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
        payee=payee if paid else None,
        exam=exam,
    )
