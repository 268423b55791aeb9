"""The egenandel register: what rules EG-01..12 read (RULES.md, "Egenandel").

Data, not code: `config/tariffs/egenandel.toml` (its comments name the sources) holds the
amount per service kind per period (with validity dates; the 2024 figures are the latest
known and stay in force until a newer row is imported), the exemption codes (kodeverk
7461), the age limits, the egenandel takster and their service kind, the unit table
(reshID/enhetKode → PHV, TSB, LAR, PUT; every other unit is somatic), the personnel who
may trigger an egenandel (polUtforende, 8401) and the codes the rules compare with.

`parse` validates everything and names the file, the entry and the field of the first
problem (`TariffError`). Nothing here reads files at import time; an `EgenandelRegister`
is an immutable value the rules get through `Tariffs.egenandel`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from itertools import pairwise
from pathlib import Path
from types import MappingProxyType

from daemon.registers.tariff_table import TariffError

FILE = "egenandel.toml"
UNIT_KINDS = ("PHV", "TSB", "LAR", "PUT")
SERVICE_KINDS = ("konsultasjon", "radiologi")
RULE_LISTS = (
    "guidance_procedures",
    "indirect_contact_types",
    "programme_contact_types",
    "programme_codes",
    "lar_dispensing_conditions",
    "pasientbetaling_debitors",
)


@dataclass(frozen=True, slots=True)
class EgenandelAmount:
    """The egenandel of one service kind in one period (both ends inclusive)."""

    kind: str
    kroner: Decimal
    valid_from: date
    valid_to: date | None
    status: str

    def valid_on(self, day: date) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day <= self.valid_to)


def _codes(values: tuple[str, ...]) -> frozenset[str]:
    """Codes as the rules compare them: dots dropped, upper case (Z50.30 -> Z5030)."""
    return frozenset(v.replace(".", "").upper() for v in values)


@dataclass(frozen=True)
class EgenandelRegister:
    version: str = "(no egenandel register)"
    amounts: tuple[EgenandelAmount, ...] = ()
    exemptions: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    takster: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    units: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    personnel: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    rules: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    child_age_limit: int = 16
    phv_tsb_age_limit: int = 26
    lar_put_age_limit: int = 30
    source: str = ""

    def amount(self, kind: str, day: date) -> EgenandelAmount | None:
        """The amount for a service kind on a day: the row whose period holds the day."""
        for row in self.amounts:
            if row.kind == kind and row.valid_on(day):
                return row
        return None

    def unit_kind(self, resh_id: str, enhet_kode: str) -> str:
        """PHV, TSB, LAR, PUT or 'somatikk' for a unit (reshID first, then enhetKode)."""
        return self.units.get(resh_id) or self.units.get(enhet_kode) or "somatikk"

    def codes(self, name: str) -> frozenset[str]:
        return _codes(self.rules.get(name, ()))


def load(path: Path) -> EgenandelRegister:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TariffError(str(path), None, None, f"cannot read: {exc}") from exc
    return parse(text, str(path))


def parse(text: str, source: str = FILE) -> EgenandelRegister:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TariffError(source, None, None, f"not TOML: {exc}") from exc

    def fail(where: str, problem: str) -> TariffError:
        return TariffError(source, None, where, problem)

    known = {
        "version",
        "child_age_limit",
        "phv_tsb_age_limit",
        "lar_put_age_limit",
        "exemptions",
        "takster",
        "units",
        "personnel",
        "rules",
        "amount",
    }
    for key in data:
        if key not in known:
            raise fail(key, "unknown key")
    version = data.get("version")
    if not isinstance(version, str) or not version.strip():
        raise fail("version", "must be a non-empty string")
    limits = {}
    for key, default in (
        ("child_age_limit", 16),
        ("phv_tsb_age_limit", 26),
        ("lar_put_age_limit", 30),
    ):
        value = data.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 130:
            raise fail(key, "must be a whole number of years between 1 and 129")
        limits[key] = value

    def table(name: str, check=None) -> Mapping[str, str]:
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise fail(name, "must be a table")
        for k, v in value.items():
            if not isinstance(v, str) or not v.strip():
                raise fail(f"{name}.{k}", "must be a non-empty string")
            if check is not None:
                check(f"{name}.{k}", k, v)
        return MappingProxyType(dict(value))

    def exemption(where: str, key: str, _: str) -> None:
        if len(key) != 1 or not key.isalpha() or not key.isupper():
            raise fail(where, "an exemption code (7461) is one capital letter")

    def service_kind(where: str, _: str, value: str) -> None:
        if value not in SERVICE_KINDS:
            raise fail(where, f"service kind must be one of {', '.join(SERVICE_KINDS)}")

    def unit_kind(where: str, _: str, value: str) -> None:
        if value not in UNIT_KINDS:
            raise fail(where, f"unit kind must be one of {', '.join(UNIT_KINDS)}")

    exemptions = table("exemptions", exemption)
    takster = table("takster", service_kind)
    units = table("units", unit_kind)
    personnel = table("personnel")
    rules_in = data.get("rules", {})
    if not isinstance(rules_in, dict):
        raise fail("rules", "must be a table")
    for key, value in rules_in.items():
        if key not in RULE_LISTS:
            raise fail(f"rules.{key}", "unknown key")
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise fail(f"rules.{key}", "must be a list of non-empty strings")
    rules = MappingProxyType({k: tuple(v) for k, v in rules_in.items()})
    amounts = _amounts(data.get("amount", []), fail)
    return EgenandelRegister(
        version=version,
        amounts=amounts,
        exemptions=exemptions,
        takster=takster,
        units=units,
        personnel=personnel,
        rules=rules,
        source=source,
        **limits,
    )


def _date(value: object) -> date | None:
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    return None


def _amounts(rows: object, fail) -> tuple[EgenandelAmount, ...]:
    if not isinstance(rows, list):
        raise fail("amount", "must be an array of tables ([[amount]])")
    out: list[EgenandelAmount] = []
    for n, row in enumerate(rows, start=1):
        where = f"amount[{n}]"
        if not isinstance(row, dict):
            raise fail(where, "must be a table")
        extra = set(row) - {"kind", "kroner", "valid_from", "valid_to", "status"}
        if extra:
            raise fail(f"{where}.{sorted(extra)[0]}", "unknown key")
        kind = row.get("kind")
        if kind not in SERVICE_KINDS:
            raise fail(f"{where}.kind", f"must be one of {', '.join(SERVICE_KINDS)}")
        try:
            kroner = Decimal(str(row.get("kroner")))
        except InvalidOperation:
            raise fail(f"{where}.kroner", 'must be an amount in kroner, e.g. "403.00"') from None
        if not kroner.is_finite() or kroner < 0 or kroner != kroner.quantize(Decimal("0.01")):
            raise fail(f"{where}.kroner", "must be an amount in kroner with at most two decimals")
        start = _date(row.get("valid_from"))
        if start is None:
            raise fail(f"{where}.valid_from", "must be a date (YYYY-MM-DD)")
        end = _date(row.get("valid_to"))
        if "valid_to" in row and (end is None or end < start):
            raise fail(f"{where}.valid_to", "must be a date (YYYY-MM-DD) on or after valid_from")
        status = row.get("status", "")
        if not isinstance(status, str):
            raise fail(f"{where}.status", "must be a string")
        out.append(EgenandelAmount(kind, kroner, start, end, status))
    for kind in SERVICE_KINDS:
        mine = sorted((a for a in out if a.kind == kind), key=lambda a: a.valid_from)
        for before, after in pairwise(mine):
            if before.valid_to is None or before.valid_to >= after.valid_from:
                raise fail(
                    "amount",
                    f"{kind}: the period from {before.valid_from} overlaps the one from "
                    f"{after.valid_from}",
                )
    return tuple(sorted(out, key=lambda a: (a.kind, a.valid_from)))


@dataclass(frozen=True)
class ImportReport:
    """What `tariff import --kind egenandel` did (the same report shape as the others)."""

    source: str
    register: EgenandelRegister
    target: str = ""
    written: tuple[str, ...] = ()
    previous: EgenandelRegister | None = None

    def summary(self) -> str:
        reg = self.register
        lines = [f"Egenandel register from {self.source}: version {reg.version}"]
        lines.append(
            f"  {len(reg.amounts)} amounts, {len(reg.exemptions)} exemption codes,"
            f" {len(reg.takster)} takster, {len(reg.units)} units, {len(reg.personnel)} personnel"
        )

        def key(a: EgenandelAmount) -> tuple:
            return (a.kind, a.valid_from, a.kroner, a.valid_to)

        old = {key(a) for a in self.previous.amounts} if self.previous is not None else set()
        new = {key(a) for a in reg.amounts}
        for kind, start, kroner, _ in sorted(new - old):
            lines.append(f"  new amount: {kind} {kroner} kr from {start}")
        for kind, start, kroner, _ in sorted(old - new):
            lines.append(f"  removed amount: {kind} {kroner} kr from {start}")
        if self.written:
            lines.append(f"Written to {self.target}: {', '.join(self.written)}")
        return "\n".join(lines)


def import_register(source: Path, staging: Path, current: Path) -> ImportReport:
    """Validate `source` whole (a bad file refuses the import, nothing written) and put
    it in `staging` under its register name; the caller puts it in force."""
    text = source.read_text(encoding="utf-8") if source.is_file() else None
    if text is None:
        raise TariffError(str(source), None, None, "no such file")
    register = parse(text, str(source))
    (staging / FILE).write_text(text, encoding="utf-8")
    before = current / FILE
    previous = load(before) if before.is_file() else None
    return ImportReport(str(source), register, previous=previous)


def guard_side(reg: EgenandelRegister) -> tuple[list[tuple[str, str]], list[tuple[str, str, date]]]:
    """The codes and rates the import guard compares (a large removal needs --force)."""
    codes = [(k, v) for k, v in reg.takster.items()] + [(k, "fritak") for k in reg.exemptions]
    rates = [(a.kind, "egenandel", a.valid_from) for a in reg.amounts]
    return codes, rates


def render_summary(reg: EgenandelRegister) -> str:
    """What `kravmottak tariff show egenandel` prints."""
    lines = [f"egenandel register {reg.version} ({reg.source})"]
    for a in reg.amounts:
        end = a.valid_to.isoformat() if a.valid_to else "…"
        note = f"  [{a.status}]" if a.status else ""
        lines.append(f"  {a.kind:<13} {a.kroner:>8} kr  {a.valid_from}–{end}{note}")
    lines.append(f"  exemption codes (7461): {', '.join(sorted(reg.exemptions))}")
    lines.append(
        f"  age limits: child {reg.child_age_limit}, PHV/TSB {reg.phv_tsb_age_limit}, "
        f"LAR/PUT {reg.lar_put_age_limit}"
    )
    takster = ", ".join(f"{k}={v}" for k, v in sorted(reg.takster.items()))
    lines.append(f"  egenandel takster: {takster or '-'}")
    units = ", ".join(f"{k}={v}" for k, v in sorted(reg.units.items()))
    lines.append(f"  units: {units or '- (all somatic)'}")
    lines.append(f"  personnel (8401): {', '.join(sorted(reg.personnel))}")
    return "\n".join(lines)
