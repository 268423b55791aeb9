"""The ledger on PostgreSQL: the same contract and the same SQL as `SqliteLedger`,
for several workers sharing one inbox (psycopg 3).

`_Connection` gives a psycopg connection the face of the `sqlite3.Connection` the
SQLite ledger talks to, translating each statement once (cached): `?` → `%s`,
`INSERT OR IGNORE` → `ON CONFLICT DO NOTHING`, `group_concat` → `string_agg`,
`BEGIN IMMEDIATE` → `BEGIN`, and `lastrowid` through `RETURNING id`. Transactions are
explicit, as on SQLite: one per write, or one per commit group with a savepoint per
message (psycopg runs in autocommit mode, so a read outside them never leaves a
transaction open).

Several workers:
- Same-day limits (RAD-06..11) and one payment per bill (COM-06, credits,
  corrections): reading a patient's day or a bill's history inside a transaction takes
  the transaction-scoped advisory lock of that day or bill (`pg_advisory_xact_lock`),
  and recording a decision takes them again before its checks, so a second worker
  waits until the first one's transaction is committed and then sees its records. A
  deadlock between two groups is the ledger's `Conflict` (the intake commits its group
  and judges the message again). Unique constraints stay the last defence: a violation
  is a `Conflict` too.
- Settlement: `settlement_lock()` takes a session-level advisory lock without waiting.
- A broken connection (server restart, network) is replaced at the next transaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import psycopg
from psycopg import errors, sql
from psycopg.pq import TransactionStatus

from daemon.config import ConfigError
from daemon.ledger import migrate
from daemon.ledger.sqlite import Conflict, SqliteLedger

# tables whose key is an identity column `id`: an INSERT reports it (sqlite's lastrowid)
ID_TABLES = frozenset(
    (
        "messages",
        "receipts",
        "bills",
        "payments",
        "settlements",
        "vedtak",
        "outputs",
        "payee_changes",
    )
)
SETTLEMENT_LOCK = "kravmottak:settlement"
_INSERT = re.compile(r"^\s*INSERT\s+(?:OR\s+IGNORE\s+)?INTO\s+(\w+)", re.IGNORECASE)


@lru_cache(maxsize=512)
def translate(sql: str) -> tuple[str, bool]:
    """SQLite's dialect of one statement in PostgreSQL's; True when it returns the id."""
    if sql.strip().upper() == "BEGIN IMMEDIATE":
        return "BEGIN", False
    ignore = re.match(r"^\s*INSERT\s+OR\s+IGNORE\s+", sql, re.IGNORECASE) is not None
    out = sql.replace("?", "%s").replace("group_concat(", "string_agg(")
    if ignore:
        out = re.sub(r"INSERT\s+OR\s+IGNORE\s+", "INSERT ", out, count=1, flags=re.IGNORECASE)
        out += " ON CONFLICT DO NOTHING"
    insert = _INSERT.match(sql)
    returning = bool(insert and insert.group(1) in ID_TABLES and "RETURNING" not in sql.upper())
    if returning:
        out += " RETURNING id"
    return out, returning


class _Cursor:
    """What the SQLite ledger uses of a sqlite3 cursor."""

    __slots__ = ("_cur", "lastrowid")

    def __init__(self, cur: psycopg.Cursor, lastrowid: int | None = None) -> None:
        self._cur = cur
        self.lastrowid = lastrowid

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    def fetchone(self):
        return self._cur.fetchone()

    def fetchall(self):
        return self._cur.fetchall()

    def __iter__(self):
        return iter(self._cur.fetchall())


class _Connection:
    """A psycopg connection with the face of a `sqlite3.Connection` (autocommit, like
    `isolation_level=None`: BEGIN, COMMIT, SAVEPOINT are the ledger's own)."""

    def __init__(self, url: str, *, readonly: bool) -> None:
        self.url = url
        self.readonly = readonly
        self.conn = self._connect()

    def _connect(self) -> psycopg.Connection:
        try:
            conn = psycopg.connect(self.url, autocommit=True)
        except psycopg.Error as exc:
            raise ConfigError(
                f"[ledger] url {migrate.redact(self.url)}: cannot connect: {exc}"
            ) from exc
        if self.readonly:
            conn.execute("SET default_transaction_read_only = on")
        return conn

    @property
    def in_transaction(self) -> bool:
        return self.conn.info.transaction_status not in (
            TransactionStatus.IDLE,
            TransactionStatus.UNKNOWN,
        )

    def _usable(self) -> psycopg.Connection:
        """Outside a transaction a broken connection is replaced; inside one the
        transaction is lost anyway and the error goes up (the caller rolls back)."""
        if (self.conn.closed or self.conn.broken) and not self.in_transaction:
            self.conn.close()
            self.conn = self._connect()
        return self.conn

    def execute(self, sql: str, params: Sequence = ()) -> _Cursor:
        text, returning = translate(sql)
        cur = self._usable().execute(text, tuple(params) or None)
        row = cur.fetchone() if returning else None  # none: ON CONFLICT DO NOTHING did
        return _Cursor(cur, row[0] if row else None)

    def executemany(self, sql: str, rows) -> _Cursor:
        text, _returning = translate(sql)
        cur = self._usable().cursor()
        rows = list(rows)
        if rows:
            cur.executemany(text.removesuffix(" RETURNING id"), rows)
        return _Cursor(cur)

    def close(self) -> None:
        self.conn.close()


class PostgresLedger(SqliteLedger):
    integrity_errors = (errors.IntegrityError, errors.DeadlockDetected, errors.SerializationFailure)

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        self.url = url
        self.path = Path(migrate.redact(url))  # for messages only
        self._db = _Connection(url, readonly=readonly)  # type: ignore[assignment]
        self._group = False
        migrate.check_revision(migrate.revision_of(self._db.conn), url)
        self._bill_seq: str | None = None
        self._held: set[str] = set()  # advisory locks this transaction holds
        self._writing = False  # inside a write's transaction or savepoint

    def _new_bill_ids(self, db, n: int) -> list[int]:  # type: ignore[override]
        """From the identity sequence: workers recording at once never pick the same."""
        if self._bill_seq is None:
            (self._bill_seq,) = db.execute(
                "SELECT pg_get_serial_sequence('bills', 'id')"
            ).fetchone()
        rows = db.execute("SELECT nextval(?) FROM generate_series(1, ?)", (self._bill_seq, n))
        return [r[0] for r in rows]

    def _hold(self, keys: list[str]) -> None:
        """Take each key's transaction-scoped advisory lock, in one order (sorted), in a
        savepoint, in one round trip: a deadlock with another worker is a `Conflict`
        and leaves the transaction usable. Outside a transaction there is nothing to
        hold it in: the recording takes the locks again before it checks. Keys this
        transaction already holds are not asked for again."""
        if not self._db.in_transaction:
            return
        todo = sorted(set(keys) - self._held)
        if not todo:
            return
        conn = self._db.conn
        array = sql.SQL(", ").join(sql.Literal(k) for k in todo)
        query = sql.SQL(
            "SAVEPOINT hold; SELECT count(pg_advisory_xact_lock(h)) FROM (SELECT DISTINCT"
            " hashtext(k) AS h FROM unnest(ARRAY[{}]::text[]) AS k ORDER BY 1) AS s;"
            " RELEASE SAVEPOINT hold"
        ).format(array)
        try:
            conn.execute(query.as_string(conn))
        except errors.DeadlockDetected as exc:
            conn.execute("ROLLBACK TO SAVEPOINT hold")
            conn.execute("RELEASE SAVEPOINT hold")
            raise Conflict("waiting for another worker's records: judged again") from exc
        if not self._writing:  # a write's savepoint may yet be rolled back, and its locks
            self._held.update(todo)

    def begin_group(self) -> None:
        self._held = set()
        super().begin_group()

    def commit_group(self) -> None:
        self._held = set()
        super().commit_group()

    def rollback_group(self) -> None:
        self._held = set()
        super().rollback_group()

    @contextmanager
    def _tx(self) -> Iterator[_Connection]:  # type: ignore[override]
        if not self._group:  # a transaction of its own: it holds nothing yet
            self._held = set()
        self._writing = True
        try:
            with super()._tx() as db:
                yield db
        finally:
            self._writing = False
            if not self._group:
                self._held = set()

    @contextmanager
    def settlement_lock(self) -> Iterator[bool]:
        """The settlement batch's session-level advisory lock, without waiting: False
        when another worker holds it (it runs the batch). Released on exit, and by the
        server when this worker's connection ends (a killed worker holds nothing)."""
        (held,) = self._db.execute(
            "SELECT pg_try_advisory_lock(hashtext(?))", (SETTLEMENT_LOCK,)
        ).fetchone()
        try:
            yield bool(held)
        finally:
            if held and not self._db.conn.closed:
                self._db.execute("SELECT pg_advisory_unlock(hashtext(?))", (SETTLEMENT_LOCK,))

    def backup(self, dest: Path) -> None:
        raise ConfigError("a PostgreSQL ledger is backed up with the server's tools (pg_dump)")

    def close(self) -> None:
        self._db.close()


def probe(url: str) -> None:
    """The ledger answers (/readyz): a short connection of its own."""
    with psycopg.connect(url, connect_timeout=2) as db:
        db.execute("SELECT 1 FROM receipts LIMIT 1").fetchall()
