"""Settings: parsed once, at the edge, into a frozen object.

The config file is TOML. Relative paths are resolved against the folder the config
file lives in, so a sandbox made by `kravmottak init DIR` is self-contained and the
repository's `config/kravmottak.toml` points at `../var`.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from daemon.rule_settings import RuleSettings
from daemon.validation import StrictBool, field_path, messages

DEFAULT_CONFIG = Path("config/kravmottak.toml")
CONFIG_ENV = "KRAVMOTTAK_CONFIG"

# every table of the file refuses a key it does not know (a misspelling is an error)
FORBID = ConfigDict(extra="forbid")
Positive = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]


class ConfigError(Exception):
    """The configuration cannot be used; the message says what and where."""


@dataclass(frozen=True, slots=True)
class OwnParty:
    """Who we are on the health network (Helfo's claims office by default)."""

    __pydantic_config__ = FORBID

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
    # our certificate signing request (`keys new --csr`), for the issuer
    csr: Path
    # the HMAC secret of the patient pseudonyms: outside the ledger, mode 0600
    patient_secret: Path | None = None

    def folders(self) -> tuple[Path, ...]:
        return (self.inbox, self.outbox, self.work, self.archive, self.quarantine)


PAYLOAD_PER_FILE = 4  # an inflated payload's ceiling, in multiples of max_file_bytes


@dataclass(frozen=True, slots=True)
class Intake:
    __pydantic_config__ = FORBID

    poll_interval_seconds: Positive = 1.0
    # a file whose size or mtime changed within this many seconds is still being written
    stable_seconds: Annotated[float, Field(ge=0)] = 1.0
    max_file_bytes: PositiveInt = 128 * 1024 * 1024
    # a payload over this is read as a stream and judged in chunks of stream_chunk_bills
    # bills, its state in a spill file in work/ (memory stays bounded: #17.4)
    stream_above_bytes: PositiveInt = 8 * 1024 * 1024
    stream_chunk_bills: PositiveInt = 1000
    # a signed payload is verified whole (the signature digest needs the whole MsgHead):
    # over this it is refused (T99) instead of parsed into one tree
    max_whole_bytes: PositiveInt = 50 * 1024 * 1024
    # ceiling for a payload after gzip inflation (a gzip bomb is refused, not inflated);
    # never more than PAYLOAD_PER_FILE times max_file_bytes, whatever is set here
    max_payload_bytes: PositiveInt = 200 * 1024 * 1024
    # markup in one XML document: elements, comments and PIs ('<'), attributes ('=');
    # over this it is refused before a tree is built (20 MB of <a/> took 1.7 GB)
    max_xml_nodes: PositiveInt = 1_000_000
    # a file whose handling started this many times without an outcome (the process
    # was killed: out of memory, a watchdog) is quarantined at its next start
    max_attempts: PositiveInt = 3
    # names a writer uses while a file is incomplete; never claimed
    temp_suffixes: tuple[str, ...] = (".tmp", ".part", ".partial", ".filepart")
    # a frozen "now" (ISO 8601) for rehearsals and tests: dates in rules, GenDate and
    # timestamps of answers all use it. Never set in production.
    fixed_time: str | None = None
    # group commit: the outcomes of up to this many messages go into one ledger
    # transaction (one fsync) and their answers share one round of fsyncs; a batch also
    # closes once it has been open this long, so no answer waits longer for the others
    commit_batch_messages: PositiveInt = 32
    commit_batch_ms: Annotated[float, Field(ge=0)] = 50.0
    # a message with at least this many bills logs `progress` every this many bills
    progress_every_bills: PositiveInt = 10_000

    @property
    def payload_ceiling(self) -> int:
        """Bytes a payload may inflate to: in proportion to the file size limit."""
        return min(self.max_payload_bytes, PAYLOAD_PER_FILE * self.max_file_bytes)


@dataclass(frozen=True, slots=True)
class Settlement:
    """When the daily payment batch runs ([settlement])."""

    __pydantic_config__ = FORBID

    # cron fields "minute hour day month day_of_week" (apscheduler's CronTrigger)
    cron: str = "0 16 * * mon-fri"
    timezone: str = "Europe/Oslo"
    holidays_country: str = "NO"  # public holidays skipped (the `holidays` library)
    extra_holidays: tuple[str, ...] = ()  # more days off (ISO dates), e.g. 2026-12-24
    make_up_missed: StrictBool = True  # at start, run the batch the daemon was down for


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """The `[metrics]` section: serve /metrics, /healthz and /readyz on host:port.
    `allow_remote`: bind a non-loopback address (behind a firewall you control)."""

    __pydantic_config__ = FORBID

    enabled: StrictBool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9464  # 0: a free port
    allow_remote: StrictBool = False


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """The `[worker]` section: this process's name among the workers of one inbox
    (`id`, default host:pid; `kravmottak run --worker-id`), how long its lease in the
    ledger lasts without a heartbeat, and how often it renews it."""

    __pydantic_config__ = FORBID

    id: str = ""
    lease_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    heartbeat_seconds: Annotated[float, Field(gt=0, le=600)] = 5.0

    def __post_init__(self) -> None:
        if self.heartbeat_seconds * 2 > self.lease_seconds:
            raise ValueError("heartbeat_seconds must be at most half of lease_seconds")


@dataclass(frozen=True, slots=True)
class TrustWindow:
    """The `[trust]` times (checked by `_TrustTable`). Certificates are checked at the
    time of receipt, give or take `clock_skew_seconds`; an ebXML Timestamp or MsgHead
    GenDate later than receipt plus that skew, or older than `max_message_age_days`
    before receipt, is refused."""

    clock_skew_seconds: float = 300.0
    max_message_age_days: float = 30.0


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
    trust: TrustWindow = field(default_factory=TrustWindow)
    rules: RuleSettings = field(default_factory=RuleSettings)
    settlement: Settlement = field(default_factory=Settlement)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    # [ledger] url: sqlite:///PATH (the default: `paths.ledger`) or postgresql://...
    ledger_url: str = ""

    @property
    def ledger(self) -> str:
        """The ledger's URL: the configured one, else the SQLite file of `paths.ledger`."""
        return self.ledger_url or f"sqlite:///{self.paths.ledger}"


# ---------------------------------------------------------------- the file, as written


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _PathsTable(_Table):
    """[paths]: relative to the config file's folder; unset ones follow `var`."""

    var: str = "var"
    inbox: str | None = None
    outbox: str | None = None
    work: str | None = None
    archive: str | None = None
    quarantine: str | None = None
    ledger: str | None = None
    partners: str = "partners.toml"
    institutions: str = "institutions.toml"
    tariffs: str | None = None


class _KeysTable(_Table):
    private_key: str | None = None
    certificate: str | None = None
    csr: str | None = None  # default: kravmottak.csr.pem beside the certificate
    generate_if_missing: StrictBool = False
    passphrase_file: str | None = None
    passphrase_env: str | None = None
    passphrase_credential: str | None = None
    patient_secret: str | None = None  # default: var/keys/patient.secret

    @model_validator(mode="after")
    def _one_source(self) -> _KeysTable:
        if len(self.sources()) > 1:
            raise ValueError("give one passphrase source: passphrase_file, _env or _credential")
        return self

    def sources(self) -> dict[str, str]:
        given = {
            "file": self.passphrase_file,
            "env": self.passphrase_env,
            "credential": self.passphrase_credential,
        }
        return {k: v for k, v in given.items() if v is not None}


class _TrustTable(_Table):
    ca_file: str | None = None
    clock_skew_seconds: Annotated[float, Field(ge=0, le=86400)] = 300.0
    max_message_age_days: Annotated[float, Field(gt=0, le=36500)] = 30.0


class _LedgerTable(_Table):
    """[ledger] url: `sqlite:///PATH` (a relative PATH is against the config file's
    folder) or `postgresql://user@host/dbname`, `postgresql:///dbname?host=/socket/dir`."""

    url: str | None = None

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(LEDGER_SCHEMES):
            raise ValueError("give sqlite:///PATH or postgresql://...")
        return url


LEDGER_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")


class _LoggingTable(_Table):
    level: Literal["debug", "info", "warning", "error", "critical"] = "info"


class _ConfigFile(_Table):
    """The whole file: these tables and no others."""

    party: OwnParty = OwnParty()
    paths: _PathsTable = _PathsTable()
    keys: _KeysTable = _KeysTable()
    trust: _TrustTable = _TrustTable()
    intake: Intake = Intake()
    rules: RuleSettings = RuleSettings()
    settlement: Settlement = Settlement()
    metrics: MetricsSettings = MetricsSettings()
    ledger: _LedgerTable = _LedgerTable()
    worker: WorkerSettings = WorkerSettings()
    logging: _LoggingTable = _LoggingTable()


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
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return from_mapping(raw, path)


def _where(loc: tuple[str | int, ...]) -> str:
    """('intake', 'poll_interval_seconds') -> '[intake] poll_interval_seconds'."""
    if not loc:
        return "(top level)"
    table, *rest = loc
    if not rest:
        return f"[{table}]"
    return f"[{table}] {field_path(rest)}"


# keys of earlier versions whose meaning changed: refused naming the key that replaced them
RENAMED = {("rules", "max_age_days"): "max_age_months (COM-08 counts calendar months)"}


def from_mapping(raw: dict, path: Path) -> Settings:
    """Validate the parsed file (types, known keys, ranges) and resolve its paths
    against the file's folder. Every error names the file, the table and the key."""
    for (table, key), new in RENAMED.items():
        if isinstance(raw.get(table), dict) and key in raw[table]:
            raise ConfigError(f"{path}: [{table}] {key} is replaced by {new}")
    try:
        cfg = _ConfigFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + "; ".join(messages(exc, _where))) from exc
    base = path.resolve().parent
    p, k = cfg.paths, cfg.keys
    var = base / p.var

    def at(value: str | None, default: Path) -> Path:
        return (base / value) if value is not None else default

    certificate = at(k.certificate, var / "keys" / "kravmottak.cert.pem")
    paths = Paths(
        inbox=at(p.inbox, var / "inbox"),
        outbox=at(p.outbox, var / "outbox"),
        work=at(p.work, var / "work"),
        archive=at(p.archive, var / "archive"),
        quarantine=at(p.quarantine, var / "quarantine"),
        ledger=at(p.ledger, var / "ledger.sqlite3"),
        partners=base / p.partners,
        institutions=base / p.institutions,
        tariffs=at(p.tariffs, var / "tariffs"),
        private_key=at(k.private_key, var / "keys" / "kravmottak.key.pem"),
        certificate=certificate,
        csr=at(k.csr, certificate.parent / "kravmottak.csr.pem"),
        patient_secret=at(k.patient_secret, var / "keys" / "patient.secret"),
    )
    url = cfg.ledger.url
    if url is not None and url.startswith("sqlite:///"):
        # the SQLite file is `paths.ledger` (its lock file and backups sit beside it)
        paths = replace(paths, ledger=base / url.removeprefix("sqlite:///"))
        url = None
    sources = k.sources()
    if "file" in sources:
        sources["file"] = str(base / sources["file"])
    return Settings(
        source=path,
        party=cfg.party,
        paths=paths,
        intake=cfg.intake,
        generate_missing_keys=k.generate_if_missing,
        log_level=cfg.logging.level,
        key_passphrase=sources or None,
        ca_file=(base / cfg.trust.ca_file) if cfg.trust.ca_file else None,
        trust=TrustWindow(cfg.trust.clock_skew_seconds, cfg.trust.max_message_age_days),
        rules=cfg.rules,
        settlement=cfg.settlement,
        metrics=cfg.metrics,
        worker=cfg.worker,
        ledger_url=url or "",
    )


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
patient_secret = "var/keys/patient.secret"   # HMAC secret of the patient pseudonyms

[intake]
poll_interval_seconds = 1.0
stable_seconds = 1.0
max_file_bytes = 134217728
max_payload_bytes = 209715200

[metrics]
port = 0                      # a free port (several sandboxes side by side); the
                              # daemon's "started" log line says which

[logging]
level = "info"
"""
