"""Issue #15 through the whole pipeline: one judgement order, same-day limits, units and
ownership, whole-message refusals (RULES.md, "Judgement order and same-day limits").

Every same-day case is run twice, in two sandboxes: all bills in **one message**, and
each bill in **its own message**, sent in the order of the table. The payments must be
the same both ways (the outcome may not depend on batching). The expected amounts are
written here in units of each code's rate as the shipped register gives it (data, not
the function under test): `R` is one rate, `R2` a bilateral exam, `0` rejected.
"""

from __future__ import annotations

import itertools
import sqlite3
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

import pytest
from lxml import etree

from daemon import cli
from daemon.ledger import migrate
from daemon.ledger.sqlite import Conflict, SqliteLedger
from daemon.registers import tariffs
from daemon.transport import mime
from tests.claims import DEMO_HF, B, C, I, L, P, msghead, person_number, registry
from tests.conftest import Sandbox, make_sandbox, wrap_demo

AR = {"ar": "http://www.kith.no/xmlstds/apprec/2004-11-21"}
DAY = "2026-10-05"
HF = DEMO_HF.orgnr  # Demo sykehus HF, Helse Sør-Øst RHF
INSTITUTE = "999000444"  # a state radiology institute (Helse Midt-Norge RHF)
INSTITUTIONS = registry(
    DEMO_HF, I(INSTITUTE, "Røntgeninstitutt", "Helse Midt-Norge RHF", ("radiology",))
)
TARIFFS = tariffs.load(tariffs.SHIPPED_DIR)
REGISTER = TARIFFS.radiology
CENT = Decimal("0.01")

KNEE, CHEST_RG = "SNG0AA", "SSC0AA"  # conventional X-ray: no same-day limit
CT_HEAD, CT_NECK, CT_CHEST, CT_KNEE = "SAA0AD", "SSB0AD", "SSC0AD", "SNG0AD"
CTA_ARM = "SPB0AP"  # CTA, Overekstremitet
BIOPSY, INJECTION = "AAB06K", "AAI20K"  # NCRP interventions
BONE_SCAN, THYROID, BRAIN = "TSY0AN//V09BA01", "TBA0AN//V09FX01", "TAA0AN"


def rate(code: str, sector: str = "stat") -> Decimal:
    entry = REGISTER.code(code)
    found = REGISTER.rate(entry.category, sector, date.fromisoformat(DAY))
    assert found is not None, code
    return found


def fixed(category: str) -> Decimal:
    found = REGISTER.rate(category, "stat", date.fromisoformat(DAY))
    assert found is not None, category
    return found


def kr(value: Decimal) -> str:
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


def rad(code_string: str, amount: Decimal | None = None) -> P:
    """A radiology line claiming `amount`, by default its procedure's rate."""
    return P(code_string, kr(rate(code_string.split("/")[0]) if amount is None else amount))


_uuids = itertools.count(1)
_people = itertools.count()


def uuid() -> str:
    return f"{{AAAAAAAA-0000-4000-8000-{next(_uuids):012d}}}"


def patient() -> str:
    return person_number(next(_people), born="120460")


def bill(*lines, at: str, fnr: str, **kw) -> B:
    return B(tuple(lines), fnr=fnr, date=f"{DAY}T{at}:00", uuid=uuid(), **kw)


@dataclass(frozen=True)
class Case:
    id: str
    item: str  # the item
    bills: tuple[B, ...]
    paid: tuple[Decimal, ...]  # what each bill is approved, in table order
    batching: bool = True  # separate messages (in table order) must pay the same


def _cases() -> list[Case]:
    out = []

    def case(id_: str, item: str, specs, paid, batching=True):
        fnr = patient()
        bills = tuple(bill(*lines, at=at, fnr=fnr, **kw) for lines, at, kw in specs)
        out.append(Case(id_, item, bills, tuple(paid), batching))

    r = rate
    case(
        "three-ct-pay-the-first-two",
        "1",
        [((rad(CT_HEAD),), "09:00", {}), ((rad(CT_CHEST),), "11:00", {}),
         ((rad(CT_KNEE),), "13:00", {})],
        [r(CT_HEAD), r(CT_CHEST), 0],
    )  # fmt: skip
    case(
        "three-interventions-pay-the-first-two",
        "1",
        [((rad(BIOPSY),), "09:00", {}), ((rad(INJECTION),), "11:00", {}),
         ((rad(BIOPSY),), "13:00", {})],
        [r(BIOPSY), r(INJECTION), 0],
    )  # fmt: skip
    case(
        "forbidden-pair-pays-the-first",
        "1",
        [((rad(CT_HEAD),), "09:00", {}), ((rad(CT_NECK),), "11:00", {})],
        [r(CT_HEAD), 0],
    )
    case(
        "bilateral-counts-two",
        "1",
        [((rad(f"{CT_KNEE}/ZTX0XC", 2 * r(CT_KNEE)),), "09:00", {}),
         ((rad(CT_HEAD),), "11:00", {})],
        [2 * r(CT_KNEE), 0],
    )  # fmt: skip
    case(
        "judged-by-time-not-file-order",
        "1",
        [((rad(CT_KNEE),), "15:00", {}), ((rad(CT_HEAD),), "09:00", {}),
         ((rad(CT_CHEST),), "11:00", {})],
        [0, r(CT_HEAD), r(CT_CHEST)],
        batching=False,  # sent apart in table order, the knee comes first: earlier wins
    )  # fmt: skip
    case(
        "three-in-one-bill-all-rejected",
        "1",
        [((rad(CT_HEAD), rad(CT_CHEST), rad(CT_KNEE)), "09:00", {})],
        [0],
    )
    case(
        "wrong-amount-takes-no-slot",
        "2",
        [((rad(CT_KNEE, r(CT_KNEE) + 1),), "09:00", {}), ((rad(CT_HEAD),), "11:00", {}),
         ((rad(CT_CHEST),), "13:00", {})],
        [0, r(CT_HEAD), r(CT_CHEST)],
    )  # fmt: skip
    case(
        "same-exam-twice-pays-once",
        "2",
        [((rad(CT_HEAD),), "09:00", {}), ((rad(CT_HEAD),), "09:00", {})],
        [r(CT_HEAD), 0],
    )
    case(
        "nuclear-secondary-reading-takes-no-slot",
        "3",
        [((rad(BONE_SCAN),), "09:00", {}), ((rad(THYROID),), "11:00", {}),
         ((rad(f"{BRAIN}//ZTX0BC/V09AA01", fixed("TELE-NM")),), "13:00", {})],
        [r("TSY0AN"), r("TBA0AN"), fixed("TELE-NM")],
    )  # fmt: skip
    case(
        "ambulant-once-per-contact",
        "4",
        [((rad(f"{KNEE}///ZTX0AD", r(KNEE) + fixed("AMBULANT")),), "09:00", {}),
         ((rad(f"{CHEST_RG}///ZTX0AD", r(CHEST_RG) + fixed("AMBULANT")),), "09:40", {})],
        [r(KNEE) + fixed("AMBULANT"), r(CHEST_RG)],
    )  # fmt: skip
    lab = TARIFFS.code("NOR05003")
    lab_rate = TARIFFS.rate(lab.category, "stat", date.fromisoformat(DAY))
    case(
        "svalbard-pays-the-institutions-rhf",
        "7",
        [((rad(KNEE), L("NOR05003", kr(lab_rate))), "09:00", {"municipality": "2111"})],
        [r(KNEE) + lab_rate],
    )
    case(
        "trailing-empty-fields",
        "8",
        [((rad(f"{CHEST_RG}///"),), "09:00", {})],
        [r(CHEST_RG)],
    )
    return out


CASES = _cases()


def _approved(box: Sandbox) -> dict[str, Decimal]:
    with sqlite3.connect(box.paths.ledger) as db:
        rows = db.execute("SELECT uuid, approved FROM bills").fetchall()
    return {uuid: Decimal(approved) for uuid, approved in rows}


@pytest.fixture(scope="module")
def batched(tmp_path_factory) -> dict[str, Decimal]:
    """Each case's bills in one message."""
    box = make_sandbox(tmp_path_factory.mktemp("one") / "sandbox", INSTITUTIONS)
    for case in CASES:
        box.drop(wrap_demo(msghead(C(case.bills)), message_id=f"one-{case.id}"))
    box.process()
    return _approved(box)


@pytest.fixture(scope="module")
def apart(tmp_path_factory) -> dict[str, Decimal]:
    """Each bill in its own message, processed in the table's order."""
    box = make_sandbox(tmp_path_factory.mktemp("apart") / "sandbox", INSTITUTIONS)
    for case in CASES:
        if not case.batching:
            continue
        for n, b in enumerate(case.bills):
            box.drop(wrap_demo(msghead(C((b,))), message_id=f"apart-{case.id}-{n}"))
            box.process()
    return _approved(box)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_one_message(batched, case):
    """The table's payments with all of the case's bills in one message."""
    got = [batched[b.uuid] for b in case.bills]
    assert got == [Decimal(p) for p in case.paid], (case.item, got)


@pytest.mark.parametrize("case", [c for c in CASES if c.batching], ids=lambda c: c.id)
def test_separate_messages_pay_the_same(apart, case):
    """The same payments with each bill in its own message (earlier messages first)."""
    got = [apart[b.uuid] for b in case.bills]
    assert got == [Decimal(p) for p in case.paid], (case.item, got)


# --------------------------------------------------------------------------- helpers


def _send(box: Sandbox, claim: C, message_id: str, raw: bytes | None = None) -> dict:
    box.drop(raw if raw is not None else wrap_demo(msghead(claim), message_id=message_id))
    box.process()
    ledger = SqliteLedger(box.paths.ledger)
    try:
        return ledger.explain(message_id)[-1]
    finally:
        ledger.close()


def _apprec(box: Sandbox, message_id: str) -> tuple[etree._Element, bytes]:
    for path in box.outbox("apprec"):
        multipart, _ = mime.parse(path.read_bytes())
        if f">{message_id}<".encode() in multipart.start.data:
            return etree.fromstring(multipart.attachments[0].data), path.read_bytes()
    raise AssertionError(f"no AppRec for {message_id}")


def _with_config(box: Sandbox, text: str) -> None:
    cfg = box.config_path
    cfg.write_text(cfg.read_text() + "\n" + text + "\n")


# --------------------------------------------------------------------------- item 3, #14.3


def test_teleradiology_parts_at_two_institutions_are_one_exam(tmp_path):
    """Item 3: image taking (ZTX0BA) at the HF and the reading (ZTX0BB) at the institute
    are one exam: both parts are paid, and the day's next CT is the third exam."""
    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS)
    fnr = patient()
    image = bill(rad(f"{CT_CHEST}//ZTX0BA", rate(CT_CHEST) / 3), at="09:00", fnr=fnr)
    first = C((bill(rad(CT_HEAD), at="08:00", fnr=fnr), image))
    assert [b["verdict"] for b in _send(box, first, "tele-1")["bills"]] == ["approved"] * 2
    reading = bill(rad(f"{CT_CHEST}//ZTX0BB", rate(CT_CHEST) * 2 / 3), at="10:00", fnr=fnr)
    (read,) = _send(box, C((reading,), institution=INSTITUTE), "tele-2")["bills"]
    assert read["verdict"] == "approved"
    assert Decimal(read["approved"]) == Decimal(kr(rate(CT_CHEST) * 2 / 3))
    (knee,) = _send(box, C((bill(rad(CT_KNEE), at="11:00", fnr=fnr),)), "tele-3")["bills"]
    assert knee["verdict"] == "rejected" and knee["remarks"][0][0] == "RAD-06"
    assert "2 CT-undersøkelse(r) er allerede godkjent" in knee["remarks"][0][2]


def test_another_institutions_remark_reveals_nothing_of_the_first(tmp_path):
    """#14 finding 3, the attack: the institute probes a patient and day with a CT of the
    neck; the HF's CT head that day makes it fail RAD-07, and the answer names neither
    the HF's code, time, regningNr nor its MessageId."""
    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS)
    fnr = patient()
    secret = B((rad(CT_HEAD),), fnr=fnr, date=f"{DAY}T07:13:00", uuid=uuid(), regning_nr="884422")
    assert _send(box, C((secret,)), "hf-secret-msg")["bills"][0]["verdict"] == "approved"
    probe = bill(rad(CT_NECK), at="12:00", fnr=fnr)
    (bill_,) = _send(box, C((probe,), institution=INSTITUTE), "probe")["bills"]
    assert bill_["verdict"] == "rejected" and bill_["remarks"][0][0] == "RAD-07"
    apprec, raw = _apprec(box, "probe")
    said = " ".join(e.get("DN") for e in apprec.findall("ar:Error", AR))
    assert "RAD-07" in said and "annen institusjon" in said
    for leaked in (CT_HEAD, "884422", "hf-secret-msg", "07:13", "05:13", "Hode"):
        assert leaked not in said and leaked.encode() not in raw, leaked


# --------------------------------------------------------------------------- item 5


def test_unknown_institution_refuses_the_message_until_it_is_registered(tmp_path, capsys):
    """Item 5: COM-09 refuses the whole message (status 2, error 9090), not for good: the
    same file sent again after `institution add` is processed and paid."""
    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS)
    newcomer = "974633574"
    claim = C((bill(rad(KNEE), at="09:00", fnr=patient()),), institution=newcomer)
    raw = wrap_demo(msghead(claim), message_id="newcomer")
    first = _send(box, claim, "newcomer", raw)
    assert first["state"] == "quarantined" and first["apprec_status"] == "2"
    apprec, _ = _apprec(box, "newcomer")
    assert apprec.find("ar:Status", AR).get("V") == "2"
    assert [e.get("V") for e in apprec.findall("ar:Error", AR)] == ["9090"]
    with sqlite3.connect(box.paths.ledger) as db:
        assert db.execute("SELECT final FROM messages").fetchall() == [(0,)]
    args = ["--config", str(box.config_path), "institution", "add", "--orgnr", newcomer,
            "--name", "Nytt sykehus HF", "--rhf", "Helse Sør-Øst", "--sender", "90001"]  # fmt: skip
    assert cli.main(args) == 0
    again = _send(box, claim, "newcomer", raw)
    assert again["state"] == "answered" and again["apprec_status"] == "1"
    assert again["bills"][0]["payee"] == "RHF:Helse Sør-Øst RHF"  # the alias, resolved


# --------------------------------------------------------------------------- item 6

GENETICS_UNIT = "555001"
MG, MB, KF_PHARMACOGENETIC = "NOR25437", "NOR05003", "NPU19308"


def lab_line(code: str) -> L:
    entry = TARIFFS.code(code)
    return L(code, kr(TARIFFS.rate(entry.category, "stat", date.fromisoformat(DAY))))


def from_unit(claim: C, resh: str, message_id: str) -> bytes:
    payload = msghead(claim).replace(b'reshID="101797"', f'reshID="{resh}"'.encode())
    return wrap_demo(payload, message_id=message_id)


GENETICS_CASES = [
    # (unit, line, approved?, rule that rejects it)
    ("101797", MB, True, None),  # the HF's other units: lab
    ("101797", MG, False, "LAB-04"),  # … but not medical genetics
    (GENETICS_UNIT, MG, True, None),  # the genetics department: MG
    (GENETICS_UNIT, KF_PHARMACOGENETIC, True, None),  # and pharmacogenetic KF codes
    (GENETICS_UNIT, MB, False, "LAB-05"),  # nothing else
]


def test_units_have_their_own_services(tmp_path):
    """Item 6: an HF (lab, radiology) with its genetics department registered as a unit
    (genetics): MG codes only from that unit (LAB-04), and that unit only MG and
    pharmacogenetic codes (LAB-05); a radiology line from it is COM-09."""
    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS)
    unit = ["--config", str(box.config_path), "institution", "unit", "--orgnr", HF,
            "--resh", GENETICS_UNIT, "--name", "Avdeling for medisinsk genetikk",
            "--service", "genetics"]  # fmt: skip
    assert cli.main(unit) == 0
    for n, (resh, code, approved, rule) in enumerate(GENETICS_CASES):
        claim = C((bill(lab_line(code), at="09:00", fnr=patient()),))
        result = _send(box, claim, f"unit-{n}", from_unit(claim, resh, f"unit-{n}"))
        (b,) = result["bills"]
        assert (b["verdict"] == "approved") is approved, (resh, code, b["remarks"])
        if rule:
            assert [r[0] for r in b["remarks"]] == [rule]
    claim = C((bill(rad(KNEE), at="09:00", fnr=patient()),))
    (b,) = _send(box, claim, "unit-rad", from_unit(claim, GENETICS_UNIT, "unit-rad"))["bills"]
    assert b["verdict"] == "rejected" and b["remarks"][0][0] == "COM-09"


def test_old_kinds_are_migrated(tmp_path, capsys):
    """Item 6: an institutions.toml with the old kinds loads (hf → owned by its RHF, lab
    and radiology; private-driftsavtale → driftsavtale, lab; genetics-lab → genetics)
    and `institution migrate` rewrites it in the new form."""
    old = registry(
        DEMO_HF,
        I("974633574", "Privatlab AS", "Helse Vest RHF", ("private-driftsavtale",)),
        I("999000444", "Genetikklab", "Helse Vest RHF", ("genetics-lab",)),
    )
    box = make_sandbox(tmp_path / "sandbox", old)
    assert cli.main(["--config", str(box.config_path), "institution", "migrate"]) == 0
    text = box.paths.institutions.read_text()
    assert "kinds" not in text
    capsys.readouterr()
    assert cli.main(["--config", str(box.config_path), "institution", "list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "rhf" in rows[HF] and "lab,radiology" in rows[HF]
    assert "driftsavtale" in rows["974633574"] and rows["974633574"].split()[-2] == "lab"
    assert rows["999000444"].split()[-2] == "genetics"


# --------------------------------------------------------------------------- item 9


def test_today_is_the_date_in_oslo_and_the_deadline_counts_months(tmp_path):
    """Item 9: at 23:30 UTC on 22 November it is 23 November in Oslo: an exam at 00:10
    Oslo time is not in the future. Six calendar months back from 23 November is
    23 May: that day is in time, 22 May is too old (COM-08)."""
    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS)
    cfg = box.config_path
    text = cfg.read_text()
    cfg.write_text(text.replace('fixed_time = "2026-11-23T12:00:00Z"',
                                'fixed_time = "2026-11-22T23:30:00Z"'))  # fmt: skip
    fnr = patient()
    bills = (
        B((rad(KNEE),), fnr=fnr, date="2026-11-23T00:10:00", uuid=uuid()),
        B((rad(KNEE),), fnr=fnr, date="2026-05-23T10:00:00", uuid=uuid()),
        B((rad(KNEE),), fnr=fnr, date="2026-05-22T10:00:00", uuid=uuid()),
    )
    result = _send(box, C(bills), "oslo-today")
    assert [b["verdict"] for b in result["bills"]] == ["approved", "approved", "rejected"]
    assert result["bills"][2]["remarks"][0][0] == "COM-08"


# --------------------------------------------------------------------------- item 10


def test_the_documented_choices_are_configurable(tmp_path, capsys):
    """Item 10: with Hals left out of the one-claim regions two CT of the neck are paid
    (and a CT of the knee is then the third); with CT and CTA apart a CTA is not the
    third CT exam. `kravmottak rules` shows the values in force."""
    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS)
    _with_config(
        box,
        "[rules]\n"
        'one_claim_regions = ["Kolumna", "Abdomen", "Bekken", "Uspesifisert"]\n'
        "ct_cta_share_limit = false\nmax_age_months = 6",
    )
    fnr = patient()
    bills = (
        bill(rad(CT_NECK), at="08:00", fnr=fnr),
        bill(rad(CT_NECK), at="09:00", fnr=fnr),
        bill(rad(CT_KNEE), at="10:00", fnr=fnr),
        bill(rad(CTA_ARM), at="11:00", fnr=fnr),
    )
    result = _send(box, C(bills), "choices")
    verdicts = [b["verdict"] for b in result["bills"]]
    assert verdicts == ["approved", "approved", "rejected", "approved"]
    capsys.readouterr()
    assert cli.main(["--config", str(box.config_path), "rules"]) == 0
    out = capsys.readouterr().out
    assert "| `ct_cta_share_limit` | `false` |" in out
    assert '| `one_claim_regions` | `["Kolumna", "Abdomen", "Bekken", "Uspesifisert"]` |' in out
    assert "| `max_age_months` | `6` |" in out


def test_by_default_hals_is_one_claim_and_ct_cta_share_a_limit(tmp_path):
    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS)
    fnr = patient()
    bills = (
        bill(rad(CT_NECK), at="08:00", fnr=fnr),
        bill(rad(CT_NECK), at="09:00", fnr=fnr),
        bill(rad(CT_KNEE), at="10:00", fnr=fnr),
        bill(rad(CTA_ARM), at="11:00", fnr=fnr),
    )
    result = _send(box, C(bills), "defaults")
    verdicts = [b["verdict"] for b in result["bills"]]
    assert verdicts == ["approved", "rejected", "approved", "rejected"]
    assert [r[0] for r in result["bills"][1]["remarks"]] == ["RAD-07"]  # Hals: one claim
    assert [r[0] for r in result["bills"][3]["remarks"]] == ["RAD-06"]  # CTA: a third CT


def test_an_old_deadline_in_days_is_refused_with_the_new_key(tmp_path):
    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS)
    _with_config(box, "[rules]\nmax_age_days = 183")
    with pytest.raises(Exception, match="max_age_months"):
        box.settings  # noqa: B018


# --------------------------------------------------------------------------- item 11


def test_a_decision_on_a_stale_day_is_refused_and_judged_again(tmp_path):
    """Item 11: a message judged while another worker approved an exam for the same
    patient and day is not recorded (Conflict); judged again it sees that exam."""
    from daemon.records import Work, content_hash

    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS)
    fnr = patient()
    raw = wrap_demo(msghead(C((bill(rad(CT_NECK), at="12:00", fnr=fnr),))), message_id="late")
    intake = box.intake()
    try:
        ctx = intake.context(intake.clock())
        work = intake._run(Work(raw=raw, content_hash=content_hash(raw)), ctx)
        assert work.decision.bills[0].verdict == "approved"  # judged on an empty day
        # meanwhile another worker approves a CT head for the same patient and day
        _send(box, C((bill(rad(CT_HEAD), at="08:00", fnr=fnr),)), "meanwhile")
        answer = intake._answer(work, ctx)
        now = "2026-11-23T12:00:00+00:00"
        intake.ledger.claim("late-work", "late", now, now)
        with pytest.raises(Conflict, match="same-day"):
            intake.ledger.record("late-work", work, answer, now, 1.0)
    finally:
        intake.ledger.close()
    (b,) = _send(box, C(()), "late", raw)["bills"]  # the intake's retry: judged again
    assert b["verdict"] == "rejected" and b["remarks"][0][0] == "RAD-07"


def test_the_exams_table_refuses_an_identical_active_exam(tmp_path):
    """Item 11, the last defence: two active identical exams cannot be recorded."""
    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS)
    _send(box, C((bill(rad(CT_HEAD), at="08:00", fnr=patient()),)), "one")
    with sqlite3.connect(box.paths.ledger) as db:
        row = db.execute("SELECT * FROM exams").fetchone()
        columns = ",".join("?" * len(row))
        with pytest.raises(sqlite3.IntegrityError):
            db.execute(f"INSERT INTO exams VALUES ({columns})", (row[0] + 1000, *row[1:]))


def test_an_older_ledger_is_refused_then_gains_the_columns_and_guards(tmp_path):
    """A ledger made before versioned migrations (before the teleradiology part, the
    ambulant flag, the attempts count and the guards existed: its tables as they were,
    DDL copied here) is refused when opened, naming `kravmottak db upgrade`; the
    upgrade adds what it lacks and keeps its rows."""
    path = tmp_path / "ledger.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE receipts (id INTEGER PRIMARY KEY, work_name TEXT NOT NULL UNIQUE,"
            " original_name TEXT NOT NULL, state TEXT NOT NULL, message_id INTEGER,"
            " duplicate INTEGER NOT NULL DEFAULT 0, received_at TEXT NOT NULL,"
            " claimed_at TEXT NOT NULL, finished_at TEXT)"
        )
        db.execute(
            "CREATE TABLE exams (bill_id INTEGER NOT NULL, line INTEGER NOT NULL,"
            " patient_key TEXT NOT NULL, day TEXT NOT NULL, instant TEXT NOT NULL,"
            " institution_id TEXT NOT NULL, uuid TEXT, code TEXT NOT NULL, side TEXT,"
            " modality TEXT NOT NULL, kind TEXT NOT NULL, regions TEXT NOT NULL,"
            " units INTEGER NOT NULL, active INTEGER NOT NULL DEFAULT 1)"
        )
        db.execute(
            "INSERT INTO exams VALUES (1, 1, 'p', ?, ?, ?, NULL, ?, NULL, 'CT', 'diagnostic',"
            " 'Hode', 1, 1)",
            (DAY, f"{DAY}T07:00:00Z", HF, CT_HEAD),
        )
    with pytest.raises(migrate.OutOfDate, match="run `kravmottak db upgrade`"):
        SqliteLedger(path)
    assert migrate.current(f"sqlite:///{path}") == migrate.LEGACY
    assert migrate.upgrade(f"sqlite:///{path}") == migrate.HEAD
    SqliteLedger(path).close()  # at the newest revision now: opens
    with sqlite3.connect(path) as db:
        assert {row[1] for row in db.execute("PRAGMA table_info(receipts)")} >= {"attempts"}
        columns = {row[1] for row in db.execute("PRAGMA table_info(exams)")}
        indexes = {row[1] for row in db.execute("PRAGMA index_list(exams)")}
        kept = db.execute("SELECT code, tele, ambulant FROM exams").fetchall()
    assert {"tele", "ambulant"} <= columns
    assert {"exams_line", "exams_identical"} <= indexes
    assert kept == [(CT_HEAD, None, 0)]
