"""Crash safety: a killed daemon loses no message and answers none twice.

The acceptance test starts the real daemon (`python -m daemon run`) on a sandbox with
200 messages in the inbox, SIGKILLs it again and again at seeded random points (during
start-up, during recovery of what the last run left in work/, in the middle of the
stream) and finally lets it finish. Everything is then checked from the files and the
ledger alone. The in-process tests below pin down each recovery path precisely.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree

from daemon import files
from daemon.schemas import Schemas
from daemon.service.intake import Intake
from daemon.transport import mime
from daemon.transport.ebms import NS
from tests.conftest import Sandbox, unique_claim, wrap_demo

BOTH_BACKENDS = True  # every sandbox here on SQLite and on PostgreSQL (conftest.py)
APPREC_NS = {"ar": "http://www.kith.no/xmlstds/apprec/2004-11-21"}

MESSAGES = 200
KILLS = 15
SEED = 20261102


# --------------------------------------------------------------------------- helpers


def distinct_message() -> tuple[str, bytes]:
    """A new schema-valid claim (own bills, patients, MsgId) with its own MessageId."""
    message_id = str(uuid.uuid4())
    return message_id, wrap_demo(unique_claim(), message_id=message_id)


def set_intake(sandbox: Sandbox, **values: float) -> None:
    """Rewrite keys of the sandbox config's [intake] table."""
    text = sandbox.config_path.read_text(encoding="utf-8")
    for key, value in values.items():
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert n == 1, f"{key} not found in {sandbox.config_path}"
    sandbox.config_path.write_text(text, encoding="utf-8")


def names(folder: Path) -> list[str]:
    """Every entry in `folder`, dotfiles included."""
    return sorted(p.name for p in folder.iterdir())


def archived(sandbox: Sandbox) -> list[Path]:
    return sorted(p for p in sandbox.paths.archive.rglob("*") if p.is_file())


def ref_to_message_id(data: bytes) -> str:
    multipart, problem = mime.parse(data)
    assert problem is None, problem
    soap = etree.fromstring(multipart.start.data)
    ref = soap.findtext("SOAP:Header/eb:MessageHeader/eb:MessageData/eb:RefToMessageId", None, NS)
    assert ref, "an answer without eb:RefToMessageId"
    return ref


def apprec_document(data: bytes) -> etree._Element:
    multipart, problem = mime.parse(data)
    assert problem is None, problem
    (part,) = multipart.attachments
    return etree.fromstring(part.data)


def rows(sandbox: Sandbox, sql: str) -> list[tuple]:
    db = sandbox.db()
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval=0.002) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Daemon:
    """One run of `python -m daemon run`, its stdout and stderr in files."""

    def __init__(self, sandbox: Sandbox, logs: Path, run: int) -> None:
        self.stdout = logs / f"run-{run:02d}.out"
        self.stderr = logs / f"run-{run:02d}.err"
        with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daemon", "--config", str(sandbox.config_path), "run"],
                stdout=out,
                stderr=err,
                cwd=sandbox.root,
            )

    def logged(self, *events: str) -> bool:
        text = self.stderr.read_bytes()  # the JSON logs
        return any(f'"event": "{event}"'.encode() in text for event in events)

    def assert_alive(self) -> None:
        code = self.proc.poll()
        assert code is None, f"daemon exited by itself ({code}): {self.stderr.read_text()}"

    def kill(self) -> None:
        self.assert_alive()
        self.proc.kill()
        assert self.proc.wait(timeout=30) == -signal.SIGKILL


# --------------------------------------------------------------------------- acceptance


@pytest.mark.slow
def test_sigkill_at_random_points_loses_nothing_and_answers_nothing_twice(sandbox, tmp_path):
    """200 messages, 15 SIGKILLs, one clean finish: each message has exactly one AppRec."""
    set_intake(sandbox, poll_interval_seconds=0.05)
    dropped: dict[str, bytes] = {}
    drop_names: set[str] = set()
    for _ in range(MESSAGES):
        message_id, raw = distinct_message()
        dropped[message_id] = raw
        drop_names.add(sandbox.drop(raw).name)
    assert len(dropped) == len({*dropped.values()}) == MESSAGES
    logs = tmp_path / "logs"
    logs.mkdir()
    rng = random.Random(SEED)
    kills: list[tuple[str, int, int, bool]] = []  # kind, archived, in work/, started?

    for run in range(KILLS):
        daemon = Daemon(sandbox, logs, run)
        kind = ("startup", "recovery", "midstream")[run % 3]
        if kind == "startup":  # importing, loading schemas, opening the ledger
            time.sleep(rng.uniform(0.02, 0.3))
        elif kind == "recovery":  # just as it picks up what the last run left in work/
            wait_for(lambda d=daemon: d.logged("recovering", "started"), 60, "start-up")
            time.sleep(rng.uniform(0, 0.01))
        else:  # after a random number of further messages, at a random point in the next
            before = len(archived(sandbox))
            target = min(before + rng.randint(3, 30), MESSAGES - 1)
            wait_for(lambda t=target: len(archived(sandbox)) >= t, 60, f"{target} archived")
            time.sleep(rng.uniform(0, 0.01))
        daemon.kill()
        started = daemon.logged("started")
        kills.append((kind, len(archived(sandbox)), len(names(sandbox.paths.work)), started))

    assert len(kills) == KILLS
    mid_stream = [k for k in kills if 0 < k[1] < MESSAGES]
    assert len(mid_stream) >= 3, kills

    final = Daemon(sandbox, logs, KILLS)
    inbox, work = sandbox.paths.inbox, sandbox.paths.work
    wait_for(lambda: final.logged("started"), 60, "the final start-up")
    wait_for(lambda: not names(inbox) and not names(work), 180, "inbox and work/ to empty")
    final.assert_alive()
    final.proc.send_signal(signal.SIGTERM)
    assert final.proc.wait(timeout=30) == 0, final.stderr.read_text()

    # ---- the folders
    paths = sandbox.paths
    assert names(paths.inbox) == []
    assert names(paths.work) == []
    assert names(paths.quarantine) == []
    outbox = names(paths.outbox)
    stray = [n for n in outbox if not re.fullmatch(r"(apprec|ack)-[0-9a-f-]{36}\.msg", n)]
    assert stray == [], f"stray files in the outbox: {stray}"
    originals = archived(sandbox)
    assert len(originals) == MESSAGES
    assert sorted(p.read_bytes() for p in originals) == sorted(dropped.values())
    assert {files.original_name(p.name) for p in originals} == drop_names

    # ---- exactly one AppRec and one Acknowledgment per message, nothing else
    schema = Schemas.load().apprec
    apprecs: dict[str, list[str]] = {}
    acks: dict[str, list[str]] = {}
    for name in outbox:
        data = (paths.outbox / name).read_bytes()
        answered = apprecs if name.startswith("apprec-") else acks
        answered.setdefault(ref_to_message_id(data), []).append(name)
        if name.startswith("apprec-"):
            doc = apprec_document(data)
            assert schema.validate(doc), f"{name}: {schema.error_log}"
            assert doc.find("ar:Status", APPREC_NS).get("V") == "1", name
    assert len(outbox) == 2 * MESSAGES
    assert set(apprecs) == set(acks) == set(dropped)
    assert all(len(v) == 1 for v in apprecs.values()), {
        k: v for k, v in apprecs.items() if len(v) > 1
    }
    assert all(len(v) == 1 for v in acks.values())

    # ---- the ledger agrees, and the outbox holds exactly the bytes it recorded
    receipts = rows(sandbox, "SELECT original_name, state, duplicate, finished_at FROM receipts")
    assert len(receipts) == MESSAGES
    assert {r[0] for r in receipts} == drop_names
    assert {(r[1], r[2]) for r in receipts} == {("answered", 0)}
    assert all(r[3] for r in receipts)
    messages = rows(sandbox, "SELECT ebxml_message_id, state, apprec_status FROM messages")
    assert len(messages) == MESSAGES
    assert {m[0] for m in messages} == set(dropped)
    assert {(m[1], m[2]) for m in messages} == {("answered", "1")}
    outputs = rows(sandbox, "SELECT file_name, content FROM outputs")
    assert len(outputs) == 2 * MESSAGES
    assert {name: bytes(content) for name, content in outputs} == {
        name: (paths.outbox / name).read_bytes() for name in outbox
    }


# --------------------------------------------------------------------------- recovery paths


def snapshot(sandbox: Sandbox) -> dict[str, list[tuple]]:
    """The ledger rows that describe state (not the stored bytes)."""
    return {
        "receipts": rows(sandbox, "SELECT * FROM receipts ORDER BY id"),
        "messages": rows(
            sandbox,
            "SELECT id, content_hash, ebxml_message_id, state, apprec_status, processed_at"
            " FROM messages ORDER BY id",
        ),
        "outputs": rows(sandbox, "SELECT id, message_id, kind, file_name FROM outputs ORDER BY id"),
    }


def outbox_bytes(sandbox: Sandbox) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sandbox.outbox()}


def stored_outputs(sandbox: Sandbox) -> dict[str, bytes]:
    return {n: bytes(c) for n, c in rows(sandbox, "SELECT file_name, content FROM outputs")}


def intake_at(sandbox: Sandbox, when: datetime) -> Intake:
    """A freshly started intake (new ledger connection) whose clock says `when`."""
    built = sandbox.intake()
    built.clock = lambda: when
    return built


LATER = datetime(2026, 11, 24, 3, 4, 5, tzinfo=UTC)


def test_recover_processes_a_claimed_file_that_has_no_receipt(sandbox):
    """Killed between the rename into work/ and the ledger claim: recover processes it."""
    message_id, raw = distinct_message()
    work_name = files.work_name_for("claim.msg", datetime.now(UTC))
    path = sandbox.paths.work / work_name
    path.write_bytes(raw)
    mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat()

    intake = intake_at(sandbox, LATER)
    try:
        assert intake.recover() == 1
    finally:
        intake.ledger.close()

    assert names(sandbox.paths.work) == []
    assert (sandbox.paths.archive / "2026-11-24" / work_name).read_bytes() == raw
    assert rows(
        sandbox,
        "SELECT work_name, original_name, state, duplicate, received_at,"
        " claimed_at, finished_at FROM receipts",
    ) == [(work_name, "claim.msg", "answered", 0, mtime, LATER.isoformat(), LATER.isoformat())]
    assert rows(sandbox, "SELECT id, ebxml_message_id, state, apprec_status FROM messages") == [
        (1, message_id, "answered", "1")
    ]
    answers = outbox_bytes(sandbox)
    assert answers == stored_outputs(sandbox)
    assert sorted(n.split("-")[0] for n in answers) == ["ack", "apprec"]
    assert {ref_to_message_id(d) for d in answers.values()} == {message_id}


def test_recover_processes_a_file_claimed_in_the_ledger_without_an_outcome(sandbox):
    """Killed between the ledger claim and the record: recover processes it, one receipt."""
    message_id, raw = distinct_message()
    work_name = files.work_name_for("claim.msg", datetime.now(UTC))
    (sandbox.paths.work / work_name).write_bytes(raw)
    intake = sandbox.intake()
    intake.ledger.claim(work_name, "claim.msg", "2026-11-02T08:00:00+00:00", "2026-11-02T08:00:01")
    intake.ledger.close()
    assert rows(sandbox, "SELECT state, message_id FROM receipts") == [("claimed", None)]

    intake = intake_at(sandbox, LATER)
    try:
        assert intake.recover() == 1
    finally:
        intake.ledger.close()

    assert names(sandbox.paths.work) == []
    assert (sandbox.paths.archive / "2026-11-24" / work_name).read_bytes() == raw
    assert rows(
        sandbox,
        "SELECT work_name, state, message_id, duplicate, claimed_at, finished_at FROM receipts",
    ) == [(work_name, "answered", 1, 0, "2026-11-02T08:00:01", LATER.isoformat())]
    assert rows(sandbox, "SELECT ebxml_message_id, state FROM messages") == [
        (message_id, "answered")
    ]
    assert outbox_bytes(sandbox) == stored_outputs(sandbox)
    assert len(outbox_bytes(sandbox)) == 2


@pytest.mark.parametrize("step", ["write_all_atomic", "move"])
def test_recover_redelivers_a_recorded_outcome_byte_for_byte(sandbox, monkeypatch, step):
    """Killed after the record, in delivery: recover delivers the ledger's bytes, no new row."""
    message_id, raw = distinct_message()
    sandbox.drop(raw, "claim.msg")
    real = getattr(files, step)
    failures: list[str] = []

    def crash_once(*args, **kwargs):
        if not failures:
            failures.append(step)
            raise OSError(f"simulated crash in files.{step}")
        return real(*args, **kwargs)

    monkeypatch.setattr(files, step, crash_once)
    first = sandbox.intake()
    try:
        first.poll()  # the failure stays with this file; the pass itself carries on
        assert first.failures == 1
    finally:
        first.ledger.close()
    monkeypatch.undo()
    assert failures == [step]

    # the outcome is recorded, the file is still in work/, delivery is unfinished
    (work_name,) = names(sandbox.paths.work)
    before = snapshot(sandbox)
    assert [r[1:5] for r in before["receipts"]] == [(work_name, "claim.msg", "answered", 1)]
    assert [r[2] for r in before["messages"]] == [message_id]
    assert [r[2] for r in before["outputs"]] == ["ack", "apprec"]
    stored = stored_outputs(sandbox)
    delivered = outbox_bytes(sandbox)
    assert delivered == ({} if step == "write_all_atomic" else stored)
    inodes = {p.name: os.stat(p).st_ino for p in sandbox.outbox()}

    # a later clock: regenerating the answer would change GenDate and timestamps
    recovering = intake_at(sandbox, LATER + timedelta(days=1))
    try:
        assert recovering.recover() == 1
    finally:
        recovering.ledger.close()

    assert snapshot(sandbox) == before
    assert outbox_bytes(sandbox) == stored
    assert {p.name: os.stat(p).st_ino for p in sandbox.outbox() if p.name in inodes} == inodes
    assert names(sandbox.paths.work) == []
    assert names(sandbox.paths.quarantine) == []
    assert (sandbox.paths.archive / "2026-11-25" / work_name).read_bytes() == raw
    assert {ref_to_message_id(d) for d in stored.values()} == {message_id}


# a writer that dies or lives with a half-written temporary: prints its name, waits
WRITER = """
import sys, time
from pathlib import Path
from daemon import files
tmp = files.temp_path(Path(sys.argv[1]))
tmp.write_bytes(b"half an answer")
print(tmp.name, flush=True)
time.sleep(600)
"""


def start_writer(target: Path) -> tuple[subprocess.Popen, str]:
    """A real process that has begun writing `target`, and its temporary's name."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    return proc, proc.stdout.readline().strip()


def recover(sandbox: Sandbox) -> None:
    intake = sandbox.intake()
    try:
        assert intake.recover() == 0
    finally:
        intake.ledger.close()


def test_recover_removes_a_killed_writers_temp_file_and_keeps_a_live_writers(sandbox):
    """A write cut short by SIGKILL leaves `.NAME.PID-START.HEX.tmp`; the next start
    deletes it. A writer still alive (another process, or this one) keeps its own."""
    outbox, quarantine = sandbox.paths.outbox, sandbox.paths.quarantine
    killed, killed_temp = start_writer(outbox / "apprec-1.msg")
    live, live_temp = start_writer(outbox / "vedtak-1.msg")
    try:
        killed.kill()
        killed.wait(timeout=30)
        ours = files.temp_path(outbox / "apprec-3.msg")
        ours.write_bytes(b"being written by this process")
        (quarantine / ".x.msg.err.json.deadbeef.tmp").write_bytes(b"{")  # an unowned name
        (outbox / "apprec-2.msg").write_bytes(b"a finished answer")

        recover(sandbox)

        assert names(outbox) == sorted(["apprec-2.msg", live_temp, ours.name])
        assert names(quarantine) == []
    finally:
        live.kill()
        live.wait(timeout=30)
    recover(sandbox)
    assert names(outbox) == sorted(["apprec-2.msg", ours.name])
    assert killed_temp.startswith(f".apprec-1.msg.{killed.pid}-")


def test_a_reused_pid_does_not_pass_for_the_writer():
    """The writer's start time is in the name: the same PID started later is not it."""
    mine = files.temp_path(Path("x.msg")).name
    pid, start = mine.split(".")[-3].split("-")
    assert int(pid) == os.getpid() and int(start) > 0
    assert not files.stale_temp(mine)
    assert files.stale_temp(mine.replace(f"{pid}-{start}", f"{pid}-{int(start) + 1}"))
    assert not files.stale_temp(".x.msg.part")  # a sender's, not ours


def test_a_failed_write_removes_its_own_temp_file(tmp_path):
    (tmp_path / "answer.msg").mkdir()  # the rename onto it fails
    with pytest.raises(OSError):
        files.write_atomic(tmp_path / "answer.msg", b"an answer")
    assert names(tmp_path) == ["answer.msg"]
