"""Re-key an existing ledger's patient pseudonyms (issue #14, finding 11).

Ledgers made before the HMAC pseudonym hold `sha256("kravmottak:patient:" + fnr)`,
which one birth year's candidates reverse in seconds. The new key needs the
fødselsnummer, which the ledger never held; the archived originals do. So this walks
`archive/` (one folder per day), opens each message as the intake did (MIME, manifest,
CMS with our key, gzip), collects the patients' identity numbers, and replaces each
old key it finds in the ledger by the HMAC under `[keys] patient_secret`, in one
transaction. Keys no archived message explains are reported; `--drop-unmapped` clears
them (their bills then take no part in duplicate checks, which only look back over
COM-08's window). Run it with the daemon stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from daemon.config import Settings
from daemon.domain import Layer, legacy_pseudonym, pseudonym
from daemon.ledger.backends import open_ledger
from daemon.transport import ebms, keys, mime
from daemon.transport.unwrap import payload_of
from daemon.transport.xmlsafe import parse_untrusted

NPR_IDENT = "{http://www.npr.no/xmlstds}Ident"


@dataclass(frozen=True)
class Rekeyed:
    rekeyed: int  # unkeyed pseudonyms replaced by the HMAC
    unmapped: int  # keys found in no archived message
    dropped: int  # unmapped ones cleared (--drop-unmapped)
    rows: int  # ledger rows changed


def idents_in(raw: bytes, settings: Settings, pair: keys.KeyPair | None) -> set[str]:
    """The patients' identity numbers in one archived message (empty when it cannot
    be opened: such a message was refused and paid nothing)."""
    multipart, problem = mime.parse(raw)
    if problem:
        return set()
    envelope = parse_untrusted(multipart.start.data, Layer.ENVELOPE)
    if envelope.problem:
        return set()
    header, _problems = ebms.read_header(envelope.root)
    if header is None:
        return set()
    limit = settings.intake.max_payload_bytes
    payload, problem = payload_of(multipart, header.manifest, limit, keys=pair)
    if problem:
        return set()
    parsed = parse_untrusted(payload, Layer.MSGHEAD)
    if parsed.problem:
        return set()
    return {el.get("id") for el in parsed.root.iter(NPR_IDENT) if el.get("id")}


def rekey(settings: Settings, *, drop_unmapped: bool = False) -> Rekeyed:
    paths = settings.paths
    secret = keys.patient_secret(paths.patient_secret)
    pair = keys.load_pair(
        paths.private_key, paths.certificate, keys.passphrase(settings.key_passphrase)
    )
    ledger = open_ledger(settings)
    try:
        held = ledger.patient_keys()
        mapping: dict[str, str] = {}
        current: set[str] = set()  # HMAC keys of archived messages: already re-keyed
        for path in sorted(Path(paths.archive).rglob("*")):  # archive/<day>/<file>
            if path.name.startswith(".") or not path.is_file():
                continue
            for ident in idents_in(path.read_bytes(), settings, pair):
                old, new = legacy_pseudonym(ident), pseudonym(secret, ident)
                current.add(new)
                if old in held:
                    mapping[old] = new
        # keys no archived message explains, old or new (their originals are gone)
        unexplained = frozenset(held - set(mapping) - current)
        drop = unexplained if drop_unmapped else frozenset()
        rows = ledger.rekey_patients(mapping, drop=drop)
    finally:
        ledger.close()
    return Rekeyed(len(mapping), len(unexplained), len(drop), rows)
