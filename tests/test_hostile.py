"""Bad and hostile input: always a clear answer or a written reason, never a crash."""

from __future__ import annotations

import gzip
import json

import pytest

from daemon.domain import Layer, PartyRef
from daemon.transport import ebms, mime
from daemon.transport.xmlsafe import parse_untrusted
from tests.conftest import demo_claim, wrap_demo
from tests.test_intake import AR, apprec_of, errors

XXE_FILE = b"""<?xml version="1.0"?>
<!DOCTYPE MsgHead [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24">&xxe;</MsgHead>"""

XXE_PARAMETER = b"""<?xml version="1.0"?>
<!DOCTYPE MsgHead [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/evil.dtd"> %remote;]>
<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24"/>"""

BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'.encode()
        for i in range(1, 10)
    )
    + b']>\n<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24">&lol9;</MsgHead>'
)


QUADRATIC_BLOWUP = (
    b'<?xml version="1.0"?>\n<!DOCTYPE m [<!ENTITY a "' + b"x" * 50_000 + b'">]>\n'
    b'<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24">'
    + b"&a;" * 50_000
    + b"</MsgHead>"
)


@pytest.mark.parametrize(
    "payload",
    [XXE_FILE, XXE_PARAMETER, BILLION_LAUGHS, QUADRATIC_BLOWUP],
    ids=["xxe", "param-entity", "laughs", "quadratic"],
)
def test_entity_attacks_in_payload_are_refused_with_t01(sandbox, payload):
    """DOCTYPE in the payload: AppRec Avvist T01, nothing resolved, file quarantined."""
    sandbox.drop(wrap_demo(payload), "evil.msg")
    sandbox.process()
    apprec = apprec_of(sandbox)
    assert apprec.find("ar:Status", AR).get("V") == "2"
    (err,) = errors(apprec)
    assert err["V"] == "T01" and "DOCTYPE" in err["DN"]
    assert "root:" not in apprec_of(sandbox).xpath("string()")
    assert len(list(sandbox.paths.quarantine.glob("*--evil.msg"))) == 1


def test_entity_attack_in_envelope_is_quarantined_with_reason(sandbox):
    """DOCTYPE in the SOAP part: no sender known, so quarantine + .err.json only."""
    raw = mime.build(
        [mime.Part("soap@x", "text/xml", XXE_FILE), mime.Part("p@x", "text/xml", demo_claim())]
    )
    sandbox.drop(raw, "evil-env.msg")
    sandbox.process()
    assert sandbox.outbox() == []
    (kept,) = sandbox.paths.quarantine.glob("*--evil-env.msg")
    report = json.loads(kept.with_name(kept.name + ".err.json").read_text())
    assert report["problems"][0]["code"] == "T01"
    assert report["problems"][0]["layer"] == "envelope"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "T10"),
        (b"\x00\x01\x02 binary garbage", "T10"),
        (b"<MsgHead/>", "T10"),
        (
            b'Content-Type: multipart/related; boundary="b"\r\n\r\n--b\r\n\r\n<a>\r\n--b--\r\n',
            "T01",
        ),
    ],
    ids=["empty", "binary", "bare-xml", "broken-soap"],
)
def test_unusable_files_are_quarantined_not_crashed_on(sandbox, raw, code):
    """Files that are no ebMS message at all get a quarantine report naming the reason."""
    sandbox.drop(raw, "junk.msg")
    sandbox.drop(wrap_demo(), "good.msg")  # the daemon carries on with the next file
    sandbox.process()
    (kept,) = sandbox.paths.quarantine.glob("*--junk.msg")
    report = json.loads(kept.with_name(kept.name + ".err.json").read_text())
    assert report["problems"][0]["code"] == code
    assert len(sandbox.outbox("apprec")) == 1  # only the good one could be answered


def test_manifest_pointing_nowhere_gets_message_error(sandbox):
    """eb:Manifest names a cid that is not in the MIME message."""
    route = ebms.Route(
        PartyRef("90001", "HER", "Behandler"),
        PartyRef("79768", "HER", "KontrollUtbetaler"),
        "kravmottak:demo:1",
        "conv",
        "BehandlerKrav",
        "OppgjorsMelding",
        "mid-nowhere",
        "2026-11-01T10:00:00Z",
    )
    env = ebms.envelope(route, manifest=("missing@x",))
    raw = mime.build([mime.Part("soap@x", "text/xml", ebms.to_bytes(env))])
    sandbox.drop(raw)
    sandbox.process()
    assert len(sandbox.outbox("error")) == 1
    (err,) = errors(apprec_of(sandbox))
    assert err["V"] == "E10" and "missing@x" in err["DN"]


def test_gzip_bomb_is_refused_without_inflating(sandbox, tmp_path):
    """A payload that inflates past max_payload_bytes is refused (T99), not inflated."""
    cfg = sandbox.config_path
    cfg.write_text(
        cfg.read_text().replace("max_payload_bytes = 209715200", "max_payload_bytes = 100000")
    )
    bomb = gzip.compress(b"<" + b"a" * 5_000_000, mtime=0)
    frame = mime.parse(wrap_demo(b"placeholder"))[0]  # a real envelope; swap its payload
    bomb_part = mime.Part(frame.attachments[0].content_id, "application/gzip", bomb)
    sandbox.drop(mime.build([frame.start, bomb_part]))
    sandbox.process()
    (err,) = errors(apprec_of(sandbox))
    assert err["V"] == "T99" and "100000" in err["DN"]


def test_oversized_file_is_refused_unread_but_answered(sandbox):
    """Over max_file_bytes: not parsed; the header in the first MB still addresses a refusal."""
    cfg = sandbox.config_path
    cfg.write_text(cfg.read_text().replace("max_file_bytes = 134217728", "max_file_bytes = 20000"))
    padding = b"<!--" + b"x" * 50_000 + b"-->"
    big = demo_claim().replace(b"<MsgHead", padding + b"<MsgHead", 1)
    sandbox.drop(wrap_demo(big, message_id="too-big"), "big.msg")
    sandbox.process()
    assert len(sandbox.outbox("error")) == 1
    (err,) = errors(apprec_of(sandbox))
    assert err["V"] == "T99" and "20000" in err["DN"]
    assert len(list(sandbox.paths.quarantine.glob("*--big.msg"))) == 1


def test_corrupt_cms_payload_is_refused_with_reason(sandbox):
    """A pkcs7-mime part that is not valid CMS: T99 naming the CMS structure, file kept."""
    raw = wrap_demo(b"placeholder")
    parsed = mime.parse(raw)[0]
    cms = mime.Part(parsed.attachments[0].content_id, "application/pkcs7-mime", b"\x30\x80junk")
    sandbox.drop(mime.build([parsed.start, cms]), "cms.msg")
    sandbox.process()
    (err,) = errors(apprec_of(sandbox))
    assert err["V"] == "T99" and "CMS" in err["DN"]
    assert len(list(sandbox.paths.quarantine.glob("*--cms.msg"))) == 1


def test_parser_never_reads_external_subset(tmp_path):
    """The hardened parser refuses DOCTYPE before libxml2 could open anything."""
    secret = tmp_path / "secret.dtd"
    secret.write_text('<!ENTITY x "SECRET">')
    doc = f'<!DOCTYPE a SYSTEM "{secret.as_uri()}"><a>&x;</a>'.encode()
    parsed = parse_untrusted(doc, Layer.PAYLOAD)
    assert parsed.root is None and "DOCTYPE" in parsed.problem.text


def test_valid_xml_without_doctype_parses():
    """The hardening does not reject ordinary documents with a declaration and comments."""
    parsed = parse_untrusted(b'<?xml version="1.0"?>\n<!-- c -->\n<a>1</a>', Layer.PAYLOAD)
    assert parsed.problem is None and parsed.root.text == "1"


def test_hostile_file_names_do_not_stop_the_intake(sandbox):
    """Undecodable bytes and near-limit lengths in a name: processed like any other file."""
    import os

    inbox = os.fsencode(sandbox.paths.inbox)
    for name in (b"claim-\xff\xfe.msg", b"x" * 240 + b".msg"):
        tmp = os.path.join(inbox, b".tmp-" + name[:10])
        with open(tmp, "wb") as fh:
            fh.write(wrap_demo())
        os.utime(tmp, (0, 0))
        os.rename(tmp, os.path.join(inbox, name))
    sandbox.drop(wrap_demo(), "plain.msg")
    sandbox.process()
    assert len(sandbox.outbox("apprec")) == 3
    assert list(sandbox.paths.work.iterdir()) == []


def test_a_bug_in_a_stage_still_answers_with_x99(sandbox, monkeypatch):
    """A stage that raises: the sender is still answered (X99), no MessageError for our bug."""
    from daemon.service import intake

    def broken(work, ctx):
        raise RuntimeError("bug")

    monkeypatch.setattr(intake, "STAGES", (*intake.STAGES[:5], broken))
    sandbox.drop(wrap_demo(), "bug.msg")
    sandbox.process()
    (err,) = errors(apprec_of(sandbox))
    assert err["V"] == "X99" and "RuntimeError" in err["DN"]
    assert sandbox.outbox("error") == []
    assert len(list(sandbox.paths.quarantine.glob("*--bug.msg"))) == 1


def test_file_with_a_future_mtime_is_taken_once_it_stops_changing(sandbox):
    """A writer with a skewed clock: not left forever, not taken while it changes."""
    import os
    import time

    path = sandbox.drop(wrap_demo(), "future.msg")
    os.utime(path, (time.time() + 3600, time.time() + 3600))
    sandbox.process()  # drain waits until it has been unchanged for stable_seconds
    assert len(sandbox.outbox("apprec")) == 1


def test_header_missing_only_its_timestamp_is_still_answered(sandbox):
    """From, To, CPAId and MessageId known: the sender gets a MessageError and an AppRec."""
    raw = wrap_demo(message_id="no-ts")
    frame = mime.parse(raw)[0]
    soap = frame.start.data.replace(b"<eb:Timestamp>", b"<eb:Junk>").replace(
        b"</eb:Timestamp>", b"</eb:Junk>", 1
    )
    sandbox.drop(
        mime.build([mime.Part(frame.start.content_id, "text/xml", soap), *frame.attachments])
    )
    sandbox.process()
    assert len(sandbox.outbox("error")) == 1
    assert "eb:MessageData/eb:Timestamp mangler" in errors(apprec_of(sandbox))[0]["DN"]


def test_duplicate_content_ids_are_refused(sandbox):
    """Two parts with the payload's Content-ID: T01, not 'the first one wins'."""
    frame = mime.parse(wrap_demo())[0]
    payload = frame.attachments[0]
    junk = mime.Part(payload.content_id, "text/xml", b"<junk/>")
    sandbox.drop(mime.build([frame.start, junk, payload]), "dup.msg")
    sandbox.process()
    (kept,) = sandbox.paths.quarantine.glob("*--dup.msg")
    report = json.loads(kept.with_name(kept.name + ".err.json").read_text())
    assert report["problems"][0]["code"] == "T01" and "Content-ID" in report["problems"][0]["text"]


def test_ten_thousand_deep_nesting_is_refused_not_recursed(sandbox):
    """10 000 nested elements: T01 from the parser's depth limit, no stack overflow."""
    deep = b"<a>" * 10_000 + b"</a>" * 10_000
    payload = demo_claim().replace(b"<MimeType>", deep + b"<MimeType>", 1)
    sandbox.drop(wrap_demo(payload))
    sandbox.process()
    (err,) = errors(apprec_of(sandbox))
    assert err["V"] == "T01" and "depth" in err["DN"].lower()
