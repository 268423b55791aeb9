"""The rule declaration: `@rule(id=..., scope=..., source=..., number=..., text=...)`.

Four scopes:
- "claim": `fn(claim, ctx) -> Finding | None`; a finding refuses the whole message
  (`retryable=True`: the refusal is not final, a resend is processed again).
- "bill":  `fn(bill, ctx) -> Finding | None`; a finding rejects the bill.
- "line":  `fn(line, bill, ctx) -> Finding | None`; a finding rejects that line.
- "exam":  `fn(line, bill, ctx) -> Finding | None`, run after every bill and line rule:
  the same-day rules, which judge a line against the exams already approved
  (`daemon.rules.sameday`). A finding rejects the line, or, with `deduct`, reduces it.

A rule's identity is written once, here; the README's remark list and the tests are
checked against the registry.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from types import ModuleType

SCOPES = ("claim", "bill", "line", "exam")


@dataclass(frozen=True, slots=True)
class RuleInfo:
    id: str
    scope: str
    source: str  # document and paragraph
    number: str  # remark number sent as AppRec Error V
    text: str  # what the sender is told
    credits: bool = True  # False: not run on credits, whose lines are not judged
    retryable: bool = False  # claim scope: a refusal our registry may lift (COM-09)
    kinds: tuple[str, ...] = ()  # line scope: only lines of these kinds (empty: every line)


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule fired. `detail` is added to the sender text; `inputs` go in the trace.
    `deduct`: the line is not rejected but paid this much less (RAD-11). `note`: the
    sender is told, nothing is rejected (RAD-15's fall-back payee)."""

    detail: str = ""
    inputs: tuple[tuple[str, str], ...] = ()
    deduct: Decimal | None = None
    note: bool = False

    @property
    def rejects(self) -> bool:
        return self.deduct is None and not self.note


Rule = Callable[..., Finding | None]


def rule(
    *,
    id: str,
    scope: str,
    source: str,
    number: str,
    text: str,
    credits: bool = True,
    retryable: bool = False,
    kinds: tuple[str, ...] = (),
):
    """Declare a rule. Its identity is written here and nowhere else. `credits=False`:
    the rule judges what is claimed, and a credit (typeTransaksjon 5) claims nothing.
    `kinds`: a line rule that judges only lines of these kinds (EG-01..11: `egenandel`)
    is not evaluated on the others (a lab claim does not pay for the egenandel rules)."""
    if scope not in SCOPES:
        raise ValueError(f"{id}: unknown scope {scope!r}")
    if retryable and scope != "claim":
        raise ValueError(f"{id}: only a claim rule refuses retryably")
    if kinds and scope != "line":
        raise ValueError(f"{id}: only a line rule is restricted to line kinds")

    def mark(fn: Rule) -> Rule:
        info = RuleInfo(id, scope, source, number, text, credits, retryable, kinds)
        fn.rule = info  # type: ignore[attr-defined]
        return fn

    return mark


@dataclass(frozen=True)
class Rulebook:
    claim: tuple[Rule, ...]
    bill: tuple[Rule, ...]
    line: tuple[Rule, ...]
    exam: tuple[Rule, ...] = ()
    _by_kind: dict[str, tuple[Rule, ...]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def all(self) -> tuple[Rule, ...]:
        return self.claim + self.bill + self.line + self.exam

    def lines_for(self, kind: str) -> tuple[Rule, ...]:
        """The line rules a line of this kind is judged by (in id order)."""
        found = self._by_kind.get(kind)
        if found is None:
            found = tuple(f for f in self.line if not f.rule.kinds or kind in f.rule.kinds)
            self._by_kind[kind] = found
        return found


def collect(*modules: ModuleType) -> Rulebook:
    """Every declared rule in `modules`, per scope, ordered by id (no hand-kept lists)."""
    found = [
        fn
        for module in modules
        for _, fn in inspect.getmembers(module, inspect.isfunction)
        if hasattr(fn, "rule") and fn.__module__ == module.__name__
    ]
    keys = [(fn.rule.id, fn.rule.scope) for fn in found]
    dupes = {k for k in keys if keys.count(k) > 1}
    if dupes:
        raise ValueError(f"rule declared twice: {sorted(dupes)}")
    numbers = [fn.rule.number for fn in found]
    clash = {n for n in numbers if numbers.count(n) > 1}
    if clash:
        raise ValueError(f"remark number used twice: {sorted(clash)}")

    def of(scope: str) -> tuple[Rule, ...]:
        return tuple(sorted((f for f in found if f.rule.scope == scope), key=lambda f: f.rule.id))

    return Rulebook(of("claim"), of("bill"), of("line"), of("exam"))
