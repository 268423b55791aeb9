"""Issue #14 (trust, part two): each attack performed through the real pipeline.

A message file is dropped in a sandbox inbox and `process` runs the daemon's real
intake; the assertions are on the AppRec it answers and on the ledger. Findings:
1 (a CA-issued certificate signing as another partner), 2 (validity at receipt, not at
a backdated Timestamp/GenDate), 7 (a second eb:MessageHeader for the next MSH),
8 (comments inside signed text), 16 (MessageIds with `'`, `%`, `{`), 17 (MsgHead
Sender other than eb:From).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree

from daemon import cli
from daemon.domain import legacy_pseudonym, pseudonym
from daemon.tools.wrap import wrap
from daemon.transport import mime, trust
from tests.claims import DEMO_HF, B, C, I, L, _numbers, msghead, person_number, registry
from tests.conftest import DEMO_CPA, DEMO_HER, make_sandbox, unique_claim, wrap_demo
from tests.test_intake import AR, read_output
from tests.test_trust import (
    PARTNER_CPA,
    PARTNER_HER,
    cert_path,
    make_pair,
    our_keys,
    register,
    signed_claim,
)

ORGNR_A = "983974678"  # partner A (HER 90002) claims for the demo institution
ORGNR_B = "974589095"
HER_B = "90003"
OSMO = L("NOR05003", "6.96")  # Us-Osmolalitet, MB2 (as in tests/test_lab_rules.py)
RECEIVED = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # the sandboxes' clock
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
EB = "http://www.oasis-open.org/committees/ebxml-msg/schema/msg-header-2_0.xsd"
NEXT_MSH = "urn:oasis:names:tc:ebxml-msg:actor:nextMSH"


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def partner(sandbox, tmp_path) -> trust.KeyPair:
    """Partner A (HER 90002): signs with a registered certificate, encrypts to us, and
    wants encrypted, gzipped answers (as `tests.test_trust.partner`)."""
    pair = make_pair(tmp_path, "hospital")
    register(sandbox, cert_path(tmp_path, "hospital"))
    return pair


def answer_to(sandbox, raw: bytes) -> etree._Element:
    """Drop `raw`, run the daemon's intake, return the (plain) AppRec it wrote for it."""
    before = set(sandbox.outbox("apprec"))
    sandbox.drop(raw)
    sandbox.process()
    (path,) = set(sandbox.outbox("apprec")) - before
    _soap, apprec = read_output(path)
    return apprec


def decrypted(sandbox, pair: trust.KeyPair, raw: bytes) -> etree._Element:
    """As `answer_to`, for a partner whose answers are gzipped and encrypted to it
    (a refusal before the agreement check is plain: the partner is not known yet)."""
    before = set(sandbox.outbox("apprec"))
    sandbox.drop(raw)
    sandbox.process()
    (path,) = set(sandbox.outbox("apprec")) - before
    (part,) = mime.parse(path.read_bytes())[0].attachments
    if part.content_type != "application/pkcs7-mime":  # refused before the agreement
        return etree.fromstring(part.data)
    inner, problem = trust.decrypt(part.data, pair)
    assert problem is None, problem
    return etree.fromstring(gzip.decompress(inner))


def status(apprec: etree._Element) -> str:
    return apprec.find("ar:Status", AR).get("V")


def codes(apprec: etree._Element) -> list[str]:
    return [e.get("V") for e in apprec.findall("ar:Error", AR)]


def texts(apprec: etree._Element) -> str:
    return " | ".join(e.get("DN") for e in apprec.findall("ar:Error", AR))


def paid_bills(sandbox) -> int:
    with sandbox.db() as db:
        (n,) = db.execute(
            "SELECT count(*) FROM bills WHERE verdict IN ('approved', 'reduced')"
        ).fetchone()
    return n


def message_ids(sandbox) -> list[str]:
    with sandbox.db() as db:
        return [r[0] for r in db.execute("SELECT ebxml_message_id FROM messages ORDER BY id")]


def _name(*attrs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attrs])


class CA:
    """A small PKI like the enterprise-certificate issuers' (Buypass, Commfides)."""

    def __init__(self, folder: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = _name((NameOID.COUNTRY_NAME, "NO"), (NameOID.COMMON_NAME, "Test CA"))
        self.start = RECEIVED - timedelta(days=365)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.start)
            .not_valid_after(self.start + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = folder / "ca.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        *subject: tuple[x509.ObjectIdentifier, str],
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> trust.KeyPair:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name((NameOID.COUNTRY_NAME, "NO"), *subject))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or self.start)
            .not_valid_after(not_after or self.start + timedelta(days=1000))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, True, True, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return trust.KeyPair(key, cert)


def with_ca(sandbox, bundle: Path) -> None:
    """`[trust] ca_file` in the sandbox's config, and partner A registered with no
    certificate of its own: it signs with certificates from that CA."""
    cfg = sandbox.config_path
    cfg.write_text(cfg.read_text() + f'\n[trust]\nca_file = "{bundle}"\n')
    args = ["--config", str(cfg), "partner", "add", "--her-id", PARTNER_HER]
    args += ["--cpa-id", PARTNER_CPA, "--orgnr", ORGNR_A]
    assert cli.main(args) == 0


def from_a(claim: bytes, signer: trust.KeyPair, **kwargs) -> bytes:
    """A message From partner A, envelope and MsgHead signed by `signer`."""
    return wrap(
        signed_claim(signer, claim),
        from_her=PARTNER_HER,
        cpa_id=PARTNER_CPA,
        signer=signer,
        **kwargs,
    )


# --------------------------------------------------------------------------- finding 1


def test_ca_issued_certificate_of_another_partner_cannot_sign_as_this_one(sandbox, tmp_path):
    """Finding 1: with `[trust] ca_file`, a certificate of the CA is accepted only when
    its subject names the sending partner. A's own CA certificate (orgnr in
    serialNumber) is approved; partner B's (orgnr and HER of B) and an unrelated one
    of the same CA signing From A are refused S02, and nothing of theirs is paid."""
    ca = CA(tmp_path)
    with_ca(sandbox, ca.bundle)
    own = ca.issue((NameOID.ORGANIZATION_NAME, "A HF"), (NameOID.SERIAL_NUMBER, ORGNR_A))
    other_partner = ca.issue(
        (NameOID.ORGANIZATION_NAME, "B HF"),
        (NameOID.COMMON_NAME, f"B HF HER {HER_B}"),
        (NameOID.SERIAL_NUMBER, ORGNR_B),
    )
    unrelated = ca.issue((NameOID.COMMON_NAME, "Anyone at all"))

    ok = answer_to(sandbox, from_a(unique_claim(), own))
    assert status(ok) == "1", texts(ok)
    paid = paid_bills(sandbox)
    assert paid == 3

    for signer in (other_partner, unrelated):
        apprec = answer_to(sandbox, from_a(unique_claim(), signer))
        assert status(apprec) == "2" and codes(apprec) == ["S02"], texts(apprec)
        assert "identifiserer ikke avsender" in texts(apprec)
    assert paid_bills(sandbox) == paid  # nothing more paid


def test_ca_certificate_naming_the_partner_by_her_id_or_ntrno_is_accepted(sandbox, tmp_path):
    """Finding 1, the other accepted forms: the HER-id in the subject (`HER 90002`) and
    the organisation number as organizationIdentifier `NTRNO-<orgnr>`; a look-alike
    (A's orgnr as a prefix of a longer number) is refused."""
    ca = CA(tmp_path)
    with_ca(sandbox, ca.bundle)
    by_her = ca.issue((NameOID.COMMON_NAME, f"A HF HER {PARTNER_HER}"))
    by_ntrno = ca.issue((NameOID.ORGANIZATION_IDENTIFIER, f"NTRNO-{ORGNR_A}"))
    by_her_serial = ca.issue((NameOID.SERIAL_NUMBER, PARTNER_HER))  # the whole serialNumber
    by_ntrno_colon = ca.issue((NameOID.ORGANIZATION_IDENTIFIER, f"NTRNO:{ORGNR_A}"))
    look_alike = ca.issue((NameOID.SERIAL_NUMBER, f"{ORGNR_A}1"))
    assert status(answer_to(sandbox, from_a(unique_claim(), by_her))) == "1"
    assert status(answer_to(sandbox, from_a(unique_claim(), by_ntrno))) == "1"
    assert status(answer_to(sandbox, from_a(unique_claim(), by_her_serial))) == "1"
    assert status(answer_to(sandbox, from_a(unique_claim(), by_ntrno_colon))) == "1"
    refused = answer_to(sandbox, from_a(unique_claim(), look_alike))
    assert codes(refused) == ["S02"], texts(refused)


def test_the_ca_chain_is_judged_at_receipt_not_at_the_wall_clock(sandbox, tmp_path):
    """#20: a CA-issued certificate valid only from a day before receipt to three days
    after (the sandbox receives at 2026-11-23 12:00 UTC) signed a message received
    while it was valid: the chain is checked at receipt, so it is accepted whatever the
    machine's clock says, as replay must accept it again later."""
    ca = CA(tmp_path)
    with_ca(sandbox, ca.bundle)
    window = (RECEIVED - timedelta(days=1), RECEIVED + timedelta(days=3))
    if window[0] <= datetime.now(UTC) <= window[1]:
        pytest.skip("the machine's clock is inside the certificate's validity")
    short = ca.issue((NameOID.SERIAL_NUMBER, ORGNR_A), not_before=window[0], not_after=window[1])
    apprec = answer_to(sandbox, from_a(unique_claim(), short))
    assert status(apprec) == "1", texts(apprec)


def test_look_alike_certificate_before_a_real_one_in_keyinfo_is_refused(sandbox, tmp_path):
    """Finding 1, by the back door: partner B puts a self-made certificate naming A
    (B's own key, issued by nobody) first in KeyInfo and its real CA certificate after
    it. The certificate whose subject is checked must itself chain to the CA: S02."""
    ca = CA(tmp_path)
    with_ca(sandbox, ca.bundle)
    real_b = ca.issue((NameOID.SERIAL_NUMBER, ORGNR_B))
    name = _name((NameOID.COUNTRY_NAME, "NO"), (NameOID.SERIAL_NUMBER, ORGNR_A))
    fake_a = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.cert.subject)  # claims the CA issued it; the CA's signature is missing
        .public_key(real_b.private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(ca.start)
        .not_valid_after(ca.start + timedelta(days=1000))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, True, True, False, False, False, False, False, False),
            critical=True,
        )
        .sign(real_b.private_key, hashes.SHA256())
    )
    posing = trust.KeyPair(real_b.private_key, fake_a)
    msghead_root = trust.sign_msghead(
        etree.fromstring(unique_claim()), posing, (real_b.certificate,)
    )
    frame = mime.parse(
        wrap(etree.tostring(msghead_root), from_her=PARTNER_HER, cpa_id=PARTNER_CPA)
    )[0]
    (part,) = frame.attachments
    env = trust.sign_envelope(
        etree.fromstring(frame.start.data),
        {part.content_id: part.data},
        posing,
        (real_b.certificate,),
    )
    soap = mime.Part(frame.start.content_id, "text/xml", etree.tostring(env))
    apprec = answer_to(sandbox, mime.build([soap, part]))
    assert status(apprec) == "2" and codes(apprec) == ["S02"], texts(apprec)
    assert "kjede til CA" in texts(apprec)
    assert paid_bills(sandbox) == 0


# --------------------------------------------------------------------------- finding 2


def _dated(claim: bytes, gen_date: str) -> bytes:
    return claim.replace(
        b"<GenDate>2026-11-02T08:15:00+01:00</GenDate>", f"<GenDate>{gen_date}</GenDate>".encode()
    )


def test_expired_certificate_with_a_backdated_message_is_refused(sandbox, tmp_path):
    """Finding 2: a certificate that ran out in 2020 signs a message whose Timestamp and
    GenDate say June 2020. Validity is checked at receipt (2026-11-23): S02, unpaid."""
    old = make_pair(tmp_path, "old", not_before=datetime(2020, 1, 1, tzinfo=UTC), days=365)
    register(sandbox, cert_path(tmp_path, "old"), extra=("--force",))  # expired: forced
    claim = _dated(unique_claim(), "2020-06-01T10:00:00+02:00")
    raw = wrap(
        signed_claim(old, claim),
        from_her=PARTNER_HER,
        cpa_id=PARTNER_CPA,
        gzip=True,
        signer=old,
        encrypt_to=our_keys(sandbox).certificate,
        timestamp=datetime(2020, 6, 1, 8, 5, tzinfo=UTC),
    )
    apprec = decrypted(sandbox, old, raw)
    assert status(apprec) == "2" and codes(apprec) == ["S02"], texts(apprec)
    assert "ved mottak 2026-11-23" in texts(apprec)
    assert paid_bills(sandbox) == 0


@pytest.mark.parametrize(
    "start",
    [RECEIVED - timedelta(days=1, minutes=2), RECEIVED + timedelta(minutes=2)],
    ids=["ran-out-2-min-before", "valid-from-2-min-after"],
)
def test_a_certificate_within_the_clock_skew_of_its_validity_signs(sandbox, tmp_path, start):
    """#20: our clock and the issuer's may disagree by `clock_skew_seconds` (300): a
    registered certificate that ran out two minutes before receipt, or becomes valid two
    minutes after it, still signs. (It did not: our check allowed the skew, and
    signxml, judging at receipt, then refused the certificate as expired.)"""
    just = make_pair(tmp_path, "just", not_before=start, days=1)
    register(sandbox, cert_path(tmp_path, "just"), extra=("--force",))  # expired by now
    raw = wrap(
        signed_claim(just, unique_claim()),
        from_her=PARTNER_HER,
        cpa_id=PARTNER_CPA,
        gzip=True,
        signer=just,
        encrypt_to=our_keys(sandbox).certificate,
    )
    apprec = decrypted(sandbox, just, raw)
    assert status(apprec) == "1", texts(apprec)


@pytest.mark.parametrize(
    ("gen_date", "timestamp", "says"),
    [
        # far older than receipt (30 days by default), whatever the certificate
        ("2026-09-01T08:00:00+02:00", datetime(2026, 9, 1, 6, 5, tzinfo=UTC), "mer enn 30"),
        # the envelope Timestamp alone backdated
        (None, datetime(2026, 10, 1, 6, 5, tzinfo=UTC), "eb:Timestamp"),
        # from the future (beyond the 300 s clock skew)
        ("2026-11-24T08:00:00+01:00", datetime(2026, 11, 23, 11, 0, tzinfo=UTC), "etter mottak"),
        (None, RECEIVED + timedelta(minutes=10), "etter mottak"),
    ],
)
def test_message_dated_far_from_receipt_is_refused(sandbox, gen_date, timestamp, says):
    """Finding 2: a Timestamp or GenDate far before receipt, or after it, is refused (E10)
    and nothing is paid; within the clock skew it is accepted (the last case's twin)."""
    claim = unique_claim() if gen_date is None else _dated(unique_claim(), gen_date)
    apprec = answer_to(sandbox, wrap_demo(claim, timestamp=timestamp))
    assert status(apprec) == "2" and codes(apprec) == ["E10"], texts(apprec)
    assert says in texts(apprec)
    assert paid_bills(sandbox) == 0
    within = answer_to(
        sandbox, wrap_demo(unique_claim(), timestamp=RECEIVED + timedelta(minutes=4))
    )
    assert status(within) == "1", texts(within)


def test_message_dated_before_the_services_it_claims_is_refused(sandbox):
    """Finding 2: a GenDate (and Timestamp) before every service and before the claimed
    period, though within the age window: the message cannot have been written then."""
    claim = msghead(C((B((L("NOR04012", "25.00"),), date="2026-11-10T09:00:00"),)))
    claim = claim.replace(b'fraDatoPeriode="2026-10-01"', b'fraDatoPeriode="2026-11-05"')
    claim = claim.replace(b'tilDatoPeriode="2026-10-31"', b'tilDatoPeriode="2026-11-30"')
    claim = _dated(claim, "2026-11-03T08:00:00+01:00")
    apprec = answer_to(sandbox, wrap_demo(claim))
    assert status(apprec) == "2" and codes(apprec) == ["E10"], texts(apprec)
    assert "før tjenestene" in texts(apprec)
    assert paid_bills(sandbox) == 0


def _serviced(day: str, period_from: str, gen_date: str) -> bytes:
    """One lab bill on `day`, the period from `period_from` to 30 November, `gen_date`."""
    claim = msghead(C((B((L("NOR05003", "6.96"),), date=f"{day}T09:00:00"),)))  # a valid code
    claim = claim.replace(
        b'fraDatoPeriode="2026-10-01"', f'fraDatoPeriode="{period_from}"'.encode()
    )
    claim = claim.replace(b'tilDatoPeriode="2026-10-31"', b'tilDatoPeriode="2026-11-30"')
    return _dated(claim, gen_date)


@pytest.mark.parametrize(
    ("gen_date", "timestamp", "named", "place"),
    [
        (
            "2026-11-03T08:00:00+01:00",
            RECEIVED,
            "GenDate 2026-11-03T08:00:00+01:00",
            "msghead /MsgHead/MsgInfo/GenDate",
        ),
        (
            "2026-11-20T08:00:00+01:00",
            datetime(2026, 11, 3, 7, 0, tzinfo=UTC),
            "eb:Timestamp",
            "envelope /SOAP:Envelope/SOAP:Header/eb:MessageHeader/eb:MessageData/eb:Timestamp",
        ),
    ],
)
def test_either_date_alone_before_the_services_is_refused_by_its_name(
    sandbox, gen_date, timestamp, named, place
):
    """#20: the GenDate alone, or the envelope Timestamp alone, before every service:
    each is checked, and the refusal names the one that is backdated."""
    claim = _serviced("2026-11-10", "2026-11-05", gen_date)
    apprec = answer_to(sandbox, wrap_demo(claim, timestamp=timestamp))
    assert status(apprec) == "2" and codes(apprec) == ["E10"], texts(apprec)
    error = apprec.find("ar:Error", AR)
    assert error.get("DN").startswith(f"{named} ") and "før tjenestene" in error.get("DN")
    assert error.get("OT") == place
    assert paid_bills(sandbox) == 0


def test_dates_on_the_first_service_day_in_oslo_within_the_skew_are_accepted(sandbox, monkeypatch):
    """#20: the first service day is an Oslo day. On a UTC host, a Timestamp of 23:30
    UTC the evening before is 00:30 that day in Oslo, and a GenDate three minutes
    before Oslo midnight is within the 300 s clock skew: both are accepted."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        claim = _serviced("2026-11-10", "2026-11-10", "2026-11-09T23:57:00+01:00")
        stamp = datetime(2026, 11, 9, 23, 30, tzinfo=UTC)
        apprec = answer_to(sandbox, wrap_demo(claim, timestamp=stamp))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert status(apprec) == "1", texts(apprec)


def test_a_service_before_the_period_start_counts_as_the_first_day(sandbox):
    """#20: a message dated after its earliest service is not backdated, even when the
    claimed period starts later (the bill's own date counts, not only the period)."""
    claim = _serviced("2026-11-04", "2026-11-05", "2026-11-04T12:00:00+01:00")
    apprec = answer_to(sandbox, wrap_demo(claim))
    assert "før tjenestene" not in texts(apprec), texts(apprec)


def test_a_period_start_with_a_zone_is_answered_not_a_crash(sandbox):
    """#20: `2026-11-05Z` is a valid xs:date that Python's date parser refuses: the
    period start then does not count, and the message is answered as usual."""
    claim = _serviced("2026-11-10", "2026-11-05Z", "2026-11-10T12:00:00+01:00")
    apprec = answer_to(sandbox, wrap_demo(claim))
    assert status(apprec) == "1", texts(apprec)
    assert paid_bills(sandbox) == 1


def test_a_gen_date_python_cannot_read_is_refused_by_name(sandbox):
    """#20: `24:00:00` is a valid xs:dateTime (midnight at the end of the day) that the
    date parser refuses: the message is refused (T02) naming the GenDate and its value,
    at the MsgHead's GenDate, not paid and not a crash."""
    claim = _dated(unique_claim(), "2026-11-22T24:00:00+01:00")
    apprec = answer_to(sandbox, wrap_demo(claim, timestamp=RECEIVED))
    assert status(apprec) == "2" and codes(apprec) == ["T02"], texts(apprec)
    assert "GenDate '2026-11-22T24:00:00+01:00' er ikke et tidspunkt" in texts(apprec)
    (error,) = apprec.findall("ar:Error", AR)
    assert error.get("OT") == "msghead /MsgHead/MsgInfo/GenDate"
    assert paid_bills(sandbox) == 0


@pytest.mark.parametrize(
    "timestamp",
    [RECEIVED + timedelta(seconds=300), RECEIVED - timedelta(days=30)],
    ids=["clock-skew-exactly", "max-age-exactly"],
)
def test_a_timestamp_exactly_at_either_edge_of_the_window_is_accepted(sandbox, timestamp):
    """#20: the window is closed: a Timestamp exactly `clock_skew_seconds` (300) after
    receipt, or exactly `max_message_age_days` (30) before it, is accepted."""
    apprec = answer_to(sandbox, wrap_demo(unique_claim(), timestamp=timestamp))
    assert status(apprec) == "1", texts(apprec)


@pytest.mark.parametrize(
    ("stamp", "says"),
    [
        (
            datetime(2026, 10, 1, 6, 5, tzinfo=UTC),
            "eb:Timestamp 2026-10-01T06:05:00Z er mer enn 30 dager før mottakstidspunktet "
            "2026-11-23T12:00:00Z",
        ),
        (
            RECEIVED + timedelta(minutes=10),
            "eb:Timestamp 2026-11-23T12:10:00Z er etter mottakstidspunktet "
            "2026-11-23T12:00:00Z (tillatt klokkeavvik 300 s)",
        ),
    ],
    ids=["older", "later"],
)
def test_a_timestamp_outside_the_window_is_refused_by_name_and_place(sandbox, stamp, says):
    """#20: the refusal names the envelope's Timestamp, its value and the window, at
    the Timestamp's place in the ebXML header."""
    apprec = answer_to(sandbox, wrap_demo(unique_claim(), timestamp=stamp))
    (error,) = apprec.findall("ar:Error", AR)
    assert (error.get("V"), error.get("DN")) == ("E10", says)
    assert error.get("OT") == (
        "envelope /SOAP:Envelope/SOAP:Header/eb:MessageHeader/eb:MessageData/eb:Timestamp"
    )


# --------------------------------------------------------------------------- finding 7


def _rebuilt(raw: bytes, edit) -> bytes:
    """The same MIME message with its SOAP part changed by `edit(envelope)`."""
    frame = mime.parse(raw)[0]
    env = etree.fromstring(frame.start.data)
    edit(env)
    soap = mime.Part(frame.start.content_id, "text/xml", etree.tostring(env))
    return mime.build([soap, *frame.attachments])


def test_forged_header_for_the_next_msh_before_the_signed_one_is_refused(sandbox, partner):
    """Finding 7: a second eb:MessageHeader with SOAP:actor nextMSH, put before the
    signed one, is dropped by the signature's XPath filter, so the signature still
    verifies. It must not be read: the message is refused and its forged MessageId,
    ConversationId and Timestamp never reach the ledger."""
    raw = wrap(
        signed_claim(partner),
        from_her=PARTNER_HER,
        cpa_id=PARTNER_CPA,
        gzip=True,
        signer=partner,
        encrypt_to=our_keys(sandbox).certificate,
        message_id="signed-id",
    )

    def forge(env):
        header = env.find(f"{{{SOAP}}}Header")
        signed = header.find(f"{{{EB}}}MessageHeader")
        forged = etree.fromstring(etree.tostring(signed))
        forged.set(f"{{{SOAP}}}actor", NEXT_MSH)
        forged.find(f"{{{EB}}}MessageData/{{{EB}}}MessageId").text = "forged-id"
        forged.find(f"{{{EB}}}ConversationId").text = "forged-conversation"
        header.insert(0, forged)

    apprec = decrypted(sandbox, partner, _rebuilt(raw, forge))
    assert status(apprec) == "2" and codes(apprec) == ["E10"], texts(apprec)
    assert "eb:MessageHeader" in texts(apprec)
    assert "forged-id" not in message_ids(sandbox)
    assert paid_bills(sandbox) == 0


def test_actor_on_the_only_message_header_is_refused(sandbox):
    """Finding 7: a MessageHeader with SOAP:actor (which the filter would leave out of
    the signature) is refused even from a partner that need not sign."""

    def address_to_next(env):
        mh = env.find(f"{{{SOAP}}}Header/{{{EB}}}MessageHeader")
        mh.set(f"{{{SOAP}}}actor", NEXT_MSH)

    apprec = answer_to(sandbox, _rebuilt(wrap_demo(), address_to_next))
    assert status(apprec) == "2" and codes(apprec) == ["E10"], texts(apprec)
    assert "SOAP:actor" in texts(apprec)


# --------------------------------------------------------------------------- finding 8


def test_comments_inside_signed_text_do_not_cut_what_is_read(sandbox, partner):
    """Finding 8: comments are outside C14N, so they can be added to signed text without
    breaking the signature. The MessageId and the MsgHead MsgId are read whole: the
    ledger and the AppRec carry `msg-alpha-omega`, never `msg-alpha`."""
    claim = signed_claim(partner, unique_claim())
    msg_id = etree.fromstring(claim).findtext(
        "{http://www.kith.no/xmlstds/msghead/2006-05-24}MsgInfo/"
        "{http://www.kith.no/xmlstds/msghead/2006-05-24}MsgId"
    )
    claim = claim.replace(
        f"<MsgId>{msg_id}".encode(),
        f"<MsgId>{msg_id[:8]}<!--x-->".encode() + msg_id[8:].encode(),
        1,
    )
    raw = wrap(
        claim,
        from_her=PARTNER_HER,
        cpa_id=PARTNER_CPA,
        gzip=True,
        signer=partner,
        encrypt_to=our_keys(sandbox).certificate,
        message_id="msg-alpha-omega",
    )
    frame = mime.parse(raw)[0]
    soap_bytes = frame.start.data.replace(b">msg-alpha-omega<", b">msg-alpha<!--cut-->-omega<")
    assert soap_bytes != frame.start.data
    soap = mime.Part(frame.start.content_id, "text/xml", soap_bytes)
    apprec = decrypted(sandbox, partner, mime.build([soap, *frame.attachments]))
    assert status(apprec) == "1", texts(apprec)
    assert message_ids(sandbox) == ["msg-alpha-omega"]
    original = apprec.find("ar:OriginalMsgId/ar:Id", AR).text
    assert original == msg_id
    with sandbox.db() as db:
        assert db.execute("SELECT msghead_id FROM messages").fetchone()[0] == msg_id


# --------------------------------------------------------------------------- finding 16


@pytest.mark.parametrize("message_id", ["it's-1", "a%b-2", "{brace}-3"])
def test_message_ids_with_quote_percent_or_brace_get_a_clean_answer(sandbox, partner, message_id):
    """Finding 16: the MessageId also names the payload's cid:. A `%` that starts no
    escape makes that URI invalid: the signature's Reference is refused with T02 naming
    it, never X99 (an internal error). `'` and `{` are valid and the claim is approved."""
    raw = wrap(
        signed_claim(partner, unique_claim()),
        from_her=PARTNER_HER,
        cpa_id=PARTNER_CPA,
        gzip=True,
        signer=partner,
        encrypt_to=our_keys(sandbox).certificate,
        message_id=message_id,
    )
    apprec = decrypted(sandbox, partner, raw)
    assert "X99" not in codes(apprec), texts(apprec)
    if "%" in message_id:
        assert codes(apprec) == ["T02"] and "URI" in texts(apprec), texts(apprec)
        assert texts(apprec).startswith("ds:Signature følger ikke XML-signaturskjemaet")
    else:
        assert status(apprec) == "1", texts(apprec)
    for err in sandbox.paths.quarantine.glob("*.err.json"):
        assert all(p["layer"] != "internal" for p in json.loads(err.read_text())["problems"])


# --------------------------------------------------------------------------- finding 17


CLINIC = "921234560"  # an institution the demo partner is registered to send for


@pytest.mark.parametrize(
    ("orgnr", "her", "accepted"),
    [
        (ORGNR_B, HER_B, False),
        (ORGNR_B, DEMO_HER, False),
        (ORGNR_A, HER_B + "0", True),
        (CLINIC, DEMO_HER, True),
    ],
    ids=["both-of-b", "b-orgnr-beside-own-her", "own-orgnr-unit-her", "clinic-it-sends-for"],
)
def test_msghead_sender_other_than_ebxml_from_is_refused(tmp_path, orgnr, her, accepted):
    """Finding 17: the demo partner (HER 90001, orgnr 983974678) sends a MsgHead whose
    Sender is another hospital (B's orgnr, with or without the partner's own HER-id
    beside it): refused E10, unpaid. Its own orgnr beside a unit's HER-id is the same
    party, and so is an institution the registry lets it send for (a hub)."""
    sandbox = make_sandbox(
        tmp_path / "sandbox", registry(DEMO_HF, I(CLINIC, "Klinikk AS", "Helse Sør-Øst RHF"))
    )
    claim = unique_claim()
    claim = claim.replace(b"<Id>983974678</Id>", f"<Id>{orgnr}</Id>".encode(), 1)
    claim = claim.replace(b"<Id>90001</Id>", f"<Id>{her}</Id>".encode(), 1)
    apprec = answer_to(sandbox, wrap(claim, from_her=DEMO_HER, cpa_id=DEMO_CPA))
    if accepted:
        assert "MsgHead-avsender" not in texts(apprec), texts(apprec)
        return
    assert status(apprec) == "2" and codes(apprec) == ["E10"], texts(apprec)
    assert "MsgHead-avsender" in texts(apprec) and ORGNR_B in texts(apprec)
    assert paid_bills(sandbox) == 0


@pytest.mark.parametrize(("her", "accepted"), [(DEMO_HER, True), (HER_B, False)])
def test_msghead_sender_named_by_her_id_alone(tmp_path, her, accepted):
    """#20: a MsgHead Sender with only a HER-id (no organisation number) is the partner
    when it is the partner's own HER-id, and refused when it is another's."""
    sandbox = make_sandbox(tmp_path / "sandbox", registry(DEMO_HF))
    claim = unique_claim()
    ident = re.compile(rb"<Ident><Id>983974678</Id><TypeId V=\"ENH\"[^>]*/></Ident>")
    claim, n = ident.subn(b"", claim, count=1)
    assert n == 1
    claim = claim.replace(b"<Id>90001</Id>", f"<Id>{her}</Id>".encode(), 1)
    apprec = answer_to(sandbox, wrap(claim, from_her=DEMO_HER, cpa_id=DEMO_CPA))
    if accepted:
        assert status(apprec) == "1", texts(apprec)
    else:
        assert codes(apprec) == ["E10"] and f"HER {HER_B}" in texts(apprec), texts(apprec)


FOREIGN = "974589095"  # registered, but the demo partner may not claim for it


@pytest.mark.parametrize(
    ("orgnr", "her", "refusal"),
    [
        (
            FOREIGN,
            DEMO_HER,
            "MsgHead-avsender (ENH 974589095, HER 90001) er ikke samme part som "
            "ebXML-avsenderen (HER 90001 / ENH 983974678)",
        ),
        (CLINIC, "90004", None),
    ],
    ids=["registered-institution-it-may-not-send-for", "clinic-it-sends-for-unit-her"],
)
def test_msghead_sender_institution_must_be_one_the_partner_sends_for(
    tmp_path, orgnr, her, refusal
):
    """#20: a registered institution the partner is not registered to send for is not
    its own, even beside the partner's HER-id: refused, the whole text and the place
    checked. An institution it sends for is its own whatever unit HER-id is beside."""
    sandbox = make_sandbox(
        tmp_path / "sandbox",
        registry(
            DEMO_HF,
            I(CLINIC, "Klinikk AS", "Helse Sør-Øst RHF"),
            I(FOREIGN, "Fremmed HF", "Helse Vest RHF", sender=False),
        ),
    )
    claim = unique_claim()
    claim = claim.replace(b"<Id>983974678</Id>", f"<Id>{orgnr}</Id>".encode(), 1)
    claim = claim.replace(b"<Id>90001</Id>", f"<Id>{her}</Id>".encode(), 1)
    apprec = answer_to(sandbox, wrap(claim, from_her=DEMO_HER, cpa_id=DEMO_CPA))
    if refusal is None:
        assert status(apprec) == "1", texts(apprec)
        return
    assert status(apprec) == "2" and codes(apprec) == ["E10"], texts(apprec)
    (error,) = apprec.findall("ar:Error", AR)
    assert error.get("DN") == refusal
    assert error.get("OT") == "agreement /MsgHead/MsgInfo/Sender/Organisation"
    assert paid_bills(sandbox) == 0


# --------------------------------------------------------------------------- finding 11


def _keys_in_ledger(sandbox) -> set[str]:
    with sandbox.db() as db:
        return {k for (k,) in db.execute("SELECT patient_key FROM bills") if k}


def test_patient_pseudonyms_cannot_be_reversed_without_the_secret(sandbox):
    """Finding 11: the attacker holds the ledger and tries every fødselsnummer of the
    patient's birth date with the old formula: nothing matches. The keys are HMACs
    under the secret file (mode 0600, outside the ledger) that `init` made."""
    born = "010180"
    fnrs = [person_number(n, born) for n in range(3)]
    bills = tuple(B((OSMO,), fnr=f, regning_nr=str(2000 + i)) for i, f in enumerate(fnrs))
    apprec = answer_to(sandbox, wrap_demo(msghead(C(bills))))
    assert status(apprec) in ("1", "3"), texts(apprec)
    held = _keys_in_ledger(sandbox)
    assert len(held) == 3
    candidates = {legacy_pseudonym(f) for f in _numbers(born)}  # a whole birth date
    assert not held & candidates
    secret_file = sandbox.paths.patient_secret
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert secret_file.parent != sandbox.paths.ledger.parent
    secret = secret_file.read_bytes().strip()
    assert held == {pseudonym(secret, f) for f in fnrs}


def test_rekey_patients_migrates_an_old_ledger_and_duplicates_are_still_caught(sandbox):
    """Finding 11, the migration: a ledger written with the old unkeyed pseudonyms is
    re-keyed from the archived originals by `kravmottak rekey-patients`; afterwards
    the same service sent again is still a duplicate (COM-06), so nothing is paid
    twice across the upgrade."""
    fnr = person_number(7, "020290")
    first = msghead(C((B((OSMO,), fnr=fnr, regning_nr="3001"),)))
    assert status(answer_to(sandbox, wrap_demo(first))) == "1"
    with sandbox.db() as db:  # the ledger as the old code wrote it
        db.execute("UPDATE bills SET patient_key = ?", (legacy_pseudonym(fnr),))
        db.execute("UPDATE exams SET patient_key = ?", (legacy_pseudonym(fnr),))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["--config", str(sandbox.config_path), "rekey-patients"]) == 0
    assert "re-keyed 1 patient pseudonym(s); 0 found in no archived message" in out.getvalue()
    secret = sandbox.paths.patient_secret.read_bytes().strip()
    assert _keys_in_ledger(sandbox) == {pseudonym(secret, fnr)}
    again = msghead(C((B((OSMO,), fnr=fnr, regning_nr="3002"),)))
    apprec = answer_to(sandbox, wrap_demo(again))
    assert status(apprec) == "3" or "COM-06" in texts(apprec) or status(apprec) == "2", texts(
        apprec
    )
    assert paid_bills(sandbox) == 1
