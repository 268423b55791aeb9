"""Lines no rule set here covers are not paid blindly: they are rejected, and say why.

NLK lines have the lab rules and radiology lines (`Kodeverk="R"`, or an eligible
NCSP/NCMP code) the radiology rules; other procedure codes (e.g. NCSP surgery for the
ISF) belong to rule sets this office does not run yet.
"""

from __future__ import annotations

from daemon.domain import Bill, Line
from daemon.rules import radiology
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
    if line.kind in ("takst", "egenandel") or radiology.is_radiology(line, ctx):
        return None  # NLK: the lab rules; radiology: the RAD rules; egenandel: EG-01..12
    return Finding(
        detail=f"Prosedyre/Kode Kodeverk={line.code_system!r} {line.raw_code}",
        inputs=(("kodeverk", str(line.code_system)), ("code", line.raw_code)),
    )
