"""Decide: run every rule on every bill; keep the trace.

Verdict per bill: rejected if any "reject" rule fired, reduced if a "reduce" rule
lowered the amount, approved otherwise. The engine never stops at the first finding:
the sender is told everything at once.
"""

from __future__ import annotations

from decimal import Decimal

from daemon.domain import Bill, BillDecision, Decision, Remark, Verdict
from daemon.pipeline import Context, Work
from daemon.rules import common
from daemon.rules.base import BillRule, collect

RULEBOOK: tuple[BillRule, ...] = collect(common)


def decide(work: Work, ctx: Context) -> Work:
    return work.with_(decision=evaluate(work.claim.bills, ctx, RULEBOOK))


def evaluate(bills: tuple[Bill, ...], ctx: Context, rules: tuple[BillRule, ...]) -> Decision:
    decisions = []
    trace: list[tuple[str, str, bool, tuple[tuple[str, str], ...]]] = []
    for bill in bills:
        remarks: list[Remark] = []
        approved = bill.sum_amount
        rejected = False
        for fn in rules:
            info = fn.rule
            finding = fn(bill, ctx)
            inputs = finding.inputs if finding is not None else ()
            trace.append((info.id, bill.regning_nr, finding is not None, inputs))
            if finding is None:
                continue
            text = f"{info.text}: {finding.detail}" if finding.detail else info.text
            remarks.append(Remark(info.id, info.number, text, bill.regning_nr))
            if info.outcome == "reject":
                rejected = True
            elif finding.approved is not None:
                approved = min(approved, finding.approved)
        if rejected:
            verdict, approved = Verdict.REJECTED, Decimal("0")
        elif approved < bill.sum_amount:
            verdict = Verdict.REDUCED
        else:
            verdict = Verdict.APPROVED
        decisions.append(
            BillDecision(
                regning_nr=bill.regning_nr,
                uuid=bill.uuid,
                verdict=verdict,
                claimed=bill.sum_amount,
                approved=approved,
                remarks=tuple(remarks),
            )
        )
    return Decision(tuple(decisions), tuple(trace))
