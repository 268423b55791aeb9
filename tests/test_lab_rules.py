"""Every common and lab rule, approving and rejecting, through the whole pipeline.

Each case is a real NPR-behandlerkravmelding (tests/claims.py) wrapped in ebMS,
dropped into one sandbox and processed by the real intake. The verdicts are read back
from the ledger (`explain`) and from the AppRec the sender gets.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from lxml import etree

from daemon.transport import mime
from tests.claims import DEMO_HF, B, C, I, L, P, msghead, person_number, registry
from tests.conftest import Sandbox, make_sandbox, wrap_demo

AR = {"ar": "http://www.kith.no/xmlstds/apprec/2004-11-21"}
HF = "983974678"  # Demo sykehus HF (hf, Helse Sør-Øst RHF)
GEN_LAB = "999000111"  # a medical-genetics lab not owned by an RHF
PRIVATE = "999000222"  # a private lab with driftsavtale (private rates)
HF_GEN = "999000333"  # an HF that also runs an approved genetics lab
RADIOLOGY = "999000444"  # a radiology institute: may not claim lab
OTHER_HF = "999000555"  # an HF that has not named the demo partner as its sender

INSTITUTIONS = registry(
    DEMO_HF,
    I(GEN_LAB, "Genetikklab AS", "", ("genetics-lab",)),
    I(PRIVATE, "Privatlab AS", "Helse Vest RHF", ("private-driftsavtale",)),
    I(HF_GEN, "Universitetssykehus HF", "Helse Nord RHF", ("hf", "genetics-lab")),
    I(RADIOLOGY, "Røntgeninstitutt AS", "Helse Midt-Norge RHF", ("radiology",)),
    I(OTHER_HF, "Annet sykehus HF", "Helse Vest RHF", sender=False),
)

# (case id, rule id, fires?, claim); every bill has its own invented patient
_n = iter(range(1000))


def _b(*lines, **kw) -> B:
    kw.setdefault("fnr", person_number(next(_n)))
    return B(lines, **kw)


INR = L("NPU01685", "23.18", 2)  # P-INR, MB6, starred
OSMO = L("NOR05003", "6.96")  # Us-Osmolalitet, MB2
HPV = L("NPU57845", "191.67")  # HPV DNA (liste), MM6
CYP2D6 = L("NPU19308", "155.17")  # DNA-CYP2D6-gen, KF5, pharmacogenetic
SANGER = L("NOR25437", "2724.87")  # DNA-Sangersekvensering, MG5

CASES = [
    ("com04-claim-ok", "COM-04", False, C((_b(OSMO),))),
    ("com04-claim-sum", "COM-04", True, C((_b(OSMO),), krav_sum="99.00")),
    ("com04-claim-count", "COM-04", True, C((_b(OSMO),), krav_count=2)),
    ("com04-bill-ok", "COM-04", False, C((_b(INR, OSMO),))),
    ("com04-bill-sum", "COM-04", True, C((_b(OSMO, sum="10.00"),))),
    ("com04-bill-no-episode", "COM-04", True, C((_b(OSMO, no_episode=True, sum="6.96"),))),
    ("com05-ok", "COM-05", False, C((_b(OSMO),))),
    ("com05-bad-fnr", "COM-05", True, C((_b(OSMO, fnr="15057810015"),))),
    ("com05-no-fnr", "COM-05", False, C((_b(OSMO, fnr=None),))),
    (
        "com06-same-file",
        "COM-06",
        True,
        C(
            (
                _b(OSMO, uuid="{0DDBA11D-0000-4000-8000-000000000001}"),
                _b(OSMO, uuid="{0DDBA11D-0000-4000-8000-000000000001}"),
            )
        ),
    ),
    (
        "com07-credit-same-file",
        "COM-07",
        True,
        C(
            (
                _b(OSMO, uuid="{C0FFEE00-0000-4000-8000-000000000001}"),
                _b(OSMO, uuid="{C0FFEE00-0000-4000-8000-000000000001}", transaction_type="5"),
            )
        ),
    ),
    (
        "com07-credit-unknown",
        "COM-07",
        True,
        C((_b(OSMO, uuid="{C0FFEE00-0000-4000-8000-0000000000FF}", transaction_type="5"),)),
    ),
    ("com08-ok", "COM-08", False, C((_b(OSMO, date="2026-06-01T10:00:00"),))),
    ("com08-future", "COM-08", True, C((_b(OSMO, date="2026-12-01T10:00:00"),))),
    ("com08-too-old", "COM-08", True, C((_b(OSMO, date="2026-05-01T10:00:00"),))),
    ("com09-ok", "COM-09", False, C((_b(OSMO),))),
    ("com09-unknown", "COM-09", True, C((_b(OSMO),), institution="111222333")),
    ("com09-wrong-kind", "COM-09", True, C((_b(OSMO),), institution=RADIOLOGY)),
    ("com09-not-our-sender", "COM-09", True, C((_b(OSMO),), institution=OTHER_HF)),
    ("lab01-ok", "LAB-01", False, C((_b(OSMO),))),
    ("lab01-inpatient", "LAB-01", True, C((_b(OSMO, basis="2"),))),
    ("lab01-admitted", "LAB-01", True, C((_b(OSMO, basis="3"),))),
    ("lab02-ok", "LAB-02", False, C((_b(OSMO),))),
    ("lab02-unknown", "LAB-02", True, C((_b(L("NPU99999", "6.96")),))),
    ("lab02-expired", "LAB-02", True, C((_b(L("NOR05043", "12.61")),))),
    ("lab02-patologi", "LAB-02", True, C((_b(L("NOR25034", "100.00")),))),
    ("lab03-repeats", "LAB-03", False, C((_b(L("NPU21747", "463.39", 3)),))),
    ("lab03-zero", "LAB-03", True, C((_b(L("NOR05003", "6.96", 0), sum="0.00"),))),
    ("lab04-genetics-lab", "LAB-04", False, C((_b(SANGER),), institution=GEN_LAB)),
    ("lab04-not-genetics", "LAB-04", True, C((_b(SANGER),))),
    ("lab05-pharmacogenetic", "LAB-05", False, C((_b(CYP2D6),), institution=GEN_LAB)),
    ("lab05-other-field", "LAB-05", True, C((_b(OSMO),), institution=GEN_LAB)),
    ("lab05-hf-with-genetics", "LAB-05", False, C((_b(OSMO),), institution=HF_GEN)),
    ("lab06-mg-only", "LAB-06", False, C((_b(SANGER),), institution=HF_GEN)),
    ("lab06-mixed", "LAB-06", True, C((_b(SANGER, OSMO),), institution=HF_GEN)),
    ("lab07-lab-only", "LAB-07", False, C((_b(INR),))),
    ("lab07-consultation", "LAB-07", True, C((_b(INR, consultation=True),))),
    ("lab08-screening", "LAB-08", False, C((_b(HPV, diagnoses=("Z12.4",)),))),
    ("lab08-follow-up", "LAB-08", False, C((_b(HPV, diagnoses=("N871",)),))),
    ("lab08-no-criteria", "LAB-08", True, C((_b(HPV, diagnoses=("J069",)),))),
    ("lab09-ok", "LAB-09", False, C((_b(OSMO),))),
    ("lab09-wrong", "LAB-09", True, C((_b(L("NOR05003", "7.00")),))),
    ("lab09-private-rate", "LAB-09", False, C((_b(L("NOR05003", "6.45")),), institution=PRIVATE)),
    ("lab09-state-rate-at-private", "LAB-09", True, C((_b(OSMO),), institution=PRIVATE)),
    ("scope01-lab", "SCOPE-01", False, C((_b(OSMO),))),
    ("scope01-ncsp-surgery", "SCOPE-01", True, C((_b(P("JFB00", "100.00", "K")),))),
]


@pytest.fixture(scope="module")
def processed(tmp_path_factory) -> dict[str, dict]:
    """All cases dropped into one sandbox and processed in one pass."""
    from daemon.ledger.sqlite import SqliteLedger

    box = make_sandbox(tmp_path_factory.mktemp("lab") / "sandbox", INSTITUTIONS)
    messages = {}
    for case_id, _rule, _fires, claim in CASES:
        box.drop(wrap_demo(msghead(claim), message_id=case_id), f"{case_id}.msg")
        messages[case_id] = claim.msg_id
    box.process()
    ledger = SqliteLedger(box.paths.ledger)
    try:
        results = {case_id: ledger.explain(case_id)[0] for case_id in messages}
    finally:
        ledger.close()
    apprecs = {}
    for path in box.outbox("apprec"):
        multipart, _ = mime.parse(path.read_bytes())
        soap = etree.fromstring(multipart.start.data)
        ref = soap.findtext(
            ".//{http://www.oasis-open.org/committees/ebxml-msg/schema/msg-header-2_0.xsd}"
            "RefToMessageId"
        )
        apprecs[ref] = etree.fromstring(multipart.attachments[0].data)
    for case_id in results:
        results[case_id]["apprec"] = apprecs[case_id]
    return results


def _fired(result: dict) -> set[str]:
    return {entry[0] for entry in result["trace"] if entry[3]}


@pytest.mark.parametrize(("case_id", "rule_id", "fires", "claim"), CASES, ids=[c[0] for c in CASES])
def test_rule_case(processed, case_id, rule_id, fires, claim):
    """The rule fires exactly when it should; what the sender sees says so."""
    result = processed[case_id]
    apprec = result["apprec"]
    status = apprec.find("ar:Status", AR).get("V")
    errors = [e.attrib for e in apprec.findall("ar:Error", AR)]
    if fires:
        assert rule_id in _fired(result), result["trace"]
        assert any(f"[{rule_id}]" in e["DN"] for e in errors), errors
        assert status in ("2", "3")
    else:
        assert rule_id not in _fired(result)
        assert status == "1", errors
        bills = result["bills"]
        assert all(b["verdict"] == "approved" for b in bills)
        assert sum(Decimal(b["approved"]) for b in bills) == sum(b.total() for b in claim.bills)


def test_claim_level_finding_refuses_the_message(processed):
    """COM-04 on the Krav: AppRec status 2, no bill decided."""
    result = processed["com04-claim-sum"]
    assert result["apprec"].find("ar:Status", AR).get("V") == "2"
    assert result["bills"] == []


def test_repeats_are_paid_per_repetition(processed):
    """LAB-03: antall 3 of NPU21747 (IT8, 463.39) pays 3 × 463.39."""
    (bill,) = processed["lab03-repeats"]["bills"]
    assert Decimal(bill["approved"]) == Decimal("1390.17")
    (line,) = bill["lines"]
    assert line[1:4] == ("NPU21747", 3, "IT8")


def test_rejected_line_reduces_the_bill(processed):
    """LAB-07 rejects the starred line only; a rejected lone line rejects the bill."""
    (bill,) = processed["lab07-consultation"]["bills"]
    assert bill["verdict"] == "rejected" and Decimal(bill["approved"]) == 0
    remark = [r for r in bill["remarks"] if r[0] == "LAB-07"]
    assert remark and remark[0][3] == 1  # line 1


def test_payee_is_the_rhf_or_the_institution(processed):
    """LAB-10: paid to the owning/contracting RHF; a lab without an RHF is paid directly."""
    assert processed["lab09-ok"]["bills"][0]["payee"] == "RHF:Helse Sør-Øst RHF"
    assert processed["lab04-genetics-lab"]["bills"][0]["payee"] == f"INST:{GEN_LAB}"
    assert processed["lab09-private-rate"]["bills"][0]["payee"] == "RHF:Helse Vest RHF"
    assert processed["lab09-wrong"]["bills"][0]["payee"] is None  # nothing to pay


# --------------------------------------------------------------------------- across messages


def _send(sandbox: Sandbox, claim: C, message_id: str) -> dict:
    from daemon.ledger.sqlite import SqliteLedger

    sandbox.drop(wrap_demo(msghead(claim), message_id=message_id))
    sandbox.process()
    ledger = SqliteLedger(sandbox.paths.ledger)
    try:
        return ledger.explain(message_id)[0]
    finally:
        ledger.close()


def test_com06_bill_paid_in_an_earlier_message_is_a_duplicate(sandbox):
    """COM-06 across messages: same uuid again, or same patient + codes + time again."""
    first = _b(OSMO, uuid="{ABCDEF00-0000-4000-8000-000000000001}")
    assert _send(sandbox, C((first,)), "dup-a")["bills"][0]["verdict"] == "approved"
    same_uuid = _send(sandbox, C((first,)), "dup-b")
    assert same_uuid["bills"][0]["verdict"] == "rejected"
    assert [r[0] for r in same_uuid["bills"][0]["remarks"]] == ["COM-06"]
    same_service = B(first.lines, fnr=first.fnr, date=first.date)  # new uuid, same service
    again = _send(sandbox, C((same_service,)), "dup-c")
    assert [r[0] for r in again["bills"][0]["remarks"]] == ["COM-06"]


def test_com06_rejected_bill_may_be_sent_again(sandbox):
    """A bill that was rejected was never paid: sending it again, corrected, is no duplicate."""
    wrong = _b(L("NOR05003", "9.99"), uuid="{ABCDEF00-0000-4000-8000-000000000002}")
    assert _send(sandbox, C((wrong,)), "fix-a")["bills"][0]["verdict"] == "rejected"
    fixed = B((OSMO,), uuid=wrong.uuid, fnr=wrong.fnr, date=wrong.date)
    assert _send(sandbox, C((fixed,)), "fix-b")["bills"][0]["verdict"] == "approved"


def test_com07_credit_of_an_earlier_paid_bill_reverses_it(sandbox):
    """COM-07: a credit in a later file that names a paid bill is approved, negative."""
    original = _b(OSMO, INR, uuid="{ABCDEF00-0000-4000-8000-000000000003}")
    paid = _send(sandbox, C((original,)), "credit-a")["bills"][0]
    assert Decimal(paid["approved"]) == Decimal("53.32")
    credit = B(original.lines, uuid=original.uuid, fnr=original.fnr, transaction_type="5")
    result = _send(sandbox, C((credit,)), "credit-b")
    (bill,) = result["bills"]
    assert bill["verdict"] == "approved" and Decimal(bill["approved"]) == Decimal("-53.32")
    assert bill["remarks"] == []


# --------------------------------------------------------------------------- a big claim


def test_hundred_bills_of_mixed_lines(sandbox):
    """100 bills, every fifth with a bad line: status 3, one Error per rejected line with
    its rule and bill number, and the approved total of the good lines exactly."""
    bills = []
    expected_errors = []
    expected_total = Decimal("0")
    for i in range(100):
        nr = str(5000 + i)
        if i % 5 == 0:  # a wrong amount on the second line: bill reduced
            bills.append(_b(OSMO, L("NPU01685", "20.00", 2), regning_nr=nr))
            expected_errors.append(("9109", nr))
            expected_total += Decimal("6.96")
        elif i % 5 == 1:  # an unknown code: the only line, bill rejected
            bills.append(_b(L("NPU00000", "6.96"), regning_nr=nr))
            expected_errors.append(("9102", nr))
        else:
            bills.append(_b(OSMO, INR, regning_nr=nr))
            expected_total += Decimal("53.32")
    sandbox.drop(wrap_demo(msghead(C(tuple(bills))), message_id="hundred"))
    sandbox.process()
    (path,) = sandbox.outbox("apprec")
    apprec = etree.fromstring(mime.parse(path.read_bytes())[0].attachments[0].data)
    assert apprec.find("ar:Status", AR).get("V") == "3"
    found = sorted((e.get("V"), e.get("OT")) for e in apprec.findall("ar:Error", AR))
    assert found == sorted(expected_errors)
    from daemon.ledger.sqlite import SqliteLedger

    ledger = SqliteLedger(sandbox.paths.ledger)
    try:
        (result,) = ledger.explain("hundred")
    finally:
        ledger.close()
    assert sum(Decimal(b["approved"]) for b in result["bills"]) == expected_total
    verdicts = [b["verdict"] for b in result["bills"]]
    assert verdicts.count("reduced") == 20 and verdicts.count("rejected") == 20


def test_explain_prints_bills_lines_rules_and_amounts(sandbox, capsys):
    """`kravmottak explain ID`: what a tester asks 'why?' about."""
    from daemon import cli

    claim = C((_b(OSMO, L("NPU01685", "20.00", 2), regning_nr="777"),))
    sandbox.drop(wrap_demo(msghead(claim), message_id="why-1"))
    sandbox.process()
    capsys.readouterr()
    assert cli.main(["--config", str(sandbox.config_path), "explain", "why-1"]) == 0
    out = capsys.readouterr().out
    assert "bill 777 (type 1" in out and "reduced, claimed 46.96, approved 6.96" in out
    assert "line 2: NPU01685 x2 [MB6] claimed 40.00 approved 0 rejected" in out
    assert "fired: LAB-09(category=MB6,claimed=20.00,rate=23.18)" in out
    assert "remark 9109 LAB-09 line 2" in out and "rule evaluations, 1 fired" in out
    assert "paid to RHF:Helse Sør-Øst RHF" in out
    assert cli.main(["--config", str(sandbox.config_path), "explain", "nope"]) == 1


# --------------------------------------------------------------------------- money


def _net(sandbox: Sandbox, uuid: str) -> Decimal:
    import sqlite3

    with sqlite3.connect(sandbox.paths.ledger) as db:
        rows = db.execute(
            "SELECT approved FROM bills WHERE uuid = ? AND verdict IN ('approved', 'reduced')",
            (uuid,),
        ).fetchall()
    return sum((Decimal(r[0]) for r in rows), Decimal("0"))


def test_corrections_and_credits_never_pay_more_than_once(sandbox):
    """Original, corrections and credits in a row: the net paid is never more than the
    bill is worth, a second credit is refused, and a correction after a credit too."""
    uid = "{ABCDEF00-0000-4000-8000-0000000000AA}"
    original = _b(OSMO, INR, uuid=uid)
    _send(sandbox, C((original,)), "m-1")
    assert _net(sandbox, uid) == Decimal("53.32")
    correction = B(original.lines, uuid=uid, fnr=original.fnr, transaction_type="4")
    (bill,) = _send(sandbox, C((correction,)), "m-2")["bills"]
    assert bill["verdict"] == "approved" and Decimal(bill["approved"]) == 0  # no change
    assert _net(sandbox, uid) == Decimal("53.32")
    smaller = B((OSMO,), uuid=uid, fnr=original.fnr, transaction_type="4")
    (bill,) = _send(sandbox, C((smaller,)), "m-3")["bills"]
    assert Decimal(bill["approved"]) == Decimal("-46.36")  # pays back the difference
    assert _net(sandbox, uid) == Decimal("6.96")
    credit = B((), uuid=uid, fnr=None, transaction_type="5", no_episode=True, sum="0")
    (bill,) = _send(sandbox, C((credit,)), "m-4")["bills"]
    assert Decimal(bill["approved"]) == Decimal("-6.96")  # what was paid, not its lines
    assert _net(sandbox, uid) == 0
    for again in ("m-5", "m-6"):
        kind = "5" if again == "m-5" else "4"
        retry = B(original.lines, uuid=uid, fnr=original.fnr, transaction_type=kind)
        (bill,) = _send(sandbox, C((retry,)), again)["bills"]
        assert bill["verdict"] == "rejected" and [r[0] for r in bill["remarks"]] == ["COM-07"]
    assert _net(sandbox, uid) == 0


def test_credit_of_a_reduced_bill_reverses_what_was_paid(sandbox):
    """A bill reduced to 6.96 (its starred line rejected) is credited −6.96, not −53.32."""
    uid = "{ABCDEF00-0000-4000-8000-0000000000BB}"
    original = _b(OSMO, INR, uuid=uid, consultation=True)
    (bill,) = _send(sandbox, C((original,)), "r-1")["bills"]
    assert bill["verdict"] == "reduced" and Decimal(bill["approved"]) == Decimal("6.96")
    credit = B(original.lines, uuid=uid, fnr=original.fnr, transaction_type="5")
    (bill,) = _send(sandbox, C((credit,)), "r-2")["bills"]
    assert Decimal(bill["approved"]) == Decimal("-6.96")


def test_two_credits_of_one_bill_in_one_file(sandbox):
    """Only the first credit of a uuid in a file can pass; the second is refused."""
    uid = "{ABCDEF00-0000-4000-8000-0000000000CC}"
    original = _b(OSMO, uuid=uid)
    _send(sandbox, C((original,)), "t-1")
    credit = B((OSMO,), uuid=uid, fnr=original.fnr, transaction_type="5")
    result = _send(sandbox, C((credit, credit)), "t-2")
    first, second = result["bills"]
    assert Decimal(first["approved"]) == Decimal("-6.96")
    assert second["verdict"] == "rejected"
    assert _net(sandbox, uid) == 0
    # explain: COM-07 fired on the second bill (regning 1002), the uuid repeated
    fired = [(e[1], dict(e[4])) for e in result["trace"] if e[0] == "COM-07" and e[3]]
    assert fired == [("1002", {"uuid": uid, "repeated": "true"})]


@pytest.mark.parametrize(
    "twin",
    ["other-uuid", "same-episode", "lowercase-uuid", "offset-time"],
)
def test_the_same_service_is_paid_once(sandbox, twin):
    """Duplicates by uuid (any case), by episode, and by patient + codes + instant."""
    uid = "{ABCDEF00-0000-4000-8000-0000000000DD}"
    first = _b(OSMO, uuid=uid, date="2026-10-05T09:30:00")
    if twin == "other-uuid":  # same file, another uuid, the same service
        result = _send(sandbox, C((first, B(first.lines, fnr=first.fnr, date=first.date))), "d")
    elif twin == "same-episode":
        claim = C((first, B(first.lines, fnr=first.fnr, date="2026-10-06T09:30:00")))
        # the second bill points at the first bill's episode (bills come before patients)
        xml = msghead(claim).replace(b'episodeID="2"', b'episodeID="1"', 1)
        sandbox.drop(wrap_demo(xml, message_id="d"))
        sandbox.process()
        from daemon.ledger.sqlite import SqliteLedger

        ledger = SqliteLedger(sandbox.paths.ledger)
        try:
            result = ledger.explain("d")[0]
        finally:
            ledger.close()
    else:
        _send(sandbox, C((first,)), "d-0")
        if twin == "lowercase-uuid":
            again = B(first.lines, uuid=uid.lower(), fnr=first.fnr, date="2026-10-07T10:00:00")
        else:  # the same instant, written with an offset
            again = B(first.lines, fnr=first.fnr, date="2026-10-05T07:30:00Z")
        result = _send(sandbox, C((again,)), "d")
    verdicts = [b["verdict"] for b in result["bills"]]
    assert verdicts[-1] == "rejected", result["bills"]
    assert [r[0] for r in result["bills"][-1]["remarks"]] == ["COM-06"]


def test_an_antall_of_zero_is_named_to_the_sender(processed):
    """LAB-03's remark says what was wrong: the antall claimed (#20: its detail could
    be dropped unseen)."""
    errors = [e.get("DN") for e in processed["lab03-zero"]["apprec"].findall("ar:Error", AR)]
    assert any("antall 0" in text and "[LAB-03]" in text for text in errors), errors


def test_an_institution_without_the_service_is_told_which_it_lacks(processed):
    """COM-09 for lab lines at a radiology institute: the remark names the missing
    service in words (#20: the word could be lost unseen)."""
    errors = [e.get("DN") for e in processed["com09-wrong-kind"]["apprec"].findall("ar:Error", AR)]
    assert any("er ikke registrert for laboratorieanalyser" in t for t in errors), errors


# What `explain` shows for each rule that fired (the Finding's inputs, kept for the
# tester and never sent): written here from each case's claim and the rule text, not
# read back from the rule (#20: every Finding's inputs could change unseen).
TRACE = {
    "com04-claim-sum": ("COM-04", [(0, {"count": "1", "sum": "6.96"})]),
    "com04-claim-count": ("COM-04", [(0, {"count": "1", "sum": "6.96"})]),
    "com04-bill-sum": ("COM-04", [(0, {"sumBelop": "10.00", "lines": "6.96"})]),
    "com04-bill-no-episode": ("COM-04", [(0, {"sumBelop": "6.96", "lines": "0.00"})]),
    "com05-bad-fnr": ("COM-05", [(0, {"type": "FNR"})]),
    "com06-same-file": ("COM-06", [(0, {"same": "uuid {0DDBA11D-0000-4000-8000-000000000001}"})]),
    "com07-credit-same-file": (
        "COM-07",
        [(0, {"uuid": "{C0FFEE00-0000-4000-8000-000000000001}", "same_file": "true"})],
    ),
    "com07-credit-unknown": (
        "COM-07",
        [(0, {"uuid": "{C0FFEE00-0000-4000-8000-0000000000FF}", "found": "false"})],
    ),
    # the claims are judged on 2026-11-23 (the sandbox's today): six months back
    "com08-future": ("COM-08", [(0, {"date": "2026-12-01"})]),
    "com08-too-old": ("COM-08", [(0, {"date": "2026-05-01", "oldest": "2026-05-23"})]),
    "com09-unknown": ("COM-09", [(0, {"institution": "111222333"})]),
    "com09-wrong-kind": ("COM-09", [(0, {"services": "radiology"})]),
    "com09-not-our-sender": ("COM-09", [(0, {"sender": "90001"})]),
    "lab01-inpatient": ("LAB-01", [(0, {"kravGrunnlag": "2"})]),
    "lab01-admitted": ("LAB-01", [(0, {"kravGrunnlag": "3"})]),
    "lab02-unknown": ("LAB-02", [(1, {"code": "NPU99999"})]),
    "lab02-expired": (
        "LAB-02",
        [(1, {"code": "NOR05043", "date": "2026-10-05", "valid": "2013-01-25–2023-06-30"})],
    ),
    "lab02-patologi": ("LAB-02", [(1, {"code": "NOR25034", "field": "PAT"})]),
    "lab03-zero": ("LAB-03", [(1, {"antall": "0"})]),
    "lab04-not-genetics": ("LAB-04", [(1, {"code": "NOR25437", "field": "MG"})]),
    "lab05-other-field": ("LAB-05", [(1, {"code": "NOR05003", "field": "MB"})]),
    "lab06-mixed": ("LAB-06", [(0, {"fields": "MB,MG"})]),
    "lab07-consultation": ("LAB-07", [(1, {"code": "NPU01685", "consultation": "true"})]),
    "lab08-no-criteria": ("LAB-08", [(1, {"code": "NPU57845", "diagnoses": "J069"})]),
    "lab09-wrong": ("LAB-09", [(1, {"category": "MB2", "claimed": "7.00", "rate": "6.96"})]),
    "lab09-state-rate-at-private": (
        "LAB-09",
        [(1, {"category": "MB2", "claimed": "6.96", "rate": "6.45"})],
    ),
    "scope01-ncsp-surgery": ("SCOPE-01", [(1, {"kodeverk": "K", "code": "JFB00"})]),
}


def test_every_rejecting_case_has_its_trace_written_down():
    assert sorted(TRACE) == sorted(case_id for case_id, _r, fires, _c in CASES if fires)


@pytest.mark.parametrize("case_id", sorted(TRACE))
def test_the_trace_records_what_the_rule_saw(processed, case_id):
    """`explain` shows the line the rule fired on and the values it judged."""
    rule_id, expected = TRACE[case_id]
    trace = processed[case_id]["trace"]
    assert [(e[2], dict(e[4])) for e in trace if e[0] == rule_id and e[3]] == expected


def test_a_bad_person_number_is_named_by_its_kind(processed):
    """COM-05's remark names the kind of number whose control digits fail (#20: its
    detail could be dropped unseen)."""
    errors = [e.get("DN") for e in processed["com05-bad-fnr"]["apprec"].findall("ar:Error", AR)]
    said = "Pasientens fødselsnummer eller D-nummer er ugyldig (kontrollsiffer): type FNR [COM-05]"
    assert said in errors, errors
