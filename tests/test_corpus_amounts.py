"""The corpus expectations' amounts, against figures the tests wrote themselves.

`tests/corpus/expected/*/decision.json` is recorded from what the daemon decided
(`replay --record`), so comparing a replay with it only proves the daemon still does
what it did. Here the recorded amounts are checked against the CASES tables, whose
amounts come from the rule text and the tables written in tests/test_lab_rules.py and
tests/test_radiology_rules.py: an approving case pays exactly what its CASES row claims,
each radiology line has the category the test's own table gives its code, and a case
where RAD-14 or LAB-09 (the amount rules) fire pays nothing for the line they name.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tests.claims import L, P
from tests.conftest import ROOT
from tests.test_lab_rules import CASES as LAB
from tests.test_radiology_rules import CASES as RAD
from tests.test_radiology_rules import CATEGORY

EXPECTED = ROOT / "tests" / "corpus" / "expected"
ROWS = [(f"lab-{c[0]}.msg", *c[1:]) for c in LAB] + [(f"rad-{c[0]}.msg", *c[1:]) for c in RAD]


def _claimed(line) -> Decimal:
    return Decimal(line.unit) * line.count if isinstance(line, L) else Decimal(line.amount)


def _in_decision_order(bill) -> list:
    """The decision lists a bill's Takst lines first, then its Prosedyre lines."""
    return [x for x in bill.lines if isinstance(x, L)] + [x for x in bill.lines if isinstance(x, P)]


# lines paid less than they claim, by the rule text's own figures: RAD-11's 100 kr comes
# once per contact, so the second ambulant exam of a contact is paid 350 - 100 kr
REDUCED = {("rad-rad11-twice-in-one-contact.msg", "SNG0AA/ZTX0XB//ZTX0AD"): Decimal("250.00")}


@pytest.mark.parametrize(("name", "rule_id", "fires", "claim"), ROWS, ids=[r[0] for r in ROWS])
def test_recorded_amounts_match_the_tests_own_figures(name, rule_id, fires, claim):
    decision = json.loads((EXPECTED / name / "decision.json").read_text())
    bills = decision["bills"]
    if not bills:  # the whole claim refused (COM-04 on the Krav's count or sum): no payment
        assert fires and decision["apprec_status"] == "2", name
        return
    assert len(bills) == len(claim.bills), name
    for recorded, sent in zip(bills, claim.bills, strict=True):
        lines = _in_decision_order(sent)
        if not recorded["lines"]:  # judged as a whole (COM-04, COM-07): no line verdicts
            assert recorded["verdict"] == "rejected" and Decimal(recorded["approved"]) == 0
            assert Decimal(recorded["claimed"]) == sent.total(), name
            continue
        assert [Decimal(x["claimed"]) for x in recorded["lines"]] == [_claimed(x) for x in lines]
        for x, line in zip(recorded["lines"], lines, strict=True):
            code = line.code.split("/")[0]
            if isinstance(line, P) and code in CATEGORY and x.get("category"):
                assert x["category"] == CATEGORY[code], (name, code)
            if x["verdict"] == "approved":
                paid = REDUCED.get((name, line.code), _claimed(line))
                assert Decimal(x["approved"]) == paid, (name, code)
            else:
                assert Decimal(x["approved"]) == 0, (name, code)
        if not fires:
            assert recorded["verdict"] == "approved", name
            assert Decimal(recorded["approved"]) == sent.total(), name
        approved_lines = sum(Decimal(x["approved"]) for x in recorded["lines"])
        if recorded["verdict"] == "rejected":
            assert Decimal(recorded["approved"]) == 0, name
        else:
            assert Decimal(recorded["approved"]) == approved_lines, name
    if fires and rule_id in ("RAD-14", "LAB-09"):
        named = [
            x for b in bills for x in b["lines"] if any(e["rule"] == rule_id for e in x["fired"])
        ]
        assert named and all(Decimal(x["approved"]) == 0 for x in named), name
