"""Big claims read as a stream and judged in chunks (#17.4), through the real intake.

The limits are lowered in the test config (`stream_above_bytes` to 1 KiB, chunks of 7
bills) so a claim of a few dozen bills takes the streamed path. Every comparison is
against the whole-message path on the same bytes, in a sandbox of its own: the same
AppRec status and errors, and bill by bill the same verdict, amounts, payee and remarks
in the ledger. The claim mixes what spans chunks: duplicates of a service and of a uuid
far apart in the file, a credit of a bill in the same file, three CT exams of one
patient on one day in three chunks (the two earliest by time are paid), wrong amounts
and a bill without an episode.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

from lxml import etree

from daemon import logs
from daemon.registers import tariffs
from daemon.transport import keys, mime, trust
from tests.claims import DEMO_HF, B, C, L, P, msghead, person_number, registry
from tests.conftest import ROOT, Sandbox, make_sandbox, wrap_demo

AR = {"ar": "http://www.kith.no/xmlstds/apprec/2004-11-21"}
DAY = "2026-10-05"
CT_HEAD, CT_CHEST, CT_KNEE = "SAA0AD", "SSC0AD", "SNG0AD"
REGISTER = tariffs.load(tariffs.SHIPPED_DIR).radiology
LAB = ("NOR05003", "6.96")  # an NLK code and its rate (state sector), as generate.py uses

BOTH_BACKENDS = True  # the tests taking `ledger_url` run on SQLite and PostgreSQL (conftest.py)


def rad(code: str) -> P:
    entry = REGISTER.code(code)
    found = REGISTER.rate(entry.category, "stat", date.fromisoformat(DAY))
    return P(code, f"{found:.2f}")


def _uuid(n: int) -> str:
    return f"{{BBBBBBBB-0000-4000-8000-{n:012d}}}"


def mixed_claim(bills: int = 40) -> bytes:
    """`bills` lab bills of distinct patients, with cross-chunk cases put in."""
    specs: list[B] = [
        B((L(*LAB),), fnr=person_number(n, born="030370"), uuid=_uuid(n),
          date=f"2026-10-{1 + n % 20:02d}T10:00:00")
        for n in range(bills)
    ]  # fmt: skip
    dup = person_number(200, born="030370")
    # the same service twice (COM-06 by patient, codes, time), chunks apart
    specs[2] = B((L(*LAB),), fnr=dup, uuid=_uuid(1002), date="2026-10-03T08:00:00")
    specs[20] = B((L(*LAB),), fnr=dup, uuid=_uuid(1020), date="2026-10-03T08:00:00")
    # the same uuid twice (COM-06 by uuid), and a credit of a bill in this file (COM-07)
    specs[30] = B((L(*LAB),), fnr=person_number(201, born="030370"), uuid=_uuid(3))
    specs[33] = B((), fnr=None, transaction_type="5", uuid=_uuid(10), sum="6.96")
    # three CT exams of one patient on one day, in three chunks; by time the last two
    ct = person_number(202, born="030370")
    for pos, code, at in ((5, CT_HEAD, "13:00"), (15, CT_CHEST, "09:00"), (25, CT_KNEE, "11:00")):
        specs[pos] = B((rad(code),), fnr=ct, uuid=_uuid(2000 + pos), date=f"{DAY}T{at}:00")
    # a wrong amount (LAB-09) and a bill without an episode
    specs[8] = B((L(LAB[0], "9.99"),), fnr=person_number(203, born="030370"), uuid=_uuid(8))
    specs[12] = B((), no_episode=True, uuid=_uuid(12), sum="6.96")
    return msghead(C(tuple(specs)))


def _sandbox(root: Path, streamed: bool, extra: str = "", ledger_url: str | None = None) -> Sandbox:
    sb = make_sandbox(root, registry(DEMO_HF), ledger_url=ledger_url)
    if streamed:
        text = sb.config_path.read_text()
        limits = f"stream_above_bytes = 1024\nstream_chunk_bills = 7\n{extra}"
        sb.config_path.write_text(text.replace("[intake]\n", f"[intake]\n{limits}", 1))
    return sb


def _run(sb: Sandbox, raw: bytes) -> list[dict]:
    stream = io.StringIO()
    logs.configure("info", stream)
    try:
        sb.drop(raw, "big.msg")
        sb.process()
    finally:
        logs.configure("info")
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _apprec(sb: Sandbox) -> etree._Element:
    (path,) = sb.outbox("apprec")
    multipart, _ = mime.parse(path.read_bytes())
    return etree.fromstring(multipart.attachments[0].data)


def _outcome(sb: Sandbox):
    db = sb.db()
    message = db.execute("SELECT state, apprec_status, problems FROM messages").fetchall()
    bills = db.execute(
        "SELECT regning_nr, uuid, verdict, claimed, approved, payee, codes, instant"
        " FROM bills ORDER BY id"
    ).fetchall()
    remarks = db.execute(
        "SELECT b.regning_nr, r.rule_id, r.number, r.text, r.line FROM remarks r"
        " JOIN bills b ON b.id = r.bill_id ORDER BY b.id, r.rowid"
    ).fetchall()
    lines = db.execute(
        "SELECT b.regning_nr, l.line, l.code, l.approved, l.verdict FROM bill_lines l"
        " JOIN bills b ON b.id = l.bill_id ORDER BY b.id, l.line"
    ).fetchall()
    exams = db.execute("SELECT code, day, instant, active FROM exams ORDER BY rowid").fetchall()
    root = _apprec(sb)
    errors = [
        (e.find("ar:Error", AR).get("V"), e.findtext("ar:Details", None, AR))
        for e in root.iterfind(".//ar:Error/..", AR)
    ]
    status = root.find(".//ar:Status", AR).get("V")
    return message, bills, remarks, lines, exams, status, errors


def test_the_streamed_path_judges_every_bill_as_the_whole_message_path(tmp_path, ledger_url):
    """On SQLite and on PostgreSQL for the streamed path; the whole path on SQLite."""
    raw = wrap_demo(mixed_claim())
    whole = _sandbox(tmp_path / "whole", False)
    streamed = _sandbox(tmp_path / "stream", True, "progress_every_bills = 15\n", ledger_url)
    whole_log, stream_log = _run(whole, raw), _run(streamed, raw)
    # progress while reading (the number of bills not known yet), then while judging
    progress = [(x["stage"], x["bills"], x["of"]) for x in stream_log if x["event"] == "progress"]
    assert progress == [
        ("read", 15, None), ("read", 30, None), ("decide", 15, 40), ("decide", 30, 40)
    ]  # fmt: skip
    rates = [x["bills_per_s"] for x in stream_log if x["event"] == "progress"]
    assert rates[0] is None and rates[2] is None and rates[1] > 0 and rates[3] > 0
    assert not [x for x in whole_log if x["event"] == "streaming"]
    assert [x["event"] for x in stream_log if x["event"] == "streaming"] == ["streaming"]
    expected, got = _outcome(whole), _outcome(streamed)
    assert got == expected
    message, bills, remarks, _lines, exams, _status, _errors = got
    assert message[0][:2] == ("answered", "3")  # some bills refused
    verdicts = {nr: (verdict, Decimal(approved)) for nr, _u, verdict, _c, approved, *_ in bills}
    assert len(bills) == 40
    # regningNr is 1001 + the position in the file (tests.claims)
    assert verdicts["1021"][0] == "rejected"  # the service of bill 1003 again
    assert verdicts["1031"][0] == "rejected"  # the uuid of bill 1004 again
    assert verdicts["1034"][0] == "rejected"  # credits bill 1011 of this same file
    assert verdicts["1006"] == ("rejected", Decimal("0"))  # the third CT by time
    assert verdicts["1016"][0] == verdicts["1026"][0] == "approved"
    assert verdicts["1001"] == ("approved", Decimal("6.96"))
    rules = {(nr, rule) for nr, rule, *_ in remarks}
    assert {("1021", "COM-06"), ("1031", "COM-06"), ("1034", "COM-07")} <= rules
    assert ("1006", "RAD-06") in rules and ("1009", "LAB-09") in rules
    assert len([e for e in exams if e[3] == 1]) == 2
    # no personal data in the log lines of the streamed path
    assert person_number(202, born="030370") not in json.dumps(stream_log)


def test_streamed_claim_rules_refuse_the_whole_message_as_the_whole_path(tmp_path):
    """COM-04 counts every bill of the unit, read back from the spill."""
    specs = tuple(
        B((L(*LAB),), fnr=person_number(n, born="040470"), uuid=_uuid(500 + n)) for n in range(20)
    )
    raw = wrap_demo(msghead(C(specs, krav_count=19)))
    whole, streamed = _sandbox(tmp_path / "whole", False), _sandbox(tmp_path / "stream", True)
    _run(whole, raw), _run(streamed, raw)
    expected, got = _outcome(whole), _outcome(streamed)
    assert got == expected
    assert got[5] == "2" and got[1] == []  # refused whole: no bill recorded
    assert "9040" in [code for code, _ in got[6]]


def test_a_schema_error_in_a_streamed_bill_is_answered_with_its_line(tmp_path):
    claim = mixed_claim(40).replace(b'typeTransaksjon="1"', b'typeTransaksjon="X"', 10)
    sb = _sandbox(tmp_path / "stream", True)
    _run(sb, wrap_demo(claim))
    _message, bills, *_, status, errors = _outcome(sb)
    assert status == "2" and bills == []
    assert errors and all(code == "T02" for code, _ in errors)
    assert len(errors) >= 9  # every bill after the first (validated in the skeleton)


def test_a_signed_payload_over_max_whole_bytes_is_refused_with_t99(tmp_path):
    sb = _sandbox(tmp_path / "stream", True, "max_whole_bytes = 2048\n")
    settings = sb.settings
    ours = keys.load_pair(settings.paths.private_key, settings.paths.certificate, None)
    signed = trust.sign_msghead(etree.fromstring(mixed_claim(40)), ours)
    _run(sb, wrap_demo(etree.tostring(signed, xml_declaration=True, encoding="UTF-8")))
    root = _apprec(sb)
    assert root.find(".//ar:Status", AR).get("V") == "2"
    codes = [e.get("V") for e in root.iterfind(".//ar:Error", AR)]
    assert codes == ["T99"]
    assert "signaturkontroll" in etree.tostring(root, encoding="unicode")


def test_a_kill_inside_a_streamed_message_leaves_it_to_be_done_again(tmp_path, ledger_url):
    """SIGKILL while the daemon judges a streamed message: at restart it is read again
    from the start, answered once, every bill recorded once, and no spill is left."""
    sb = _sandbox(tmp_path / "stream", True, "progress_every_bills = 7\n", ledger_url)
    text = sb.config_path.read_text().replace("stream_chunk_bills = 7", "stream_chunk_bills = 1")
    sb.config_path.write_text(text)
    claim = mixed_claim(400)
    raw = wrap_demo(claim)
    sb.drop(raw, "big.msg")
    cmd = [sys.executable, "-m", "daemon", "--config", str(sb.config_path), "run"]
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            while b'"progress"' not in log.read_bytes():  # inside the message
                assert proc.poll() is None, log.read_text()
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert list(sb.paths.work.iterdir()) and sb.outbox("apprec") == []
    sb.process()
    message, bills, *_, _status, _errors = _outcome(sb)
    assert len(message) == 1 and len(bills) == 400
    assert len({b[0] for b in bills}) == 400  # each bill once
    assert list(sb.paths.work.iterdir()) == []
    whole = _sandbox(tmp_path / "whole", False)
    _run(whole, raw)
    assert _outcome(whole)[1:] == _outcome(sb)[1:]


def test_a_small_gzip_file_inflating_over_the_limit_is_streamed_inside_a_commit_group(tmp_path):
    """The file is small (handled in a commit group), its payload inflates over the
    limit: the spill stays open until the group's commit has delivered and counted it."""
    claim = mixed_claim()
    raw = wrap_demo(claim, gzip=True)
    assert len(raw) < len(claim)
    limit = (len(raw) + len(claim)) // 2  # the file below it, the payload above
    streamed = make_sandbox(tmp_path / "stream", registry(DEMO_HF))
    text = streamed.config_path.read_text()
    streamed.config_path.write_text(
        text.replace("[intake]\n", f"[intake]\nstream_above_bytes = {limit}\n", 1)
    )
    log = _run(streamed, raw)
    assert [x["event"] for x in log if x["event"] == "streaming"] == ["streaming"]
    whole = _sandbox(tmp_path / "whole", False)
    _run(whole, raw)
    assert _outcome(streamed) == _outcome(whole)
    assert [x["bills"] for x in log if x["event"] == "answered"] == [40]
