"""`kravmottak tariff import --kind radiologi`: the radiology register → config/tariffs/.

Writes the three files `daemon.registers.radiology_tariffs` reads (`ncrp-codes.csv`,
`radiology-addons.csv`, `radiology-rates.csv`) from a code file told apart by its header
(or by being an .xlsx), read by `daemon.registers.radiology_sources`:

- **the reference digest** (`ncrp_codes.csv`): the codes and what the rules need to know
  about them; no categories, unless `--example-categories` gives the EXAMPLE ones
  (`daemon.registers.radiology_example`).
- **Helfo's table** (.xlsx or CSV): it REPLACES the category table. Its codes get its
  category (source = the file's name); codes of the current register it does not list
  are removed; codes it lists that the register lacks are added with attributes derived
  from the code. Its `belop` column (sector stat) becomes rates from `valid_from`, unless
  equal to the rate in force then; nothing older is closed.

`--addons` replaces the tilleggskoder, `--rates` (our own layout) the rate table; without
them the current ones are kept. Rates whose source is EXAMPLE are dropped on every
import and made anew only with `--example-categories`.

All or nothing, like `daemon.registers.tariff_import`: everything is validated (the texts to be
written are parsed by the daemon's own parser) before the three files are written and
renamed. A file with errors is refused naming file, row and column.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path

from daemon.registers import radiology_tariffs as rt
from daemon.registers import tariff_table
from daemon.registers.radiology_example import example_rates
from daemon.registers.radiology_sources import (
    ADDON_DIGEST,
    ADDON_OURS,
    DIGEST,
    HELFO,
    RATE_TABLE,
    SourceCodes,
    addons_from,
    codes_from_digest,
    codes_from_helfo,
    is_xlsx,
    rates_from,
    read_xlsx,
)
from daemon.registers.radiology_tariffs import (
    ADDONS_FILE,
    CODES_FILE,
    EXAMPLE,
    RATES_FILE,
    RadCode,
    RadiologyRegister,
)
from daemon.registers.tariff_import import Table, read_table, write_files
from daemon.registers.tariff_table import Rate, RateTable, TariffError, category_sort_key

# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class RadiologyReport:
    source: str
    layout: str
    encoding: str
    rows: int
    register: RadiologyRegister
    skipped: tuple[str, ...]
    several: tuple[tuple[str, tuple[str, ...], str], ...]  # (code, regions, how) "Flere"
    derived: tuple[str, ...]  # codes added from Helfo's table, attributes from the code
    category_source: str  # "EXAMPLE", the file's name, or "" (none)
    previous: bool
    added: tuple[str, ...]
    removed: tuple[str, ...]
    recategorised: tuple[tuple[str, str, str], ...]
    changed: tuple[str, ...]
    addons_source: str | None
    addons_skipped: tuple[str, ...]
    addons_added: tuple[str, ...]
    addons_removed: tuple[str, ...]
    addons_changed: tuple[str, ...]
    rates_source: str
    rates_added: tuple[Rate, ...]
    rates_removed: tuple[Rate, ...]
    rates_changed: tuple[tuple[Rate, Rate], ...]
    warnings: tuple[str, ...]
    target: str
    written: tuple[str, ...]

    def summary(self, limit: int = 10) -> str:
        def some(items: Iterable[str]) -> str:
            return tariff_table.some(items, limit)

        def counts(counter: Counter) -> str:
            return ", ".join(f"{key or '-'} {n}" for key, n in sorted(counter.items()))

        codes = list(self.register.codes.values())
        out = [
            f"Radiology codes: {self.source} ({self.layout}, {self.encoding}): {self.rows}"
            f" rows, {len(codes)} codes: {counts(Counter(c.kind for c in codes))}"
            f" ({counts(Counter(c.code_system for c in codes))})",
            f"  modality: {counts(Counter(c.modality for c in codes if c.modality))}",
            "  regions: "
            + counts(Counter(r for c in codes for r in c.regions))
            + f"; {sum(len(c.regions) > 1 for c in codes)} codes cover several regions,"
            f" {sum(not c.regions for c in codes)} none",
            "  needs a guidance code (RAD-05): "
            + (some(c.code for c in codes if c.needs_guidance) or "none"),
        ]
        for problem in self.skipped:
            out.append(f"  skipped: {problem}")
        if self.several:
            by_how = Counter(how for _, _, how in self.several)
            out.append(
                f"  'Flere regioner': {len(self.several)} codes, regions {counts(by_how)};"
                f" left Uspesifisert: {some(c for c, r, h in self.several if h == 'none')}"
            )
        categorised = Counter(c.category for c in codes if c.category)
        if self.category_source == EXAMPLE:
            out.append(
                f"  categories: EXAMPLE (--example-categories), NOT Helfo's: {counts(categorised)}"
            )
        elif self.category_source:
            out.append(f"  categories from {self.category_source}: {counts(categorised)}")
        uncategorised = [c.code for c in codes if c.category is None]
        if uncategorised:
            out.append(f"  without a category (no refund): {len(uncategorised)}")
        if self.derived:
            out.append(
                f"  added with attributes derived from the code (kind and modality from its"
                f" letters, no regions): {len(self.derived)}: {some(self.derived)}"
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
        addons = list(self.register.addons.values())
        if self.addons_source is None:
            out.append(f"Tilleggskoder: none given; {ADDONS_FILE} kept ({len(addons)} codes)")
        else:
            out.append(
                f"Tilleggskoder: {self.addons_source}: {len(addons)} codes:"
                f" {counts(Counter(a.role for a in addons))}"
            )
            if self.addons_skipped:
                out.append(f"  skipped (not tilleggskoder): {some(self.addons_skipped)}")
            out.append(
                f"  {len(self.addons_added)} added, {len(self.addons_removed)} removed,"
                f" {len(self.addons_changed)} changed"
                + (f": {some(self.addons_changed)}" if self.addons_changed else "")
            )
        rates = self.register.rates
        out.append(
            f"Rates: {self.rates_source}: {len(rates)} rates"
            f" ({sum(r.source == EXAMPLE for r in rates)} EXAMPLE);"
            f" {len(self.rates_added)} added, {len(self.rates_removed)} removed,"
            f" {len(self.rates_changed)} changed"
        )
        if self.rates_added:
            out.append(f"  added: {some(_rate_text(r) for r in self.rates_added)}")
        if self.rates_removed:
            out.append(f"  removed: {some(_rate_text(r) for r in self.rates_removed)}")
        for old, new in self.rates_changed[:limit]:
            out.append(f"  changed: {_rate_text(old)} → {new.kroner:.2f}")
        out.extend(f"Warning: {w}" for w in self.warnings)
        if self.register.example:
            out.append(
                "Warning: the categories and kroner marked EXAMPLE are made up; import"
                " Helfo's table before paying real claims"
            )
        if self.written:
            out.append(f"Written to {self.target}: {', '.join(self.written)}")
        else:
            out.append(f"Nothing to write: {self.target} is up to date")
        return "\n".join(out)


def _rate_text(r: Rate) -> str:
    return f"{r.category} {r.sector} {r.valid_from} {r.kroner:.2f}"


# --------------------------------------------------------------------------- the import


def import_radiology(
    source: Path,
    target: Path,
    *,
    addons: Path | None = None,
    rates: Path | None = None,
    example: bool = False,
    valid_from: date | None = None,
    current: Path | None = None,
) -> RadiologyReport:
    """Read the code source (and tilleggskoder, rates), compare with the register in
    force (in `current`, by default `target`), and write it to `target`. Raises
    TariffError on a bad file; then nothing is written. `valid_from`: the start of the
    rates a Helfo table's `belop` column gives (the command line's default is 1 January
    of the current year)."""
    current = target if current is None else current
    old_codes, old_addons, old_rates, problems = _existing(current)
    table = read_xlsx(source, (HELFO,)) if is_xlsx(source) else read_table(source, (DIGEST, HELFO))
    helfo = table.layout is not DIGEST
    if helfo and example:
        raise TariffError(
            table.file, None, None, "--example-categories is for the reference digest;"
            " Helfo's table gives the categories itself",
        )  # fmt: skip
    # a file the import keeps (or takes attributes from) must be readable
    needed = {CODES_FILE: helfo, ADDONS_FILE: addons is None, RATES_FILE: rates is None}
    for name, problem in problems.items():
        if needed[name]:
            raise TariffError(str(current / name), None, None, f"cannot be kept: {problem}")
    warnings = [f"the existing {n} cannot be read ({p}); not compared" for n, p in problems.items()]
    if helfo:
        made = codes_from_helfo(table, old_codes or [])
        if made.amounts and valid_from is None:
            raise ValueError("valid_from: the start of the rates in the belop column")
        if old_codes is None:
            warnings.append(
                f"no {CODES_FILE} in {current}: every code's attributes are derived from the"
                " code; no code has regions"
            )
    else:
        made = codes_from_digest(table, example)

    addons_skipped: tuple[str, ...] = ()
    if addons is not None:
        new_addons, addons_skipped = addons_from(read_table(addons, (ADDON_DIGEST, ADDON_OURS)))
    else:
        new_addons = old_addons or []
        if old_addons is None:
            warnings.append(f"no tilleggskoder given and none in {current}: {ADDONS_FILE} is empty")

    if rates is not None:
        base = rates_from(read_table(rates, (RATE_TABLE,)))
        rates_source = rates.name
    else:
        base = [r for r in old_rates or () if r.source != EXAMPLE]
        rates_source = f"the existing {RATES_FILE}" if old_rates is not None else "none"
    if made.category_source == EXAMPLE:
        have = {(r.category, r.sector) for r in base}
        base += [r for r in example_rates() if (r.category, r.sector) not in have]
    if made.amounts and valid_from is not None:
        base = _with_amounts(base, made.amounts, valid_from, source.name)

    texts = {
        CODES_FILE: rt.render_codes(made.codes),
        ADDONS_FILE: rt.render_addons(new_addons),
        RATES_FILE: rt.render_rates(base),
    }
    # what we write must load: the same validation the daemon applies
    built = rt.parse(texts[CODES_FILE], texts[ADDONS_FILE], texts[RATES_FILE], str(target))
    warnings += _cross_check(built)
    written = write_files(target, texts)
    return _report(
        table, source, target, made, built, old_codes, old_addons, old_rates,
        addons, addons_skipped, rates_source, tuple(warnings), written,
    )  # fmt: skip


def _with_amounts(
    rates: list[Rate], amounts: dict[str, Decimal], start: date, source: str
) -> list[Rate]:
    """Helfo's per-category kroner as stat rates from `start`; nothing is closed, and a
    rate equal to the one in force on `start` is not repeated."""
    out = list(rates)
    for category, kroner in sorted(amounts.items()):
        current = RateTable(out).entry(category, "stat", start)
        if current is not None and current.kroner == kroner:
            continue
        key = (category, "stat", start)
        out = [r for r in out if (r.category, r.sector, r.valid_from) != key]
        out.append(Rate(category, "stat", kroner, start, None, source))
    return out


# --------------------------------------------------------------------------- comparing


def _existing(target: Path):
    """The register's files in `target` (None where absent or unreadable), and the
    problem of each unreadable one."""
    problems: dict[str, str] = {}

    def read(name: str, parse) -> list | None:
        try:
            return [item for _, item in parse((target / name).read_text(encoding="utf-8"), name)]
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, TariffError) as exc:
            problems[name] = str(exc)
            return None

    return (
        read(CODES_FILE, rt.parse_codes),
        read(ADDONS_FILE, rt.parse_addons),
        read(RATES_FILE, rt.parse_rates),
        problems,
    )


def _cross_check(built: RadiologyRegister) -> list[str]:
    """Categories in use without any stat rate; the two fixed amounts."""
    day = date.max
    missing = sorted(
        {c.category for c in built.codes.values() if c.category}
        - {r.category for r in built.rates if r.sector == "stat"},
        key=category_sort_key,
    )
    out = []
    if missing:
        out.append(f"categories in use without any stat rate: {', '.join(missing)}")
    for fixed in (rt.AMBULANT, rt.TELE_NM):
        if built.rate_entry(fixed, "stat", day) is None:
            out.append(f"no {fixed} rate (give it with --rates)")
    return out


def _report(
    t: Table, source: Path, target: Path, made: SourceCodes, built: RadiologyRegister,
    old_codes, old_addons, old_rates, addons: Path | None, addons_skipped, rates_source: str,
    warnings: tuple[str, ...], written: tuple[str, ...],
) -> RadiologyReport:  # fmt: skip
    new = {code: built.versions(code) for code in built.codes}
    old: dict[str, list[RadCode]] = {}
    for c in old_codes or ():
        old.setdefault(c.code, []).append(c)
    recategorised, changed = [], []
    for code in sorted(new.keys() & old.keys()):
        before = "/".join(v.category or "-" for v in sorted(old[code], key=_start))
        after = "/".join(v.category or "-" for v in new[code])
        if before != after:
            recategorised.append((code, before, after))
        elif tuple(sorted(old[code], key=_start)) != new[code]:
            changed.append(code)
    before_addons = {a.code: a for a in old_addons or ()}
    after_addons = dict(built.addons)
    key = lambda r: (r.category, r.sector, r.valid_from)  # noqa: E731
    before_rates = {key(r): r for r in old_rates or ()}
    after_rates = {key(r): r for r in built.rates}
    order = sorted(
        before_rates.keys() | after_rates.keys(),
        key=lambda k: (*category_sort_key(k[0]), k[1], k[2]),
    )
    return RadiologyReport(
        source=source.name,
        layout=t.layout.name,
        encoding=t.encoding,
        rows=len(t.rows),
        register=built,
        skipped=made.skipped,
        several=made.several,
        derived=made.derived,
        category_source=made.category_source,
        previous=old_codes is not None,
        added=tuple(sorted(new.keys() - old.keys())),
        removed=tuple(sorted(old.keys() - new.keys())),
        recategorised=tuple(recategorised),
        changed=tuple(changed),
        addons_source=addons.name if addons is not None else None,
        addons_skipped=addons_skipped,
        addons_added=tuple(sorted(after_addons.keys() - before_addons.keys())),
        addons_removed=tuple(sorted(before_addons.keys() - after_addons.keys())),
        addons_changed=tuple(
            sorted(
                c
                for c in after_addons.keys() & before_addons.keys()
                if after_addons[c] != before_addons[c]
            )
        ),
        rates_source=rates_source,
        rates_added=tuple(after_rates[k] for k in order if k not in before_rates),
        rates_removed=tuple(before_rates[k] for k in order if k not in after_rates),
        rates_changed=tuple(
            (before_rates[k], after_rates[k])
            for k in order
            if k in before_rates and k in after_rates and before_rates[k] != after_rates[k]
        ),
        warnings=warnings,
        target=str(target),
        written=written,
    )


def _start(c: RadCode) -> date:
    return c.valid_from or date.min
