"""The rule declaration: `@rule(id=..., source=..., number=..., text=...)`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from types import ModuleType

from daemon.domain import Bill


@dataclass(frozen=True, slots=True)
class RuleInfo:
    id: str
    source: str  # document and paragraph
    number: str  # remark number sent as AppRec Error V
    text: str  # what the sender is told
    outcome: str  # "reject" the bill, or "reduce" it to `Finding.approved`


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule fired. `detail` is added to the sender text; `inputs` go in the trace."""

    detail: str = ""
    approved: Decimal | None = None  # for "reduce" outcomes
    inputs: tuple[tuple[str, str], ...] = ()


BillRule = Callable[[Bill, object], Finding | None]


def rule(*, id: str, source: str, number: str, text: str, outcome: str = "reject"):
    """Declare a bill rule. Its identity is written here and nowhere else."""
    if outcome not in ("reject", "reduce"):
        raise ValueError(f"{id}: unknown outcome {outcome!r}")

    def mark(fn: BillRule) -> BillRule:
        fn.rule = RuleInfo(id, source, number, text, outcome)  # type: ignore[attr-defined]
        return fn

    return mark


def collect(*modules: ModuleType) -> tuple[BillRule, ...]:
    """Every declared rule in `modules`, ordered by id (no hand-kept lists)."""
    found = [
        fn
        for module in modules
        for _, fn in inspect.getmembers(module, inspect.isfunction)
        if hasattr(fn, "rule")
    ]
    ids = [fn.rule.id for fn in found]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise ValueError(f"rule id declared twice: {sorted(dupes)}")
    return tuple(sorted(found, key=lambda fn: fn.rule.id))
