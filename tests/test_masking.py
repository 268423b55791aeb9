"""No fødselsnummer in anything we write, whatever field a sender puts one in.

The daemon runs as a real process (`kravmottak process`, then `kravmottak settle`) on
messages whose file names, ebXML MessageId and ConversationId, regningNr, komNrHjem and
uuid carry fødselsnummer-shaped values: 11 digits, `DDMMYY-NNNNN` and `DDMMYY NNNNN`.
Then its stdout and stderr, every file it wrote (AppRecs, Acks, MessageErrors, vedtak,
payments, `quarantine/*.err.json`, and the names of all of them) and every text column
of the ledger are searched for each value, in its own form and as bare digits.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.transport import mime
from tests.claims import B, C, L, msghead
from tests.conftest import ROOT, Sandbox, wrap_demo

OSMO = L("NOR05003", "6.96")
# fødselsnummer-shaped values, each in its own form; none is used twice
PLAIN = ("01045342227", "16098038063", "24117412345", "05068523456", "31129934567")
DASHED = ("010453-42227", "160980-38061", "241174-12344")
SPACED = ("160980 38063", "010453 42221", "050685 23451")
VALUES = PLAIN + DASHED + SPACED


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def _messages() -> list[tuple[str, bytes]]:
    """(file name, bytes): every field a sender chooses freely, with a value in it."""
    approved = C(  # paid, so its regningNr reaches the vedtak
        (
            B((OSMO,), regning_nr=PLAIN[0], fnr="15057810014"),
            B((OSMO,), regning_nr=DASHED[0], fnr="02039010065"),
            B((OSMO,), regning_nr=SPACED[0], fnr="31128810016"),
        )
    )
    reduced = C(  # a rejected line: the AppRec names the bill (OT = regningNr)
        (
            B((OSMO, L("NOR05003", "9.99")), regning_nr=PLAIN[1], fnr="15057810014"),
            B((L("NOR05003", "9.99"),), regning_nr=DASHED[1], fnr="02039010065"),
        )
    )
    municipality = C((B((OSMO,), municipality=PLAIN[2], fnr="31128810016"),))
    uuid = C((B((OSMO,), uuid="{" + PLAIN[3] + "}", fnr="31128810016"),))
    uuid_dashed = C((B((OSMO,), uuid=DASHED[2], fnr="15057810014"),))
    return [
        (
            f"krav-{PLAIN[4]}.msg",
            wrap_demo(msghead(approved), message_id=f"msg-{DASHED[0]}", conversation_id=SPACED[1]),
        ),
        (
            f"krav {SPACED[2]}.msg",
            wrap_demo(msghead(reduced), message_id=SPACED[2], conversation_id=f"c-{PLAIN[1]}"),
        ),
        (f"{PLAIN[2]}.msg", wrap_demo(msghead(municipality), message_id=f"m-{PLAIN[2]}")),
        (f"uuid-{DASHED[2]}.msg", wrap_demo(msghead(uuid), message_id=f"u-{PLAIN[3]}")),
        ("uuid-dashed.msg", wrap_demo(msghead(uuid_dashed))),
        (f"{SPACED[0]}.msg", b"not a message, from " + SPACED[0].encode()),
    ]


def _run(box: Sandbox, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "--config", str(box.config_path), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def _texts_of_file(path: Path) -> list[str]:
    """The file as bytes, and each MIME part (gzip inflated) when it is a message."""
    raw = path.read_bytes()
    out = [raw.decode("utf-8", "replace")]
    multipart, _problem = mime.parse(raw)
    if multipart is None:
        return out
    for part in (multipart.start, *multipart.attachments):
        data = part.data
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        out.append(data.decode("utf-8", "replace"))
    return out


def _ledger_texts(path: Path) -> list[tuple[str, str]]:
    found = []
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            columns = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
            for row in db.execute(f"SELECT * FROM {table}"):
                for column, value in zip(columns, row, strict=True):
                    if isinstance(value, bytes):
                        value = value.decode("utf-8", "replace")
                    if isinstance(value, str):
                        found.append((f"{table}.{column}", value))
    return found


def _leaks(where: str, text: str) -> list[str]:
    return [f"{value!r} in {where}" for value in VALUES if value in text or _digits(value) in text]


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> tuple[Sandbox, str]:
    from tests.conftest import make_sandbox

    box = make_sandbox(tmp_path_factory.mktemp("masking") / "sandbox")
    for name, raw in _messages():
        box.drop(raw, name)
    logs = _run(box, "process")
    logs += _run(box, "settle")
    return box, logs


def test_the_messages_were_handled(ran):
    """The run did what the other assertions rely on: every file answered or
    quarantined, the approved claim settled into a vedtak."""
    box, logs = ran
    events = [json.loads(line)["event"] for line in logs.splitlines() if line.startswith("{")]
    assert events.count("claimed") == len(_messages()), events
    assert events.count("answered") + events.count("quarantined") == len(_messages())
    assert box.outbox("vedtak") and len(box.outbox("apprec")) == 5
    assert list(box.paths.quarantine.glob("*.err.json"))
    assert not list(box.paths.inbox.iterdir()) and not list(box.paths.work.iterdir())


def test_no_person_number_in_the_logs(ran):
    _box, logs = ran
    assert _leaks("the log", logs) == []


def test_no_person_number_in_any_file_written(ran):
    box, _logs = ran
    leaks = []
    for path in sorted(p for p in box.root.rglob("*") if p.is_file()):
        folder = path.relative_to(box.root).parts[0]
        if folder in ("quarantine", "outbox") or path.name.endswith(".err.json"):
            leaks += _leaks(f"the name {path.name}", path.name)
            if path.parent.name == "outbox" or path.name.endswith(".err.json"):
                for text in _texts_of_file(path):
                    leaks += _leaks(str(path.relative_to(box.root)), text)
    for folder in (box.paths.archive, box.paths.quarantine):
        for path in folder.rglob("*"):
            leaks += _leaks(f"the name {path.name}", path.name)
    assert leaks == []


def test_no_person_number_in_the_ledger(ran):
    box, _logs = ran
    leaks = []
    for where, text in _ledger_texts(box.paths.ledger):
        if where in ("outputs.content", "vedtak_outputs.content"):
            continue  # the stored answers: checked as files, here only raw
        leaks += _leaks(where, text)
    assert leaks == []


def test_the_answers_still_name_the_problem(ran):
    """Masked, not muted: the schema errors say which attribute is wrong, and the
    rejected line is named by its (masked) bill."""
    box, _logs = ran
    texts = "\n".join(t for p in box.outbox("apprec") for t in _texts_of_file(p))
    assert "komNrHjem" in texts and "uuid" in texts
    assert "***********" in texts
