"""The RHF table: the regional health authority a patient's home municipality belongs to.

RAD-15: the refund goes to the RHF of the patient's home municipality (`komNrHjem`) at the
time of contact. For patients without a Norwegian municipality (9000, 9900, 9999) it goes
to the RHF of the institution.

Data, not code. `config/tariffs/rhf.toml` (its comments name the sources) lists:

- the four RHFs, each with its name, organisation number and `counties`. These are the
  two-digit county numbers of the 2024 structure. A municipality number's first two
  digits are its county.
- per RHF, `municipalities`: exceptions, municipalities that belong to this RHF although
  their county belongs to another. None is shipped: see the file.
- per RHF, `former_counties`: county numbers of earlier structures (01–20 except the
  continuing 03, 11, 15, 18; 30 Viken, 38, 54) with the period each was in force, for
  claims about earlier contacts.
- `no_municipality`: the codes meaning "no Norwegian municipality".

`RhfTable.load` validates everything and names the file, the entry and the field of the
first problem: the shape and values of each entry through pydantic models (`_RhfFile`),
the rules across entries (a county in one place only, exceptions) in `_Checks`.
`RhfTable.resolve` answers RAD-15 with a reason (`REASONS`), so a rule can
decide what an unknown or outdated number means for the bill. Nothing here reads files or
the environment at import time.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from daemon import resources
from daemon.registers.tariff_table import TariffError
from daemon.validation import describe, field_path

FILE = "rhf.toml"
SHIPPED_PATH = resources.shipped_registers() / FILE
NO_MUNICIPALITY_CODES = ("9000", "9900", "9999")  # NPR, ISF-regelverket §4.2
ORGNR_WEIGHTS = (3, 2, 7, 6, 5, 4, 3, 2)

COUNTY_RE = re.compile(r"[0-9]{2}")
KOMMNR_RE = re.compile(r"[0-9]{4}")
ORGNR_RE = re.compile(r"[0-9]{9}")

# The reasons `resolve` gives. The rhf is None where the text says so.
MUNICIPALITY = "municipality"
EXCEPTION = "exception"
FORMER_COUNTY = "former county"
OUT_OF_PERIOD = "former county outside its period"
NO_MUNICIPALITY = "no municipality: institution's RHF"
MISSING = "missing: institution's RHF"
MALFORMED = "malformed municipality"
UNKNOWN = "unknown municipality"
REASONS: Mapping[str, str] = MappingProxyType(
    {
        MUNICIPALITY: "the municipality's county (2024 structure) belongs to the RHF",
        EXCEPTION: "the municipality is listed as an exception under the RHF",
        FORMER_COUNTY: "a county of an earlier structure, in force on the day of contact",
        OUT_OF_PERIOD: "a county of an earlier structure that was not in force on the day "
        "of contact. The RHF given is the county's, because a county number is never "
        "reused. The rule decides whether to accept it",
        NO_MUNICIPALITY: "9000/9900/9999 (no Norwegian municipality): the institution's "
        "RHF, None when the institution has no known RHF",
        MISSING: "no komNrHjem: the institution's RHF, None when the institution has no known RHF",
        MALFORMED: "komNrHjem is not four digits: no RHF",
        UNKNOWN: "four digits, but the county is in no RHF (e.g. 2100 Svalbard): no RHF",
    }
)
FALLBACK_REASONS = (NO_MUNICIPALITY, MISSING)


@dataclass(frozen=True, slots=True)
class FormerCounty:
    """A county number of an earlier structure, e.g. 30 Viken (2020-01-01 to 2023-12-31).
    Both ends are inclusive. `valid_from` None means the county was in force before any
    contact we see."""

    number: str
    name: str
    valid_from: date | None
    valid_to: date

    def valid_on(self, day: date) -> bool:
        return (self.valid_from is None or self.valid_from <= day) and day <= self.valid_to


@dataclass(frozen=True, slots=True)
class Rhf:
    """A regional health authority. `counties`: its two-digit county numbers (2024
    structure). `municipalities`: exceptions, four-digit municipality numbers that are
    its own although their county belongs to another RHF."""

    name: str
    orgnr: str
    counties: tuple[str, ...]
    municipalities: tuple[str, ...] = ()
    former_counties: tuple[FormerCounty, ...] = field(default=(), repr=False)
    account: str | None = None  # kontonummer the settlement pays to (`account`)


@dataclass(frozen=True, slots=True)
class Resolution:
    """Who gets the refund under RAD-15, and why. `reason` is a key of REASONS. `county`
    is the county number that decided, when one did."""

    rhf: Rhf | None
    reason: str
    county: str | None = None

    @property
    def fallback(self) -> bool:
        """True when the institution's RHF was used (no municipality, or none given)."""
        return self.reason in FALLBACK_REASONS


class RhfError(TariffError):
    """rhf.toml cannot be used. The message names the file, the entry and the field."""

    def __init__(self, file: str, entry: str | None, fld: str | None, problem: str) -> None:
        where = ", ".join(p for p in (entry, fld) if p)
        super().__init__(file, None, None, f"{where}: {problem}" if where else problem)
        self.entry, self.field, self.problem = entry, fld, problem


ACCOUNT_RE = re.compile(r"[0-9]{11}")
ACCOUNT_WEIGHTS = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


def valid_orgnr(orgnr: str) -> bool:
    """Nine digits whose last is the mod-11 check digit (weights 3,2,7,6,5,4,3,2)."""
    if not isinstance(orgnr, str) or not ORGNR_RE.fullmatch(orgnr):
        return False
    return _check_digit(orgnr) == int(orgnr[8])


def valid_account(number: str) -> bool:
    """A Norwegian bank account number: 11 digits, the last a mod-11 check digit
    (weights 5,4,3,2,7,6,5,4,3,2 on the first ten)."""
    if not isinstance(number, str) or not ACCOUNT_RE.fullmatch(number):
        return False
    rest = 11 - sum(int(d) * w for d, w in zip(number[:10], ACCOUNT_WEIGHTS, strict=True)) % 11
    return {11: 0}.get(rest, rest) == int(number[10])


def _check_digit(orgnr: str) -> int | None:
    rest = 11 - sum(int(d) * w for d, w in zip(orgnr[:8], ORGNR_WEIGHTS, strict=True)) % 11
    return {11: 0, 10: None}.get(rest, rest)


@dataclass(frozen=True)
class RhfTable:
    """The table the rules read. Build it with `load` or `parse` (validated) or `empty`."""

    rhfs: tuple[Rhf, ...] = ()
    no_municipality: tuple[str, ...] = NO_MUNICIPALITY_CODES
    source: str = "(no RHF table)"
    _counties: dict[str, tuple[Rhf, FormerCounty | None]] = field(
        init=False, repr=False, compare=False
    )
    _exceptions: dict[str, Rhf] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        counties: dict[str, tuple[Rhf, FormerCounty | None]] = {}
        exceptions: dict[str, Rhf] = {}
        for rhf in self.rhfs:
            counties.update((c, (rhf, None)) for c in rhf.counties)
            counties.update((f.number, (rhf, f)) for f in rhf.former_counties)
            exceptions.update((m, rhf) for m in rhf.municipalities)
        object.__setattr__(self, "_counties", counties)
        object.__setattr__(self, "_exceptions", exceptions)

    @classmethod
    def empty(cls) -> RhfTable:
        """For a deployment without rhf.toml: no RHF is known, every municipality is
        unknown, and the no-municipality codes still fall back to the institution."""
        return cls()

    @classmethod
    def load(cls, path: Path) -> RhfTable:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RhfError(str(path), None, None, f"cannot read: {exc}") from exc
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, file: str = FILE) -> RhfTable:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RhfError(file, None, None, str(exc)) from exc
        return _Checks(file).table(data)

    def by_name(self, name: str | None) -> Rhf | None:
        return next((r for r in self.rhfs if r.name == name), None)

    def by_orgnr(self, orgnr: str | None) -> Rhf | None:
        return next((r for r in self.rhfs if r.orgnr == orgnr), None)

    def is_no_municipality(self, kommnr: str | None) -> bool:
        return kommnr in self.no_municipality

    def for_municipality(self, kommnr: str | None, day: date | None = None) -> Rhf | None:
        """The RHF of a municipality number. A number that is an exception gives the
        exception's RHF, otherwise the county prefix decides. A former county counts only
        on days within its period; with `day` None, on any day. The answer is None for a
        missing, malformed or unknown number and for the no-municipality codes."""
        found = self._municipality(kommnr, day)
        if found is None or found.reason == OUT_OF_PERIOD:
            return None
        return found.rhf

    def resolve(
        self, kommnr: str | None, institution_rhf: str | None, day: date | None = None
    ) -> Resolution:
        """RAD-15: who gets the refund for a contact on `day`, and why (see REASONS).
        `institution_rhf` is the institution's `rhf` name from the registry."""
        if kommnr is None or kommnr == "":
            return Resolution(self.by_name(institution_rhf), MISSING)
        if self.is_no_municipality(kommnr):
            return Resolution(self.by_name(institution_rhf), NO_MUNICIPALITY)
        if not isinstance(kommnr, str) or not KOMMNR_RE.fullmatch(kommnr):
            return Resolution(None, MALFORMED)
        return self._municipality(kommnr, day) or Resolution(None, UNKNOWN, kommnr[:2])

    def _municipality(self, kommnr: str | None, day: date | None) -> Resolution | None:
        if (
            not isinstance(kommnr, str)
            or not KOMMNR_RE.fullmatch(kommnr)
            or self.is_no_municipality(kommnr)
        ):
            return None
        if kommnr in self._exceptions:
            return Resolution(self._exceptions[kommnr], EXCEPTION, kommnr[:2])
        county = kommnr[:2]
        found = self._counties.get(county)
        if found is None:
            return None
        rhf, former = found
        if former is None:
            return Resolution(rhf, MUNICIPALITY, county)
        in_force = day is None or former.valid_on(day)
        return Resolution(rhf, FORMER_COUNTY if in_force else OUT_OF_PERIOD, county)


def _digits(n: int, what: str):
    """A string of exactly `n` digits (a number would lose its leading zero)."""
    pattern = re.compile(f"[0-9]{{{n}}}")

    def check(value: object) -> object:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ValueError(f"{value!r} must be {what} as a string")
        return value

    return Annotated[str, BeforeValidator(check)]


def _once(values: tuple[str, ...]) -> tuple[str, ...]:
    twice = sorted({v for v in values if values.count(v) > 1})
    if twice:
        raise ValueError(f"listed twice: {twice}")
    return values


def _orgnr(value: object) -> object:
    if not isinstance(value, str) or not ORGNR_RE.fullmatch(value):
        raise ValueError(f"{value!r} must be a string of 9 digits")
    if not valid_orgnr(value):
        expected = _check_digit(value)
        hint = (
            "no check digit fits these 8 digits"
            if expected is None
            else f"the check digit should be {expected}"
        )
        raise ValueError(f"{value} fails the mod-11 check ({hint})")
    return value


def _text(value: object) -> object:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r}: a non-empty string is needed")
    return value


def _day(value: object) -> object:
    if isinstance(value, datetime) or not isinstance(value, date):
        raise ValueError(f"{value!r} must be a TOML date, e.g. 2019-12-31")
    return value


def _account(value: object) -> object:
    if not isinstance(value, str) or not valid_account(value):
        raise ValueError(f"{value!r} is not an 11-digit account number")
    return value


County = _digits(2, "two digits")
Kommnr = _digits(4, "four digits")
Text = Annotated[str, BeforeValidator(_text)]
Day = Annotated[date, BeforeValidator(_day)]
Counties = Annotated[tuple[County, ...], AfterValidator(_once)]
Kommnrs = Annotated[tuple[Kommnr, ...], AfterValidator(_once)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _FormerEntry(_Entry):
    number: County
    name: Text
    valid_to: Day  # before valid_from: its check compares with valid_to
    valid_from: Day | None = None

    @field_validator("valid_from")
    @classmethod
    def _not_after_end(cls, value: date | None, info: ValidationInfo) -> date | None:
        end = info.data.get("valid_to")
        if value is not None and end is not None and value > end:
            raise ValueError(f"{value} is after valid_to {end}")
        return value


class _RhfEntry(_Entry):
    name: Text
    orgnr: Annotated[str, BeforeValidator(_orgnr)]
    counties: Counties
    municipalities: Kommnrs = ()
    former_counties: tuple[_FormerEntry, ...] = ()
    account: Annotated[str, BeforeValidator(_account)] | None = None


class _RhfFile(_Entry):
    """rhf.toml as written: the shape and the values of each entry."""

    no_municipality: Kommnrs = NO_MUNICIPALITY_CODES
    rhf: tuple[_RhfEntry, ...] = ()


def _located(data: dict, loc: tuple[str | int, ...]) -> tuple[str | None, str | None]:
    """pydantic's location of an error as (entry, field) in the file's own words:
    ('rhf', 1, 'former_counties', 0, 'valid_to') ->
    ('[[rhf]] #2 "Helse Midt-Norge RHF", former_counties #1 "30"', 'valid_to')."""
    if len(loc) < 2 or loc[0] != "rhf" or not isinstance(loc[1], int):
        return None, field_path(loc) or None
    rows = data.get("rhf") if isinstance(data.get("rhf"), list) else []
    row = rows[loc[1]] if loc[1] < len(rows) and isinstance(rows[loc[1]], dict) else {}
    name = row.get("name")
    entry = _label(loc[1] + 1, name) if isinstance(name, str) and name.strip() else None
    entry = entry or f"[[rhf]] #{loc[1] + 1}"
    rest = loc[2:]
    if len(rest) >= 2 and rest[0] == "former_counties" and isinstance(rest[1], int):
        formers = row.get("former_counties") or []
        former = formers[rest[1]] if rest[1] < len(formers) else {}
        number = former.get("number") if isinstance(former, dict) else None
        entry = f"{entry}, former_counties #{rest[1] + 1}"
        if isinstance(number, str) and COUNTY_RE.fullmatch(number):
            entry = f'{entry} "{number}"'
        rest = rest[2:]
    names = [str(part) for part in rest if isinstance(part, str)]
    return entry, names[0] if names else None


class _Checks:
    """The rules across entries, on entries already valid one by one. Every error
    names the file, the entry and the field."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.county_entry: dict[str, str] = {}  # county number -> the entry that lists it
        self.county_rhf: dict[str, str] = {}  # county number -> its [[rhf]] entry
        self.exception_entry: dict[str, str] = {}  # municipality -> its [[rhf]] entry

    def fail(self, entry: str | None, fld: str | None, problem: str) -> RhfError:
        return RhfError(self.file, entry, fld, problem)

    def table(self, data: dict) -> RhfTable:
        try:
            parsed = _RhfFile.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            entry, fld = _located(data, tuple(first["loc"]))
            raise self.fail(entry, fld, describe(first)) from exc
        if not parsed.rhf:
            raise self.fail(None, "rhf", "at least one [[rhf]] entry is needed")
        codes = parsed.no_municipality
        rhfs = tuple(self.rhf(i, row) for i, row in enumerate(parsed.rhf, start=1))
        self.unique(rhfs, "name")
        self.unique(rhfs, "orgnr")
        for i, rhf in enumerate(rhfs, start=1):
            entry = _label(i, rhf.name)
            for m in rhf.municipalities:
                if self.county_rhf.get(m[:2]) == entry:
                    raise self.fail(
                        entry,
                        "municipalities",
                        f"{m} needs no exception: its county {m[:2]} is this RHF's already",
                    )
                if m in codes:
                    raise self.fail(entry, "municipalities", f"{m} is a no-municipality code")
        for code in codes:
            if code[:2] in self.county_entry:
                raise self.fail(
                    None,
                    "no_municipality",
                    f"{code} lies in county {code[:2]} of {self.county_entry[code[:2]]}",
                )
        return RhfTable(rhfs, codes, self.file)

    def unique(self, rhfs: tuple[Rhf, ...], fld: str) -> None:
        seen: dict[str, str] = {}
        for i, rhf in enumerate(rhfs, start=1):
            value, entry = getattr(rhf, fld), _label(i, rhf.name)
            if value in seen:
                raise self.fail(entry, fld, f"{value} is also the {fld} of {seen[value]}")
            seen[value] = entry

    def rhf(self, i: int, row: _RhfEntry) -> Rhf:
        entry = _label(i, row.name)
        for county in row.counties:
            self.claim(county, entry, entry, "counties")
        formers = []
        for j, f in enumerate(row.former_counties, start=1):
            self.claim(f.number, entry, f'{entry}, former_counties #{j} "{f.number}"', "number")
            formers.append(FormerCounty(f.number, f.name, f.valid_from, f.valid_to))
        for m in row.municipalities:
            if m in self.exception_entry:
                raise self.fail(
                    entry,
                    "municipalities",
                    f"{m} is already an exception of {self.exception_entry[m]}",
                )
            self.exception_entry[m] = entry
        return Rhf(
            row.name, row.orgnr, row.counties, row.municipalities, tuple(formers), row.account
        )

    def claim(self, county: str, rhf_entry: str, entry: str, fld: str) -> None:
        """Each county number is in exactly one place: one RHF, current or former."""
        if county in self.county_entry:
            raise self.fail(
                entry, fld, f"county {county} is already in {self.county_entry[county]}"
            )
        self.county_entry[county] = entry
        self.county_rhf[county] = rhf_entry


def _label(i: int, name: str) -> str:
    return f'[[rhf]] #{i} "{name}"'
