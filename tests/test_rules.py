"""The rules engine and the rules it carries: every rule has an id, a source and tests."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from daemon import decide
from daemon.domain import Bill, Episode, Line, Patient, Verdict
from daemon.rules import base, common


def bill(sum_amount: str, *amounts: tuple[str, int], regning_nr: str = "1") -> Bill:
    lines = tuple(
        Line("takst", f"NPU{i:05d}", None, count, Decimal(amount))
        for i, (amount, count) in enumerate(amounts)
    )
    episode = Episode("1", "1", None, Patient(None, None, None, None), ("1",), (), lines)
    return Bill(
        regning_nr, None, "1", "2026-10-01T10:00:00", "1", Decimal(sum_amount), "1", None, episode
    )


@pytest.mark.parametrize(
    ("b", "fires"),
    [
        (bill("160.00", ("40.00", 2), ("80.00", 1)), False),
        (bill("0.00"), False),
        (bill("159.99", ("40.00", 2), ("80.00", 1)), True),
        (bill("120.00", ("40.00", 2), ("80.00", 1)), True),  # antall ignored would give 120
    ],
    ids=["equal", "no-lines-zero", "one-øre-off", "antall-counts"],
)
def test_com04_bill_sum_equals_lines(b, fires):
    """COM-04: sumBelop must equal Σ takstBelop × antall."""
    finding = common.bill_sum_equals_lines(b, None)
    assert (finding is not None) == fires


def test_engine_evaluates_every_bill_and_keeps_the_trace():
    """No early exit: every rule on every bill; rejected bills approve 0."""
    bills = (
        bill("10.00", ("10.00", 1), regning_nr="A"),
        bill("11.00", ("10.00", 1), regning_nr="B"),
    )
    decision = decide.evaluate(bills, None, decide.RULEBOOK)
    assert [(b.regning_nr, b.verdict, b.approved) for b in decision.bills] == [
        ("A", Verdict.APPROVED, Decimal("10.00")),
        ("B", Verdict.REJECTED, Decimal("0")),
    ]
    assert decision.trace == (
        ("COM-04", "A", False, ()),
        ("COM-04", "B", True, (("sumBelop", "11.00"), ("lines", "10.00"))),
    )
    (remark,) = decision.remarks
    assert remark.rule_id == "COM-04" and remark.regning_nr == "B"


def test_every_rule_is_declared_completely_and_tested():
    """Each registered rule has id, source, number, text, and a test naming its id."""
    tests = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    for fn in decide.RULEBOOK:
        info = fn.rule
        assert info.id and info.source and info.number.isdigit() and info.text
        assert info.id.lower().replace("-", "") in tests.lower().replace("-", ""), info.id


def test_duplicate_rule_ids_are_refused():
    """Two functions claiming one id is an error at load time."""
    import types

    mod = types.ModuleType("m")

    @base.rule(id="X-1", source="s", number="1", text="t")
    def a(b, c):
        return None

    @base.rule(id="X-1", source="s", number="1", text="t")
    def b(b, c):
        return None

    mod.a, mod.b = a, b
    with pytest.raises(ValueError, match="X-1"):
        base.collect(mod)


def test_readme_remark_list_matches_the_registry():
    """The published remark list is the registry's: number, id, text, source per rule."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    for fn in decide.RULEBOOK:
        info = fn.rule
        row = f"| {info.number} | {info.id} | {info.text} | {info.source} |"
        assert row in readme, row


def test_com04_bill_without_its_episode_has_no_lines():
    """A bill whose episode is missing sums to 0: any claimed amount fires COM-04."""
    b = bill("160.00")
    orphan = Bill("9", None, "1", "2026-10-01T10:00:00", "99", Decimal("160.00"), "1", None, None)
    assert common.bill_sum_equals_lines(orphan, None) is not None
    assert common.bill_sum_equals_lines(b, None) is not None
