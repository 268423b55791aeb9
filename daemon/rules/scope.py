"""Lines no rule set here covers are not paid blindly: they are rejected, and say why.

Radiology (`Kodeverk="R"`) gets its own rules with the radiology work; other procedure
code systems (e.g. `X`) and ISF takster belong to rule sets this office does not run.
"""

from __future__ import annotations

from daemon.domain import Bill, Line
from daemon.rules.base import Finding, rule
from daemon.rules.context import RuleContext


@rule(
    id="SCOPE-01",
    scope="line",
    source="kravmottak: linjer uten regelsett hos denne mottakeren",
    number="9001",
    text="Linjen har et kodeverk denne mottakeren ikke vurderer refusjon for",
)
def line_has_a_rule_set(line: Line, bill: Bill, ctx: RuleContext) -> Finding | None:
    if line.kind == "takst":
        return None  # NLK: the lab rules
    return Finding(
        detail=f"Prosedyre/Kode Kodeverk={line.code_system!r} {line.raw_code}",
        inputs=(("kodeverk", str(line.code_system)), ("code", line.raw_code)),
    )
