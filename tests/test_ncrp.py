"""The radiology code string parser (RAD-03): positions, empty fields, malformations."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.registers.ncrp import CodeString, CodeStringError, parse
from tests.conftest import shared_or_skip

# the examples in radiologi-refusjon-regelverk-2019 §6.2.1-3
RULE_TEXT_EXAMPLES = [
    ("SNG0AA/ZTX0XA/ZTX0FE", CodeString("SNG0AA", "ZTX0XA", None, "ZTX0FE")),
    ("SSC0AA", CodeString("SSC0AA")),
    ("SHA0AA/ZTX0XC", CodeString("SHA0AA", "ZTX0XC")),
    ("SBA0AK", CodeString("SBA0AK")),
    ("SSC0AD", CodeString("SSC0AD")),
    ("SDX0AD", CodeString("SDX0AD")),
    ("SNG0AA/ZTX0XA//ZXF10", CodeString("SNG0AA", "ZTX0XA", None, None, ("ZXF10",))),
    ("TFY0AN//V09GA02/ZTX0HB", CodeString("TFY0AN", None, None, "V09GA02", ("ZTX0HB",))),
    ("TSY0AN//V09BA01", CodeString("TSY0AN", None, None, "V09BA01")),
    ("TPJ0DN/ZTX0XA/V09DB01", CodeString("TPJ0DN", "ZTX0XA", None, "V09DB01")),
    ("TBA0AN//V09FX01", CodeString("TBA0AN", None, None, "V09FX01")),
    # teleradiology in its fixed place; both fixed places empty
    ("SSC0AD//ZTX0BA", CodeString("SSC0AD", None, "ZTX0BA")),
    ("SNG0AA/ZTX0XC/ZTX0BB/ZTX0EA", CodeString("SNG0AA", "ZTX0XC", "ZTX0BB", None, ("ZTX0EA",))),
    ("SA0AG///ZX5EA", CodeString("SA0AG", None, None, None, ("ZX5EA",))),
]


@pytest.mark.parametrize(
    ("text", "expected"), RULE_TEXT_EXAMPLES, ids=[t for t, _ in RULE_TEXT_EXAMPLES]
)
def test_rule_text_examples_parse_and_round_trip(text, expected):
    parsed = parse(text)
    assert parsed == expected
    assert str(parsed) == text


def test_the_meaning_of_the_fixed_places():
    cs = parse("SNG0AA/ZTX0XC/ZTX0BA/ZTX0AD/ZXF10")
    assert (cs.side, cs.tele, cs.units) == ("bilateral", "image", 2)
    assert cs.addons == ("ZTX0AD", "ZXF10")
    assert parse("TSY0AN//V09BA01").addons == ("V09BA01",)
    assert parse("SNG0AA/ZTX0XB").side == "left" and parse("SNG0AA/ZTX0XB").units == 1
    assert parse("GAA10/ZXA00//ZX5AC").side == "right"  # an NCSP side code


def test_every_code_string_of_the_official_ncrp_sample_round_trips():
    sample = shared_or_skip("samples/npr-bkm-0.78/npr-bkm-ncrp-eksempel-kith.xml")
    found = re.findall(r'Kodeverk="R"[^>]*kodeVerdi="([^"]*)"', sample.read_text("utf-8"))
    assert len(found) == 20
    for text in found:
        assert str(parse(text)) == text


MALFORMED = [
    # (string, position, what the message must mention)
    ("", 0, "prosedyrekode"),
    (" SNG0AA", 0, "mellomrom"),
    ("/ZTX0XA", 1, "prosedyrekoden"),
    ("ZTX0XA", 1, "tilleggskode"),
    ("ZTX0BA/ZTX0XA", 1, "tilleggskode"),
    ("SNG0AA/ZTX0BA", 2, "teleradiologikode"),
    ("SNG0AA/ZTX0FE", 2, "sidekode"),
    ("SNG0AA//ZTX0XA", 3, "sidekoden hører i posisjon 2"),
    ("SNG0AA///ZTX0XB", 4, "sidekoden hører i posisjon 2"),
    ("SNG0AA/ZTX0XA//ZTX0BC", 4, "teleradiologikoden hører i posisjon 3"),
    ("SNG0AA/ZTX0XA/ZTX0FE//ZXF10", 4, "tomme felt bare i posisjon 2-3"),
    ("SNG0AA////", 5, "etter siste skråstrek"),
    ("SNG0AA/ZTX0XA/ZTX0FE/ZXF10/", 5, "etter siste skråstrek"),
    ("sng0aa", 1, "store bokstaver"),
    ("SNG0AA/ZTX 0XA", 2, "store bokstaver"),
    ("SNG0AA;ZTX0XA", 1, "store bokstaver"),
]


@pytest.mark.parametrize(
    ("text", "position", "mention"), MALFORMED, ids=[m[0] or "empty" for m in MALFORMED]
)
def test_malformed_strings_name_position_code_and_expectation(text, position, mention):
    with pytest.raises(CodeStringError) as caught:
        parse(text)
    assert caught.value.position == position
    assert mention in str(caught.value)
    if position:
        assert f"posisjon {position}" in str(caught.value)


CODE = st.from_regex(r"[A-Z][A-Z0-9]{4,6}", fullmatch=True).filter(
    lambda c: not c.startswith(("ZTX0X", "ZTX0B", "ZXA"))
)


@given(
    procedure=CODE,
    side=st.sampled_from(["", "ZTX0XA", "ZTX0XB", "ZTX0XC"]),
    third=st.one_of(st.just(""), st.sampled_from(["ZTX0BA", "ZTX0BB", "ZTX0BC"]), CODE),
    tail=st.lists(CODE, max_size=3),
)
def test_any_well_formed_string_round_trips(procedure, side, third, tail):
    fields = [procedure, side, third, *tail]
    while fields[-1] == "":
        fields.pop()
    text = "/".join(fields)
    assert str(parse(text)) == text


@pytest.mark.parametrize("text", ["SSC0AA/", "SSC0AA//", "SSC0AA///"])
def test_trailing_empty_fields_mean_the_plain_code(text):
    """RULES.md RAD-03: the text asks for three slashes when both fixed fields are
    empty, so `SSC0AA///` and `SSC0AA//` mean the same as `SSC0AA`."""
    assert parse(text) == parse("SSC0AA")


def test_trailing_empty_field_after_a_side_code_is_tolerated():
    assert parse("SNG0AA/ZTX0XA//") == parse("SNG0AA/ZTX0XA")
