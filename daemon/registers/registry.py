"""Partner agreements and the institution registry: data files, not code.

Both live in TOML files next to the config (`partners.toml`, `institutions.toml`).
The CLI's `partner add` / `institution add` rewrite them atomically; the daemon reads
them at start (and on reload).
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import tomli_w
from cryptography import x509

from daemon.config import ConfigError
from daemon.registers.rhf import valid_account
from daemon.transport.keys import load_certificates

DEFAULT_ACTIONS: tuple[tuple[str, str], ...] = (("BehandlerKrav", "OppgjorsMelding"),)
INSTITUTION_KINDS = ("hf", "private-driftsavtale", "genetics-lab", "radiology")


@dataclass(frozen=True, slots=True)
class Partner:
    """A CPA-lite agreement with one sending party.

    `certificates` are paths to its signing certificates (PEM; two during a rollover);
    `certs` holds them loaded. `require_signature`: unsigned messages are refused.
    `encrypts_to_us`: a plain payload from this partner is refused. `encrypt`: our
    answers are encrypted to its (newest) certificate. `compress`: our answers'
    payloads are gzipped.
    """

    her_id: str
    cpa_id: str
    orgnr: str | None = None
    name: str | None = None
    certificates: tuple[str, ...] = ()
    require_signature: bool = True
    encrypts_to_us: bool = False
    encrypt: bool = False
    compress: bool = False
    actions: tuple[tuple[str, str], ...] = DEFAULT_ACTIONS
    certs: tuple[x509.Certificate, ...] = field(default=(), compare=False, repr=False)
    # why its certificates could not be loaded (a file deleted, unreadable, not a
    # certificate): the daemon serves the other partners and refuses this one's
    # messages retryably until the agreement is repaired (`partner add`/`remove`)
    broken: str | None = field(default=None, compare=False)

    def allows(self, service: str, action: str) -> bool:
        return (service, action) in self.actions

    @property
    def encryption_cert(self) -> x509.Certificate | None:
        """The certificate our answers are encrypted to during a rollover: the one valid
        longest; on a tie the one listed last (the operator adds the new one last)."""
        ranked = sorted(enumerate(self.certs), key=lambda ic: (ic[1].not_valid_after_utc, ic[0]))
        return ranked[-1][1] if ranked else None


@dataclass(frozen=True, slots=True)
class Institution:
    """A claiming institution. `senders`: HER-ids of partners allowed to claim for it
    besides the partner whose orgnr is the institution's own."""

    orgnr: str
    name: str
    rhf: str
    kinds: tuple[str, ...] = field(default=("hf",))
    senders: tuple[str, ...] = ()
    account: str | None = None  # kontonummer for payments made to it directly

    def may_be_claimed_by(self, partner: Partner | None) -> bool:
        if partner is None:
            return True  # no agreement context (validate, tests of the rules alone)
        return partner.orgnr == self.orgnr or partner.her_id in self.senders


@dataclass(frozen=True, slots=True)
class Registry:
    partners: tuple[Partner, ...] = ()
    institutions: tuple[Institution, ...] = ()

    def partner(self, her_id: str, cpa_id: str) -> Partner | None:
        for p in self.partners:
            if p.her_id == her_id and p.cpa_id == cpa_id:
                return p
        return None

    def institution(self, orgnr: str) -> Institution | None:
        for inst in self.institutions:
            if inst.orgnr == orgnr:
                return inst
        return None


def _read_toml(path: Path) -> dict:
    if not path.exists():  # the repair commands start from nothing; the daemon does not
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def load_partners(path: Path) -> tuple[Partner, ...]:
    out = []
    for i, row in enumerate(_read_toml(path).get("partner", []), start=1):
        try:
            row = dict(row)
            row["her_id"] = str(row["her_id"])
            if "orgnr" in row:
                row["orgnr"] = str(row["orgnr"])
            if "actions" in row:
                row["actions"] = tuple(action_pair(a) for a in row["actions"])
            paths = [Path(c) for c in row.pop("certificates", [])]
            paths = [c if c.is_absolute() else path.parent / c for c in paths]
            row["certificates"] = tuple(str(c) for c in paths)
            try:
                row["certs"] = tuple(cert for c in paths for cert in load_certificates(c))
            except (OSError, ValueError) as exc:  # this partner only: the others run on
                row["broken"] = _cert_problem(exc)
            partner = Partner(**row)
            if partner.encrypt and not partner.certs and not partner.broken:
                raise ValueError("encrypt = true needs the partner's certificate")
            out.append(partner)
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise ConfigError(f"{path}: partner #{i}: {exc}") from exc
    return tuple(out)


def _cert_problem(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"certificate {exc.filename}: {exc.strerror or type(exc).__name__}"
    return f"certificate: {exc}"


def action_pair(value: object) -> tuple[str, str]:
    if isinstance(value, str) and "/" in value:
        service, action = value.split("/", 1)
        return service, action
    raise ValueError(f"action {value!r} must be 'Service/Action'")


def load_institutions(path: Path) -> tuple[Institution, ...]:
    out = []
    for i, row in enumerate(_read_toml(path).get("institution", []), start=1):
        try:
            row = dict(row)
            row["orgnr"] = str(row["orgnr"])
            row["kinds"] = tuple(row.get("kinds", ("hf",)))
            row["senders"] = tuple(str(h) for h in row.get("senders", ()))
            bad = [k for k in row["kinds"] if k not in INSTITUTION_KINDS]
            if bad:
                raise ValueError(f"unknown kind(s) {bad}; known: {list(INSTITUTION_KINDS)}")
            if row.get("account") is not None and not valid_account(str(row["account"])):
                raise ValueError(f"account {row['account']!r} is not an 11-digit account number")
            out.append(Institution(**row))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: institution #{i}: {exc}") from exc
    return tuple(out)


def load(partners: Path, institutions: Path) -> Registry:
    """The registries the daemon runs on. A missing file is refused: without it every
    claim would be answered E10 (no agreement) or paid nowhere. An empty registry is
    an empty file (`init` writes both)."""
    for what, path in (("partners", partners), ("institutions", institutions)):
        if not path.is_file():
            raise ConfigError(
                f"{what} file not found: {path} (an empty registry must be explicit:"
                f" create the file, e.g. `touch {path}`, or set [paths] {what})"
            )
    return Registry(load_partners(partners), load_institutions(institutions))


def _partner_row(p: Partner) -> dict:
    values = {f.name: getattr(p, f.name) for f in fields(p) if f.name not in ("certs", "broken")}
    row = {k: v for k, v in values.items() if v is not None}
    row["certificates"] = list(p.certificates)
    row["actions"] = [f"{s}/{a}" for s, a in p.actions]
    return row


def _institution_row(inst: Institution) -> dict:
    row = {k: v for k, v in asdict(inst).items() if v is not None}
    row["kinds"] = list(inst.kinds)
    row["senders"] = list(inst.senders)
    return row


def save_partners(path: Path, partners: Iterable[Partner]) -> None:
    _atomic_write_toml(path, {"partner": [_partner_row(p) for p in partners]})


def save_institutions(path: Path, institutions: Iterable[Institution]) -> None:
    _atomic_write_toml(path, {"institution": [_institution_row(i) for i in institutions]})


def upsert_partner(path: Path, partner: Partner) -> None:
    kept = [
        p for p in load_partners(path) if (p.her_id, p.cpa_id) != (partner.her_id, partner.cpa_id)
    ]
    save_partners(path, [*kept, partner])


def remove_partner(path: Path, her_id: str, cpa_id: str | None = None) -> list[Partner]:
    """Remove the agreement(s) of `her_id` (only the one under `cpa_id` when given);
    returns what was removed (nothing: the file is left as it was)."""
    partners = load_partners(path)
    gone = [p for p in partners if p.her_id == her_id and cpa_id in (None, p.cpa_id)]
    if gone:
        save_partners(path, [p for p in partners if p not in gone])
    return gone


def upsert_institution(path: Path, institution: Institution) -> None:
    kept = [i for i in load_institutions(path) if i.orgnr != institution.orgnr]
    save_institutions(path, [*kept, institution])


def _atomic_write_toml(path: Path, data: dict) -> None:
    """Write, fsync, rename. The new file keeps the old one's mode (mkstemp makes 0600,
    which the daemon's own user could not read after `partner add` as root); a new
    file is 0640."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o640
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            tomli_w.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
