"""What the two tariff registers (NLK lab, radiology) share: the error, the rate table,
and strict reading and writing of their CSV files.

- `TariffError` names file, row (the line number in the file) and column.
- `Rate` is kroner per (refusjonskategori, sector) from a date; `RateTable` answers
  "which rate is in force on this day" for both registers.
- `csv_rows` and `Cells` read one of our CSV files strictly: the exact header, the
  right number of fields, typed cells. Leading lines that start with `#` are comments
  (the shipped radiology files say there that their categories are an EXAMPLE); row
  numbers still count them, so a row number is the line in the file.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Protocol, TypeVar

SECTORS = ("stat", "privat")
RATE_COLUMNS = ("category", "sector", "kroner", "valid_from", "valid_to", "source")
KRONER_RE = re.compile(r"[0-9]{1,9}(\.[0-9]{1,2})?")
DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class TariffError(Exception):
    """A tariff file cannot be used. The message names file, row and column."""

    def __init__(self, file: str, row: int | None, column: str | None, problem: str) -> None:
        self.file, self.row, self.column, self.problem = file, row, column, problem
        where = file
        if row is not None:
            where += f", row {row}"
        if column:
            where += f", column {column}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True, slots=True)
class Rate:
    category: str
    sector: str  # "stat" | "privat"
    kroner: Decimal
    valid_from: date
    valid_to: date | None
    source: str = ""


class RateTable:
    """The rates by (category, sector), each list ordered by start: a rate stays in
    force until a newer one for the same category and sector starts, or until its own
    `valid_to` (inclusive) when that is set. A lookup never falls back to a later rate."""

    __slots__ = ("_index",)

    def __init__(self, rates: Iterable[Rate]) -> None:
        index: dict[tuple[str, str], tuple[list[date], list[Rate]]] = {}
        for r in sorted(rates, key=lambda r: (r.category, r.sector, r.valid_from)):
            starts, found = index.setdefault((r.category, r.sector), ([], []))
            starts.append(r.valid_from)
            found.append(r)
        self._index = index

    def entry(self, category: str, sector: str, day: date) -> Rate | None:
        """The rate with the latest valid_from <= day, unless it ended before day."""
        found = self._index.get((category, sector))
        if found is None:
            return None
        starts, rates = found
        i = bisect_right(starts, day) - 1
        if i < 0:
            return None
        rate = rates[i]
        if rate.valid_to is not None and rate.valid_to < day:
            return None
        return rate


class Versioned(Protocol):
    """A code version: NlkCode, RadCode."""

    @property
    def code(self) -> str: ...
    @property
    def valid_from(self) -> date | None: ...
    @property
    def valid_to(self) -> date | None: ...


V = TypeVar("V", bound=Versioned)


# --------------------------------------------------------------------------- reading


def csv_rows(
    text: str, file: str, columns: tuple[str, ...]
) -> Iterator[tuple[int, dict[str, str]]]:
    """(row, cells) of one of our files: leading `#` comment lines, then exactly the
    header `columns`, then rows of exactly that many fields (blank lines skipped)."""
    stream = io.StringIO(text, newline="")
    comments = 0
    while True:
        start = stream.tell()
        if not stream.readline().startswith("#"):
            stream.seek(start)
            break
        comments += 1
    reader = csv.reader(stream)
    header = next(reader, None)
    if header is None:
        raise TariffError(file, comments + 1, None, "empty file (expected a header row)")
    if tuple(header) != columns:
        missing = [c for c in columns if c not in header]
        raise TariffError(
            file,
            comments + 1,
            missing[0] if missing else None,
            f"header must be {','.join(columns)}",
        )
    for values in reader:
        row = comments + reader.line_num
        if not values:
            continue
        if len(values) != len(columns):
            raise TariffError(file, row, None, f"{len(values)} fields, expected {len(columns)}")
        yield row, dict(zip(columns, values, strict=True))


class Cells:
    """Typed access to one row's cells; every problem names file, row and column."""

    def __init__(self, file: str, row: int, cells: dict[str, str]) -> None:
        self.file, self.row, self.cells = file, row, cells

    def fail(self, column: str, problem: str) -> TariffError:
        return TariffError(self.file, self.row, column, problem)

    def text(self, column: str, pattern: re.Pattern[str] | None = None, *, empty=False) -> str:
        value = self.cells[column]
        if value != value.strip():
            raise self.fail(column, f"{value!r} has leading or trailing spaces")
        if not value and not empty:
            raise self.fail(column, "is empty")
        if value and pattern is not None and not pattern.fullmatch(value):
            raise self.fail(column, f"{value!r} is not a valid {column}")
        return value

    def optional(self, column: str, pattern: re.Pattern[str]) -> str | None:
        return self.text(column, pattern, empty=True) or None

    def choice(self, column: str, allowed: tuple[str, ...], *, empty=False) -> str:
        value = self.text(column, empty=empty)
        if value and value not in allowed:
            raise self.fail(column, f"{value!r} is not one of {', '.join(allowed)}")
        return value

    def flag(self, column: str) -> bool:
        value = self.cells[column]
        if value not in ("0", "1"):
            raise self.fail(column, f"{value!r} is not 0 or 1")
        return value == "1"

    def day(self, column: str, *, empty=False) -> date | None:
        value = self.text(column, empty=empty)
        if not value:
            return None
        try:
            if not DATE_RE.fullmatch(value):
                raise ValueError
            return date.fromisoformat(value)
        except ValueError:
            raise self.fail(column, f"{value!r} is not a date (YYYY-MM-DD)") from None

    def kroner(self, column: str) -> Decimal:
        value = self.text(column)
        if not KRONER_RE.fullmatch(value):
            raise self.fail(column, f"{value!r} is not an amount in kroner (e.g. 12.61)")
        return Decimal(value)

    def period(self) -> tuple[date | None, date | None]:
        start, end = self.day("valid_from", empty=True), self.day("valid_to", empty=True)
        if start is not None and end is not None and end < start:
            raise self.fail("valid_to", f"{end} is before valid_from {start}")
        return start, end


def parse_rates(text: str, file: str, category: re.Pattern[str]) -> list[tuple[int, Rate]]:
    """The rows of a rates file (`RATE_COLUMNS`), categories matching `category`."""
    out = []
    for row, cells in csv_rows(text, file, RATE_COLUMNS):
        c = Cells(file, row, cells)
        sector = c.choice("sector", SECTORS)
        start, end = c.period()
        if start is None:
            raise c.fail("valid_from", "is empty")
        rate = Rate(
            category=c.text("category", category),
            sector=sector,
            kroner=c.kroner("kroner"),
            valid_from=start,
            valid_to=end,
            source=c.text("source", empty=True),
        )
        out.append((row, rate))
    check_rate_periods(out, file)
    return out


def check_code_versions(
    codes: Iterable[tuple[int, Versioned]], file: str, column="valid_from"
) -> None:
    """Several rows for one code are allowed only as versions whose periods do not
    overlap; anything else is a duplicate."""
    by_code: dict[str, list[tuple[int, Versioned]]] = {}
    for row, code in codes:
        by_code.setdefault(code.code, []).append((row, code))
    for versions in by_code.values():
        if len(versions) < 2:
            continue
        versions.sort(key=lambda rc: (rc[1].valid_from or date.min, rc[0]))
        for (row_a, a), (row_b, b) in itertools.pairwise(versions):
            if a.valid_to is None or b.valid_from is None or a.valid_to >= b.valid_from:
                raise TariffError(
                    file,
                    row_b,
                    column,
                    f"duplicate code {b.code}: its period overlaps the one on row {row_a}"
                    f" ({period_text(a)} and {period_text(b)})",
                )


def check_rate_periods(rates: list[tuple[int, Rate]], file: str, column="valid_from") -> None:
    """For one category and sector, each rate starts after the previous one ended."""
    ordered = sorted(rates, key=lambda rr: (rr[1].category, rr[1].sector, rr[1].valid_from))
    for (row_a, a), (row_b, b) in itertools.pairwise(ordered):
        if (a.category, a.sector) != (b.category, b.sector):
            continue
        if a.valid_from == b.valid_from or (a.valid_to is not None and a.valid_to >= b.valid_from):
            raise TariffError(
                file,
                max(row_a, row_b),
                column,
                f"{b.category} {b.sector}: period {period_text(b)} overlaps {period_text(a)}"
                f" on row {min(row_a, row_b)}",
            )


def period_text(x: Versioned | Rate) -> str:
    return f"{x.valid_from or '…'}–{x.valid_to or '…'}"


def version_on(
    current: Mapping[str, V], history: Mapping[str, tuple[V, ...]], code: str, day: date | None
) -> V | None:
    """A code's entry; with `day`, the version valid that day when there is one (else
    the newest, whose `valid_on(day)` is then False). Both registers look codes up so."""
    found = current.get(code)
    if found is None or day is None:
        return found
    for version in history.get(code, ()):
        if version.valid_on(day):
            return version
    return found


def all_versions(
    current: Mapping[str, V], history: Mapping[str, tuple[V, ...]], code: str
) -> tuple[V, ...]:
    """Every version of a code, oldest first (empty for an unknown code)."""
    if code in history:
        return history[code]
    found = current.get(code)
    return (found,) if found is not None else ()


def index_versions(codes: Iterable[V]) -> tuple[dict[str, V], dict[str, tuple[V, ...]]]:
    """The newest version of each code, and every version (oldest first) of the codes
    that have more than one."""
    versions: dict[str, list[V]] = {}
    for code in codes:
        versions.setdefault(code.code, []).append(code)
    current, history = {}, {}
    for key, found in versions.items():
        found.sort(key=lambda c: c.valid_from or date.min)
        current[key] = found[-1]
        if len(found) > 1:
            history[key] = tuple(found)
    return current, history


# --------------------------------------------------------------------------- writing


def render_rates(rates: Iterable[Rate], comment: Iterable[str] = ()) -> str:
    """A rates file, grouped by category (in natural order) and sector."""
    rows = sorted(rates, key=lambda r: (*category_sort_key(r.category), r.sector, r.valid_from))
    return csv_text(
        RATE_COLUMNS,
        (
            (
                r.category,
                r.sector,
                f"{r.kroner:.2f}",
                iso(r.valid_from),
                iso(r.valid_to),
                r.source,
            )
            for r in rows
        ),
        comment,
    )


def category_sort_key(category: str) -> tuple[str, int]:
    """MB2 before MB10."""
    digits = category.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return category[: len(category) - len(digits)], int(digits) if digits.isdigit() else -1


def iso(day: date | None) -> str:
    return day.isoformat() if day else ""


def csv_text(
    header: tuple[str, ...], rows: Iterable[tuple[str, ...]], comment: Iterable[str] = ()
) -> str:
    """CSV with `\\n` line ends, after `# ` comment lines (one per item of `comment`)."""
    out = io.StringIO()
    for line in comment:
        out.write(f"# {line}".rstrip() + "\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


# --------------------------------------------------------------------------- import reports


def some(items: Iterable[str], limit: int = 10) -> str:
    """The first `limit` items, and how many more: for an import's report."""
    items = list(items)
    more = f" … (+{len(items) - limit})" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def comparison(
    codes_file: str,
    target: str,
    previous: bool,
    added: Iterable[str],
    removed: Iterable[str],
    recategorised: Iterable[tuple[str, str | None, str | None]],
    changed: Iterable[str],
    limit: int = 10,
) -> list[str]:
    """The lines of an import's report that compare the new code table with the old."""
    if not previous:
        return [f"  compared with: nothing (no earlier {codes_file} in {target})"]
    added, removed, changed = list(added), list(removed), list(changed)
    moved = [f"{c} {a}→{b}" for c, a, b in recategorised]
    out = [
        f"  compared with the existing {codes_file}: {len(added)} added,"
        f" {len(removed)} removed, {len(moved)} re-categorised,"
        f" {len(changed)} otherwise changed"
    ]
    for label, items in (
        ("added", added),
        ("removed", removed),
        ("re-categorised", moved),
        ("changed", changed),
    ):
        if items:
            out.append(f"    {label}: {some(items, limit)}")
    return out
