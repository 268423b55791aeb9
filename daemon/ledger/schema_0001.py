"""The ledger's schema at revision 0001, for SQLite and PostgreSQL.

Frozen: a later change to the schema is a new revision in `migrations/versions/`, never
an edit here. One text serves both dialects; `statements(dialect)` adapts it
(PostgreSQL: identity columns, BYTEA, and a `rowid` column for the tables SQLite gives
one implicitly, which the ledger orders by). `create(execute, dialect)` runs it through
any DB-API-like `execute(sql)`: Alembic's connection in `0001_initial`, or the SQLite
connection itself when a new ledger is made (no Alembic import on that path).
"""

from __future__ import annotations

import re
from collections.abc import Callable

REVISION = "0001"

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id               INTEGER PRIMARY KEY,
    content_hash     TEXT NOT NULL,
    payload_hash     TEXT,
    ebxml_message_id TEXT,
    conversation_id  TEXT,
    cpa_id           TEXT,
    sender_her       TEXT,
    msghead_id       TEXT,
    msg_type         TEXT,
    state            TEXT NOT NULL CHECK (state IN ('answered', 'quarantined')),
    apprec_status    TEXT,
    problems         TEXT NOT NULL DEFAULT '[]',
    trace            TEXT NOT NULL DEFAULT '[]',  -- the evaluations that fired, with inputs
    rules_run        INTEGER NOT NULL DEFAULT 0,  -- all evaluations (most find nothing)
    processed_at     TEXT NOT NULL,
    duration_ms      REAL,
    -- 0 when the outcome was our side's doing (internal error, size limit, no agreement
    -- yet): the same file sent again is processed again instead of getting this answer
    final            INTEGER NOT NULL DEFAULT 1
);
-- one final outcome per content; an accepted MessageId belongs to exactly one content
CREATE UNIQUE INDEX IF NOT EXISTS messages_final_hash ON messages (content_hash) WHERE final = 1;
CREATE INDEX IF NOT EXISTS messages_hash ON messages (content_hash);
CREATE UNIQUE INDEX IF NOT EXISTS messages_accepted_id
    ON messages (ebxml_message_id) WHERE state = 'answered';

CREATE TABLE IF NOT EXISTS receipts (
    id            INTEGER PRIMARY KEY,
    work_name     TEXT NOT NULL UNIQUE,
    original_name TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('claimed', 'answered', 'quarantined')),
    message_id    INTEGER REFERENCES messages (id),
    duplicate     INTEGER NOT NULL DEFAULT 0,
    received_at   TEXT NOT NULL,
    claimed_at    TEXT NOT NULL,
    finished_at   TEXT,
    attempts      INTEGER NOT NULL DEFAULT 1  -- handling started, with no outcome yet
);
CREATE INDEX IF NOT EXISTS receipts_state ON receipts (state);

CREATE TABLE IF NOT EXISTS bills (
    id               INTEGER PRIMARY KEY,
    message_id       INTEGER NOT NULL REFERENCES messages (id),
    regning_nr       TEXT NOT NULL,
    uuid             TEXT,
    transaction_type TEXT NOT NULL,
    institution_id   TEXT NOT NULL,
    patient_key      TEXT,            -- a pseudonym (hash), never the identity itself
    codes            TEXT NOT NULL,   -- the code set, for duplicate detection
    claimed_at       TEXT NOT NULL,   -- TransDatoTid as sent
    instant          TEXT NOT NULL,   -- TransDatoTid as a UTC instant, for comparisons
    verdict          TEXT NOT NULL,
    claimed          TEXT NOT NULL,
    approved         TEXT NOT NULL,
    payee            TEXT
);
CREATE INDEX IF NOT EXISTS bills_message ON bills (message_id);
CREATE INDEX IF NOT EXISTS bills_uuid ON bills (institution_id, uuid);
CREATE INDEX IF NOT EXISTS bills_service ON bills (institution_id, patient_key, instant);
-- never paid twice, whatever races between workers: one paid bill per institution + uuid
CREATE UNIQUE INDEX IF NOT EXISTS bills_paid_once ON bills (institution_id, uuid)
    WHERE uuid IS NOT NULL AND verdict IN ('approved', 'reduced')
      AND transaction_type NOT IN ('4', '5');

CREATE TABLE IF NOT EXISTS bill_lines (
    bill_id   INTEGER NOT NULL REFERENCES bills (id),
    line      INTEGER NOT NULL,
    code      TEXT NOT NULL,
    count     INTEGER NOT NULL,
    category  TEXT,
    claimed   TEXT NOT NULL,
    approved  TEXT NOT NULL,
    verdict   TEXT NOT NULL,
    payee     TEXT             -- who is paid for the line (LAB-10, RAD-15)
);
CREATE INDEX IF NOT EXISTS bill_lines_bill ON bill_lines (bill_id);

-- approved radiology exams, for the same-day rules across messages (RAD-06..11);
-- active = 0 once the bill is credited or replaced by a correction
CREATE TABLE IF NOT EXISTS exams (
    bill_id        INTEGER NOT NULL REFERENCES bills (id),
    line           INTEGER NOT NULL,
    patient_key    TEXT NOT NULL,
    day            TEXT NOT NULL,
    instant        TEXT NOT NULL,
    institution_id TEXT NOT NULL,
    uuid           TEXT,
    code           TEXT NOT NULL,
    side           TEXT,
    modality       TEXT NOT NULL,
    kind           TEXT NOT NULL,
    regions        TEXT NOT NULL,
    units          INTEGER NOT NULL,
    active         INTEGER NOT NULL DEFAULT 1,
    tele           TEXT,
    ambulant       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS exams_day ON exams (patient_key, day) WHERE active = 1;
-- the last defence of the same-day rules: a line is one exam, and no two active
-- exams are identical (RAD-08: code, side, teleradiology part and instant)
CREATE UNIQUE INDEX IF NOT EXISTS exams_line ON exams (bill_id, line);
CREATE UNIQUE INDEX IF NOT EXISTS exams_identical ON exams (patient_key, day,
    instant, code, coalesce(side, ''), coalesce(tele, '')) WHERE active = 1;

-- one row per patient and day with approved exams: its version moves with every exam
-- approved or withdrawn, so a decision made on an older picture of the day is refused
-- at record time (Conflict: judged again) — the same-day check and the recording are
-- one atomic step per patient and day, whatever races between workers (RULES.md)
CREATE TABLE IF NOT EXISTS exam_days (
    patient_key TEXT NOT NULL,
    day         TEXT NOT NULL,
    version     INTEGER NOT NULL,
    PRIMARY KEY (patient_key, day)
);

-- one settlement run (the 16:00 batch, a make-up run, or `kravmottak settle`)
CREATE TABLE IF NOT EXISTS settlements (
    id          INTEGER PRIMARY KEY,
    run_key     TEXT NOT NULL UNIQUE,  -- the scheduled instant, or manual:<instant>
    kind        TEXT NOT NULL CHECK (kind IN ('scheduled', 'make-up', 'manual')),
    cutoff      TEXT NOT NULL,         -- claims answered up to this instant (UTC)
    started_at  TEXT NOT NULL
);

-- one utbetalingsvedtak per payee per run; its files are kept here and written to the
-- outbox after the commit (delivered_at set once both are there)
CREATE TABLE IF NOT EXISTS vedtak (
    id            INTEGER PRIMARY KEY,
    settlement_id INTEGER NOT NULL REFERENCES settlements (id),
    oppgjors_nr   TEXT NOT NULL UNIQUE,
    payee         TEXT NOT NULL,
    decided_on    TEXT NOT NULL,
    bills         INTEGER NOT NULL,
    claimed       TEXT NOT NULL,
    approved      TEXT NOT NULL,
    delivered_at  TEXT,
    UNIQUE (settlement_id, payee)
);

-- what each bill moves per payee; the settlement assigns each row to one vedtak, once
CREATE TABLE IF NOT EXISTS payments (
    id         INTEGER PRIMARY KEY,
    bill_id    INTEGER NOT NULL REFERENCES bills (id),
    payee      TEXT,               -- NULL: nobody to address (unknown institution)
    claimed    TEXT NOT NULL,
    approved   TEXT NOT NULL,
    vedtak_id  INTEGER REFERENCES vedtak (id)
);
CREATE INDEX IF NOT EXISTS payments_bill ON payments (bill_id);
CREATE INDEX IF NOT EXISTS payments_open ON payments (payee) WHERE vedtak_id IS NULL;

CREATE TABLE IF NOT EXISTS vedtak_outputs (
    vedtak_id  INTEGER NOT NULL REFERENCES vedtak (id),
    kind       TEXT NOT NULL,
    file_name  TEXT NOT NULL,
    content    BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS exams_uuid ON exams (institution_id, uuid);

CREATE TABLE IF NOT EXISTS remarks (
    bill_id  INTEGER NOT NULL REFERENCES bills (id),
    rule_id  TEXT NOT NULL,
    number   TEXT NOT NULL,
    text     TEXT NOT NULL,
    line     INTEGER
);

CREATE TABLE IF NOT EXISTS outputs (
    id          INTEGER PRIMARY KEY,
    message_id  INTEGER NOT NULL REFERENCES messages (id),
    kind        TEXT NOT NULL,
    file_name   TEXT NOT NULL,
    content     BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outputs_message ON outputs (message_id);

-- the audit trail of `kravmottak payments repoint`: who moved which open payments
-- from one payee to another, when and why
CREATE TABLE IF NOT EXISTS payee_changes (
    id          INTEGER PRIMARY KEY,
    changed_at  TEXT NOT NULL,
    changed_by  TEXT NOT NULL,
    from_payee  TEXT NOT NULL,
    to_payee    TEXT NOT NULL,
    payments    INTEGER NOT NULL,
    approved    TEXT NOT NULL,
    reason      TEXT
);

-- the workers sharing one PostgreSQL ledger: each with its lease, renewed by its
-- heartbeat; a worker whose lease ran out is taken over
CREATE TABLE IF NOT EXISTS workers (
    worker_id   TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    started     TEXT NOT NULL,
    heartbeat   TEXT NOT NULL,
    lease_until TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'running'
);

-- which worker holds which claimed file in work/
CREATE TABLE IF NOT EXISTS holds (
    work_name TEXT PRIMARY KEY,
    worker_id TEXT NOT NULL,
    since     TEXT NOT NULL
);
"""

# tables without an INTEGER PRIMARY KEY: SQLite's implicit rowid is made explicit on PG
ROWID_TABLES = ("bill_lines", "exams", "vedtak_outputs", "remarks")

# columns added after a ledger was first created (before versioned migrations): an old
# file gets them when `kravmottak db upgrade` runs 0001 on it
LEGACY_COLUMNS = (
    ("bill_lines", "payee", "TEXT"),
    ("exams", "tele", "TEXT"),
    ("exams", "ambulant", "INTEGER NOT NULL DEFAULT 0"),
    ("receipts", "attempts", "INTEGER NOT NULL DEFAULT 1"),
)


def statements(dialect: str) -> list[str]:
    """The schema as single statements for `dialect` ("sqlite" or "postgresql")."""
    text = re.sub(r"--[^\n]*", "", SCHEMA)
    if dialect == "postgresql":
        text = text.replace(
            "INTEGER PRIMARY KEY", "INTEGER GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
        )
        text = text.replace("BLOB", "BYTEA")
        for table in ROWID_TABLES:
            text = text.replace(
                f"CREATE TABLE IF NOT EXISTS {table} (",
                f"CREATE TABLE IF NOT EXISTS {table} (\n    rowid BIGINT GENERATED BY DEFAULT"
                " AS IDENTITY PRIMARY KEY,",
            )
    return [s.strip() for s in text.split(";") if s.strip()]


def create(execute: Callable[[str], object], dialect: str, columns: Callable[[str], set[str]]):
    """Tables first, then the columns an older SQLite ledger lacks, then the indexes
    (some index those columns). Idempotent: every statement is IF NOT EXISTS."""
    todo = statements(dialect)
    for sql in todo:
        if sql.startswith("CREATE TABLE"):
            execute(sql)
    for table, column, decl in LEGACY_COLUMNS:
        if column not in columns(table):
            execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
    for sql in todo:
        if not sql.startswith("CREATE TABLE"):
            execute(sql)
