"""Several workers on one inbox (daemon/service/workers.py): leases, holds, take-over,
fencing, and `status`'s WORKERS table.

The ledger contract runs on both backends. Workers sharing an inbox need PostgreSQL
(on SQLite the state directory lock admits one process): those tests start real
`kravmottak run` processes on a sandbox whose ledger is a throw-away PostgreSQL
database, and wait for conditions (never fixed sleeps).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon import files
from daemon.ledger.backends import open_ledger
from daemon.service.workers import stamp
from tests.conftest import Sandbox, make_sandbox, unique_claim, wrap_demo

BOTH_BACKENDS = True  # the ledger tests here on SQLite and on PostgreSQL (conftest.py)
LEASE = 2.0  # seconds: short, so the take-over and fencing tests wait little
BEAT = 0.4


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def sql(box: Sandbox, statement: str, params=()) -> list[tuple]:
    """One statement on the sandbox's ledger, committed, on a connection of its own."""
    db = box.db()
    try:
        cur = db.execute(statement, params)
        rows = [tuple(r) for r in cur.fetchall()] if statement.lstrip().startswith("SELECT") else []
        db.commit()
        return rows
    finally:
        db.close()


def at(seconds: float) -> str:
    return stamp(datetime.now(UTC) + timedelta(seconds=seconds))


# --------------------------------------------------------------------------- the ledger


def test_hold_is_decided_once_and_take_over_moves_holds_atomically(sandbox: Sandbox) -> None:
    ledger = open_ledger(sandbox.settings)
    try:
        ledger.register_worker("a", "host-a", 101, at(-10), at(-1))  # lease ran out
        ledger.register_worker("b", "host-b", 202, at(0), at(30))
        assert ledger.hold("w1--x.msg", "a", at(0))
        assert ledger.hold("w2--y.msg", "a", at(0))
        assert not ledger.hold("w1--x.msg", "b", at(0)), "a file held by a is not b's"
        assert ledger.hold("w1--x.msg", "a", at(0)), "holding one's own file again is fine"
        assert ledger.expired_workers(at(0)) == ["a"]
        # b is live: nobody may take its files
        assert ledger.hold("w3--z.msg", "b", at(0))
        assert ledger.take_over("b", "a", at(0)) == []
        moved = ledger.take_over("a", "b", at(0))
        assert moved == ["w1--x.msg", "w2--y.msg"]
        assert ledger.take_over("a", "c", at(0)) == [], "taken once, not twice"
        assert ledger.holds() == {"w1--x.msg": "b", "w2--y.msg": "b", "w3--z.msg": "b"}
        # a, paused past its lease, comes back: its heartbeat is refused (fenced)
        assert not ledger.heartbeat("a", "host-a", 101, at(0), at(30))
        assert ledger.heartbeat("b", "host-b", 202, at(0), at(30))
        assert not ledger.heartbeat("b", "host-b", 999, at(0), at(30)), "another process"
        ledger.release("w1--x.msg")
        rows = {w["worker_id"]: w for w in ledger.workers()}
        assert (rows["a"]["state"], rows["a"]["held"]) == ("taken", 0)
        assert (rows["b"]["state"], rows["b"]["held"]) == ("running", 2)
        ledger.retire_worker("b", 202, at(0))
        assert ledger.take_over("b", "c", at(1)) == ["w2--y.msg", "w3--z.msg"], (
            "a stopped worker's leftover files go to a live one"
        )
    finally:
        ledger.close()


def test_heartbeat_after_the_lease_ran_out_is_refused(sandbox: Sandbox) -> None:
    ledger = open_ledger(sandbox.settings)
    try:
        ledger.register_worker("a", "h", 1, at(-5), at(-0.5))
        assert not ledger.heartbeat("a", "h", 1, at(0), at(30))
        ledger.register_worker("a", "h", 2, at(0), at(30))  # started again: running
        assert ledger.heartbeat("a", "h", 2, at(0), at(30))
    finally:
        ledger.close()


# --------------------------------------------------------------------------- processes


@pytest.fixture
def shared(tmp_path: Path, request: pytest.FixtureRequest) -> Sandbox:
    """A sandbox on a PostgreSQL ledger, short leases, fast polls."""
    url = request.getfixturevalue("pg_cluster").new_database()
    box = make_sandbox(tmp_path / "sandbox", ledger_url=url)
    text = box.config_path.read_text(encoding="utf-8")
    text = text.replace("poll_interval_seconds = 1.0", "poll_interval_seconds = 0.1")
    text += f"\n[worker]\nlease_seconds = {LEASE}\nheartbeat_seconds = {BEAT}\n"
    box.config_path.write_text(text, encoding="utf-8")
    return box


class Worker:
    """One `kravmottak run --worker-id ID` process, its logs in a file."""

    def __init__(self, box: Sandbox, worker_id: str, logs: Path) -> None:
        self.id = worker_id
        self.stderr = logs / f"{worker_id}-{time.monotonic_ns()}.err"
        with open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daemon", "--config", str(box.config_path), "run",
                 "--worker-id", worker_id],
                stdout=subprocess.DEVNULL, stderr=err, cwd=box.root,
            )  # fmt: skip

    def events(self) -> list[dict]:
        lines = self.stderr.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def logged(self, event: str) -> bool:
        return any(e["event"] == event for e in self.events())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=60)


@pytest.fixture
def workers(tmp_path: Path):
    started: list[Worker] = []
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(box: Sandbox, worker_id: str) -> Worker:
        w = Worker(box, worker_id, logs)
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            os.kill(w.proc.pid, signal.SIGCONT)
            w.kill()


def drop_many(box: Sandbox, n: int) -> dict[str, str]:
    """n distinct claims; original file name → its MessageId."""
    import uuid

    dropped = {}
    for _ in range(n):
        message_id = str(uuid.uuid4())
        dropped[box.drop(wrap_demo(unique_claim(), message_id=message_id)).name] = message_id
    return dropped


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def answered_once(box: Sandbox, dropped: dict[str, str]) -> None:
    """Every dropped file archived once, one AppRec per message, nothing left over."""
    paths = box.paths
    assert entries(paths.inbox) == [] and entries(paths.work) == []
    originals = [files.original_name(p.name) for p in paths.archive.rglob("*") if p.is_file()]
    assert Counter(originals) == Counter(dropped.keys())
    apprecs = [p for p in paths.outbox.iterdir() if p.name.startswith("apprec-")]
    assert len(apprecs) == len(dropped)
    states = sql(box, "SELECT state, count(*) FROM receipts GROUP BY state")
    ((held,),) = sql(box, "SELECT count(*) FROM holds")
    assert dict(states) == {"answered": len(dropped)}
    assert held == 0, "a hold outlived its file"


def outcome_workers(*ws: Worker) -> Counter:
    """MessageId → how many outcome lines (across the workers' logs) name it."""
    seen: Counter = Counter()
    for w in ws:
        for e in w.events():
            if e["event"] in ("answered", "quarantined", "duplicate"):
                assert e.get("worker") == w.id, e
                seen[e["message_id"]] += 1
    return seen


def test_two_workers_share_an_inbox_and_answer_every_file_once(shared, workers) -> None:
    dropped = drop_many(shared, 40)
    a, b = workers(shared, "a"), workers(shared, "b")
    wait_for(lambda: not entries(shared.paths.inbox) and not entries(shared.paths.work), 180,
             "inbox and work/ to empty")  # fmt: skip
    wait_for(lambda: len(outcome_workers(a, b)) == 40, 60, "every outcome logged")
    # status lists both, live, while they run
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "--config", str(shared.config_path), "status", "--json"],
        capture_output=True, text=True, timeout=120, cwd=shared.root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    listed = {w["id"]: w for w in json.loads(done.stdout)["workers"]}
    assert set(listed) == {"a", "b"}
    assert {w["lease"] for w in listed.values()} == {"live"}
    assert {w["pid"] for w in listed.values()} == {a.proc.pid, b.proc.pid}
    table = subprocess.run(
        [sys.executable, "-m", "daemon", "--config", str(shared.config_path), "status"],
        capture_output=True, text=True, timeout=120, cwd=shared.root,
    ).stdout  # fmt: skip
    assert "WORKERS" in table and str(a.proc.pid) in table
    assert a.stop() == 0 and b.stop() == 0
    seen = outcome_workers(a, b)
    assert set(seen.values()) == {1}, "a message answered by both workers"
    assert set(seen) == set(dropped.values())
    answered_once(shared, dropped)
    states = dict(sql(shared, "SELECT worker_id, state FROM workers"))
    assert states == {"a": "stopped", "b": "stopped"}


def test_a_killed_workers_files_are_taken_over_and_answered_once(shared, workers) -> None:
    dropped = drop_many(shared, 30)
    a = workers(shared, "a")

    def a_holds_files() -> bool:
        return sql(shared, "SELECT count(*) FROM holds WHERE worker_id = 'a'")[0][0] > 0

    wait_for(a_holds_files, 120, "worker a to hold files")
    a.kill()
    held = {r[0] for r in sql(shared, "SELECT work_name FROM holds WHERE worker_id = 'a'")}
    in_work = set(entries(shared.paths.work))
    b = workers(shared, "b")
    wait_for(lambda: not entries(shared.paths.inbox) and not entries(shared.paths.work), 180,
             "inbox and work/ to empty")  # fmt: skip
    assert b.stop() == 0
    assert held & in_work, "a was killed holding no file in work/"
    assert b.logged("worker_taken_over")  # a's files went to b, not left behind
    answered_once(shared, dropped)


def test_a_live_peers_file_is_left_alone_until_its_lease_runs_out(shared, workers) -> None:
    """A worker on another host holds a file in work/: while its lease lasts nobody
    touches the file; once it has run out, a live worker takes it over and answers it."""
    (name,) = drop_many(shared, 1)
    candidate = next(c for c in files.scan(shared.paths.inbox, shared.settings.intake)[0])
    work_path = files.claim(candidate, shared.paths.work, datetime.now(UTC))
    sql(
        shared,
        "INSERT INTO workers (worker_id, host, pid, started, heartbeat, lease_until, state)"
        " VALUES ('far', 'another-host', 1, ?, ?, ?, 'running')",
        (at(0), at(0), at(3600)),
    )
    sql(
        shared,
        "INSERT INTO holds (work_name, worker_id, since) VALUES (?, 'far', ?)",
        (work_path.name, at(0)),
    )
    b = workers(shared, "b")
    wait_for(lambda: b.logged("started"), 120, "b to start")

    # b has passed its recovery and several take-over rounds: the file is untouched
    def beats_after_start() -> bool:
        ((started, beat),) = sql(
            shared, "SELECT started, heartbeat FROM workers WHERE worker_id = 'b'"
        )
        return datetime.fromisoformat(beat) - datetime.fromisoformat(started) > timedelta(
            seconds=4 * BEAT
        )

    wait_for(beats_after_start, 60, "b to renew its lease a few times")
    before = sql(shared, "SELECT worker_id FROM holds")
    assert work_path.exists() and before == [("far",)]
    assert not b.logged("worker_taken_over")
    # the far worker stops beating: its lease runs out
    sql(shared, "UPDATE workers SET lease_until = ? WHERE worker_id = 'far'", (at(-1),))
    wait_for(lambda: not work_path.exists(), 60, "b to take the file over")
    wait_for(lambda: b.logged("answered"), 30, "the answer")
    assert b.stop() == 0
    assert b.logged("worker_taken_over")
    answered_once(shared, {name: ""})
    assert sql(shared, "SELECT state FROM workers WHERE worker_id = 'far'") == [("taken",)]


def test_a_worker_paused_past_its_lease_fences_itself(shared, workers) -> None:
    a = workers(shared, "a")
    wait_for(lambda: a.logged("started"), 120, "a to start")
    os.kill(a.proc.pid, signal.SIGSTOP)

    def lease_over() -> bool:
        ((until,),) = sql(shared, "SELECT lease_until FROM workers WHERE worker_id = 'a'")
        return until < stamp(datetime.now(UTC))

    wait_for(lease_over, 30, "a's lease to run out while it is stopped")
    os.kill(a.proc.pid, signal.SIGCONT)
    assert a.proc.wait(timeout=60) == 75, a.stderr.read_text()
    fenced = [e for e in a.events() if e["event"] == "worker_fenced"]
    assert fenced and fenced[0]["worker"] == "a" and fenced[0]["exit_status"] == 75


def test_workers_gone_for_a_day_are_forgotten(sandbox: Sandbox) -> None:
    ledger = open_ledger(sandbox.settings)
    try:
        ledger.register_worker("old", "h", 1, at(-3 * 86400), at(-3 * 86400 + 30))
        ledger.retire_worker("old", 1, at(-3 * 86400 + 10))
        ledger.register_worker("keeps-a-file", "h", 2, at(-3 * 86400), at(-3 * 86400 + 30))
        assert ledger.hold("w--kept.msg", "keeps-a-file", at(-3 * 86400))
        ledger.register_worker("recent", "h", 3, at(-60), at(-30))
        ledger.retire_worker("recent", 3, at(-50))
        ledger.register_worker("new", "h", 4, at(0), at(30))
        assert [w["worker_id"] for w in ledger.workers()] == ["keeps-a-file", "new", "recent"]
    finally:
        ledger.close()


def test_process_on_a_shared_ledger_leaves_a_live_workers_file_alone(shared) -> None:
    """`kravmottak process` joins as a worker: a file a live peer holds stays its."""
    drop_many(shared, 1)
    (mine,) = drop_many(shared, 1)
    candidate = next(c for c in files.scan(shared.paths.inbox, shared.settings.intake)[0]
                     if c.path.name != mine)  # fmt: skip
    theirs = files.claim(candidate, shared.paths.work, datetime.now(UTC))
    sql(shared, "INSERT INTO workers (worker_id, host, pid, started, heartbeat, lease_until,"
        " state) VALUES ('peer', 'another-host', 1, ?, ?, ?, 'running')",
        (at(0), at(0), at(3600)))  # fmt: skip
    sql(shared, "INSERT INTO holds (work_name, worker_id, since) VALUES (?, 'peer', ?)",
        (theirs.name, at(0)))  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "--config", str(shared.config_path), "process"],
        capture_output=True, text=True, timeout=300, cwd=shared.root,
    )  # fmt: skip
    assert "processed 1" in done.stdout, done.stdout + done.stderr
    assert entries(shared.paths.work) == [theirs.name]
    assert sql(shared, "SELECT worker_id FROM holds") == [("peer",)]
