"""The ledger named by the config's `[ledger] url`: SQLite (the embedded default, the
file `[paths] ledger`) or PostgreSQL (several workers on one inbox). Both implement the
same contract (`daemon.ledger.sqlite.Ledger`) on the same SQL."""

from __future__ import annotations

from daemon.config import ConfigError, Settings
from daemon.ledger import migrate
from daemon.ledger.sqlite import SqliteLedger


def is_sqlite(settings: Settings) -> bool:
    return migrate.is_sqlite(settings.ledger)


def open_ledger(settings: Settings, *, readonly: bool = False, **kw) -> SqliteLedger:
    """The configured ledger, checked to be at the newest schema revision (an older one
    is refused, naming `kravmottak db upgrade`). `kw`: SQLite's options (synchronous)."""
    if is_sqlite(settings):
        return SqliteLedger(settings.paths.ledger, readonly=readonly, **kw)
    try:
        from daemon.ledger.postgres import PostgresLedger
    except ImportError as exc:  # pragma: no cover - psycopg is a dependency
        raise ConfigError(f"[ledger] url: PostgreSQL needs psycopg: {exc}") from exc
    return PostgresLedger(settings.ledger, readonly=readonly)


def sqlite_only(settings: Settings, what: str) -> None:
    """Refuse a SQLite-file operation on a PostgreSQL ledger, saying what to use."""
    if not is_sqlite(settings):
        raise ConfigError(
            f"{what} works on a SQLite ledger file; the ledger is PostgreSQL"
            f" ({migrate.redact(settings.ledger)}): use the server's own tools (pg_dump)"
        )
