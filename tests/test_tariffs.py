"""The tariff registry (daemon/tariffs.py) and its importer (daemon/tariff_import.py)."""

from __future__ import annotations

import csv
import re
from datetime import date
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

import pytest

from daemon import cli
from daemon.registers import tariffs
from daemon.registers.tariff_import import import_nlk
from daemon.registers.tariffs import SHIPPED_DIR, NlkCode, Rate, TariffError, Tariffs
from tests.conftest import shared_or_skip

D = Decimal

# --------------------------------------------------------------------------- fixtures

HELFO_HEADER = (
    "KODE;TILDATO;FRADATO;ERSTATTES_AV;SIST_ENDRET;HVA_ENDRET;NORSK_BRUKSNAVN;KOMPONENT;SYSTEM;"
    "ENHET;EGENSKAPSART;SPESIFISERT_KOMPONENT;NPU_DEFINISJON;SPESIALITET_NPU;"
    "SEKUNDAERT_FAGOMRAADE;FAGOMRAADE_NLK;REFUSJONSKATEGORI;REFUSJON_stat;REFUSJON_privat;"
    "UGYLDIG_KOMB;STJERNEKODE;REFUSJONSKATEGORI_ENDRET"
)


def helfo_row(
    code: str,
    name: str,
    field: str,
    category: str = "",
    stat: str = "",
    privat: str = "",
    *,
    fra: str = "25.01.2013",
    til: str = "",
    replaced_by: str = "",
    system: str = "Plasma",
    star: str = "0",
) -> str:
    """A row in Helfo's layout; the definition is quoted and holds a ';', as in the list."""
    return ";".join(
        (
            code, til, fra, replaced_by, "23.01.2020", "Komponent", name, "Komponent",
            system, "U/L", "katalytisk konsentrasjon", "", '"Syst(spec.)—X; cat.c. = ? U/L"',
            "", "", field, category, stat, privat, "", star, "",
        )
    )  # fmt: skip


MB = "Medisinsk biokjemi"
BASE_ROWS = [
    helfo_row("NOR05007", "Us-ALAT", MB, "MB4", "12,61", "11,69", star="1"),
    helfo_row(
        "NOR05043",
        "Us-Amylase, total",
        MB,
        "MB4",
        "12,61",
        "11,69",
        til="30.06.2023",
        replaced_by="NPU19964",
        star="1",
    ),
    # LAB-11, replacement: no category in the list, replaces NOR05043 (MB4)
    helfo_row("NPU19964", "Us-Amylase", MB, fra="23.05.2023"),
    # LAB-11, new code: category 2 of its field from its FRADATO
    helfo_row("NPU99001", "Us-Ny mikrobe", "Medisinsk mikrobiologi", fra="01.03.2023"),
    helfo_row(
        "NPU99002",
        "DNA-NYTT-gen",
        "Klinisk farmakologi",
        fra="01.04.2023",
        system="DNA (spesifikasjon)",
    ),
    helfo_row(
        "NPU19308",
        "DNA-CYP2D6-gen",
        "Klinisk farmakologi",
        "KF5",
        "155,17",
        "153,54",
        system="DNA (spesifikasjon)",
    ),
    helfo_row("NPU19736", "P-Kolistin", "Klinisk farmakologi", "MM0", "0,88", "0,84"),
    # a chain: NPU99003 is new (MG2); NPU99004 replaces it and takes MG2 from it
    helfo_row(
        "NPU99003",
        "DNA-Gammel",
        "Medisinsk genetikk",
        fra="01.01.2022",
        til="31.05.2023",
        replaced_by="NPU99004",
        system="DNA",
    ),
    helfo_row("NPU99004", "DNA-Ny", "Medisinsk genetikk", fra="01.06.2023", system="DNA"),
    helfo_row("NOR25034", "Pt-Elektronmikroskopisk undersøkelse", "Patologi", "", "0", "0"),
]

DIGEST_RATES_HEADER = "category,field,year,sector,kroner,valid_from,valid_to,source_id,status,note"
BASE_RATES = [
    "MB4,Medisinsk biokjemi,2022,statlig,12.35,2022-01-01,,S2,read,",
    "MB4,Medisinsk biokjemi,2023,statlig,12.61,2023-01-01,,S1,read,",
    "MB4,Medisinsk biokjemi,2023,privat,11.69,2023-01-01,,S1,read,",
    "MM0,Medisinsk mikrobiologi,2023,statlig,0.88,2023-01-01,,S1,read,",
    "MM0,Medisinsk mikrobiologi,2023,privat,0.84,2023-01-01,,S1,read,",
    "MM2,Medisinsk mikrobiologi,2023,statlig,38.92,2023-01-01,,S1,read,",
    "KF2,Klinisk farmakologi,2023,statlig,22.68,2023-01-01,,S1,read,",
    "KF5,Klinisk farmakologi,2023,statlig,155.17,2023-01-01,,S1,read,",
    "KF5,Klinisk farmakologi,2023,privat,153.54,2023-01-01,,S1,read,",
    "MG2,Medisinsk genetikk,2023,statlig,311.18,2023-01-01,,S1,read,",
    "MM2,Medisinsk mikrobiologi,2023,privat,37.24,2023-01-01,,S1,read,",
    "KF2,Klinisk farmakologi,2023,privat,22.44,2023-01-01,,S1,read,",
    "MG2,Medisinsk genetikk,2023,privat,0,2023-01-01,,S1,read,",
    "ZTX0AD (ambulant tillegg),Radiologi,2017,statlig,100,2017-01-01,,S5,read,",
]


def write_helfo(path: Path, rows: list[str], *, bom: bool = True) -> Path:
    text = "\r\n".join([HELFO_HEADER, *rows]) + "\r\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def write_rates(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join([DIGEST_RATES_HEADER, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def sources(tmp_path: Path) -> tuple[Path, Path]:
    return (
        write_helfo(tmp_path / "Alle_nlk.csv", BASE_ROWS),
        write_rates(tmp_path / "satser.csv", BASE_RATES),
    )


@pytest.fixture(scope="module")
def shipped() -> Tariffs:
    return tariffs.load(SHIPPED_DIR)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --------------------------------------------------------------------------- the shipped files


def test_shipped_codes_are_the_2023_list(shipped):
    """9 187 rows = 9 186 codes; NPU61124 is listed twice (IT2, then IT6 from 1 June)."""
    assert sum(len(shipped.versions(c)) for c in shipped.codes) == 9187
    assert len(shipped.codes) == 9186
    assert [(v.category, v.valid_from, v.valid_to) for v in shipped.versions("NPU61124")] == [
        ("IT2", date(2023, 3, 23), date(2023, 5, 31)),
        ("IT6", date(2023, 6, 1), None),
    ]
    assert isinstance(shipped.codes, MappingProxyType)
    assert sum(c.starred for c in shipped.codes.values()) == 113
    assert all(c.field_prefix == "MB" for c in shipped.codes.values() if c.starred)


def test_shipped_codes_spot_checks(shipped):
    """Categories, flags and replacements as the source list gives them."""
    alat = shipped.code("NOR05007")
    assert (alat.name, alat.field, alat.field_prefix) == ("Us-ALAT", MB, "MB")
    assert (alat.category, alat.category_from, alat.starred) == ("MB4", "list", True)
    assert not alat.pharmacogenetic and alat.valid_from == date(2013, 1, 25)
    amylase = shipped.code("NOR05043")
    assert amylase.replaced_by == "NPU19964" and amylase.valid_to == date(2023, 6, 30)
    assert amylase.valid_on(date(2023, 6, 30)) and not amylase.valid_on(date(2023, 7, 1))
    assert shipped.code("NPU19964").category == "MB4"
    assert shipped.code("NPU21747").category == "IT8"  # named in LAB-03
    assert shipped.code("NPU26765").category == "IT7"
    assert shipped.code("NPU20200").category == "IT1"
    assert shipped.code("NPU19736").category == "MM0"  # a KF code in an MM category
    assert shipped.code("NPU19736").field_prefix == "KF"
    pathology = [c for c in shipped.codes.values() if c.field == "Patologi"]
    assert len(pathology) == 8 and {c.category for c in pathology} == {None}
    assert {c.category_from for c in pathology} == {""}
    assert shipped.code("NOPE0000") is None


def test_shipped_pharmacogenetic_codes(shipped):
    """LAB-05's flag: the 75 KF codes of system DNA/RNA, e.g. NPU19308 DNA-CYP2D6-gen."""
    flagged = [c for c in shipped.codes.values() if c.pharmacogenetic]
    assert len(flagged) == 75
    assert {c.field_prefix for c in flagged} == {"KF"}
    assert all(c.name.startswith(("DNA", "RNA")) for c in flagged)
    assert shipped.code("NPU19308").pharmacogenetic
    assert shipped.code("NPU19308").category == "KF5"
    assert not any(c.pharmacogenetic for c in shipped.codes.values() if c.field_prefix == "MG")


def test_shipped_code_versions_by_date(shipped):
    """code(c, day) gives the version valid on that day; without a day, the newest."""
    assert shipped.code("NPU61124", date(2023, 4, 1)).category == "IT2"
    assert shipped.code("NPU61124", date(2023, 6, 1)).category == "IT6"
    assert shipped.code("NPU61124").category == "IT6"
    before = shipped.code("NPU61124", date(2022, 1, 1))
    assert before.category == "IT6" and not before.valid_on(date(2022, 1, 1))


@pytest.mark.parametrize(
    ("category", "sector", "day", "kroner"),
    [
        ("MB2", "stat", date(2023, 5, 1), "6.96"),
        ("MB2", "privat", date(2023, 5, 1), "6.45"),
        ("MB4", "stat", date(2023, 1, 1), "12.61"),
        ("MB4", "privat", date(2023, 12, 31), "11.69"),
        ("IT8", "stat", date(2023, 3, 1), "463.39"),
        ("IT8", "privat", date(2023, 3, 1), "460.66"),
        ("MG5", "stat", date(2023, 3, 1), "2724.87"),
        ("MG5", "privat", date(2023, 3, 1), "0.00"),  # MG pays 0 to private labs
        ("MM5", "stat", date(2023, 3, 1), "125.77"),
        ("MB2", "stat", date(2022, 6, 1), "6.82"),
        ("MM4", "stat", date(2022, 12, 31), "76.83"),
        ("KF9", "stat", date(2022, 1, 1), "792.53"),
        ("MB2", "stat", date(2021, 6, 1), "6.74"),
        ("MB2", "stat", date(2024, 6, 1), "6.96"),  # stays in force until a newer one
        ("MB2", "privat", date(2026, 1, 1), "6.45"),
    ],
)
def test_shipped_rates(shipped, category, sector, day, kroner):
    assert shipped.rate(category, sector, day) == D(kroner)


def test_shipped_rates_gaps(shipped):
    """No private rates before 2023, nothing before 2021, unknown categories have none."""
    assert shipped.rate("MB2", "privat", date(2022, 6, 1)) is None
    assert shipped.rate("MB2", "stat", date(2020, 12, 31)) is None
    assert shipped.rate("MB99", "stat", date(2023, 1, 1)) is None
    assert shipped.rate("IT8", "stat", date(2022, 6, 1)) is None  # 2022 table is partial
    assert shipped.rate_entry("MB2", "stat", date(2023, 2, 1)).source == "S1"
    assert shipped.rate_entry("MB2", "stat", date(2022, 2, 1)).source == "S2"


def test_every_category_in_use_has_a_2023_rate(shipped):
    day = date(2023, 6, 1)
    for code in shipped.codes.values():
        if code.category:
            for sector in tariffs.SECTORS:
                assert shipped.rate(code.category, sector, day) is not None, code


def test_import_from_shared_reproduces_the_shipped_files(tmp_path):
    """The shipped files are exactly what the importer makes of ../shared's digest."""
    rates = shared_or_skip("rates")
    report = import_nlk(rates / "nlk_codes.csv", rates / "refusjonssatser.csv", tmp_path)
    for name in (tariffs.CODES_FILE, tariffs.RATES_FILE):
        assert (tmp_path / name).read_bytes() == (SHIPPED_DIR / name).read_bytes(), name
    assert (report.rows, report.codes, report.rates) == (9187, 9186, 176)
    assert report.lab11 == () and len(report.uncategorised) == 8
    assert report.ignored_rates == (
        "row 178: 'ZTX0AD (ambulant tillegg)' (Radiologi) is not a lab refusjonskategori",
    )
    assert report.warnings == ()  # every per-code amount equals its category's rate
    again = import_nlk(rates / "nlk_codes.csv", rates / "refusjonssatser.csv", tmp_path)
    assert again.written == () and again.previous and again.previous_rates
    assert not (again.added or again.removed or again.recategorised or again.changed)
    assert not (again.rates_added or again.rates_removed or again.rates_changed)


# --------------------------------------------------------------------------- the registry


def code(c: str, category: str | None = "MB2", **kw) -> NlkCode:
    kw = {"valid_from": None, "valid_to": None, "replaced_by": None, **kw}
    return NlkCode(c, "navn", MB, "MB", category, False, False, **kw)


def test_a_rate_stays_in_force_until_a_newer_one_or_its_end():
    rates = (
        Rate("MB2", "stat", D("1.00"), date(2021, 1, 1), None),
        Rate("MB2", "stat", D("2.00"), date(2022, 1, 1), date(2022, 6, 30)),
        Rate("MB2", "stat", D("3.00"), date(2023, 1, 1), None),
    )
    t = Tariffs(MappingProxyType({}), rates, "test")
    assert t.rate("MB2", "stat", date(2020, 12, 31)) is None
    assert t.rate("MB2", "stat", date(2021, 12, 31)) == D("1.00")
    assert t.rate("MB2", "stat", date(2022, 6, 30)) == D("2.00")
    assert t.rate("MB2", "stat", date(2022, 7, 1)) is None  # ended; no fallback to 2021
    assert t.rate("MB2", "stat", date(2030, 1, 1)) == D("3.00")
    assert t.rate("MB2", "privat", date(2023, 1, 1)) is None


def test_empty_tariffs_know_nothing():
    t = Tariffs.empty()
    assert t.code("NOR05007") is None and t.rate("MB2", "stat", date(2023, 1, 1)) is None
    assert t.versions("NOR05007") == ()


def test_render_and_parse_round_trip():
    codes = [code("NPU00002"), code("NPU00001", None, valid_from=date(2023, 1, 1))]
    codes[0] = NlkCode(
        "NPU00002", "DNA-X, 'y'", "Klinisk farmakologi", "KF", "KF2", False, True,
        date(2023, 1, 1), date(2023, 5, 31), "NPU00001", "LAB-11 new code",
    )  # fmt: skip
    rates = [Rate("MB10", "stat", D("1.5"), date(2023, 1, 1), None, "S1")]
    t = tariffs.parse(tariffs.render_codes(codes), tariffs.render_rates(rates), "mem")
    assert t.code("NPU00002") == codes[0]
    assert t.code("NPU00001").category is None and t.code("NPU00001").category_from == ""
    assert t.rates == (Rate("MB10", "stat", D("1.50"), date(2023, 1, 1), None, "S1"),)


CODES_OK = "NOR05007,Us-ALAT,Medisinsk biokjemi,MB,MB4,list,1,0,2013-01-25,,"
RATES_OK = "MB4,stat,12.61,2023-01-01,,S1"


@pytest.mark.parametrize(
    ("file", "lines", "row", "column", "words"),
    [
        ("lab-rates.csv", [RATES_OK, "MB4,kommunal,1.00,2023-01-01,,"], 3, "sector", "kommunal"),
        ("lab-rates.csv", [RATES_OK, "MB5,stat,1.00,2023-13-01,,"], 3, "valid_from", "date"),
        ("lab-rates.csv", [RATES_OK, "MB5,stat,1;00,2023-01-01,,"], 3, "kroner", "1;00"),
        ("lab-rates.csv", [RATES_OK, "MB5,stat,1.005,2023-01-01,,"], 3, "kroner", "1.005"),
        ("lab-rates.csv", [RATES_OK, "MB5,stat,-1,2023-01-01,,"], 3, "kroner", "-1"),
        ("lab-rates.csv", [RATES_OK, "MB4,stat,12.70,2023-01-01,,"], 3, "valid_from", "overlap"),
        (
            "lab-rates.csv",
            ["MB4,stat,12.35,2022-01-01,2023-01-31,S2", RATES_OK],
            3,
            "valid_from",
            "overlap",
        ),
        ("lab-rates.csv", [RATES_OK, "MB4,stat,1.00"], 3, None, "fields"),
        ("nlk-codes.csv", [CODES_OK, CODES_OK], 3, "valid_from", "duplicate code NOR05007"),
        ("nlk-codes.csv", [CODES_OK.replace(",1,0,", ",ja,0,")], 2, "starred", "0 or 1"),
        ("nlk-codes.csv", [CODES_OK.replace("MB4", "mb 4")], 2, "category", "mb 4"),
        (
            "nlk-codes.csv",
            [CODES_OK.replace("2013-01-25,", "2013-01-25,2012-01-01")],
            2,
            "valid_to",
            "before",
        ),
        ("nlk-codes.csv", [CODES_OK.replace(",list,", ",,")], 2, "category_from", "exactly"),
    ],
)
def test_load_refuses_a_bad_file_naming_row_and_column(tmp_path, file, lines, row, column, words):
    good = {
        "nlk-codes.csv": [",".join(tariffs.CODE_COLUMNS), CODES_OK],
        "lab-rates.csv": [",".join(tariffs.RATE_COLUMNS), RATES_OK],
    }
    good[file] = [good[file][0], *lines]
    for name, content in good.items():
        (tmp_path / name).write_text("\n".join(content) + "\n", encoding="utf-8")
    with pytest.raises(TariffError) as err:
        tariffs.load(tmp_path)
    e = err.value
    assert (e.file, e.row, e.column) == (file, row, column)
    assert f"{file}, row {row}" in str(e) and words in str(e)


def test_load_refuses_a_missing_file_or_wrong_header(tmp_path):
    with pytest.raises(TariffError, match=r"nlk-codes\.csv.*cannot read"):
        tariffs.load(tmp_path, shipped=None)
    (tmp_path / "nlk-codes.csv").write_text("code,name\n", encoding="utf-8")
    with pytest.raises(TariffError, match=r"lab-rates\.csv.*cannot read"):
        tariffs.load(tmp_path)  # half an import is not topped up from the shipped copy
    (tmp_path / "lab-rates.csv").write_text(",".join(tariffs.RATE_COLUMNS) + "\n")
    with pytest.raises(TariffError, match="row 1, column field: header must be"):
        tariffs.load(tmp_path)


def test_an_empty_state_folder_reads_the_shipped_registers_until_an_import(tmp_path):
    shipped = tariffs.load(SHIPPED_DIR)
    fallback = tariffs.load(tmp_path)
    assert fallback.source == shipped.source == str(SHIPPED_DIR)
    assert fallback.codes == shipped.codes and len(fallback.radiology.codes) > 0
    (tmp_path / "nlk-codes.csv").write_text(
        (SHIPPED_DIR / "nlk-codes.csv").read_text(encoding="utf-8"), encoding="utf-8"
    )
    (tmp_path / "lab-rates.csv").write_text(",".join(tariffs.RATE_COLUMNS) + "\n")
    imported = tariffs.load(tmp_path)
    assert imported.source == str(tmp_path) and imported.rates == ()
    assert imported.radiology.codes == shipped.radiology.codes  # still the shipped one


# --------------------------------------------------------------------------- the importer


def test_import_helfo_layout_applies_lab11(sources, tmp_path):
    """LAB-11: a new code gets category 2 of its field; a replacement takes the replaced
    code's category; the report names each one; Patologi keeps none."""
    src, rates = sources
    target = tmp_path / "tariffs"
    report = import_nlk(src, rates, target)
    t = tariffs.load(target)
    assert report.layout == "Helfo NLK list" and "BOM" in report.encoding
    assert "';'" in report.encoding
    assert [(a.code, a.category, a.basis) for a in report.lab11] == [
        ("NPU19964", "MB4", "LAB-11 replaces NOR05043"),
        ("NPU99001", "MM2", "LAB-11 new code"),
        ("NPU99002", "KF2", "LAB-11 new code"),
        ("NPU99003", "MG2", "LAB-11 new code"),
        ("NPU99004", "MG2", "LAB-11 replaces NPU99003"),
    ]
    assert report.lab11[1].valid_from == date(2023, 3, 1)
    new = t.code("NPU99001")
    assert (new.category, new.category_from, new.valid_from) == (
        "MM2",
        "LAB-11 new code",
        date(2023, 3, 1),
    )
    assert t.code("NPU19964").category_from == "LAB-11 replaces NOR05043"
    assert t.code("NOR05043").replaced_by == "NPU19964"
    assert t.code("NOR05043").valid_to == date(2023, 6, 30)
    assert t.code("NOR05007").starred and t.code("NOR05007").category_from == "list"
    assert t.code("NPU19308").pharmacogenetic and t.code("NPU99002").pharmacogenetic
    assert not t.code("NPU19736").pharmacogenetic and not t.code("NPU99003").pharmacogenetic
    assert t.code("NOR25034").category is None and report.uncategorised == (
        ("NOR25034", "Patologi"),
    )
    assert t.rate("MB4", "privat", date(2023, 6, 1)) == D("11.69")
    assert t.rate("MB4", "stat", date(2022, 6, 1)) == D("12.35")
    assert t.rate("MM2", "stat", date(2023, 6, 1)) == D("38.92")
    assert {r.category for r in t.rates} == {"MB4", "MM0", "MM2", "KF2", "KF5", "MG2"}
    assert report.ignored_rates == (
        "row 15: 'ZTX0AD (ambulant tillegg)' (Radiologi) is not a lab refusjonskategori",
    )
    assert report.warnings == ()
    text = report.summary()
    assert "LAB-11: 5 code(s) got a category" in text
    assert "NPU19964 MB4 (replaces NOR05043)" in text and "NPU99001 MM2 (new code)" in text
    assert "ignored: row 15" in text


def test_import_reads_comma_separated_windows_1252(tmp_path):
    """Helfo's layout as an Excel export: ',' separated, Windows-1252, decimal commas."""
    src = tmp_path / "nlk.csv"
    with src.open("w", encoding="cp1252", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HELFO_HEADER.split(";"))
        row = dict.fromkeys(HELFO_HEADER.split(";"), "")
        row |= {"KODE": "NOR05007", "FRADATO": "25.01.2013", "NORSK_BRUKSNAVN": "Us-ALAT ø"}
        row |= {"FAGOMRAADE_NLK": MB, "REFUSJONSKATEGORI": "MB4", "STJERNEKODE": "1"}
        row |= {"REFUSJON_stat": "12,61", "REFUSJON_privat": "11,69"}
        writer.writerow(row.values())
    report = import_nlk(src, None, tmp_path / "out")
    t = tariffs.load(tmp_path / "out")
    assert t.code("NOR05007").name == "Us-ALAT ø" and t.code("NOR05007").category == "MB4"
    assert report.encoding.startswith("Windows-1252, ','")
    assert any("no rate table given" in w for w in report.warnings)
    assert any("without any rate: MB4 privat, MB4 stat" in w for w in report.warnings)
    assert t.rates == ()


def bad_rows(row_index: int, old: str, new: str) -> list[str]:
    rows = list(BASE_ROWS)
    assert old in rows[row_index]
    rows[row_index] = rows[row_index].replace(old, new, 1)
    return rows


@pytest.mark.parametrize(
    ("rows", "rates", "file", "row", "column", "words"),
    [
        (bad_rows(2, "23.05.2023", "31.02.2023"), BASE_RATES, "nlk.csv", 4, "FRADATO", "date"),
        (bad_rows(0, "12,61", "12,6x"), BASE_RATES, "nlk.csv", 2, "REFUSJON_stat", "12,6x"),
        (bad_rows(0, ";1;", ";ja kanskje;"), BASE_RATES, "nlk.csv", 2, "STJERNEKODE", "flag"),
        (
            bad_rows(3, "Medisinsk mikrobiologi", "Radiologi"),
            BASE_RATES,
            "nlk.csv",
            5,
            "FAGOMRAADE_NLK",
            "unknown fagområde",
        ),
        (bad_rows(1, "30.06.2023", "30.06.2012"), BASE_RATES, "nlk.csv", 3, "TILDATO", "before"),
        ([*BASE_ROWS, BASE_ROWS[0]], BASE_RATES, "nlk.csv", 12, "FRADATO", "duplicate code"),
        (
            BASE_ROWS,
            [*BASE_RATES, "MB4,x,2023,kommunal,1,2023-01-01,,S1,,"],
            "satser.csv",
            16,
            "sector",
            "kommunal",
        ),
        (
            BASE_ROWS,
            [*BASE_RATES, "MB4,x,2023,statlig,1,2023-01-01,,S1,,"],
            "satser.csv",
            16,
            "valid_from",
            "overlaps",
        ),
        (
            BASE_ROWS,
            [*BASE_RATES, "MB5,x,2023,statlig,1.2.3,2023-06-01,,S1,,"],
            "satser.csv",
            16,
            "kroner",
            "1.2.3",
        ),
    ],
)
def test_import_refuses_a_bad_file_and_leaves_the_tables(
    tmp_path, sources, rows, rates, file, row, column, words
):
    """Row and column are named; the files already there stay byte for byte; no temp file."""
    target = tmp_path / "tariffs"
    import_nlk(*sources, target)
    before = snapshot(target)
    src = write_helfo(tmp_path / "nlk.csv", rows)
    rates_path = write_rates(tmp_path / "satser.csv", rates)
    with pytest.raises(TariffError) as err:
        import_nlk(src, rates_path, target)
    e = err.value
    assert (e.file, e.row, e.column) == (file, row, column), str(e)
    assert words in str(e)
    assert snapshot(target) == before


def test_import_lists_every_problem_at_once(tmp_path):
    rows = bad_rows(2, "23.05.2023", "2023/05/23")
    rows[3] = rows[3].replace("01.03.2023", "99.99.2023")
    with pytest.raises(TariffError) as err:
        import_nlk(write_helfo(tmp_path / "nlk.csv", rows), None, tmp_path / "t")
    assert err.value.row == 4
    assert "and 1 more problem(s):\n  row 5, column FRADATO:" in str(err.value)
    assert not (tmp_path / "t").exists()


def test_import_refuses_an_unknown_layout(tmp_path):
    src = tmp_path / "x.csv"
    src.write_text("a;b;c\n1;2;3\n", encoding="utf-8")
    with pytest.raises(TariffError, match=r"x.csv, row 1: unknown layout.*KODE"):
        import_nlk(src, None, tmp_path / "t")


def test_second_import_reports_what_changed(tmp_path, sources):
    """Added, removed and re-categorised codes; rates added, removed and changed."""
    target = tmp_path / "tariffs"
    first = import_nlk(*sources, target)
    assert not first.previous and len(first.added) == len(BASE_ROWS) and first.written
    rows = [r for r in BASE_ROWS if not r.startswith("NPU99001;")]
    rows[0] = rows[0].replace("MB4;12,61;11,69", "MB5;17,01;15,75")
    rows[1] = rows[1].replace("Us-Amylase, total", "Us-Amylase, totalt")
    rows.append(helfo_row("NPU99005", "P-Nytt", MB, fra="01.09.2023"))
    rates = [r.replace("12.61", "12.70") for r in BASE_RATES if not r.startswith("MG2")]
    rates.append("MB5,Medisinsk biokjemi,2023,statlig,17.01,2023-01-01,,S1,read,")
    report = import_nlk(
        write_helfo(tmp_path / "v2.csv", rows), write_rates(tmp_path / "r2.csv", rates), target
    )
    assert report.previous and report.added == ("NPU99005",)
    assert report.removed == ("NPU99001",)
    assert report.recategorised == (("NOR05007", "MB4", "MB5"),)
    assert report.changed == ("NOR05043",)
    assert [(r.category, r.kroner) for r in report.rates_added] == [("MB5", D("17.01"))]
    assert [(r.category, r.sector) for r in report.rates_removed] == [
        ("MG2", "privat"),
        ("MG2", "stat"),
    ]
    assert [(a.kroner, b.kroner) for a, b in report.rates_changed] == [(D("12.61"), D("12.70"))]
    text = report.summary()
    for expected in (
        "1 added, 1 removed, 1 re-categorised, 1 otherwise changed",
        "added: NPU99005",
        "removed: NPU99001",
        "re-categorised: NOR05007 MB4→MB5",
        "changed: MB4 stat 2023-01-01 12.61 → 12.70",
        "MG2 stat 2023-01-01 311.18",
    ):
        assert expected in text, text
    assert tariffs.load(target).code("NOR05007").category == "MB5"
    # the per-code amounts in the list are checked against the new rates
    assert any("differ from the newest rate" in w and "NPU19964" not in w for w in report.warnings)


def test_import_without_rates_keeps_the_rates_there_are(tmp_path, sources):
    target = tmp_path / "tariffs"
    import_nlk(*sources, target)
    rates_before = (target / "lab-rates.csv").read_bytes()
    report = import_nlk(sources[0], None, target)
    assert (target / "lab-rates.csv").read_bytes() == rates_before
    assert report.written == () and "no rate table given" in report.summary()


# --------------------------------------------------------------------------- the command line


def test_cli_tariff_import_and_show(tmp_path, sources, capsys):
    target = tmp_path / "tariffs"
    src, rates = sources
    argv = ["tariff", "import", "--kind", "nlk", str(src), "--rates", str(rates)]
    # the small test list would replace the shipped register in force: refused unforced
    assert cli.main([*argv, "--target", str(target)]) == 1
    assert "UNSAFE: it removes" in capsys.readouterr().out and not target.exists()
    assert cli.main([*argv, "--target", str(target), "--force"]) == 0
    out = capsys.readouterr().out
    assert "LAB-11: 5 code(s) got a category" in out and f"Written to {target}" in out
    show = ["tariff", "show", "NPU19964", "--dir", str(target), "--date", "2023-06-01"]
    assert cli.main([*show, "--sector", "stat"]) == 0
    out = capsys.readouterr().out
    assert "MB4 (LAB-11 replaces NOR05043)" in out and "12.61 kr" in out
    assert "rate privat" not in out
    assert cli.main(["tariff", "show", "NOR05007", "--date", "2023-06-01"]) == 0  # shipped
    out = capsys.readouterr().out
    assert "MB4 (list)" in out and re.search(r"starred +yes", out)
    assert re.search(r"rate stat +12.61 kr", out) and re.search(r"rate privat +11.69 kr", out)
    assert cli.main(["tariff", "show", "NPU19308", "--date", "2023-06-01"]) == 0
    assert re.search(r"pharmacogenetic +yes", capsys.readouterr().out)


def test_cli_tariff_errors(tmp_path, sources, capsys):
    target = tmp_path / "tariffs"
    bad = write_helfo(tmp_path / "bad.csv", bad_rows(2, "23.05.2023", "31.02.2023"))
    assert cli.main(["tariff", "import", "--kind", "nlk", str(bad), "--target", str(target)]) == 1
    err = capsys.readouterr().err
    assert "refused, nothing written" in err and "bad.csv, row 4, column FRADATO" in err
    assert not target.exists()
    assert cli.main(["tariff", "show", "NOPE0000"]) == 1
    assert "not in the NLK register" in capsys.readouterr().err
    assert cli.main(["tariff", "show", "NOR05007", "--date", "1.1.2023"]) == 2  # usage
    with pytest.raises(SystemExit):
        cli.main(["tariff", "import", "--kind", "ncrp", str(bad)])


def test_lab11_replacement_takes_the_replaced_codes_current_category():
    """§7.1: a replacement takes the category the replaced code has when the new code
    starts (NPU61124 was IT2, then IT6 from 2023-06-01), not its first one."""
    from daemon.registers.tariff_import import assign_categories
    from daemon.registers.tariffs import NlkCode

    def code(c, cat, start, end=None, by=None):
        return NlkCode(c, c, "Immunologi", "IT", cat, False, False, start, end, by)

    old_v1 = code("OLD1", "IT2", date(2023, 3, 23), date(2023, 5, 31), "NEW1")
    old_v2 = code("OLD1", "IT6", date(2023, 6, 1), None, "NEW1")
    new = code("NEW1", None, date(2023, 9, 1))
    out, assigned, conflicts = assign_categories([old_v1, old_v2, new])
    assert [c.category for c in out if c.code == "NEW1"] == ["IT6"]
    assert assigned[0].category == "IT6" and conflicts == []
