"""Signatures and encryption end to end, with real keys made for the tests."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from lxml import etree

from daemon import cli
from daemon.domain import Layer
from daemon.schemas import Schemas
from daemon.tools.wrap import wrap
from daemon.transport import keys, mime, trust
from daemon.transport.ebms import NS
from daemon.transport.keys import KeyLoadError
from daemon.transport.trust import Trusted, TrustError
from tests.conftest import CERTS_FROM, TODAY, demo_claim, shared_or_skip
from tests.test_intake import AR, apprec_of, errors

PARTNER_HER = "90002"
PARTNER_CPA = "kravmottak:trust:1"
SENT = datetime(2026, 11, 2, 8, 20, tzinfo=UTC)  # the demo claim's GenDate, as it is sent


def make_pair(folder: Path, name: str, **kwargs) -> trust.KeyPair:
    """A partner key pair valid 2025-2034: it covers the claims' GenDate and TODAY."""
    kwargs.setdefault("not_before", CERTS_FROM)
    kwargs.setdefault("days", 3650)
    key, cert = folder / f"{name}.key.pem", folder / f"{name}.cert.pem"
    keys.generate(key, cert, her_id=PARTNER_HER, orgnr="974589095", name=name, **kwargs)
    return keys.load_pair(key, cert, None)


def cert_path(folder: Path, name: str) -> Path:
    return folder / f"{name}.cert.pem"


@pytest.fixture
def partner(sandbox, tmp_path) -> trust.KeyPair:
    """A hospital that signs, encrypts to us, and wants encrypted, gzipped answers."""
    pair = make_pair(tmp_path, "hospital")
    register(sandbox, cert_path(tmp_path, "hospital"))
    return pair


def register(sandbox, *certs: Path, extra: tuple[str, ...] = ()) -> None:
    args = [
        "--config",
        str(sandbox.config_path),
        "partner",
        "add",
        "--her-id",
        PARTNER_HER,
        "--cpa-id",
        PARTNER_CPA,
        "--orgnr",
        "983974678",  # it claims for the demo institution
        "--encrypts-to-us",
        "--encrypt",
        "--compress",
        *extra,
    ]
    for c in certs:
        args += ["--certificate", str(c)]
    assert cli.main(args) == 0


def our_keys(sandbox) -> trust.KeyPair:
    return keys.load_pair(sandbox.paths.private_key, sandbox.paths.certificate, None)


def signed_claim(pair: trust.KeyPair | None, payload: bytes | None = None) -> bytes:
    root = etree.fromstring(payload or demo_claim())
    if pair is not None:
        root = trust.sign_msghead(root, pair)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def send(sandbox, msghead: bytes, *, signer, encrypt_to, **kwargs) -> None:
    raw = wrap(
        msghead,
        from_her=PARTNER_HER,
        cpa_id=PARTNER_CPA,
        gzip=True,
        signer=signer,
        encrypt_to=encrypt_to,
        **kwargs,
    )
    sandbox.drop(raw)
    sandbox.process()


def only_error(sandbox) -> dict:
    (err,) = errors(read_apprec(sandbox))
    return err


def read_apprec(sandbox) -> etree._Element:
    """The AppRec, whether or not it was encrypted to the partner (tests hold its key)."""
    return apprec_of(sandbox)


# --------------------------------------------------------------------------- round trip


def test_round_trip_signed_encrypted_in_and_out(sandbox, partner, tmp_path):
    """Partner signs + encrypts to us → we verify, decrypt, answer signed + encrypted back."""
    ours = our_keys(sandbox)
    send(
        sandbox,
        signed_claim(partner),
        signer=partner,
        encrypt_to=ours.certificate,
        message_id="rt-1",
    )
    (path,) = sandbox.outbox("apprec")
    multipart, problem = mime.parse(path.read_bytes())
    assert problem is None
    envelope = etree.fromstring(multipart.start.data)
    (part,) = multipart.attachments
    assert part.content_type == "application/pkcs7-mime"
    header = envelope.find(".//eb:MessageHeader", NS)
    at = trust.parse_time(header.findtext("eb:MessageData/eb:Timestamp", namespaces=NS), None)
    # our signature verifies with our certificate, over the envelope and the encrypted part
    manifest = tuple(
        r.get(f"{{{NS['xlink']}}}href") for r in envelope.iterfind(".//eb:Reference", NS)
    )
    assert trust.verify_envelope(
        envelope,
        {part.content_id: part.data},
        manifest,
        Trusted((ours.certificate,)),
        at,
        required=True,
    )
    # the partner opens it with its own key
    inner, problem = trust.decrypt(part.data, partner)
    assert problem is None
    apprec = etree.fromstring(gzip.decompress(inner))
    assert Schemas.load().apprec.validate(apprec)
    assert apprec.find("ar:Status", AR).get("V") == "1"
    assert errors(apprec) == []
    # and the Acknowledgment is signed too
    (ack_path,) = sandbox.outbox("ack")
    ack_env = etree.fromstring(mime.parse(ack_path.read_bytes())[0].start.data)
    assert trust.verify_envelope(ack_env, {}, (), Trusted((ours.certificate,)), at, required=True)


def decrypted_apprec(sandbox, partner) -> etree._Element:
    (path,) = sandbox.outbox("apprec")
    (part,) = mime.parse(path.read_bytes())[0].attachments
    inner, problem = trust.decrypt(part.data, partner)
    assert problem is None, problem
    return etree.fromstring(gzip.decompress(inner))


def refusal(sandbox, partner) -> dict:
    apprec = decrypted_apprec(sandbox, partner)
    assert apprec.find("ar:Status", AR).get("V") == "2"
    (err,) = errors(apprec)
    return err


# --------------------------------------------------------------------------- refusals


def test_unsigned_envelope_is_refused_when_agreement_requires(sandbox, partner):
    """No header signature from a partner that must sign: S01 'ikke signert'."""
    send(sandbox, signed_claim(partner), signer=None, encrypt_to=our_keys(sandbox).certificate)
    err = refusal(sandbox, partner)
    assert err["V"] == "S01" and "ikke signert" in err["DN"] and "SOAP:Header" in err["OT"]
    assert len(sandbox.outbox("error")) == 1  # and a MessageError SecurityFailure


def test_unsigned_msghead_is_refused_when_agreement_requires(sandbox, partner):
    """Header signed, MsgHead not: S01 naming the MsgHead."""
    send(sandbox, signed_claim(None), signer=partner, encrypt_to=our_keys(sandbox).certificate)
    err = refusal(sandbox, partner)
    assert err["V"] == "S01" and "MsgHead er ikke signert" in err["DN"]


def test_signature_by_unregistered_certificate_is_not_trusted(sandbox, partner, tmp_path):
    """Signed by a key the partner never registered: S02 'ikke klarert'."""
    stranger = make_pair(tmp_path, "stranger")
    send(sandbox, signed_claim(stranger), signer=stranger, encrypt_to=our_keys(sandbox).certificate)
    err = refusal(sandbox, partner)
    assert err["V"] == "S02" and "stranger" in err["DN"]
    assert "er ikke klarert: ikke registrert på avsender" in err["DN"]


def test_expired_certificate_is_reported_as_expired(sandbox, tmp_path):
    """A certificate that had expired at the message time: S02 'utløpt', not 'not trusted'."""
    old = make_pair(tmp_path, "old", not_before=datetime(2020, 1, 1, tzinfo=UTC), days=365)
    register(sandbox, cert_path(tmp_path, "old"), extra=("--force",))  # expired: only forced
    send(sandbox, signed_claim(old), signer=old, encrypt_to=our_keys(sandbox).certificate)
    err = refusal(sandbox, old)
    assert err["V"] == "S02" and "utløpt" in err["DN"] and "2020-12-31" in err["DN"]


def test_payload_changed_after_signing_is_a_digest_mismatch(sandbox, partner):
    """The cid: part swapped after the header was signed: S01 'digest stemmer ikke'."""
    ours = our_keys(sandbox)
    raw = wrap(
        signed_claim(partner),
        from_her=PARTNER_HER,
        cpa_id=PARTNER_CPA,
        gzip=True,
        signer=partner,
        encrypt_to=ours.certificate,
    )
    frame = mime.parse(raw)[0]
    other = trust.encrypt(gzip.compress(signed_claim(partner)), ours.certificate)
    sandbox.drop(
        mime.build(
            [
                frame.start,
                mime.Part(frame.attachments[0].content_id, "application/pkcs7-mime", other),
            ]
        )
    )
    sandbox.process()
    err = refusal(sandbox, partner)
    assert err["V"] == "S01" and "digest stemmer ikke" in err["DN"] and "cid:" in err["DN"]


def test_msghead_changed_after_signing_is_refused(sandbox, partner):
    """An amount edited inside the signed MsgHead: S01 on the MsgHead signature."""
    forged = signed_claim(partner).replace(b'sumBelop="6.96"', b'sumBelop="69.60"', 1)
    send(sandbox, forged, signer=partner, encrypt_to=our_keys(sandbox).certificate)
    err = refusal(sandbox, partner)
    assert err["V"] == "S01" and err["OT"].startswith("msghead")


def _wrapping_verdict(pair: trust.KeyPair, mutate) -> str:
    root = etree.fromstring(signed_claim(pair))
    mutate(root)
    root = etree.fromstring(etree.tostring(root))
    with pytest.raises(TrustError) as raised:
        trust.verify_msghead(root, Trusted((pair.certificate,)), datetime.now(UTC), required=True)
    return f"{raised.value.problem.code} {raised.value.problem.text}"


def test_signature_wrapping_attacks_are_refused(tmp_path):
    """A moved signature, a second unsigned MsgHead, a swapped payload: never accepted."""
    pair = make_pair(tmp_path, "wrap")
    ds = "{http://www.w3.org/2000/09/xmldsig#}Signature"
    mh = "{http://www.kith.no/xmlstds/msghead/2006-05-24}"

    def move_signature_into_document(root):
        root.find(f"{mh}Document").append(root.find(ds))

    def second_unsigned_msghead(root):
        forged = etree.fromstring(demo_claim().replace(b"509.75", b"9509.75"))
        root.find(f"{mh}Document/{mh}RefDoc/{mh}Content").append(forged)

    def signed_original_inside_forged_wrapper(root):
        forged = etree.fromstring(demo_claim().replace(b"509.75", b"9509.75"))
        root.find(f"{mh}Document/{mh}RefDoc/{mh}Content")[0].append(forged)

    assert _wrapping_verdict(pair, move_signature_into_document).startswith("S01 ds:Signature på")
    assert _wrapping_verdict(pair, second_unsigned_msghead).startswith("S01 digest stemmer ikke")
    assert _wrapping_verdict(pair, signed_original_inside_forged_wrapper).startswith("S01 digest")


def test_wrapped_signature_is_refused_end_to_end(sandbox, partner):
    """Through the daemon: a signature moved out of place never yields status 1."""
    signed = etree.fromstring(signed_claim(partner))
    signature = signed.find("{http://www.w3.org/2000/09/xmldsig#}Signature")
    signed.find("{http://www.kith.no/xmlstds/msghead/2006-05-24}MsgInfo").append(signature)
    send(sandbox, etree.tostring(signed), signer=partner, encrypt_to=our_keys(sandbox).certificate)
    apprec = decrypted_apprec(sandbox, partner)
    assert apprec.find("ar:Status", AR).get("V") == "2"
    assert errors(apprec) and all(e["V"] in ("S01", "T02") for e in errors(apprec))


def test_payload_not_encrypted_to_us_is_refused(sandbox, partner, tmp_path):
    """Encrypted to somebody else's certificate: S99 naming the wrong key."""
    elsewhere = make_pair(tmp_path, "elsewhere")
    send(sandbox, signed_claim(partner), signer=partner, encrypt_to=elsewhere.certificate)
    err = refusal(sandbox, partner)
    assert err["V"] == "S99" and "ikke kryptert til vårt sertifikat" in err["DN"]


def test_truncated_cms_is_refused(sandbox, partner):
    """A CMS structure cut short: T99, file kept in quarantine."""
    ours = our_keys(sandbox)
    cms = trust.encrypt(gzip.compress(signed_claim(partner)), ours.certificate)[:-40]
    raw = wrap(b"x", from_her=PARTNER_HER, cpa_id=PARTNER_CPA, timestamp=SENT)
    frame = mime.parse(raw)[0]
    part = mime.Part(frame.attachments[0].content_id, "application/pkcs7-mime", cms)
    env = etree.fromstring(frame.start.data)
    signed_env = trust.sign_envelope(env, {part.content_id: cms}, partner)
    soap = mime.Part(frame.start.content_id, "text/xml", etree.tostring(signed_env))
    sandbox.drop(mime.build([soap, part]), "cut.msg")
    sandbox.process()
    err = refusal(sandbox, partner)
    assert err["V"] == "T99" and "CMS" in err["DN"]
    assert len(list(sandbox.paths.quarantine.glob("*--cut.msg"))) == 1


def test_plain_payload_from_partner_that_must_encrypt_is_refused(sandbox, partner):
    """encrypts_to_us: a plain payload is a breach of the agreement (S99)."""
    send(sandbox, signed_claim(partner), signer=partner, encrypt_to=None)
    err = refusal(sandbox, partner)
    assert err["V"] == "S99" and "krever kryptert" in err["DN"]


def test_certificate_rollover_accepts_old_and_new(sandbox, tmp_path):
    """Two registered certificates: messages signed with either are accepted."""
    old = make_pair(tmp_path, "gen1")
    new = make_pair(tmp_path, "gen2")
    register(sandbox, cert_path(tmp_path, "gen1"), cert_path(tmp_path, "gen2"))
    ours = our_keys(sandbox).certificate
    for n, pair in enumerate((old, new)):
        # the second is another claim: other uuids and days, or COM-06 calls it a duplicate
        claim = demo_claim().replace(b"-000000000", f"-00000000{n}".encode())
        claim = claim.replace(b"2026-10-0", f"2026-10-{n + 1}".encode()) if n else claim
        send(sandbox, signed_claim(pair, claim), signer=pair, encrypt_to=ours)
    statuses = []
    for path in sandbox.outbox("apprec"):
        (part,) = mime.parse(path.read_bytes())[0].attachments
        inner, _ = trust.decrypt(part.data, new)  # answers go to the newest certificate
        statuses.append(etree.fromstring(gzip.decompress(inner)).find("ar:Status", AR).get("V"))
    assert statuses == ["1", "1"]


def test_present_signature_is_checked_even_when_not_required(sandbox, tmp_path):
    """The demo partner need not sign, but a bad signature it does send is refused."""
    stranger = make_pair(tmp_path, "stray")
    raw = wrap(demo_claim(), from_her="90001", cpa_id="kravmottak:demo:1", signer=stranger)
    sandbox.drop(raw)
    sandbox.process()
    err = only_error(sandbox)
    assert err["V"] == "S02"


# --------------------------------------------------------------------------- the real capture


def test_real_2023_capture_header_signature_verifies_with_its_certificate():
    """NAV's 2023 capture: the ebXML signature, incl. the cid: digest over the CMS part."""
    folder = shared_or_skip("samples/ebxml-behandlerkrav-2023")
    multipart, _ = mime.parse((folder / "2023_08_29T12_56_58_328.msg").read_bytes())
    cert = x509.load_pem_x509_certificate((folder / "2023_08_29T12_56_58_328.cer").read_bytes())
    envelope = etree.fromstring(multipart.start.data)
    (part,) = multipart.attachments
    at = datetime(2023, 8, 29, 10, 56, 50, tzinfo=UTC)
    href = f"cid:{part.content_id}"
    assert trust.verify_envelope(
        envelope, {part.content_id: part.data}, (href,), Trusted((cert,)), at, required=True
    )
    with pytest.raises(TrustError, match="digest stemmer ikke"):
        trust.verify_envelope(
            envelope,
            {part.content_id: part.data[:-1] + b"\0"},
            (href,),
            Trusted((cert,)),
            at,
            required=True,
        )
    with pytest.raises(TrustError, match="utløpt"):  # the certificate ran out in 2025
        trust.verify_envelope(
            envelope,
            {part.content_id: part.data},
            (href,),
            Trusted((cert,)),
            at + timedelta(days=900),
            required=True,
        )


def test_real_2023_capture_end_to_end_stops_at_our_missing_nav_key(sandbox):
    """Through the daemon: signature accepted, then decryption names the real blocker:
    the payload is encrypted to NAV's certificate, whose private key we do not have.
    Received when it was sent: its certificate is checked at the time of receipt."""
    folder = shared_or_skip("samples/ebxml-behandlerkrav-2023")
    cfg = sandbox.config_path
    cfg.write_text(cfg.read_text().replace(TODAY, "2023-08-29T10:57:00Z"))
    args = [
        "--config",
        str(sandbox.config_path),
        "partner",
        "add",
        "--her-id",
        "8141253",
        "--cpa-id",
        "nav:qass:35065",
        "--encrypts-to-us",
        "--certificate",
        str(folder / "2023_08_29T12_56_58_328.cer"),
        "--force",  # it ran out in 2025: registered anyway, to reach the payload
    ]
    assert cli.main(args) == 0
    sandbox.drop((folder / "2023_08_29T12_56_58_328.msg").read_bytes())
    sandbox.process()
    err = only_error(sandbox)
    assert err["V"] == "S99" and "ikke kryptert til vårt sertifikat" in err["DN"]


# --------------------------------------------------------------------------- keys


def test_key_passphrase_sources(tmp_path, monkeypatch):
    """The passphrase comes from a file, an env variable or a systemd credential."""
    (tmp_path / "pw").write_text("s3cret\n")
    assert keys.passphrase({"file": str(tmp_path / "pw")}) == b"s3cret"
    monkeypatch.setenv("KM_PW", "fromenv")
    assert keys.passphrase({"env": "KM_PW"}) == b"fromenv"
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "keypass").write_text("cred")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    assert keys.passphrase({"credential": "keypass"}) == b"cred"
    assert keys.passphrase(None) is None


def test_encrypted_key_with_wrong_passphrase_is_a_clear_error(tmp_path):
    """A wrong passphrase names the file, and never the passphrase."""
    from cryptography.hazmat.primitives import serialization

    pair = make_pair(tmp_path, "enc")
    pem = pair.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"right-one"),
    )
    (tmp_path / "enc.key.pem").write_bytes(pem)
    loaded = keys.load_pair(tmp_path / "enc.key.pem", cert_path(tmp_path, "enc"), b"right-one")
    assert loaded.certificate == pair.certificate
    with pytest.raises(KeyLoadError) as raised:
        keys.load_pair(tmp_path / "enc.key.pem", cert_path(tmp_path, "enc"), b"wrong-one")
    assert "enc.key.pem" in str(raised.value) and "wrong-one" not in str(raised.value)


def test_aes_gcm_payload_round_trip(sandbox, partner):
    """AuthEnvelopedData with AES-256-GCM (RFC 5083/5084) is opened like AES-CBC."""
    ours = our_keys(sandbox)
    msghead = signed_claim(partner)
    raw = wrap(b"x", from_her=PARTNER_HER, cpa_id=PARTNER_CPA, message_id="gcm-1", timestamp=SENT)
    frame = mime.parse(raw)[0]
    cms = trust.encrypt_gcm(gzip.compress(msghead), ours.certificate)
    part = mime.Part(frame.attachments[0].content_id, "application/pkcs7-mime", cms)
    signed_env = trust.sign_envelope(
        etree.fromstring(frame.start.data), {part.content_id: cms}, partner
    )
    soap = mime.Part(frame.start.content_id, "text/xml", etree.tostring(signed_env))
    sandbox.drop(mime.build([soap, part]))
    sandbox.process()
    assert decrypted_apprec(sandbox, partner).find("ar:Status", AR).get("V") == "1"


def test_aes_gcm_tampered_ciphertext_is_refused(tmp_path):
    """A flipped bit in GCM ciphertext or tag: refused (S99), never decrypted to garbage."""
    pair = make_pair(tmp_path, "gcm")
    cms = trust.encrypt_gcm(b"<MsgHead/>" * 10, pair.certificate)
    for offset in (1, 5, 20, 30):  # the tag, then the ciphertext
        bad = bytearray(cms)
        bad[-offset] ^= 0x01
        data, problem = trust.decrypt(bytes(bad), pair)
        assert data is None and problem.code in ("S99", "T99"), offset
        assert (problem.layer, problem.location) == (Layer.MIME, "application/pkcs7-mime")
    bad = bytearray(cms)
    bad[-1] ^= 0x01  # in the tag: the data is intact, the tag is not
    _data, problem = trust.decrypt(bytes(bad), pair)
    assert problem.code == "S99"
    assert problem.text == (
        "den krypterte nyttelasten er endret eller ødelagt (GCM-taggen stemmer ikke)"
    )


def test_an_encrypted_part_without_our_private_key_is_an_internal_problem(tmp_path):
    """No private key configured: the encrypted part cannot be opened, and that is our
    fault, not the sender's (X99 at the MIME layer), never an exception."""
    pair = make_pair(tmp_path, "nokey")
    data, problem = trust.decrypt(trust.encrypt_gcm(b"<MsgHead/>", pair.certificate), None)
    assert data is None
    assert (problem.layer, problem.code) == (Layer.MIME, "X99")
    assert "ingen privatnøkkel" in problem.text


# --------------------------------------------------------------------------- CA chain


def _ca_and_leaf(
    tmp_path: Path, leaf_subject: str = f"Hospital via CA HER {PARTNER_HER}"
) -> tuple[Path, trust.KeyPair, trust.KeyPair]:
    """A small PKI like the enterprise-certificate issuers': a CA and a leaf it signed."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "NO"),
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
            ]
        )

    start = datetime.now(UTC) - timedelta(days=365)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("Test CA"))
        .issuer_name(name("Test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf_cert = (
        x509.CertificateBuilder()
        .subject_name(name(leaf_subject))
        .issuer_name(name("Test CA"))
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=1000))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, True, True, False, False, False, False, False, False), critical=True
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return bundle, trust.KeyPair(ca_key, ca_cert), trust.KeyPair(leaf_key, leaf_cert)


def test_certificate_chaining_to_configured_ca_is_trusted(tmp_path):
    """No registered certificate, but the signer's chains to the configured CA and names
    the partner (HER-id in its subject): accepted; a self-signed stranger is not."""
    bundle, _ca, leaf = _ca_and_leaf(tmp_path)
    stranger = make_pair(tmp_path, "self-signed")
    trusted = Trusted((), str(bundle), her_id=PARTNER_HER)
    now = datetime.now(UTC)
    good = trust.sign_msghead(etree.fromstring(demo_claim()), leaf)
    assert trust.verify_msghead(etree.fromstring(etree.tostring(good)), trusted, now, required=True)
    bad = trust.sign_msghead(etree.fromstring(demo_claim()), stranger)
    with pytest.raises(TrustError) as raised:
        trust.verify_msghead(etree.fromstring(etree.tostring(bad)), trusted, now, required=True)
    assert raised.value.problem.code == "S02"


# --------------------------------------------------------------------------- what we sign
# (#20: survivors of the trust target's mutation sample)

DS_NS = "http://www.w3.org/2000/09/xmldsig#"


def test_our_signatures_are_what_partners_verify(tmp_path):
    """Partners verify our signatures with ordinary XML-DSig libraries: the MsgHead's
    SignedInfo is canonicalised with C14N 1.0 (what the KITH profile names), and the
    envelope's XPath filter declares the SOAP-ENV prefix its expression uses."""
    pair = make_pair(tmp_path, "ours")
    msghead = etree.fromstring(demo_claim())
    signed = trust.sign_msghead(msghead, pair)
    method = signed.find(
        f"{{{DS_NS}}}Signature/{{{DS_NS}}}SignedInfo/{{{DS_NS}}}CanonicalizationMethod"
    )
    assert method.get("Algorithm") == "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
    raw = wrap(demo_claim(), from_her="90001", cpa_id="cpa", signer=pair)
    envelope = etree.fromstring(mime.parse(raw)[0].start.data)
    (xpath,) = envelope.iter(f"{{{DS_NS}}}XPath")
    assert "SOAP-ENV:" in xpath.text
    assert xpath.nsmap.get("SOAP-ENV") == "http://schemas.xmlsoap.org/soap/envelope/"


def test_a_broken_signature_value_is_s01_at_the_msghead_signature(tmp_path):
    pair = make_pair(tmp_path, "ours")
    signed = trust.sign_msghead(etree.fromstring(demo_claim()), pair)
    value = signed.find(f"{{{DS_NS}}}Signature/{{{DS_NS}}}SignatureValue")
    value.text = "AAAA" + value.text[4:]
    with pytest.raises(TrustError) as caught:
        at = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # the sandboxes' clock
        trust.verify_msghead(signed, Trusted((pair.certificate,), None), at, required=True)
    problem = caught.value.problem
    assert (problem.layer, problem.code, problem.location) == (
        Layer.MSGHEAD,
        "S01",
        "/MsgHead/Signature",
    )
    assert problem.text.startswith("signaturen er ugyldig")
