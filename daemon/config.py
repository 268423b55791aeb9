"""Settings: parsed once, at the edge, into a frozen object.

The config file is TOML. Relative paths are resolved against the folder the config
file lives in, so a sandbox made by `kravmottak init DIR` is self-contained and the
repository's `config/kravmottak.toml` points at `../var`.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from daemon.rule_settings import RuleSettings

DEFAULT_CONFIG = Path("config/kravmottak.toml")
CONFIG_ENV = "KRAVMOTTAK_CONFIG"


class ConfigError(Exception):
    """The configuration cannot be used; the message says what and where."""


@dataclass(frozen=True, slots=True)
class OwnParty:
    """Who we are on the health network (Helfo's claims office by default)."""

    her_id: str = "79768"
    orgnr: str = "889640782"
    name: str = "HELFO"
    role: str = "KontrollUtbetaler"


@dataclass(frozen=True, slots=True)
class Paths:
    inbox: Path
    outbox: Path
    work: Path
    archive: Path
    quarantine: Path
    ledger: Path
    partners: Path
    institutions: Path
    tariffs: Path
    private_key: Path
    certificate: Path

    def folders(self) -> tuple[Path, ...]:
        return (self.inbox, self.outbox, self.work, self.archive, self.quarantine)


@dataclass(frozen=True, slots=True)
class Intake:
    poll_interval_seconds: float = 1.0
    # a file whose size or mtime changed within this many seconds is still being written
    stable_seconds: float = 1.0
    max_file_bytes: int = 50 * 1024 * 1024
    # ceiling for a payload after gzip inflation (a gzip bomb is refused, not inflated)
    max_payload_bytes: int = 200 * 1024 * 1024
    # names a writer uses while a file is incomplete; never claimed
    temp_suffixes: tuple[str, ...] = (".tmp", ".part", ".partial", ".filepart")
    # a frozen "now" (ISO 8601) for rehearsals and tests: dates in rules, GenDate and
    # timestamps of answers all use it. Never set in production.
    fixed_time: str | None = None
    # group commit: the outcomes of up to this many messages go into one ledger
    # transaction (one fsync) and their answers share one round of fsyncs; a batch also
    # closes once it has been open this long, so no answer waits longer for the others
    commit_batch_messages: int = 32
    commit_batch_ms: float = 50.0
    # a message with at least this many bills logs `progress` every this many bills
    progress_every_bills: int = 10_000


@dataclass(frozen=True, slots=True)
class Settlement:
    """When the daily payment batch runs ([settlement])."""

    # cron fields "minute hour day month day_of_week" (apscheduler's CronTrigger)
    cron: str = "0 16 * * mon-fri"
    timezone: str = "Europe/Oslo"
    holidays_country: str = "NO"  # public holidays skipped (the `holidays` library)
    extra_holidays: tuple[str, ...] = ()  # more days off (ISO dates), e.g. 2026-12-24
    make_up_missed: bool = True  # at start, run the batch the daemon was down for


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """The `[metrics]` section: serve /metrics, /healthz and /readyz on host:port.
    `allow_remote`: bind a non-loopback address (behind a firewall you control)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9464
    allow_remote: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"[metrics] port {self.port} is not a TCP port (0-65535)")


@dataclass(frozen=True, slots=True)
class Settings:
    source: Path
    party: OwnParty
    paths: Paths
    intake: Intake
    generate_missing_keys: bool = False
    log_level: str = "info"
    # where the key passphrase comes from: {"file": path} | {"env": NAME} | {"credential": NAME}
    key_passphrase: dict[str, str] | None = None
    # a CA bundle partner certificates may chain to (besides the registered ones)
    ca_file: Path | None = None
    rules: RuleSettings = field(default_factory=RuleSettings)
    settlement: Settlement = field(default_factory=Settlement)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)


def config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """`--config` first, then `$KRAVMOTTAK_CONFIG`, then `config/kravmottak.toml`."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG


def load(path: Path) -> Settings:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return from_mapping(raw, path)


def from_mapping(raw: dict, path: Path) -> Settings:
    base = path.resolve().parent
    known = {
        "party", "paths", "intake", "keys", "logging", "trust", "rules", "settlement", "metrics",
    }  # fmt: skip
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}")
    try:
        party = OwnParty(**raw.get("party", {}))
        p = raw.get("paths", {})
        var = base / p.get("var", "var")
        keys = raw.get("keys", {})
        key_fields = {
            "private_key",
            "certificate",
            "generate_if_missing",
            "passphrase_file",
            "passphrase_env",
            "passphrase_credential",
        }
        if set(keys) - key_fields:
            raise TypeError(f"[keys] has unknown key(s) {sorted(set(keys) - key_fields)}")
        sources = {
            k.removeprefix("passphrase_"): str(v)
            for k, v in keys.items()
            if k.startswith("passphrase_")
        }
        if len(sources) > 1:
            raise TypeError(
                "[keys] give one passphrase source: passphrase_file, _env or _credential"
            )
        if "file" in sources:
            sources["file"] = str(base / sources["file"])
        trust = raw.get("trust", {})
        if set(trust) - {"ca_file"}:
            raise TypeError(f"[trust] has unknown key(s) {sorted(set(trust) - {'ca_file'})}")

        def at(key: str, default: Path, table: dict = p) -> Path:
            value = table.get(key)
            return (base / value) if value is not None else default

        paths = Paths(
            inbox=at("inbox", var / "inbox"),
            outbox=at("outbox", var / "outbox"),
            work=at("work", var / "work"),
            archive=at("archive", var / "archive"),
            quarantine=at("quarantine", var / "quarantine"),
            ledger=at("ledger", var / "ledger.sqlite3"),
            partners=at("partners", base / "partners.toml"),
            institutions=at("institutions", base / "institutions.toml"),
            tariffs=at("tariffs", var / "tariffs"),
            private_key=at("private_key", var / "keys" / "kravmottak.key.pem", keys),
            certificate=at("certificate", var / "keys" / "kravmottak.cert.pem", keys),
        )
        intake_raw = dict(raw.get("intake", {}))
        if "temp_suffixes" in intake_raw:
            intake_raw["temp_suffixes"] = tuple(intake_raw["temp_suffixes"])
        intake = Intake(**intake_raw)
        settlement_raw = dict(raw.get("settlement", {}))
        if "extra_holidays" in settlement_raw:
            settlement_raw["extra_holidays"] = tuple(settlement_raw["extra_holidays"])
        settlement = Settlement(**settlement_raw)
        metrics = MetricsSettings(**raw.get("metrics", {}))
    except TypeError as exc:  # unknown or missing keys in a table
        raise ConfigError(f"{path}: {exc}") from exc
    if intake.progress_every_bills < 1:
        raise ConfigError(f"{path}: [intake] progress_every_bills must be at least 1")
    if intake.commit_batch_messages < 1 or intake.commit_batch_ms < 0:
        raise ConfigError(f"{path}: [intake] commit_batch_messages >= 1, commit_batch_ms >= 0")
    if intake.poll_interval_seconds <= 0 or intake.max_file_bytes <= 0:
        raise ConfigError(f"{path}: intake intervals and limits must be positive")
    return Settings(
        source=path,
        party=party,
        paths=paths,
        intake=intake,
        generate_missing_keys=bool(keys.get("generate_if_missing", False)),
        log_level=str(raw.get("logging", {}).get("level", "info")),
        key_passphrase=sources or None,
        ca_file=(base / trust["ca_file"]) if trust.get("ca_file") else None,
        rules=_rule_settings(raw.get("rules", {}), path),
        settlement=settlement,
        metrics=metrics,
    )


def _rule_settings(raw: dict, path: Path) -> RuleSettings:
    try:
        values = dict(raw)
        if "hpv_conditions" in values:
            values["hpv_conditions"] = tuple(
                str(c).replace(".", "").upper() for c in values["hpv_conditions"]
            )
        return RuleSettings(**values)
    except TypeError as exc:
        raise ConfigError(f"{path}: [rules] {exc}") from exc


def sandbox_config_text(her_id: str = "79768") -> str:
    """The config `kravmottak init DIR` writes: everything inside DIR."""
    return f"""# kravmottak sandbox configuration (written by `kravmottak init`)
[party]
her_id = "{her_id}"
orgnr = "889640782"
name = "HELFO"

[paths]
var = "var"
partners = "partners.toml"
institutions = "institutions.toml"

[keys]
private_key = "var/keys/kravmottak.key.pem"
certificate = "var/keys/kravmottak.cert.pem"

[intake]
poll_interval_seconds = 1.0
stable_seconds = 1.0
max_file_bytes = 52428800
max_payload_bytes = 209715200

[metrics]
port = 0                      # a free port (several sandboxes side by side); the
                              # daemon's "started" log line says which

[logging]
level = "info"
"""
