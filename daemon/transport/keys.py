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
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
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
        return Path(source["file"]).read_bytes().strip()
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
        return (Path(directory) / source["credential"]).read_bytes().strip()
    raise KeyLoadError(f"unknown passphrase source {sorted(source)}; use file, env or credential")


def load_pair(private_key: Path, certificate: Path, secret: bytes | None):
    """Our KeyPair; the error names the file, never the passphrase."""
    from daemon.transport.trust import KeyPair

    try:
        key = serialization.load_pem_private_key(private_key.read_bytes(), password=secret)
    except FileNotFoundError as exc:
        raise KeyLoadError(f"private key not found: {private_key}") from exc
    except (ValueError, TypeError) as exc:
        raise KeyLoadError(f"{private_key}: cannot load the key (wrong passphrase?)") from exc
    try:
        cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    except FileNotFoundError as exc:
        raise KeyLoadError(f"certificate not found: {certificate}") from exc
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
