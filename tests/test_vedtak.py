"""The utbetalingsvedtak as bytes: M22 Oppgjørsresultat and our M23-style Utbetaling in
a signed MsgHead, valid for our schemas and, for the M22 body, the official XSD."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree

from daemon.config import OwnParty
from daemon.schemas import SCHEMA_DIR, Schemas
from daemon.settlement.vedtak import (
    M22,
    MSGHEAD,
    STATUS_APPROVED,
    STATUS_REDUCED,
    STATUS_REJECTED,
    UTBETALING,
    Payee,
    Utbetaling,
    Vedtak,
    VedtakLine,
    money,
    render_oppgjorsresultat,
    render_utbetaling,
    utbetaling_for,
    validate_vedtak,
)
from daemon.transport import keys, trust
from daemon.transport.trust import Trusted, TrustError
from tests.conftest import CERTS_FROM, shared_or_skip
from tests.test_schemas import _normalise

M23 = "http://www.kith.no/xmlstds/eresept/m23/2006-10-06"
KITH = "http://www.kith.no/xmlstds"
XS = "http://www.w3.org/2001/XMLSchema"
NS = {"mh": MSGHEAD, "m22": M22, "utb": UTBETALING, "xs": XS}
OFFICIAL_M22 = "oppgjorsresultat/eresept-m22-m23/ER-M22-2006-10-06.xsd"
OFFICIAL_M23 = "oppgjorsresultat/eresept-m22-m23/ER-M23-2006-10-06.xsd"
SAMPLE_M22 = "samples/oppgjorsresultat-eresept/M22 Oppgjørsresultat.xml"
KITH_XSD = "msghead/kith.xsd"  # what the official "../felleskomponenter/kith.xsd" is

US = OwnParty(her_id="79768", orgnr="889640782", name="HELFO")
GEN_DATE = datetime(2026, 11, 23, 18, 30, tzinfo=UTC)
PAYEE = Payee("RHF:Helse Vest", "Helse Vest RHF", "983658725", account="36250100101")
VEDTAK = Vedtak(
    oppgjors_nr="VEDTAK-2026-11-23-0001",
    payee=PAYEE,
    decided_on=date(2026, 11, 23),
    cutoff=datetime(2026, 11, 23, 18, 0, tzinfo=UTC),
    lines=(
        VedtakLine("10001", Decimal("375.00"), Decimal("375.00"), STATUS_APPROVED),
        VedtakLine(
            "10002",
            Decimal("412.50"),
            Decimal("206.25"),
            STATUS_REDUCED,
            ("LAB-06: takst 705 avkortet", "Egenandel trukket fra"),
        ),
        VedtakLine("10003", Decimal("96"), Decimal("0"), STATUS_REJECTED, ("COM-06: betalt før",)),
        VedtakLine("10004", Decimal("-120"), Decimal("-120"), STATUS_APPROVED, ("Kreditering",)),
    ),
)
TOTAL = Decimal("461.25")  # 375.00 + 206.25 + 0 - 120.00


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def schemas() -> Schemas:
    return Schemas.load()


@pytest.fixture(scope="module")
def our_keys(tmp_path_factory) -> trust.KeyPair:
    folder = tmp_path_factory.mktemp("vedtak-keys")
    key, cert = folder / "us.key.pem", folder / "us.cert.pem"
    keys.generate(
        key, cert, her_id=US.her_id, orgnr=US.orgnr, name=US.name, not_before=CERTS_FROM, days=3650
    )
    return keys.load_pair(key, cert, None)


def m22(vedtak: Vedtak = VEDTAK, keys_: trust.KeyPair | None = None) -> bytes:
    return render_oppgjorsresultat(vedtak, us=US, msg_id="msg-m22-1", gen_date=GEN_DATE, keys=keys_)


def m23(utbetaling: Utbetaling | None = None, keys_: trust.KeyPair | None = None) -> bytes:
    utbetaling = utbetaling or utbetaling_for(
        VEDTAK, utbetalings_nr="UTB-2026-11-24-0001", paid_on=date(2026, 11, 24)
    )
    return render_utbetaling(utbetaling, us=US, msg_id="msg-m23-1", gen_date=GEN_DATE, keys=keys_)


def parse(data: bytes) -> etree._Element:
    return etree.fromstring(data, etree.XMLParser(no_network=True, resolve_entities=False))


def body_of(data: bytes) -> etree._ElementTree:
    """The Content child on its own, as a document."""
    (body,) = parse(data).find("mh:Document/mh:RefDoc/mh:Content", NS)
    return etree.ElementTree(copy.deepcopy(body))


def schema_file(path: Path, resolver: etree.Resolver | None = None) -> etree.XMLSchema:
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    if resolver is not None:
        parser.resolvers.add(resolver)
    return etree.XMLSchema(etree.parse(str(path), parser))


class _Felleskomponenter(etree.Resolver):
    """The official M22/M23 import `../felleskomponenter/kith.xsd`; the reference keeps
    that file as msghead/kith.xsd (SOURCES.md)."""

    def __init__(self, kith: Path) -> None:
        super().__init__()
        self.kith = kith

    def resolve(self, system_url, public_id, context):
        if system_url.endswith("felleskomponenter/kith.xsd"):
            return self.resolve_filename(str(self.kith), context)
        return None


def official_schema(relative: str) -> etree.XMLSchema:
    xsd = shared_or_skip(relative)
    return schema_file(xsd, _Felleskomponenter(shared_or_skip(KITH_XSD)))


def amounts(root: etree._Element, xpath: str) -> list[Decimal]:
    return [Decimal(v) for v in root.xpath(xpath, namespaces=NS)]


# --------------------------------------------------------------------------- content


def test_oppgjorsresultat_is_an_erm22_msghead_from_us_to_the_payee():
    root = parse(m22())
    info = root.find("mh:MsgInfo", NS)
    assert info.find("mh:Type", NS).attrib == {"V": "ERM22", "DN": "Oppgjorsresultat"}
    assert info.findtext("mh:MIGversion", namespaces=NS) == "v1.2 2006-05-24"
    assert info.findtext("mh:GenDate", namespaces=NS) == "2026-11-23T18:30:00Z"
    assert info.findtext("mh:MsgId", namespaces=NS) == "msg-m22-1"
    sender = info.find("mh:Sender/mh:Organisation", NS)
    assert sender.findtext("mh:OrganisationName", namespaces=NS) == "HELFO"
    ids = {
        i.find("mh:TypeId", NS).get("V"): (
            i.findtext("mh:Id", namespaces=NS),
            i.find("mh:TypeId", NS),
        )
        for i in sender.iterfind("mh:Ident", NS)
    }
    assert ids["ENH"][0] == "889640782" and ids["HER"][0] == "79768"
    assert {t.get("S") for _, t in ids.values()} == {"2.16.578.1.12.4.1.1.9051"}
    receiver = info.find("mh:Receiver/mh:Organisation", NS)
    assert receiver.findtext("mh:OrganisationName", namespaces=NS) == "Helse Vest RHF"
    assert receiver.findtext("mh:Ident/mh:Id", namespaces=NS) == "983658725"
    assert receiver.find("mh:Ident/mh:TypeId", NS).get("V") == "ENH"
    assert root.find("mh:Document/mh:DocumentConnection", NS).get("V") == "H"
    assert root.find("mh:Document/mh:RefDoc/mh:MsgType", NS).get("V") == "XML"


def test_each_line_is_a_regning_with_amounts_status_and_remarks():
    body = body_of(m22()).getroot()
    assert body.tag == f"{{{M22}}}Oppgjorsresultat"
    assert body.findtext("m22:OppgjorsNr", namespaces=NS) == "VEDTAK-2026-11-23-0001"
    assert body.findtext("m22:BehandlingDato", namespaces=NS) == "2026-11-23"
    rows = [
        (
            r.findtext("m22:RegningsNr", namespaces=NS),
            r.find("m22:Krav", NS).attrib,
            r.find("m22:Godkjent", NS).attrib,
            r.find("m22:Status", NS).attrib,
            [m.text for m in r.iterfind("m22:Merknad", NS)],
        )
        for r in body.iterfind("m22:Regning", NS)
    ]
    nok = lambda v: {"U": "NOK", "V": v}  # noqa: E731
    assert rows == [
        ("10001", nok("375.00"), nok("375.00"), {"V": "2", "DN": "Godkjent"}, []),
        (
            "10002",
            nok("412.50"),
            nok("206.25"),
            {"V": "3", "DN": "Avkortet"},
            ["LAB-06: takst 705 avkortet", "Egenandel trukket fra"],
        ),
        ("10003", nok("96.00"), nok("0.00"), {"V": "1", "DN": "Avvist"}, ["COM-06: betalt før"]),
        ("10004", nok("-120.00"), nok("-120.00"), {"V": "2", "DN": "Godkjent"}, ["Kreditering"]),
    ]


def test_utbetaling_names_payee_account_amount_and_oppgjor():
    root = parse(m23())
    assert root.find("mh:MsgInfo/mh:Type", NS).attrib == {"V": "ERM23", "DN": "Utbetaling"}
    body = body_of(m23()).getroot()
    assert body.tag == f"{{{UTBETALING}}}Utbetaling"
    assert [etree.QName(c).localname for c in body] == [
        "Utbetalingsnr",
        "Mottaker",
        "Kontonummer",
        "Utbetalt",
        "UtbetaltDato",
        "Oppgjor",
    ]
    assert body.findtext("utb:Utbetalingsnr", namespaces=NS) == "UTB-2026-11-24-0001"
    assert body.findtext("utb:Mottaker/utb:Navn", namespaces=NS) == "Helse Vest RHF"
    assert body.findtext("utb:Mottaker/utb:Orgnr", namespaces=NS) == "983658725"
    assert body.findtext("utb:Kontonummer", namespaces=NS) == "36250100101"
    assert body.find("utb:Utbetalt", NS).attrib == {"U": "NOK", "V": "461.25"}
    assert body.findtext("utb:UtbetaltDato", namespaces=NS) == "2026-11-24"
    assert body.findtext("utb:Oppgjor/utb:OppgjorsNr", namespaces=NS) == VEDTAK.oppgjors_nr


def test_kontonummer_is_left_out_when_the_payee_has_no_account(schemas):
    payee = Payee("INST:974589095", "Sykehuset Innlandet HF", "974589095")
    utbetaling = Utbetaling("UTB-2", payee, Decimal("10.00"), date(2026, 11, 24), "V-2")
    data = m23(utbetaling)
    assert body_of(data).find("utb:Kontonummer", NS) is None
    assert validate_vedtak(data, schemas) == []


def test_regning_godkjent_adds_up_to_the_utbetalt():
    regninger = amounts(parse(m22()), "//m22:Regning/m22:Godkjent/@V")
    payment = parse(m23())
    utbetalt = amounts(payment, "//utb:Utbetaling/utb:Utbetalt/@V")
    oppgjor = amounts(payment, "//utb:Oppgjor/utb:Godkjent/@V")
    assert sum(regninger) == utbetalt[0] == sum(oppgjor) == TOTAL == VEDTAK.total
    assert parse(m23()).findtext(".//utb:OppgjorsNr", namespaces=NS) == parse(m22()).findtext(
        ".//m22:OppgjorsNr", namespaces=NS
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("375"), "375.00"),
        (Decimal("129.5"), "129.50"),
        (Decimal("-120"), "-120.00"),
        (Decimal("-0.00"), "0.00"),
        (Decimal("0"), "0.00"),
    ],
)
def test_amounts_have_two_decimals(value, text):
    assert money(value) == text


@pytest.mark.parametrize("value", [Decimal("1.005"), Decimal("NaN"), Decimal("Infinity")])
def test_an_amount_that_is_not_whole_ore_is_refused_not_rounded(value):
    with pytest.raises(ValueError):
        money(value)


# --------------------------------------------------------------------------- our schemas


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_both_messages_validate_against_our_schemas(schemas, our_keys, signed):
    pair = our_keys if signed else None
    assert validate_vedtak(m22(keys_=pair), schemas) == []
    assert validate_vedtak(m23(keys_=pair), schemas) == []


def test_our_m22_schema_accepts_the_official_sample(schemas):
    """The sample NAV signed: its body against kith/m22.xsd, the whole MsgHead against the
    vedtak driver."""
    sample = shared_or_skip(SAMPLE_M22).read_bytes()
    ours = schema_file(SCHEMA_DIR / "kith" / "m22.xsd")
    assert ours.validate(body_of(sample)), ours.error_log
    assert validate_vedtak(sample, schemas) == []


def test_a_status_outside_code_list_7410_is_reported_with_its_line(schemas):
    line = VedtakLine("10005", Decimal("50"), Decimal("50"), "9")
    data = m22(Vedtak("V-9", PAYEE, date(2026, 11, 23), GEN_DATE, (line,)))
    errors = validate_vedtak(data, schemas)
    assert len(errors) == 1
    status_line = next(n for n, text in enumerate(data.splitlines(), 1) if b"m22:Status" in text)
    assert errors[0].startswith(f"line {status_line}: ")
    assert "Status" in errors[0] and "'9'" in errors[0]


def test_a_vedtak_without_lines_is_reported(schemas):
    errors = validate_vedtak(m22(Vedtak("V-0", PAYEE, date(2026, 11, 23), GEN_DATE, ())), schemas)
    assert errors and "Regning" in errors[0]


def test_a_bad_account_number_is_reported(schemas):
    payee = Payee("RHF:X", "Helse X", "983658725", account="3625.01.00101")
    utbetaling = Utbetaling("UTB-3", payee, Decimal("1.00"), date(2026, 11, 24), "V-3")
    errors = validate_vedtak(m23(utbetaling), schemas)
    assert errors and "Kontonummer" in errors[0]


def test_a_body_that_does_not_match_the_type_is_reported(schemas):
    swapped = m23().replace(b'V="ERM23" DN="Utbetaling"', b'V="ERM22" DN="Oppgjorsresultat"')
    (error,) = validate_vedtak(swapped, schemas)
    assert "Content holds Utbetaling" in error and "ERM22" in error


def test_a_msghead_without_a_body_is_reported(schemas):
    root = parse(m22())
    content = root.find(".//mh:Content", NS)
    content.getparent().remove(content)  # Content is optional in MsgHead 1.2
    (error,) = validate_vedtak(etree.tostring(root), schemas)
    assert "no Oppgjorsresultat in Document/RefDoc/Content" in error


def test_an_utbetalt_that_is_not_the_sum_of_its_oppgjor_is_reported(schemas):
    root = parse(m23())
    root.find(".//utb:Oppgjor/utb:Godkjent", NS).set("V", "461.24")
    (error,) = validate_vedtak(etree.tostring(root), schemas)
    assert "Utbetalt 461.25 is not the sum" in error


def test_a_payload_other_than_ours_is_refused(schemas):
    """The official M23 namespace (or a claim) is not a body the vedtak driver declares."""
    official_m23 = m23().replace(UTBETALING.encode(), M23.encode())
    errors = validate_vedtak(official_m23, schemas)
    assert errors and "No matching global element declaration" in errors[0]


def test_not_well_formed_bytes_are_reported(schemas):
    (error,) = validate_vedtak(m22()[:200], schemas)
    assert error.startswith("line ") and "not well-formed" in error


def test_the_claim_driver_still_refuses_a_vedtak(schemas):
    """The inbound MsgHead validator is unchanged: an ERM22 is not a claim."""
    assert not schemas.msghead.validate(parse(m22()))


# --------------------------------------------------------------------------- official XSDs


def test_the_m22_body_validates_against_the_official_xsd():
    official = official_schema(OFFICIAL_M22)
    body = body_of(m22())
    assert official.validate(body), official.error_log


def test_the_official_xsd_takes_any_status_our_schema_is_stricter(schemas):
    """Documented deviation: the official Status is a bare kith:CS."""
    official = official_schema(OFFICIAL_M22)
    line = VedtakLine("1", Decimal("5"), Decimal("5"), "9")
    data = m22(Vedtak("V-9", PAYEE, date(2026, 11, 23), GEN_DATE, (line,)))
    assert official.validate(body_of(data))
    assert validate_vedtak(data, schemas)


def test_our_utbetaling_without_its_additions_is_an_official_m23():
    """Same names, order and types as M23 once Mottaker and Kontonummer are taken out."""
    official = official_schema(OFFICIAL_M23)
    body = body_of(m23()).getroot()
    for added in ("utb:Mottaker", "utb:Kontonummer"):
        body.remove(body.find(added, NS))
    for el in body.iter():
        el.tag = f"{{{M23}}}{etree.QName(el).localname}"
    etree.cleanup_namespaces(body)
    assert official.validate(etree.ElementTree(body)), official.error_log


def test_our_m22_schema_has_the_official_components():
    """kith/m22.xsd equals ER-M22-2006-10-06.xsd apart from the documented deviations:
    kith:MO/kith:CS declared locally, Status restricted to code list 7410."""
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    official = etree.parse(str(shared_or_skip(OFFICIAL_M22)), parser).getroot()
    for imported in official.findall(f"{{{XS}}}import"):
        official.remove(imported)
    for el in official.iter(f"{{{XS}}}element"):
        if el.get("type", "").startswith("kith:"):
            el.set("type", "m22:" + el.get("type").split(":")[1])
    ours = etree.parse(str(SCHEMA_DIR / "kith" / "m22.xsd"), parser).getroot()
    local = {t.get("name"): t for t in ours.findall("xs:complexType", NS)}
    assert set(local) == {"CS", "MO", "Status7410"}
    for t in local.values():
        ours.remove(t)
    ours.find(".//xs:element[@name='Status']", NS).set("type", "m22:CS")
    assert _normalise(ours) == _normalise(official)

    kith = etree.parse(str(shared_or_skip(KITH_XSD)), parser).getroot()
    for name in ("CS", "MO"):
        (theirs,) = kith.xpath(f"xs:complexType[@name='{name}']", namespaces=NS)
        assert _normalise(local[name]) == _normalise(theirs)
    codes = local["Status7410"].xpath(".//xs:enumeration/@value", namespaces=NS)
    listed = shared_or_skip("kodeverk/kodeverk-7410.csv").read_text().splitlines()[1:]
    assert codes == [row.split(",")[1] for row in listed]


# --------------------------------------------------------------------------- signature


def test_the_signature_verifies_with_our_certificate(our_keys):
    for data in (m22(keys_=our_keys), m23(keys_=our_keys)):
        root = parse(data)
        assert root[-1].tag == "{http://www.w3.org/2000/09/xmldsig#}Signature"
        assert trust.verify_msghead(root, Trusted((our_keys.certificate,)), GEN_DATE, required=True)


def test_an_amount_changed_after_signing_breaks_the_signature(our_keys):
    forged = m22(keys_=our_keys).replace(b'V="206.25"', b'V="306.25"', 1)
    with pytest.raises(TrustError):
        trust.verify_msghead(
            parse(forged), Trusted((our_keys.certificate,)), GEN_DATE, required=True
        )


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_rendering_is_deterministic(our_keys, signed):
    pair = our_keys if signed else None
    assert m22(keys_=pair) == m22(keys_=pair)
    assert m23(keys_=pair) == m23(keys_=pair)
