"""Our own key pair and certificate (development keys made by `init`).

Production keys come from the enterprise certificate issuer; these are real RSA keys
and a real self-signed X.509 certificate, so signing can be exercised end to end.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

# what our key is for: signing answers (and non-repudiation), receiving CMS
OUR_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=True,
    key_encipherment=True,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def generate(
    private_key: Path,
    certificate: Path,
    *,
    her_id: str,
    orgnr: str,
    name: str,
    not_before: datetime | None = None,
    days: int = 730,
) -> None:
    """Write a 2048-bit RSA key (mode 0600) and a self-signed certificate (two years)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "NO"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{name} HER {her_id}"),
            x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, f"NTRNO-{orgnr}"),
        ]
    )
    start = not_before or datetime.now(UTC) - timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            OUR_KEY_USAGE,
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    private_key.parent.mkdir(parents=True, exist_ok=True)
    certificate.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when an older file was there with looser bits
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def patient_secret(path: Path) -> bytes:
    """The secret patient pseudonyms are made with (`[keys] patient_secret`): 32 random
    bytes, hex, in a file of mode 0600 beside our key, never in the ledger. Made here
    when missing (by `init`, and by the daemon on first start)."""
    try:
        value = path.read_bytes().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(os.urandom(32).hex().encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        value = path.read_bytes().strip()
    if len(value) < 32:
        raise KeyLoadError(f"{path}: the patient secret is shorter than 32 characters")
    return value


def describe(cert: x509.Certificate) -> str:
    return f"{cert.subject.rfc4514_string()} (valid to {cert.not_valid_after_utc:%Y-%m-%d})"


class KeyLoadError(Exception):
    """Our key or certificate cannot be loaded; the message says which and why."""


def passphrase(source: dict[str, str] | None) -> bytes | None:
    """The key passphrase from the configured source, never from the config itself:
    `file` (a path), `env` (a variable name) or `credential` (a systemd credential name,
    read from $CREDENTIALS_DIRECTORY as set by LoadCredential=)."""
    if not source:
        return None
    if "file" in source:
        try:
            return Path(source["file"]).read_bytes().strip()
        except OSError as exc:
            raise KeyLoadError(f"passphrase file {source['file']}: {exc.strerror}") from exc
    if "env" in source:
        value = os.environ.get(source["env"])
        if value is None:
            raise KeyLoadError(f"passphrase variable ${source['env']} is not set")
        return value.encode()
    if "credential" in source:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise KeyLoadError(
                "passphrase credential configured but $CREDENTIALS_DIRECTORY is unset"
            )
        try:
            return (Path(directory) / source["credential"]).read_bytes().strip()
        except OSError as exc:
            raise KeyLoadError(
                f"passphrase credential {source['credential']!r} in $CREDENTIALS_DIRECTORY:"
                f" {exc.strerror}"
            ) from exc
    raise KeyLoadError(f"unknown passphrase source {sorted(source)}; use file, env or credential")


def load_pair(private_key: Path, certificate: Path, secret: bytes | None):
    """Our KeyPair; the error names the file, never the passphrase."""
    from daemon.transport.trust import KeyPair

    try:
        key = serialization.load_pem_private_key(private_key.read_bytes(), password=secret)
    except FileNotFoundError as exc:
        raise KeyLoadError(f"private key not found: {private_key}") from exc
    except OSError as exc:  # unreadable (permissions), a folder, an I/O error
        raise KeyLoadError(f"private key {private_key}: cannot read: {exc.strerror}") from exc
    except (ValueError, TypeError) as exc:
        raise KeyLoadError(f"{private_key}: cannot load the key (wrong passphrase?)") from exc
    try:
        cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    except FileNotFoundError as exc:
        raise KeyLoadError(f"certificate not found: {certificate}") from exc
    except OSError as exc:
        raise KeyLoadError(f"certificate {certificate}: cannot read: {exc.strerror}") from exc
    except ValueError as exc:
        raise KeyLoadError(f"{certificate}: not a PEM certificate") from exc
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        raise KeyLoadError(f"{certificate} does not belong to the key {private_key}")
    return KeyPair(key, cert)


def load_certificates(path: Path) -> tuple[x509.Certificate, ...]:
    """Every certificate in a PEM file (or one DER certificate)."""
    data = path.read_bytes()
    if b"-----BEGIN" in data:
        return tuple(x509.load_pem_x509_certificates(data))
    return (x509.load_der_x509_certificate(data),)


# ------------------------------------------------------------------ production keys


PRODUCTION_KEY_BITS = 3072  # as the enterprise certificates on the health network use


def _write_private(path: Path, data: bytes, *, replace: bool) -> None:
    """Write `data` as a new file at `path`, mode 0600 from the first byte, fsynced.
    Never half a key: a temporary name is linked (no replace) or renamed (replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask says
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # FileExistsError: never overwrite a key by accident
            tmp.unlink()
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    finally:
        tmp.unlink(missing_ok=True)


def new_production_key(
    path: Path, secret: bytes, *, bits: int = PRODUCTION_KEY_BITS, replace: bool = False
) -> rsa.RSAPrivateKey:
    """A new RSA key at `path`, encrypted with `secret` (PKCS#8, the best encryption
    `cryptography` offers), mode 0600. FileExistsError when a key is there already and
    `replace` is not given."""
    if not secret:
        raise KeyLoadError("the key passphrase is empty: a production key is encrypted")
    if path.exists() and not replace:
        raise FileExistsError(f"{path} exists already")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(secret),
    )
    _write_private(path, pem, replace=replace)
    return key


def party_name(*, her_id: str, orgnr: str, name: str) -> x509.Name:
    """The subject an enterprise certificate of ours carries: as on the health network's
    certificates (C=NO, O and CN the organisation, organizationIdentifier NTRNO-orgnr,
    SEID 2), plus our HER-id as an organisational unit for the issuer to keep or drop."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "NO"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"HER-id {her_id}"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, f"NTRNO-{orgnr}"),
        ]
    )


def signing_request(
    key: rsa.RSAPrivateKey, *, her_id: str, orgnr: str, name: str
) -> x509.CertificateSigningRequest:
    """A PKCS#10 request for our enterprise certificate, signed with `key` (SHA-256):
    signing, non-repudiation and key encipherment (we sign answers and receive CMS)."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(party_name(her_id=her_id, orgnr=orgnr, name=name))
        .add_extension(
            OUR_KEY_USAGE,
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )


def write_public(path: Path, pem: bytes) -> None:
    """A certificate or a request: public, written whole (temporary name, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(pem)
    os.replace(tmp, path)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 over the DER certificate, as colon-separated hex (what issuers print)."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _kind(key) -> str:
    name = "RSA" if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey) else type(key).__name__
    return f"{name} {getattr(key, 'key_size', '?')} bits"


def key_facts(private_key: Path, secret: bytes | None) -> tuple[list[tuple[str, str]], object]:
    """What can be said about our key without printing any of it: type, size, whether it
    is encrypted, its mode; and its public key when it could be opened. The passphrase
    is used only to open it, never shown."""
    try:
        pem = private_key.read_bytes()
    except FileNotFoundError:
        return [("private key", f"{private_key}: not there")], None
    encrypted = b"ENCRYPTED" in pem.split(b"\n", 1)[0]
    mode = private_key.stat().st_mode & 0o777
    rows = [
        ("private key", str(private_key)),
        ("mode", f"{mode:04o}" + ("" if mode & 0o077 == 0 else " (readable by others!)")),
        ("encrypted", "yes" if encrypted else "NO (a development key)"),
    ]
    if encrypted and secret is None:
        return [*rows, ("key", "not opened: no passphrase source configured")], None
    try:
        key = serialization.load_pem_private_key(pem, password=secret if encrypted else None)
    except (ValueError, TypeError):
        return [*rows, ("key", "cannot be opened with the configured passphrase")], None
    return [*rows, ("key", _kind(key))], key.public_key()


def certificate_facts(certificate: Path, private_key_pub=None) -> list[tuple[str, str]]:
    """Subject, issuer, validity, serial and fingerprint of every certificate in a file."""
    try:
        certs = load_certificates(certificate)
    except FileNotFoundError:
        return [("certificate", f"{certificate}: not there")]
    except ValueError as exc:
        return [("certificate", f"{certificate}: not a certificate ({exc})")]
    rows: list[tuple[str, str]] = [("certificate", str(certificate))]
    now = datetime.now(UTC)
    for cert in certs:
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        state = "valid now" if start <= now <= end else "NOT valid now"
        public = cert.public_key()
        rows += [
            ("subject", cert.subject.rfc4514_string()),
            ("issuer", cert.issuer.rfc4514_string()),
            ("valid", f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} UTC ({state})"),
            ("serial", f"{cert.serial_number:X}"),
            ("public key", _kind(public)),
            ("SHA-256", fingerprint(cert)),
        ]
        if private_key_pub is not None:
            same = public.public_numbers() == private_key_pub.public_numbers()
            rows.append(("matches our key", "yes" if same else "NO"))
    return rows


def request_facts(csr_path: Path) -> list[tuple[str, str]]:
    try:
        csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    except FileNotFoundError:
        return []
    except ValueError as exc:
        return [("request", f"{csr_path}: not a PKCS#10 request ({exc})")]
    public = csr.public_key()
    return [
        ("request", str(csr_path)),
        ("subject", csr.subject.rfc4514_string()),
        ("public key", _kind(public)),
        ("signature", "valid" if csr.is_signature_valid else "INVALID"),
    ]
