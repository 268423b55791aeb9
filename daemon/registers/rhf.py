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
first problem. `RhfTable.resolve` answers RAD-15 with a reason (`REASONS`), so a rule can
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

from daemon import resources
from daemon.registers.tariff_table import TariffError

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

_TOP_KEYS = ("no_municipality", "rhf")
_RHF_KEYS = ("name", "orgnr", "counties", "municipalities", "former_counties", "account")
_FORMER_KEYS = ("number", "name", "valid_from", "valid_to")


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
        return _Parser(file).table(data)

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


class _Parser:
    """Validates the parsed TOML. Every error names the file, the entry and the field."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.county_entry: dict[str, str] = {}  # county number -> the entry that lists it
        self.county_rhf: dict[str, str] = {}  # county number -> its [[rhf]] entry
        self.exception_entry: dict[str, str] = {}  # municipality -> its [[rhf]] entry

    def fail(self, entry: str | None, fld: str | None, problem: str) -> RhfError:
        return RhfError(self.file, entry, fld, problem)

    def table(self, data: dict) -> RhfTable:
        self.keys(data, _TOP_KEYS, None)
        entries = data.get("rhf")
        if not isinstance(entries, list) or not entries:
            raise self.fail(None, "rhf", "at least one [[rhf]] entry is needed")
        codes = self.strings(data, "no_municipality", KOMMNR_RE, "four digits", None)
        codes = codes if "no_municipality" in data else NO_MUNICIPALITY_CODES
        rhfs = tuple(self.rhf(i, row) for i, row in enumerate(entries, start=1))
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

    def rhf(self, i: int, row: object) -> Rhf:
        if not isinstance(row, dict):
            raise self.fail(f"[[rhf]] #{i}", None, "must be a table")
        name = self.text(row, "name", f"[[rhf]] #{i}")
        entry = _label(i, name)
        self.keys(row, _RHF_KEYS, entry)
        orgnr = row.get("orgnr")
        if not isinstance(orgnr, str) or not ORGNR_RE.fullmatch(orgnr):
            raise self.fail(entry, "orgnr", f"{orgnr!r} must be a string of 9 digits")
        if not valid_orgnr(orgnr):
            expected = _check_digit(orgnr)
            hint = (
                "no check digit fits these 8 digits"
                if expected is None
                else f"the check digit should be {expected}"
            )
            raise self.fail(entry, "orgnr", f"{orgnr} fails the mod-11 check ({hint})")
        counties = self.strings(row, "counties", COUNTY_RE, "two digits", entry, required=True)
        for county in counties:
            self.claim(county, entry, entry, "counties")
        formers = tuple(
            self.former(entry, j, f)
            for j, f in enumerate(self.items(row, "former_counties", entry), start=1)
        )
        municipalities = self.strings(row, "municipalities", KOMMNR_RE, "four digits", entry)
        for m in municipalities:
            if m in self.exception_entry:
                raise self.fail(
                    entry,
                    "municipalities",
                    f"{m} is already an exception of {self.exception_entry[m]}",
                )
            self.exception_entry[m] = entry
        account = row.get("account")
        if account is not None and not valid_account(account):
            raise self.fail(entry, "account", f"{account!r} is not an 11-digit account number")
        return Rhf(name, orgnr, counties, municipalities, formers, account)

    def former(self, rhf_entry: str, j: int, row: object) -> FormerCounty:
        entry = f"{rhf_entry}, former_counties #{j}"
        if not isinstance(row, dict):
            raise self.fail(entry, None, "must be a table {number = ..., name = ..., ...}")
        self.keys(row, _FORMER_KEYS, entry)
        number = row.get("number")
        if not isinstance(number, str) or not COUNTY_RE.fullmatch(number):
            raise self.fail(entry, "number", f"{number!r} must be two digits as a string")
        entry = f'{entry} "{number}"'
        name = self.text(row, "name", entry)
        valid_to = self.day(row, "valid_to", entry)
        if valid_to is None:
            raise self.fail(entry, "valid_to", "missing: a former county has an end")
        valid_from = self.day(row, "valid_from", entry)
        if valid_from is not None and valid_from > valid_to:
            raise self.fail(entry, "valid_from", f"{valid_from} is after valid_to {valid_to}")
        self.claim(number, rhf_entry, entry, "number")
        return FormerCounty(number, name, valid_from, valid_to)

    def claim(self, county: str, rhf_entry: str, entry: str, fld: str) -> None:
        """Each county number is in exactly one place: one RHF, current or former."""
        if county in self.county_entry:
            raise self.fail(
                entry, fld, f"county {county} is already in {self.county_entry[county]}"
            )
        self.county_entry[county] = entry
        self.county_rhf[county] = rhf_entry

    def keys(self, row: dict, known: tuple[str, ...], entry: str | None) -> None:
        unknown = sorted(set(row) - set(known))
        if unknown:
            raise self.fail(entry, None, f"unknown key(s) {unknown}; known: {list(known)}")

    def text(self, row: dict, fld: str, entry: str) -> str:
        value = row.get(fld)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(entry, fld, f"{value!r}: a non-empty string is needed")
        return value

    def items(self, row: dict, fld: str, entry: str | None, *, required=False) -> list:
        if fld not in row:
            if required:
                raise self.fail(entry, fld, "missing")
            return []
        value = row[fld]
        if not isinstance(value, list):
            raise self.fail(entry, fld, f"must be a list, not {type(value).__name__}")
        return value

    def strings(
        self,
        row: dict,
        fld: str,
        pattern: re.Pattern[str],
        shape: str,
        entry: str | None,
        *,
        required=False,
    ) -> tuple[str, ...]:
        values = self.items(row, fld, entry, required=required)
        for v in values:
            if not isinstance(v, str) or not pattern.fullmatch(v):
                raise self.fail(entry, fld, f"{v!r} must be {shape} as a string")
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise self.fail(entry, fld, f"listed twice: {twice}")
        return tuple(values)

    def day(self, row: dict, fld: str, entry: str) -> date | None:
        value = row.get(fld)
        if value is None:
            return None
        if isinstance(value, datetime) or not isinstance(value, date):
            raise self.fail(entry, fld, f"{value!r} must be a TOML date, e.g. 2019-12-31")
        return value


def _label(i: int, name: str) -> str:
    return f'[[rhf]] #{i} "{name}"'
