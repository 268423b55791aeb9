"""Versioned migrations of the ledger (Alembic), for SQLite and PostgreSQL.

- `upgrade(url)`: bring the ledger to the newest revision (`kravmottak db upgrade`). An
  old SQLite ledger made before versioned migrations is brought up by 0001, which adds
  what it lacks.
- `current(url)`: the ledger's revision (None: empty, "legacy": made before versions).
- `check(url)` / `check_revision(found)`: refuse a ledger that is not at `HEAD`, naming
  the command that upgrades it.

A new, empty SQLite ledger is created at `HEAD` by the ledger itself (`create_sqlite`):
the same DDL as revision 0001 plus Alembic's version row, without importing Alembic
(tests make hundreds of ledgers). `tests/test_pg_ledger.py` checks that `HEAD` is
Alembic's head.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from importlib import resources
from pathlib import Path

from daemon.config import ConfigError
from daemon.ledger import schema_0001, schema_0002

HEAD = schema_0002.REVISION
# every revision's DDL, oldest first: a new SQLite file is made by running them all
REVISIONS = (schema_0001, schema_0002)
LEGACY = "legacy"
# as Alembic writes it (SQLite keeps the text: the two ways give the same file)
VERSION_TABLE = (
    "CREATE TABLE alembic_version (\n\tversion_num VARCHAR(32) NOT NULL, \n"
    "\tCONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n)"
)


class OutOfDate(ConfigError):
    """The ledger's schema is older (or newer) than this version of kravmottak."""


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def sqlalchemy_url(url: str) -> str:
    """psycopg 3 is the driver for PostgreSQL URLs."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url.removeprefix(scheme)
    return url


def _alembic(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("daemon.ledger") / "migrations"))
    cfg.attributes["url"] = sqlalchemy_url(url)
    return cfg


def script_head() -> str:
    """The newest revision among the shipped migration scripts."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic("sqlite://")).get_current_head()


def upgrade(url: str) -> str:
    """Migrate the ledger at `url` to the newest revision; returns it."""
    from alembic import command

    if is_sqlite(url) and current(url) is None:  # a new file: made at HEAD, mode 0600
        from daemon.ledger.sqlite import SqliteLedger

        SqliteLedger(Path(url.removeprefix("sqlite:///"))).close()
    # a legacy SQLite ledger has no version table: 0001 runs on it and adds what it lacks
    command.upgrade(_alembic(url), "head")
    found = current(url)
    check_revision(found, url)
    return found or ""


def revision_of(db) -> str | None:
    """The revision of an open DB-API connection's ledger: None when it holds no
    ledger at all, LEGACY when it has the tables but no version (made before 0001)."""
    try:
        row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    except Exception:  # no such table
        _reset(db)
        try:
            db.execute("SELECT 1 FROM receipts LIMIT 1").fetchone()
        except Exception:
            _reset(db)
            return None
        return LEGACY
    return row[0] if row else None


def _reset(db) -> None:
    """After a failed probe: PostgreSQL aborts the transaction (SQLite does not, and its
    caller may hold a transaction open)."""
    if not isinstance(db, sqlite3.Connection):
        db.rollback()


def columns_of(bind) -> Callable[[str], set[str]]:
    """A table's column names through an Alembic connection, for either dialect."""

    def columns(table: str) -> set[str]:
        if bind.dialect.name == "sqlite":
            rows = bind.exec_driver_sql(f"PRAGMA table_info({table})").fetchall()
            return {row[1] for row in rows}
        rows = bind.exec_driver_sql(
            "SELECT column_name FROM information_schema.columns"
            f" WHERE table_schema = current_schema() AND table_name = '{table}'"
        ).fetchall()
        return {row[0] for row in rows}

    return columns


def current(url: str) -> str | None:
    if is_sqlite(url):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            return None
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            return revision_of(db)
    import psycopg

    with psycopg.connect(url) as db:
        return revision_of(db)


def check_revision(found: str | None, where: str) -> None:
    if found == HEAD:
        return
    was = "made before versioned migrations" if found == LEGACY else f"at revision {found}"
    raise OutOfDate(
        f"ledger {redact(where)} is {was}; this version of kravmottak needs revision {HEAD}:"
        " run `kravmottak db upgrade` (after a backup)"
    )


def check(url: str) -> None:
    check_revision(current(url), url)


def redact(url: str) -> str:
    """A URL without its password, for messages and logs."""
    if "://" in url and "@" in url.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = url.split("://", 1)
        creds, host = rest.split("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else url
    return url


def create_sqlite(db: sqlite3.Connection) -> None:
    """A new SQLite ledger at HEAD, in one transaction (a kill leaves nothing half made)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if revision_of(db) is None:
            for revision in REVISIONS:
                revision.create(
                    db.execute,
                    "sqlite",
                    lambda table: {r[1] for r in db.execute(f"PRAGMA table_info({table})")},
                )
            db.execute(VERSION_TABLE)
            db.execute("INSERT INTO alembic_version (version_num) VALUES (?)", (HEAD,))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
