"""Egenandel (#21): the register, rules EG-01..12 through the whole pipeline, the money
paid to the institution, and the frikort basis per patient pseudonym.

Each case is a real NPR-behandlerkravmelding (tests/claims.py) dropped into one sandbox
whose egenandel register is imported with `kravmottak tariff import --kind egenandel`
from the table written here (REGISTER): the amounts the tests expect come from it.
"""

from __future__ import annotations

import contextlib
import io
from decimal import Decimal

import pytest
from lxml import etree

from daemon import cli, config, logs
from daemon.domain import legacy_pseudonym, pseudonym
from daemon.ledger.backends import open_ledger
from daemon.ledger.sqlite import SqliteLedger
from daemon.registers import egenandel
from daemon.registers.tariff_table import TariffError
from daemon.transport import mime
from tests.claims import B, C, L, _numbers, msghead, person_number
from tests.conftest import ROOT, make_sandbox, wrap_demo

BOTH_BACKENDS = True  # the tests taking `ledger_url` run on SQLite and PostgreSQL (conftest.py)

AR = {"ar": "http://www.kith.no/xmlstds/apprec/2004-11-21"}
M22 = {"m22": "http://www.kith.no/xmlstds/eresept/m22/2013-10-08"}
HF = "983974678"  # Demo sykehus HF (Helse Sør-Øst RHF): its egenandel goes to INST:HF
PHV_UNIT, LAR_UNIT, TSB_UNIT = "700001", "700002", "700003"
KONSULTASJON, RADIOLOGI = "403.00", "287.00"  # the amounts of REGISTER on 2026-10-05

REGISTER = f"""
version = "test"
child_age_limit = 16
phv_tsb_age_limit = 26
lar_put_age_limit = 30
[exemptions]
B = "Barn under 16 år"
F = "Frikort"
[takster]
"201b" = "konsultasjon"
"899" = "radiologi"
[units]
"{PHV_UNIT}" = "PHV"
"{LAR_UNIT}" = "LAR"
"{TSB_UNIT}" = "TSB"
[personnel]
"1" = "Lege"
[rules]
guidance_procedures = ["WPBA25"]
indirect_contact_types = ["5"]
programme_contact_types = ["13"]
programme_codes = ["WWAA00"]
lar_dispensing_conditions = ["Z50.30"]
pasientbetaling_debitors = ["30"]
[[amount]]
kind = "konsultasjon"
kroner = "375.00"
valid_from = "2022-01-01"
valid_to = "2024-06-30"
[[amount]]
kind = "konsultasjon"
kroner = "{KONSULTASJON}"
valid_from = "2024-07-01"
[[amount]]
kind = "radiologi"
kroner = "{RADIOLOGI}"
valid_from = "2024-07-01"
"""

_n = iter(range(2000))


def fnr(born: str = "030383") -> str:
    return person_number(next(_n), born)


def child_fnr() -> str:
    """Born 2015-01-01: an individual number 500-999 places a year 00-39 in the 2000s."""
    return [x for x in _numbers("010115") if int(x[6:9]) >= 500][next(_n)]


def young_fnr() -> str:
    """Born 2001-01-01: turns 25 in 2026."""
    return [x for x in _numbers("010101") if int(x[6:9]) >= 500][next(_n)]


CONS = L("201b", KONSULTASJON)
OSMO = L("NOR05003", "6.96")  # a lab line (MB2) beside the egenandel
UID = "{E6E6A4DE-0000-4000-8000-0000000000%02d}"


def _b(*lines, **kw) -> B:
    kw.setdefault("fnr", fnr())
    kw.setdefault("consultation", True)
    return B(lines, **kw)


SAME = fnr()  # one patient with two group-programme bills (EG-08)

# (case id, rule id, fires?, claim); the first phase
CASES = [
    ("eg01-outpatient", "EG-01", False, C((_b(CONS, egenandel="F"),))),
    ("eg01-inpatient", "EG-01", True, C((_b(CONS, egenandel="F", basis="2"),))),
    ("eg02-exempt", "EG-02", False, C((_b(CONS, egenandel="F", uuid=UID % 1),))),
    ("eg02-radiology", "EG-02", False, C((_b(L("899", RADIOLOGI), egenandel="F"),))),
    ("eg02-no-code", "EG-02", True, C((_b(CONS),))),
    ("eg02-not-exemption", "EG-02", True, C((_b(CONS, egenandel="Q"),))),
    ("eg02-old-amount", "EG-02", True, C((_b(L("201b", "375.00"), egenandel="F"),))),
    ("eg03-exempt", "EG-03", False, C((_b(CONS, egenandel="F"),))),
    ("eg03-unpaid", "EG-03", True, C((_b(CONS, transaction_type="2", uuid=UID % 2),))),
    ("eg03-paid", "EG-03", True, C((_b(CONS, transaction_type="3", uuid=UID % 3),))),
    ("eg04-child", "EG-04", False, C((_b(CONS, egenandel="B", fnr=child_fnr()),))),
    ("eg04-adult", "EG-04", True, C((_b(CONS, egenandel="B"),))),
    ("eg04-child-paid", "EG-04", True, C((_b(CONS, transaction_type="3", fnr=child_fnr()),))),
    ("eg05-phv-adult", "EG-05", False, C((_b(CONS, egenandel="F"),), resh=PHV_UNIT)),
    (
        "eg05-phv-young",
        "EG-05",
        True,
        C((_b(CONS, egenandel="F", fnr=young_fnr()),), resh=PHV_UNIT),
    ),
    (
        "eg05-lar-young",
        "EG-05",
        True,
        C((_b(CONS, egenandel="F", fnr=young_fnr()),), resh=LAR_UNIT),
    ),
    ("eg06-doctor", "EG-06", False, C((_b(CONS, egenandel="F"),))),
    ("eg06-nurse", "EG-06", True, C((_b(CONS, egenandel="F", personnel="2"),))),
    ("eg07-patient", "EG-07", False, C((_b(CONS, egenandel="F"),))),
    ("eg07-indirect", "EG-07", True, C((_b(CONS, egenandel="F", contact_type="5"),))),
    ("eg08-one", "EG-08", False, C((_b(CONS, egenandel="F", contact_type="13"),))),
    (
        "eg08-second",
        "EG-08",
        True,
        C(
            (
                _b(CONS, egenandel="F", contact_type="13", fnr=SAME),
                _b(CONS, egenandel="F", contact_type="13", fnr=SAME, date="2026-10-06T09:30:00"),
            )
        ),
    ),
    ("eg09-other", "EG-09", False, C((_b(CONS, egenandel="F", diagnoses=("F11.2",)),))),
    ("eg09-lar", "EG-09", True, C((_b(CONS, egenandel="F", diagnoses=("Z50.30",)),))),
    ("eg10-egenandel", "EG-10", False, C((_b(CONS, egenandel="F"),))),
    ("eg10-pasientbetaling", "EG-10", True, C((_b(CONS, egenandel="F", debitor="30"),))),
    ("eg11-visit", "EG-11", False, C((_b(CONS, egenandel="F"),))),
    ("eg11-video", "EG-11", True, C((_b(CONS, egenandel="F", contact_type="6"),))),
    ("eg12-alone", "EG-12", False, C((_b(CONS, egenandel="F"),))),
    ("eg12-mixed", "EG-12", True, C((_b(CONS, L("NOR05003", "1.00"), egenandel="F"),))),
    ("eg03-lab-original", "EG-03", False, C((_b(OSMO, uuid=UID % 4),))),
]

# the second phase: corrections and credits of phase-one bills (never in the same file)
LATER = [
    ("eg03-correct-unpaid", "EG-03", True, C((_b(CONS, transaction_type="4", uuid=UID % 2),))),
    ("eg03-correct-paid", "EG-03", True, C((_b(CONS, transaction_type="4", uuid=UID % 3),))),
    # a lab bill had no egenandel: a correction cannot make one "paid"
    ("eg03-correct-lab", "EG-03", True, C((_b(CONS, transaction_type="4", uuid=UID % 4),))),
    # the recorded 'paid' egenandel credited: no money moves, the record is withdrawn
    ("eg03-credit-paid", "EG-03", False, C((_b(CONS, transaction_type="5", uuid=UID % 3),))),
    (
        "eg02-credit",
        "EG-02",
        False,
        C((_b(CONS, egenandel="F", transaction_type="5", uuid=UID % 1),)),
    ),
]
NOTES = {"EG-03", "EG-04", "EG-05", "EG-08", "EG-11", "EG-12"}  # may fire as a note only


def import_register(box, text: str, *extra: str) -> tuple[int, str]:
    source = box.root / "egenandel-in.toml"
    source.write_text(text, encoding="utf-8")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cli.main(
            ["--config", str(box.config_path), "tariff", "import", "--kind", "egenandel",
             str(source), *extra]
        )  # fmt: skip
    return code, out.getvalue()


def _apprecs(box) -> dict[str, etree._Element]:
    out = {}
    for path in box.outbox("apprec"):
        multipart, _ = mime.parse(path.read_bytes())
        soap = etree.fromstring(multipart.start.data)
        ref = soap.findtext(".//{*}RefToMessageId")
        out[ref] = etree.fromstring(multipart.attachments[0].data)
    return out


@pytest.fixture(scope="module")
def processed(tmp_path_factory) -> dict:
    box = make_sandbox(tmp_path_factory.mktemp("egenandel") / "sandbox")
    code, out = import_register(box, REGISTER, "--force")  # fewer codes than shipped
    assert code == 0, out
    for phase in (CASES, LATER):
        for case_id, _rule, _fires, claim in phase:
            box.drop(wrap_demo(msghead(claim), message_id=case_id), f"{case_id}.msg")
        box.process()
    ledger = SqliteLedger(box.paths.ledger)
    try:
        results = {c[0]: ledger.explain(c[0])[0] for c in CASES + LATER}
    finally:
        ledger.close()
    apprecs = _apprecs(box)
    for case_id in results:
        results[case_id]["apprec"] = apprecs[case_id]
    return {"box": box, "results": results}


def _fired(result: dict) -> set[str]:
    return {entry[0] for entry in result["trace"] if entry[3]}


@pytest.mark.parametrize(
    ("case_id", "rule_id", "fires", "claim"), CASES + LATER, ids=[c[0] for c in CASES + LATER]
)
def test_rule_case(processed, case_id, rule_id, fires, claim):
    """The rule fires exactly when it should, and the sender is told with its id."""
    result = processed["results"][case_id]
    apprec = result["apprec"]
    errors = [e.attrib for e in apprec.findall("ar:Error", AR)]
    if fires:
        assert rule_id in _fired(result), result["trace"]
        assert any(f"[{rule_id}]" in e["DN"] for e in errors), errors
    else:
        assert rule_id not in _fired(result), result["trace"]
        assert not any(f"[{rule_id}]" in e["DN"] for e in errors), errors


def _bill(processed, case_id: str, n: int = 0) -> dict:
    return processed["results"][case_id]["bills"][n]


def test_an_exempt_egenandel_is_paid_at_the_register_amount(processed):
    """EG-02: typeTransaksjon 1 + F on a consultation pays the register's amount on the
    service date to the institution itself, and is recorded as 'fritak'."""
    bill = _bill(processed, "eg02-exempt")
    assert bill["verdict"] == "approved" and Decimal(bill["approved"]) == Decimal(KONSULTASJON)
    assert bill["payee"] == f"INST:{HF}"
    (line,) = bill["lines"]
    assert line[1] == "201b" and line[3] == "egenandel"
    assert [(y, a, s) for y, a, s, _ in bill["egenandeler"]] == [(2026, KONSULTASJON, "fritak")]
    radiology = _bill(processed, "eg02-radiology")
    assert Decimal(radiology["approved"]) == Decimal(RADIOLOGI)


@pytest.mark.parametrize(
    "case_id",
    ["eg01-inpatient", "eg02-no-code", "eg02-not-exemption", "eg02-old-amount", "eg04-adult",
     "eg05-phv-young", "eg06-nurse", "eg07-indirect", "eg09-lar", "eg10-pasientbetaling"],
)  # fmt: skip
def test_a_refused_egenandel_pays_nothing_and_is_not_recorded(processed, case_id):
    bill = _bill(processed, case_id)
    assert bill["verdict"] == "rejected" and Decimal(bill["approved"]) == 0
    assert bill["egenandeler"] == []


@pytest.mark.parametrize("case_id", ["eg05-lar-young", "eg08-second", "eg11-video"])
def test_a_flag_does_not_withhold_the_egenandel(processed, case_id):
    """EG-05 (LAR/PUT), EG-08 (programme not identifiable), EG-11: told, still paid."""
    bills = processed["results"][case_id]["bills"]
    assert Decimal(bills[-1]["approved"]) == Decimal(KONSULTASJON)
    assert processed["results"][case_id]["apprec"].find("ar:Status", AR).get("V") == "3"


def test_unpaid_and_paid_are_recorded_without_refund(processed):
    """EG-03: 2 and 3 are approved at 0 and recorded per patient pseudonym."""
    for case_id, status, replaced in (
        ("eg03-unpaid", "ikke betalt", True),  # by the phase-two correction to paid
        ("eg03-paid", "betalt", True),  # its correction was refused, its credit not
    ):
        bill = _bill(processed, case_id)
        assert bill["verdict"] == "approved" and Decimal(bill["approved"]) == 0
        ((year, amount, recorded, active),) = bill["egenandeler"]
        assert (year, amount, recorded) == (2026, KONSULTASJON, status)
        assert active == (0 if replaced else 1)


def test_a_correction_turns_unpaid_into_paid_only(processed):
    """EG-03: 4 on an earlier 'ikke betalt' records 'betalt'; on an earlier 'betalt'
    it is rejected."""
    ok = _bill(processed, "eg03-correct-unpaid")
    assert ok["verdict"] == "approved"
    assert [(a, s, act) for _, a, s, act in ok["egenandeler"]] == [(KONSULTASJON, "betalt", 1)]
    for case_id in ("eg03-correct-paid", "eg03-correct-lab"):
        bad = _bill(processed, case_id)
        assert bad["verdict"] == "rejected" and bad["egenandeler"] == [], case_id


def test_a_credit_of_a_recorded_egenandel_moves_no_money(processed):
    """The credit of a 'betalt' egenandel (paid 0) is approved at 0, addressed to the
    institution as an egenandel, and withdraws the record from the frikort basis."""
    bill = _bill(processed, "eg03-credit-paid")
    assert bill["verdict"] == "approved" and Decimal(bill["approved"]) == 0
    db = processed["box"].db()
    try:
        rows = db.execute(
            "SELECT p.payee, p.approved, p.kind FROM payments p JOIN bills b ON b.id = p.bill_id"
            " JOIN messages m ON m.id = b.message_id WHERE m.ebxml_message_id = ?",
            ("eg03-credit-paid",),
        ).fetchall()
    finally:
        db.close()
    assert rows == [(f"INST:{HF}", "0", "egenandel")]


def test_a_credit_takes_the_egenandel_back_from_the_institution(processed):
    bill = _bill(processed, "eg02-credit")
    assert bill["verdict"] == "approved"
    assert Decimal(bill["approved"]) == -Decimal(KONSULTASJON)
    assert bill["payee"] == f"INST:{HF}"
    assert _bill(processed, "eg02-exempt")["egenandeler"][0][3] == 0  # no longer counted


def test_lab_lines_beside_an_egenandel_keep_their_own_rules(processed):
    """EG-12: the lab line with a wrong amount is rejected by LAB-09, the egenandel of
    the same bill is paid; the lab acceptance is unchanged."""
    bill = _bill(processed, "eg12-mixed")
    assert "LAB-09" in _fired(processed["results"]["eg12-mixed"])
    assert bill["verdict"] == "reduced" and Decimal(bill["approved"]) == Decimal(KONSULTASJON)
    lines = {line[1]: line for line in bill["lines"]}
    assert lines["NOR05003"][6] == "rejected" and lines["201b"][6] == "approved"


def _sum(box, key: str, year: int) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(
            ["--config", str(box.config_path), "egenandel", "sum", "--patient-key", key,
             "--year", str(year)]
        )  # fmt: skip
    assert code == 0
    return out.getvalue()


def test_a_message_like_the_official_example_end_to_end(tmp_path, capsys, ledger_url):
    """Done when (#21): bills with typeTransaksjon 2, 3 and 1 + kodeEgenandel F, as in
    the official NPR-BKM 0.78 example, for one patient: per-bill outcomes in the AppRec,
    the exempt egenandel paid to the institution at the register's amount in the next
    settlement (its line kind in the vedtak), 2 and 3 recorded as the frikort basis.
    On SQLite and on PostgreSQL (revision 0002 of the ledger)."""
    box = make_sandbox(tmp_path / "sandbox", ledger_url=ledger_url)
    assert import_register(box, REGISTER, "--force")[0] == 0
    patient = fnr()
    claim = C(
        (
            _b(CONS, transaction_type="2", fnr=patient, regning_nr="1"),
            _b(CONS, transaction_type="3", fnr=patient, regning_nr="2",
               date="2026-10-06T09:30:00"),
            _b(CONS, egenandel="F", fnr=patient, regning_nr="3", date="2026-10-07T09:30:00"),
        )
    )  # fmt: skip
    box.drop(wrap_demo(msghead(claim), message_id="official-like"), "official-like.msg")
    box.process()
    apprec = _apprecs(box)["official-like"]
    assert apprec.find("ar:Status", AR).get("V") == "3"  # EG-03 tells about 1 and 2
    told = {(e.get("OT"), e.get("V")) for e in apprec.findall("ar:Error", AR)}
    assert told == {("1", "9303"), ("2", "9303")}
    with contextlib.closing(open_ledger(config.load(box.config_path), readonly=True)) as ledger:
        (found,) = ledger.explain("official-like")
    outcome = {b["regning_nr"]: (b["verdict"], Decimal(b["approved"])) for b in found["bills"]}
    assert outcome == {
        "1": ("approved", Decimal(0)),
        "2": ("approved", Decimal(0)),
        "3": ("approved", Decimal(KONSULTASJON)),
    }
    # the frikort basis: 2 and 3 count, the exempt one is shown apart
    db = box.db()
    try:
        keys = {k for (k,) in db.execute("SELECT DISTINCT patient_key FROM egenandeler")}
        payments = db.execute("SELECT payee, approved, kind FROM payments ORDER BY id").fetchall()
    finally:
        db.close()
    (key,) = keys
    assert len(key) == 32 and patient not in key
    out = _sum(box, key, 2026)
    assert f"betalt: {KONSULTASJON}" in out and f"ikke betalt: {KONSULTASJON}" in out
    assert f"fritak: {KONSULTASJON}" in out
    basis = Decimal(KONSULTASJON) * 2
    assert f"frikort basis (betalt + ikke betalt): {basis:.2f}" in out
    assert ("INST:" + HF, KONSULTASJON, "egenandel") in payments
    # the next settlement pays the institution (not its RHF) the exempt egenandel
    capsys.readouterr()
    assert cli.main(["--config", str(box.config_path), "settle"]) == 0
    paid = []
    for path in box.outbox("vedtak"):
        multipart, _ = mime.parse(path.read_bytes())
        head = etree.fromstring(multipart.attachments[0].data)
        receiver = head.findtext(".//{*}Receiver/{*}Organisation/{*}Ident/{*}Id")
        for regning in head.iterfind(".//{*}Regning"):
            merknader = [m.text for m in regning.iterfind("{*}Merknad")]
            godkjent = Decimal(regning.find("{*}Godkjent").get("V"))
            paid.append((receiver, regning.findtext("{*}RegningsNr"), godkjent, merknader))
    assert {(r, nr, g) for r, nr, g, _ in paid} == {
        (HF, "1", Decimal(0)),
        (HF, "2", Decimal(0)),
        (HF, "3", Decimal(KONSULTASJON)),
    }
    assert all("Linjetype: egenandel" in m for *_, m in paid)
    for path in box.outbox("vedtak") + box.outbox("utbetaling"):  # valid M22 and M23
        capsys.readouterr()
        assert cli.main(["--config", str(box.config_path), "validate", str(path)]) == 0
        assert capsys.readouterr().out.strip() == "valid"
    capsys.readouterr()
    assert cli.main(["--config", str(box.config_path), "explain", "official-like"]) == 0
    shown = capsys.readouterr().out
    assert f"egenandel 2026: fritak {KONSULTASJON}" in shown
    assert f"egenandel 2026: ikke betalt {KONSULTASJON}" in shown
    assert patient not in shown


def test_the_register_is_validated_and_imported_all_or_nothing(tmp_path):
    box = make_sandbox(tmp_path / "sandbox")
    bad = REGISTER.replace(f'kroner = "{RADIOLOGI}"', 'kroner = "2.875"')
    code, out = import_register(box, bad)
    assert code == 1 and "amount[3].kroner" in out and "nothing written" in out
    assert not (box.paths.tariffs / egenandel.FILE).exists()
    code, out = import_register(box, REGISTER, "--dry-run")
    assert "Dry run" in out and not (box.paths.tariffs / egenandel.FILE).exists()
    assert code == 1 and "UNSAFE: it removes" in out  # fewer codes than the shipped one
    code, out = import_register(box, REGISTER, "--force")
    assert code == 0 and (box.paths.tariffs / egenandel.FILE).is_file(), out
    assert "removed amount: konsultasjon 386.00 kr from 2023-07-01" in out
    code, out = import_register(box, REGISTER, "--rates", "lab-rates.csv")
    assert code == 2 and "takes the register file only" in out
    overlap = REGISTER.replace('valid_to = "2024-06-30"', 'valid_to = "2024-07-01"')
    with pytest.raises(TariffError, match="overlaps"):
        egenandel.parse(overlap)
    with pytest.raises(TariffError, match=r"units\.x"):
        egenandel.parse(REGISTER.replace("[units]", '[units]\nx = "ICU"'))


def test_the_shipped_register_marks_the_latest_known_amounts():
    """The 2026 amounts are not in our sources: the 2024 ones stay in force, marked."""
    reg = egenandel.load(ROOT / "config" / "tariffs" / egenandel.FILE)
    from datetime import date

    for kind in egenandel.SERVICE_KINDS:
        found = reg.amount(kind, date(2026, 10, 5))
        assert found is not None and "latest known" in found.status
        assert found.valid_to is None and found.valid_from == date(2024, 7, 1)


def test_attacks_on_the_egenandel_money_pay_once_or_not_at_all(tmp_path):
    """Through the real pipeline: an exempt egenandel sent again (same uuid), a recorded
    'paid' egenandel sent again as exempt under a new uuid (same patient, takst and
    time), and an inflated amount. The institution is owed the register's amount once."""
    box = make_sandbox(tmp_path / "sandbox")
    assert import_register(box, REGISTER, "--force")[0] == 0
    patient, other = fnr(), fnr()
    exempt = _b(CONS, egenandel="F", fnr=patient, uuid=UID % 50)
    paid = _b(CONS, transaction_type="3", fnr=other, uuid=UID % 51)
    box.drop(wrap_demo(msghead(C((exempt, paid))), message_id="first"), "first.msg")
    box.process()
    attacks = {
        "again": C((exempt,)),
        "paid-as-exempt": C((_b(CONS, egenandel="F", fnr=other, uuid=UID % 52),)),
        "inflated": C((_b(L("201b", "4030.00"), egenandel="F"),)),
    }
    for name, claim in attacks.items():
        box.drop(wrap_demo(msghead(claim), message_id=name), f"{name}.msg")
    box.process()
    with contextlib.closing(SqliteLedger(box.paths.ledger, readonly=True)) as ledger:
        found = {name: ledger.explain(name)[0] for name in attacks}
    for name, rule_id in (("again", "COM-06"), ("paid-as-exempt", "COM-06"), ("inflated", "EG-02")):
        (bill,) = found[name]["bills"]
        assert bill["verdict"] == "rejected" and Decimal(bill["approved"]) == 0, name
        assert rule_id in _fired(found[name]), name
        assert bill["egenandeler"] == [], name
    db = box.db()
    try:
        (owed,) = db.execute(
            "SELECT sum(CAST(approved AS REAL)) FROM payments WHERE kind = 'egenandel'"
        ).fetchone()
    finally:
        db.close()
    assert Decimal(str(owed)) == Decimal(KONSULTASJON)


@pytest.mark.parametrize(
    ("ident", "born_on", "expected"),
    [
        ("01018012345", None, "1980-01-01"),  # individual 123: 1900-1999
        ("01011550012", None, "2015-01-01"),  # individual 500, year 15: 2000-2039
        ("41018012345", None, "1980-01-01"),  # D-nummer: day + 40
        ("01019975012", None, "1999-01-01"),  # individual 750 with year 99: 1900s
        ("01016055012", None, "1860-01-01"),  # individual 550 with year 60: 1800s
        (None, "2012-06-30", "2012-06-30"),  # AltIdent/@fodselsDato
    ],
)
def test_the_birth_date_eg04_and_eg05_read(ident, born_on, expected):
    """The century from the individual number (000-499: 1900s; 500-749 with year 54-99:
    1800s; 500-999 with year 00-39: 2000s; 900-999 with year 40-99: 1900s)."""
    from datetime import date

    from daemon.domain import Bill, Episode, Patient
    from daemon.rules.egenandel import age_on, birth_date

    patient = Patient(ident, "FNR" if ident else None, born_on, None)
    episode = Episode("1", "1", "0301", patient, ("1",), (), ())
    bill = Bill("1", None, "1", "2026-10-05T09:30:00", "1", Decimal(0), "1", "B", episode)
    assert birth_date(bill) == date.fromisoformat(expected)
    assert age_on(date(2015, 1, 1), date(2031, 1, 1)) == 16
    assert age_on(date(2015, 1, 2), date(2031, 1, 1)) == 15


def test_tariff_show_egenandel_prints_the_register_and_the_day(capsys):
    """`tariff show egenandel --date`: the shipped amounts with their status."""
    assert cli.main(["tariff", "show", "egenandel", "--date", "2023-08-01",
                     "--dir", str(ROOT / "config" / "tariffs")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "konsultasjon    403.00 kr  2024-07-01–…  [latest known" in out
    assert "on 2023-08-01: konsultasjon 386.00 kr (from 2023-07-01)" in out
    assert "on 2023-08-01: radiologi 275.00 kr (from 2023-07-01)" in out


def test_egenandel_line_rules_are_not_evaluated_on_other_lines():
    """EG-01..11 are declared for lines of kind `egenandel`: a lab line is judged by the
    other line rules only (the rules engine's speed on lab claims is unchanged), an
    egenandel line by every line rule; only a line rule may be restricted so."""
    from daemon.rules import base
    from daemon.rules.decide import RULEBOOK

    eg = {f.rule.id for f in RULEBOOK.line if f.rule.kinds == ("egenandel",)}
    assert eg == {f"EG-{n:02d}" for n in range(1, 12)}
    assert not eg & {f.rule.id for f in RULEBOOK.lines_for("takst")}
    assert set(RULEBOOK.lines_for("egenandel")) == set(RULEBOOK.line)
    with pytest.raises(ValueError, match="only a line rule"):
        base.rule(id="X", scope="bill", source="s", number="1", text="t", kinds=("a",))


def test_a_streamed_claim_reads_and_judges_its_egenandel_as_the_whole_path(tmp_path):
    """A claim over `stream_above_bytes` is read as a stream and judged in chunks: its
    egenandel takster are egenandel lines there too (the register's takster reach the
    streamed reader), with the same outcomes, payments and egenandel records."""
    patient = fnr()
    bills = [
        _b(CONS, transaction_type="2", fnr=patient, regning_nr="1"),
        _b(CONS, transaction_type="3", fnr=patient, regning_nr="2", date="2026-10-06T09:30:00"),
        _b(CONS, egenandel="F", fnr=patient, regning_nr="3", date="2026-10-07T09:30:00"),
    ]
    bills += [_b(CONS, OSMO, egenandel="F", regning_nr=str(n)) for n in range(4, 12)]
    raw = wrap_demo(msghead(C(tuple(bills))), message_id="streamed-egenandel")
    outcomes = []
    for name, streamed in (("whole", False), ("streamed", True)):
        box = make_sandbox(tmp_path / name)
        assert import_register(box, REGISTER, "--force")[0] == 0
        if streamed:
            text = box.config_path.read_text()
            limits = "stream_above_bytes = 1024\nstream_chunk_bills = 3\n"
            box.config_path.write_text(text.replace("[intake]\n", f"[intake]\n{limits}", 1))
        log = io.StringIO()
        logs.configure("info", log)
        try:
            box.drop(raw, "big.msg")
            box.process()
        finally:
            logs.configure("info")
        assert ('"event": "streaming"' in log.getvalue()) is streamed
        db = box.db()
        try:
            outcomes.append(
                (
                    db.execute(
                        "SELECT regning_nr, verdict, approved FROM bills ORDER BY id"
                    ).fetchall(),
                    db.execute(
                        "SELECT b.regning_nr, l.category, l.approved FROM bill_lines l"
                        " JOIN bills b ON b.id = l.bill_id ORDER BY b.id, l.line"
                    ).fetchall(),
                    db.execute("SELECT payee, approved, kind FROM payments ORDER BY id").fetchall(),
                    db.execute(
                        "SELECT regning_nr, year, amount, status FROM egenandeler ORDER BY id"
                    ).fetchall(),
                )
            )
        finally:
            db.close()
    whole, streamed = outcomes
    assert streamed == whole
    categories = {(nr, cat) for nr, cat, _ in whole[1]}
    assert ("3", "egenandel") in categories and ("4", "egenandel") in categories
    statuses = sorted(status for *_, status in whole[3])
    assert statuses == ["betalt", "fritak", *["fritak"] * 8, "ikke betalt"]
    assert ("INST:" + HF, KONSULTASJON, "egenandel") in whole[2]


def test_rekey_patients_rekeys_the_egenandel_register(tmp_path):
    """`kravmottak rekey-patients` (old unkeyed pseudonyms → keyed ones, from the archived
    originals) re-keys the egenandel register too: the frikort basis follows the patient."""
    box = make_sandbox(tmp_path / "sandbox")
    assert import_register(box, REGISTER, "--force")[0] == 0
    patient = fnr()
    claim = C((_b(CONS, transaction_type="3", fnr=patient, regning_nr="1"),))
    box.drop(wrap_demo(msghead(claim), message_id="rekey-eg"), "rekey-eg.msg")
    box.process()
    old = legacy_pseudonym(patient)
    with contextlib.closing(box.db()) as db, db:  # the ledger as the old code wrote it
        for table in ("bills", "egenandeler"):
            db.execute(f"UPDATE {table} SET patient_key = ?", (old,))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["--config", str(box.config_path), "rekey-patients"]) == 0
    new = pseudonym(box.paths.patient_secret.read_bytes().strip(), patient)
    with contextlib.closing(box.db()) as db:
        keys = {k for (k,) in db.execute("SELECT patient_key FROM egenandeler")}
    assert keys == {new}
    assert f"betalt: {KONSULTASJON}" in _sum(box, new, 2026)
    assert f"betalt: {KONSULTASJON}" not in _sum(box, old, 2026)


def test_the_frikort_basis_adds_every_egenandel_of_the_year(tmp_path):
    """`egenandel sum`: two unpaid and one paid consultation of one patient in 2026
    (each a bill of its own, on days of their own) add up per status; a credited one
    no longer counts."""
    box = make_sandbox(tmp_path / "sandbox")
    assert import_register(box, REGISTER, "--force")[0] == 0
    patient = fnr()
    bills = [
        _b(CONS, transaction_type="2", fnr=patient, date="2026-10-05T09:00:00", uuid=UID % 60),
        _b(CONS, transaction_type="2", fnr=patient, date="2026-10-06T09:00:00", uuid=UID % 61),
        _b(CONS, transaction_type="3", fnr=patient, date="2026-10-07T09:00:00", uuid=UID % 62),
        _b(CONS, transaction_type="2", fnr=patient, date="2026-10-08T09:00:00", uuid=UID % 63),
    ]
    box.drop(wrap_demo(msghead(C(tuple(bills))), message_id="year"), "year.msg")
    box.process()
    credit = _b(CONS, transaction_type="5", fnr=patient, date=bills[3].date, uuid=UID % 63)
    box.drop(wrap_demo(msghead(C((credit,))), message_id="credit"), "credit.msg")
    box.process()
    with box.db() as db:
        ((key,),) = db.execute("SELECT DISTINCT patient_key FROM egenandeler").fetchall()
    out = _sum(box, key, 2026)
    unpaid, paid = Decimal(KONSULTASJON) * 2, Decimal(KONSULTASJON)
    assert out.splitlines()[1:] == [
        f"  betalt: {paid:.2f}",
        f"  ikke betalt: {unpaid:.2f}",
        "  fritak: 0.00",
        f"  frikort basis (betalt + ikke betalt): {unpaid + paid:.2f}",
    ]


# What `explain` shows for each rule that fired: the values of the claim the rule judged
# (its typeTransaksjon, kodeEgenandel and takst, and what it compared them with),
# written here from each case above; the register amount is REGISTER's KONSULTASJON.
TRACE = {
    "eg01-inpatient": ("EG-01", [(1, {"kravGrunnlag": "2"})]),
    "eg02-no-code": (
        "EG-02",
        [(1, {"typeTransaksjon": "1", "kodeEgenandel": "", "takst": "201b"})],
    ),
    "eg02-not-exemption": (
        "EG-02",
        [(1, {"typeTransaksjon": "1", "kodeEgenandel": "Q", "takst": "201b"})],
    ),
    "eg02-old-amount": (
        "EG-02",
        [
            (
                1,
                {
                    "typeTransaksjon": "1",
                    "kodeEgenandel": "F",
                    "takst": "201b",
                    "sats": KONSULTASJON,
                },
            )
        ],
    ),
    "eg03-unpaid": ("EG-03", [(1, {"typeTransaksjon": "2", "kodeEgenandel": "", "takst": "201b"})]),
    "eg03-paid": ("EG-03", [(1, {"typeTransaksjon": "3", "kodeEgenandel": "", "takst": "201b"})]),
    "eg04-adult": (
        "EG-04",
        [
            (
                1,
                {
                    "typeTransaksjon": "1",
                    "kodeEgenandel": "B",
                    "takst": "201b",
                    "aldersgrense": "16",
                    "barn": "false",
                },
            )
        ],
    ),
    "eg04-child-paid": (
        "EG-04",
        [
            (
                1,
                {
                    "typeTransaksjon": "3",
                    "kodeEgenandel": "",
                    "takst": "201b",
                    "aldersgrense": "16",
                    "barn": "true",
                },
            )
        ],
    ),
    "eg05-phv-young": (
        "EG-05",
        [
            (
                1,
                {
                    "typeTransaksjon": "1",
                    "kodeEgenandel": "F",
                    "takst": "201b",
                    "enhet": "PHV",
                    "fyller": "25",
                },
            )
        ],
    ),
    "eg05-lar-young": (
        "EG-05",
        [
            (
                1,
                {
                    "typeTransaksjon": "1",
                    "kodeEgenandel": "F",
                    "takst": "201b",
                    "enhet": "LAR",
                    "fyller": "25",
                },
            )
        ],
    ),
    "eg06-nurse": (
        "EG-06",
        [(1, {"typeTransaksjon": "1", "kodeEgenandel": "F", "takst": "201b", "polUtforende": "2"})],
    ),
    "eg07-indirect": (
        "EG-07",
        [(1, {"typeTransaksjon": "1", "kodeEgenandel": "F", "takst": "201b"})],
    ),
    "eg08-second": (
        "EG-08",
        [(1, {"typeTransaksjon": "1", "kodeEgenandel": "F", "takst": "201b"})],
    ),
    "eg09-lar": (
        "EG-09",
        [
            (
                1,
                {
                    "typeTransaksjon": "1",
                    "kodeEgenandel": "F",
                    "takst": "201b",
                    "hovedtilstand": "Z5030",
                },
            )
        ],
    ),
    "eg10-pasientbetaling": (
        "EG-10",
        [(1, {"typeTransaksjon": "1", "kodeEgenandel": "F", "takst": "201b", "debitor": "30"})],
    ),
    "eg11-video": (
        "EG-11",
        [(1, {"typeTransaksjon": "1", "kodeEgenandel": "F", "takst": "201b", "kontaktType": "6"})],
    ),
    "eg12-mixed": ("EG-12", [(0, {"egenandel": "1", "andre": "1"})]),
    "eg03-correct-unpaid": (
        "EG-03",
        [(1, {"typeTransaksjon": "4", "kodeEgenandel": "", "takst": "201b"})],
    ),
    "eg03-correct-paid": (
        "EG-03",
        [(1, {"typeTransaksjon": "4", "kodeEgenandel": "", "takst": "201b"})],
    ),
    "eg03-correct-lab": (
        "EG-03",
        [(1, {"typeTransaksjon": "4", "kodeEgenandel": "", "takst": "201b"})],
    ),
}


def test_every_rejecting_case_has_its_trace_written_down():
    firing = [c[0] for c in CASES + LATER if c[2]]
    assert sorted(TRACE) == sorted(firing)


@pytest.mark.parametrize("case_id", sorted(TRACE))
def test_the_trace_records_what_the_rule_saw(processed, case_id):
    rule_id, expected = TRACE[case_id]
    trace = processed["results"][case_id]["trace"]
    assert [(e[2], dict(e[4])) for e in trace if e[0] == rule_id and e[3]] == expected


def test_an_exemption_without_a_code_is_told_why_it_pays_nothing(processed):
    """EG-02's remark names what is missing (#20: its text could change unseen)."""
    errors = [e.get("DN") for e in processed["results"]["eg02-no-code"]["apprec"].iter("{*}Error")]
    said = (
        "linje 1 (201b): Refusjon av egenandel krever fritakskode og egenandelen for "
        "tjenesten på datoen: regning uten egenandel og uten kodeEgenandel gir 0 [EG-02]"
    )
    assert said in errors, errors


@pytest.mark.parametrize("unit", [PHV_UNIT, TSB_UNIT], ids=["phv", "tsb"])
def test_eg08_is_the_somatic_units_rule(tmp_path, unit):
    """A PHV or TSB unit's two programme bills for one patient: EG-08 (the somatic
    units' limit) says nothing; the same two bills at a somatic unit get its note."""
    box = make_sandbox(tmp_path / "sandbox")
    assert import_register(box, REGISTER, "--force")[0] == 0
    for resh, message_id in ((unit, "mental"), (None, "somatic")):
        who = fnr()
        bills = (
            _b(CONS, egenandel="F", contact_type="13", fnr=who),
            _b(CONS, egenandel="F", contact_type="13", fnr=who, date="2026-10-06T09:30:00"),
        )
        claim = C(bills, resh=resh) if resh else C(bills)
        box.drop(wrap_demo(msghead(claim), message_id=message_id), f"{message_id}.msg")
    box.process()
    ledger = SqliteLedger(box.paths.ledger)
    try:
        fired = {m: _fired(ledger.explain(m)[0]) for m in ("mental", "somatic")}
    finally:
        ledger.close()
    assert "EG-08" not in fired["mental"] and "EG-08" in fired["somatic"]
