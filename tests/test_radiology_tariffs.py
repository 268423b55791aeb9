"""The radiology register (daemon/radiology_tariffs.py) and its importer
(daemon/radiology_import.py): real files, written and read back, no mocks."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest

from daemon import cli
from daemon.registers import radiology_tariffs, tariffs
from daemon.registers.radiology_import import import_radiology
from daemon.registers.radiology_tariffs import (
    ADDON_COLUMNS,
    CODE_COLUMNS,
    EXAMPLE,
    FILES,
    RATES_FILE,
    RadiologyRegister,
)
from daemon.registers.tariff_table import RATE_COLUMNS, TariffError
from daemon.registers.tariffs import SHIPPED_DIR
from tests.conftest import DATA, shared_or_skip

D = Decimal
DAY = date(2026, 11, 23)
FIXED_RATES = DATA / "radiology-fixed-rates.csv"

# A few rows in the reference digest's layout (our own test rows, not the digest).
DIGEST_HEADER = (
    "code,name_no,kind,modality,modality_source,region_skde_grouping,region_source,"
    "refusjonskategori,name_source,note"
)
DIAG, NUCL, INTV = (
    "diagnostisk (NCRP S-kode)",
    "nukleærmedisin (NCRP T-kode)",
    "bildeveiledet intervensjon (NCRP)",
)
NCSP = "NCSP-kode (named exception in project rules)"
DIGEST_ROWS = [
    f"SNG0AA,RG Kne,{DIAG},RG,S3b,Underekstremitet,S3b,,S3a,",
    f"SAA0AG,MR Caput,{DIAG},MR,S3b,Hode,S3b,,S3a,",
    f"SSH0AD,CT Hode og hals,{DIAG},CT,S3b,Flere regioner,S3b,,S3a,",
    f"SSH0AK,,{DIAG},UL,S3b,Flere regioner,S3b,,S3b,",  # no name: its body part's regions
    f"SAA0DP,CT caput og CTANG angiografi av caput,{DIAG},CT,S3b,Hode,S3b,,S3a,",
    f"SPX0DP,CTANG angiografi av abdominalaorta,{DIAG},CTA,S3b,Abdomen,S3b,,S3a,",
    f'SPJ0BK,"UL Lymfeknute, INA",{DIAG},UL,S3b,Lymfe,S3b,,S3a,',
    f'TFY0AN,"NM Myokardscintigrafi, hvile",{NUCL},NM,S3b,Toraks,S3b,,S3a,',
    f"TSY0AL,PET/CT-18F FDG Helkropp,{NUCL},PET_CT,S3b,Flere regioner,S3b,,S3a,",
    f'AAB06K,"Perkutan biopsi av calvariet, ultralydveiledet",{INTV},'
    "intervensjon UL-veiledet,INFERRED from name,,,,S3a,",
    f"JUK02,ERCP,{NCSP},,,,,,S3c,",
    f"PHX35,Fjerning av vaskulær injeksjonsport,{NCSP},,,,,,S3c,",
]
ADDONS_HEADER = "code,name_no,code_system,type,source_id,note"
ADDON_ROWS = [
    "ZTX0XC,Bilateral bildediagnostisk undersøkelse,NCRP,side (lateralitet) NCRP,S3a,",
    "ZXA00,Høyre side,NCSP/NCMP felles tilleggskode,side (lateralitet) NCSP,S3c,",
    "ZTX0BC,Kun sekundærgransking,NCRP,teleradiologi / delt undersøkelse,S3a,",
    "ZTX0AD,Radiologisk prosedyre utført ambulant,NCRP,sted/ambulant,S3a,",
    "ZTX0EA,Intravenøs kontrast,NCRP,kontrast,S3a,",
    "ZXM00,Bildeveiledet teknikk med bruk av ultralyd,NCSP/NCMP,bildeveiledning,S3c,",
    "V09GA02,Technetium (99mTc) tetrafosmin,ATC,radiofarmaka ATC (V09/V10),S3d,",
    "R,NCRP,BKM prosedyrekode.kodeverk (kodeverk 8410),kodeverk-indikator i refusjonskrav,S6,",
]


def write(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def digest(tmp_path: Path) -> tuple[Path, Path]:
    return (
        write(tmp_path / "ncrp_mini.csv", DIGEST_HEADER, DIGEST_ROWS),
        write(tmp_path / "tillegg_mini.csv", ADDONS_HEADER, ADDON_ROWS),
    )


@pytest.fixture
def example(tmp_path: Path, digest) -> Path:
    """A register made from the mini digest with example categories and the fixed rates."""
    target = tmp_path / "tariffs"
    import_radiology(digest[0], target, addons=digest[1], rates=FIXED_RATES, example=True)
    return target


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def helfo_xlsx(path: Path, rows: list[tuple], *, title_rows: int = 3) -> Path:
    """Helfo's sheet: title lines above the header, a header in Norwegian."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Statlige"
    sheet.append(["Radiologiske prosedyrer som gir rett til refusjon – statlige"])
    for _ in range(title_rows - 1):
        sheet.append([])
    sheet.append(["Kode", "Kodetekst", "Refusjonskategori", "Beløp"])
    for row in rows:
        sheet.append(list(row))
    book.save(path)
    return path


# --------------------------------------------------------------------------- the shipped files


@pytest.fixture(scope="module")
def shipped() -> RadiologyRegister:
    return tariffs.load(SHIPPED_DIR).radiology


def test_shipped_register_loads_with_more_than_1300_codes(shipped):
    assert len(shipped.codes) > 1300
    assert shipped.example  # the categories and kroner are the EXAMPLE
    assert {c.kind for c in shipped.codes.values()} == set(radiology_tariffs.KINDS)


def test_shipped_files_say_they_are_an_example():
    for name in ("ncrp-codes.csv", RATES_FILE):
        head = (SHIPPED_DIR / name).read_text(encoding="utf-8").splitlines()[0]
        assert head.startswith("# EXAMPLE:") and "NOT" in (SHIPPED_DIR / name).read_text()


@pytest.mark.parametrize(
    ("code", "kind", "modality", "regions"),
    [
        ("SNG0AA", "diagnostic", "RG", ("Underekstremitet",)),
        ("SSH0AD", "diagnostic", "CT", ("Hode", "Hals")),
        ("SSQ0AD", "diagnostic", "CT", ("Toraks", "Abdomen", "Bekken")),
        ("SSK0AB", "diagnostic", "RGA", ("Toraks", "Abdomen")),  # "hele aorta": SSK0AD's
        ("SAA0DP", "diagnostic", "CT+CTA", ("Hode",)),
        ("SAA0DE", "diagnostic", "CT+CTA", ("Hode",)),
        ("SSD0BH", "diagnostic", "MR+MRA", ("Abdomen",)),
        ("SPX0DP", "diagnostic", "CTA", ("Abdomen",)),  # its name names the CTA only
        ("SPJ0BK", "diagnostic", "UL", ("Uspesifisert",)),  # the digest's "Lymfe"
        ("TFY0AN", "nuclear", "NM", ("Toraks",)),
        ("TSJ0AL", "nuclear", "PET", ("Hals", "Toraks")),
        ("AAB06K", "intervention", "", ()),
    ],
)
def test_shipped_code_attributes(shipped, code, kind, modality, regions):
    entry = shipped.code(code, DAY)
    assert (entry.kind, entry.modality, entry.regions) == (kind, modality, regions)
    assert entry.valid_on(DAY) and entry.category and entry.source == EXAMPLE


def test_shipped_guidance_flags(shipped):
    """RAD-05: NCSP interventions need a guidance code, except JUK02 and JUK05."""
    assert not shipped.code("JUK02").needs_guidance
    assert not shipped.code("JUK05").needs_guidance
    assert shipped.code("PHX35").needs_guidance and shipped.code("PHX30").needs_guidance
    assert shipped.code("JUK02").code_system == "NCSP"
    assert {c.code for c in shipped.codes.values() if c.needs_guidance} == {"PHX30", "PHX35"}


@pytest.mark.parametrize(
    ("code", "role"),
    [
        ("ZTX0XC", "side-bilateral"),
        ("ZXA10", "side-bilateral"),
        ("ZTX0XA", "side-right"),
        ("ZXA05", "side-left"),
        ("ZTX0BA", "tele-image"),
        ("ZTX0BC", "tele-secondary"),
        ("ZTX0AD", "ambulant"),
        ("ZTX0AC", "other"),
        ("ZTX0EH", "contrast"),
        ("ZXF99", "interrupted"),
        ("ZXM70", "guidance"),
        ("ZTT0AT", "radiopharmaceutical"),
        ("V09GA02", "radiopharmaceutical"),
    ],
)
def test_shipped_addon_roles(shipped, code, role):
    assert shipped.addon(code).role == role


def test_any_atc_v09_v10_code_is_a_radiopharmaceutical_by_pattern(shipped):
    assert RadiologyRegister().addon("V09GA02").role == "radiopharmaceutical"
    assert shipped.addon("V10XX99").role == "radiopharmaceutical"
    assert shipped.addon("V11AA01") is None and shipped.addon("R") is None


def test_shipped_fixed_amounts(shipped):
    """AMBULANT (RAD-11, S5) for both sectors; TELE-NM (RAD-12) for stat only."""
    for sector in ("stat", "privat"):
        assert shipped.rate("AMBULANT", sector, DAY) == D("100.00")
    assert shipped.rate("AMBULANT", "stat", date(2016, 12, 31)) is None
    assert shipped.rate("TELE-NM", "stat", DAY) == D("380.00")
    assert shipped.rate("TELE-NM", "privat", DAY) is None
    assert "2019 §2" in shipped.rate_entry("TELE-NM", "stat", DAY).source


def test_every_shipped_category_has_a_plausible_rate_in_both_sectors(shipped):
    for c in shipped.codes.values():
        for sector in ("stat", "privat"):
            kroner = shipped.rate(c.category, sector, DAY)
            assert kroner is not None and D(200) <= kroner <= D(6000), (c.code, sector)


def test_import_from_shared_reproduces_the_shipped_files(tmp_path):
    """The shipped files are exactly what the importer makes of ../shared's digest, and
    importing again changes nothing (deterministic, byte for byte)."""
    rates = shared_or_skip("rates")
    argv = dict(addons=rates / "tilleggskoder.csv", rates=FIXED_RATES, example=True)
    report = import_radiology(rates / "ncrp_codes.csv", tmp_path / "a", **argv)
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (SHIPPED_DIR / name).read_bytes(), name
    assert report.rows == 1380 and len(report.register.codes) == 1379
    assert report.skipped == ("row 1260: 'TSJWM' is not an NCRP code",)
    import_radiology(rates / "ncrp_codes.csv", tmp_path / "b", **argv)
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")
    again = import_radiology(rates / "ncrp_codes.csv", tmp_path / "a", **argv)
    assert again.written == () and not (again.added or again.removed or again.recategorised)
    assert not (again.rates_added or again.rates_removed or again.rates_changed)


# --------------------------------------------------------------------------- loading


def test_no_radiology_files_is_an_empty_register(tmp_path):
    """Without the shipped fall-back (a lab-only folder read as it is), the NLK files
    alone load, with an empty radiology register."""
    for name in (tariffs.CODES_FILE, tariffs.RATES_FILE):
        (tmp_path / name).write_bytes((SHIPPED_DIR / name).read_bytes())
    loaded = tariffs.load(tmp_path, shipped=None)
    assert loaded.radiology == RadiologyRegister() and not loaded.radiology.codes
    assert loaded.radiology.rate("AMBULANT", "stat", DAY) is None
    assert tariffs.Tariffs.empty().radiology.code("SNG0AA") is None


def test_some_but_not_all_radiology_files_is_refused(example):
    (example / "radiology-addons.csv").unlink()
    with pytest.raises(TariffError, match=r"radiology-addons\.csv: missing"):
        radiology_tariffs.load(example)


CODE_OK = "SNG0AA,RG Kne,NCRP,diagnostic,RG,Underekstremitet,D01,0,,,EXAMPLE"
ADDON_OK = "ZTX0XC,Bilateral,side-bilateral,S3a"
RATE_OK = "D01,stat,250.00,2017-01-01,,EXAMPLE"


@pytest.mark.parametrize(
    ("file", "lines", "row", "column", "words"),
    [
        ("ncrp-codes.csv", [CODE_OK.replace("diagnostic", "diagnose")], 2, "kind", "one of"),
        ("ncrp-codes.csv", [CODE_OK.replace(",RG,", ",XR,")], 2, "modality", "'XR'"),
        ("ncrp-codes.csv", [CODE_OK.replace(",RG,", ",NM,")], 2, "modality", "diagnostic"),
        ("ncrp-codes.csv", [CODE_OK.replace("Underekstremitet", "Kne")], 2, "regions", "'Kne'"),
        (
            "ncrp-codes.csv",
            [CODE_OK.replace("Underekstremitet", "Hode+Hode")],
            2,
            "regions",
            "twice",
        ),
        ("ncrp-codes.csv", [CODE_OK.replace(",NCRP,", ",NCSP,")], 2, "code", "NCSP code"),
        ("ncrp-codes.csv", [CODE_OK.replace("SNG0AA", "TNG0AA")], 2, "kind", "nuclear"),
        ("ncrp-codes.csv", [CODE_OK.replace(",0,,,", ",1,,,")], 2, "needs_guidance", "only"),
        ("ncrp-codes.csv", [CODE_OK.replace(",EXAMPLE", ",")], 2, "source", "category"),
        ("ncrp-codes.csv", [CODE_OK.replace(",,EX", ",2020-13-01,EX")], 2, "valid_to", "date"),
        (
            "ncrp-codes.csv",
            [CODE_OK, CODE_OK.replace(",,,EXAMPLE", ",2020-01-01,,EXAMPLE")],
            3,
            "valid_from",
            "overlaps",
        ),
        ("radiology-addons.csv", [ADDON_OK.replace("side-", "")], 2, "role", "'bilateral'"),
        ("radiology-addons.csv", [ADDON_OK, ADDON_OK], 3, "code", "duplicate"),
        ("radiology-rates.csv", [RATE_OK.replace("stat", "statlig")], 2, "sector", "one of"),
        ("radiology-rates.csv", [RATE_OK.replace("250.00", "250,00")], None, None, "fields"),
        ("radiology-rates.csv", [RATE_OK, RATE_OK], 3, "valid_from", "overlaps"),
    ],
)
def test_load_refuses_a_bad_row_naming_row_and_column(tmp_path, file, lines, row, column, words):
    good = {
        "ncrp-codes.csv": [",".join(CODE_COLUMNS), CODE_OK],
        "radiology-addons.csv": [",".join(ADDON_COLUMNS), ADDON_OK],
        "radiology-rates.csv": [",".join(RATE_COLUMNS), RATE_OK],
    }
    good[file] = [good[file][0], *lines]
    for name, content in good.items():
        (tmp_path / name).write_text("\n".join(content) + "\n", encoding="utf-8")
    with pytest.raises(TariffError) as err:
        radiology_tariffs.load(tmp_path)
    e = err.value
    if row is None:  # a decimal comma splits the row: too many fields
        row = 2
    assert (e.file, e.row) == (file, row) and (column is None or e.column == column)
    assert words in str(e)


def test_code_versions_and_comment_lines(tmp_path):
    """Leading `#` lines are skipped and still counted in row numbers; two versions of
    one code with adjacent periods are the code's history."""
    v1 = CODE_OK.replace(",,,EXAMPLE", ",,2025-12-31,EXAMPLE")
    v2 = CODE_OK.replace("D01", "D02").replace(",,,EXAMPLE", ",2026-01-01,,EXAMPLE")
    text = "# a comment\n# another\n" + ",".join(CODE_COLUMNS) + f"\n{v2}\n{v1}\n"
    parsed = radiology_tariffs.parse_codes(text)
    assert [row for row, _ in parsed] == [4, 5]
    register = radiology_tariffs.parse(
        text, ",".join(ADDON_COLUMNS) + "\n", ",".join(RATE_COLUMNS) + "\n", "test"
    )
    assert register.code("SNG0AA").category == "D02"
    assert register.code("SNG0AA", date(2025, 6, 1)).category == "D01"
    assert [v.category for v in register.versions("SNG0AA")] == ["D01", "D02"]
    with pytest.raises(TariffError, match=r"row 4, column kind"):
        radiology_tariffs.parse_codes(text.replace("diagnostic", "x", 1))


# --------------------------------------------------------------------------- the digest import


def test_digest_import_derives_modality_regions_and_guidance(example):
    r = radiology_tariffs.load(example)
    assert r.code("SSH0AD").regions == ("Hode", "Hals")
    assert r.code("SSH0AK").regions == ("Hode", "Hals")  # no name: SSH0AD's body part
    assert r.code("SAA0DP").modality == "CT+CTA" and r.code("SPX0DP").modality == "CTA"
    assert r.code("SPJ0BK").regions == ("Uspesifisert",)
    assert r.code("TSY0AL").modality == "PET" and len(r.code("TSY0AL").regions) == 6
    assert r.code("AAB06K").modality == "" and r.code("AAB06K").regions == ()
    assert not r.code("JUK02").needs_guidance and r.code("PHX35").needs_guidance
    assert r.addon("ZXA00").role == "side-right" and r.addon("ZTX0BC").role == "tele-secondary"
    assert r.addon("R") is None  # the kodeverk letters are not tilleggskoder


def test_digest_import_example_categories(example):
    """Deterministic EXAMPLE categories by kind, modality and number of regions."""
    r = radiology_tariffs.load(example)
    expected = {
        "SNG0AA": "D01",  # RG, one region
        "SAA0AG": "D13",  # MR, one region
        "SSH0AD": "D10",  # CT, several regions
        "SAA0DP": "D11",  # CT+CTA with CTA, one region
        "AAB06K": "I1",  # ultrasound-guided
        "JUK02": "I4",
        "TFY0AN": "N01",  # NM, one region
        "TSY0AL": "N05",  # PET/CT, FDG, several regions
    }
    assert {c: r.code(c).category for c in expected} == expected
    assert all(c.source == EXAMPLE for c in r.codes.values())
    assert r.rate("D01", "stat", DAY) == D("250.00") and r.rate("D01", "privat", DAY) == D(225)
    assert r.rate_entry("D01", "stat", DAY).source == EXAMPLE and r.example
    text = (example / "ncrp-codes.csv").read_text(encoding="utf-8")
    assert text.startswith("# EXAMPLE:") and "kravmottak tariff import --kind radiologi" in text


def test_digest_import_without_example_categories_keeps_no_category(tmp_path, digest):
    report = import_radiology(digest[0], tmp_path / "t", addons=digest[1], rates=FIXED_RATES)
    r = report.register
    assert all(c.category is None for c in r.codes.values()) and not r.example
    assert not (tmp_path / "t" / "ncrp-codes.csv").read_text().startswith("#")
    assert r.rate("AMBULANT", "stat", DAY) == D(100)


def test_digest_import_twice_gives_identical_bytes(tmp_path, digest, example):
    before = snapshot(example)
    again = import_radiology(digest[0], example, addons=digest[1], example=True)
    assert again.written == () and snapshot(example) == before
    assert "Nothing to write" in again.summary()
    import_radiology(digest[0], tmp_path / "other", addons=digest[1], rates=FIXED_RATES,
                     example=True)  # fmt: skip
    assert snapshot(tmp_path / "other") == before


# --------------------------------------------------------------------------- Helfo's table


def test_xlsx_replaces_the_categories_and_adds_rates(tmp_path, example):
    sheet = helfo_xlsx(
        tmp_path / "Radiologiske prosedyrer 2027.xlsx",
        [
            ("SNG0AA", "RG Kne", "R1", 312.5),
            ("SAA0AG", "MR Caput", "R7", 1850),
            ("SSH0AD", None, "R8", None),
            ("TFY0AN", "NM Myokardscintigrafi, hvile", "N2", "2 100,00"),
            ("JUK02", "ERCP", "I2", None),
            ("SAB0AD", "CT Ny kode", "R7", 1850),  # not in the register: derived
        ],
    )
    report = import_radiology(sheet, example, valid_from=date(2027, 1, 1))
    r = radiology_tariffs.load(example)
    assert sorted(r.codes) == ["JUK02", "SAA0AG", "SAB0AD", "SNG0AA", "SSH0AD", "TFY0AN"]
    assert r.code("SNG0AA").category == "R1" and r.code("SNG0AA").source == sheet.name
    assert r.code("SSH0AD").regions == ("Hode", "Hals")  # the register's attributes stay
    assert r.code("SSH0AD").name == "CT Hode og hals"  # no name in the sheet: kept
    new = r.code("SAB0AD")
    assert (new.kind, new.modality, new.regions, new.category) == ("diagnostic", "CT", (), "R7")
    assert r.rate("R1", "stat", date(2027, 1, 1)) == D("312.50")
    assert r.rate("R1", "stat", date(2026, 12, 31)) is None  # from --valid-from
    assert r.rate("N2", "stat", date(2027, 5, 1)) == D("2100.00")
    assert r.rate("R8", "stat", date(2027, 5, 1)) is None  # no amount given
    assert not r.example  # the EXAMPLE categories and kroner are gone
    assert r.rate("AMBULANT", "stat", DAY) == D(100)  # the fixed amounts stay
    assert report.derived == ("SAB0AD",) and report.added == ("SAB0AD",)
    assert set(report.removed) == {"AAB06K", "PHX35", "SAA0DP", "SPJ0BK", "SPX0DP", "SSH0AK",
                                   "TSY0AL"}  # fmt: skip
    assert ("SNG0AA", "D01", "R1") in report.recategorised
    assert "xlsx, sheet 'Statlige', header on row 4" in report.encoding
    summary = report.summary()
    assert "7 removed" in summary and "6 re-categorised" not in summary
    assert "categories in use without any stat rate: I2, R8" in summary
    assert re.search(r"added: .*R1 stat 2027-01-01 312\.50", summary)


def test_csv_table_with_belop_and_repeated_import(tmp_path, example):
    table = write(
        tmp_path / "helfo.csv",
        "kode,navn,refusjonskategori,belop",
        ["SNG0AA,RG Kne,R1,312.50", "SAA0AG,MR Caput,R7,1850.00", "SSH0AD,CT Hode og hals,R7,"],
    )
    import_radiology(table, example, valid_from=date(2027, 1, 1))
    r = radiology_tariffs.load(example)
    assert {c.code: c.category for c in r.codes.values()} == {
        "SAA0AG": "R7", "SNG0AA": "R1", "SSH0AD": "R7",
    }  # fmt: skip
    again = import_radiology(table, example, valid_from=date(2028, 1, 1))
    assert again.rates_added == () and again.written == ()  # equal to the rate in force
    table.write_text(table.read_text().replace("312.50", "320.00"))
    changed = import_radiology(table, example, valid_from=date(2028, 1, 1))
    assert [(x.category, x.valid_from, x.kroner) for x in changed.rates_added] == [
        ("R1", date(2028, 1, 1), D("320.00"))
    ]
    r = radiology_tariffs.load(example)
    assert r.rate("R1", "stat", date(2027, 6, 1)) == D("312.50")  # the older one stays
    assert r.rate("R1", "stat", date(2028, 6, 1)) == D("320.00")


def test_csv_with_bom_semicolons_decimal_commas_and_windows_1252(tmp_path, example):
    rows = ["sng0aa;RG Kne;r1;1 312,50", "SAA0AG;MR Caput (høy oppløsning);R7;1850,00"]
    text = "\r\n".join(["Kode;Kodetekst;Refusjonskategori;Beløp", *rows]) + "\r\n"
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    report = import_radiology(bom, example, valid_from=date(2027, 1, 1))
    assert "UTF-8 with BOM, ';'-separated" in report.encoding
    r = radiology_tariffs.load(example)
    assert r.code("SNG0AA").category == "R1"
    assert r.rate("R1", "stat", date(2027, 1, 1)) == D("1312.50")
    cp = tmp_path / "ansi.csv"
    cp.write_bytes(text.encode("cp1252"))
    report = import_radiology(cp, example, valid_from=date(2027, 1, 1))
    assert report.encoding.startswith("Windows-1252")
    assert radiology_tariffs.load(example).code("SAA0AG").name == "MR Caput (høy oppløsning)"


def test_amounts_that_disagree_within_a_category_are_refused_naming_both_rows(tmp_path, example):
    before = snapshot(example)
    table = write(
        tmp_path / "helfo.csv",
        "kode,navn,refusjonskategori,belop",
        ["SNG0AA,RG Kne,R1,312.50", "SAA0AG,MR Caput,R7,1850", "SSH0AD,CT Hode og hals,R1,300"],
    )
    with pytest.raises(TariffError) as err:
        import_radiology(table, example)
    e = err.value
    assert (e.file, e.row, e.column) == ("helfo.csv", 4, "belop")
    assert "row 2" in e.problem and "312.50" in e.problem and "300" in e.problem
    assert snapshot(example) == before


@pytest.mark.parametrize(
    ("row", "column", "words"),
    [
        ("SNG0AA,RG Kne,R 1/2,", "refusjonskategori", "not a refusjonskategori"),
        ("SNG0AA,RG Kne,,", "refusjonskategori", "is empty"),
        ("SNG0A,RG Kne,R1,", "kode", "not an NCRP, NCSP or NCMP code"),
        ("SNG0AA,RG Kne,R1,tolv", "belop", "not an amount"),
        ("SNG0AA,RG Kne,R1,-5", "belop", "not an amount"),
        ("SAA0AG,MR Caput,R7,", "kode", "again (first on row 2)"),
        ("SAA0XY,Ukjent,R7,", "kode", "6th character"),
    ],
)
def test_a_bad_row_is_refused_naming_row_and_column_nothing_written(
    tmp_path, example, row, column, words
):
    before = snapshot(example)
    table = write(
        tmp_path / "helfo.csv", "kode,navn,refusjonskategori,belop", ["SAA0AG,MR Caput,R7,", row]
    )
    with pytest.raises(TariffError) as err:
        import_radiology(table, example)
    assert (err.value.row, err.value.column) == (3, column) and words in str(err.value)
    assert snapshot(example) == before


def test_xlsx_bad_cell_names_sheet_row_and_column_letter(tmp_path, example):
    before = snapshot(example)
    sheet = helfo_xlsx(
        tmp_path / "h.xlsx", [("SNG0AA", "RG Kne", "R1", 300), ("SAA0AG", "x", "R7", "mange")]
    )
    with pytest.raises(TariffError) as err:
        import_radiology(sheet, example)
    assert str(err.value).startswith("h.xlsx, row 6, column Beløp (D): 'mange'")
    assert snapshot(example) == before


def test_xlsx_without_a_header_in_the_first_20_rows_is_refused(tmp_path, example):
    sheet = helfo_xlsx(tmp_path / "late.xlsx", [("SNG0AA", "RG Kne", "R1", 300)], title_rows=21)
    with pytest.raises(TariffError, match="no header row in the first 20 rows"):
        import_radiology(sheet, example)
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"not a zip")
    with pytest.raises(TariffError, match=r"cannot read as \.xlsx"):
        import_radiology(broken, example)


def test_no_current_register_derives_every_code(tmp_path):
    table = write(
        tmp_path / "helfo.csv",
        "kode,navn,refusjonskategori",
        ["SNG0AA,RG Kne,R1", "TFY0AN,NM Myokard,N2", "JUK05,ERCP med biopsi,I2", "PHX35,Port,I2"],
    )
    report = import_radiology(table, tmp_path / "new")
    r = report.register
    assert [(c.code, c.kind, c.modality, c.needs_guidance) for c in r.codes.values()] == [
        ("JUK05", "intervention", "", False),
        ("PHX35", "intervention", "", True),
        ("SNG0AA", "diagnostic", "RG", False),
        ("TFY0AN", "nuclear", "NM", False),
    ]
    assert any("every code's attributes are derived" in w for w in report.warnings)
    assert any("no AMBULANT rate" in w for w in report.warnings)


def test_an_unreadable_file_the_import_keeps_is_refused(tmp_path, digest, example):
    """Without --rates the current rates are kept: a broken rates file is refused, not
    silently replaced; with --rates it is replaced."""
    (example / RATES_FILE).write_text("category,sector\nAMBULANT,stat\n", encoding="utf-8")
    before = snapshot(example)
    with pytest.raises(TariffError, match=r"radiology-rates\.csv: cannot be kept"):
        import_radiology(digest[0], example, addons=digest[1], example=True)
    assert snapshot(example) == before
    report = import_radiology(digest[0], example, rates=FIXED_RATES, example=True)
    assert any("radiology-rates.csv cannot be read" in w for w in report.warnings)
    assert radiology_tariffs.load(example).rate("AMBULANT", "stat", DAY) == D(100)


def test_example_categories_are_for_the_digest_only(tmp_path, example):
    table = write(tmp_path / "helfo.csv", "kode,navn,refusjonskategori", ["SNG0AA,RG Kne,R1"])
    with pytest.raises(TariffError, match="--example-categories is for the reference digest"):
        import_radiology(table, example, example=True)


# --------------------------------------------------------------------------- the command line


def test_cli_import_and_show(tmp_path, digest, capsys):
    target = tmp_path / "t"
    for name in (tariffs.CODES_FILE, tariffs.RATES_FILE):  # `show` loads the NLK files too
        target.mkdir(exist_ok=True)
        (target / name).write_bytes((SHIPPED_DIR / name).read_bytes())
    argv = ["tariff", "import", "--kind", "radiologi", str(digest[0]), "--addons", str(digest[1])]
    argv += ["--rates", str(FIXED_RATES), "--example-categories", "--target", str(target)]
    argv += ["--force"]  # the example rates replace the shipped ones (an unsafe import)
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "categories: EXAMPLE" in out and f"Written to {target}" in out
    show = ["tariff", "show", "--dir", str(target), "--date", "2026-11-23"]
    assert cli.main([*show, "SSH0AD"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"kind +diagnostic", out) and re.search(r"regions +Hode\+Hals", out)
    assert re.search(r"modality +CT", out) and re.search(r"category +D10 \(EXAMPLE\)", out)
    assert re.search(r"rate stat +1400\.00 kr", out) and re.search(r"rate privat +1260\.00", out)
    assert cli.main([*show, "ztx0xc"]) == 0
    assert re.search(r"role +side-bilateral", capsys.readouterr().out)
    assert cli.main([*show, "V09GA02"]) == 0
    assert re.search(r"role +radiopharmaceutical", capsys.readouterr().out)
    assert cli.main([*show, "NOPE00"]) == 1
    assert "not in the NLK register nor the radiology register" in capsys.readouterr().err


def test_cli_refuses_a_bad_file_with_exit_code_1(tmp_path, example, capsys):
    """Refused like the NLK import (1); a bad option is a usage error (2)."""
    bad = write(tmp_path / "bad.csv", "kode,navn,refusjonskategori", ["SNG0AA,RG Kne,R 1"])
    argv = ["tariff", "import", "--kind", "radiologi", str(bad), "--target", str(example)]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "refused, nothing written" in err and "bad.csv, row 2, column refusjonskategori" in err
    assert cli.main([*argv, "--valid-from", "1.1.2027"]) == 2
    nlk = ["tariff", "import", "--kind", "nlk", str(bad), "--example-categories"]
    assert cli.main(nlk) == 2 and "only with --kind radiologi" in capsys.readouterr().err
