"""The health network's security layers: XML signatures and CMS encryption.

- **ebXML header signature** (ebMS 2.0 §4.1.3, HIS 1037): an enveloped `ds:Signature`
  in `SOAP:Header` with a reference `""` (transforms: enveloped-signature, the XPath
  filter that drops elements for the next MSH, C14N) and one reference `cid:...` per
  payload part, digested over the part's bytes as sent.
- **MsgHead signature**: an enveloped signature, reference `""`, as the last child of
  `MsgHead`.
- **CMS** around the (gzipped) payload, to the receiver's certificate: EnvelopedData
  with AES-CBC (the `cryptography` library end to end), or AuthEnvelopedData with
  AES-GCM (RFC 5083/5084: asn1crypto reads the structure, `cryptography` decrypts).

XML signatures are made and checked with signxml, CMS with `cryptography`. signxml
does not implement the XPath filter transform, so `verify_envelope` applies that
filter's effect itself (removing the nextMSH elements from a copy) before verifying,
and refuses any transform it does not know rather than silently skipping it.
"""

from __future__ import annotations

import hashlib
import os
import re
from base64 import b64decode, b64encode
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ClassVar

from asn1crypto import cms as asn1cms
from asn1crypto import core as asn1core
from asn1crypto import x509 as asn1x509
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import VerificationError
from lxml import etree
from signxml import (
    CanonicalizationMethod,
    DigestAlgorithm,
    SignatureMethod,
    XMLSigner,
    XMLVerifier,
)
from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidInput, InvalidSignature
from signxml.util import X509CertChainVerifier
from signxml.verifier import SignatureConfiguration

from daemon.domain import Layer, Problem

DS = "http://www.w3.org/2000/09/xmldsig#"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
XPATH_FILTER = "http://www.w3.org/TR/1999/REC-xpath-19991116"
C14N = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
C14N_METHODS = {
    C14N,
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments",
    "http://www.w3.org/2001/10/xml-exc-c14n#",
    "http://www.w3.org/2006/12/xml-c14n11",
}
NEXT_MSH = "urn:oasis:names:tc:ebxml-msg:actor:nextMSH"
SOAP_NEXT = "http://schemas.xmlsoap.org/soap/actor/next"
EBMS_XPATH = (
    f'not(ancestor-or-self::node()[@SOAP-ENV:actor="{NEXT_MSH}"] | '
    f'ancestor-or-self::node()[@SOAP-ENV:actor="{SOAP_NEXT}"])'
)


@dataclass(frozen=True)
class KeyPair:
    """Our signing/decryption key and the certificate that goes with it."""

    private_key: rsa.RSAPrivateKey
    certificate: x509.Certificate


class TrustError(Exception):
    """A security check failed; `problem` says what, in the sender's terms."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.text)
        self.problem = problem


# --------------------------------------------------------------------------- CMS


def encrypt(data: bytes, recipient: x509.Certificate) -> bytes:
    """CMS enveloped-data (RSA key transport, AES-256-CBC), DER encoded."""
    return (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(data)
        .set_content_encryption_algorithm(pkcs7.algorithms.AES256)
        .add_recipient(recipient)
        .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )


class _GcmParameters(asn1core.Sequence):
    """RFC 5084 GCMParameters (asn1crypto has the OIDs but not this structure)."""

    _fields: ClassVar = [
        ("aes_nonce", asn1core.OctetString),
        ("aes_icv_len", asn1core.Integer, {"default": 12}),
    ]


_GCM_KEY_BYTES = {"aes128_gcm": 16, "aes192_gcm": 24, "aes256_gcm": 32}


def encrypt_gcm(data: bytes, recipient: x509.Certificate) -> bytes:
    """CMS AuthEnvelopedData (RFC 5083/5084): RSA-OAEP key transport, AES-256-GCM."""
    cek, nonce = os.urandom(32), os.urandom(12)
    sealed = AESGCM(cek).encrypt(nonce, data, None)
    ciphertext, tag = sealed[:-16], sealed[-16:]
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    ktri = asn1cms.KeyTransRecipientInfo(
        {
            "version": "v0",
            "rid": asn1cms.RecipientIdentifier(
                name="issuer_and_serial_number",
                value=asn1cms.IssuerAndSerialNumber(
                    {
                        "issuer": asn1x509.Name.load(recipient.issuer.public_bytes()),
                        "serial_number": recipient.serial_number,
                    }
                ),
            ),
            "key_encryption_algorithm": {"algorithm": "rsaes_oaep"},
            "encrypted_key": recipient.public_key().encrypt(cek, oaep),
        }
    )
    auth = asn1cms.AuthEnvelopedData(
        {
            "version": "v0",
            "recipient_infos": [asn1cms.RecipientInfo(name="ktri", value=ktri)],
            "auth_encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": {
                    "algorithm": "aes256_gcm",
                    "parameters": _GcmParameters({"aes_nonce": nonce, "aes_icv_len": 16}),
                },
                "encrypted_content": ciphertext,
            },
            "mac": tag,
        }
    )
    info = asn1cms.ContentInfo({"content_type": "authenticated_enveloped_data", "content": auth})
    return info.dump()


def _decrypt_gcm(data: bytes, keys: KeyPair) -> bytes:
    """Open AuthEnvelopedData with AES-GCM: asn1crypto reads the structure, the
    cryptography library does all the cryptography. Raises ValueError on any fault."""
    info = asn1cms.ContentInfo.load(data, strict=True)
    auth = info["content"]
    ours = (keys.certificate.issuer.public_bytes(), keys.certificate.serial_number)
    cek = None
    for recipient in auth["recipient_infos"]:
        if recipient.name != "ktri":
            continue
        rid = recipient.chosen["rid"].chosen
        if (rid["issuer"].dump(), rid["serial_number"].native) != ours:
            continue
        algorithm = recipient.chosen["key_encryption_algorithm"]["algorithm"].native
        if algorithm == "rsaes_oaep":
            pad = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
        else:
            pad = padding.PKCS1v15()
        cek = keys.private_key.decrypt(recipient.chosen["encrypted_key"].native, pad)
    if cek is None:
        raise ValueError("no matching recipient for our certificate")
    content = auth["auth_encrypted_content_info"]
    if content["content_type"].native != "data":
        raise ValueError("the encrypted content is not of type data")
    algorithm = content["content_encryption_algorithm"]
    name = algorithm["algorithm"].native
    if name not in _GCM_KEY_BYTES or len(cek) != _GCM_KEY_BYTES[name]:
        raise ValueError(f"unsupported content encryption {name}")
    params = _GcmParameters.load(algorithm["parameters"].dump(), strict=True)
    mac = auth["mac"].native
    if params["aes_icv_len"].native != len(mac):
        raise ValueError("GCM tag length does not match the declared ICV length")
    aad = auth["auth_attrs"].untag().dump() if auth["auth_attrs"].native else None
    sealed = content["encrypted_content"].native + mac
    return AESGCM(cek).decrypt(params["aes_nonce"].native, sealed, aad)


def decrypt(data: bytes, keys: KeyPair | None) -> tuple[bytes | None, Problem | None]:
    """Open a CMS part addressed to our certificate: EnvelopedData with AES-CBC, or
    AuthEnvelopedData with AES-GCM."""
    where = "application/pkcs7-mime"
    if keys is None:
        text = "kryptert nyttelast, men mottakeren har ingen privatnøkkel konfigurert"
        return None, Problem(Layer.MIME, "X99", text, where)
    try:
        if _content_type(data) == "authenticated_enveloped_data":
            return _decrypt_gcm(data, keys), None
        return pkcs7.pkcs7_decrypt_der(data, keys.certificate, keys.private_key, []), None
    except ValueError as exc:
        msg = str(exc)
        if "recipient" in msg.lower() or "no matching" in msg.lower():
            text = "nyttelasten er ikke kryptert til vårt sertifikat (feil mottakernøkkel)"
            return None, Problem(Layer.MIME, "S99", text, where)
        return None, Problem(
            Layer.MIME, "T99", f"ødelagt eller avkortet CMS-struktur: {msg}", where
        )
    except InvalidTag:
        text = "den krypterte nyttelasten er endret eller ødelagt (GCM-taggen stemmer ikke)"
        return None, Problem(Layer.MIME, "S99", text, where)
    except Exception as exc:  # the libraries raise a few kinds for broken DER
        text = f"kryptert nyttelast kan ikke åpnes: {type(exc).__name__}"
        return None, Problem(Layer.MIME, "T99", text, where)


def _content_type(data: bytes) -> str | None:
    try:
        return asn1cms.ContentInfo.load(data)["content_type"].native
    except (ValueError, TypeError, KeyError):
        return None


# --------------------------------------------------------------------------- signing


class _EbmsSigner(XMLSigner):
    """signxml's enveloped signer, with the ebMS transforms and `cid:` references."""

    def __init__(self, attachments: dict[str, bytes]) -> None:
        super().__init__(
            signature_algorithm=SignatureMethod.RSA_SHA256,
            digest_algorithm=DigestAlgorithm.SHA256,
            c14n_algorithm=CanonicalizationMethod.CANONICAL_XML_1_0,
        )
        self.attachments = attachments

    def _build_transforms_for_reference(self, *, transforms_node, reference, **_kwargs):
        etree.SubElement(transforms_node, f"{{{DS}}}Transform", Algorithm=ENVELOPED)
        xpath_transform = etree.SubElement(
            transforms_node, f"{{{DS}}}Transform", Algorithm=XPATH_FILTER
        )
        expression = etree.SubElement(xpath_transform, f"{{{DS}}}XPath", nsmap={"SOAP-ENV": SOAP})
        expression.text = EBMS_XPATH
        etree.SubElement(transforms_node, f"{{{DS}}}Transform", Algorithm=C14N)

    def _build_sig(self, sig_root, references, c14n_inputs, inclusive_ns_prefixes, **kwargs):
        signed_info, signature_value = super()._build_sig(
            sig_root, references, c14n_inputs, inclusive_ns_prefixes, **kwargs
        )
        for cid, data in self.attachments.items():
            ref = etree.SubElement(signed_info, f"{{{DS}}}Reference", URI=f"cid:{cid}")
            etree.SubElement(ref, f"{{{DS}}}DigestMethod", Algorithm=self.digest_alg.value)
            digest = etree.SubElement(ref, f"{{{DS}}}DigestValue")
            digest.text = b64encode(hashlib.sha256(data).digest()).decode()
        # signxml appends SignatureValue inside _build_sig; keep it after the new refs
        sig_root.remove(signature_value)
        sig_root.append(signature_value)
        return signed_info, signature_value


def sign_envelope(
    envelope: etree._Element,
    attachments: dict[str, bytes],
    keys: KeyPair,
    chain: tuple[x509.Certificate, ...] = (),
):
    """Sign a SOAP envelope in place of a placeholder in SOAP:Header; returns the new root.
    `chain`: certificates sent after ours in KeyInfo (intermediate CAs)."""
    header = envelope.find(f"{{{SOAP}}}Header")
    placeholder = etree.SubElement(header, f"{{{DS}}}Signature", Id="placeholder", nsmap={"ds": DS})
    del placeholder  # signxml finds it by its Id
    certs = [keys.certificate, *chain]
    return _EbmsSigner(attachments).sign(envelope, key=keys.private_key, cert=certs)


def sign_msghead(
    msghead: etree._Element, keys: KeyPair, chain: tuple[x509.Certificate, ...] = ()
) -> etree._Element:
    """An enveloped signature over the whole MsgHead (reference `""`), appended last."""
    signer = XMLSigner(
        signature_algorithm=SignatureMethod.RSA_SHA256,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.CANONICAL_XML_1_0,
    )
    return signer.sign(msghead, key=keys.private_key, cert=[keys.certificate, *chain])


# --------------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class Trusted:
    """What a signature may be made with: the partner's registered certificates
    (several during a rollover) and, optionally, a CA bundle they may chain to.

    A certificate from the CA is accepted only when its subject names this partner:
    `orgnr` in serialNumber or organizationIdentifier (`NTRNO-<orgnr>`), or `her_id`
    written as `HER <id>` in a subject attribute (or as the whole serialNumber).
    A chain to the CA proves who issued the certificate, not whom it belongs to.
    `skew`: how far our clock and the issuer's may disagree at the validity bounds.
    """

    certificates: tuple[x509.Certificate, ...]
    ca_file: str | None = None  # PEM bundle of CA certificates
    orgnr: str | None = None
    her_id: str | None = None
    skew: timedelta = timedelta(0)


def _keyinfo_certificates(signature: etree._Element) -> list[x509.Certificate]:
    """The certificates in KeyInfo/X509Data, in order (unreadable ones left out)."""
    out = []
    for el in signature.iterfind(f"{{{DS}}}KeyInfo/{{{DS}}}X509Data/{{{DS}}}X509Certificate"):
        try:
            out.append(
                x509.load_der_x509_certificate(b64decode("".join(el.xpath("string()").split())))
            )
        except ValueError:
            continue
    return out


def _signature_cert(signature: etree._Element) -> x509.Certificate | None:
    """The signer's certificate: the first in KeyInfo (the others are its chain)."""
    certs = _keyinfo_certificates(signature)
    return certs[0] if certs else None


def _fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


_HER_IN_SUBJECT = re.compile(r"\bHER[\s:=-]*(\d+)\b", re.IGNORECASE)


def names_partner(cert: x509.Certificate, orgnr: str | None, her_id: str | None) -> bool:
    """Does the certificate's subject identify this partner? The organisation number
    in serialNumber / organizationIdentifier (`NTRNO-<orgnr>`, as the Norwegian
    enterprise-certificate issuers write it), or the HER-id (`HER <id>` in an
    attribute, or the whole serialNumber). Exact matches only: never a substring."""
    for attribute in cert.subject:
        value = attribute.value if isinstance(attribute.value, str) else ""
        value = value.strip()
        if attribute.oid in (NameOID.SERIAL_NUMBER, NameOID.ORGANIZATION_IDENTIFIER):
            bare = value.upper().removeprefix("NTRNO-").removeprefix("NTRNO:")
            if orgnr and bare == orgnr:
                return True
            if her_id and attribute.oid == NameOID.SERIAL_NUMBER and value == her_id:
                return True
        if her_id and any(m.group(1) == her_id for m in _HER_IN_SUBJECT.finditer(value)):
            return True
    return False


def _choose_certificate(
    signature: etree._Element, trusted: Trusted, at: datetime, layer: Layer, where: str
) -> x509.Certificate:
    """The certificate to verify with: the one in KeyInfo if it is registered for the
    partner (or, with a CA, names the partner), else the one registered. Reports 'not
    trusted' and 'expired' as different problems. `at` is the time of receipt."""
    presented = _signature_cert(signature)
    registered = {_fingerprint(c): c for c in trusted.certificates}
    if presented is not None:
        cert = registered.get(_fingerprint(presented))
        if cert is None:
            subject = presented.subject.rfc4514_string()
            if trusted.ca_file is None:
                text = (
                    f"signaturens sertifikat ({subject}) er ikke klarert: "
                    "ikke registrert på avsender"
                )
                raise TrustError(Problem(layer, "S02", text, where))
            if not names_partner(presented, trusted.orgnr, trusted.her_id):
                who = ", ".join(
                    x
                    for x in (
                        f"organisasjonsnummer {trusted.orgnr}" if trusted.orgnr else "",
                        f"HER {trusted.her_id}" if trusted.her_id else "",
                    )
                    if x
                )
                text = (
                    f"signaturens sertifikat ({subject}) er ikke klarert: det er ikke "
                    f"registrert på avsender og identifiserer ikke avsender ({who or 'ukjent'})"
                )
                raise TrustError(Problem(layer, "S02", text, where))
        cert = cert or presented
    elif len(trusted.certificates) == 1:
        cert = trusted.certificates[0]
    else:
        text = "signaturen har intet X509-sertifikat og avsenderen har ikke ett entydig registrert"
        raise TrustError(Problem(layer, "S02", text, where))
    skew = trusted.skew
    if at + skew < cert.not_valid_before_utc or at - skew > cert.not_valid_after_utc:
        text = (
            f"sertifikatet ({cert.subject.rfc4514_string()}) var utløpt eller ennå ikke gyldig "
            f"ved mottak {at:%Y-%m-%dT%H:%M:%SZ} (gyldig "
            f"{cert.not_valid_before_utc:%Y-%m-%d}–{cert.not_valid_after_utc:%Y-%m-%d})"
        )
        raise TrustError(Problem(layer, "S02", text, where))
    return cert


def _chains_to_ca(
    signature: etree._Element,
    cert: x509.Certificate,
    ca_file: str,
    at: datetime,
    layer: Layer,
    where: str,
) -> None:
    """`cert` itself (the certificate whose subject was checked) must chain to the CA,
    as the leaf, with the other KeyInfo certificates as intermediates, at `at`."""
    others = [c for c in _keyinfo_certificates(signature) if c != cert]
    try:
        verifier = X509CertChainVerifier(ca_pem_file=ca_file, verification_time=at).verifier
        verifier.verify(leaf=cert, intermediates=others)
    except (VerificationError, ValueError) as exc:
        text = (
            f"sertifikatet ({cert.subject.rfc4514_string()}) er ikke klarert: ingen gyldig "
            f"kjede til CA ved mottak {at:%Y-%m-%dT%H:%M:%SZ} ({exc})"
        )
        raise TrustError(Problem(layer, "S02", text, where)) from exc


def _check_transforms(signature: etree._Element, layer: Layer, where: str) -> int:
    """Only the transforms we can honour; returns the number of references."""
    refs = signature.findall(f"{{{DS}}}SignedInfo/{{{DS}}}Reference")
    for ref in refs:
        for transform in ref.iterfind(f"{{{DS}}}Transforms/{{{DS}}}Transform"):
            algorithm = transform.get("Algorithm")
            if algorithm in C14N_METHODS or algorithm == ENVELOPED:
                continue
            if algorithm == XPATH_FILTER and ref.get("URI") == "":
                found = transform.find(f"{{{DS}}}XPath")
                text = found.xpath("string()") if found is not None else ""
                expression = " ".join(text.split())
                if expression == " ".join(EBMS_XPATH.split()):
                    continue
            text = f"signaturen bruker en transform vi ikke kan kontrollere: {algorithm}"
            raise TrustError(Problem(layer, "S99", text, where))
    return len(refs)


def _verify(
    root: etree._Element,
    signature: etree._Element,
    trusted: Trusted,
    at: datetime,
    layer: Layer,
    where: str,
    uri_resolver=None,
) -> None:
    expected = _check_transforms(signature, layer, where)
    cert = _choose_certificate(signature, trusted, at, layer, where)
    # within the clock skew of a validity bound (checked just above), the certificate is
    # judged at that bound: signxml and the chain check know no skew (#20: the skew was
    # otherwise honoured by our check and then refused by signxml's)
    at = min(max(at, cert.not_valid_before_utc), cert.not_valid_after_utc)
    config = SignatureConfiguration(
        expect_references=expected,
        verification_time=at,
        ignore_ambiguous_key_info=True,  # KeyValue beside X509Data is common (2023 capture)
    )
    if trusted.ca_file is not None and cert not in trusted.certificates:
        _chains_to_ca(signature, cert, trusted.ca_file, at, layer, where)
    try:
        # always with the one certificate checked above: signxml left to itself picks
        # the chain's leaf from KeyInfo, which need not be the certificate we checked
        XMLVerifier().verify(root, x509_cert=cert, uri_resolver=uri_resolver, expect_config=config)
    except InvalidDigest as exc:
        raise TrustError(Problem(layer, "S01", f"digest stemmer ikke: {exc}", where)) from exc
    except InvalidCertificate as exc:
        raise TrustError(
            Problem(layer, "S02", f"sertifikatet er ikke klarert: {exc}", where)
        ) from exc
    except InvalidSignature as exc:
        raise TrustError(Problem(layer, "S01", f"signaturen er ugyldig: {exc}", where)) from exc
    except InvalidInput as exc:
        raise TrustError(
            Problem(layer, "S99", f"signaturen kan ikke kontrolleres: {exc}", where)
        ) from exc
    except etree.DocumentInvalid as exc:  # signxml checks ds:Signature against its schema
        text = (
            "ds:Signature følger ikke XML-signaturskjemaet (for eksempel en Reference URI "
            f"som ikke er en gyldig URI): {exc}"
        )
        raise TrustError(Problem(layer, "T02", text, where)) from exc


def _the_signature(
    root: etree._Element,
    own_path: str,
    what: str,
    misplaced: str,
    layer: Layer,
    where: str,
    *,
    required: bool,
) -> etree._Element | None:
    """The one ds:Signature at `own_path`; any signature elsewhere (a wrapping attack),
    more than one, or none when the agreement requires one, is refused."""
    own = root.findall(own_path)
    if len(root.findall(f".//{{{DS}}}Signature")) != len(own):
        raise TrustError(Problem(layer, "S01", misplaced, where))
    if len(own) > 1:
        text = f"{what} har {len(own)} signaturer; forventet én"
        raise TrustError(Problem(layer, "S01", text, where))
    if not own and required:
        text = f"{what} er ikke signert, men avtalen krever signatur"
        raise TrustError(Problem(layer, "S01", text, where))
    return own[0] if own else None


def _reference_uris(signature: etree._Element) -> list[str | None]:
    return [r.get("URI") for r in signature.iterfind(f"{{{DS}}}SignedInfo/{{{DS}}}Reference")]


def verify_envelope(
    envelope: etree._Element,
    attachments: dict[str, bytes],
    manifest: tuple[str, ...],
    trusted: Trusted,
    at: datetime,
    *,
    required: bool,
) -> bool:
    """Check the ebXML header signature; True when one was present and verified.

    Raises TrustError with the precise reason. The signature must sit in SOAP:Header,
    cover the whole envelope (`""`) and every payload part the manifest names.
    """
    where = "/SOAP:Envelope/SOAP:Header/ds:Signature"
    layer = Layer.ENVELOPE
    signature = _the_signature(
        envelope,
        f"{{{SOAP}}}Header/{{{DS}}}Signature",
        "meldingen",
        "ds:Signature utenfor SOAP:Header",
        layer,
        where,
        required=required,
    )
    if signature is None:
        return False
    uris = _reference_uris(signature)
    if "" not in uris:
        text = 'signaturen dekker ikke hele konvolutten (mangler Reference URI="")'
        raise TrustError(Problem(layer, "S01", text, where))
    uncovered = [href for href in manifest if href not in uris]
    if uncovered:
        text = f"signaturen dekker ikke nyttelasten {', '.join(uncovered)}"
        raise TrustError(Problem(layer, "S01", text, where))
    filtered = signed_view(envelope)

    def resolve(uri: str) -> bytes | None:
        return attachments.get(uri[4:]) if uri.startswith("cid:") else None

    _verify(filtered, signature, trusted, at, layer, where, uri_resolver=resolve)
    return True


def signed_view(envelope: etree._Element) -> etree._Element:
    """A copy of the envelope as the ebMS XPath filter leaves it: without the elements
    addressed to the next MSH. What the header signature covers, and so the only
    version of the header that may be read (signxml does not apply the filter itself)."""
    filtered = etree.fromstring(etree.tostring(envelope))
    for actor in (NEXT_MSH, SOAP_NEXT):
        for el in filtered.xpath("//*[@SOAP:actor=$a]", namespaces={"SOAP": SOAP}, a=actor):
            el.getparent().remove(el)
    return filtered


def verify_msghead(
    msghead: etree._Element, trusted: Trusted, at: datetime, *, required: bool
) -> bool:
    """Check the MsgHead's enveloped signature; True when present and verified."""
    where = "/MsgHead/Signature"
    layer = Layer.MSGHEAD
    misplaced = "ds:Signature på uventet sted i MsgHead (bare som siste barn av MsgHead)"
    signature = _the_signature(
        msghead, f"{{{DS}}}Signature", "MsgHead", misplaced, layer, where, required=required
    )
    if signature is None:
        return False
    uris = _reference_uris(signature)
    if uris != [""]:
        text = f'MsgHead-signaturen må ha nøyaktig én Reference med URI="", fant {uris}'
        raise TrustError(Problem(layer, "S01", text, where))
    _verify(msghead, signature, trusted, at, layer, where)
    return True


def parse_time(value: str | None, fallback: datetime) -> datetime:
    """An xs:dateTime as an aware UTC datetime (naive values are read as UTC)."""
    if not value:
        return fallback
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return fallback
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
