"""Common rules for every bill (RULES.md, "Common rules")."""

from __future__ import annotations

from decimal import Decimal

from daemon.domain import Bill
from daemon.rules.base import Finding, rule


@rule(
    id="COM-04",
    source="RULES.md COM-04; regelverk 000 §6 trinn 2",
    number="9004",
    text="Regningens sumBelop er ikke lik summen av linjene",
)
def bill_sum_equals_lines(bill: Bill, ctx: object) -> Finding | None:
    """Each bill's `sumBelop` equals the sum of its lines (unit amount × antall).

    A bill whose episodeID is missing or points nowhere has no lines: its sum is 0."""
    lines_sum = sum((line.total for line in bill.lines), Decimal("0"))
    if lines_sum != bill.sum_amount:
        return Finding(
            detail=f"sumBelop {bill.sum_amount}, linjene summerer til {lines_sum}",
            inputs=(("sumBelop", str(bill.sum_amount)), ("lines", str(lines_sum))),
        )
    return None
