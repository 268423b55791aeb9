"""The radiology register: NCRP/NCSP/NCMP codes, tilleggskoder and kroner per category.

Data, not code. Three CSV files under `config/tariffs/` (layout in its README.md),
written by `kravmottak tariff import --kind radiologi` and read here:

- `ncrp-codes.csv`: one row per procedure code (version): kind, modality, body regions,
  refusjonskategori, validity;
- `radiology-addons.csv`: the tilleggskoder and their role (side, teleradiology,
  ambulant, contrast, interrupted, guidance, radiopharmaceutical, …);
- `radiology-rates.csv`: kroner per refusjonskategori (and the two fixed amounts:
  `AMBULANT`, the ambulant add-on of RAD-11, and `TELE-NM`, the nuclear-medicine
  secondary reading of RAD-12) from a date.

The official code → category table and the kroner per category were not found in
public sources: the shipped categories and rates are an EXAMPLE (rows whose `source`
is `EXAMPLE`, and a `#` comment at the top of those files), until an operator imports
Helfo's spreadsheet (`daemon.registers.radiology_import`).

`load()` is as strict as `daemon.registers.tariffs.load()`: a bad row is refused naming file, row
(the line in the file) and column; an unknown kind, modality, region or role, a code
that does not have the shape of its code system, or two versions of one code whose
periods overlap are refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

from daemon.registers import tariff_table
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

CODES_FILE = "ncrp-codes.csv"
ADDONS_FILE = "radiology-addons.csv"
RATES_FILE = "radiology-rates.csv"
FILES = (CODES_FILE, ADDONS_FILE, RATES_FILE)
CODE_COLUMNS = (
    "code", "name", "code_system", "kind", "modality", "regions", "category",
    "needs_guidance", "valid_from", "valid_to", "source",
)  # fmt: skip
ADDON_COLUMNS = ("code", "name", "role", "source")
EXAMPLE = "EXAMPLE"  # the `source` of the shipped example categories and kroner

KINDS = ("diagnostic", "nuclear", "intervention")
MODALITIES = (
    "RG", "RGA", "RGV", "CT", "CTA", "CT+CTA", "MR", "MRA", "MR+MRA", "UL", "NM", "PET", "RNT",
)  # fmt: skip
REGIONS = (
    "Hode", "Hals", "Toraks", "Abdomen", "Bekken", "Overekstremitet", "Underekstremitet",
    "Kolumna", "Mamma", "Uspesifisert",
)  # fmt: skip
ROLES = (
    "side-right",  # ZTX0XA (NCSP: ZXA00)
    "side-left",  # ZTX0XB (NCSP: ZXA05)
    "side-bilateral",  # ZTX0XC (NCSP: ZXA10)
    "tele-image",  # ZTX0BA kun billedtaking: 1/3
    "tele-primary",  # ZTX0BB kun primærgransking: 2/3
    "tele-secondary",  # ZTX0BC kun sekundærgransking: 2/3, nuclear: fixed amount
    "ambulant",  # ZTX0AD: +AMBULANT once per contact
    "contrast",  # ZTX0E*: information only
    "interrupted",  # ZXF*: information only
    "guidance",  # ZXM*: image guidance (RAD-05)
    "radiopharmaceutical",  # ZTX6*, ZTT*, ATC V09*/V10* (RAD-04)
    "other",  # every other known tilleggskode
)
AMBULANT = "AMBULANT"  # rates row: the ambulant add-on (RAD-11)
TELE_NM = "TELE-NM"  # rates row: nuclear-medicine secondary reading (RAD-12)
ATC_RADIOPHARMACEUTICAL = re.compile(r"V(09|10)[A-Z]{2}[0-9]{2}")

CODE_SYSTEMS = ("NCRP", "NCSP", "NCMP")
CODE_PATTERNS = {  # the shape of a code per system
    "NCRP": re.compile(r"[A-Z]{3}[0-9][A-Z0-9][A-Z]"),  # SNG0AA, AAB06K
    "NCSP": re.compile(r"[A-Z]{3}[0-9]{2}"),  # JUK02
    "NCMP": re.compile(r"[A-Z]{4}[0-9]{2}"),
}
MODALITIES_OF = {  # which modalities each kind may have
    "diagnostic": ("RG", "RGA", "RGV", "CT", "CTA", "CT+CTA", "MR", "MRA", "MR+MRA", "UL"),
    "nuclear": ("NM", "PET", "RNT"),
    "intervention": ("",),
}
CATEGORY_RE = re.compile(r"[A-Z0-9]{1,12}(-[A-Z0-9]{1,12})?")  # D05, I1, AMBULANT, TELE-NM
ADDON_RE = re.compile(r"[A-Z][A-Z0-9]{3,7}")  # ZTX0XA, ZXA00, V09GA02


def ncrp_kind(code: str) -> str:
    """NCRP's own structure: S-codes are diagnostic, T-codes nuclear medicine, every
    other chapter an image-guided intervention."""
    return {"S": "diagnostic", "T": "nuclear"}.get(code[:1], "intervention")


@dataclass(frozen=True, slots=True)
class RadCode:
    """One procedure code that gives a right to refusjon (RAD-02).

    `code_system`: NCRP, NCSP or NCMP. `kind`: diagnostic (NCRP S-codes), nuclear
    (T-codes) or intervention (image-guided; NCRP intervention codes and the eligible
    NCSP/NCMP codes). `modality`: one of MODALITIES ("" for interventions). `regions`:
    the body regions the exam covers (two or more for a region-combination code; empty
    when not applicable). `needs_guidance`: an NCSP/NCMP intervention that needs a
    guidance code ZXM* (RAD-05; JUK02 and JUK05 do not)."""

    code: str
    name: str
    code_system: str
    kind: str
    modality: str
    regions: tuple[str, ...]
    category: str | None
    needs_guidance: bool
    valid_from: date | None
    valid_to: date | None
    source: str = ""

    def valid_on(self, day: date) -> bool:
        return (self.valid_from is None or self.valid_from <= day) and (
            self.valid_to is None or day <= self.valid_to
        )


@dataclass(frozen=True, slots=True)
class AddonCode:
    code: str
    name: str
    role: str  # one of ROLES
    source: str = ""  # where the code and its text come from (SOURCES.md ids)


@dataclass(frozen=True)
class RadiologyRegister:
    """The register the radiology rules read (empty for a lab-only deployment).
    `codes`: the newest version of each code; `history`: every version, oldest first,
    of the codes that have more than one."""

    codes: Mapping[str, RadCode] = field(default_factory=lambda: MappingProxyType({}))
    addons: Mapping[str, AddonCode] = field(default_factory=lambda: MappingProxyType({}))
    rates: tuple[Rate, ...] = ()
    source: str = "(no radiology register)"
    history: Mapping[str, tuple[RadCode, ...]] = field(default_factory=lambda: MappingProxyType({}))
    _rates: RateTable = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rates", RateTable(self.rates))

    @property
    def example(self) -> bool:
        """True while the categories or rates are the shipped example."""
        return any(c.source == EXAMPLE for c in self.codes.values()) or any(
            r.source == EXAMPLE for r in self.rates
        )

    def code(self, code: str, day: date | None = None) -> RadCode | None:
        """The code's entry; with `day`, the version valid that day when there is one."""
        return tariff_table.version_on(self.codes, self.history, code, day)

    def versions(self, code: str) -> tuple[RadCode, ...]:
        """Every version of a code, oldest first (empty for an unknown code)."""
        return tariff_table.all_versions(self.codes, self.history, code)

    def addon(self, code: str) -> AddonCode | None:
        """A tilleggskode; any ATC V09/V10 code is a radiopharmaceutical."""
        found = self.addons.get(code)
        if found is None and ATC_RADIOPHARMACEUTICAL.fullmatch(code):
            return AddonCode(code, "ATC radiofarmakum", "radiopharmaceutical")
        return found

    def rate_entry(self, category: str, sector: str, day: date) -> Rate | None:
        """The rate with the latest valid_from <= day, unless it ended before day."""
        return self._rates.entry(category, sector, day)

    def rate(self, category: str, sector: str, day: date) -> Decimal | None:
        entry = self.rate_entry(category, sector, day)
        return entry.kroner if entry is not None else None


# --------------------------------------------------------------------------- reading


def load(directory: Path) -> RadiologyRegister:
    """The three files in `directory`, validated. None of them there: an empty register
    (a lab-only deployment); some but not all: refused, naming the missing one."""
    present = [name for name in FILES if (directory / name).exists()]
    if not present:
        return RadiologyRegister()
    texts = {}
    for name in FILES:
        path = directory / name
        if name not in present:
            raise TariffError(
                str(path), None, None, f"missing (the radiology register is {', '.join(FILES)})"
            )
        try:
            texts[name] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TariffError(str(path), None, None, f"cannot read: {exc}") from exc
    return parse(texts[CODES_FILE], texts[ADDONS_FILE], texts[RATES_FILE], str(directory))


def parse(codes_text: str, addons_text: str, rates_text: str, source: str) -> RadiologyRegister:
    """The register from the three files' text (what `load` reads, the importer writes)."""
    current, history = index_versions(code for _, code in parse_codes(codes_text))
    addons = {a.code: a for _, a in parse_addons(addons_text)}
    return RadiologyRegister(
        codes=MappingProxyType(current),
        addons=MappingProxyType(addons),
        rates=tuple(r for _, r in parse_rates(rates_text)),
        source=source,
        history=MappingProxyType(history),
    )


def parse_codes(text: str, file: str = CODES_FILE) -> list[tuple[int, RadCode]]:
    out = []
    for row, cells in csv_rows(text, file, CODE_COLUMNS):
        c = Cells(file, row, cells)
        system = c.choice("code_system", CODE_SYSTEMS)
        code = c.text("code")
        if not CODE_PATTERNS[system].fullmatch(code):
            raise c.fail("code", f"{code!r} is not an {system} code")
        kind = c.choice("kind", KINDS)
        expected = ncrp_kind(code) if system == "NCRP" else "intervention"
        if kind != expected:
            raise c.fail("kind", f"{kind!r}, but {system} code {code} is {expected}")
        modality = c.text("modality", empty=True)
        if modality not in MODALITIES_OF[kind]:
            allowed = ", ".join(m for m in MODALITIES_OF[kind] if m) or "empty"
            raise c.fail("modality", f"{modality!r}: a {kind} code's modality is {allowed}")
        category = c.optional("category", CATEGORY_RE)
        source = c.text("source", empty=True)
        if category is not None and not source:
            raise c.fail("source", "is empty: say where the category comes from")
        needs_guidance = c.flag("needs_guidance")
        if needs_guidance and kind != "intervention":
            raise c.fail("needs_guidance", f"only an intervention needs guidance, not {kind}")
        start, end = c.period()
        out.append(
            (
                row,
                RadCode(
                    code=code,
                    name=c.text("name", empty=True),
                    code_system=system,
                    kind=kind,
                    modality=modality,
                    regions=_regions(c),
                    category=category,
                    needs_guidance=needs_guidance,
                    valid_from=start,
                    valid_to=end,
                    source=source,
                ),
            )
        )
    check_code_versions(out, file)
    return out


def _regions(c: Cells) -> tuple[str, ...]:
    value = c.text("regions", empty=True)
    regions = tuple(value.split("+")) if value else ()
    for region in regions:
        if region not in REGIONS:
            raise c.fail("regions", f"{region!r} is not one of {', '.join(REGIONS)}")
    if len(set(regions)) != len(regions):
        raise c.fail("regions", f"{value!r} names a region twice")
    if len(regions) > 1 and "Uspesifisert" in regions:
        raise c.fail("regions", f"{value!r}: Uspesifisert cannot be combined with a region")
    return regions


def parse_addons(text: str, file: str = ADDONS_FILE) -> list[tuple[int, AddonCode]]:
    out: list[tuple[int, AddonCode]] = []
    seen: dict[str, int] = {}
    for row, cells in csv_rows(text, file, ADDON_COLUMNS):
        c = Cells(file, row, cells)
        code = c.text("code", ADDON_RE)
        if code in seen:
            raise c.fail("code", f"duplicate tilleggskode {code} (also on row {seen[code]})")
        seen[code] = row
        addon = AddonCode(
            code, c.text("name"), c.choice("role", ROLES), c.text("source", empty=True)
        )
        out.append((row, addon))
    return out


def parse_rates(text: str, file: str = RATES_FILE) -> list[tuple[int, Rate]]:
    return tariff_table.parse_rates(text, file, CATEGORY_RE)


# --------------------------------------------------------------------------- writing

IMPORT_HINT = (
    "Import Helfo's table (Radiologiske prosedyrer som gir rett til refusjon - statlige"
    " helseinstitusjoner):",
    "  kravmottak tariff import --kind radiologi HELFO.xlsx [--valid-from YYYY-MM-DD]"
    " [--rates RATES.csv]",
    "See config/tariffs/README.md.",
)


def render_codes(codes: Iterable[RadCode]) -> str:
    """The text of `ncrp-codes.csv`, sorted by code and valid_from; it starts with a
    warning while any category is the EXAMPLE."""
    rows = sorted(codes, key=lambda c: (c.code, c.valid_from or date.min))
    comment: tuple[str, ...] = ()
    if any(c.source == EXAMPLE for c in rows):
        comment = (
            "EXAMPLE: the category of the rows whose source is EXAMPLE is made up by"
            " `tariff import --example-categories`;",
            "it is NOT Helfo's code-to-refusjonskategori table, which was not found.",
            *IMPORT_HINT,
        )
    return csv_text(
        CODE_COLUMNS,
        (
            (
                c.code,
                c.name,
                c.code_system,
                c.kind,
                c.modality,
                "+".join(c.regions),
                c.category or "",
                "1" if c.needs_guidance else "0",
                iso(c.valid_from),
                iso(c.valid_to),
                c.source,
            )
            for c in rows
        ),
        comment,
    )


def render_addons(addons: Iterable[AddonCode]) -> str:
    """The text of `radiology-addons.csv`, sorted by code."""
    rows = sorted(addons, key=lambda a: a.code)
    return csv_text(ADDON_COLUMNS, ((a.code, a.name, a.role, a.source) for a in rows))


def render_rates(rates: Iterable[Rate]) -> str:
    """The text of `radiology-rates.csv`; it starts with a warning while any rate is
    the EXAMPLE."""
    rates = list(rates)
    comment: tuple[str, ...] = ()
    if any(r.source == EXAMPLE for r in rates):
        comment = (
            "EXAMPLE: the kroner of the rows whose source is EXAMPLE are made up by"
            " `tariff import --example-categories`;",
            "they are NOT the rates of poliklinikkforskriften. AMBULANT and TELE-NM are"
            " real (see their source).",
            *IMPORT_HINT,
        )
    return tariff_table.render_rates(rates, comment)
