"""The rules engine's mechanics and the rule catalogue (the rules' own cases are in
test_lab_rules.py, through the whole pipeline)."""

from __future__ import annotations

import types
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from daemon.domain import Bill, Claim, Episode, Layer, Line, Patient, Unit, Verdict
from daemon.registers.registry import Institution
from daemon.registers.tariffs import Tariffs
from daemon.rules import base, common, decide
from daemon.rules.context import RuleContext
from tests.claims import person_number


def bill(regning_nr: str, sum_amount: str, *lines: Line, kind: str = "takst") -> Bill:
    patient = Patient(person_number(int(regning_nr)), "FNR", None, "2")
    episode = Episode(regning_nr, "1", None, patient, ("5",), (), tuple(lines))
    return Bill(
        regning_nr,
        None,
        "1",
        "2026-10-05T10:00:00",
        regning_nr,
        Decimal(sum_amount),
        "1",
        None,
        episode,
    )


def claim(*bills: Bill) -> Claim:
    total = sum((b.sum_amount for b in bills), Decimal("0"))
    unit = Unit("1", "8151", "1", None, len(bills), total, bills)
    return Claim("0.78", "2026-10-01", "2026-10-31", "2026-11-02", "T", "983974678", (unit,))


def line(code: str, unit: str, count: int = 1) -> Line:
    return Line("takst", code, None, count, Decimal(unit))


DEMO = Institution("983974678", "Demo sykehus HF", "Helse Sør-Øst RHF")


def context(c: Claim, institution: Institution | None = DEMO) -> RuleContext:
    return RuleContext(date(2026, 11, 23), c, Tariffs.empty(), institution)


def test_every_rule_runs_on_every_bill_and_line_and_is_traced():
    """No early exit: all bill rules per bill, all line rules per line, in the trace."""
    c = claim(bill("1", "10.00", line("X1", "10.00")), bill("2", "11.00", line("X2", "10.00")))
    problems, decision = decide.evaluate(c, context(c), decide.RULEBOOK)
    assert problems == []
    book = decide.RULEBOOK
    # one (takst) line each: every line rule but those of other line kinds (EG-01..11)
    per_bill = len(book.bill) + len(book.lines_for("takst")) + len(book.exam)
    assert len(book.lines_for("takst")) == len(book.line) - 11
    assert decision.evaluations == len(book.claim) + 2 * per_bill
    assert all(fired for *_, fired, _inputs in decision.trace)  # only what fired is kept
    # with no tariffs, every bill is rejected; the sums of the second are wrong too
    b2 = decision.bills[1]
    assert b2.verdict == Verdict.REJECTED and b2.approved == 0
    assert {r.rule_id for r in b2.remarks} == {"COM-04"}
    # the line rules still ran and are in the trace, but a bill that is rejected anyway
    # does not also get a remark per line
    assert ("LAB-02", "2", 1, True, (("code", "X2"),)) in decision.trace
    assert ("COM-04", "2", 0, True, (("sumBelop", "11.00"), ("lines", "10.00"))) in decision.trace


def test_claim_rule_refuses_before_bills_are_judged():
    """A Krav-level COM-04 finding: a problem for the message, no bill decisions."""
    c = claim(bill("1", "10.00", line("X1", "10.00")))
    c = Claim(
        c.version,
        c.period_from,
        c.period_to,
        c.extracted_on,
        c.sender_reference,
        c.institution_id,
        (Unit("1", "8151", "1", None, 5, Decimal("10.00"), c.bills),),
    )
    problems, decision = decide.evaluate(c, context(c), decide.RULEBOOK)
    (problem,) = problems
    assert problem.code == "9040" and problem.scheme == "8223" and "[COM-04]" in problem.text
    assert problem.layer == Layer.PAYLOAD  # final: the same message is wrong whenever sent
    assert decision.bills == ()


def test_an_unknown_institution_refuses_the_message_retryably():
    """COM-09 is a claim rule: the whole message, in the retryable REGISTRY layer."""
    c = claim(bill("1", "10.00", line("X1", "10.00")))
    problems, decision = decide.evaluate(c, context(c, None), decide.RULEBOOK)
    (problem,) = problems
    assert problem.code == "9090" and "[COM-09]" in problem.text
    assert problem.layer == Layer.REGISTRY and decision.bills == ()


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("15057810014", True),
        ("15057810015", False),
        ("55057810014", False),
        ("1505781001", False),
        # #20: a month 10-12 puts a non-zero third digit under the weight 6 (the numbers
        # above have 0 there, so a wrong weight 6 went unnoticed)
        ("31129912076", True),
        ("24118449076", True),
        ("15129938029", True),
        ("01109512180", True),
        ("31129912086", False),
    ],
)
def test_person_number_mod11(number, valid):
    """COM-05's check: both control digits (weights 3 7 6 1 8 9 4 5 2 and
    5 4 3 2 7 6 5 4 3 2, mod 11; the verdicts were worked out apart from the code)."""
    assert common.valid_person_number(number) is valid


def test_d_number_passes_mod11():
    """A D-nummer (day + 40) with right control digits is valid."""
    from tests.claims import person_number as pn

    d = pn(0, born="410180")
    assert d.startswith("41") and common.valid_person_number(d)


def test_every_rule_is_declared_completely_and_tested():
    """Each registered rule has id, scope, source, number and text, and a test names it."""
    tests = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    for fn in decide.RULEBOOK.all:
        info = fn.rule
        assert info.id and info.source and info.number.isdigit() and info.text
        assert f'"{info.id}"' in tests, info.id


def test_duplicate_rule_ids_and_numbers_are_refused():
    """Two rules claiming one (id, scope) or one remark number: an error at load time."""
    mod = types.ModuleType("m")

    def make(rid: str, number: str):
        @base.rule(id=rid, scope="bill", source="s", number=number, text="t")
        def fn(b, c):
            return None

        fn.__module__ = "m"
        return fn

    mod.a, mod.b = make("X-1", "1"), make("X-1", "2")
    with pytest.raises(ValueError, match="X-1"):
        base.collect(mod)
    mod.a, mod.b = make("X-1", "1"), make("X-2", "1")
    with pytest.raises(ValueError, match="number"):
        base.collect(mod)


def test_readme_remark_list_matches_the_registry():
    """The published remark list is the registry's: number, id, text, source per rule."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    for fn in decide.RULEBOOK.all:
        info = fn.rule
        row = f"| {info.number} | {info.id} | {info.scope} | {info.text} | {info.source} |"
        assert row in readme, row


def test_readme_documents_every_rule_choice():
    """Every [rules] key is in the README's "Rule choices" table with its default."""
    from daemon.rule_settings import RuleSettings

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Rule choices") :]
    for key, value in RuleSettings().described():
        assert f"| `{key}` | `{value}` |" in section, key


def test_rules_import_one_way_with_no_imports_inside_functions():
    """The old circle (context ↔ common ↔ radiology through imports inside functions)
    stays broken: daemon/rules imports only at module level, and the same-day judgement
    (`sameday`) imports neither the context nor a rule set."""
    import ast

    folder = Path(decide.__file__).parent
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = [n for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)]
                assert not inner, f"{path.name}: import inside {node.name}()"
    sameday = ast.parse((folder / "sameday.py").read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(sameday) if isinstance(n, ast.ImportFrom)}
    assert not imported & {"daemon.rules.context", "daemon.rules.radiology", "daemon.rules"}
