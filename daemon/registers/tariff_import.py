"""`kravmottak tariff import --kind nlk`: Helfo's NLK list and a rate table → config/tariffs/.

Reads either layout of the code list, told apart by the header:

- Helfo's published CSV, "Laboratoriekoder som gir rett til refusjon" (KODE; TILDATO;
  FRADATO; ERSTATTES_AV; …; SYSTEM; …; FAGOMRAADE_NLK; REFUSJONSKATEGORI; REFUSJON_stat;
  REFUSJON_privat; UGYLDIG_KOMB; STJERNEKODE; REFUSJONSKATEGORI_ENDRET), ';' or ','
  separated, with or without a BOM, UTF-8 or Windows-1252, dates dd.mm.yyyy and decimal
  commas. The reduced variant without the date columns is accepted too.
- The reference digest of that list (code, name_no, field, field_prefix, …, valid_from,
  valid_to, replaced_by, …): ISO dates, decimal points.

and a rate table in the digest's refusjonssatser layout (category, field, year, sector
statlig/privat, kroner, valid_from, valid_to, source_id …) or in our own lab-rates layout.

What the importer derives (written to the files, so the daemon does not have to):
- `pharmacogenetic` (LAB-05): a Klinisk farmakologi (KF) code whose system is DNA or
  RNA: the SYSTEM column starts with "DNA"/"RNA" (e.g. "DNA (spesifikasjon)"), or the
  system part of the bruksnavn (before the first '-') is DNA/RNA, optionally with a
  specimen in parentheses ("DNA-CYP2D6-gen", "RNA(B)-…").
- the category of a code the list gives none (LAB-11, §7 and §7.1 of the 2019 rules):
  a code that replaces another (the other's ERSTATTES_AV points at it) takes the
  replaced code's category; any other code of a field in the scheme (MB, MM, KF, IT,
  MG) gets category 2 of its field, from its own FRADATO. Fields outside the scheme
  (Patologi) keep no category.

A file with errors is refused as a whole, naming row and column; nothing is written.
The files are written atomically, both temporary files before either is renamed.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

from daemon import files
from daemon.registers import tariff_table, tariffs
from daemon.registers.tariffs import CODES_FILE, RATES_FILE, NlkCode, Rate, TariffError, Tariffs

# NLK fagområde → the prefix of its refusjonskategorier (Patologi has none in the scheme;
# "PAT" is the reference digest's name for it)
FIELD_PREFIXES = {
    "Medisinsk biokjemi": "MB",
    "Medisinsk mikrobiologi": "MM",
    "Klinisk farmakologi": "KF",
    "Immunologi og transfusjonsmedisin": "IT",
    "Medisinsk genetikk": "MG",
    "Patologi": "PAT",
}
SCHEME_FIELDS = ("MB", "MM", "KF", "IT", "MG")  # LAB-11: new codes go to category 2
NEW_CODE_CATEGORY = "2"
PHARMACOLOGY = "KF"
SECTOR_NAMES = {
    "statlig": "stat",
    "stat": "stat",
    "offentlig": "stat",
    "privat": "privat",
    "private": "privat",
}
LAB_CATEGORY_RE = re.compile(rf"({'|'.join(SCHEME_FIELDS)})[0-9]{{1,2}}")
SYSTEM_RE = re.compile(r"(DNA|RNA)\b")
NAME_SYSTEM_RE = re.compile(r"(DNA|RNA)(\([^)]*\))?")
MAX_LISTED_PROBLEMS = 20


@dataclass(frozen=True, slots=True)
class Layout:
    """A source layout: our key → its column (a regex matched case-insensitively)."""

    name: str
    columns: dict[str, str]
    required: tuple[str, ...]


HELFO = Layout(
    "Helfo NLK list",
    {
        "code": "KODE",
        "name": "NORSK_BRUKSNAVN",
        "field": "FAGOMRAADE_NLK",
        "category": "REFUSJONSKATEGORI",
        "starred": "STJERNEKODE",
        "valid_from": "FRADATO",
        "valid_to": "TILDATO",
        "replaced_by": "ERSTATTES_AV",
        "system": "SYSTEM",
        "amount_stat": "REFUSJON_stat",
        "amount_privat": "REFUSJON_privat",
    },
    ("code", "name", "field", "category", "starred"),
)
DIGEST = Layout(
    "reference digest",
    {
        "code": "code",
        "name": "name_no",
        "field": "field",
        "field_prefix": "field_prefix",
        "category": "refusjonskategori",
        "starred": "starred",
        "valid_from": "valid_from",
        "valid_to": "valid_to",
        "replaced_by": "replaced_by",
        "system": "system",
        "amount_stat": r"rate_stat(_[0-9]{4})?(_nok)?",
        "amount_privat": r"rate_privat(_[0-9]{4})?(_nok)?",
    },
    ("code", "name", "field", "field_prefix", "category", "starred", "valid_from", "valid_to"),
)
RATE_TABLE = Layout(
    "rate table",
    {
        "category": "category|refusjonskategori",
        "field": "field",
        "sector": "sector",
        "kroner": "kroner",
        "valid_from": "valid_from|fradato",
        "valid_to": "valid_to|tildato",
        "source": "source_id|source",
    },
    ("category", "sector", "kroner", "valid_from"),
)


@dataclass(frozen=True, slots=True)
class Lab11:
    """A category the importer gave a code (LAB-11)."""

    code: str
    valid_from: date | None
    category: str
    basis: str  # "LAB-11 new code" | "LAB-11 replaces X"


@dataclass(frozen=True)
class ImportReport:
    source: str
    layout: str
    encoding: str
    rows: int
    codes: int
    starred: int
    pharmacogenetic: int
    lab11: tuple[Lab11, ...]
    uncategorised: tuple[tuple[str, str], ...]  # (code, field) left without a category
    versions: tuple[tuple[NlkCode, ...], ...]  # codes listed more than once, by period
    previous: bool  # was there a code table in the target to compare with?
    previous_rates: bool
    added: tuple[str, ...]
    removed: tuple[str, ...]
    recategorised: tuple[tuple[str, str, str], ...]  # (code, old, new)
    changed: tuple[str, ...]  # other differences (name, validity, flags, replaced_by)
    rates_source: str | None
    rates: int
    rates_added: tuple[Rate, ...]
    rates_removed: tuple[Rate, ...]
    rates_changed: tuple[tuple[Rate, Rate], ...]
    ignored_rates: tuple[str, ...]
    warnings: tuple[str, ...]
    target: str
    written: tuple[str, ...]

    def summary(self, limit: int = 10) -> str:
        def some(items: Iterable[str]) -> str:
            return tariff_table.some(items, limit)

        out = [
            f"NLK codes: {self.source} ({self.layout}, {self.encoding}): {self.rows} rows,"
            f" {self.codes} codes; {self.starred} starred, {self.pharmacogenetic}"
            f" pharmacogenetic (KF, system DNA/RNA)"
        ]
        for versions in self.versions:
            periods = "; ".join(f"{v.category or '-'} {_span(v)}" for v in versions)
            out.append(f"  {versions[0].code} is listed {len(versions)} times: {periods}")
        new = [a for a in self.lab11 if a.basis == "LAB-11 new code"]
        out.append(
            f"  LAB-11: {len(self.lab11)} code(s) got a category"
            f" ({len(new)} new → category 2 of the field,"
            f" {len(self.lab11) - len(new)} replacements → the replaced code's category)"
        )
        if self.lab11:
            out.append(
                "    "
                + some(
                    f"{a.code} {a.category} ({a.basis.removeprefix('LAB-11 ')})" for a in self.lab11
                )
            )
        if self.uncategorised:
            fields = sorted({f for _, f in self.uncategorised})
            out.append(
                f"  without a category: {len(self.uncategorised)} ({', '.join(fields)}:"
                f" outside the NLK refusjon scheme): {some(c for c, _ in self.uncategorised)}"
            )
        out += tariff_table.comparison(
            CODES_FILE,
            self.target,
            bool(self.previous),
            self.added,
            self.removed,
            self.recategorised,
            self.changed,
            limit,
        )
        if self.rates_source is None:
            out.append(f"Rates: no rate table given; {RATES_FILE} kept as it is")
        else:
            out.append(f"Rates: {self.rates_source}: {self.rates} lab rates")
            for note in self.ignored_rates:
                out.append(f"  ignored: {note}")
            if not self.previous_rates:
                out.append(f"  compared with: nothing (no earlier {RATES_FILE} in {self.target})")
            else:
                out.append(
                    f"  compared with the existing {RATES_FILE}: {len(self.rates_added)} added,"
                    f" {len(self.rates_removed)} removed, {len(self.rates_changed)} changed"
                )
            if self.rates_added and self.previous_rates:
                out.append(f"    added: {some(_rate_text(r) for r in self.rates_added)}")
            if self.rates_removed:
                out.append(f"    removed: {some(_rate_text(r) for r in self.rates_removed)}")
            for old, new in self.rates_changed[:limit]:
                out.append(f"    changed: {_rate_text(old)} → {new.kroner:.2f}")
        out.extend(f"Warning: {w}" for w in self.warnings)
        if self.written:
            out.append(f"Written to {self.target}: {', '.join(self.written)}")
        else:
            out.append(f"Nothing to write: {self.target} is up to date")
        return "\n".join(out)


def _span(x: NlkCode | Rate) -> str:
    if x.valid_to is None:
        return f"from {x.valid_from}" if x.valid_from else "(always)"
    return f"{x.valid_from or '…'}..{x.valid_to}"


def _rate_text(r: Rate) -> str:
    return f"{r.category} {r.sector} {r.valid_from} {r.kroner:.2f}"


# --------------------------------------------------------------------------- the import


def import_nlk(
    source_csv: Path, rates_csv: Path | None, target_dir: Path, current: Path | None = None
) -> ImportReport:
    """Read the code list (and the rate table), derive what the rules need, compare with
    the tables in force (in `current`, by default `target_dir`), and write them to
    `target_dir`. Raises TariffError on a bad file."""
    current = target_dir if current is None else current
    table = read_table(source_csv, (HELFO, DIGEST))
    entries = _codes_from(table)
    codes, lab11, conflicts = assign_categories([code for _, code, _ in entries])
    warnings = list(conflicts)

    rates_text: str | None = None
    ignored: tuple[str, ...] = ()
    new_rates: list[Rate] | None = None
    if rates_csv is not None:
        new_rates, ignored = _rates_from(read_table(rates_csv, (RATE_TABLE,)))
        rates_text = tariffs.render_rates(new_rates)

    old_codes, old_rates, problems = _existing(current)
    warnings += [f"{p}; not compared" for p in problems]
    if rates_text is None:  # keep the rates there are (refused below if they are bad)
        try:
            rates_text = (current / RATES_FILE).read_text(encoding="utf-8")
        except FileNotFoundError:
            warnings.append(f"no rate table given and none in {current}: {RATES_FILE} is empty")
            rates_text = tariffs.render_rates(())

    codes_text = tariffs.render_codes(codes)
    # what we write must load: the same validation the daemon applies
    built = tariffs.parse(codes_text, rates_text, str(target_dir))
    warnings += _cross_check(codes, [amounts for _, _, amounts in entries], built)

    written = write_files(target_dir, {CODES_FILE: codes_text, RATES_FILE: rates_text})
    return _report(
        table,
        source_csv,
        rates_csv,
        target_dir,
        codes,
        lab11,
        built,
        new_rates,
        ignored,
        old_codes,
        old_rates,
        tuple(warnings),
        written,
    )


def assign_categories(codes: list[NlkCode]) -> tuple[list[NlkCode], list[Lab11], list[str]]:
    """LAB-11: give each code version without a category one, where the rules say so.

    A version of a code that replaces others takes the category of the replaced code's
    version that names it in ERSTATTES_AV (resolved the same way if that one has none);
    otherwise a code of a field in the scheme gets category 2 of its field."""
    replaced: dict[str, list[NlkCode]] = {}
    for c in codes:
        if c.replaced_by:
            replaced.setdefault(c.replaced_by, []).append(c)
    conflicts: list[str] = []

    def resolve(c: NlkCode, seen: frozenset[str]) -> tuple[str | None, str]:
        if c.category is not None:
            return c.category, c.category_from
        if c.field_prefix not in SCHEME_FIELDS:
            return None, ""
        found = []
        for old in _replaced_versions(replaced.get(c.code, ()), c.valid_from):
            if old.code not in seen:
                category = resolve(old, seen | {c.code})[0]
                if category is not None:
                    found.append((old.code, category))
        if found:
            if len({cat for _, cat in found}) > 1:
                conflicts.append(
                    f"LAB-11: {c.code} replaces codes of different categories"
                    f" ({', '.join(f'{o} {cat}' for o, cat in found)}); took {found[0][1]}"
                )
            return found[0][1], f"LAB-11 replaces {found[0][0]}"
        return f"{c.field_prefix}{NEW_CODE_CATEGORY}", "LAB-11 new code"

    out, assigned = [], []
    for c in codes:
        if c.category is None:
            category, basis = resolve(c, frozenset())
            if category is not None:
                c = replace(c, category=category, category_from=basis)
                assigned.append(Lab11(c.code, c.valid_from, category, basis))
        out.append(c)
    return out, assigned, conflicts


def _replaced_versions(olds, day: date | None) -> list[NlkCode]:
    """Per replaced code, the version whose category carries over (§7.1 "samme
    refusjonskategori som koden den erstatter"): the one valid when the new code
    starts, else the newest."""
    by_code: dict[str, list[NlkCode]] = {}
    for old in olds:
        by_code.setdefault(old.code, []).append(old)
    chosen = []
    for code in sorted(by_code):
        versions = sorted(by_code[code], key=lambda o: o.valid_from or date.min)
        valid = [o for o in versions if day is not None and o.valid_on(day)]
        chosen.append(valid[-1] if valid else versions[-1])
    return chosen


def is_pharmacogenetic(field_prefix: str, system: str, name: str) -> bool:
    """LAB-05: a KF code whose system is DNA or RNA (see the module docstring)."""
    if field_prefix != PHARMACOLOGY:
        return False
    return bool(SYSTEM_RE.match(system) or NAME_SYSTEM_RE.fullmatch(name.split("-", 1)[0]))


# --------------------------------------------------------------------------- reading sources


@dataclass
class Table:
    """A source CSV read into cells keyed by our names, with row numbers."""

    file: str
    layout: Layout
    encoding: str
    columns: dict[str, str]  # our key → the column's name in the file
    rows: list[tuple[int, dict[str, str]]]
    problems: list[TariffError] = field(default_factory=list)

    def problem(self, row: int, key: str, text: str) -> None:
        self.problems.append(TariffError(self.file, row, self.columns.get(key, key), text))

    def parsed(self, row: int, cells: dict[str, str], key: str, parse: Callable[[str], object]):
        value = cells.get(key, "")
        if not value:
            return None
        try:
            return parse(value)
        except ValueError as exc:
            self.problem(row, key, f"{value!r}: {exc}")
            return None

    def refuse_if_problems(self) -> None:
        if not self.problems:
            return
        first, rest = self.problems[0], self.problems[1:]
        text = first.problem
        if rest:
            shown = rest[: MAX_LISTED_PROBLEMS - 1]
            text += f"\n  and {len(rest)} more problem(s):" + "".join(
                f"\n  row {p.row}, column {p.column}: {p.problem}" for p in shown
            )
            if len(rest) > len(shown):
                text += "\n  …"
        raise TariffError(first.file, first.row, first.column, text)


def read_table(path: Path, layouts: tuple[Layout, ...]) -> Table:
    """Read a CSV in one of `layouts` (told apart by the header); ';' or ',' separated,
    UTF-8 (with or without a BOM) or Windows-1252; leading `#` lines are skipped (row
    numbers still count them)."""
    file = path.name
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TariffError(str(path), None, None, f"cannot read: {exc.strerror or exc}") from exc
    try:
        text, encoding = raw.decode("utf-8-sig"), "UTF-8"
    except UnicodeDecodeError:
        text, encoding = raw.decode("cp1252", errors="replace"), "Windows-1252"
    if raw.startswith(b"\xef\xbb\xbf"):
        encoding += " with BOM"
    stream = io.StringIO(text, newline="")
    comments = 0  # leading '#' lines (our own layouts may start with a comment)
    while True:
        start = stream.tell()
        first = stream.readline()
        if not first.startswith("#"):
            stream.seek(start)
            break
        comments += 1
    delimiter = max((";", ",", "\t"), key=first.count)
    reader = csv.reader(stream, delimiter=delimiter)
    header = [h.strip() for h in next(reader, [])]
    layout, columns = match_layout(header, layouts, file, comments + 1)
    position = {key: header.index(name) for key, name in columns.items()}
    rows = []
    for values in reader:
        row = comments + reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) < len(header) or any(v.strip() for v in values[len(header) :]):
            problem = f"{len(values)} fields, the header has {len(header)}"
            raise TariffError(file, row, None, problem)
        rows.append((row, {key: values[i].strip() for key, i in position.items()}))
    sep = {";": "';'", ",": "','", "\t": "tab"}[delimiter]
    return Table(file, layout, f"{encoding}, {sep}-separated", columns, rows)


def match_layout(
    header: list[str], layouts: tuple[Layout, ...], file: str, row: int
) -> tuple[Layout, dict[str, str]]:
    """The first layout whose required columns the header names, and its columns."""
    for layout in layouts:
        columns = _match_columns(header, layout)
        if all(k in columns for k in layout.required):
            return layout, columns
    expected = "; or ".join(
        f"{lay.name}: {', '.join(lay.columns[k].split('|')[0] for k in lay.required)}"
        for lay in layouts
    )
    raise TariffError(file, row, None, f"unknown layout; the header must name ({expected})")


def _match_columns(header: list[str], layout: Layout) -> dict[str, str]:
    found = {}
    for key, pattern in layout.columns.items():
        for name in header:
            if re.fullmatch(pattern, name, re.IGNORECASE):
                found[key] = name
                break
    return found


def parse_date(value: str) -> date:
    """ISO (2023-06-30) or Norwegian (30.06.2023)."""
    m = re.fullmatch(r"([0-9]{1,2})\.([0-9]{1,2})\.([0-9]{4})", value)
    try:
        if m:
            return date(int(m[3]), int(m[2]), int(m[1]))
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise ValueError("not a date (dd.mm.yyyy or yyyy-mm-dd)")


def parse_amount(value: str) -> Decimal:
    """Kroner with a decimal comma or point; spaces and (with a comma) points group digits."""
    text = value.replace(" ", "").replace("\u00a0", "")
    if "," in text:
        text = text.replace(".", "").replace(",", ".")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite() or amount < 0 or amount != amount.quantize(Decimal("0.01")):
        raise ValueError("not an amount in kroner (at most 2 decimals, not negative)")
    return amount


def parse_flag(value: str) -> bool:
    answer = {"0": False, "n": False, "nei": False, "1": True, "j": True, "ja": True}
    if value.casefold() not in answer:
        raise ValueError("not a flag (0 or 1)")
    return answer[value.casefold()]


def _checked(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"not {what}")
        return value

    return check


_code = _checked(tariffs.CODE_RE, "an NLK code")
_category = _checked(tariffs.CATEGORY_RE, "a refusjonskategori (e.g. MB2)")
_prefix = _checked(tariffs.PREFIX_RE, "a field prefix (e.g. MB)")

_Entry = tuple[int, NlkCode, dict[str, Decimal | None]]  # row, code, amount per sector


def _codes_from(t: Table) -> list[_Entry]:
    entries: list[_Entry] = []
    for row, cells in t.rows:
        code = t.parsed(row, cells, "code", _code)
        if code is None and not cells["code"]:
            t.problem(row, "code", "is empty")
        name, field_name = cells["name"], cells["field"]
        if not name:
            t.problem(row, "name", "is empty")
        prefix = FIELD_PREFIXES.get(field_name)
        if "field_prefix" in cells:
            given = t.parsed(row, cells, "field_prefix", _prefix)
            if prefix is not None and given is not None and given != prefix:
                t.problem(row, "field_prefix", f"{given!r} but {field_name!r} is {prefix}")
            prefix = prefix or given
        if prefix is None:
            known = ", ".join(FIELD_PREFIXES)
            t.problem(row, "field", f"unknown fagområde {field_name!r} (known: {known})")
        starred = t.parsed(row, cells, "starred", parse_flag)
        if starred is None and not cells["starred"]:
            t.problem(row, "starred", "is empty (0 or 1)")
        start = t.parsed(row, cells, "valid_from", parse_date)
        end = t.parsed(row, cells, "valid_to", parse_date)
        if start and end and end < start:
            t.problem(row, "valid_to", f"{end} is before {t.columns['valid_from']} {start}")
        category = t.parsed(row, cells, "category", _category)
        replaced_by = t.parsed(row, cells, "replaced_by", _code)
        amounts = {
            sector: t.parsed(row, cells, f"amount_{sector}", parse_amount)
            for sector in tariffs.SECTORS
        }
        if t.problems or code is None or prefix is None:
            continue  # keep reading: report every problem in the file at once
        entries.append(
            (
                row,
                NlkCode(
                    code=code,
                    name=name,
                    field=field_name,
                    field_prefix=prefix,
                    category=category,
                    starred=bool(starred),
                    pharmacogenetic=is_pharmacogenetic(prefix, cells.get("system", ""), name),
                    valid_from=start,
                    valid_to=end,
                    replaced_by=replaced_by,
                    category_from="list" if category else "",
                ),
                amounts,
            )
        )
    t.refuse_if_problems()
    column = t.columns.get("valid_from", t.columns["code"])
    tariffs.check_code_versions([(row, c) for row, c, _ in entries], t.file, column)
    return entries


def _rates_from(t: Table) -> tuple[list[Rate], tuple[str, ...]]:
    rated: list[tuple[int, Rate]] = []
    ignored = []
    for row, cells in t.rows:
        category = cells["category"]
        if not LAB_CATEGORY_RE.fullmatch(category):
            what = f" ({cells['field']})" if cells.get("field") else ""
            ignored.append(f"row {row}: {category!r}{what} is not a lab refusjonskategori")
            continue
        sector = SECTOR_NAMES.get(cells["sector"].casefold())
        if sector is None:
            t.problem(row, "sector", f"{cells['sector']!r} is not statlig or privat")
        kroner = t.parsed(row, cells, "kroner", parse_amount)
        start = t.parsed(row, cells, "valid_from", parse_date)
        end = t.parsed(row, cells, "valid_to", parse_date)
        for key, value in (("kroner", kroner), ("valid_from", start)):
            if value is None and not cells[key]:
                t.problem(row, key, "is empty")
        if start and end and end < start:
            t.problem(row, "valid_to", f"{end} is before {t.columns['valid_from']} {start}")
        if sector is None or kroner is None or start is None:
            continue
        rated.append((row, Rate(category, sector, kroner, start, end, cells.get("source", ""))))
    t.refuse_if_problems()
    tariffs.check_rate_periods(rated, t.file, t.columns["valid_from"])
    return [r for _, r in rated], tuple(ignored)


# --------------------------------------------------------------------------- comparing


def _existing(target: Path) -> tuple[dict | None, list[Rate] | None, list[str]]:
    """The tables already in `target` (None where absent or unreadable), and problems."""
    problems: list[str] = []

    def read(name: str, parse: Callable) -> list | None:
        try:
            return [item for _, item in parse((target / name).read_text(encoding="utf-8"), name)]
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, TariffError) as exc:
            problems.append(f"the existing {name} cannot be read ({exc})")
            return None

    old_codes = read(CODES_FILE, tariffs.parse_codes)
    old_rates = read(RATES_FILE, tariffs.parse_rates)
    codes = None
    if old_codes is not None:
        codes = {}
        for c in old_codes:
            codes.setdefault(c.code, []).append(c)
    return codes, old_rates, problems


def _cross_check(
    codes: list[NlkCode], amounts: list[dict[str, Decimal | None]], built: Tariffs
) -> list[str]:
    """The list's own per-code amounts against the newest rate of each category, the
    categories in use that have no rate at all, and replacements not in the list."""
    mismatches, missing = [], set()
    for code, listed in zip(codes, amounts, strict=True):
        if code.category is None:
            continue
        for sector, amount in listed.items():
            rate = built.rate_entry(code.category, sector, date.max)
            if rate is None:
                missing.add(f"{code.category} {sector}")
            elif amount is not None and amount != rate.kroner:
                mismatches.append(
                    f"{code.code} {code.category} {sector}: list {amount}, table {rate.kroner}"
                    f" (from {rate.valid_from})"
                )
    out = []
    if mismatches:
        out.append(
            f"{len(mismatches)} per-code amount(s) in the list differ from the newest rate: "
            + "; ".join(mismatches[:5])
        )
    if missing:
        out.append(f"categories in use without any rate: {', '.join(sorted(missing))}")
    dangling = sorted(
        {c.replaced_by for c in codes if c.replaced_by and c.replaced_by not in built.codes}
    )
    if dangling:
        out.append(f"replaced_by points at codes not in the list: {', '.join(dangling)}")
    return out


def _report(
    t: Table,
    source: Path,
    rates_csv: Path | None,
    target: Path,
    codes: list[NlkCode],
    lab11: list[Lab11],
    built: Tariffs,
    new_rates: list[Rate] | None,
    ignored: tuple[str, ...],
    old_codes: dict | None,
    old_rates: list[Rate] | None,
    warnings: tuple[str, ...],
    written: tuple[str, ...],
) -> ImportReport:
    new = {code: built.versions(code) for code in built.codes}
    old = {code: tuple(v) for code, v in (old_codes or {}).items()}
    recategorised, changed = [], []
    for code in sorted(new.keys() & old.keys()):
        before, after = _categories(old[code]), _categories(new[code])
        if before != after:
            recategorised.append((code, before, after))
        elif old[code] != new[code]:
            changed.append(code)
    rates_added, rates_removed, rates_changed = (), (), ()
    if new_rates is not None:
        key = lambda r: (r.category, r.sector, r.valid_from)  # noqa: E731
        before_rates = {key(r): r for r in old_rates or ()}
        after_rates = {key(r): r for r in new_rates}
        order = sorted(before_rates.keys() | after_rates.keys(), key=_rate_order)
        rates_added = tuple(after_rates[k] for k in order if k not in before_rates)
        rates_removed = tuple(before_rates[k] for k in order if k not in after_rates)
        rates_changed = tuple(
            (before_rates[k], after_rates[k])
            for k in order
            if k in before_rates and k in after_rates and before_rates[k] != after_rates[k]
        )
    return ImportReport(
        source=source.name,
        layout=t.layout.name,
        encoding=t.encoding,
        rows=len(codes),
        codes=len(new),
        starred=sum(1 for c in built.codes.values() if c.starred),
        pharmacogenetic=sum(1 for c in built.codes.values() if c.pharmacogenetic),
        lab11=tuple(lab11),
        uncategorised=tuple((c.code, c.field) for c in codes if c.category is None),
        versions=tuple(built.history.values()),
        previous=old_codes is not None,
        previous_rates=old_rates is not None,
        added=tuple(sorted(new.keys() - old.keys())),
        removed=tuple(sorted(old.keys() - new.keys())),
        recategorised=tuple(recategorised),
        changed=tuple(changed),
        rates_source=rates_csv.name if rates_csv is not None else None,
        rates=len(new_rates) if new_rates is not None else len(built.rates),
        rates_added=rates_added,
        rates_removed=rates_removed,
        rates_changed=rates_changed,
        ignored_rates=ignored,
        warnings=warnings,
        target=str(target),
        written=written,
    )


def _categories(versions: Iterable[NlkCode]) -> str:
    return "/".join(v.category or "-" for v in versions)


def _rate_order(key: tuple[str, str, date]) -> tuple:
    return (*tariffs.category_sort_key(key[0]), key[1], key[2])


# --------------------------------------------------------------------------- writing


def write_files(target: Path, contents: dict[str, str]) -> tuple[str, ...]:
    """Write the files that differ: every temporary file written and fsynced first, then
    all renamed, then the folder fsynced. On failure no temporary file is left."""
    changed = {}
    for name, text in contents.items():
        data = text.encode("utf-8")
        path = target / name
        if not (path.exists() and path.read_bytes() == data):
            changed[name] = data
    if not changed:
        return ()
    target.mkdir(parents=True, exist_ok=True)
    files.remove_stale_temps(target)  # a killed earlier import's
    temps: dict[str, Path] = {}
    try:
        for name, data in changed.items():
            tmp = files.temp_path(target / name)
            temps[name] = tmp
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        for name, tmp in temps.items():
            os.replace(tmp, target / name)
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return tuple(changed)
