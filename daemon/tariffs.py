"""The tariff registry: NLK laboratory codes and the kroner per refusjonskategori.

Data, not code. Two CSV files under `config/tariffs/` (layout in its README.md), written
by `kravmottak tariff import` (`daemon.tariff_import`) and read here:

- `nlk-codes.csv`: one row per code *version*. A code normally has one row; when Helfo
  moves a code to another category mid-year the list carries it twice with adjacent
  validity periods (NPU61124: IT2 until 2023-05-31, IT6 from 2023-06-01).
- `lab-rates.csv`: kroner per (refusjonskategori, sector) from a date. A rate table stays
  in force until a newer one starts (or until its own `valid_to`, when set).

`load()` validates everything and names file, row (the line number in the file, the
header being row 1) and column of the first problem. Nothing here reads files or the
environment at import time; a `Tariffs` is an immutable value passed to the rules.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "config" / "tariffs"
CODES_FILE = "nlk-codes.csv"
RATES_FILE = "lab-rates.csv"
SECTORS = ("stat", "privat")

CODE_COLUMNS = (
    "code",
    "name",
    "field",
    "field_prefix",
    "category",
    "category_from",
    "starred",
    "pharmacogenetic",
    "valid_from",
    "valid_to",
    "replaced_by",
)
RATE_COLUMNS = ("category", "sector", "kroner", "valid_from", "valid_to", "source")

CODE_RE = re.compile(r"[A-Z0-9]{4,16}")
CATEGORY_RE = re.compile(r"[A-Z]{2,3}[0-9]{1,2}")
PREFIX_RE = re.compile(r"[A-Z]{2,3}")
KRONER_RE = re.compile(r"[0-9]{1,9}(\.[0-9]{1,2})?")
DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True, slots=True)
class NlkCode:
    """One version of an NLK code as the refusjon list gives it.

    `category_from` says where the category came from: "list" (as published),
    "LAB-11 new code" (a new code placed in category 2 of its field), "LAB-11 replaces
    X" (the category of the code it replaces), or "" when it has none (Patologi).
    `pharmacogenetic`: a clinical-pharmacology (KF) code whose system is DNA or RNA
    (LAB-05), derived by the importer."""

    code: str
    name: str
    field: str
    field_prefix: str
    category: str | None
    starred: bool
    pharmacogenetic: bool
    valid_from: date | None
    valid_to: date | None
    replaced_by: str | None
    category_from: str = "list"

    def valid_on(self, day: date) -> bool:
        """Both ends inclusive (TILDATO is the last valid day)."""
        return (self.valid_from is None or self.valid_from <= day) and (
            self.valid_to is None or day <= self.valid_to
        )


@dataclass(frozen=True, slots=True)
class Rate:
    category: str
    sector: str  # "stat" | "privat"
    kroner: Decimal
    valid_from: date
    valid_to: date | None
    source: str = ""


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


_RateIndex = dict[tuple[str, str], tuple[list[date], list[Rate]]]


@dataclass(frozen=True)
class Tariffs:
    """The registry the rules read. `codes`: the newest version of each code;
    `history`: every version, oldest first, of the codes that have more than one."""

    codes: Mapping[str, NlkCode]
    rates: tuple[Rate, ...]
    source: str
    history: Mapping[str, tuple[NlkCode, ...]] = field(default_factory=lambda: MappingProxyType({}))
    _rate_index: _RateIndex = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: _RateIndex = {}
        for r in sorted(self.rates, key=lambda r: (r.category, r.sector, r.valid_from)):
            starts, rates = index.setdefault((r.category, r.sector), ([], []))
            starts.append(r.valid_from)
            rates.append(r)
        object.__setattr__(self, "_rate_index", index)

    @classmethod
    def empty(cls) -> Tariffs:
        return cls(MappingProxyType({}), (), "(no tariffs)")

    def code(self, code: str, day: date | None = None) -> NlkCode | None:
        """The code's entry; with `day`, the version valid on that day when there is
        one (else the newest, whose `valid_on(day)` is then False)."""
        current = self.codes.get(code)
        if current is None or day is None:
            return current
        for version in self.history.get(code, ()):
            if version.valid_on(day):
                return version
        return current

    def versions(self, code: str) -> tuple[NlkCode, ...]:
        """Every version of a code, oldest first (empty for an unknown code)."""
        if code in self.history:
            return self.history[code]
        current = self.codes.get(code)
        return (current,) if current is not None else ()

    def rate_entry(self, category: str, sector: str, day: date) -> Rate | None:
        """The rate with the latest valid_from <= day, unless it ended before day."""
        found = self._rate_index.get((category, sector))
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

    def rate(self, category: str, sector: str, day: date) -> Decimal | None:
        rate = self.rate_entry(category, sector, day)
        return rate.kroner if rate is not None else None


# --------------------------------------------------------------------------- reading


def load(directory: Path) -> Tariffs:
    """Read and validate `nlk-codes.csv` and `lab-rates.csv` in `directory`."""
    texts = []
    for name in (CODES_FILE, RATES_FILE):
        try:
            texts.append((directory / name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise TariffError(str(directory / name), None, None, f"cannot read: {exc}") from exc
    return parse(texts[0], texts[1], str(directory))


def parse(codes_text: str, rates_text: str, source: str) -> Tariffs:
    """Tariffs from the two files' text (what `load` reads, what the importer writes)."""
    codes = parse_codes(codes_text)
    rates = parse_rates(rates_text)
    current, history = _index_codes(codes)
    return Tariffs(current, tuple(r for _, r in rates), source, history)


def _rows(text: str, file: str, columns: tuple[str, ...]) -> Iterable[tuple[int, dict[str, str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise TariffError(file, 1, None, "empty file (expected a header row)")
    if tuple(header) != columns:
        missing = [c for c in columns if c not in header]
        column = missing[0] if missing else None
        raise TariffError(file, 1, column, f"header must be {','.join(columns)}")
    for values in reader:
        row = reader.line_num
        if not values:
            continue
        if len(values) != len(columns):
            raise TariffError(file, row, None, f"{len(values)} fields, expected {len(columns)}")
        yield row, dict(zip(columns, values, strict=True))


class _Cells:
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


def parse_codes(text: str, file: str = CODES_FILE) -> list[tuple[int, NlkCode]]:
    out = []
    for row, cells in _rows(text, file, CODE_COLUMNS):
        c = _Cells(file, row, cells)
        category = c.optional("category", CATEGORY_RE)
        category_from = c.text("category_from", empty=True)
        if (category is None) != (category_from == ""):
            raise c.fail("category_from", "must be given exactly when there is a category")
        start, end = c.period()
        out.append(
            (
                row,
                NlkCode(
                    code=c.text("code", CODE_RE),
                    name=c.text("name"),
                    field=c.text("field"),
                    field_prefix=c.text("field_prefix", PREFIX_RE),
                    category=category,
                    starred=c.flag("starred"),
                    pharmacogenetic=c.flag("pharmacogenetic"),
                    valid_from=start,
                    valid_to=end,
                    replaced_by=c.optional("replaced_by", CODE_RE),
                    category_from=category_from,
                ),
            )
        )
    check_code_versions(out, file)
    return out


def parse_rates(text: str, file: str = RATES_FILE) -> list[tuple[int, Rate]]:
    out = []
    for row, cells in _rows(text, file, RATE_COLUMNS):
        c = _Cells(file, row, cells)
        sector = c.text("sector")
        if sector not in SECTORS:
            raise c.fail("sector", f"{sector!r} is not one of {', '.join(SECTORS)}")
        start, end = c.period()
        if start is None:
            raise c.fail("valid_from", "is empty")
        rate = Rate(
            category=c.text("category", CATEGORY_RE),
            sector=sector,
            kroner=c.kroner("kroner"),
            valid_from=start,
            valid_to=end,
            source=c.text("source", empty=True),
        )
        out.append((row, rate))
    check_rate_periods(out, file)
    return out


def check_code_versions(codes: list[tuple[int, NlkCode]], file: str, column="valid_from") -> None:
    """Several rows for one code are allowed only as versions whose periods do not
    overlap; anything else is a duplicate."""
    by_code: dict[str, list[tuple[int, NlkCode]]] = {}
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
                    f" ({_period(a)} and {_period(b)})",
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
                f"{b.category} {b.sector}: period {_period(b)} overlaps {_period(a)}"
                f" on row {min(row_a, row_b)}",
            )


def _period(x: NlkCode | Rate) -> str:
    return f"{x.valid_from or '…'}–{x.valid_to or '…'}"


def _index_codes(
    codes: Iterable[tuple[int, NlkCode]],
) -> tuple[Mapping[str, NlkCode], Mapping[str, tuple[NlkCode, ...]]]:
    versions: dict[str, list[NlkCode]] = {}
    for _, code in codes:
        versions.setdefault(code.code, []).append(code)
    current, history = {}, {}
    for key, found in versions.items():
        found.sort(key=lambda c: c.valid_from or date.min)
        current[key] = found[-1]
        if len(found) > 1:
            history[key] = tuple(found)
    return MappingProxyType(current), MappingProxyType(history)


# --------------------------------------------------------------------------- writing


def render_codes(codes: Iterable[NlkCode]) -> str:
    """The text of `nlk-codes.csv`, sorted by code and valid_from."""
    rows = sorted(codes, key=lambda c: (c.code, c.valid_from or date.min))
    return _csv(
        CODE_COLUMNS,
        (
            (
                c.code,
                c.name,
                c.field,
                c.field_prefix,
                c.category or "",
                c.category_from if c.category else "",
                "1" if c.starred else "0",
                "1" if c.pharmacogenetic else "0",
                _iso(c.valid_from),
                _iso(c.valid_to),
                c.replaced_by or "",
            )
            for c in rows
        ),
    )


def render_rates(rates: Iterable[Rate]) -> str:
    """The text of `lab-rates.csv`, grouped by category (in natural order) and sector."""
    rows = sorted(rates, key=lambda r: (*category_sort_key(r.category), r.sector, r.valid_from))
    return _csv(
        RATE_COLUMNS,
        (
            (
                r.category,
                r.sector,
                f"{r.kroner:.2f}",
                _iso(r.valid_from),
                _iso(r.valid_to),
                r.source,
            )
            for r in rows
        ),
    )


def category_sort_key(category: str) -> tuple[str, int]:
    """MB2 before MB10."""
    digits = category.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return category[: len(category) - len(digits)], int(digits) if digits.isdigit() else -1


def _iso(day: date | None) -> str:
    return day.isoformat() if day else ""


def _csv(header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()
