"""`kravmottak keys new [--csr] [--force]` and `keys show`: a production key, encrypted
with the configured passphrase source, and the request for our enterprise certificate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree

from daemon import cli
from daemon.transport import mime, trust
from daemon.transport.ebms import NS
from daemon.transport.trust import Trusted
from tests.conftest import CERTS_FROM, wrap_demo
from tests.test_intake import AR, apprec_of

SECRET = "korrekt hest batteri stift"


def with_passphrase_file(sandbox, secret: str = SECRET) -> Path:
    """The sandbox's config names a passphrase file (as a server's names a credential)."""
    pw = sandbox.root / "key-passphrase"
    pw.write_text(secret + "\n")
    pw.chmod(0o600)
    cfg = sandbox.config_path
    cfg.write_text(
        cfg.read_text().replace("[keys]\n", '[keys]\npassphrase_file = "key-passphrase"\n')
    )
    return pw


def keys_cli(sandbox, *args: str) -> int:
    return cli.main(["--config", str(sandbox.config_path), "keys", *args])


def issue(csr_path: Path, certificate: Path) -> x509.Certificate:
    """Play the issuer: a test CA signs the request, as Buypass or Commfides would."""
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    assert csr.is_signature_valid
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Business CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca_name)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(CERTS_FROM)
        .not_valid_after(CERTS_FROM + timedelta(days=3650))
        .sign(ca_key, hashes.SHA256())
    )
    certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def test_keys_new_writes_an_encrypted_0600_key_and_a_request(sandbox, capsys):
    with_passphrase_file(sandbox)
    paths = sandbox.paths
    paths.private_key.unlink()
    assert keys_cli(sandbox, "new", "--csr", "--bits", "2048") == 0
    pem = paths.private_key.read_bytes()
    assert paths.private_key.stat().st_mode & 0o777 == 0o600
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError):  # encrypted: nothing without the passphrase
        serialization.load_pem_private_key(pem, password=None)
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(pem, password=b"wrong")
    key = serialization.load_pem_private_key(pem, password=SECRET.encode())
    assert key.key_size == 2048
    csr = x509.load_pem_x509_csr(paths.csr.read_bytes())
    assert csr.is_signature_valid
    assert csr.public_key().public_numbers() == key.public_key().public_numbers()
    subject = {a.oid: a.value for a in csr.subject}
    assert subject[NameOID.ORGANIZATION_IDENTIFIER] == "NTRNO-889640782"
    assert subject[NameOID.ORGANIZATION_NAME] == "HELFO"
    assert subject[NameOID.ORGANIZATIONAL_UNIT_NAME] == "HER-id 79768"
    assert subject[NameOID.COUNTRY_NAME] == "NO"
    out = capsys.readouterr()
    assert str(paths.csr) in out.out
    assert "belongs to the old key" in out.err  # init's development certificate is still there
    assert SECRET not in out.out + out.err


def test_keys_new_never_overwrites_a_key_without_force(sandbox, capsys):
    with_passphrase_file(sandbox)
    before = sandbox.paths.private_key.read_bytes()
    assert keys_cli(sandbox, "new", "--bits", "2048") == 1
    assert sandbox.paths.private_key.read_bytes() == before
    assert "exists already" in capsys.readouterr().err
    assert keys_cli(sandbox, "new", "--force", "--bits", "2048") == 0
    assert sandbox.paths.private_key.read_bytes() != before
    assert not [p for p in sandbox.paths.private_key.parent.iterdir() if p.name.startswith(".")]


def test_keys_new_without_a_passphrase_source_is_refused(sandbox, capsys):
    """A production key is never written in the clear: exit 2, nothing written."""
    sandbox.paths.private_key.unlink()
    assert keys_cli(sandbox, "new") == 2
    assert "names no passphrase source" in capsys.readouterr().err
    assert not sandbox.paths.private_key.exists()


def test_keys_new_with_a_missing_passphrase_file_is_a_clean_error(sandbox, capsys):
    with_passphrase_file(sandbox).unlink()
    assert keys_cli(sandbox, "new") == 2
    err = capsys.readouterr().err
    assert "passphrase file" in err and "Traceback" not in err


def test_keys_show_tells_everything_but_the_secrets(sandbox, capsys):
    with_passphrase_file(sandbox)
    sandbox.paths.private_key.unlink()
    assert keys_cli(sandbox, "new", "--csr", "--bits", "2048") == 0
    issued = issue(sandbox.paths.csr, sandbox.paths.certificate)
    capsys.readouterr()
    assert keys_cli(sandbox, "show") == 0
    out = capsys.readouterr().out
    facts: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition("  ")
        facts.setdefault(key.strip(), []).append(value.strip())
    assert facts["encrypted"] == ["yes"]
    assert facts["mode"] == ["0600"]
    assert facts["key"] == ["RSA 2048 bits"]
    assert facts["issuer"] == ["CN=Test Business CA"]
    assert "NTRNO-889640782" in facts["subject"][0]
    assert facts["SHA-256"] == [issued.fingerprint(hashes.SHA256()).hex(":").upper()]
    assert facts["matches our key"] == ["yes"]
    assert facts["signature"] == ["valid"]  # the pending request
    assert SECRET not in out and "PRIVATE KEY" not in out


def test_the_daemon_signs_with_the_new_key_once_its_certificate_is_there(sandbox, capsys):
    """Through the real pipeline: `process` refuses to start while the certificate is the
    old key's (exit 2, the claim stays in the inbox), and signs its answers with the new
    key once the issued certificate is installed."""
    with_passphrase_file(sandbox)
    assert keys_cli(sandbox, "new", "--force", "--csr", "--bits", "2048") == 0
    dropped = sandbox.drop(wrap_demo())
    assert cli.main(["--config", str(sandbox.config_path), "process"]) == 2
    assert "does not belong to the key" in capsys.readouterr().err
    assert dropped.exists() and not sandbox.outbox()  # nothing taken, nothing lost

    issued = issue(sandbox.paths.csr, sandbox.paths.certificate)
    assert cli.main(["--config", str(sandbox.config_path), "process"]) == 0
    assert apprec_of(sandbox).find("ar:Status", AR).get("V") == "1"
    (path,) = sandbox.outbox("apprec")
    multipart, problem = mime.parse(path.read_bytes())
    assert problem is None
    envelope = etree.fromstring(multipart.start.data)
    stamp = envelope.findtext(".//eb:MessageHeader/eb:MessageData/eb:Timestamp", namespaces=NS)
    at = trust.parse_time(stamp, datetime.now(UTC))
    parts = {p.content_id: p.data for p in multipart.attachments}
    manifest = tuple(
        r.get(f"{{{NS['xlink']}}}href") for r in envelope.iterfind(".//eb:Reference", NS)
    )
    assert trust.verify_envelope(envelope, parts, manifest, Trusted((issued,)), at, required=True)


def test_a_wrong_passphrase_stops_the_daemon_without_touching_the_inbox(sandbox, capsys):
    pw = with_passphrase_file(sandbox)
    assert keys_cli(sandbox, "new", "--force", "--csr", "--bits", "2048") == 0
    issue(sandbox.paths.csr, sandbox.paths.certificate)
    pw.write_text("not the passphrase\n")
    dropped = sandbox.drop(wrap_demo())
    assert cli.main(["--config", str(sandbox.config_path), "process"]) == 2
    err = capsys.readouterr().err
    assert "wrong passphrase" in err and "not the passphrase" not in err
    assert dropped.exists() and not sandbox.outbox()
