"""The ledger's two backends and its versioned schema (issue #18, item 1).

- Migrations: the shipped Alembic scripts end at the revision the code expects; a new
  SQLite ledger made without Alembic has the very schema Alembic makes; both dialects
  have the same tables and columns.
- An older schema is refused by `run`, naming `kravmottak db upgrade`; the upgrade
  brings it to the head.
- `db copy --to postgresql://`: the same rows and the same money sums on both sides,
  and the copy goes on working as the ledger (ids continue); a non-empty target is
  refused.
- Several workers on one PostgreSQL ledger: two `kravmottak process` at once, racing
  on one bill uuid and on one patient's day: never two payments, never a limit exceeded.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import signal
import sqlite3
import threading
from contextlib import closing
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from daemon import cli
from daemon.ledger import migrate
from daemon.ledger.postgres import PostgresLedger, translate
from daemon.ledger.sqlite import Conflict, SqliteLedger
from daemon.tools import dbcopy
from tests.claims import C, msghead
from tests.conftest import make_sandbox, wrap_demo
from tests.test_crash import Daemon, set_intake, wait_for
from tests.test_judgement_order import (
    CT_CHEST,
    CT_HEAD,
    CT_KNEE,
    CTA_ARM,
    INSTITUTIONS,
    patient,
    rad,
)
from tests.test_judgement_order import bill as rad_bill
from tests.test_settlement import INSTITUTIONS as SETTLEMENT_INSTITUTIONS
from tests.test_settlement import a_day

ROOT = Path(__file__).resolve().parents[1]


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _sqlite_schema(path: Path) -> list[tuple]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()


# ---------------------------------------------------------------- migrations, SQLite


def test_the_shipped_scripts_end_at_the_revision_the_code_expects():
    assert migrate.script_head() == migrate.HEAD


def test_a_new_sqlite_ledger_has_the_schema_alembic_makes(tmp_path):
    """The fast path (no Alembic) and Alembic's 0001 make the same file."""
    from alembic import command

    SqliteLedger(tmp_path / "fast.sqlite3").close()
    command.upgrade(migrate._alembic(f"sqlite:///{tmp_path / 'alembic.sqlite3'}"), "head")
    fast, made = (
        _sqlite_schema(tmp_path / "fast.sqlite3"),
        _sqlite_schema(tmp_path / "alembic.sqlite3"),
    )
    assert fast == made
    assert {"workers", "holds", "alembic_version"} <= {name for _, name, _, _ in fast}
    assert migrate.current(f"sqlite:///{tmp_path / 'alembic.sqlite3'}") == migrate.HEAD


def test_run_refuses_an_older_sqlite_ledger_naming_the_upgrade(sandbox):
    with sandbox.db() as db:  # as a ledger made before versioned migrations looks
        db.execute("DROP TABLE alembic_version")
    code, _out, err = _cli("--config", str(sandbox.config_path), "run")
    assert code == 2
    assert "made before versioned migrations" in err and "kravmottak db upgrade" in err
    code, out, _ = _cli("--config", str(sandbox.config_path), "db", "current")
    assert code == 1 and "made before versioned migrations" in out
    code, out, _ = _cli("--config", str(sandbox.config_path), "db", "upgrade")
    assert code == 0 and f"upgraded from legacy to revision {migrate.HEAD} (head)" in out
    assert _cli("--config", str(sandbox.config_path), "db", "current")[0] == 0


def test_a_ledger_at_revision_0001_is_refused_then_upgraded_with_the_egenandel_register(sandbox):
    """Revision 0002 (#21) on a ledger made by 0001: run refuses it naming the command;
    `db upgrade` adds `egenandeler` and `payments.kind` (existing payments: 'refusjon')."""
    with sandbox.db() as db:  # as 0001 left it
        db.execute("DROP TABLE egenandeler")
        db.execute("ALTER TABLE payments DROP COLUMN kind")
        db.execute("UPDATE alembic_version SET version_num = '0001'")
    code, _out, err = _cli("--config", str(sandbox.config_path), "run")
    assert code == 2 and "at revision 0001" in err and "kravmottak db upgrade" in err
    code, out, _ = _cli("--config", str(sandbox.config_path), "db", "upgrade")
    assert code == 0 and "upgraded from 0001 to revision 0002 (head)" in out, out
    with sandbox.db() as db:
        assert db.execute("SELECT count(*) FROM egenandeler").fetchone() == (0,)
        columns = {row[1]: row[4] for row in db.execute("PRAGMA table_info(payments)")}
        assert columns["kind"] == "'refusjon'"


def test_the_ledger_url_is_read_and_checked(tmp_path):
    from daemon import config

    cfg = tmp_path / "kravmottak.toml"
    cfg.write_text("")
    assert config.load(cfg).ledger == f"sqlite:///{tmp_path / 'var' / 'ledger.sqlite3'}"
    cfg.write_text('[ledger]\nurl = "sqlite:///db/other.sqlite3"\n')
    settings = config.load(cfg)
    assert settings.paths.ledger == tmp_path / "db" / "other.sqlite3"
    assert settings.ledger == f"sqlite:///{tmp_path / 'db' / 'other.sqlite3'}"
    cfg.write_text('[ledger]\nurl = "postgresql:///kravmottak?host=/run/postgresql"\n')
    assert config.load(cfg).ledger == "postgresql:///kravmottak?host=/run/postgresql"
    cfg.write_text('[ledger]\nurl = "mysql://x/y"\n')
    with pytest.raises(config.ConfigError, match=r"\[ledger\] url"):
        config.load(cfg)


def test_the_sqlite_dialect_is_translated_once_per_statement():
    assert translate("INSERT OR IGNORE INTO receipts (a) VALUES (?)") == (
        "INSERT INTO receipts (a) VALUES (%s) ON CONFLICT DO NOTHING RETURNING id",
        True,
    )
    assert translate("INSERT INTO remarks (a) VALUES (?)") == (
        "INSERT INTO remarks (a) VALUES (%s)",
        False,
    )
    assert translate("SELECT group_concat(a, ' ') FROM t") == (
        "SELECT string_agg(a, ' ') FROM t",
        False,
    )
    assert migrate.redact("postgresql://kravmottak:s3cret@db/kravmottak") == (
        "postgresql://kravmottak:***@db/kravmottak"
    )


# ---------------------------------------------------------------- migrations, PostgreSQL


def test_both_dialects_have_the_same_tables_and_columns(pg_cluster, tmp_path):
    SqliteLedger(tmp_path / "l.sqlite3").close()
    with closing(sqlite3.connect(tmp_path / "l.sqlite3")) as db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        lite = {t: {r[1] for r in db.execute(f"PRAGMA table_info({t})")} for t in tables}
    with psycopg.connect(pg_cluster.new_database()) as db:
        rows = db.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public'"
        ).fetchall()
    pg: dict[str, set[str]] = {}
    for table, column in rows:
        pg.setdefault(table, set()).add(column)
    for table in dbcopy.IDENTITY:
        if dbcopy.IDENTITY[table] == "rowid":
            pg[table].discard("rowid")  # SQLite's is implicit
    assert pg == lite


def test_db_upgrade_makes_an_empty_database_a_ledger_and_run_refuses_an_older_one(
    pg_cluster, tmp_path
):
    url = pg_cluster.empty_database()
    box = make_sandbox(tmp_path / "sandbox", ledger_url=url)
    cfg = str(box.config_path)
    code, out, _ = _cli("--config", cfg, "db", "current")
    assert code == 1 and "empty" in out
    code, _out, err = _cli("--config", cfg, "run")
    assert code == 2 and "kravmottak db upgrade" in err
    code, out, _ = _cli("--config", cfg, "db", "upgrade")
    assert code == 0 and f"upgraded from empty to revision {migrate.HEAD} (head)" in out
    assert _cli("--config", cfg, "db", "current")[:2] == (
        0,
        f"ledger {url}: revision {migrate.HEAD} (head)\n",
    )
    assert _cli("--config", cfg, "db", "upgrade")[1].endswith("nothing to do\n")
    with psycopg.connect(url, autocommit=True) as db:  # as an older revision would look
        db.execute("UPDATE alembic_version SET version_num = '0000'")
    code, _out, err = _cli("--config", cfg, "run")
    assert code == 2 and "at revision 0000" in err and "kravmottak db upgrade" in err


def test_backup_of_a_postgresql_ledger_is_refused_naming_the_servers_tools(pg_cluster, tmp_path):
    box = make_sandbox(tmp_path / "sandbox", ledger_url=pg_cluster.new_database())
    code, _out, err = _cli("--config", str(box.config_path), "backup", str(tmp_path / "b"))
    assert code == 2 and "pg_dump" in err
    assert not (tmp_path / "b").exists()


def test_the_settlement_lock_is_held_by_one_worker_at_a_time(pg_cluster, tmp_path):
    url = pg_cluster.new_database()
    first, second = PostgresLedger(url), PostgresLedger(url)
    try:
        with first.settlement_lock() as mine:
            assert mine is True
            with second.settlement_lock() as theirs:
                assert theirs is False
        with second.settlement_lock() as theirs:
            assert theirs is True
    finally:
        first.close()
        second.close()
    with SqliteLedger(tmp_path / "l.sqlite3").settlement_lock() as alone:
        assert alone is True


def test_a_second_claim_of_the_same_file_is_ignored_on_both_backends(pg_cluster, tmp_path):
    """`INSERT OR IGNORE` (ON CONFLICT DO NOTHING on PostgreSQL): the first receipt stays."""
    for ledger in (SqliteLedger(tmp_path / "l.sqlite3"), PostgresLedger(pg_cluster.new_database())):
        try:
            ledger.claim("a.msg", "first.msg", "2026-11-23T12:00:00Z", "2026-11-23T12:00:00Z")
            ledger.claim("a.msg", "second.msg", "2026-11-23T12:00:01Z", "2026-11-23T12:00:01Z")
            assert ledger.receipt("a.msg").original_name == "first.msg"
            assert ledger.counts()["claimed"] == 1
        finally:
            ledger.close()


def test_a_deadlock_between_two_workers_is_a_conflict_that_leaves_the_group_usable(
    pg_cluster,
):
    """Two groups each hold one patient's day and ask for the other's: the server
    breaks the cycle in one of them, which gets the ledger's Conflict with its group
    still usable; once that group ends the other goes on."""
    url = pg_cluster.new_database()
    a, b = PostgresLedger(url), PostgresLedger(url)
    results: dict[str, object] = {}

    def ask(ledger: PostgresLedger, key: str, name: str) -> None:
        try:
            ledger._hold([key])
            results[name] = "held"
        except Conflict as exc:
            results[name] = exc

    for ledger in (a, b):  # a failing test must not wait for ever
        ledger._db.conn.execute("SET lock_timeout = '20s'")
    try:
        a.begin_group()
        b.begin_group()
        a._hold(["day:p1:2026-10-05"])
        b._hold(["day:p2:2026-10-05"])
        first = threading.Thread(target=ask, args=(a, "day:p2:2026-10-05", "a"))
        first.start()
        wait_for(lambda: _waiting_for_advisory(url) == 1, 30, "the first worker to wait", 0.01)
        second = threading.Thread(target=ask, args=(b, "day:p1:2026-10-05", "b"))
        second.start()  # closes the cycle: the server makes one side the victim
        wait_for(lambda: len(results) == 1, 60, "the server to break the deadlock", 0.01)
        ((victim_name, error),) = results.items()
        assert isinstance(error, Conflict), error
        victim, other = (a, b) if victim_name == "a" else (b, a)
        assert victim.day_version("p3", "2026-10-05") == 0  # its group still answers
        victim.rollback_group()  # it lets its locks go: the other gets what it asked for
        for thread in (first, second):
            thread.join(timeout=30)
        assert results[{"a": "b", "b": "a"}[victim_name]] == "held"
        other.commit_group()
    finally:
        for ledger in (a, b):
            ledger.rollback_group()
            ledger.close()


def _waiting_for_advisory(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as db:
        return db.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchone()[0]


def test_a_broken_connection_is_replaced_at_the_next_transaction(pg_cluster):
    url = pg_cluster.new_database()
    ledger = PostgresLedger(url)
    try:
        ledger.claim("a.msg", "a.msg", "2026-11-23T12:00:00Z", "2026-11-23T12:00:00Z")
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(psycopg.OperationalError):
            ledger.receipt("a.msg")  # the server closed it under us
        ledger.claim("b.msg", "b.msg", "2026-11-23T12:00:00Z", "2026-11-23T12:00:00Z")
        assert ledger.counts()["claimed"] == 2
    finally:
        ledger.close()


# ---------------------------------------------------------------- db copy


def test_db_copy_moves_every_row_with_the_same_money_and_goes_on_working(pg_cluster, tmp_path):
    box = make_sandbox(tmp_path / "sandbox", SETTLEMENT_INSTITUTIONS)
    for i, claim in enumerate(a_day()):
        box.drop(wrap_demo(msghead(claim), message_id=f"copy-{i}"))
    box.process()
    cfg = str(box.config_path)
    assert _cli("--config", cfg, "settle")[0] == 0
    target = pg_cluster.empty_database()
    code, out, err = _cli("--config", cfg, "db", "copy", "--to", target)
    assert code == 0, err
    assert "counts and money sums verified" in out
    with closing(sqlite3.connect(box.paths.ledger)) as lite, psycopg.connect(target) as pg:
        for table in dbcopy.TABLES:
            assert dbcopy.figures(lite, table) == dbcopy.figures(pg, table), table
        (bills,) = pg.execute("SELECT count(*) FROM bills").fetchone()
        (paid,) = pg.execute("SELECT approved FROM vedtak ORDER BY id LIMIT 1").fetchone()
    assert bills == sum(len(c.bills) for c in a_day()) and Decimal(paid) > 0
    # into a ledger with rows: refused, nothing written
    code, _out, err = _cli("--config", cfg, "db", "copy", "--to", target)
    assert code == 2 and "not empty" in err
    # the copy is the ledger now: new messages get new ids after the copied ones
    box.config_path.write_text(box.config_path.read_text() + f'\n[ledger]\nurl = "{target}"\n')
    for i, claim in enumerate(a_day()):
        box.drop(wrap_demo(msghead(claim), message_id=f"copy2-{i}"))
    box.process()
    assert list(box.paths.work.iterdir()) == []
    with psycopg.connect(target) as db:
        (messages,) = db.execute("SELECT count(*) FROM messages").fetchone()
        (bills_after,) = db.execute("SELECT count(*) FROM bills").fetchone()
    assert messages == 2 * len(a_day()) and bills_after == 2 * bills


# ---------------------------------------------------------------- two workers racing


def _two_workers(pg_cluster, tmp_path: Path, messages: list[bytes]) -> str:
    """Two daemons (each with its own folders) on one PostgreSQL ledger: both started
    and ready, then the messages dropped into their inboxes at once, dealt out in
    turn, so both judge the same patients and bills at the same time. Returns the URL
    once every message has its one AppRec."""
    url = pg_cluster.new_database()
    boxes = [make_sandbox(tmp_path / f"worker{n}", INSTITUTIONS, ledger_url=url) for n in (1, 2)]
    # one office: every worker pseudonymises patients with the same secret
    shutil.copy(boxes[0].paths.patient_secret, boxes[1].paths.patient_secret)
    for b in boxes:
        set_intake(b, poll_interval_seconds=0.05, stable_seconds=0)
    daemons = [Daemon(b, tmp_path, n) for n, b in enumerate(boxes)]
    try:
        for d in daemons:
            wait_for(lambda d=d: d.logged("started"), 60, "the worker to start")
        for i, raw in enumerate(messages):
            boxes[i % 2].drop(raw)
        answered = lambda: sum(len(b.outbox("apprec")) for b in boxes)  # noqa: E731
        wait_for(lambda: answered() >= len(messages), 300, "every message's AppRec", 0.05)
        for d in daemons:
            d.assert_alive()
    finally:
        for d in daemons:
            if d.proc.poll() is None:
                d.proc.send_signal(signal.SIGTERM)
                d.proc.wait(timeout=60)
    assert answered() == len(messages)
    for b in boxes:  # nothing left behind
        assert list(b.paths.work.iterdir()) == [] and list(b.paths.inbox.iterdir()) == []
    return url


def test_two_workers_racing_on_one_bill_uuid_pay_it_once(pg_cluster, tmp_path):
    fnr = patient()
    same = rad_bill(rad(CT_HEAD), at="09:00", fnr=fnr)
    messages = [
        wrap_demo(msghead(C((same,), msg_id=f"race-uuid-{i}")), message_id=f"race-uuid-{i}")
        for i in range(16)
    ]
    url = _two_workers(pg_cluster, tmp_path, messages)
    with psycopg.connect(url) as db:
        paid = db.execute(
            "SELECT count(*) FROM bills WHERE uuid = %s AND verdict IN ('approved', 'reduced')",
            (same.uuid,),
        ).fetchone()[0]
        payments = db.execute(
            "SELECT count(*) FROM payments p JOIN bills b ON b.id = p.bill_id"
            " WHERE b.uuid = %s AND p.approved NOT IN ('0', '0.00')",
            (same.uuid,),
        ).fetchone()[0]
        (answered,) = db.execute("SELECT count(*) FROM messages").fetchone()
    assert answered == 16
    assert paid == 1 and payments == 1


def test_two_workers_racing_on_patients_days_never_exceed_the_limit(pg_cluster, tmp_path):
    """RULES.md RAD-06: at most two CT or CTA exams per patient per day. Four of them
    for each of six patients on one day, each in its own message, dealt to two
    workers: exactly two paid per patient, whatever the interleaving."""
    people = [patient() for _ in range(6)]
    codes = (CT_HEAD, CT_CHEST, CT_KNEE, CTA_ARM)
    bills = [
        rad_bill(rad(code), at=f"{8 + i:02d}:00", fnr=fnr)
        for fnr in people
        for i, code in enumerate(codes)
    ]
    messages = [
        wrap_demo(msghead(C((b,), msg_id=f"race-day-{i}")), message_id=f"race-day-{i}")
        for i, b in enumerate(bills)
    ]
    url = _two_workers(pg_cluster, tmp_path, messages)
    with psycopg.connect(url) as db:
        approved = db.execute(
            "SELECT patient_key, count(*) FROM bills WHERE verdict IN ('approved', 'reduced')"
            " GROUP BY patient_key"
        ).fetchall()
        exams = db.execute(
            "SELECT patient_key, day, count(*) FROM exams WHERE active = 1"
            " GROUP BY patient_key, day"
        ).fetchall()
        (answered,) = db.execute("SELECT count(*) FROM messages").fetchone()
    assert answered == len(bills)
    assert sorted(n for _, n in approved) == [2] * len(people)
    assert sorted(n for *_, n in exams) == [2] * len(people)
