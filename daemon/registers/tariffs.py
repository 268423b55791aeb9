"""The tariff registry: NLK laboratory codes and the kroner per refusjonskategori, with
the radiology register (`daemon.registers.radiology_tariffs`) beside them.

Data, not code. Two CSV files under `config/tariffs/` (layout in its README.md), written
by `kravmottak tariff import` (`daemon.registers.tariff_import`) and read here:

- `nlk-codes.csv`: one row per code *version*. A code normally has one row; when Helfo
  moves a code to another category mid-year the list carries it twice with adjacent
  validity periods (NPU61124: IT2 until 2023-05-31, IT6 from 2023-06-01).
- `lab-rates.csv`: kroner per (refusjonskategori, sector) from a date. A rate table stays
  in force until a newer one starts (or until its own `valid_to`, when set).

`load()` validates everything and names file, row (the line number in the file, the
header being row 1 unless `#` comment lines precede it) and column of the first problem.
What both registers share (Rate, RateTable, TariffError, the strict CSV reading) is in
`daemon.registers.tariff_table`. Nothing here reads files or the
environment at import time; a `Tariffs` is an immutable value passed to the rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

from daemon import resources
from daemon.registers import egenandel, radiology_tariffs, tariff_table
from daemon.registers.egenandel import EgenandelRegister
from daemon.registers.radiology_tariffs import RadiologyRegister
from daemon.registers.rhf import RhfTable
from daemon.registers.tariff_table import RATE_COLUMNS as RATE_COLUMNS  # re-exported
from daemon.registers.tariff_table import SECTORS as SECTORS  # re-exported
from daemon.registers.tariff_table import (
    Cells,
    Rate,
    RateTable,
    TariffError,
    check_code_versions,
    csv_rows,
    csv_text,
    index_versions,
    iso,
)
from daemon.registers.tariff_table import category_sort_key as category_sort_key  # re-exported
from daemon.registers.tariff_table import check_rate_periods as check_rate_periods  # re-exported

SHIPPED_DIR = resources.shipped_registers()  # the fall-back until an import
CODES_FILE = "nlk-codes.csv"
RATES_FILE = "lab-rates.csv"

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

CODE_RE = re.compile(r"[A-Z0-9]{4,16}")
CATEGORY_RE = re.compile(r"[A-Z]{2,3}[0-9]{1,2}")
PREFIX_RE = re.compile(r"[A-Z]{2,3}")


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


@dataclass(frozen=True)
class Tariffs:
    """The registry the rules read. `codes`: the newest version of each code;
    `history`: every version, oldest first, of the codes that have more than one;
    `radiology`: the radiology register (empty for a lab-only deployment)."""

    codes: Mapping[str, NlkCode]
    rates: tuple[Rate, ...]
    source: str
    history: Mapping[str, tuple[NlkCode, ...]] = field(default_factory=lambda: MappingProxyType({}))
    radiology: RadiologyRegister = field(default_factory=RadiologyRegister)
    rhf: RhfTable = field(default_factory=RhfTable.empty)  # municipality → RHF (RAD-15)
    egenandel: EgenandelRegister = field(default_factory=EgenandelRegister)  # EG-01..12
    _rates: RateTable = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rates", RateTable(self.rates))

    @classmethod
    def empty(cls) -> Tariffs:
        return cls(MappingProxyType({}), (), "(no tariffs)")

    def code(self, code: str, day: date | None = None) -> NlkCode | None:
        """The code's entry; with `day`, the version valid that day when there is one."""
        return tariff_table.version_on(self.codes, self.history, code, day)

    def versions(self, code: str) -> tuple[NlkCode, ...]:
        """Every version of a code, oldest first (empty for an unknown code)."""
        return tariff_table.all_versions(self.codes, self.history, code)

    def rate_entry(self, category: str, sector: str, day: date) -> Rate | None:
        """The rate with the latest valid_from <= day, unless it ended before day."""
        return self._rates.entry(category, sector, day)

    def rate(self, category: str, sector: str, day: date) -> Decimal | None:
        rate = self.rate_entry(category, sector, day)
        return rate.kroner if rate is not None else None


# --------------------------------------------------------------------------- reading


RHF_FILE = "rhf.toml"


def load(directory: Path, shipped: Path | None = SHIPPED_DIR) -> Tariffs:
    """The registers in force: each of the NLK list with its rates, the radiology
    register and the RHF table is read from `directory` once an import has written it
    there, and otherwise as shipped with the package (`shipped`; None: nothing falls
    back, a register missing from `directory` is an error or, for radiology and RHF,
    empty). Everything read is validated."""
    lab_dir = _in_force(directory, shipped, (CODES_FILE, RATES_FILE))
    texts = []
    for name in (CODES_FILE, RATES_FILE):
        try:
            texts.append((lab_dir / name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise TariffError(str(lab_dir / name), None, None, f"cannot read: {exc}") from exc
    lab = parse(texts[0], texts[1], str(lab_dir))
    rhf_file = _in_force(directory, shipped, (RHF_FILE,)) / RHF_FILE
    areas = RhfTable.load(rhf_file) if rhf_file.exists() else RhfTable.empty()
    radiology_dir = _in_force(directory, shipped, radiology_tariffs.FILES)
    egenandel_file = _in_force(directory, shipped, (egenandel.FILE,)) / egenandel.FILE
    copay = egenandel.load(egenandel_file) if egenandel_file.exists() else EgenandelRegister()
    return replace(lab, radiology=radiology_tariffs.load(radiology_dir), rhf=areas, egenandel=copay)


def in_force(directory: Path, files: tuple[str, ...]) -> Path:
    """Where the register made of `files` is read from: `directory` when an import has
    written any of them there, the shipped copy otherwise."""
    return _in_force(directory, SHIPPED_DIR, files)


def _in_force(directory: Path, shipped: Path | None, files: tuple[str, ...]) -> Path:
    if shipped is None or any((directory / name).exists() for name in files):
        return directory
    return shipped


def parse(codes_text: str, rates_text: str, source: str) -> Tariffs:
    """Tariffs from the two files' text (what `load` reads, what the importer writes)."""
    codes = parse_codes(codes_text)
    rates = parse_rates(rates_text)
    current, history = index_versions(code for _, code in codes)
    return Tariffs(
        MappingProxyType(current),
        tuple(r for _, r in rates),
        source,
        MappingProxyType(history),
    )


def parse_codes(text: str, file: str = CODES_FILE) -> list[tuple[int, NlkCode]]:
    out = []
    for row, cells in csv_rows(text, file, CODE_COLUMNS):
        c = Cells(file, row, cells)
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
    return tariff_table.parse_rates(text, file, CATEGORY_RE)


# --------------------------------------------------------------------------- writing


def render_codes(codes: Iterable[NlkCode]) -> str:
    """The text of `nlk-codes.csv`, sorted by code and valid_from."""
    rows = sorted(codes, key=lambda c: (c.code, c.valid_from or date.min))
    return csv_text(
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
                iso(c.valid_from),
                iso(c.valid_to),
                c.replaced_by or "",
            )
            for c in rows
        ),
    )


def render_rates(rates: Iterable[Rate]) -> str:
    """The text of `lab-rates.csv`, grouped by category (in natural order) and sector."""
    return tariff_table.render_rates(rates)
