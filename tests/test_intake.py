"""End to end through the real intake: inbox file → ledger → AppRec in the outbox."""

from __future__ import annotations

import json
import re

from lxml import etree

from daemon.schemas import Schemas
from daemon.transport import mime
from daemon.transport.ebms import NS
from tests.conftest import demo_claim, shared_or_skip, wrap_demo

AR = {"ar": "http://www.kith.no/xmlstds/apprec/2004-11-21"}
BOTH_BACKENDS = True  # every test here runs on SQLite and on PostgreSQL (conftest.py)


def read_output(path) -> tuple[etree._Element, etree._Element | None]:
    """(SOAP envelope, AppRec or None) of an outbox file."""
    multipart, problem = mime.parse(path.read_bytes())
    assert problem is None, problem
    soap = etree.fromstring(multipart.start.data)
    payload = multipart.attachments[0].data if multipart.attachments else None
    return soap, etree.fromstring(payload) if payload else None


def apprec_of(sandbox) -> etree._Element:
    files = sandbox.outbox("apprec")
    assert len(files) == 1, files
    return read_output(files[0])[1]


def errors(apprec: etree._Element) -> list[dict]:
    return [dict(e.attrib) for e in apprec.findall("ar:Error", AR)]


def test_valid_claim_gets_one_ok_apprec_and_an_ack(sandbox):
    """A valid claim: AppRec status 1 with roles reversed, plus the requested Ack."""
    raw = wrap_demo(demo_claim(), message_id="msg-ok-1", conversation_id="conv-1")
    sandbox.drop(raw, "claim.msg")
    sandbox.process()

    (apprec_file,) = sandbox.outbox("apprec")
    soap, apprec = read_output(apprec_file)
    assert apprec.find("ar:Status", AR).get("V") == "1"
    assert errors(apprec) == []
    assert apprec.findtext("ar:OriginalMsgId/ar:Id", namespaces=AR) == (
        "5e0b7c1a-3f0e-4f7a-9a1d-0c2b4d6e8f10"
    )
    assert apprec.find("ar:OriginalMsgId/ar:MsgType", AR).get("V") == "POM"
    header = soap.find(".//eb:MessageHeader", NS)
    assert header.findtext("eb:From/eb:PartyId", namespaces=NS) == "79768"
    assert header.findtext("eb:From/eb:Role", namespaces=NS) == "KontrollUtbetaler"
    assert header.findtext("eb:To/eb:PartyId", namespaces=NS) == "90001"
    assert header.findtext("eb:To/eb:Role", namespaces=NS) == "Behandler"
    assert header.findtext("eb:Action", namespaces=NS) == "Svarmelding"
    assert header.findtext("eb:Service", namespaces=NS) == "BehandlerKrav"
    assert header.findtext("eb:CPAId", namespaces=NS) == "kravmottak:demo:1"
    assert header.findtext("eb:ConversationId", namespaces=NS) == "conv-1"
    assert header.findtext("eb:MessageData/eb:RefToMessageId", namespaces=NS) == "msg-ok-1"
    assert Schemas.load().apprec.validate(apprec)

    (ack_file,) = sandbox.outbox("ack")
    ack_soap, _ = read_output(ack_file)
    assert ack_soap.findtext(".//eb:Action", namespaces=NS) == "Acknowledgment"
    ack = ack_soap.find("SOAP:Header/eb:Acknowledgment", NS)
    assert ack.findtext("eb:RefToMessageId", namespaces=NS) == "msg-ok-1"
    assert Schemas.load().envelope.validate(ack_soap)

    archived = list(sandbox.paths.archive.rglob("*--claim.msg"))
    assert len(archived) == 1 and archived[0].read_bytes() == raw
    assert list(sandbox.paths.work.iterdir()) == []
    with sandbox.db() as db:
        assert db.execute("SELECT state, apprec_status FROM messages").fetchall() == [
            ("answered", "1")
        ]
        bills = db.execute("SELECT regning_nr, verdict, approved FROM bills ORDER BY id").fetchall()
    assert bills == [
        ("1001", "approved", "509.75"),
        ("1002", "approved", "6.96"),
        ("1003", "approved", "191.67"),
    ]


def test_no_ack_unless_requested(sandbox):
    """AckRequested absent: only the AppRec is written."""
    sandbox.drop(wrap_demo(ack_requested=False))
    sandbox.process()
    assert sandbox.outbox("ack") == []
    assert len(sandbox.outbox("apprec")) == 1


def test_gzipped_payload_is_inflated(sandbox):
    """A gzip payload part is unpacked before validation."""
    sandbox.drop(wrap_demo(gzip=True))
    sandbox.process()
    assert apprec_of(sandbox).find("ar:Status", AR).get("V") == "1"


def test_schema_errors_are_all_named_with_location(sandbox):
    """A broken claim: AppRec Avvist, one T02 per schema error with path and line."""
    broken = (
        demo_claim()
        .replace(b' regningNr="1002"', b"")
        .replace(b'typeTransaksjon="1"', b'typeTransaksjon="9"', 1)
    )
    sandbox.drop(wrap_demo(broken), "broken.msg")
    sandbox.process()

    apprec = apprec_of(sandbox)
    assert apprec.find("ar:Status", AR).get("V") == "2"
    found = errors(apprec)
    assert {e["V"] for e in found} == {"T02"}
    assert len(found) == 2
    assert any("regningNr" in e["DN"] and "EnkeltRegning[2]" in e["OT"] for e in found)
    assert any("typeTransaksjon" in e["DN"] and "EnkeltRegning[1]" in e["OT"] for e in found)
    assert all(re.search(r"line \d+", e["OT"]) for e in found)
    # the original is kept in quarantine with a report beside it
    (kept,) = sandbox.paths.quarantine.glob("*--broken.msg")
    report = json.loads(kept.with_name(kept.name + ".err.json").read_text())
    assert report["state"] == "quarantined"
    assert len(report["problems"]) == 2
    assert report["answered_with"] == [p.name for p in sandbox.outbox()]


def test_rule_remark_is_reported_per_bill(sandbox):
    """COM-04: a bill whose sum differs from its lines is rejected, status 3, OT=regningNr."""
    claim = (
        demo_claim()
        .replace(b'sumBelop="6.96"', b'sumBelop="7.00"')
        .replace(b'sumKravBelop="708.38"', b'sumKravBelop="708.42"')
    )
    sandbox.drop(wrap_demo(claim))
    sandbox.process()
    apprec = apprec_of(sandbox)
    assert apprec.find("ar:Status", AR).get("V") == "3"
    (err,) = errors(apprec)
    assert err["OT"] == "1002"
    assert err["S"] == "2.16.578.1.12.4.1.1.8223"
    assert "[COM-04]" in err["DN"] and "7.00" in err["DN"]
    with sandbox.db() as db:
        rows = db.execute(
            "SELECT b.regning_nr, b.verdict, r.rule_id FROM bills b"
            " LEFT JOIN remarks r ON r.bill_id = b.id ORDER BY b.id"
        ).fetchall()
    assert rows == [
        ("1001", "approved", None),
        ("1002", "rejected", "COM-04"),
        ("1003", "approved", None),
    ]


def test_resent_file_gets_the_identical_stored_answer(sandbox):
    """The same bytes again: same AppRec bytes, one processing in the ledger."""
    raw = wrap_demo(message_id="resend-1")
    sandbox.drop(raw, "first.msg")
    sandbox.process()
    (first,) = sandbox.outbox("apprec")
    first_bytes = first.read_bytes()
    first.unlink()  # the sender's pickup took it

    sandbox.drop(raw, "again.msg")
    sandbox.process()
    (second,) = sandbox.outbox("apprec")
    assert second.name == first.name and second.read_bytes() == first_bytes
    with sandbox.db() as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (1,)
        assert db.execute("SELECT state, duplicate FROM receipts ORDER BY id").fetchall() == [
            ("answered", 0),
            ("answered", 1),
        ]


def test_same_message_id_with_other_content_is_refused(sandbox):
    """A reused MessageId with different content: AppRec Avvist E10, nothing reprocessed."""
    sandbox.drop(wrap_demo(message_id="reused-1"), "a.msg")
    sandbox.process()
    for f in sandbox.outbox():
        f.unlink()
    other = demo_claim().replace(b"Laboratoriemedisin", b"Radiologi")
    sandbox.drop(wrap_demo(other, message_id="reused-1"), "b.msg")
    sandbox.process()
    apprec = apprec_of(sandbox)
    assert apprec.find("ar:Status", AR).get("V") == "2"
    (err,) = errors(apprec)
    assert err["V"] == "E10" and "reused-1" in err["DN"]
    with sandbox.db() as db:
        assert db.execute("SELECT state FROM messages ORDER BY id").fetchall() == [
            ("answered",),
            ("quarantined",),
        ]


def test_unknown_partner_gets_message_error_and_apprec(sandbox):
    """No agreement for From/CPAId: ebMS MessageError plus AppRec E10; not processed."""
    from daemon.tools.wrap import wrap

    sandbox.drop(wrap(demo_claim(), from_her="424242", cpa_id="nobody:1"))
    sandbox.process()
    (err_file,) = sandbox.outbox("error")
    soap, _ = read_output(err_file)
    error = soap.find("SOAP:Header/eb:ErrorList/eb:Error", NS)
    assert error.get(f"{{{NS['eb']}}}errorCode") == "ValueNotRecognized"
    assert "424242" in error.findtext("eb:Description", namespaces=NS)
    assert Schemas.load().envelope.validate(soap)
    apprec = apprec_of(sandbox)
    assert [e["V"] for e in errors(apprec)] == ["E10"]
    assert sandbox.outbox("ack") == []


def test_half_written_files_are_left_alone(sandbox):
    """Temp names and files changed within `stable_seconds` are not claimed (an hour
    here, so a slow machine between the write and the poll changes nothing)."""
    from daemon import files

    cfg = sandbox.config_path
    cfg.write_text(cfg.read_text().replace("stable_seconds = 1.0", "stable_seconds = 3600.0"))
    assert sandbox.settings.intake.stable_seconds == 3600.0
    inbox = sandbox.paths.inbox
    (inbox / "upload.msg.part").write_bytes(b"partial")
    (inbox / ".hidden.msg").write_bytes(b"partial")
    (inbox / "fresh.msg").write_bytes(wrap_demo())  # mtime now
    ready, settling = files.scan(inbox, sandbox.settings.intake)
    assert ready == [] and settling == 1
    intake = sandbox.intake()
    try:
        assert intake.poll() == 0
    finally:
        intake.ledger.close()
    assert sorted(p.name for p in inbox.iterdir()) == [
        ".hidden.msg",
        "fresh.msg",
        "upload.msg.part",
    ]


def test_official_sample_wrapped_gets_valid_apprec(sandbox):
    """The official NPR-BKM example, wrapped in ebMS: one AppRec valid by the official XSD."""
    sample = shared_or_skip("samples/npr-bkm-0.78/eksempel.xml").read_bytes()
    official = shared_or_skip("apprec/AppRec-v1-2004-11-21.xsd")
    # its MsgHead carries a 2002 test signature by a certificate no partner registered;
    # the demo partner need not sign, so the sample is sent without it
    root = etree.fromstring(sample)
    root.remove(root.find("{http://www.w3.org/2000/09/xmldsig#}Signature"))
    sandbox.accept_official_sample("981793758")  # its MsgHead Sender
    sandbox.drop(wrap_demo(etree.tostring(root, xml_declaration=True, encoding="UTF-8")))
    sandbox.process()
    apprec = apprec_of(sandbox)
    schema = etree.XMLSchema(etree.parse(str(official)))
    assert schema.validate(apprec), schema.error_log
    assert apprec.find("ar:Status", AR).get("V") in ("1", "3")


def test_official_sample_with_its_foreign_signature_is_not_trusted(sandbox):
    """A present signature is always checked: the sample's 2002 test cert is not trusted."""
    sample = shared_or_skip("samples/npr-bkm-0.78/eksempel.xml").read_bytes()
    sandbox.drop(wrap_demo(sample))
    sandbox.process()
    (err,) = errors(apprec_of(sandbox))
    assert err["V"] == "S02" and "RTV-TEST-AVSENDER" in err["DN"]


def test_every_official_npr_sample_validates_against_our_schemas(sandbox):
    """Each sample MsgHead in shared/…/npr-bkm-0.78 passes `kravmottak validate`."""
    from daemon.tools.checkfile import check_file

    folder = shared_or_skip("samples/npr-bkm-0.78")
    samples = [p for p in folder.glob("*.xml")]
    assert len(samples) >= 3
    for sample in samples:
        assert check_file(sample, sandbox.settings) == [], sample.name


def test_unknown_partner_is_refused_before_its_payload_is_read(sandbox):
    """No agreement: only E10, even when the payload is garbage (it is never opened)."""
    from daemon.tools.wrap import wrap

    sandbox.drop(wrap(b"<not-even-xml", from_her="424242", cpa_id="nobody:1"))
    sandbox.process()
    assert [e["V"] for e in errors(apprec_of(sandbox))] == ["E10"]


def test_answers_come_from_us_even_if_misaddressed(sandbox):
    """A message To someone else is refused (E21) — and our answer is From us, not them."""
    from daemon.tools.wrap import wrap

    sandbox.drop(wrap(demo_claim(), from_her="90001", cpa_id="kravmottak:demo:1", to_her="12345"))
    sandbox.process()
    assert [e["V"] for e in errors(apprec_of(sandbox))] == ["E21"]
    for path in sandbox.outbox():
        soap, _ = read_output(path)
        assert soap.findtext(".//eb:MessageHeader/eb:From/eb:PartyId", namespaces=NS) == "79768"


def test_episode_id_shared_by_two_patients_is_refused(sandbox):
    """Bills point at episodeID across patients; an ambiguous id is refused (T99)."""
    claim = (
        demo_claim()
        .replace(b'episodeID="2" debitor', b'episodeID="1" debitor')
        .replace(b'episodeID="2" sumBelop', b'episodeID="1" sumBelop')
    )
    sandbox.drop(wrap_demo(claim))
    sandbox.process()
    (err,) = errors(apprec_of(sandbox))
    assert err["V"] == "T99" and "episodeID 1" in err["DN"]


def test_two_claims_in_one_msghead_are_refused(sandbox):
    """Content must carry exactly one Melding; a second one is never silently ignored."""
    start = demo_claim().index(b"<Melding")
    end = demo_claim().index(b"</Melding>") + len(b"</Melding>")
    melding = demo_claim()[start:end]
    claim = demo_claim().replace(melding, melding + melding)
    sandbox.drop(wrap_demo(claim))
    sandbox.process()
    (err,) = errors(apprec_of(sandbox))
    assert err["V"] == "T10" and "nøyaktig ett" in err["DN"]


def test_msghead_of_another_type_is_refused(sandbox):
    """Only POM/LROM are claims; an APPREC-typed MsgHead is refused (T10)."""
    sandbox.drop(wrap_demo(demo_claim().replace(b'<Type V="POM"', b'<Type V="APPREC"')))
    sandbox.process()
    assert [e["V"] for e in errors(apprec_of(sandbox))] == ["T10"]


def test_impossible_gendate_still_gives_a_valid_apprec(sandbox):
    """A GenDate that is no real date (Feb 30, 25:61) is not echoed into IssueDate."""
    bad = demo_claim().replace(b"2026-11-02T08:15:00+01:00", b"2026-02-30T25:61:00+01:00")
    sandbox.drop(wrap_demo(bad, message_id="baddate"))
    sandbox.process()
    apprec = apprec_of(sandbox)
    assert Schemas.load().apprec.validate(apprec)
    assert apprec.findtext("ar:OriginalMsgId/ar:IssueDate", namespaces=AR) != (
        "2026-02-30T25:61:00+01:00"
    )


def test_retransmission_in_a_new_envelope_gets_the_stored_answer(sandbox):
    """Same MessageId and payload, new Timestamp: a retransmission, not a conflict."""
    from datetime import UTC, datetime

    claim = demo_claim()
    first = wrap_demo(claim, message_id="re-1", timestamp=datetime(2026, 11, 2, 9, 0, tzinfo=UTC))
    again = wrap_demo(claim, message_id="re-1", timestamp=datetime(2026, 11, 2, 9, 5, tzinfo=UTC))
    assert first != again
    sandbox.drop(first)
    sandbox.process()
    (answer,) = sandbox.outbox("apprec")
    stored = answer.read_bytes()
    answer.unlink()
    sandbox.drop(again)
    sandbox.process()
    (resent,) = sandbox.outbox("apprec")
    assert resent.read_bytes() == stored
    with sandbox.db() as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (1,)
        assert db.execute("SELECT duplicate FROM receipts ORDER BY id").fetchall() == [(0,), (1,)]


def test_refusal_for_a_missing_agreement_is_not_final(sandbox):
    """After the partner is registered, the same file sent again is processed anyway."""
    from daemon import cli
    from daemon.tools.wrap import wrap

    raw = wrap(demo_claim(), from_her="70707", cpa_id="late:1")
    sandbox.drop(raw)
    sandbox.process()
    assert [e["V"] for e in errors(apprec_of(sandbox))] == ["E10"]
    for f in sandbox.outbox():
        f.unlink()
    args = [
        "--config",
        str(sandbox.config_path),
        "partner",
        "add",
        "--her-id",
        "70707",
        "--cpa-id",
        "late:1",
        "--orgnr",
        "983974678",
        "--no-require-signature",
    ]
    assert cli.main(args) == 0
    sandbox.drop(raw)
    sandbox.process()
    assert apprec_of(sandbox).find("ar:Status", AR).get("V") == "1"
