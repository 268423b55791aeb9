"""Settlement: one vedtak per payee per batch, exactly once, in real files.

The end-to-end test sends a day of mixed lab and radiology claims from three
institutions in two RHFs through the real intake, runs `kravmottak settle`, and checks
each payee's vedtak against what the AppRecs told the senders: every line the AppRec
did not reject is paid, to the RHF its rule names (LAB-10: the institution's RHF;
RAD-15: the patient's home municipality's).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from lxml import etree
from structlog.testing import capture_logs

from daemon import cli
from daemon.config import ConfigError, Settlement
from daemon.settlement import settle
from daemon.transport import mime
from tests.claims import DEMO_HF, B, C, I, L, P, msghead, person_number, registry
from tests.conftest import Sandbox, make_sandbox, wrap_demo
from tests.test_radiology_rules import rate

AR = {"ar": "http://www.kith.no/xmlstds/apprec/2004-11-21"}
M22 = {"m22": "http://www.kith.no/xmlstds/eresept/m22/2006-10-06"}
MH = {"mh": "http://www.kith.no/xmlstds/msghead/2006-05-24"}
SOUTH_EAST, WEST = "991324968", "983658725"  # Helse Sør-Øst RHF, Helse Vest RHF
RHF_ORGNR = {"Helse Sør-Øst RHF": SOUTH_EAST, "Helse Vest RHF": WEST}
HOME_RHF = {"0301": "Helse Sør-Øst RHF", "4601": "Helse Vest RHF"}

REGISTRY = (
    DEMO_HF,
    I("999000777", "Vestlandet sykehus HF", "Helse Vest RHF"),
    I("999000444", "Røntgeninstitutt", "Helse Sør-Øst RHF", ("radiology",)),
)
INSTITUTIONS = registry(*REGISTRY)
INSTITUTION_RHF = {i.orgnr: i.rhf for i in REGISTRY}

BOTH_BACKENDS = True  # the ledger-facing tests run on SQLite and PostgreSQL (conftest)
OSMO = L("NOR05003", "6.96")
INR = L("NPU01685", "23.18", 2)
BAD_LAB = L("NOR05003", "9.99")  # LAB-09
_n = iter(range(700))


def _b(*lines, **kw) -> B:
    kw.setdefault("fnr", person_number(next(_n), born="121270"))
    kw.setdefault("date", "2026-10-05T09:30:00")
    return B(lines, **kw)


def knee(amount=None) -> P:
    return P("SNG0AA", f"{amount if amount is not None else rate('SNG0AA')}")


def chest_ct() -> P:
    return P("SSC0AD", f"{rate('SSC0AD')}")


def a_day() -> list[C]:
    return [
        C(
            (
                _b(OSMO, INR),
                _b(OSMO, BAD_LAB),  # reduced
                _b(knee(), municipality="0301"),
                _b(chest_ct(), municipality="4601"),
                _b(knee(Decimal("1.00")), municipality="4601"),  # RAD-14: rejected
            ),
            institution="983974678",
        ),
        C((_b(OSMO), _b(INR, OSMO), _b(knee(), municipality="0301")), institution="999000777"),
        C(
            (_b(knee(), municipality="4601"), _b(chest_ct(), municipality="0301")),
            institution="999000444",
        ),
    ]


def _send(box: Sandbox, claims: list[C], prefix: str) -> dict[str, C]:
    sent = {}
    for i, claim in enumerate(claims):
        message_id = f"{prefix}-{i}"
        box.drop(wrap_demo(msghead(claim), message_id=message_id))
        sent[message_id] = claim
    box.process()
    return sent


def _apprecs(box: Sandbox) -> dict[str, etree._Element]:
    out = {}
    for path in box.outbox("apprec"):
        multipart, _ = mime.parse(path.read_bytes())
        soap = etree.fromstring(multipart.start.data)
        ref = soap.findtext(".//{*}RefToMessageId")
        out[ref] = etree.fromstring(multipart.attachments[0].data)
    return out


def expected_per_payee(sent: dict[str, C], apprecs: dict[str, etree._Element]) -> dict:
    """What the AppRecs promise: every line they did not reject, to its RHF."""
    out: dict[str, Decimal] = {}
    for message_id, claim in sent.items():
        errors = [(e.get("OT"), e.get("DN")) for e in apprecs[message_id].findall("ar:Error", AR)]
        for i, bill in enumerate(claim.bills, start=1):
            nr = bill.regning_nr or str(1000 + i)
            said = [dn for ot, dn in errors if ot == nr]
            rejected_lines = {int(m.group(1)) for dn in said if (m := re.match(r"linje (\d+)", dn))}
            if any(not dn.startswith("linje") for dn in said):
                continue  # a bill remark: the whole bill is rejected
            takst = [x for x in bill.lines if isinstance(x, L)]
            procedures = [x for x in bill.lines if isinstance(x, P)]
            for number, line in enumerate(takst + procedures, start=1):
                if number in rejected_lines:
                    continue
                if isinstance(line, L):
                    payee = INSTITUTION_RHF[claim.institution]
                    amount = Decimal(line.unit) * line.count
                else:
                    payee, amount = HOME_RHF[bill.municipality], Decimal(line.amount)
                out[payee] = out.get(payee, Decimal("0")) + amount
    return out


def vedtak_files(box: Sandbox) -> dict[str, dict]:
    """Each vedtak in the outbox: receiver orgnr → its Regning lines and the payment."""
    found: dict[str, dict] = {}
    for path in box.outbox("vedtak"):
        multipart, problem = mime.parse(path.read_bytes())
        assert problem is None
        msghead_ = etree.fromstring(multipart.attachments[0].data)
        assert msghead_.find("mh:MsgInfo/mh:Type", MH).get("V") == "ERM22"
        receiver = msghead_.findtext(
            "mh:MsgInfo/mh:Receiver/mh:Organisation/mh:Ident/mh:Id", None, MH
        )
        body = msghead_.find(".//m22:Oppgjorsresultat", M22)
        lines = [
            (
                r.findtext("m22:RegningsNr", None, M22),
                Decimal(r.find("m22:Krav", M22).get("V")),
                Decimal(r.find("m22:Godkjent", M22).get("V")),
                r.find("m22:Status", M22).get("V"),
            )
            for r in body.findall("m22:Regning", M22)
        ]
        found.setdefault(receiver, {"vedtak": []})["vedtak"].append(
            (body.findtext("m22:OppgjorsNr", None, M22), lines)
        )
    for path in box.outbox("utbetaling"):
        multipart, _ = mime.parse(path.read_bytes())
        msghead_ = etree.fromstring(multipart.attachments[0].data)
        assert msghead_.find("mh:MsgInfo/mh:Type", MH).get("V") == "ERM23"
        receiver = msghead_.findtext(
            "mh:MsgInfo/mh:Receiver/mh:Organisation/mh:Ident/mh:Id", None, MH
        )
        paid = msghead_.find(".//{*}Utbetalt").get("V")
        found[receiver].setdefault("paid", []).append(Decimal(paid))
    return found


def _settle(box: Sandbox, capsys) -> str:
    capsys.readouterr()
    assert cli.main(["--config", str(box.config_path), "settle"]) == 0
    return capsys.readouterr().out


def _next_day(box: Sandbox) -> None:
    """The sandbox's frozen clock moves from 23 to 24 November (the next batch's day)."""
    text = box.config_path.read_text()
    box.config_path.write_text(text.replace("2026-11-23T12:00:00Z", "2026-11-24T12:00:00Z"))


def test_a_day_of_claims_settles_once_per_payee(tmp_path, capsys, ledger_url):
    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS, ledger_url=ledger_url)
    sent = _send(box, a_day(), "day1")
    expected = expected_per_payee(sent, _apprecs(box))
    assert set(expected) == {"Helse Sør-Øst RHF", "Helse Vest RHF"}

    out = _settle(box, capsys)
    assert "2 vedtak" in out
    found = vedtak_files(box)
    assert set(found) == {SOUTH_EAST, WEST}
    for rhf, amount in expected.items():
        ((_nr, lines),) = found[RHF_ORGNR[rhf]]["vedtak"]
        assert sum(godkjent for _, _, godkjent, _ in lines) == amount, rhf
        assert found[RHF_ORGNR[rhf]]["paid"] == [amount]
    # the whole picture: rejected bills are there with status 1 and 0, reduced with 3
    west_lines = found[WEST]["vedtak"][0][1]
    assert any(status == "1" and godkjent == 0 for _, _, godkjent, status in west_lines)
    south_lines = found[SOUTH_EAST]["vedtak"][0][1]
    assert any(status == "3" for *_, status in south_lines)
    # every bill appears once, in the vedtak of its payee, with what it claimed (Krav)
    all_bills = [nr for f in found.values() for _, lines in f["vedtak"] for nr, *_ in lines]
    assert len(all_bills) == sum(len(c.bills) for c in sent.values())
    krav = sum(k for f in found.values() for _, lines in f["vedtak"] for _, k, _, _ in lines)
    assert krav == sum(b.total() for c in sent.values() for b in c.bills)

    # `kravmottak validate` accepts our own vedtak and payment messages
    for path in box.outbox("vedtak") + box.outbox("utbetaling"):
        capsys.readouterr()
        assert cli.main(["--config", str(box.config_path), "validate", str(path)]) == 0, path
        assert capsys.readouterr().out.strip() == "valid"

    # a second batch pays nothing new
    out = _settle(box, capsys)
    assert "0 vedtak" in out
    assert len(box.outbox("vedtak")) == 2


def test_a_credit_the_next_day_is_a_negative_line_in_the_next_vedtak(tmp_path, capsys, ledger_url):
    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS, ledger_url=ledger_url)
    uid = "{5E771E00-0000-4000-8000-000000000001}"
    paid = _b(OSMO, INR, uuid=uid)
    _send(box, [C((paid,))], "c1")
    _settle(box, capsys)
    _next_day(box)
    credit = B(paid.lines, uuid=uid, fnr=paid.fnr, date=paid.date, transaction_type="5")
    _send(box, [C((credit,))], "c2")
    out = _settle(box, capsys)
    assert "1 vedtak" in out
    vedtak = sorted(vedtak_files(box)[SOUTH_EAST]["vedtak"])
    assert len(vedtak) == 2
    (_, first), (_, second) = vedtak
    assert [g for *_, g, _ in first] == [Decimal("53.32")]
    assert [(k, g, s) for _, k, g, s in second] == [(Decimal("-53.32"), Decimal("-53.32"), "2")]
    with box.db() as db:
        (total,) = db.execute("SELECT sum(CAST(approved AS REAL)) FROM vedtak").fetchone()
        runs = [r for (r,) in db.execute("SELECT id FROM settlements ORDER BY id").fetchall()]
    assert total == 0  # paid, then taken back: never twice
    # OppgjorsNr: the decision day (Oslo), the settlement run, the payee's place in it
    assert len(runs) == 2
    assert [nr for nr, _ in vedtak] == [f"20261123-{runs[0]}-1", f"20261124-{runs[1]}-1"]


def test_a_run_that_would_settle_a_settled_payment_is_refused_whole(tmp_path, capsys, ledger_url):
    """The last line against paying twice: a vedtak naming a payment another run has
    settled (on PostgreSQL, a race the settlement lock should already prevent) raises
    Conflict naming the vedtak, and the run leaves nothing behind."""
    from daemon.ledger.backends import open_ledger
    from daemon.ledger.sqlite import Conflict, MadeVedtak

    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS, ledger_url=ledger_url)
    _send(box, [C((_b(OSMO),))], "once")
    _settle(box, capsys)
    with box.db() as db:
        ((settled,),) = db.execute("SELECT id FROM payments").fetchall()
        runs = db.execute("SELECT count(*) FROM settlements").fetchone()[0]
    again = MadeVedtak(
        "20261123-9-1", "RHF:x", "2026-11-23", Decimal(1), Decimal(1), (settled,), ()
    )
    ledger = open_ledger(box.settings)
    try:
        with pytest.raises(Conflict, match="20261123-9-1: payments already settled"):
            ledger.settle(None, "manual", "2026-11-23T12:00:00+00:00", "now", lambda *_: [again])
    finally:
        ledger.close()
    with box.db() as db:
        assert db.execute("SELECT count(*) FROM settlements").fetchone()[0] == runs
        assert db.execute("SELECT count(*) FROM vedtak").fetchone()[0] == 1


def test_a_reduced_correction_is_decided_as_the_difference(tmp_path, capsys, ledger_url):
    """A correction (4) whose new INR line is refused (LAB-09): the bill is reduced,
    and what the vedtak decides is the difference to what was paid, Godkjent (2), with
    the correction's own claim as Krav."""
    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS, ledger_url=ledger_url)
    uid = "{5E771E00-0000-4000-8000-000000000004}"
    paid = _b(OSMO, INR, uuid=uid)
    _send(box, [C((paid,))], "c1")
    _settle(box, capsys)
    _next_day(box)
    wrong_inr = L("NPU01685", "30.00", 2)
    correction = B((OSMO, wrong_inr), uuid=uid, fnr=paid.fnr, date=paid.date, transaction_type="4")
    _send(box, [C((correction,))], "c2")
    assert "1 vedtak" in _settle(box, capsys)
    (_, first), (_, second) = sorted(vedtak_files(box)[SOUTH_EAST]["vedtak"])
    assert [(k, g, s) for _, k, g, s in first] == [(Decimal("53.32"), Decimal("53.32"), "2")]
    # claimed 6.96 + 60.00; approved now 6.96 of the 53.32 paid: 46.36 back
    assert [(k, g, s) for _, k, g, s in second] == [(Decimal("66.96"), Decimal("-46.36"), "2")]


def test_status_shows_the_next_and_the_last_batch(tmp_path, capsys, ledger_url):
    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS, ledger_url=ledger_url)
    _send(box, a_day(), "s")
    _settle(box, capsys)
    assert cli.main(["--config", str(box.config_path), "status"]) == 0
    out = capsys.readouterr().out
    assert "next batch" in out and "2026-11-23T16:00:00+01:00" in out  # Monday, 16:00 Oslo
    assert "manual run 1" in out
    assert "RHF:Helse Vest RHF" in out and "RHF:Helse Sør-Øst RHF" in out


def test_files_lost_after_the_commit_are_written_again_from_the_ledger(
    tmp_path, capsys, ledger_url
):
    """A kill between the commit and the files: the next start writes them, same bytes."""
    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS, ledger_url=ledger_url)
    _send(box, a_day(), "r")
    _settle(box, capsys)
    before = {p.name: p.read_bytes() for p in box.outbox("vedtak") + box.outbox("utbetaling")}
    for name in before:
        (box.paths.outbox / name).unlink()
    with box.db() as db:
        db.execute("UPDATE vedtak SET delivered_at = NULL")
    intake = box.intake()
    try:
        assert settle.deliver(intake) == 2
    finally:
        intake.ledger.close()
    after = {p.name: p.read_bytes() for p in box.outbox("vedtak") + box.outbox("utbetaling")}
    assert after == before


# --------------------------------------------------------------------------- the calendar


def calendar(**kw) -> settle.Calendar:
    from daemon import config

    return settle.Calendar.from_settings(
        config.Settings(None, None, None, None, settlement=Settlement(**kw))  # type: ignore[arg-type]
    )


OSLO = settle.ZoneInfo("Europe/Oslo")


@pytest.mark.parametrize(
    ("now", "next_batch"),
    [
        ("2026-11-23T12:00", "2026-11-23T16:00"),  # Monday before 16:00
        ("2026-11-23T16:30", "2026-11-24T16:00"),
        ("2026-11-27T17:00", "2026-11-30T16:00"),  # Friday evening: Monday
        ("2026-05-13T17:00", "2026-05-15T16:00"),  # Kristi himmelfartsdag 14 May
        ("2026-12-24T17:00", "2026-12-28T16:00"),  # 25 and 26 December
        ("2026-03-29T12:00", "2026-03-30T16:00"),  # summer time starts that Sunday
    ],
)
def test_next_batch_skips_weekends_and_public_holidays(now, next_batch):
    found = calendar().next_run(datetime.fromisoformat(now).replace(tzinfo=OSLO))
    assert found == datetime.fromisoformat(next_batch).replace(tzinfo=OSLO)


def test_configured_days_off_and_cron():
    cal = calendar(extra_holidays=("2026-12-24",), cron="30 15 * * mon-fri")
    found = cal.next_run(datetime(2026, 12, 23, 17, 0, tzinfo=OSLO))
    assert found == datetime(2026, 12, 28, 15, 30, tzinfo=OSLO)
    assert not cal.working_day(date(2026, 12, 24)) and cal.working_day(date(2026, 12, 23))


def test_a_missed_batch_is_made_up_at_start_once(tmp_path, ledger_url):
    """The daemon was down on Friday 16:00 (the clock says Monday 12:00 UTC): at start
    the Friday batch runs, with Friday 16:00 as its cut-off, once."""
    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS, ledger_url=ledger_url)
    intake = box.intake()
    try:
        cal = settle.Calendar.from_settings(box.settings)
        made = settle.make_up(intake, cal)
        assert made is not None and made.run == 1
        assert settle.make_up(intake, cal) is None
        last = intake.ledger.last_settlement()
    finally:
        intake.ledger.close()
    assert last["kind"] == "make-up"
    assert last["cutoff"] == datetime(2026, 11, 20, 15, 0, tzinfo=UTC).isoformat()


def test_the_scheduled_batch_runs_once_and_not_on_a_day_off(tmp_path, ledger_url):
    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS, ledger_url=ledger_url)
    _send(box, a_day(), "b")
    intake = box.intake()
    try:
        cal = settle.Calendar.from_settings(box.settings)
        may_17 = datetime(2027, 5, 17, 16, 0, 3, tzinfo=OSLO)  # Grunnlovsdag, a Monday
        assert settle.scheduled_batch(intake, cal, may_17) is None
        assert intake.ledger.last_settlement() is None
        monday = datetime(2026, 11, 23, 16, 0, 3, tzinfo=OSLO)  # after the claims (12:00Z)
        first = settle.scheduled_batch(intake, cal, monday)
        assert first is not None and first.run == 1 and first.vedtak == 2
        again = settle.scheduled_batch(intake, cal, monday)  # the job fired twice
        assert again is not None and again.run is None and again.vedtak == 0
        last = intake.ledger.last_settlement()
    finally:
        intake.ledger.close()
    assert last["key"] == "batch:2026-11-23T15:00:00+00:00" and last["kind"] == "scheduled"
    assert len(box.outbox("vedtak")) == 2


def test_payments_answered_after_the_cut_off_wait_for_the_next_batch(tmp_path, ledger_url):
    """The cut-off selects: claims answered (at the sandbox's fixed 2026-11-23 12:00Z)
    after a batch's cut-off are not in it, and are in the first batch after them."""
    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS, ledger_url=ledger_url)
    _send(box, [C((_b(OSMO),))], "late")
    intake = box.intake()
    try:
        before = datetime(2026, 11, 23, 11, 59, 59, tzinfo=UTC)
        early = settle.settle(intake, cutoff=before, kind="manual")
        assert early.vedtak == 0 and box.outbox("vedtak") == []
        after = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)  # answered at this instant
        on_time = settle.settle(intake, cutoff=after, kind="manual")
        assert on_time.vedtak == 1
    finally:
        intake.ledger.close()
    ((_nr, lines),) = vedtak_files(box)[SOUTH_EAST]["vedtak"]
    assert [g for *_, g, _ in lines] == [Decimal("6.96")]


# --------------------------------------------------------------------------- edges of the calendar
# (#20: survivors of the full mutation run of daemon/settlement)


@pytest.fixture
def host_zone(monkeypatch):
    """Set the process's local time zone: what `astimezone()` without a zone would use.
    The batch instants and their keys must not depend on it."""

    def set_zone(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()

    yield set_zone
    monkeypatch.undo()
    time.tzset()


def test_a_batch_key_is_its_instant_in_utc_whatever_the_host_zone(tmp_path, host_zone, ledger_url):
    """On a host whose zone is Oslo: the missed Friday batch is made up once, its key is
    the instant in UTC, and the scheduled job firing for that same instant later does
    not run it again (the make-up and the schedule share the key)."""
    host_zone("Europe/Oslo")
    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS, ledger_url=ledger_url)
    intake = box.intake()
    try:
        cal = settle.Calendar.from_settings(box.settings)
        made = settle.make_up(intake, cal)
        assert made is not None and made.run == 1
        assert settle.make_up(intake, cal) is None  # covered: nothing to make up
        last = intake.ledger.last_settlement()
        friday = datetime(2026, 11, 20, 16, 0, 3, tzinfo=OSLO)  # the job fires late
        again = settle.scheduled_batch(intake, cal, friday)
        assert again is not None and again.run is None and again.vedtak == 0
    finally:
        intake.ledger.close()
    assert last["key"] == "batch:2026-11-20T15:00:00+00:00" and last["kind"] == "make-up"


def test_the_day_off_is_the_calendar_zone_s_day_not_the_host_s(tmp_path, host_zone, ledger_url):
    """24 December 23:30 UTC is Christmas Day 00:30 in Oslo: a day off there, so the
    job does nothing (on a UTC host, whose date is still the 24th, a working day) and
    says why in the log."""
    host_zone("UTC")
    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS, ledger_url=ledger_url)
    _send(box, a_day(), "b")
    intake = box.intake()
    try:
        cal = settle.Calendar.from_settings(box.settings)
        assert cal.zone == OSLO
        with capture_logs() as logged:
            found = settle.scheduled_batch(intake, cal, datetime(2026, 12, 24, 23, 30, tzinfo=UTC))
        assert found is None and intake.ledger.last_settlement() is None
    finally:
        intake.ledger.close()
    assert box.outbox("vedtak") == []
    assert {"event": "settlement_skipped", "reason": "day off", "log_level": "info"} in logged


MARCH_2 = datetime(2026, 3, 2, 16, 0, tzinfo=OSLO)  # a Monday; the yearly cron's one run


def test_runs_between_is_after_start_up_to_and_with_end():
    """`runs_between(start, end)` is (start, end]: a run at `start` is the last batch's,
    one at `end` is in, even a microsecond away."""
    cal = calendar()
    monday = datetime(2026, 11, 23, 16, 0, tzinfo=OSLO)
    tuesday = datetime(2026, 11, 24, 16, 0, tzinfo=OSLO)
    assert list(cal.runs_between(monday, tuesday)) == [tuesday]
    tiny = timedelta(microseconds=1)
    assert list(cal.runs_between(monday - tiny, monday)) == [monday]
    assert list(cal.runs_between(monday - tiny, tuesday - tiny)) == [monday]


def test_last_run_looks_a_month_back_and_next_run_two_months_ahead():
    """A cron that runs once a year (2 March): `last_run` finds it up to 31 days after
    (a make-up after a month down), `next_run` up to 62 days before; outside those
    windows there is no run (None, not an error)."""
    cal = calendar(cron="0 16 2 3 *")
    hour = timedelta(hours=1)
    assert cal.last_run(MARCH_2 + timedelta(days=31) - hour) == MARCH_2
    assert cal.last_run(MARCH_2 + timedelta(days=31) + hour) is None
    assert cal.next_run(MARCH_2 - timedelta(days=62) + hour) == MARCH_2
    assert cal.next_run(MARCH_2 - timedelta(days=62) - hour) is None


def test_no_holiday_country_means_only_the_configured_days_off():
    cal = calendar(holidays_country="", extra_holidays=("2026-12-24",))
    assert cal.days_off is None
    assert cal.working_day(date(2026, 12, 25)) and not cal.working_day(date(2026, 12, 24))
    assert cal.next_run(datetime(2026, 12, 24, 17, 0, tzinfo=OSLO)) == datetime(
        2026, 12, 25, 16, 0, tzinfo=OSLO
    )


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ({"cron": "61 16 * * *"}, "61"),
        ({"timezone": "Europe/Nowhere"}, "Europe/Nowhere"),
        ({"holidays_country": "XX"}, "XX"),
        ({"extra_holidays": ("2026-02-30",)}, ""),
    ],
)
def test_a_bad_settlement_setting_is_a_config_error_naming_the_section(setting, named):
    with pytest.raises(ConfigError, match=r"^\[settlement\] .*" + re.escape(named)):
        calendar(**setting)


def test_the_ledger_answers_what_a_bill_has_been_paid(tmp_path, capsys, ledger_url):
    """The ledger's questions behind COM-06/07 (a uuid paid before) and the payee split
    of a correction: an original, then its credit the next day; a rejected bill and a
    uuid never seen are None (never paid), a credited one 0.00 (paid, taken back).
    Amounts from the lab table above: NOR05003 6.96 + NPU01685 2 × 23.18 = 53.32."""
    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS, ledger_url=ledger_url)
    uid, bad = "{5E771E00-0000-4000-8000-000000000002}", "{5E771E00-0000-4000-8000-000000000003}"
    paid = _b(OSMO, INR, uuid=uid)
    claim = C((paid, _b(BAD_LAB, uuid=bad)))
    _send(box, [claim], "p1")
    inst, other = claim.institution, "999000777"
    ledger = box.intake().ledger
    try:
        assert ledger.paid_bill(inst, uid) == Decimal("53.32")
        assert ledger.paid_bill(inst, bad) is None  # LAB-09: rejected, never paid
        assert ledger.paid_bill(inst, "{never}") is None
        assert ledger.paid_bill(other, uid) is None  # a uuid is the institution's own
        assert ledger.paid_bills(inst, [uid, bad, "{never}"]) == {uid: Decimal("53.32")}
        assert ledger.paid_by_payee(inst, uid) == {"RHF:Helse Sør-Øst RHF": Decimal("53.32")}
    finally:
        ledger.close()
    _settle(box, capsys)
    _next_day(box)
    credit = B(paid.lines, uuid=uid, fnr=paid.fnr, date=paid.date, transaction_type="5")
    _send(box, [C((credit,))], "p2")
    ledger = box.intake().ledger
    try:
        assert ledger.paid_bill(inst, uid) == Decimal("0.00")
        assert ledger.paid_bills(inst, [uid]) == {uid: Decimal("0.00")}
        assert ledger.paid_by_payee(inst, uid) == {}  # nothing left with any payee
    finally:
        ledger.close()


def test_every_bill_s_remarks_reach_its_vedtak_line(tmp_path, capsys, ledger_url):
    """What the AppRec told the sender about a bill is in the vedtak's Regning as
    Merknad, for every bill, the first one too (LAB-09: 9.99 claimed where the table
    says 6.96)."""
    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS, ledger_url=ledger_url)
    _send(box, [C((_b(BAD_LAB), _b(OSMO), _b(BAD_LAB)))], "r")
    _settle(box, capsys)
    (path,) = box.outbox("vedtak")
    multipart, _ = mime.parse(path.read_bytes())
    body = etree.fromstring(multipart.attachments[0].data).find(".//m22:Oppgjorsresultat", M22)
    merknader = [
        [m.text for m in r.iterfind("m22:Merknad", M22)] for r in body.findall("m22:Regning", M22)
    ]
    lab09 = "krevd 9.99, sats 6.96 [LAB-09]"
    assert [[lab09 in m for m in ms] for ms in merknader] == [[True], [], [True]], merknader


@pytest.mark.parametrize(
    ("key", "with_table", "says"),
    [
        (None, True, "no payee: the institution was not in the registry when the bill was decided"),
        (
            "RHF:Helse Nord-Vest",
            True,
            "no RHF named 'Helse Nord-Vest' in the RHF table (rhf.toml); known: Helse Sør-Øst"
            " RHF, Helse Vest RHF, Helse Midt-Norge RHF, Helse Nord RHF",
        ),
        (
            "RHF:Helse Vest RHF",
            False,
            "no RHF named 'Helse Vest RHF' in the RHF table (rhf.toml); known: none",
        ),
        (
            "INST:999000999",
            True,
            "institution 999000999 is not in the institution registry (institutions.toml)",
        ),
        ("BANK:123", True, "unknown kind of payee 'BANK' (RHF:<name> or INST:<orgnr>)"),
    ],
)
def test_why_a_payee_cannot_be_paid_in_the_operator_s_words(key, with_table, says):
    """What `status` and `payments held` tell the operator about held payments (the
    four RHFs are the shipped rhf.toml's)."""
    from daemon.registers import tariffs
    from daemon.registers.registry import Registry

    table = tariffs.load(tariffs.SHIPPED_DIR) if with_table else None
    assert settle.why_unaddressable(key, table, Registry()) == says


def test_held_payments_as_status_json_shows_them():
    """`status --json` and `payments held` show held payments in these words; kroner
    as a string, so no float rounding reaches the operator."""
    held = settle.Held(
        payee="RHF:Helse Nord-Vest",
        payments=3,
        approved=Decimal("1234.50"),
        since="2026-11-23T12:00:00+00:00",
        reason="no RHF named 'Helse Nord-Vest'",
    )
    assert held.as_dict() == {
        "payee": "RHF:Helse Nord-Vest",
        "payments": 3,
        "approved": "1234.50",
        "since": "2026-11-23T12:00:00+00:00",
        "reason": "no RHF named 'Helse Nord-Vest'",
    }
