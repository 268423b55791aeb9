"""What the radiology importer reads, and what it derives from it.

- `codes_from_digest`: the reference digest `ncrp_codes.csv` (code, name_no, kind,
  modality, region_skde_grouping, refusjonskategori, …):
  - kind: `diagnostisk (NCRP S-kode)` → NCRP diagnostic, `nukleærmedisin (NCRP T-kode)`
    → NCRP nuclear, `bildeveiledet intervensjon (NCRP)` → NCRP intervention (no
    modality), `NCSP-kode …` → NCSP intervention. An NCSP/NCMP intervention needs a
    guidance code (RAD-05), except JUK02 and JUK05 (regelverk 2019 §2).
  - modality: the digest's, with PET_CT/PET_MR → PET; when it gives none, the 6th
    character (`MODALITY_LETTERS`). Codes whose 5th-6th characters are DE/DP are CT+CTA
    and GH/GQ/BH/BQ MR+MRA (combined exams; SOURCES.md "What is INFERRED"), unless the
    name names one exam only (SPX0DP "CTANG angiografi av abdominalaorta" stays CTA).
  - regions: the digest's region when it is one of REGIONS; `Lymfe`/`Blod` →
    Uspesifisert; `Flere regioner` → the regions the name names (`NAME_REGIONS`;
    "helkropp" is hode, hals, toraks, abdomen, bekken and underekstremiteter, as SSY0AD's
    name spells out), united over the codes of the same body part (`body_part`), so
    SSK0AB "Arteriografi av hele aorta" gets SSK0AD's Toraks+Abdomen, SSW0AK (no name)
    SSW0AD's regions and TST0AL "PET/CT-18F FDG Skallebasis - lår" SST0AD's; when
    nothing is found, Uspesifisert.
  - category: the digest has none; with `--example-categories` the EXAMPLE one
    (`daemon.registers.radiology_example`).
  - a row whose code does not have the shape of its code system (the digest has one,
    `TSJWM`) is skipped and named in the report; every other problem refuses the file.
- `codes_from_helfo`: Helfo's table "Radiologiske prosedyrer som gir rett til refusjon –
  statlige helseinstitusjoner", as .xlsx (`read_xlsx`: the header row is found within
  the first 20 rows of the first sheet) or CSV (`kode,navn,refusjonskategori[,belop]`,
  ';' or ',', BOM, UTF-8 or Windows-1252, decimal commas). Its codes keep the current
  register's attributes; codes the register lacks get attributes derived from the code
  (`derived_code`: no regions). `belop` is the kroner of the row's category and must
  agree within a category (else both rows are named).
- `addons_from`: the digest `tilleggskoder.csv` (its `type` → ROLES, `addon_role`; the
  kodeverk letters R/K/M/Q skipped) or our own layout; `rates_from`: our rates layout.

Every reader collects all problems of a file and refuses it as a whole, naming file,
row and column (`daemon.registers.tariff_import.Table`).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from pathlib import Path

from daemon.registers import radiology_tariffs as rt
from daemon.registers.radiology_example import example_category
from daemon.registers.radiology_tariffs import (
    CATEGORY_RE,
    CODE_PATTERNS,
    EXAMPLE,
    REGIONS,
    AddonCode,
    RadCode,
)
from daemon.registers.tariff_import import (
    SECTOR_NAMES,
    Layout,
    Table,
    match_layout,
    parse_amount,
    parse_date,
)
from daemon.registers.tariff_table import Rate, TariffError, check_rate_periods

DIGEST = Layout(
    "reference digest",
    {
        "code": "code",
        "name": "name_no",
        "kind": "kind",
        "modality": "modality",
        "region": "region_skde_grouping",
        "category": "refusjonskategori",
    },
    ("code", "name", "kind", "modality", "region"),
)
HELFO = Layout(
    "Helfo's table",
    {
        "code": "kode|prosedyrekode|code",
        "name": "navn|kodenavn|kodetekst|tekst|name|beskrivelse",
        "category": "refusjonskategori|kategori",
        "amount": r"(bel(ø|o)p|refusjon|refusjonsbel(ø|o)p|sats|refusjonssats|kroner)"
        r"( ?\(?(kr|nok|kroner)\)?)?",
    },
    ("code", "name", "category"),
)
ADDON_DIGEST = Layout(
    "reference digest",
    {"code": "code", "name": "name_no", "type": "type", "source": "source_id"},
    ("code", "name", "type"),
)
ADDON_OURS = Layout(
    "radiology-addons", {"code": "code", "name": "name", "role": "role", "source": "source"},
    ("code", "name", "role"),
)  # fmt: skip
RATE_TABLE = Layout(
    "radiology-rates",
    {key: key for key in ("category", "sector", "kroner", "valid_from", "valid_to", "source")},
    ("category", "sector", "kroner", "valid_from"),
)
HEADER_ROWS = 20  # an .xlsx header row is looked for in the first 20 rows

DIGEST_KINDS = {  # the start of the digest's `kind` → (code system, kind)
    "diagnostisk": ("NCRP", "diagnostic"),
    "nukleærmedisin": ("NCRP", "nuclear"),
    "bildeveiledet intervensjon": ("NCRP", "intervention"),
    "ncsp-kode": ("NCSP", "intervention"),
    "ncmp-kode": ("NCMP", "intervention"),
}
DIGEST_MODALITIES = {"PET_CT": "PET", "PET_MR": "PET"}
DIGEST_REGIONS = {"Lymfe": "Uspesifisert", "Blod": "Uspesifisert"}
SEVERAL_REGIONS = "Flere regioner"
GUIDED = {"UL-veiledet": "UL", "CT-veiledet": "CT", "MR-veiledet": "MR"}  # digest wording
GUIDANCE_LETTERS = {"K": "UL", "D": "CT", "G": "MR"}  # NCRP intervention, 6th character
NO_GUIDANCE = ("JUK02", "JUK05")  # regelverk 2019 §2: NCSP codes exempt from RAD-05
MODALITY_LETTERS = {  # NCRP: the 6th character of a diagnostic / nuclear code
    "diagnostic": {
        "A": "RG", "B": "RGA", "C": "RGV", "D": "CT", "E": "CT+CTA", "P": "CTA",
        "G": "MR", "H": "MR+MRA", "Q": "MRA", "K": "UL",
    },
    "nuclear": {"L": "PET", "M": "PET", "N": "NM", "T": "RNT"},
}  # fmt: skip
COMBINED = {"DE": "CT+CTA", "DP": "CT+CTA", "GH": "MR+MRA", "GQ": "MR+MRA"}
COMBINED |= {"BH": "MR+MRA", "BQ": "MR+MRA"}
WHOLE_BODY = ("Hode", "Hals", "Toraks", "Abdomen", "Bekken", "Underekstremitet")
NAME_REGIONS = {  # the words of a region-combination code's name
    "Hode": r"\b(hode|caput)",
    "Hals": r"\bhals",
    "Toraks": r"\bt(h)?ora(ks|x|kal)",
    "Abdomen": r"\babdom(en|inal)",
    "Bekken": r"\bbekken",
    "Overekstremitet": r"\boverekstremitet",
    "Underekstremitet": r"\bunderekstremitet",
    "Kolumna": r"(kolumna|columna)",
    "Mamma": r"\bmamma",
}
SIDE_ROLES = {
    "ZTX0XA": "side-right", "ZXA00": "side-right",
    "ZTX0XB": "side-left", "ZXA05": "side-left",
    "ZTX0XC": "side-bilateral", "ZXA10": "side-bilateral",
}  # fmt: skip
TELE_ROLES = {"ZTX0BA": "tele-image", "ZTX0BB": "tele-primary", "ZTX0BC": "tele-secondary"}
PLACE_ROLES = {"ZTX0AD": "ambulant"}  # ZTX0AC "utenfor radiologisk laboratorium": other
TYPE_ROLES = {  # the start of the digest's `type` → role
    "kontrast": "contrast",
    "avbrutt": "interrupted",
    "bildeveiledning": "guidance",
    "radiofarmaka": "radiopharmaceutical",
}
INDICATOR_TYPE = "kodeverk-indikator"  # R/K/M/Q: not tilleggskoder, skipped


@dataclass(frozen=True)
class SourceCodes:
    """What a code source gives: the codes and how they were made."""

    codes: list[RadCode]
    amounts: dict[str, Decimal]  # Helfo: category → kroner (stat)
    skipped: tuple[str, ...] = ()
    several: tuple[tuple[str, tuple[str, ...], str], ...] = ()
    derived: tuple[str, ...] = ()
    category_source: str = ""


# --------------------------------------------------------------------------- derivations


def code_system(code: str) -> str | None:
    return next((s for s, p in CODE_PATTERNS.items() if p.fullmatch(code)), None)


def modality_of(code: str, kind: str, name: str, given: str = "") -> str | None:
    """The modality of a diagnostic or nuclear NCRP code: `given` (the digest's), else
    its 6th character; a combined CT+CTA / MR+MRA exam by its 5th-6th characters."""
    if kind == "intervention":
        return ""
    modality = given or MODALITY_LETTERS[kind].get(code[5:6])
    combined = COMBINED.get(code[4:6]) if kind == "diagnostic" else None
    if combined and (not name or " og " in name.casefold()):
        return combined
    return modality


def derived_code(code: str, system: str, name: str) -> RadCode | None:
    """A code Helfo's table lists and the register lacks: kind and modality from the
    code's letters, no regions; None when the modality cannot be told."""
    kind = rt.ncrp_kind(code) if system == "NCRP" else "intervention"
    modality = modality_of(code, kind, name)
    if modality is None:
        return None
    guidance = system != "NCRP" and code not in NO_GUIDANCE
    return RadCode(code, name, system, kind, modality, (), None, guidance, None, None)


def body_part(code: str) -> str:
    """The codes that examine the same body part: in NCRP's region-combination chapter
    (2nd character S) the 2nd-3rd characters name the combination for S- and T-codes
    alike (SSJ0AD "CT Hals og toraks", TSJ0AL "PET/CT-18F FDG Hals og toraks"); elsewhere
    the first five characters do (the 6th is the modality)."""
    return code[1:3] if code[1:2] == "S" else code[:5]


def regions_in(name: str) -> set[str]:
    text = name.casefold()
    if "helkropp" in text:
        return set(WHOLE_BODY)
    return {region for region, word in NAME_REGIONS.items() if re.search(word, text)}


def ordered(regions: Iterable[str]) -> tuple[str, ...]:
    found = set(regions)
    return tuple(r for r in REGIONS if r in found)


def addon_role(code: str, kind: str) -> str | None:
    """The role of a tilleggskode from the digest's `type` (None: not known)."""
    kind = kind.casefold()
    if kind.startswith("side"):
        return SIDE_ROLES.get(code)
    if kind.startswith("teleradiologi"):
        return TELE_ROLES.get(code)
    if kind.startswith("sted"):
        return PLACE_ROLES.get(code, "other")
    return next((role for start, role in TYPE_ROLES.items() if kind.startswith(start)), "other")


def is_xlsx(path: Path) -> bool:
    return path.suffix.casefold() in (".xlsx", ".xlsm")


# --------------------------------------------------------------------------- the digest


def codes_from_digest(t: Table, example: bool) -> SourceCodes:
    drafts: list[tuple[int, RadCode, bool, str, bool]] = []  # row, code, several, guidance, fdg
    skipped = []
    for row, cells in t.rows:
        code, name = cells["code"], cells["name"]
        kind_text = cells["kind"]
        found = next(
            (v for k, v in DIGEST_KINDS.items() if kind_text.casefold().startswith(k)), None
        )
        if found is None:
            t.problem(row, "kind", f"{kind_text!r} is not a kind the importer knows")
            continue
        system, kind = found
        if not CODE_PATTERNS[system].fullmatch(code):
            skipped.append(f"row {row}: {code!r} is not an {system} code")
            continue
        if system == "NCRP" and rt.ncrp_kind(code) != kind:
            t.problem(row, "kind", f"{kind_text!r}, but {code} is an NCRP {rt.ncrp_kind(code)}")
            continue
        given = cells["modality"]
        guidance = ""
        if kind == "intervention":  # the digest's words, else NCRP's 6th character
            guidance = next((m for word, m in GUIDED.items() if word in given), "")
            guidance = guidance or GUIDANCE_LETTERS.get(code[5:6], "") * (system == "NCRP")
        given = DIGEST_MODALITIES.get(given, given) if kind != "intervention" else ""
        if given and given not in rt.MODALITIES_OF[kind]:
            t.problem(row, "modality", f"{cells['modality']!r} is not a {kind} modality")
            continue
        modality = modality_of(code, kind, name, given)
        if modality is None:
            t.problem(row, "modality", f"empty, and {code}'s 6th character names none")
            continue
        region = DIGEST_REGIONS.get(cells["region"], cells["region"])
        several = region == SEVERAL_REGIONS
        if region and not several and region not in REGIONS:
            t.problem(row, "region", f"{region!r} is not one of {', '.join(REGIONS)}")
            continue
        category = cells.get("category") or None
        if category is not None and not CATEGORY_RE.fullmatch(category):
            t.problem(row, "category", f"{category!r} is not a refusjonskategori")
            continue
        draft = RadCode(
            code=code,
            name=name,
            code_system=system,
            kind=kind,
            modality=modality,
            regions=(region,) if region and not several else (),
            category=category,
            needs_guidance=system != "NCRP" and code not in NO_GUIDANCE,
            valid_from=None,
            valid_to=None,
            source=t.file if category else "",
        )
        drafts.append((row, draft, several, guidance, "FDG" in name))
    t.refuse_if_problems()
    rows: dict[str, int] = {}
    for row, draft, *_ in drafts:
        if draft.code in rows:
            raise TariffError(
                t.file,
                row,
                t.columns["code"],
                f"{draft.code} again (first on row {rows[draft.code]})",
            )
        rows[draft.code] = row

    # 'Flere regioner': the regions the names name, united over each body part
    named = {d.code: regions_in(d.name) for _, d, several, *_ in drafts if several}
    group: dict[str, set[str]] = {}
    for code, found in named.items():
        group.setdefault(body_part(code), set()).update(found)
    several_report = []
    codes = []
    for _, draft, several, guidance, fdg in drafts:
        if several:
            regions = group[body_part(draft.code)]
            how = "name" if regions == named[draft.code] else "group"
            if not regions:
                regions, how = {"Uspesifisert"}, "none"
            draft = replace(draft, regions=ordered(regions))
            several_report.append((draft.code, draft.regions, how))
        if example and draft.category is None:
            draft = replace(draft, category=example_category(draft, guidance, fdg), source=EXAMPLE)
        codes.append(draft)
    given = any(c.category and c.source != EXAMPLE for c in codes)
    return SourceCodes(
        codes,
        {},
        tuple(skipped),
        tuple(several_report),
        category_source=EXAMPLE if example else (t.file if given else ""),
    )


# --------------------------------------------------------------------------- Helfo's table


def codes_from_helfo(t: Table, current: list[RadCode]) -> SourceCodes:
    """Every code in the table with its category; current attributes where the register
    has the code, derived ones where it has not."""
    by_code: dict[str, list[RadCode]] = {}
    for c in current:
        by_code.setdefault(c.code, []).append(c)
    seen: dict[str, int] = {}
    amounts: dict[str, tuple[int, Decimal]] = {}
    codes: list[RadCode] = []
    derived = []
    for row, cells in t.rows:
        code, name, category = cells["code"].upper(), cells["name"], cells["category"].upper()
        system = code_system(code)
        if not code:
            t.problem(row, "code", "is empty")
        elif system is None:
            t.problem(row, "code", f"{cells['code']!r} is not an NCRP, NCSP or NCMP code")
        elif code in seen:
            t.problem(row, "code", f"{code} again (first on row {seen[code]})")
        if not category:
            t.problem(row, "category", "is empty")
        elif not CATEGORY_RE.fullmatch(category):
            t.problem(row, "category", f"{cells['category']!r} is not a refusjonskategori")
        amount = t.parsed(row, cells, "amount", parse_amount)
        if amount is not None and category:
            first = amounts.setdefault(category, (row, amount))
            if first[1] != amount:
                t.problem(
                    row,
                    "amount",
                    f"{category} costs {amount} here but {first[1]} on row {first[0]}:"
                    " one category has one amount",
                )
        if system is None or code in seen or t.problems:
            seen.setdefault(code, row)
            continue
        seen[code] = row
        if code in by_code:
            for version in by_code[code]:
                codes.append(
                    replace(version, name=name or version.name, category=category, source=t.file)
                )
            continue
        new = derived_code(code, system, name)
        if new is None:
            t.problem(row, "code", f"cannot tell the modality of {code} from its 6th character")
            continue
        codes.append(replace(new, category=category, source=t.file))
        derived.append(code)
    t.refuse_if_problems()
    return SourceCodes(
        codes,
        {category: amount for category, (_, amount) in amounts.items()},
        derived=tuple(derived),
        category_source=t.file,
    )


def read_xlsx(path: Path, layouts: tuple[Layout, ...]) -> Table:
    """The first sheet of an .xlsx, from its header row (within the first 20 rows); row
    numbers are the sheet's, columns are named by their header and letter."""
    import openpyxl  # only an .xlsx import needs it
    from openpyxl.utils import get_column_letter
    from openpyxl.utils.exceptions import InvalidFileException

    file = path.name
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (OSError, zipfile.BadZipFile, InvalidFileException, KeyError, ValueError) as exc:
        raise TariffError(file, None, None, f"cannot read as .xlsx: {exc}") from exc
    try:
        sheet = book.worksheets[0]
        sheet.reset_dimensions()  # do not trust the stored size: read every row
        lines = enumerate(sheet.iter_rows(values_only=True), start=1)
        found = None
        for number, values in lines:
            header = [_cell_text(v) for v in values]
            try:
                found = (number, header, *match_layout(header, layouts, file, number))
                break
            except TariffError as exc:
                if number >= HEADER_ROWS:
                    raise TariffError(
                        file, None, None, f"no header row in the first {HEADER_ROWS} rows of"
                        f" sheet {sheet.title!r} ({exc.problem})",
                    ) from None  # fmt: skip
        if found is None:
            raise TariffError(file, None, None, f"no header row in sheet {sheet.title!r}")
        header_row, header, layout, columns = found
        position = {key: header.index(name) for key, name in columns.items()}
        rows = []
        for number, values in lines:
            cells = {
                key: _cell_text(values[i]) if i < len(values) else "" for key, i in position.items()
            }
            if any(cells.values()):
                rows.append((number, cells))
    finally:
        book.close()
    named = {k: f"{name} ({get_column_letter(position[k] + 1)})" for k, name in columns.items()}
    where = f"xlsx, sheet {sheet.title!r}, header on row {header_row}"
    return Table(file, layout, where, named, rows)


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, date):
        return value.isoformat()[:10]
    return str(value).strip()


# --------------------------------------------------------------------------- addons, rates


def addons_from(t: Table) -> tuple[list[AddonCode], tuple[str, ...]]:
    out: list[AddonCode] = []
    skipped = []
    seen: dict[str, int] = {}
    for row, cells in t.rows:
        code, name = cells["code"], cells["name"]
        if "type" in cells:
            if cells["type"].casefold().startswith(INDICATOR_TYPE):
                skipped.append(code)
                continue
            role = addon_role(code, cells["type"])
            if role is None:
                t.problem(row, "type", f"{cells['type']!r}, but {code} is not one of its codes")
        else:
            role = cells["role"]
            if role not in rt.ROLES:
                t.problem(row, "role", f"{role!r} is not one of {', '.join(rt.ROLES)}")
        if not rt.ADDON_RE.fullmatch(code):
            t.problem(row, "code", f"{code!r} is not a tilleggskode")
        elif code in seen:
            t.problem(row, "code", f"{code} again (first on row {seen[code]})")
        seen.setdefault(code, row)
        if not name:
            t.problem(row, "name", "is empty")
        if not t.problems and role is not None:
            out.append(AddonCode(code, name, role, cells.get("source", "")))
    t.refuse_if_problems()
    return out, tuple(skipped)


def rates_from(t: Table) -> list[Rate]:
    rated: list[tuple[int, Rate]] = []
    for row, cells in t.rows:
        category = cells["category"]
        if not CATEGORY_RE.fullmatch(category):
            t.problem(row, "category", f"{category!r} is not a refusjonskategori")
        sector = SECTOR_NAMES.get(cells["sector"].casefold())
        if sector is None:
            t.problem(row, "sector", f"{cells['sector']!r} is not stat or privat")
        kroner = t.parsed(row, cells, "kroner", parse_amount)
        start = t.parsed(row, cells, "valid_from", parse_date)
        end = t.parsed(row, cells, "valid_to", parse_date)
        for key, value in (("kroner", kroner), ("valid_from", start)):
            if value is None and not cells[key]:
                t.problem(row, key, "is empty")
        if start and end and end < start:
            t.problem(row, "valid_to", f"{end} is before valid_from {start}")
        if t.problems or sector is None or kroner is None or start is None:
            continue
        rated.append((row, Rate(category, sector, kroner, start, end, cells.get("source", ""))))
    t.refuse_if_problems()
    check_rate_periods(rated, t.file, t.columns["valid_from"])
    return [r for _, r in rated]
