"""The real daemon as a process: `python -m daemon run` and `python -m daemon process`."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from lxml import etree

from daemon.transport import mime
from daemon.transport.ebms import NS
from tests.conftest import Sandbox, unique_claim, wrap_demo

APPREC_NS = {"ar": "http://www.kith.no/xmlstds/apprec/2004-11-21"}
# the invented people in tests/data/claim-demo.xml: none of it may reach the logs
PERSONAL = ("15057810014", "02039010065", "31128810016")
NAMES = ("Kari", "Testesen", "Per", "Prøvesen", "Lise", "Eksempel")


def distinct_message() -> tuple[str, bytes]:
    """A schema-valid claim with its own ebXML MessageId and its own MsgHead MsgId."""
    message_id = str(uuid.uuid4())
    raw = wrap_demo(unique_claim(), message_id=message_id)
    return message_id, raw


def set_intake(sandbox: Sandbox, **values: float) -> None:
    """Rewrite keys of the sandbox config's [intake] table."""
    text = sandbox.config_path.read_text(encoding="utf-8")
    for key, value in values.items():
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert n == 1, f"{key} not found in {sandbox.config_path}"
    sandbox.config_path.write_text(text, encoding="utf-8")


def command(sandbox: Sandbox, *args: str) -> list[str]:
    return [sys.executable, "-m", "daemon", "--config", str(sandbox.config_path), *args]


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def apprec_statuses(sandbox: Sandbox) -> dict[str, str]:
    """AppRec status (8258 V) per inbound ebXML MessageId, from the outbox files."""
    statuses: dict[str, str] = {}
    for path in sandbox.outbox("apprec-"):
        multipart, problem = mime.parse(path.read_bytes())
        assert problem is None, problem
        soap = etree.fromstring(multipart.start.data)
        ref = soap.findtext(".//eb:MessageData/eb:RefToMessageId", None, NS)
        assert ref not in statuses, f"{ref} answered twice"
        (part,) = multipart.attachments
        statuses[ref] = etree.fromstring(part.data).find("ar:Status", APPREC_NS).get("V")
    return statuses


def assert_no_personal_data(text: str) -> None:
    for number in PERSONAL:
        assert number not in text
    for name in NAMES:
        assert not re.search(rf"\b{name}\b", text), name


@pytest.mark.slow
def test_daemon_answers_files_dropped_while_it_runs_and_stops_on_sigterm(sandbox, tmp_path):
    """Files arriving during a run are each answered OK once; SIGTERM exits 0, logs are clean."""
    # stable_seconds far above the slow writer's 0.25 s pauses: a busy machine may
    # stretch a pause, never to 10 s; the other files are whole at once (inotify)
    set_intake(sandbox, poll_interval_seconds=0.05, stable_seconds=10.0)
    inbox = sandbox.paths.inbox
    stdout, stderr = tmp_path / "daemon.out", tmp_path / "daemon.err"
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        proc = subprocess.Popen(command(sandbox, "run"), stdout=out, stderr=err)
    try:
        wait_for(lambda: b'"started"' in stderr.read_bytes(), 60, "the daemon to start")
        expected: list[str] = []

        def drop_renamed() -> None:  # written under a temp name, then renamed: fresh mtime
            message_id, raw = distinct_message()
            sandbox.drop(raw, settle=False)
            expected.append(message_id)

        def write_in_place() -> None:  # written in one go under its final name
            message_id, raw = distinct_message()
            (inbox / f"{uuid.uuid4()}.msg").write_bytes(raw)
            expected.append(message_id)

        for _ in range(5):
            drop_renamed()
            write_in_place()

        # one file written slowly in place, in 6 chunks 0.25 s apart (<< stable_seconds)
        slow_id, slow_raw = distinct_message()
        expected.append(slow_id)
        slow = inbox / "slow-writer.msg"
        size = len(slow_raw) // 6 + 1
        with open(slow, "wb", buffering=0) as fh:
            for start in range(0, len(slow_raw), size):
                fh.write(slow_raw[start : start + size])
                if start // size % 2:
                    drop_renamed()
                else:
                    write_in_place()
                time.sleep(0.25)
                assert slow.exists(), "the daemon took a file that was still being written"

        for _ in range(20 - len(expected)):
            drop_renamed()
        assert len(expected) == len(set(expected)) == 20

        def all_answered() -> bool:
            return len(sandbox.outbox("apprec-")) >= 20 and not names(inbox)

        wait_for(all_answered, 90, "20 AppRecs")
        wait_for(lambda: not names(sandbox.paths.work), 30, "work/ to empty")
        assert proc.poll() is None, "the daemon exited by itself"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert names(sandbox.paths.work) == []
    assert names(sandbox.paths.quarantine) == []
    statuses = apprec_statuses(sandbox)
    assert statuses[slow_id] == "1", "the slowly written file was read before it was whole"
    assert statuses == dict.fromkeys(expected, "1")
    assert len(sandbox.outbox("ack-")) == 20

    out, err = stdout.read_text(encoding="utf-8"), stderr.read_text(encoding="utf-8")
    assert out == ""  # the daemon's logs are JSON lines on stderr
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    started = next(i for i, e in enumerate(events) if e["event"] == "started")
    # before it only the settlement batch missed while down (Friday 16:00), made up
    assert [e["event"] for e in events[:started]] == ["settled", "settlement_made_up"]
    assert events[-1]["event"] == "stopped"
    assert {"event": "stopping", "signal": "SIGTERM"}.items() <= events[-2].items()
    assert sum(e["event"] == "answered" for e in events) == 20
    assert_no_personal_data(out)
    assert_no_personal_data(err)


@pytest.mark.slow
def test_process_command_handles_the_inbox_once_and_exits(sandbox):
    """`python -m daemon process` answers what is in the inbox, then exits 0."""
    expected = []
    for _ in range(3):
        message_id, raw = distinct_message()
        sandbox.drop(raw)
        expected.append(message_id)

    done = subprocess.run(command(sandbox, "process"), capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert done.stdout == "recovered 0, processed 3\n"  # the summary; logs on stderr
    assert names(sandbox.paths.inbox) == []
    assert names(sandbox.paths.work) == []
    assert apprec_statuses(sandbox) == dict.fromkeys(expected, "1")
    assert len(sandbox.outbox("ack-")) == 3
    for line in done.stderr.splitlines():
        json.loads(line)
    assert_no_personal_data(done.stdout + done.stderr)
