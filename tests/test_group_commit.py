"""Group commit (#17.2): several messages' outcomes in one ledger transaction, answers
delivered only after it. A real process is SIGKILLed inside a group commit (before the
COMMIT, just after it, and halfway through delivering the group), then the real
recovery runs, and every invariant of the crash tests is checked."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from daemon import files
from tests.conftest import ROOT, Sandbox
from tests.test_crash import (
    APPREC_NS,
    apprec_document,
    archived,
    distinct_message,
    names,
    ref_to_message_id,
    rows,
)

BOTH_BACKENDS = True  # every sandbox here on SQLite and on PostgreSQL (conftest.py)
GROUP = 6

# the intake in a child process, killed by SIGKILL at one point of its group commit;
# the code under test is the real one, only the moment of death is chosen
KILLER = """
import os, signal, sys
from pathlib import Path
from daemon import config, files
from daemon.service import runner as service

where = sys.argv[2]
intake = service.build(config.load(Path(sys.argv[1])))
ledger = intake.ledger
commit, move = ledger.commit_group, files.move

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def commit_then_die():
    commit()
    die()

moves = []

def move_then_die(*args, **kwargs):
    if moves:
        die()  # the group's second original: one is archived, the rest wait in work/
    moves.append(args)
    return move(*args, **kwargs)

if where == "before-commit":
    ledger.commit_group = die
elif where == "after-commit":
    ledger.commit_group = commit_then_die
else:
    files.move = move_then_die
intake.recover()
intake.poll()
sys.exit(3)  # never reached: the group commit is where it dies
"""


def one_group(sandbox: Sandbox) -> None:
    """Every file of a pass in one group: no size or time bound closes it early."""
    text = sandbox.config_path.read_text()
    settings = f"[intake]\ncommit_batch_messages = {GROUP}\ncommit_batch_ms = 600000\n"
    sandbox.config_path.write_text(text.replace("[intake]\n", settings, 1))


def outcome_rows(sandbox: Sandbox) -> tuple[list[tuple], list[tuple]]:
    return (
        rows(sandbox, "SELECT state FROM receipts"),
        rows(sandbox, "SELECT state FROM messages"),
    )


@pytest.mark.parametrize("where", ["before-commit", "after-commit", "mid-delivery"])
def test_sigkill_inside_a_group_commit_keeps_every_invariant(sandbox, where):
    one_group(sandbox)
    dropped = dict(distinct_message() for _ in range(GROUP))
    drop_names = {sandbox.drop(raw).name for raw in dropped.values()}
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(sandbox.config_path), where],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    # ---- at the moment of death
    receipts, messages = outcome_rows(sandbox)
    if where == "before-commit":  # nothing durable, so nothing may have left
        assert (receipts, messages) == ([], [])
        assert names(sandbox.paths.outbox) == []
        assert len(names(sandbox.paths.work)) == GROUP
    elif where == "after-commit":  # the whole group in one commit, nothing delivered yet
        assert receipts == messages == [("answered",)] * GROUP
        assert names(sandbox.paths.outbox) == []
        assert len(names(sandbox.paths.work)) == GROUP
    else:  # answers of the whole group out together, then the originals one by one
        assert receipts == messages == [("answered",)] * GROUP
        assert len(names(sandbox.paths.outbox)) == 2 * GROUP
        assert len(archived(sandbox)) == 1
        assert len(names(sandbox.paths.work)) == GROUP - 1

    # ---- recovery by the real intake, then every invariant
    sandbox.process()
    paths = sandbox.paths
    assert names(paths.inbox) == names(paths.work) == names(paths.quarantine) == []
    originals = archived(sandbox)
    assert sorted(p.read_bytes() for p in originals) == sorted(dropped.values())
    assert {files.original_name(p.name) for p in originals} == drop_names
    outbox = names(paths.outbox)
    assert len(outbox) == 2 * GROUP  # one AppRec and one Ack each, nothing twice
    apprecs = {ref_to_message_id((paths.outbox / n).read_bytes()) for n in outbox if "apprec" in n}
    acks = {ref_to_message_id((paths.outbox / n).read_bytes()) for n in outbox if "ack-" in n}
    assert apprecs == acks == set(dropped)
    for name in outbox:
        if name.startswith("apprec-"):
            doc = apprec_document((paths.outbox / name).read_bytes())
            assert doc.find("ar:Status", APPREC_NS).get("V") == "1", name
    states = rows(sandbox, "SELECT original_name, state, duplicate, finished_at FROM receipts")
    assert {r[0] for r in states} == drop_names and len(states) == GROUP
    assert {(r[1], r[2]) for r in states} == {("answered", 0)} and all(r[3] for r in states)
    ledger = rows(sandbox, "SELECT ebxml_message_id, state, apprec_status FROM messages")
    assert sorted(ledger) == sorted((m, "answered", "1") for m in dropped)
    stored = rows(sandbox, "SELECT file_name, content FROM outputs")
    assert {n: bytes(c) for n, c in stored} == {n: (paths.outbox / n).read_bytes() for n in outbox}


def test_a_message_sees_the_outcome_of_the_one_before_it_in_the_same_group(sandbox):
    """Inside one uncommitted group the ledger is read through the same transaction:
    the same bytes twice are one message and a duplicate with the stored answer."""
    one_group(sandbox)
    _message_id, raw = distinct_message()
    sandbox.drop(raw, "first.msg")
    sandbox.drop(raw, "again.msg")
    sandbox.process()
    assert sorted(rows(sandbox, "SELECT original_name, duplicate FROM receipts")) == [
        ("again.msg", 1),
        ("first.msg", 0),
    ]
    assert len(rows(sandbox, "SELECT id FROM messages")) == 1
    assert len(sandbox.outbox()) == 2  # the one AppRec and Ack, written once
