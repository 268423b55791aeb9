"""Partner agreements and the institution registry: data files, not code.

Both live in TOML files next to the config (`partners.toml`, `institutions.toml`).
The CLI's `partner add` / `institution add` rewrite them atomically; the daemon reads
them at start (and on reload).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated

import tomli_w
from cryptography import x509
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from daemon import files
from daemon.config import ConfigError
from daemon.registers.rhf import valid_account
from daemon.transport.keys import load_certificates
from daemon.validation import StrictBool, field_path, messages

DEFAULT_ACTIONS: tuple[tuple[str, str], ...] = (("BehandlerKrav", "OppgjorsMelding"),)
# who owns an institution (decides the payee and the rate sector; LAB-04, LAB-10)
OWNERSHIPS = {
    "rhf": "state: a health trust (HF) owned by an RHF",
    "driftsavtale": "private, with a driftsavtale with an RHF (privat rates)",
    "state": "state-owned outside the RHFs (paid directly)",
}
# what an institution or one of its units is approved to claim (COM-09, LAB-04/05)
SERVICES = {
    "lab": "laboratory analyses (NLK) outside medical genetics",
    "genetics": "medical genetics (MG codes, and pharmacogenetic KF codes)",
    "radiology": "radiology (NCRP, eligible NCSP/NCMP)",
}
# the registry's old `kinds`, read from institutions.toml files written before
# ownership and services were apart (see `migrate_kinds`)
OLD_KINDS = ("hf", "private-driftsavtale", "genetics-lab", "radiology")


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
class Unit:
    """An `Enhet` of an institution registered with its own services (LAB-04: the
    genetics department of an HF is one unit). Matched on the message's reshID."""

    resh: str
    services: tuple[str, ...]
    name: str = ""


@dataclass(frozen=True, slots=True)
class Institution:
    """A claiming institution. `ownership` (OWNERSHIPS) decides the payee and the rate
    sector; `services` (SERVICES) what it may claim, per unit where `units` register
    one and for the whole institution otherwise. `senders`: HER-ids of partners allowed
    to claim for it besides the partner whose orgnr is the institution's own."""

    orgnr: str
    name: str
    rhf: str
    ownership: str = "rhf"
    services: tuple[str, ...] = ("lab", "radiology")
    units: tuple[Unit, ...] = ()
    senders: tuple[str, ...] = ()
    account: str | None = None  # kontonummer for payments made to it directly

    def may_be_claimed_by(self, partner: Partner | None) -> bool:
        if partner is None:
            return True  # no agreement context (validate, tests of the rules alone)
        return partner.orgnr == self.orgnr or partner.her_id in self.senders

    @property
    def sector(self) -> str:
        """The rate sector: private institutions with a driftsavtale have their own."""
        return "privat" if self.ownership == "driftsavtale" else "stat"

    def unit(self, resh: str | None) -> Unit | None:
        return next((u for u in self.units if resh and u.resh == resh), None)

    def services_of(self, resh: str | None) -> tuple[str, ...]:
        """What the unit with this reshID may claim: its own services when it is
        registered, the institution's otherwise."""
        found = self.unit(resh)
        return found.services if found is not None else self.services


def migrate_kinds(kinds: Iterable[str], rhf: str) -> tuple[str, tuple[str, ...]]:
    """(ownership, services) for an entry written with the old `kinds`:
    hf → owned by its RHF (or by the state when it names none), lab + radiology;
    private-driftsavtale → driftsavtale, lab; genetics-lab → + genetics (alone: only
    genetics); radiology → + radiology. An HF that was also `genetics-lab` keeps
    lab, genetics and radiology for the whole HF: register its genetics department as a
    unit (`institution unit`) to have LAB-04/05 tell them apart."""
    kinds = set(kinds)
    bad = sorted(kinds - set(OLD_KINDS))
    if bad:
        raise ValueError(f"unknown kind(s) {bad}; known: {list(OLD_KINDS)}")
    ownership = "rhf" if rhf else "state"
    if "private-driftsavtale" in kinds:
        ownership = "driftsavtale"
    services: list[str] = []
    if kinds & {"hf", "private-driftsavtale"}:
        services.append("lab")
    if "genetics-lab" in kinds:
        services.append("genetics")
    if kinds & {"hf", "radiology"}:
        services.append("radiology")
    return ownership, tuple(services)


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


def _cert_problem(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"certificate {exc.filename}: {exc.strerror or type(exc).__name__}"
    return f"certificate: {exc}"


def action_pair(value: object) -> tuple[str, str]:
    if isinstance(value, str) and "/" in value:
        service, action = value.split("/", 1)
        return service, action
    raise ValueError(f"action {value!r} must be 'Service/Action'")


def _services(values: object, where: str) -> tuple[str, ...]:
    if not isinstance(values, list | tuple) or not values:
        raise ValueError(f"{where}: services must be a non-empty list of {list(SERVICES)}")
    bad = [v for v in values if v not in SERVICES]
    if bad:
        raise ValueError(f"{where}: unknown service(s) {bad}; known: {list(SERVICES)}")
    return tuple(dict.fromkeys(str(v) for v in values))


def institution_from(row: dict) -> Institution:
    """One `[[institution]]` table, new form or old (`kinds`, migrated)."""
    row = dict(row)
    unknown = set(row) - {f.name for f in fields(Institution)} - {"kinds"}
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)}")
    row["orgnr"] = str(row["orgnr"])
    row["rhf"] = str(row.get("rhf", ""))
    if "kinds" in row:
        if "ownership" in row or "services" in row:
            raise ValueError("kinds is the old form of ownership and services: give one")
        row["ownership"], row["services"] = migrate_kinds(row.pop("kinds"), row["rhf"])
    ownership = row.setdefault("ownership", "rhf")
    if ownership not in OWNERSHIPS:
        raise ValueError(f"ownership {ownership!r}; known: {list(OWNERSHIPS)}")
    if ownership in ("rhf", "driftsavtale") and not row["rhf"]:
        raise ValueError(f"ownership {ownership!r} needs the rhf it belongs to")
    row["services"] = _services(row.get("services", ["lab", "radiology"]), "institution")
    units = []
    for unit in row.get("units", ()):
        unit = dict(unit)
        resh = str(unit.get("resh", "")).strip()
        if not resh:
            raise ValueError("a unit needs its resh (the reshID in the message's Enhet)")
        units.append(
            Unit(resh, _services(unit.get("services"), f"unit {resh}"), unit.get("name", ""))
        )
    if len({u.resh for u in units}) != len(units):
        raise ValueError("a unit is registered twice")
    row["units"] = tuple(units)
    row["senders"] = tuple(str(h) for h in row.get("senders", ()))
    if row.get("account") is not None and not valid_account(str(row["account"])):
        raise ValueError(f"account {row['account']!r} is not an 11-digit account number")
    return Institution(**row)


class _PartnerEntry(BaseModel):
    """One [[partner]] as written in partners.toml (HER-id and orgnr may be numbers)."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    her_id: str
    cpa_id: str
    orgnr: str | None = None
    name: str | None = None
    certificates: tuple[str, ...] = ()
    require_signature: StrictBool = True
    encrypts_to_us: StrictBool = False
    encrypt: StrictBool = False
    compress: StrictBool = False
    actions: tuple[Annotated[tuple[str, str], BeforeValidator(action_pair)], ...] = DEFAULT_ACTIONS


class _PartnersFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    partner: tuple[_PartnerEntry, ...] = ()


def load_partners(path: Path) -> tuple[Partner, ...]:
    """The agreements in `path`; an error names the file, the entry and the field."""
    raw = _read_toml(path)
    try:
        entries = _PartnersFile.model_validate(raw).partner
    except ValidationError as exc:
        rows = raw.get("partner") if isinstance(raw.get("partner"), list) else []

        def where(loc: tuple[str | int, ...]) -> str:
            if len(loc) < 2 or not isinstance(loc[1], int):
                return field_path(loc)
            row = rows[loc[1]] if loc[1] < len(rows) else {}
            her = f" (HER {row['her_id']})" if isinstance(row, dict) and "her_id" in row else ""
            return f"partner #{loc[1] + 1}{her} {field_path(loc[2:])}".rstrip()

        raise ConfigError(f"{path}: " + "; ".join(messages(exc, where))) from exc
    return tuple(_partner(path, i, e) for i, e in enumerate(entries, start=1))


def _partner(path: Path, i: int, entry: _PartnerEntry) -> Partner:
    """The domain part: certificates are read (relative to the file), and an agreement
    that encrypts to the partner must have its certificate."""
    where = f"{path}: partner #{i} (HER {entry.her_id})"
    paths = [Path(c) if Path(c).is_absolute() else path.parent / c for c in entry.certificates]
    certs: tuple[x509.Certificate, ...] = ()
    broken = None
    try:
        certs = tuple(cert for c in paths for cert in load_certificates(c))
    except (OSError, ValueError) as exc:  # this partner only: the others run on
        broken = _cert_problem(exc)
    if entry.encrypt and not certs and broken is None:
        raise ConfigError(f"{where} encrypt: encrypt = true needs the partner's certificate")
    values = entry.model_dump(exclude={"certificates"})
    return Partner(**values, certificates=tuple(str(c) for c in paths), certs=certs, broken=broken)


def load_institutions(path: Path) -> tuple[Institution, ...]:
    out = []
    for i, row in enumerate(_read_toml(path).get("institution", []), start=1):
        try:
            out.append(institution_from(row))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: institution #{i}: {exc}") from exc
    orgnrs = [i.orgnr for i in out]
    twice = sorted({o for o in orgnrs if orgnrs.count(o) > 1})
    if twice:
        raise ConfigError(f"{path}: institution(s) registered twice: {twice}")
    return tuple(out)


def needs_migration(path: Path) -> bool:
    """Does the file still use the old `kinds` (rewritten in the new form by `save`)?"""
    return any("kinds" in row for row in _read_toml(path).get("institution", []))


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
    row["services"] = list(inst.services)
    row["senders"] = list(inst.senders)
    row["units"] = [
        {"resh": u.resh, **({"name": u.name} if u.name else {}), "services": list(u.services)}
        for u in inst.units
    ]
    if not row["units"]:
        del row["units"]
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


def remove_institution(path: Path, orgnr: str) -> bool:
    """Remove one institution; False when it is not registered (nothing written)."""
    found = load_institutions(path)
    kept = [i for i in found if i.orgnr != orgnr]
    if len(kept) == len(found):
        return False
    save_institutions(path, kept)
    return True


def rhf_named(names: Iterable[str], given: str) -> str | None:
    """The RHF table's name for `given`: the name itself or its short form without
    "RHF" ("Helse Sør-Øst" → "Helse Sør-Øst RHF"), case and spacing ignored."""

    def norm(text: str) -> str:
        text = " ".join(text.split()).casefold()
        return text[: -len(" rhf")] if text.endswith(" rhf") else text

    wanted = norm(given)
    return next((n for n in names if norm(n) == wanted), None)


def valid_name(name: str) -> bool:
    """An institution's name: printable, not blank, at most 200 characters."""
    return bool(name.strip()) and len(name) <= 200 and name.isprintable()


def _atomic_write_toml(path: Path, data: dict) -> None:
    """Write, fsync, rename. The new file keeps the old one's mode (the temporary is
    made 0600, which the daemon's own user could not read after `partner add` as
    root); a new file is 0640."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o640
    files.remove_stale_temps(path.parent)  # a killed earlier write's
    tmp = files.temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
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
