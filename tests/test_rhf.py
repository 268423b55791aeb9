"""The RHF table (daemon/rhf.py, config/tariffs/rhf.toml): RAD-15's municipality → RHF."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from daemon.registers import rhf as rhfmod
from daemon.registers.registry import load_institutions
from daemon.registers.rhf import (
    EXCEPTION,
    FORMER_COUNTY,
    MALFORMED,
    MISSING,
    MUNICIPALITY,
    NO_MUNICIPALITY,
    OUT_OF_PERIOD,
    REASONS,
    SHIPPED_PATH,
    UNKNOWN,
    RhfError,
    RhfTable,
    valid_orgnr,
)
from daemon.registers.tariff_table import TariffError

ROOT = Path(__file__).resolve().parents[1]
SOR_OST, VEST, MIDT, NORD = (
    "Helse Sør-Øst RHF",
    "Helse Vest RHF",
    "Helse Midt-Norge RHF",
    "Helse Nord RHF",
)
DAY = date(2024, 6, 1)


@pytest.fixture(scope="module")
def table() -> RhfTable:
    return RhfTable.load(SHIPPED_PATH)


# A small table with one exception, for the mechanics the shipped file does not exercise.
MINI = """
no_municipality = ["9000", "9900", "9999"]

[[rhf]]
name = "Helse Sør-Øst RHF"
orgnr = "991324968"
counties = ["03"]
former_counties = [
  { number = "30", name = "Viken", valid_from = 2020-01-01, valid_to = 2023-12-31 },
]

[[rhf]]
name = "Helse Midt-Norge RHF"
orgnr = "983658776"
counties = ["15", "50"]
municipalities = ["1811"]

[[rhf]]
name = "Helse Nord RHF"
orgnr = "883658752"
counties = ["18"]
"""


def test_shipped_table_has_the_four_rhfs_with_their_organisation_numbers(table):
    assert [(r.name, r.orgnr) for r in table.rhfs] == [
        (SOR_OST, "991324968"),
        (VEST, "983658725"),
        (MIDT, "983658776"),
        (NORD, "883658752"),
    ]
    assert table.no_municipality == ("9000", "9900", "9999")
    assert table.source == str(SHIPPED_PATH)


def test_shipped_table_covers_every_county_of_the_2024_structure_once(table):
    counties = sorted(c for r in table.rhfs for c in r.counties)
    assert counties == sorted(
        ["03", "11", "15", "18", "31", "32", "33", "34", "39", "40", "42", "46", "50", "55", "56"]
    )


@pytest.mark.parametrize(
    ("kommnr", "expected"),
    [
        ("0301", SOR_OST),  # Oslo
        ("1103", VEST),  # Stavanger
        ("4601", VEST),  # Bergen
        ("5001", MIDT),  # Trondheim
        ("1508", MIDT),  # Ålesund
        ("1804", NORD),  # Bodø
        ("5501", NORD),  # Tromsø
        ("5601", NORD),  # Alta
        ("3201", SOR_OST),  # Bærum
        ("4204", SOR_OST),  # Kristiansand
        ("3101", SOR_OST),  # Halden (2024 number)
        ("3901", SOR_OST),  # Horten
        ("4001", SOR_OST),  # Porsgrunn
        ("3301", SOR_OST),  # Drammen
        ("3403", SOR_OST),  # Hamar
        ("1811", NORD),  # Bindal: no exception, the sources place it in Helse Nord
    ],
)
def test_municipality_resolves_through_its_county(table, kommnr, expected):
    assert table.for_municipality(kommnr, DAY).name == expected
    assert table.for_municipality(kommnr).name == expected
    found = table.resolve(kommnr, VEST, DAY)
    assert (found.rhf.name, found.reason, found.county) == (expected, MUNICIPALITY, kommnr[:2])
    assert not found.fallback


@pytest.mark.parametrize(
    ("kommnr", "day", "expected", "county"),
    [
        ("3001", date(2023, 5, 1), SOR_OST, "30"),  # Halden, Viken
        ("3001", date(2020, 1, 1), SOR_OST, "30"),  # first day of Viken
        ("3001", date(2023, 12, 31), SOR_OST, "30"),  # last day of Viken
        ("3024", date(2022, 3, 1), SOR_OST, "30"),  # Bærum, Viken
        ("3803", date(2021, 3, 1), SOR_OST, "38"),  # Tønsberg, Vestfold og Telemark
        ("5401", date(2023, 5, 1), NORD, "54"),  # Tromsø, Troms og Finnmark
        ("5403", date(2020, 5, 1), NORD, "54"),  # Alta, Troms og Finnmark
        ("1201", date(2019, 6, 1), VEST, "12"),  # Bergen, Hordaland
        ("1401", date(2019, 6, 1), VEST, "14"),  # Flora, Sogn og Fjordane
        ("0101", date(2019, 6, 1), SOR_OST, "01"),  # Halden, Østfold
        ("0219", date(2019, 6, 1), SOR_OST, "02"),  # Bærum, Akershus
        ("1001", date(2019, 6, 1), SOR_OST, "10"),  # Kristiansand, Vest-Agder
        ("1601", date(2017, 6, 1), MIDT, "16"),  # Trondheim, Sør-Trøndelag
        ("1702", date(2017, 6, 1), MIDT, "17"),  # Steinkjer, Nord-Trøndelag
        ("1902", date(2019, 6, 1), NORD, "19"),  # Tromsø, Troms
        ("2012", date(2019, 6, 1), NORD, "20"),  # Alta, Finnmark
    ],
)
def test_former_county_resolves_within_its_period(table, kommnr, day, expected, county):
    assert table.for_municipality(kommnr, day).name == expected
    found = table.resolve(kommnr, VEST, day)
    assert (found.rhf.name, found.reason, found.county) == (expected, FORMER_COUNTY, county)


@pytest.mark.parametrize(
    ("kommnr", "day", "expected"),
    [
        ("3001", date(2024, 1, 1), SOR_OST),  # Viken ended 2023-12-31
        ("3001", date(2019, 12, 31), SOR_OST),  # Viken began 2020-01-01
        ("5401", date(2024, 3, 1), NORD),
        ("1201", date(2020, 1, 1), VEST),  # Hordaland ended 2019-12-31
        ("1601", date(2018, 1, 1), MIDT),  # Sør-Trøndelag ended 2017-12-31
    ],
)
def test_former_county_outside_its_period_is_flagged_not_placed(table, kommnr, day, expected):
    """for_municipality says None. resolve names the county's RHF and flags the number.
    A county number is never reused, so the rule can still decide to pay."""
    assert table.for_municipality(kommnr, day) is None
    found = table.resolve(kommnr, VEST, day)
    assert (found.rhf.name, found.reason) == (expected, OUT_OF_PERIOD)


def test_former_county_without_a_day_resolves(table):
    assert table.for_municipality("3001").name == SOR_OST
    assert table.resolve("5401", None).reason == FORMER_COUNTY


@pytest.mark.parametrize("code", ["9000", "9900", "9999"])
def test_no_municipality_codes_fall_back_to_the_institutions_rhf(table, code):
    assert table.is_no_municipality(code)
    assert table.for_municipality(code, DAY) is None
    found = table.resolve(code, MIDT, DAY)
    assert (found.rhf.name, found.reason, found.fallback) == (MIDT, NO_MUNICIPALITY, True)


def test_no_municipality_with_an_institution_without_known_rhf_gives_none(table):
    found = table.resolve("9900", "Helse Øst RHF", DAY)  # a name not in the table
    assert (found.rhf, found.reason) == (None, NO_MUNICIPALITY)
    assert table.resolve("9000", None, DAY).rhf is None


@pytest.mark.parametrize("kommnr", [None, ""])
def test_missing_municipality_falls_back_to_the_institutions_rhf(table, kommnr):
    assert table.for_municipality(kommnr, DAY) is None
    assert not table.is_no_municipality(kommnr)
    found = table.resolve(kommnr, SOR_OST, DAY)
    assert (found.rhf.name, found.reason, found.fallback) == (SOR_OST, MISSING, True)


@pytest.mark.parametrize("kommnr", ["12", "abcd", "12345", "03O1", " 301", "０３０１", 301])
def test_malformed_municipality_gives_no_rhf(table, kommnr):
    assert table.for_municipality(kommnr, DAY) is None
    assert not table.is_no_municipality(kommnr)
    assert table.resolve(kommnr, VEST, DAY) == rhfmod.Resolution(None, MALFORMED)


@pytest.mark.parametrize("kommnr", ["2100", "2111", "0000", "9100", "6001", "1301"])
def test_unknown_county_gives_no_rhf(table, kommnr):
    """2100 Svalbard is neither a county nor a no-municipality code (ISF §4.2)."""
    assert table.for_municipality(kommnr, DAY) is None
    found = table.resolve(kommnr, VEST, DAY)
    assert (found.rhf, found.reason, found.county) == (None, UNKNOWN, kommnr[:2])
    assert not found.fallback


def test_exception_comes_before_the_county():
    mini = RhfTable.parse(MINI, "mini.toml")
    assert mini.for_municipality("1811", DAY).name == MIDT
    assert mini.for_municipality("1804", DAY).name == NORD
    found = mini.resolve("1811", SOR_OST, DAY)
    assert (found.rhf.name, found.reason, found.county) == (MIDT, EXCEPTION, "18")


def test_by_name_and_by_orgnr(table):
    assert table.by_name(NORD).orgnr == "883658752"
    assert table.by_orgnr("983658725").name == VEST
    assert table.by_name("Helse Nord") is None
    assert table.by_orgnr("883658753") is None
    assert table.by_name(None) is None


def test_every_institution_rhf_exists_in_the_shipped_table(table):
    institutions = load_institutions(ROOT / "config" / "institutions.toml")
    assert institutions
    for inst in institutions:
        assert table.by_name(inst.rhf) is not None, f"{inst.name}: rhf {inst.rhf!r} unknown"


def test_empty_table_knows_no_rhf_but_still_knows_the_no_municipality_codes():
    empty = RhfTable.empty()
    assert empty.rhfs == ()
    assert empty.for_municipality("0301", DAY) is None
    assert empty.resolve("0301", SOR_OST, DAY).reason == UNKNOWN
    assert empty.is_no_municipality("9999")
    assert empty.resolve("9999", SOR_OST, DAY) == rhfmod.Resolution(None, NO_MUNICIPALITY)


def test_every_reason_resolve_gives_is_documented(table):
    reasons = {
        table.resolve(k, VEST, d).reason
        for k, d in [
            ("0301", DAY),
            ("3001", date(2023, 1, 1)),
            ("3001", DAY),
            ("9000", DAY),
            (None, DAY),
            ("abcd", DAY),
            ("2100", DAY),
        ]
    } | {RhfTable.parse(MINI).resolve("1811", VEST, DAY).reason}
    assert reasons == set(REASONS)


@pytest.mark.parametrize("orgnr", ["991324968", "983658725", "983658776", "883658752"])
def test_the_rhf_organisation_numbers_pass_mod_11(orgnr):
    assert valid_orgnr(orgnr)


@pytest.mark.parametrize(
    "orgnr",
    [
        "991324969",  # wrong check digit
        "99132496",  # eight digits
        "9913249680",
        "99132496x",
        "",
        991324968,
        "100000130",  # the check digit would be 10: no number with these 8 digits passes
    ],
)
def test_bad_organisation_numbers_fail_mod_11(orgnr):
    assert not valid_orgnr(orgnr)


def _broken(old: str, new: str) -> str:
    assert old in MINI
    return MINI.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            _broken('orgnr = "983658776"', 'orgnr = "983658777"'),
            ['[[rhf]] #2 "Helse Midt-Norge RHF", orgnr', "mod-11", "should be 6"],
            id="bad-check-digit",
        ),
        pytest.param(
            _broken('orgnr = "983658776"', "orgnr = 983658776"),
            ['[[rhf]] #2 "Helse Midt-Norge RHF", orgnr', "string of 9 digits"],
            id="orgnr-not-a-string",
        ),
        pytest.param(
            _broken('counties = ["18"]', 'counties = ["18", "15"]'),
            ['[[rhf]] #3 "Helse Nord RHF", counties', "county 15 is already in", "#2"],
            id="county-in-two-rhfs",
        ),
        pytest.param(
            _broken('counties = ["03"]', 'counties = ["03", "03"]'),
            ['[[rhf]] #1 "Helse Sør-Øst RHF", counties', "listed twice: ['03']"],
            id="county-twice-in-one-rhf",
        ),
        pytest.param(
            _broken('counties = ["18"]', 'counties = ["18", "30"]'),
            ['[[rhf]] #3 "Helse Nord RHF", counties', "county 30 is already in", '"30"'],
            id="county-current-and-former",
        ),
        pytest.param(
            _broken('counties = ["03"]', 'counties = "03"'),
            ['[[rhf]] #1 "Helse Sør-Øst RHF", counties', "a list is needed, not '03'"],
            id="counties-not-a-list",
        ),
        pytest.param(
            _broken('counties = ["03"]', 'counties = ["3"]'),
            ['[[rhf]] #1 "Helse Sør-Øst RHF", counties', "'3' must be two digits"],
            id="county-one-digit",
        ),
        pytest.param(
            _broken('orgnr = "883658752"', 'orgnr = "883658752"\nregion = "nord"'),
            ['[[rhf]] #3 "Helse Nord RHF", region: unknown key'],
            id="unknown-key-in-rhf",
        ),
        pytest.param(
            "fylker = []\n" + MINI,
            ["mini.toml: fylker: unknown key"],
            id="unknown-key-at-top",
        ),
        pytest.param(
            _broken('name = "Viken",', 'name = "Viken", rhf = "x",'),
            ['"Helse Sør-Øst RHF", former_counties #1 "30", rhf: unknown key'],
            id="unknown-key-in-former-county",
        ),
        pytest.param(
            _broken(", valid_to = 2023-12-31", ""),
            ['former_counties #1 "30", valid_to', "missing"],
            id="former-county-without-end",
        ),
        pytest.param(
            _broken("valid_from = 2020-01-01", "valid_from = 2024-01-01"),
            ['former_counties #1 "30", valid_from', "after valid_to"],
            id="former-county-backwards",
        ),
        pytest.param(
            _broken("valid_to = 2023-12-31", "valid_to = 2023-12-31T00:00:00"),
            ['former_counties #1 "30", valid_to', "must be a TOML date"],
            id="former-county-datetime",
        ),
        pytest.param(
            _broken('municipalities = ["1811"]', 'municipalities = ["1811", "181"]'),
            ['[[rhf]] #2 "Helse Midt-Norge RHF", municipalities', "'181' must be four"],
            id="exception-three-digits",
        ),
        pytest.param(
            _broken('counties = ["18"]', 'counties = ["18"]\nmunicipalities = ["1811"]'),
            ['[[rhf]] #3 "Helse Nord RHF", municipalities', "1811 is already an exception"],
            id="exception-in-two-rhfs",
        ),
        pytest.param(
            _broken('municipalities = ["1811"]', 'municipalities = ["1506"]'),
            ['[[rhf]] #2 "Helse Midt-Norge RHF", municipalities', "needs no exception"],
            id="exception-in-own-county",
        ),
        pytest.param(
            _broken('municipalities = ["1811"]', 'municipalities = ["9900"]'),
            ["municipalities", "9900 is a no-municipality code"],
            id="exception-is-no-municipality",
        ),
        pytest.param(
            _broken('"9999"]', '"9999", "0399"]'),
            ["mini.toml: no_municipality", "0399 lies in county 03"],
            id="no-municipality-in-a-county",
        ),
        pytest.param(
            _broken('name = "Helse Nord RHF"', 'name = "Helse Midt-Norge RHF"'),
            ['[[rhf]] #3 "Helse Midt-Norge RHF", name', "also the name of [[rhf]] #2"],
            id="name-twice",
        ),
        pytest.param(
            _broken('name = "Helse Nord RHF"', 'name = ""'),
            ["[[rhf]] #3, name", "non-empty string"],
            id="name-empty",
        ),
        pytest.param(
            'no_municipality = ["9000"]\n',
            ["mini.toml: rhf", "at least one [[rhf]]"],
            id="no-rhf",
        ),
        pytest.param(
            MINI + "\n[[rhf]\n",
            ["mini.toml: ", "line"],
            id="toml-syntax",
        ),
    ],
)
def test_a_bad_file_is_refused_naming_the_entry(text, expected):
    with pytest.raises(RhfError) as caught:
        RhfTable.parse(text, "mini.toml")
    message = str(caught.value)
    assert message.startswith("mini.toml: ")
    for part in expected:
        assert part in message, message
    assert isinstance(caught.value, TariffError)  # caught where tariff errors are


def test_load_names_a_missing_file(tmp_path):
    with pytest.raises(RhfError, match=r"rhf\.toml: cannot read"):
        RhfTable.load(tmp_path / "rhf.toml")


def test_the_mini_table_is_valid():
    """The validation cases above break one thing each in a valid table."""
    mini = RhfTable.parse(MINI, "mini.toml")
    assert [r.name for r in mini.rhfs] == [SOR_OST, MIDT, NORD]
    assert mini.source == "mini.toml"
