"""The ledger: every file we claimed, every message we processed, every answer.

Two tables carry the state machine:

- `receipts`: one row per claimed file (`work_name` is its unique name in `work/`).
  State `claimed` → `answered` | `quarantined`. A file still in the inbox is
  *received*; it has no row yet.
- `messages`: one row per distinct message content (`content_hash` is unique), with
  its ebXML ids, outcome and the stored outputs. A re-sent file becomes a second
  receipt pointing at the same message row — one processing, the same answer.

All writes that belong together happen in one transaction. SQLite runs in WAL mode
with `synchronous=FULL`, so a committed answer survives a killed process or a power
cut. The `Ledger` protocol is what the rest of the daemon sees; `PostgresLedger`
(daemon.ledger.postgres) implements it on the same SQL for several workers. The schema
is owned by the versioned migrations (daemon.ledger.schema_0001, migrations/).
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from daemon.claims.answer import Answer, Output
from daemon.config import ConfigError
from daemon.domain import Claim, Decision, Exam
from daemon.ledger import migrate
from daemon.records import Work

BILL_ROWS_AT_ONCE = 1000  # bills whose rows are built and inserted together (#17.4)

STATES = ("claimed", "answered", "quarantined")
_STORED = "id, state, apprec_status, problems, ebxml_message_id, conversation_id, sender_her"


@dataclass(frozen=True, slots=True)
class Receipt:
    work_name: str
    original_name: str
    state: str
    message_id: int | None
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Stored:
    """A processed message as the ledger remembers it."""

    id: int
    state: str
    apprec_status: str | None
    problems: tuple[dict, ...]
    outputs: tuple[Output, ...]
    ebxml_message_id: str | None = None
    conversation_id: str | None = None
    sender_her: str | None = None


def _chunks(values: list, size: int = 500) -> Iterator[list]:
    """SQLite limits the parameters of one statement: ask in pieces."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


@dataclass(frozen=True, slots=True)
class OpenPayment:
    """A payment not yet in a vedtak, with what its vedtak line needs to say."""

    id: int
    payee: str
    claimed: Decimal
    approved: Decimal
    regning_nr: str
    verdict: str
    transaction_type: str
    remarks: tuple[str, ...]
    kind: str = "refusjon"  # or 'egenandel' (EG-02): the vedtak shows the line kind


@dataclass(frozen=True, slots=True)
class MadeVedtak:
    """One vedtak a settlement run makes: its figures, the payments it settles and the
    files to deliver (kind, file name, bytes)."""

    oppgjors_nr: str
    payee: str
    decided_on: str
    claimed: Decimal
    approved: Decimal
    payment_ids: tuple[int, ...]
    outputs: tuple[tuple[str, str, bytes], ...]


def day_key(patient_key: str, day: str) -> str:
    """The lock of a patient's day (same-day rules, RAD-06..11)."""
    return f"day:{patient_key}:{day}"


def bill_key(institution_id: str, uuid: str) -> str:
    """The lock of one bill's uuid at one institution (COM-06, credits, corrections)."""
    return f"bill:{institution_id}:{uuid}"


class Conflict(Exception):
    """Another worker recorded the same content or MessageId first; process again."""


class Ledger(Protocol):
    def claim(
        self, work_name: str, original_name: str, received_at: str, now: str, attempts: int = 1
    ) -> None: ...
    def receipt(self, work_name: str) -> Receipt | None: ...
    def restart(self, work_name: str) -> int: ...
    def by_hash(self, content_hash: str) -> Stored | None: ...
    def by_id(self, message_id: int) -> Stored | None: ...
    def accepted(self, ebxml_message_id: str) -> tuple[str, str | None] | None: ...
    def record(self, work_name: str, work: Work, answer: Answer, now: str, ms: float) -> Stored: ...
    def record_duplicate(self, work_name: str, stored: Stored, now: str) -> None: ...
    def counts(self) -> dict[str, int]: ...
    def oldest_unanswered(self) -> str | None: ...
    def bill_totals(self, message_id: int) -> tuple[int, Decimal, Decimal]: ...
    def undelivered_outputs(self, work_names: list[str]) -> Undelivered: ...
    def close(self) -> None: ...
    def begin_group(self) -> None: ...
    def commit_group(self) -> None: ...
    def rollback_group(self) -> None: ...
    def settlement_lock(self) -> AbstractContextManager[bool]: ...


@dataclass(frozen=True, slots=True)
class PayeeTotal:
    """The open (not yet settled) payments of one payee."""

    payee: str | None
    payments: int
    approved: Decimal
    since: str  # when the oldest of them was processed


@dataclass(frozen=True, slots=True)
class Undelivered:
    """Answers recorded but not (yet) in the outbox: how many and since when."""

    answers: int
    answers_since: str | None
    vedtak: int
    vedtak_since: str | None
    answered: int = 0  # of `answers`, those in state answered (the rest quarantined)


def open_readonly(path: Path) -> sqlite3.Connection:
    """The ledger for reading only (`status`, `explain`, `backup`): works for a user
    who may read the ledger but not write it or its folder. `mode=ro` first; when the
    WAL's -shm cannot be made (no daemon running, folder not writable) `immutable=1`,
    which is safe then: nobody is writing."""
    if not path.is_file():
        raise ConfigError(f"ledger not found: {path} (run `kravmottak init` or start the daemon)")
    last: sqlite3.Error | None = None
    for options in ("mode=ro", "mode=ro&immutable=1"):
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?{options}", uri=True, timeout=30.0)
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.Error as exc:
            last = exc
    raise ConfigError(f"ledger {path}: cannot be read: {last}")


# the egenandel register (#21, EG-03; schema in daemon.ledger.schema_0002): the status
# recorded for each typeTransaksjon
EGENANDEL_STATUS = {"1": "fritak", "2": "ikke betalt", "3": "betalt", "4": "betalt"}


class SqliteLedger:
    # a unique constraint refused a write: another worker was first (Conflict)
    integrity_errors: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)

    def __init__(self, path: Path, *, synchronous: str = "FULL", readonly: bool = False) -> None:
        self.path = path
        if readonly:
            self._db = open_readonly(path)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        # 0600 before SQLite opens it (its -wal and -shm files copy the mode): the
        # ledger holds claims and answers, readable by the service's user only
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        elif path.stat().st_mode & 0o077:
            with suppress(PermissionError):  # not ours (an operator's read-only `status`)
                os.chmod(path, 0o600)
        # one thread at a time (the poll job has max_instances=1), but not always the same one
        self._db = sqlite3.connect(
            path, isolation_level=None, timeout=30.0, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA foreign_keys=ON")
        # a new ledger is made at the newest revision; an older one is refused, naming
        # `kravmottak db upgrade` (daemon.ledger.migrate)
        found = migrate.revision_of(self._db)
        if found is None:
            migrate.create_sqlite(self._db)
        else:
            migrate.check_revision(found, str(path))
        self._group = False  # inside begin_group/commit_group

    def close(self) -> None:
        self._db.close()

    def patient_keys(self) -> set[str]:
        """Every patient pseudonym the ledger holds (bills, exams, egenandeler)."""
        rows = self._db.execute(
            "SELECT patient_key FROM bills WHERE patient_key IS NOT NULL"
            " UNION SELECT patient_key FROM exams"
            " UNION SELECT patient_key FROM egenandeler WHERE patient_key IS NOT NULL"
        )
        return {key for (key,) in rows}

    def rekey_patients(self, mapping: dict[str, str], *, drop: frozenset[str] = frozenset()) -> int:
        """Replace pseudonyms (old -> new) in bills, exams and egenandeler in one
        transaction; the keys in `drop` are cleared from bills and egenandeler (exams
        without a key are deleted: they only serve the same-day rules). Returns the rows
        changed."""
        changed = 0
        with self._tx() as db:
            for old, new in mapping.items():
                for table in ("bills", "exams", "egenandeler"):
                    cur = db.execute(
                        f"UPDATE {table} SET patient_key = ? WHERE patient_key = ?", (new, old)
                    )
                    changed += cur.rowcount
            for old in drop:
                for table in ("bills", "egenandeler"):
                    changed += db.execute(
                        f"UPDATE {table} SET patient_key = NULL WHERE patient_key = ?", (old,)
                    ).rowcount
                changed += db.execute("DELETE FROM exams WHERE patient_key = ?", (old,)).rowcount
        return changed

    # ------------------------------------------------------------------ group commit

    def begin_group(self) -> None:
        """Open one transaction for several messages (group commit): every write until
        `commit_group` goes into it, each in its own savepoint, so one message's failure
        undoes only its own writes. Reads on this connection see the group's writes (a
        message sees the bills of the one before it). Nothing is durable before
        `commit_group`: a kill in between leaves every file of the group in work/
        without an outcome, and recovery processes them again."""
        self._db.execute("BEGIN IMMEDIATE")
        self._group = True

    def commit_group(self) -> None:
        """One COMMIT (one WAL fsync) for the whole group; rolled back if it fails."""
        self._group = False
        try:
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def rollback_group(self) -> None:
        self._group = False
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self._group:  # inside a group: a savepoint, committed with the group
            self._db.execute("SAVEPOINT one")
            try:
                yield self._db
                self._db.execute("RELEASE one")
            except BaseException:
                self._db.execute("ROLLBACK TO one")
                self._db.execute("RELEASE one")
                raise
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # also when COMMIT itself failed (disk full)
                self._db.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ receipts

    def claim(
        self, work_name: str, original_name: str, received_at: str, now: str, attempts: int = 1
    ) -> None:
        """A claimed file's receipt; `attempts`: the starts of its handling so far."""
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO receipts (work_name, original_name, state, received_at,"
                " claimed_at, attempts) VALUES (?, ?, 'claimed', ?, ?, ?)",
                (work_name, original_name, received_at, now, attempts),
            )

    def restart(self, work_name: str) -> int:
        """Count one more start of a claimed file's handling (committed before the
        handling runs); returns how many starts there have been."""
        with self._tx() as db:
            db.execute(
                "UPDATE receipts SET attempts = attempts + 1"
                " WHERE work_name = ? AND state = 'claimed'",
                (work_name,),
            )
            (attempts,) = db.execute(
                "SELECT attempts FROM receipts WHERE work_name = ?", (work_name,)
            ).fetchone()
        return attempts

    def receipt(self, work_name: str) -> Receipt | None:
        row = self._db.execute(
            "SELECT work_name, original_name, state, message_id, duplicate FROM receipts"
            " WHERE work_name = ?",
            (work_name,),
        ).fetchone()
        return Receipt(*row[:4], bool(row[4])) if row else None

    # ------------------------------------------------------------------ messages

    def by_hash(self, content_hash: str) -> Stored | None:
        """The final outcome for this exact content, if there is one."""
        row = self._db.execute(
            f"SELECT {_STORED} FROM messages WHERE content_hash = ? AND final = 1",
            (content_hash,),
        ).fetchone()
        return self._stored(row) if row else None

    def by_id(self, message_id: int) -> Stored | None:
        row = self._db.execute(
            f"SELECT {_STORED} FROM messages WHERE id = ?", (message_id,)
        ).fetchone()
        return self._stored(row) if row else None

    def _stored(self, row: tuple) -> Stored:
        outputs = tuple(
            Output(kind, name, bytes(content))
            for kind, name, content in self._db.execute(
                "SELECT kind, file_name, content FROM outputs WHERE message_id = ? ORDER BY id",
                (row[0],),
            )
        )
        return Stored(row[0], row[1], row[2], tuple(json.loads(row[3])), outputs, *row[4:])

    def accepted(self, ebxml_message_id: str) -> tuple[str, str | None] | None:
        row = self._db.execute(
            "SELECT content_hash, payload_hash FROM messages"
            " WHERE ebxml_message_id = ? AND state = 'answered'",
            (ebxml_message_id,),
        ).fetchone()
        return (row[0], row[1]) if row else None

    def record(self, work_name: str, work: Work, answer: Answer, now: str, ms: float) -> Stored:
        """Store the outcome and its outputs and close the receipt, atomically."""
        header, info = work.header, work.msghead_info
        trace = work.decision.trace if work.decision else ()
        try:
            with self._tx() as db:
                cur = db.execute(
                    "INSERT INTO messages (content_hash, payload_hash, ebxml_message_id,"
                    " conversation_id, cpa_id, sender_her, msghead_id, msg_type, state,"
                    " apprec_status, problems, trace, rules_run, processed_at, duration_ms, final)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        work.content_hash,
                        work.payload_part_hash,
                        header.message_id if header else None,
                        header.conversation_id if header else None,
                        header.cpa_id if header else None,
                        header.from_party.party_id if header else None,
                        info.msg_id if info else None,
                        info.msg_type if info else None,
                        answer.state,
                        answer.status,
                        json.dumps([p.as_dict() for p in answer.problems], ensure_ascii=False),
                        # only what fired: a 10 000-bill claim runs 520 000 evaluations
                        json.dumps([e for e in trace if e[3]], ensure_ascii=False),
                        work.decision.evaluations if work.decision else 0,
                        now,
                        ms,
                        int(answer.final),
                    ),
                )
                message_id = cur.lastrowid
                if work.decision and work.decision.bills and work.claim:
                    self._insert_decision(db, message_id, work.claim, work.decision)
                db.executemany(
                    "INSERT INTO outputs (message_id, kind, file_name, content)"
                    " VALUES (?, ?, ?, ?)",
                    [(message_id, o.kind, o.name, o.content) for o in answer.outputs],
                )
                db.execute(
                    "UPDATE receipts SET state = ?, message_id = ?, finished_at = ?"
                    " WHERE work_name = ?",
                    (answer.state, message_id, now, work_name),
                )
        except self.integrity_errors as exc:
            raise Conflict(str(exc)) from exc
        return Stored(
            message_id,
            answer.state,
            answer.status,
            tuple(p.as_dict() for p in answer.problems),
            answer.outputs,
            header.message_id if header else None,
            header.conversation_id if header else None,
            header.from_party.party_id if header else None,
        )

    def _insert_decision(
        self, db: sqlite3.Connection, message_id: int, claim: Claim, decision: Decision
    ) -> None:
        """Every bill with its lines, payments, exams and remarks: one statement per
        table for the whole claim (a 100-bill claim made 700 statements before). The
        bill ids are given here, in the transaction that holds the write lock."""
        # several workers (PostgreSQL): the decision's patients and days, and its bills'
        # uuids, are held until the commit, so the checks below see every earlier record
        self._hold(
            [day_key(patient, day) for patient, day, _ in decision.same_day_basis]
            + [bill_key(claim.institution_id, o.uuid) for o in decision.bills if o.uuid]
        )
        for patient, day, seen in decision.same_day_basis:
            row = db.execute(
                "SELECT version FROM exam_days WHERE patient_key = ? AND day = ?", (patient, day)
            ).fetchone()
            if (row[0] if row else 0) != seen:  # another message changed that day meanwhile
                raise Conflict(f"same-day picture of {day} changed since it was judged")
        pairs = zip(claim.bills, decision.bills, strict=True)
        # in slices of BILL_ROWS_AT_ONCE bills: a streamed claim's rows never all sit in
        # memory (#17.4); each slice withdraws before it inserts, as one slice did before
        while part := list(itertools.islice(pairs, BILL_ROWS_AT_ONCE)):
            self._insert_bill_rows(db, message_id, claim, self._new_bill_ids(db, len(part)), part)

    @staticmethod
    def _insert_bill_rows(db, message_id: int, claim: Claim, ids, part: list) -> None:
        """The bills of `part` ((bill, outcome) pairs, ids `ids`) with their lines,
        payments, egenandeler, exams and remarks: one statement per table per slice."""
        bills, lines, payments, exams, remarks, withdrawn = [], [], [], [], [], []
        copays, copays_withdrawn = [], []
        for bill_id, (bill, outcome) in zip(ids, part, strict=True):
            patient = bill.episode.patient.key if bill.episode else None
            bills.append(
                (
                    bill_id,
                    message_id,
                    outcome.regning_nr,
                    outcome.uuid,
                    bill.transaction_type,
                    claim.institution_id,
                    patient,
                    bill.codes,
                    bill.claimed_at,
                    bill.instant,
                    str(outcome.verdict),
                    str(outcome.claimed),
                    str(outcome.approved),
                    outcome.payee,
                )
            )
            lines.extend(
                (
                    bill_id,
                    ld.line,
                    ld.code,
                    ld.count,
                    ld.category,
                    str(ld.claimed),
                    str(ld.approved),
                    str(ld.verdict),
                    ld.payee,
                )
                for ld in outcome.lines
            )
            payments.extend(
                (bill_id, p.payee, str(p.claimed), str(p.approved), p.kind)
                for p in outcome.payments
            )
            copays.extend(_egenandeler(bill_id, claim, bill, outcome, patient))
            if bill.transaction_type in ("4", "5") and outcome.verdict != "rejected":
                copays_withdrawn.append((claim.institution_id, outcome.uuid))
            if not bill.is_new and outcome.verdict != "rejected":
                # the credited or corrected bill's exams no longer count (RAD-06..10)
                withdrawn.append((claim.institution_id, outcome.uuid))
            exams.extend(
                (
                    bill_id,
                    ld.line,
                    patient,
                    e.day,
                    e.instant,
                    claim.institution_id,
                    outcome.uuid,
                    e.code,
                    e.side,
                    e.modality,
                    e.kind,
                    "+".join(e.regions),
                    e.units,
                    e.tele,
                    int(e.ambulant),
                )
                for ld in outcome.lines
                if (e := ld.exam) is not None and patient is not None
            )
            remarks.extend((bill_id, r.rule_id, r.number, r.text, r.line) for r in outcome.remarks)
        db.executemany(
            "INSERT INTO bills (id, message_id, regning_nr, uuid, transaction_type,"
            " institution_id, patient_key, codes, claimed_at, instant, verdict, claimed,"
            " approved, payee) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            bills,
        )
        db.executemany(
            "INSERT INTO bill_lines (bill_id, line, code, count, category, claimed, approved,"
            " verdict, payee) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            lines,
        )
        db.executemany(
            "INSERT INTO payments (bill_id, payee, claimed, approved, kind) VALUES (?, ?, ?, ?, ?)",
            payments,
        )
        # EG-03: a correction (4) or credit (5) replaces what was recorded for its uuid
        db.executemany(
            "UPDATE egenandeler SET active = 0 WHERE institution_id = ? AND uuid = ?",
            copays_withdrawn,
        )
        db.executemany(
            "INSERT INTO egenandeler (bill_id, institution_id, uuid, regning_nr, patient_key,"
            " year, amount, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            copays,
        )
        # withdrawn before the new exams go in: a correction's own exams stay active
        touched = {
            tuple(row)
            for key in withdrawn
            for row in db.execute(
                "SELECT patient_key, day FROM exams WHERE institution_id = ? AND uuid = ?"
                " AND active = 1",
                key,
            )
        }
        touched |= {(e[2], e[3]) for e in exams}
        db.executemany(
            "UPDATE exams SET active = 0 WHERE institution_id = ? AND uuid = ?", withdrawn
        )
        db.executemany(
            "INSERT INTO exams (bill_id, line, patient_key, day, instant, institution_id,"
            " uuid, code, side, modality, kind, regions, units, tele, ambulant)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            exams,
        )
        db.executemany(
            "INSERT INTO exam_days (patient_key, day, version) VALUES (?, ?, 1)"
            " ON CONFLICT (patient_key, day) DO UPDATE SET version = exam_days.version + 1",
            sorted(touched),
        )
        db.executemany(
            "INSERT INTO remarks (bill_id, rule_id, number, text, line) VALUES (?, ?, ?, ?, ?)",
            remarks,
        )

    @staticmethod
    def _new_bill_ids(db: sqlite3.Connection, n: int) -> range:
        """Ids for `n` new bills, given here (in the transaction holding the write lock):
        one INSERT per table for the whole claim, not one per bill."""
        (last,) = db.execute("SELECT coalesce(max(id), 0) FROM bills").fetchone()
        return range(last + 1, last + 1 + n)

    def _hold(self, keys: list[str]) -> None:
        """Serialize on these keys (a patient's day, a bill's uuid) until the transaction
        ends. SQLite: nothing to do, its one writer holds the whole file."""

    @contextmanager
    def settlement_lock(self) -> Iterator[bool]:
        """Held while one settlement batch runs: False when another worker holds it.
        SQLite: one process per ledger (the state directory lock), always True."""
        yield True

    # ------------------------------------------------------------------ workers
    # Several workers on one (PostgreSQL) ledger: each has a row in `workers` with a
    # lease it renews (`heartbeat`), and a row in `holds` for each file it claimed into
    # work/. Times are UTC ISO strings of one fixed width (`daemon.service.workers.stamp`):
    # they compare as text. Portable SQL: PostgresLedger inherits these.

    def register_worker(
        self, worker_id: str, host: str, pid: int, now: str, lease_until: str
    ) -> None:
        """This process starts as `worker_id`: its row, running, with a fresh lease.
        Workers gone for a day (stopped or taken over, holding nothing) are forgotten."""
        day_ago = (datetime.fromisoformat(now) - timedelta(days=1)).isoformat(
            timespec="microseconds"
        )
        with self._tx() as db:
            db.execute(
                "DELETE FROM workers WHERE state <> 'running' AND heartbeat < ?"
                " AND worker_id NOT IN (SELECT worker_id FROM holds)",
                (day_ago,),
            )
            db.execute(
                "INSERT INTO workers (worker_id, host, pid, started, heartbeat, lease_until, state)"
                " VALUES (?, ?, ?, ?, ?, ?, 'running') ON CONFLICT (worker_id) DO UPDATE SET"
                " host = excluded.host, pid = excluded.pid, started = excluded.started,"
                " heartbeat = excluded.heartbeat, lease_until = excluded.lease_until,"
                " state = 'running'",
                (worker_id, host, pid, now, now, lease_until),
            )

    def heartbeat(self, worker_id: str, host: str, pid: int, now: str, lease_until: str) -> bool:
        """Renew this worker's lease. False when it may no longer work (fenced): its
        lease ran out before this renewal, or another worker took its files over, or
        another process registered under its id."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE workers SET heartbeat = ?, lease_until = ? WHERE worker_id = ?"
                " AND host = ? AND pid = ? AND state = 'running' AND lease_until >= ?",
                (now, lease_until, worker_id, host, pid, now),
            )
            return cur.rowcount == 1

    def retire_worker(self, worker_id: str, pid: int, now: str) -> None:
        """A clean stop: the row stays (status shows it) as stopped, its lease ended."""
        with self._tx() as db:
            db.execute(
                "UPDATE workers SET state = 'stopped', lease_until = ?"
                " WHERE worker_id = ? AND pid = ? AND state = 'running'",
                (now, worker_id, pid),
            )

    def hold(self, work_name: str, worker_id: str, now: str) -> bool:
        """Record that `worker_id` holds this file of work/. False when another worker
        holds it already (then that one handles it)."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO holds (work_name, worker_id, since) VALUES (?, ?, ?)"
                " ON CONFLICT (work_name) DO NOTHING",
                (work_name, worker_id, now),
            )
            if cur.rowcount == 1:
                return True
            row = db.execute(
                "SELECT worker_id FROM holds WHERE work_name = ?", (work_name,)
            ).fetchone()
            return row is not None and row[0] == worker_id

    def release(self, work_name: str) -> None:
        """The file has left work/ (answered and filed away): nobody holds it."""
        with self._tx() as db:
            db.execute("DELETE FROM holds WHERE work_name = ?", (work_name,))

    def expired_workers(self, now: str) -> list[str]:
        """Running workers whose lease ran out before `now`: dead or paused."""
        rows = self._db.execute(
            "SELECT worker_id FROM workers WHERE state = 'running' AND lease_until < ?"
            " ORDER BY worker_id",
            (now,),
        ).fetchall()
        return [r[0] for r in rows]

    def take_over(
        self, dead_worker: str, new_worker: str, now: str, *, force: bool = False
    ) -> list[str]:
        """Move every file `dead_worker` holds to `new_worker`, in one transaction, if
        its lease has run out or it stopped (`force`: also when it has not, for a worker
        known dead: a process of this host that no longer exists, or any other worker on
        SQLite, where the state directory lock proves it gone). The dead worker is marked taken:
        its next heartbeat fails, so if it was only paused it fences itself. Returns the
        work names moved; empty when another worker took it first."""
        with self._tx() as db:
            gone = "" if force else " AND (state <> 'running' OR lease_until < ?)"
            cur = db.execute(
                "UPDATE workers SET state = CASE WHEN state = 'running' THEN 'taken'"
                " ELSE state END WHERE worker_id = ?" + gone,
                (dead_worker,) if force else (dead_worker, now),
            )
            if cur.rowcount != 1:
                return []
            names = [
                r[0]
                for r in db.execute(
                    "SELECT work_name FROM holds WHERE worker_id = ? ORDER BY work_name",
                    (dead_worker,),
                ).fetchall()
            ]
            db.execute(
                "UPDATE holds SET worker_id = ?, since = ? WHERE worker_id = ?",
                (new_worker, now, dead_worker),
            )
        return names

    def workers(self) -> list[dict]:
        """Every worker the ledger knows, with how many files each holds."""
        rows = self._db.execute(
            "SELECT w.worker_id, w.host, w.pid, w.started, w.heartbeat, w.lease_until, w.state,"
            " (SELECT count(*) FROM holds h WHERE h.worker_id = w.worker_id)"
            " FROM workers w ORDER BY w.worker_id"
        ).fetchall()
        keys = ("worker_id", "host", "pid", "started", "heartbeat", "lease_until", "state", "held")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def holds(self) -> dict[str, str]:
        """work name → the worker holding it."""
        rows = self._db.execute("SELECT work_name, worker_id FROM holds").fetchall()
        return {name: worker for name, worker in rows}

    # ------------------------------------------------------------------ bill history

    def egenandel_status(self, institution_id: str, uuid: str) -> str | None:
        self._hold([bill_key(institution_id, uuid)])
        row = self._db.execute(
            "SELECT status FROM egenandeler WHERE institution_id = ? AND uuid = ? AND active = 1"
            " ORDER BY id DESC LIMIT 1",
            (institution_id, uuid),
        ).fetchone()
        return row[0] if row else None

    def egenandel_sum(self, patient_key: str, year: int) -> dict[str, Decimal]:
        """The frikort basis of a patient pseudonym in a year: the recorded egenandeler
        (not credited, not replaced by a correction) per status."""
        out = {status: Decimal("0") for status in ("betalt", "ikke betalt", "fritak")}
        for status, amount in self._db.execute(
            "SELECT status, amount FROM egenandeler WHERE patient_key = ? AND year = ?"
            " AND active = 1 ORDER BY id",
            (patient_key, year),
        ):
            out[status] += Decimal(amount)
        return out

    def paid_bill(self, institution_id: str, uuid: str) -> Decimal | None:
        """Net paid on this uuid (originals + corrections − credits); None if never paid."""
        return self.paid_bills(institution_id, [uuid]).get(uuid)

    def service_seen(self, institution_id: str, patient_key: str, codes: str, when: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM bills WHERE institution_id = ? AND patient_key = ? AND instant = ?"
            " AND codes = ? AND verdict IN ('approved', 'reduced')"
            " AND transaction_type NOT IN ('4', '5') LIMIT 1",
            (institution_id, patient_key, when, codes),
        ).fetchone()
        return row is not None

    def paid_bills(self, institution_id: str, uuids: list[str]) -> dict[str, Decimal]:
        """Net paid per uuid of those ever paid (an original approved or reduced)."""
        self._hold([bill_key(institution_id, uuid) for uuid in uuids])
        rows: dict[str, list[tuple[str, str]]] = {}
        for chunk in _chunks(uuids):
            for uuid, ttype, approved in self._db.execute(
                "SELECT uuid, transaction_type, approved FROM bills WHERE institution_id = ?"
                f" AND uuid IN ({','.join('?' * len(chunk))})"
                " AND verdict IN ('approved', 'reduced')",
                (institution_id, *chunk),
            ):
                rows.setdefault(uuid, []).append((ttype, approved))
        return {
            uuid: sum((Decimal(a) for _, a in found), Decimal("0"))
            for uuid, found in rows.items()
            if any(t not in ("4", "5") for t, _ in found)  # an original was paid
        }

    def services_seen(
        self, institution_id: str, services: list[tuple[str, str, str]]
    ) -> set[tuple[str, str, str]]:
        wanted = set(services)
        found = set()
        for chunk in _chunks(sorted({patient for patient, _, _ in services})):
            for row in self._db.execute(
                "SELECT patient_key, codes, instant FROM bills WHERE institution_id = ?"
                f" AND patient_key IN ({','.join('?' * len(chunk))})"
                " AND verdict IN ('approved', 'reduced') AND transaction_type NOT IN ('4', '5')",
                (institution_id, *chunk),
            ):
                if tuple(row) in wanted:
                    found.add(tuple(row))
        return found

    def paid_by_payee(self, institution_id: str, uuid: str) -> dict[str | None, Decimal]:
        self._hold([bill_key(institution_id, uuid)])
        out: dict[str | None, Decimal] = {}
        for payee, approved in self._db.execute(
            "SELECT p.payee, p.approved FROM payments p JOIN bills b ON b.id = p.bill_id"
            " WHERE b.institution_id = ? AND b.uuid = ? AND b.verdict IN ('approved', 'reduced')"
            " ORDER BY p.id",
            (institution_id, uuid),
        ):
            out[payee] = out.get(payee, Decimal("0")) + Decimal(approved)
        return {payee: amount for payee, amount in out.items() if amount != 0}

    def exams_on(self, patient_key: str, day: str) -> tuple[Exam, ...]:
        self._hold([day_key(patient_key, day)])
        rows = self._db.execute(
            "SELECT e.code, e.side, e.modality, e.kind, e.regions, e.units, e.instant, e.day,"
            " b.regning_nr, e.line, m.ebxml_message_id, e.institution_id, e.uuid, e.tele,"
            " e.ambulant"
            " FROM exams e JOIN bills b ON b.id = e.bill_id JOIN messages m ON m.id = b.message_id"
            " WHERE e.patient_key = ? AND e.day = ? AND e.active = 1 ORDER BY e.rowid",
            (patient_key, day),
        ).fetchall()
        return tuple(
            Exam(
                code=code,
                side=side,
                modality=modality,
                kind=kind,
                regions=tuple(r for r in regions.split("+") if r),
                units=units,
                instant=instant,
                day=day_,
                regning_nr=regning_nr,
                line=line,
                where=f"regning {regning_nr} linje {line} i melding {message}",
                institution_id=institution,
                uuid=uuid,
                tele=tele,
                ambulant=bool(ambulant),
            )
            for (
                code,
                side,
                modality,
                kind,
                regions,
                units,
                instant,
                day_,
                regning_nr,
                line,
                message,
                institution,
                uuid,
                tele,
                ambulant,
            ) in rows
        )

    def day_version(self, patient_key: str, day: str) -> int:
        """How often the day's approved exams have changed (0: never); the decision
        keeps it, and `record` refuses the decision when it has moved since."""
        self._hold([day_key(patient_key, day)])
        row = self._db.execute(
            "SELECT version FROM exam_days WHERE patient_key = ? AND day = ?", (patient_key, day)
        ).fetchone()
        return row[0] if row else 0

    def record_duplicate(self, work_name: str, stored: Stored, now: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE receipts SET state = ?, message_id = ?, duplicate = 1, finished_at = ?"
                " WHERE work_name = ?",
                (stored.state, stored.id, now, work_name),
            )

    # ------------------------------------------------------------------ settlement

    def settle(
        self,
        key: str | None,
        kind: str,
        cutoff: str,
        now: str,
        make: Callable[[int, list[OpenPayment]], list[MadeVedtak]],
    ) -> int | None:
        """One settlement run, in one transaction: record the run, select the open
        payments of claims answered up to `cutoff`, let `make` turn them into vedtak
        (figures and signed files) and assign every payment to its vedtak. A killed
        process leaves either all of it or none. None: a run with this key exists.
        `key` None: a run of its own (`kravmottak settle`), never a repeat of another."""
        with self._tx() as db:
            if key is None:
                (n,) = db.execute("SELECT count(*) + 1 FROM settlements").fetchone()
                key = f"{kind}-{n}:{cutoff}"
            if db.execute("SELECT 1 FROM settlements WHERE run_key = ?", (key,)).fetchone():
                return None
            run = db.execute(
                "INSERT INTO settlements (run_key, kind, cutoff, started_at) VALUES (?, ?, ?, ?)",
                (key, kind, cutoff, now),
            ).lastrowid
            for made in make(run, self._open_payments(db, cutoff)):
                vedtak = db.execute(
                    "INSERT INTO vedtak (settlement_id, oppgjors_nr, payee, decided_on, bills,"
                    " claimed, approved) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        run,
                        made.oppgjors_nr,
                        made.payee,
                        made.decided_on,
                        len(made.payment_ids),
                        str(made.claimed),
                        str(made.approved),
                    ),
                ).lastrowid
                cur = db.executemany(
                    "UPDATE payments SET vedtak_id = ? WHERE id = ? AND vedtak_id IS NULL",
                    [(vedtak, pid) for pid in made.payment_ids],
                )
                if cur.rowcount != len(made.payment_ids):  # another run took one first
                    raise Conflict(f"{made.oppgjors_nr}: payments already settled")
                db.executemany(
                    "INSERT INTO vedtak_outputs (vedtak_id, kind, file_name, content)"
                    " VALUES (?, ?, ?, ?)",
                    [(vedtak, k, name, content) for k, name, content in made.outputs],
                )
        return run

    @staticmethod
    def _open_payments(db: sqlite3.Connection, cutoff: str) -> list[OpenPayment]:
        rows = db.execute(
            "SELECT p.id, p.payee, p.claimed, p.approved, b.regning_nr, b.verdict,"
            " b.transaction_type, b.id, p.kind"
            " FROM payments p JOIN bills b ON b.id = p.bill_id"
            " JOIN messages m ON m.id = b.message_id"
            " WHERE p.vedtak_id IS NULL AND p.payee IS NOT NULL AND m.processed_at <= ?"
            " ORDER BY p.payee, p.id",
            (cutoff,),
        ).fetchall()
        remarks: dict[int, list[str]] = {}
        for chunk in _chunks(sorted({r[7] for r in rows})):
            for bill_id, text in db.execute(
                f"SELECT bill_id, text FROM remarks WHERE bill_id IN ({','.join('?' * len(chunk))})"
                " ORDER BY rowid",
                chunk,
            ):
                remarks.setdefault(bill_id, []).append(text)
        return [
            OpenPayment(
                id=r[0],
                payee=r[1],
                claimed=Decimal(r[2]),
                approved=Decimal(r[3]),
                regning_nr=r[4],
                verdict=r[5],
                transaction_type=r[6],
                remarks=tuple(remarks.get(r[7], ())),
                kind=r[8],
            )
            for r in rows
        ]

    def undelivered(self) -> list[tuple[int, tuple[tuple[str, bytes], ...]]]:
        """Vedtak recorded but not yet written to the outbox: (id, ((name, bytes), ...))."""
        out = []
        for (vedtak,) in self._db.execute(
            "SELECT id FROM vedtak WHERE delivered_at IS NULL ORDER BY id"
        ).fetchall():
            files_ = self._db.execute(
                "SELECT file_name, content FROM vedtak_outputs WHERE vedtak_id = ? ORDER BY rowid",
                (vedtak,),
            ).fetchall()
            out.append((vedtak, tuple((name, bytes(content)) for name, content in files_)))
        return out

    def mark_delivered(self, vedtak_id: int, now: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE vedtak SET delivered_at = ? WHERE id = ?", (now, vedtak_id))

    def settled_since(self, cutoff: str) -> bool:
        """Has a run covered everything up to `cutoff` (a make-up would find nothing)?"""
        row = self._db.execute(
            "SELECT 1 FROM settlements WHERE cutoff >= ? LIMIT 1", (cutoff,)
        ).fetchone()
        return row is not None

    def last_settlement(self) -> dict | None:
        """The newest run with its totals per payee (for `status`)."""
        row = self._db.execute(
            "SELECT id, run_key, kind, cutoff, started_at FROM settlements ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        run, key, kind, cutoff, started = row
        payees = self._db.execute(
            "SELECT payee, oppgjors_nr, bills, claimed, approved, delivered_at FROM vedtak"
            " WHERE settlement_id = ? ORDER BY payee",
            (run,),
        ).fetchall()
        return {
            "id": run,
            "key": key,
            "kind": kind,
            "cutoff": cutoff,
            "started_at": started,
            "vedtak": [
                {
                    "payee": payee,
                    "oppgjors_nr": nr,
                    "bills": bills,
                    "claimed": Decimal(claimed),
                    "approved": Decimal(approved),
                    "delivered": delivered is not None,
                }
                for payee, nr, bills, claimed, approved, delivered in payees
            ],
        }

    def bill_totals(self, message_id: int) -> tuple[int, Decimal, Decimal]:
        """A message's bills: how many, kroner claimed and approved (for the log)."""
        rows = self._db.execute(
            "SELECT claimed, approved FROM bills WHERE message_id = ?", (message_id,)
        ).fetchall()
        zero = Decimal("0")
        return (
            len(rows),
            sum((Decimal(c) for c, _ in rows), zero),
            sum((Decimal(a) for _, a in rows), zero),
        )

    def open_by_payee(self) -> list[PayeeTotal]:
        """Open payments per payee (NULL: nobody to address), whatever their cut-off:
        what the next batch would settle, and what a batch leaves held."""
        rows = self._db.execute(
            "SELECT p.payee, count(*), group_concat(p.approved, ' '), min(m.processed_at)"
            " FROM payments p JOIN bills b ON b.id = p.bill_id"
            " JOIN messages m ON m.id = b.message_id"
            " WHERE p.vedtak_id IS NULL GROUP BY p.payee ORDER BY p.payee"
        ).fetchall()
        return [
            PayeeTotal(payee, n, sum((Decimal(a) for a in amounts.split()), Decimal("0")), since)
            for payee, n, amounts, since in rows
        ]

    def repoint(
        self, from_payee: str, to_payee: str, *, by: str, now: str, reason: str | None = None
    ) -> tuple[int, Decimal]:
        """Move every open payment of `from_payee` to `to_payee`, with an audit row, in
        one transaction. Settled payments are never touched (a vedtak is final).
        Returns how many payments moved and their approved total."""
        with self._tx() as db:
            amounts = [
                Decimal(a)
                for (a,) in db.execute(
                    "SELECT approved FROM payments WHERE payee = ? AND vedtak_id IS NULL",
                    (from_payee,),
                )
            ]
            if not amounts:
                return 0, Decimal("0")
            total = sum(amounts, Decimal("0"))
            db.execute(
                "UPDATE payments SET payee = ? WHERE payee = ? AND vedtak_id IS NULL",
                (to_payee, from_payee),
            )
            db.execute(
                "INSERT INTO payee_changes (changed_at, changed_by, from_payee, to_payee,"
                " payments, approved, reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (now, by, from_payee, to_payee, len(amounts), str(total), reason),
            )
        return len(amounts), total

    def payee_changes(self) -> list[tuple]:
        """The audit trail of repoints: (at, by, from, to, payments, approved, reason)."""
        return self._db.execute(
            "SELECT changed_at, changed_by, from_payee, to_payee, payments, approved, reason"
            " FROM payee_changes ORDER BY id"
        ).fetchall()

    def undelivered_outputs(self, work_names: list[str]) -> Undelivered:
        """Of these files still in work/, the ones whose answer is recorded (so only its
        delivery is missing), and the vedtak not yet written to the outbox."""
        found: list[tuple[str, str]] = []
        for chunk in _chunks(work_names):
            found += self._db.execute(
                "SELECT state, finished_at FROM receipts WHERE state != 'claimed'"
                f" AND work_name IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
        n, since = self._db.execute(
            "SELECT count(*), min(s.started_at) FROM vedtak v"
            " JOIN settlements s ON s.id = v.settlement_id WHERE v.delivered_at IS NULL"
        ).fetchone()
        return Undelivered(
            len(found),
            min((at for _, at in found), default=None),
            n,
            since,
            sum(1 for state, _ in found if state == "answered"),
        )

    def backup(self, dest: Path) -> None:
        """A consistent copy of the ledger while it is in use (SQLite's online backup)."""
        target = sqlite3.connect(dest)
        try:
            self._db.backup(target)
        finally:
            target.close()

    # ------------------------------------------------------------------ explain

    def explain(self, ident: str) -> list[dict]:
        """Every processing of a message, found by ebXML MessageId or MsgHead MsgId:
        its outcome, problems, bills with lines and remarks, and the rule trace."""
        out = []
        rows = self._db.execute(
            "SELECT id, ebxml_message_id, msghead_id, sender_her, state, apprec_status,"
            " problems, trace, processed_at, rules_run FROM messages"
            " WHERE ebxml_message_id = ? OR msghead_id = ? ORDER BY id",
            (ident, ident),
        ).fetchall()
        for mid, ebxml_id, msghead_id, sender, state, status, problems, trace, at, run in rows:
            bills = []
            for (
                bill_id,
                regning_nr,
                uuid,
                ttype,
                verdict,
                claimed,
                approved,
                payee,
            ) in self._db.execute(
                "SELECT id, regning_nr, uuid, transaction_type, verdict, claimed, approved, payee"
                " FROM bills WHERE message_id = ? ORDER BY id",
                (mid,),
            ).fetchall():
                lines = self._db.execute(
                    "SELECT line, code, count, category, claimed, approved, verdict"
                    " FROM bill_lines WHERE bill_id = ? ORDER BY line",
                    (bill_id,),
                ).fetchall()
                remarks = self._db.execute(
                    "SELECT rule_id, number, text, line FROM remarks WHERE bill_id = ?",
                    (bill_id,),
                ).fetchall()
                copays = self._bill_egenandeler(bill_id)
                bills.append(
                    {
                        "regning_nr": regning_nr,
                        "uuid": uuid,
                        "transaction_type": ttype,
                        "verdict": verdict,
                        "claimed": claimed,
                        "approved": approved,
                        "payee": payee,
                        "lines": lines,
                        "remarks": remarks,
                        "egenandeler": copays,
                    }
                )
            out.append(
                {
                    "ebxml_message_id": ebxml_id,
                    "msghead_id": msghead_id,
                    "sender_her": sender,
                    "state": state,
                    "apprec_status": status,
                    "problems": json.loads(problems),
                    "trace": json.loads(trace),
                    "rules_run": run,
                    "processed_at": at,
                    "bills": bills,
                }
            )
        return out

    def _bill_egenandeler(self, bill_id: int) -> list[tuple]:
        try:
            return self._db.execute(
                "SELECT year, amount, status, active FROM egenandeler WHERE bill_id = ?"
                " ORDER BY id",
                (bill_id,),
            ).fetchall()
        except sqlite3.OperationalError:  # a read-only look at a ledger made before #21
            return []

    # ------------------------------------------------------------------ status

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for state, n in self._db.execute("SELECT state, count(*) FROM receipts GROUP BY state"):
            out[state] = n
        (out["duplicates"],) = self._db.execute(
            "SELECT count(*) FROM receipts WHERE duplicate = 1"
        ).fetchone()
        (out["messages"],) = self._db.execute("SELECT count(*) FROM messages").fetchone()
        return out

    def oldest_unanswered(self) -> str | None:
        row = self._db.execute(
            "SELECT min(received_at) FROM receipts WHERE state = 'claimed'"
        ).fetchone()
        return row[0]


def _egenandeler(bill_id: int, claim: Claim, bill, outcome, patient: str | None) -> list[tuple]:
    """The egenandel lines of a bill as the register records them (EG-03): approved
    lines of a new bill or a correction, per patient pseudonym and year."""
    status = EGENANDEL_STATUS.get(bill.transaction_type)
    day = bill.service_date
    if status is None or day is None or outcome.verdict == "rejected":
        return []
    return [
        (
            bill_id,
            claim.institution_id,
            outcome.uuid,
            outcome.regning_nr,
            patient,
            day.year,
            str(ld.claimed),
            status,
        )
        for ld in outcome.lines
        if ld.category in ("egenandel", "egenandel-registrert") and ld.verdict == "approved"
    ]
