"""Make the replay corpus: recorded inbound messages for every rule and every technical
error the daemon answers (tests/corpus/README.md).

    .venv/bin/python -m tests.corpus.make_corpus          # rewrite the messages
    .venv/bin/kravmottak --config tests/corpus/config/kravmottak.toml \\
        replay tests/corpus --record tests/corpus/expected  # then record the answers

- `lab-*.msg`, `rad-*.msg`: one message per case of the CASES tables in
  tests/test_lab_rules.py and tests/test_radiology_rules.py (every rule id, approving
  and rejecting), sent by the demo partner (HER 90001, unsigned).
- `eg-*.msg`: one message per case of the CASES table in tests/test_egenandel.py
  (EG-01..12, firing and passing), judged with that test's egenandel register, which
  this script writes to config/tariffs/egenandel.toml (its PHV and LAR units).
- `seq-*.msg`: rules across messages (COM-06, COM-07, RAD-06; EG-02/03 corrections and
  credits of `eg-*` bills), in name order.
- `tech-*.msg`: technical errors (T01, T02, T10, T99, E10, E21, S01, S02, S99, and the
  MessageError cases), duplicates and a retransmission; the signed and encrypted ones
  come from the corpus hospital (HER 90002), whose agreement requires both.
- `xml-*.xml`: a bare MsgHead, which replay wraps.
- `cases.json`: what each file is meant to show (test_replay.py checks it).

Deterministic: the same script gives the same bytes. Ids and bill uuids are uuid5 of
the case id, signatures are RSA PKCS#1 v1.5, and CMS encryption uses a content key, IV
and key-transport padding derived from the file name (`deterministic_cms`, test only:
a real sender must use random ones). The test-only key pairs in config/keys/ are made
on the first run (or with --new-keys, after which every message changes).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from asn1crypto import cms as asn1cms
from asn1crypto import x509 as asn1x509
from cryptography import x509
from cryptography.hazmat.primitives import padding as sympad
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from lxml import etree

from daemon.domain import PartyRef
from daemon.tools.wrap import wrap
from daemon.transport import ebms, keys, mime, trust
from tests.claims import B, C, L, msghead, person_number

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "config"
KEYS = CONFIG / "keys"
NS = uuid.uuid5(uuid.NAMESPACE_URL, "kravmottak:corpus")
AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # the day the cases are judged on
DEMO_HER, DEMO_CPA = "90001", "kravmottak:demo:1"
HOSPITAL_HER, HOSPITAL_CPA = "90002", "kravmottak:corpus:1"
OUR_HER = "79768"
CERTS_FROM = datetime(2025, 1, 1, tzinfo=UTC)
# (file stem, subject name, valid from, days): our pair and the partners' pairs
KEY_PAIRS = (
    ("kravmottak-corpus", "HELFO corpus", CERTS_FROM, 3650),
    ("hospital", "Corpus sykehus HF", CERTS_FROM, 3650),  # registered for HER 90002
    ("expired", "Corpus sykehus HF 2020", datetime(2020, 1, 1, tzinfo=UTC), 365),  # registered
    ("stranger", "Stranger", CERTS_FROM, 3650),  # registered for nobody
)
OSMO = L("NOR05003", "6.96")  # Us-Osmolalitet, MB2: 6.96 at the 2023 state rate


# --------------------------------------------------------------------------- keys


def ensure_keys(new: bool = False) -> dict[str, trust.KeyPair]:
    """The test-only key pairs in config/keys/, made when missing (or --new-keys)."""
    pairs = {}
    for stem, name, start, days in KEY_PAIRS:
        key, cert = KEYS / f"{stem}.key.pem", KEYS / f"{stem}.cert.pem"
        if new or not key.exists():
            her = OUR_HER if stem == "kravmottak-corpus" else HOSPITAL_HER
            orgnr = "889640782" if stem == "kravmottak-corpus" else "983974678"
            keys.generate(
                key, cert, her_id=her, orgnr=orgnr, name=name, not_before=start, days=days
            )
        pairs[stem] = keys.load_pair(key, cert, None)
    return pairs


# --------------------------------------------------------------------------- CMS


def _stream(seed: bytes, size: int) -> bytes:
    out, n = b"", 0
    while len(out) < size:
        out += hashlib.sha256(seed + n.to_bytes(4, "big")).digest()
        n += 1
    return out[:size]


def _rsa_pkcs1v15(certificate: x509.Certificate, message: bytes, seed: bytes) -> bytes:
    """RSA PKCS#1 v1.5 encryption with padding bytes from `seed` (test only)."""
    numbers = certificate.public_key().public_numbers()
    size = (numbers.n.bit_length() + 7) // 8
    filler = bytes(b for b in _stream(seed, 4 * size) if b)[: size - 3 - len(message)]
    block = b"\x00\x02" + filler + b"\x00" + message
    return pow(int.from_bytes(block, "big"), numbers.e, numbers.n).to_bytes(size, "big")


def deterministic_cms(data: bytes, recipient: x509.Certificate, seed: str) -> bytes:
    """CMS EnvelopedData (RSA key transport, AES-256-CBC) like `trust.encrypt`, but with
    the content key, IV and padding derived from `seed`: the corpus stays the same bytes."""
    s = seed.encode()
    cek, iv = _stream(s + b":cek", 32), _stream(s + b":iv", 16)
    padder = sympad.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(data) + padder.finalize()) + encryptor.finalize()
    recipient_info = asn1cms.KeyTransRecipientInfo(
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
            "key_encryption_algorithm": {"algorithm": "rsaes_pkcs1v15"},
            "encrypted_key": _rsa_pkcs1v15(recipient, cek, s + b":key"),
        }
    )
    enveloped = asn1cms.EnvelopedData(
        {
            "version": "v0",
            "recipient_infos": [asn1cms.RecipientInfo(name="ktri", value=recipient_info)],
            "encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": {"algorithm": "aes256_cbc", "parameters": iv},
                "encrypted_content": ciphertext,
            },
        }
    )
    return asn1cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump()


# --------------------------------------------------------------------------- claims


def pinned(case_id: str, claim: C) -> C:
    """A CASES claim with its MsgId and bill uuids fixed (they are random there)."""
    bills = tuple(
        b if b.uuid else replace(b, uuid=f"{{{uuid.uuid5(NS, f'{case_id}:{i}')}}}".upper())
        for i, b in enumerate(claim.bills)
    )
    return replace(claim, bills=bills, msg_id=str(uuid.uuid5(NS, case_id)))


def lab_claim(case_id: str, n: int, *lines: L, **kw) -> C:
    """A valid lab claim of its own (an invented patient per n, born 02.02.1990)."""
    kw.setdefault("fnr", person_number(n, born="020290"))
    return pinned(case_id, C((B(lines or (OSMO,), **kw),)))


def demo(payload: bytes, case_id: str, at: datetime = AT, **kwargs) -> bytes:
    """From the demo partner, as its ebMS handler would send it."""
    kwargs.setdefault("message_id", case_id)
    kwargs.setdefault("conversation_id", f"conversation-{case_id}")
    return wrap(payload, from_her=DEMO_HER, cpa_id=DEMO_CPA, timestamp=at, **kwargs)


def signed(msghead_xml: bytes, pair: trust.KeyPair | None) -> bytes:
    root = etree.fromstring(msghead_xml)
    if pair is not None:
        root = trust.sign_msghead(root, pair)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def hospital(
    msghead_xml: bytes,
    case_id: str,
    *,
    signer: trust.KeyPair | None,
    encrypt_to: x509.Certificate | None,
    tamper: Callable[[bytes], bytes] | None = None,
) -> bytes:
    """From the corpus hospital (HER 90002), as `daemon.tools.wrap.wrap` sends, but with
    deterministic encryption: gzip, CMS to `encrypt_to`, `tamper` (after encryption,
    before signing), the envelope signed by `signer`."""
    route = ebms.Route(
        from_party=PartyRef(HOSPITAL_HER, "HER", "Behandler"),
        to_party=PartyRef(OUR_HER, "HER", "KontrollUtbetaler"),
        cpa_id=HOSPITAL_CPA,
        conversation_id=f"conversation-{case_id}",
        service="BehandlerKrav",
        action="OppgjorsMelding",
        message_id=case_id,
        timestamp=AT.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    cid = f"payload-{case_id}@sender"
    env = ebms.envelope(route, manifest=(cid,), ack_requested=True)
    data, ctype = gzip.compress(msghead_xml, mtime=0), "application/gzip"
    if encrypt_to is not None:
        data, ctype = deterministic_cms(data, encrypt_to, case_id), "application/pkcs7-mime"
    if tamper is not None:
        data = tamper(data)
    if signer is not None:
        env = trust.sign_envelope(env, {cid: data}, signer)
    soap = mime.Part(f"soap-{case_id}@sender", "text/xml", ebms.to_bytes(env))
    return mime.build([soap, mime.Part(cid, ctype, data)])


# --------------------------------------------------------------------------- the cases

Case = tuple[str, bytes, dict]  # file name, bytes, what it shows (cases.json)


def rule_cases() -> list[Case]:
    from tests.test_egenandel import CASES as EG
    from tests.test_lab_rules import CASES as LAB
    from tests.test_radiology_rules import CASES as RAD

    out = []
    for prefix, cases in (("lab", LAB), ("rad", RAD), ("eg", EG)):
        for case_id, rule_id, fires, claim in cases:
            name = f"{prefix}-{case_id}"
            payload = msghead(pinned(name, claim))
            out.append((f"{name}.msg", demo(payload, name), {"rule": rule_id, "fires": fires}))
    return out


def sequence_cases() -> list[Case]:
    """Rules that look at earlier messages; the files run in name order."""
    from tests.test_radiology_rules import CT_CHEST, CT_HEAD, CT_KNEE, rad

    fnr = person_number(700, born="020290")
    out: list[Case] = []

    def add(name: str, claim: C, shows: dict) -> None:
        out.append((f"{name}.msg", demo(msghead(pinned(name, claim)), name), shows))

    paid = B((OSMO,), uuid="{5E0C0600-0000-4000-8000-000000000001}", fnr=fnr)
    add("seq-com06-1-original", C((paid,)), {"rule": "COM-06", "fires": False})
    add("seq-com06-2-same-uuid", C((paid,)), {"rule": "COM-06", "fires": True})
    fnr = person_number(701, born="020290")
    original = B(
        (OSMO, L("NPU01685", "23.18", 2)), uuid="{5E0C0700-0000-4000-8000-000000000001}", fnr=fnr
    )
    credit = replace(original, transaction_type="5")
    add("seq-com07-1-original", C((original,)), {"rule": "COM-07", "fires": False})
    add("seq-com07-2-credit", C((credit,)), {"rule": "COM-07", "fires": False})
    add("seq-com07-3-credit-again", C((credit,)), {"rule": "COM-07", "fires": True})
    fnr = person_number(702, born="020290")  # one patient, three CT exams on one day
    head, chest, knee = (
        B((rad(code),), fnr=fnr, date=f"2026-10-05T{hour}:00:00")
        for code, hour in ((CT_HEAD, "09"), (CT_CHEST, "11"), (CT_KNEE, "13"))
    )
    add("seq-rad06-1-head", C((head,)), {"rule": "RAD-06", "fires": False})
    add("seq-rad06-2-chest", C((chest,)), {"rule": "RAD-06", "fires": False})
    add("seq-rad06-3-knee", C((knee,)), {"rule": "RAD-06", "fires": True})
    from tests.test_egenandel import LATER  # after every eg-* file (name order)

    for case_id, rule_id, fires, claim in LATER:
        add(f"seq-{case_id}", claim, {"rule": rule_id, "fires": fires})
    return out


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE MsgHead [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24">&xxe;</MsgHead>"""


def technical_cases(pairs: dict[str, trust.KeyPair]) -> list[Case]:
    ours, partner = pairs["kravmottak-corpus"].certificate, pairs["hospital"]
    n = iter(range(100, 200))

    def claim(case_id: str) -> bytes:
        return msghead(lab_claim(case_id, next(n)))

    def problem(*codes: str) -> dict:
        return {"problems": list(codes)}

    out: list[Case] = []

    def add(name: str, raw: bytes, shows: dict) -> None:
        out.append((f"{name}.msg", raw, shows))

    # ---- the corpus hospital: signed, encrypted to us, gzipped
    name = "tech-ok-signed-encrypted"
    raw = hospital(signed(claim(name), partner), name, signer=partner, encrypt_to=ours)
    add(name, raw, {"rule": "LAB-09", "fires": False})
    name = "tech-s01-unsigned-envelope"
    add(
        name,
        hospital(signed(claim(name), partner), name, signer=None, encrypt_to=ours),
        problem("S01"),
    )
    name = "tech-s01-unsigned-msghead"
    add(name, hospital(claim(name), name, signer=partner, encrypt_to=ours), problem("S01"))
    name = "tech-s01-digest-mismatch"
    raw = hospital(signed(claim(name), partner), name, signer=partner, encrypt_to=ours)
    add(name, _swap_after_signing(raw, ours), problem("S01"))
    name = "tech-s01-msghead-forged"
    forged = signed(claim(name), partner).replace(b'sumBelop="6.96"', b'sumBelop="69.60"', 1)
    add(name, hospital(forged, name, signer=partner, encrypt_to=ours), problem("S01"))
    stranger, expired = pairs["stranger"], pairs["expired"]
    name = "tech-s02-unregistered-certificate"
    add(
        name,
        hospital(signed(claim(name), stranger), name, signer=stranger, encrypt_to=ours),
        problem("S02"),
    )
    name = "tech-s02-expired-certificate"
    add(
        name,
        hospital(signed(claim(name), expired), name, signer=expired, encrypt_to=ours),
        problem("S02"),
    )
    name = "tech-s99-encrypted-to-someone-else"
    raw = hospital(
        signed(claim(name), partner), name, signer=partner, encrypt_to=stranger.certificate
    )
    add(name, raw, problem("S99"))
    name = "tech-s99-plain-payload"
    add(
        name,
        hospital(signed(claim(name), partner), name, signer=partner, encrypt_to=None),
        problem("S99"),
    )
    name = "tech-t99-truncated-cms"
    raw = hospital(
        signed(claim(name), partner),
        name,
        signer=partner,
        encrypt_to=ours,
        tamper=lambda d: d[:-40],
    )
    add(name, raw, problem("T99"))
    # ---- the demo partner (need not sign)
    name = "tech-t01-doctype"
    add(name, demo(XXE, name), problem("T01"))
    name = "tech-t01-broken-envelope"
    add(
        name,
        b'Content-Type: multipart/related; boundary="b"\r\n\r\n--b\r\n\r\n<a>\r\n--b--\r\n',
        problem("T01"),
    )
    name = "tech-t02-schema"
    broken = (
        claim(name)
        .replace(b' regningNr="1001"', b"")
        .replace(b'typeTransaksjon="1"', b'typeTransaksjon="9"', 1)
    )
    add(name, demo(broken, name), problem("T02", "T02"))
    name = "tech-t10-not-mime"
    add(name, b'<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24"/>\n', problem("T10"))
    name = "tech-t10-msghead-type"
    add(
        name, demo(claim(name).replace(b'<Type V="POM"', b'<Type V="APPREC"'), name), problem("T10")
    )
    name = "tech-t10-two-claims"
    xml = claim(name)
    melding = xml[xml.index(b"<Melding") : xml.index(b"</Melding>") + len(b"</Melding>")]
    add(name, demo(xml.replace(melding, melding + melding), name), problem("T10"))
    name = "tech-t99-oversized"  # the corpus config's max_file_bytes is 60000
    padded = claim(name).replace(b"<MsgHead", b"<!--" + b"x" * 70_000 + b"--><MsgHead", 1)
    add(name, demo(padded, name), problem("T99"))
    name = "tech-t99-gzip-bomb"  # max_payload_bytes is 1000000
    frame = mime.parse(demo(b"placeholder", name))[0]
    bomb = gzip.compress(b"<" + b"a" * 2_000_000, mtime=0)
    bomb_part = mime.Part(frame.attachments[0].content_id, "application/gzip", bomb)
    add(name, mime.build([frame.start, bomb_part]), problem("T99"))
    name = "tech-e10-unknown-partner"
    stranger_sends = wrap(
        claim(name),
        from_her="424242",
        cpa_id="nobody:1",
        message_id=name,
        conversation_id=f"conversation-{name}",
        timestamp=AT,
    )
    add(name, stranger_sends, problem("E10"))
    name = "tech-e21-misaddressed"
    add(name, demo(claim(name), name, to_her="12345"), problem("E21"))
    name = "tech-e10-manifest-nowhere"
    route = ebms.Route(
        PartyRef(DEMO_HER, "HER", "Behandler"),
        PartyRef(OUR_HER, "HER", "KontrollUtbetaler"),
        DEMO_CPA,
        f"conversation-{name}",
        "BehandlerKrav",
        "OppgjorsMelding",
        name,
        AT.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    env = ebms.envelope(route, manifest=("missing@sender",))
    add(name, mime.build([mime.Part(f"soap-{name}@sender", "text/xml", ebms.to_bytes(env))]),
        problem("E10"))  # fmt: skip
    name = "tech-e10-missing-timestamp"  # the clock falls back to the MsgHead GenDate
    frame = mime.parse(demo(claim(name), name))[0]
    soap = frame.start.data.replace(b"<eb:Timestamp>", b"<eb:Junk>").replace(
        b"</eb:Timestamp>", b"</eb:Junk>", 1
    )
    soap_part = mime.Part(frame.start.content_id, "text/xml", soap)
    add(name, mime.build([soap_part, *frame.attachments]), problem("E10"))
    name = "tech-e10-reused-message-id"
    add(f"{name}-1", demo(claim(f"{name}-1"), name), {"problems": []})
    add(f"{name}-2", demo(claim(f"{name}-2"), name), problem("E10"))
    # ---- the same bytes again, and the same message in a new envelope
    name = "tech-duplicate"
    raw = demo(claim(name), name)
    add(f"{name}-1", raw, {"problems": []})
    add(f"{name}-2-same-bytes", raw, {"outcome": "duplicate"})
    name = "tech-retransmission"
    payload = claim(name)
    add(f"{name}-1", demo(payload, name), {"problems": []})
    later = demo(payload, name, at=AT + timedelta(minutes=5))
    add(f"{name}-2-new-envelope", later, {"outcome": "duplicate"})
    return out


def _swap_after_signing(raw: bytes, ours: x509.Certificate) -> bytes:
    """The payload part replaced after the header was signed: its cid: digest fails."""
    frame = mime.parse(raw)[0]
    part = frame.attachments[0]
    other = deterministic_cms(gzip.compress(b"<other/>", mtime=0), ours, "swapped")
    return mime.build([frame.start, mime.Part(part.content_id, part.content_type, other)])


def bare_cases() -> list[Case]:
    demo_claim = (HERE.parent / "data" / "claim-demo.xml").read_bytes()
    return [("xml-demo-claim.xml", demo_claim, {"rule": "LAB-09", "fires": False})]


# --------------------------------------------------------------------------- main


def corpus(new_keys: bool = False) -> list[Case]:
    """Every case, built in memory (test_replay.py compares them with the files)."""
    pairs = ensure_keys(new_keys)
    return rule_cases() + sequence_cases() + technical_cases(pairs) + bare_cases()


def make(new_keys: bool = False) -> list[Case]:
    cases = corpus(new_keys)
    names = [c[0] for c in cases]
    assert len(names) == len(set(names)), "two cases with one file name"
    for old in [*HERE.glob("*.msg"), *HERE.glob("*.xml")]:
        if old.name not in names:
            old.unlink()
    for name, raw, _ in cases:
        path = HERE / name
        if not path.exists() or path.read_bytes() != raw:
            path.write_bytes(raw)
    from tests.test_egenandel import REGISTER

    (CONFIG / "tariffs").mkdir(exist_ok=True)
    (CONFIG / "tariffs" / "egenandel.toml").write_text(
        "# TEST ONLY: written by tests/corpus/make_corpus.py from tests/test_egenandel.py\n"
        + REGISTER,
        encoding="utf-8",
    )
    shows = {name: what for name, _, what in cases}
    text = json.dumps(shows, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    (HERE / "cases.json").write_text(text, encoding="utf-8")
    return cases


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--new-keys", action="store_true", help="make new test-only key pairs")
    cases = make(p.parse_args().new_keys)
    print(f"{len(cases)} messages in {HERE}")


if __name__ == "__main__":
    main()
