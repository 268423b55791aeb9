"""What a signature must cover, attacked through the real pipeline.

Each test takes a message the partner really signed, edits what its signature says it
covers (a reference dropped, a transform swapped) and signs the edited SignedInfo again
with the partner's own key, as a sender whose handler signs too little would. The
signature is then cryptographically valid; only the coverage checks in
`daemon/transport/trust.py` stand between it and a payment. Without any one of them the
message below is approved (status 1): these tests fail then.
"""

from __future__ import annotations

import dataclasses
import gzip
from base64 import b64encode

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree

from daemon.tools.wrap import wrap
from daemon.transport import mime, trust
from tests.test_trust import (
    PARTNER_CPA,
    PARTNER_HER,
    cert_path,
    decrypted_apprec,
    make_pair,
    our_keys,
    refusal,
    register,
    send,
    signed_claim,
)

DS = "http://www.w3.org/2000/09/xmldsig#"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
MH = "{http://www.kith.no/xmlstds/msghead/2006-05-24}"


@pytest.fixture
def partner(sandbox, tmp_path) -> trust.KeyPair:
    """A hospital that signs, encrypts to us, and wants encrypted answers."""
    pair = make_pair(tmp_path, "hospital")
    register(sandbox, cert_path(tmp_path, "hospital"))
    return pair


def _resign(signature: etree._Element, pair: trust.KeyPair) -> None:
    """Sign the (edited) SignedInfo again with the partner's key: C14N 1.0, RSA-SHA256,
    as the SignedInfo's own SignatureMethod and CanonicalizationMethod say."""
    signed_info = signature.find(f"{{{DS}}}SignedInfo")
    value = pair.private_key.sign(
        etree.tostring(signed_info, method="c14n"), padding.PKCS1v15(), hashes.SHA256()
    )
    signature.find(f"{{{DS}}}SignatureValue").text = b64encode(value).decode()


def _references(signature: etree._Element) -> list[etree._Element]:
    return signature.findall(f"{{{DS}}}SignedInfo/{{{DS}}}Reference")


def _signed_message(sandbox, pair, payload: bytes | None = None) -> mime.Multipart:
    raw = wrap(
        payload or signed_claim(pair),
        from_her=PARTNER_HER,
        cpa_id=PARTNER_CPA,
        gzip=True,
        signer=pair,
        encrypt_to=our_keys(sandbox).certificate,
    )
    return mime.parse(raw)[0]


def _send_edited(sandbox, frame: mime.Multipart, soap: etree._Element, *attachments) -> None:
    start = dataclasses.replace(frame.start, data=etree.tostring(soap))
    sandbox.drop(mime.build([start, *(attachments or frame.attachments)]))
    sandbox.process()


def _header_signature(soap: etree._Element) -> etree._Element:
    return soap.find(f"{{{SOAP}}}Header/{{{DS}}}Signature")


def test_the_unedited_message_is_approved(sandbox, partner):
    """The baseline the attacks start from: re-signing an unedited SignedInfo changes
    nothing, so each refusal below comes from the edit alone."""
    frame = _signed_message(sandbox, partner)
    soap = etree.fromstring(frame.start.data)
    _resign(_header_signature(soap), partner)
    _send_edited(sandbox, frame, soap)
    assert decrypted_apprec(sandbox, partner).find("{*}Status").get("V") == "1"


def test_envelope_signature_without_the_whole_envelope_is_refused(sandbox, partner):
    """Only the payload (`cid:`) is signed, not the envelope (`""`): the header could be
    rewritten at will (here its ConversationId). S01 'mangler Reference URI=""'."""
    frame = _signed_message(sandbox, partner)
    soap = etree.fromstring(frame.start.data)
    signature = _header_signature(soap)
    (whole,) = [r for r in _references(signature) if r.get("URI") == ""]
    whole.getparent().remove(whole)
    _resign(signature, partner)
    soap.find(".//{*}ConversationId").text = "forged-conversation"
    _send_edited(sandbox, frame, soap)
    err = refusal(sandbox, partner)
    assert err["V"] == "S01" and 'mangler Reference URI=""' in err["DN"], err


def test_envelope_signature_without_the_payload_is_refused(sandbox, partner):
    """The envelope is signed but the manifest's `cid:` part is not: the payload could be
    swapped for any other (here a claim of ten times the amount). S01 naming the part."""
    frame = _signed_message(sandbox, partner)
    soap = etree.fromstring(frame.start.data)
    signature = _header_signature(soap)
    (part,) = [r for r in _references(signature) if r.get("URI", "").startswith("cid:")]
    part.getparent().remove(part)
    _resign(signature, partner)
    forged = signed_claim(partner)  # the partner signed this MsgHead some other day
    data = trust.encrypt(gzip.compress(forged), our_keys(sandbox).certificate)
    swapped = dataclasses.replace(frame.attachments[0], data=data)
    _send_edited(sandbox, frame, soap, swapped)
    err = refusal(sandbox, partner)
    cid = frame.attachments[0].content_id
    assert err["V"] == "S01" and "dekker ikke nyttelasten" in err["DN"], err
    assert f"cid:{cid}" in err["DN"]


def test_envelope_signature_with_a_foreign_xpath_transform_is_refused(sandbox, partner):
    """An XPath filter other than the ebMS one (here one that leaves MessageHeader out of
    what is signed): we cannot check what it covers, so S99, never approved."""
    frame = _signed_message(sandbox, partner)
    soap = etree.fromstring(frame.start.data)
    signature = _header_signature(soap)
    (whole,) = [r for r in _references(signature) if r.get("URI") == ""]
    xpath = whole.find(f"{{{DS}}}Transforms/{{{DS}}}Transform/{{{DS}}}XPath")
    xpath.text = "not(ancestor-or-self::*[local-name()='MessageHeader'])"
    _resign(signature, partner)
    _send_edited(sandbox, frame, soap)
    err = refusal(sandbox, partner)
    assert err["V"] == "S99" and "transform vi ikke kan kontrollere" in err["DN"], err


def test_envelope_signature_with_an_unknown_transform_is_refused(sandbox, partner):
    """A transform algorithm we do not know, on any reference: S99."""
    frame = _signed_message(sandbox, partner)
    soap = etree.fromstring(frame.start.data)
    signature = _header_signature(soap)
    (whole,) = [r for r in _references(signature) if r.get("URI") == ""]
    transforms = whole.find(f"{{{DS}}}Transforms")
    transforms.insert(
        0,
        etree.Element(
            f"{{{DS}}}Transform", Algorithm="http://www.w3.org/TR/1999/REC-xslt-19991116"
        ),
    )
    _resign(signature, partner)
    _send_edited(sandbox, frame, soap)
    err = refusal(sandbox, partner)
    assert err["V"] == "S99" and "REC-xslt-19991116" in err["DN"], err


def test_xpath_filter_on_a_payload_reference_is_refused(sandbox, partner):
    """The ebMS XPath filter is only for the envelope reference (`""`); on a `cid:` part
    it has no meaning we can check: S99."""
    frame = _signed_message(sandbox, partner)
    soap = etree.fromstring(frame.start.data)
    signature = _header_signature(soap)
    whole, part = sorted(_references(signature), key=lambda r: r.get("URI") != "")
    xpath_transform = whole.find(f"{{{DS}}}Transforms/{{{DS}}}Transform[{{{DS}}}XPath]")
    transforms = etree.SubElement(part, f"{{{DS}}}Transforms")
    part.insert(0, transforms)
    transforms.append(etree.fromstring(etree.tostring(xpath_transform)))
    _resign(signature, partner)
    _send_edited(sandbox, frame, soap)
    err = refusal(sandbox, partner)
    assert err["V"] == "S99" and "transform vi ikke kan kontrollere" in err["DN"], err


def test_msghead_signature_with_more_than_one_reference_is_refused(sandbox, partner):
    """The MsgHead signature must be exactly one reference `""`; a second one (which a
    verifier could be pointed at instead) is refused with S01."""
    msghead = etree.fromstring(signed_claim(partner))
    signature = msghead.find(f"{{{DS}}}Signature")
    (whole,) = _references(signature)
    whole.addnext(etree.fromstring(etree.tostring(whole)))
    _resign(signature, partner)
    edited = etree.tostring(msghead, xml_declaration=True, encoding="UTF-8")
    frame = _signed_message(sandbox, partner, edited)
    _send_edited(sandbox, frame, etree.fromstring(frame.start.data))
    err = refusal(sandbox, partner)
    assert err["V"] == "S01" and "nøyaktig én Reference" in err["DN"], err
    assert err["OT"].startswith("msghead") or "MsgHead" in err["DN"]


def test_a_partner_that_need_not_sign_may_send_an_unsigned_msghead(sandbox, tmp_path):
    """The other side of `required`: with `--no-require-signature` a signed envelope
    around an unsigned MsgHead is approved (a required signature is not invented)."""
    pair = make_pair(tmp_path, "optional")
    register(sandbox, cert_path(tmp_path, "optional"), extra=("--no-require-signature",))
    frame = _signed_message(sandbox, pair, signed_claim(None))
    _send_edited(sandbox, frame, etree.fromstring(frame.start.data))
    assert decrypted_apprec(sandbox, pair).find("{*}Status").get("V") == "1"


def test_a_partner_that_need_not_sign_may_send_an_unsigned_envelope(sandbox, tmp_path):
    pair = make_pair(tmp_path, "optional")
    register(sandbox, cert_path(tmp_path, "optional"), extra=("--no-require-signature",))
    raw = wrap(
        signed_claim(pair),
        from_her=PARTNER_HER,
        cpa_id=PARTNER_CPA,
        gzip=True,
        signer=None,
        encrypt_to=our_keys(sandbox).certificate,
    )
    sandbox.drop(raw)
    sandbox.process()
    assert decrypted_apprec(sandbox, pair).find("{*}Status").get("V") == "1"


def test_two_envelope_signatures_are_refused(sandbox, partner):
    """A second ds:Signature beside the partner's in SOAP:Header (which one would a
    verifier pick?): S01 naming the count."""
    frame = _signed_message(sandbox, partner)
    soap = etree.fromstring(frame.start.data)
    signature = _header_signature(soap)
    signature.addnext(etree.fromstring(etree.tostring(signature)))
    _send_edited(sandbox, frame, soap)
    err = refusal(sandbox, partner)
    assert err["V"] == "S01" and "meldingen har 2 signaturer" in err["DN"], err


def test_a_payload_encrypted_to_someone_else_is_named_as_a_mime_problem(sandbox, partner, tmp_path):
    other = make_pair(tmp_path, "elsewhere")
    raw = wrap(
        signed_claim(partner),
        from_her=PARTNER_HER,
        cpa_id=PARTNER_CPA,
        gzip=True,
        signer=partner,
        encrypt_to=other.certificate,
    )
    sandbox.drop(raw)
    sandbox.process()
    err = refusal(sandbox, partner)
    assert err["V"] == "S99" and err["OT"].startswith("mime application/pkcs7-mime"), err


def test_a_header_other_than_the_one_signed_is_refused_by_the_last_check(sandbox, partner):
    """Defence in depth (#20: 15 mutants of this branch survived, as no attack we know
    gets past the single-MessageHeader and actor checks before it): were the header the
    pipeline read ever another than the one the signature covers, the envelope stage
    itself refuses the message with S01 naming the MessageHeader."""
    from datetime import UTC, datetime

    from daemon.records import Work
    from daemon.service.intake import STAGES
    from daemon.service.pipeline import run
    from daemon.transport.unwrap import open_envelope
    from daemon.transport.verify import verify_envelope_signature

    frame = _signed_message(sandbox, partner)
    intake = sandbox.intake()
    try:
        ctx = intake.context(datetime(2026, 11, 23, 12, 0, tzinfo=UTC))
        before = STAGES[: STAGES.index(verify_envelope_signature)]
        assert before[0] is open_envelope
        raw = mime.build([frame.start, *frame.attachments])
        work = run(before, Work(raw=raw, content_hash="test"), ctx)
        assert not work.problems, work.problems
        assert verify_envelope_signature(work, ctx).problems == work.problems  # as signed
        other = dataclasses.replace(work.header, message_id="not-the-signed-one")
        (problem,) = verify_envelope_signature(work.with_(header=other), ctx).problems
    finally:
        intake.ledger.close()
    assert problem.code == "S01" and problem.layer.name == "ENVELOPE"
    assert problem.text == "eb:MessageHeader slik den leses er ikke den signaturen dekker"
    assert "MessageHeader" in problem.where()


def test_a_msghead_signed_with_sha1_cannot_be_checked(sandbox, partner):
    """An older system signs its MsgHead with RSA-SHA1 (the signature itself is
    sound): SHA-1 is not accepted, so the signature cannot be checked: S99, naming the
    algorithm, never a pass and never a traceback."""
    from signxml import DigestAlgorithm, SignatureMethod, XMLSigner

    class Sha1Signer(XMLSigner):  # the sender's choice: signxml refuses SHA-1 by default
        def check_deprecated_methods(self) -> None:
            pass

    msghead = etree.fromstring(signed_claim(None))
    signed = Sha1Signer(
        signature_algorithm=SignatureMethod.RSA_SHA1, digest_algorithm=DigestAlgorithm.SHA1
    ).sign(msghead, key=partner.private_key, cert=[partner.certificate])
    payload = etree.tostring(signed, xml_declaration=True, encoding="UTF-8")
    send(sandbox, payload, signer=partner, encrypt_to=our_keys(sandbox).certificate)
    err = refusal(sandbox, partner)
    assert err["V"] == "S99", err
    assert err["DN"] == (
        "signaturen kan ikke kontrolleres: Signature method RSA_SHA1 forbidden by configuration"
    )
    assert err["OT"] == "msghead /MsgHead/Signature"
