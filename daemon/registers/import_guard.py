"""Is an import safe to put in force? The checks `tariff import` runs before it writes.

A register that shrinks a lot at once is far more often a wrong or truncated file (a
one-row CSV, the wrong sheet, a file without its amounts column) than a real change:
Helfo's lists change by a few codes a year. So an import is held back, and needs
`--force`, when it would

- remove more than `max_removed` (a share, default 5 %) of the codes in force,
- remove more than that share of the rates in force, or
- leave a category the new codes use without any rate, where it had one before.

Pure: the caller gives the old and new codes and rates (what is in force, what the
import made), and gets the findings in an operator's words.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_MAX_REMOVED = 0.05


@dataclass(frozen=True, slots=True)
class Side:
    """One register's state: code -> category (None: none), and the rate keys
    (category, sector, valid_from)."""

    codes: dict[str, str | None]
    rates: frozenset[tuple[str, str, object]]

    @property
    def rated(self) -> frozenset[str]:
        return frozenset(category for category, _, _ in self.rates)


def side(codes: Iterable[tuple[str, str | None]], rates: Iterable[tuple[str, str, object]]) -> Side:
    return Side(dict(codes), frozenset(rates))


def findings(old: Side | None, new: Side, max_removed: float = DEFAULT_MAX_REMOVED) -> list[str]:
    """What makes this import unsafe (empty: safe). `old` None: nothing in force yet."""
    if old is None:
        return []
    out = []
    removed = sorted(old.codes.keys() - new.codes.keys())
    if old.codes and len(removed) > max_removed * len(old.codes):
        out.append(
            f"it removes {len(removed)} of {len(old.codes)} codes"
            f" ({len(removed) / len(old.codes):.0%}, more than {max_removed:.0%})"
        )
    gone = old.rates - new.rates
    if old.rates and len(gone) > max_removed * len(old.rates):
        out.append(
            f"it removes {len(gone)} of {len(old.rates)} rates"
            f" ({len(gone) / len(old.rates):.0%}, more than {max_removed:.0%})"
        )
    used = {c for c in new.codes.values() if c}
    unrated = sorted((used & old.rated) - new.rated)
    if unrated:
        shown = ", ".join(unrated[:10]) + (" …" if len(unrated) > 10 else "")
        out.append(f"it leaves {len(unrated)} categories without any rate: {shown}")
    return out


def parse_share(text: str) -> float:
    """`5%`, `5` (per cent) or `0.05` -> 0.05; ValueError otherwise."""
    value = text.strip().removesuffix("%")
    share = float(value)
    if share >= 1 or text.strip().endswith("%"):
        share /= 100
    if not 0 <= share <= 1:
        raise ValueError(f"{text!r} is not a share between 0 and 100 %")
    return share
