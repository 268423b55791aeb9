"""`kravmottak db copy --to postgresql://...`: move a ledger into an empty PostgreSQL
database, verified.

The target is migrated to the newest revision first and must hold no rows. Every table
is copied in one transaction, rows in their order (ids kept, so every reference holds);
before the commit the target's row count of each table and the sum of each money
column are compared with the source's, and any difference rolls the whole copy back.
The identity sequences then continue after the copied ids. Run it with the daemon
stopped (the source is read in one snapshot all the same).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from decimal import Decimal
from pathlib import Path

from daemon.config import ConfigError
from daemon.ledger import migrate

# in the order references need them
TABLES = (
    "messages",
    "receipts",
    "bills",
    "bill_lines",
    "exams",
    "exam_days",
    "settlements",
    "vedtak",
    "payments",
    "vedtak_outputs",
    "remarks",
    "outputs",
    "payee_changes",
    "egenandeler",
    "workers",
    "holds",
)
# the kroner columns (decimal text): their sums must be the same on both sides
MONEY = {
    "bills": ("claimed", "approved"),
    "bill_lines": ("claimed", "approved"),
    "payments": ("claimed", "approved"),
    "vedtak": ("claimed", "approved"),
    "payee_changes": ("approved",),
    "egenandeler": ("amount",),
}
# the key each table's rows are read in (SQLite's implicit rowid where there is no id)
ORDER = {"exam_days": "patient_key, day", "workers": "worker_id", "holds": "work_name"}
IDENTITY = {t: "id" for t in ("messages", "receipts", "bills", "settlements", "vedtak")} | {
    t: "id" for t in ("payments", "outputs", "payee_changes", "egenandeler")
}
IDENTITY |= {t: "rowid" for t in ("bill_lines", "exams", "vedtak_outputs", "remarks")}
BATCH = 1000


def _source(url: str):
    if migrate.is_sqlite(url):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            raise ConfigError(f"ledger not found: {path}")
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        db.execute("BEGIN")  # one snapshot for the whole copy
        return db
    import psycopg

    db = psycopg.connect(url)
    db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    return db


def _columns(target, table: str) -> list[str]:
    rows = target.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    return [r[0] for r in rows]


def _rows(source, table: str, columns: list[str]) -> Iterator[list[tuple]]:
    names = ", ".join(columns)
    order = ORDER.get(table) or IDENTITY[table]
    cur = source.cursor()  # SQLite: `rowid` names its implicit row id
    cur.execute(f"SELECT {names} FROM {table} ORDER BY {order}")
    while batch := cur.fetchmany(BATCH):
        yield [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in batch]


def figures(db, table: str) -> tuple[int, tuple[Decimal, ...]]:
    """A table's row count and the sums of its money columns (exact decimals)."""
    (count,) = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    sums = []
    for column in MONEY.get(table, ()):
        values = db.execute(f"SELECT {column} FROM {table}").fetchall()
        sums.append(sum((Decimal(v) for (v,) in values), Decimal("0")))
    return count, tuple(sums)


def copy(source_url: str, target_url: str) -> list[tuple[str, int]]:
    """Copy every table of `source_url`'s ledger into `target_url`'s (PostgreSQL,
    empty); returns (table, rows). Raises ConfigError when it cannot or may not."""
    if migrate.is_sqlite(target_url):
        raise ConfigError("db copy --to: give a postgresql:// URL (the ledger to move to)")
    if source_url == target_url:
        raise ConfigError("db copy --to: that is the configured ledger itself")
    migrate.check(source_url)
    migrate.upgrade(target_url)
    import psycopg

    with closing(_source(source_url)) as source, psycopg.connect(target_url) as target:
        for table in TABLES:
            if target.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone():
                raise ConfigError(
                    f"db copy --to {migrate.redact(target_url)}: not empty ({table} has rows);"
                    " give a new database"
                )
        copied = []
        for table in TABLES:
            columns = _columns(target, table)
            marks = ", ".join(["%s"] * len(columns))
            insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
            with target.cursor() as cur:
                for batch in _rows(source, table, columns):
                    cur.executemany(insert, batch)
            want, got = figures(source, table), figures(target, table)
            if want != got:
                target.rollback()
                raise RuntimeError(
                    f"db copy: {table} differs after the copy (source {want}, target {got});"
                    " nothing was copied"
                )
            if table in IDENTITY:
                key = IDENTITY[table]
                target.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', '{key}'),"
                    f" coalesce(max({key}), 0) + 1, false) FROM {table}"
                )
            copied.append((table, want[0]))
        target.commit()
    return copied
