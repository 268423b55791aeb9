"""No personal data in logs: masking processor and a real run's output."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import structlog

from daemon import logs
from daemon.config import ConfigError, from_mapping
from tests.conftest import wrap_demo

FNRS = ("15057810014", "02039010065", "31128810016")
NAMES = ("Kari", "Testesen", "Per", "Prøvesen", "Lise", "Eksempel")


def test_eleven_digit_numbers_are_masked_anywhere():
    """An 11-digit run in any value, nested or not, becomes asterisks; others stay."""
    event = logs.mask_personal_data(
        None,
        "info",
        {
            "event": "x 15057810014 y",
            "nested": {"a": ["02039010065"]},
            "n": 31128810016,
            "orgnr": "983974678",
            "long": "123456789012",
        },
    )
    assert event["event"] == "x *********** y"
    assert event["nested"] == {"a": ["***********"]}
    assert event["n"] == "***********"
    assert event["orgnr"] == "983974678"  # 9 digits: an organisation number, not a person
    assert event["long"] == "123456789012"  # 12 digits: not a fødselsnummer


def test_keys_that_name_a_person_are_dropped():
    """Values under name-like keys are masked whatever they hold."""
    event = logs.mask_personal_data(
        None, "info", {"etternavn": "Testesen", "name": "Kari", "x": {"fornavn": "Per"}}
    )
    assert event == {"etternavn": "[masked]", "name": "[masked]", "x": {"fornavn": "[masked]"}}


def test_processing_real_messages_logs_json_without_personal_data(sandbox):
    """A run over valid, broken and rejected claims: JSON lines, no fnr, no names."""
    stream = io.StringIO()
    logs.configure("debug", stream)
    try:
        sandbox.drop(wrap_demo())
        sandbox.drop(wrap_demo(open_claim_with_error()))
        sandbox.drop(b"garbage 15057810014 Kari Testesen")
        sandbox.process()
    finally:
        logs.configure("info")
    text = stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert {line["event"] for line in lines} >= {"claimed", "answered", "quarantined"}
    assert all(line["duration_ms"] is not None for line in lines if line["event"] == "answered")
    for secret in FNRS + NAMES:
        assert secret not in text, secret


def open_claim_with_error() -> bytes:
    from tests.conftest import demo_claim

    # a schema error whose message quotes the patient's identity value
    return demo_claim().replace(b'typeId="FNR" id="15057810014"', b'id="15057810014"')


def test_the_configured_logger_masks_every_form(capsys):
    """The processor is in the configuration, not only a function: a line logged through
    `configure`'s logger has every fødselsnummer form masked (and other numbers kept).
    structlog's defaults are restored first, so nothing an earlier test configured can
    stand in for what `configure` leaves out."""
    structlog.reset_defaults()
    logs.configure("info")
    try:
        logs.get().info(
            "claimed 010453-42227",
            file="krav 160980 38063.msg",
            message_id="m-01045342227",
            other="160980.38063",
            nested={"ids": ["24117412345"]},
            orgnr="983974678",
            long="123456789012",
            when="2026-11-23T12:00:00Z",
            fnr="x",
        )
    finally:
        logs.configure("info")
    (line,) = capsys.readouterr().err.splitlines()
    event = json.loads(line)
    assert event["event"] == "claimed ***********"
    assert event["file"] == "krav ***********.msg"
    assert event["message_id"] == "m-***********"
    assert event["other"] == "***********"
    assert event["nested"] == {"ids": ["***********"]}
    assert event["fnr"] == "[masked]"
    assert (event["orgnr"], event["long"]) == ("983974678", "123456789012")
    assert event["when"] == "2026-11-23T12:00:00Z"


def test_masking_forms():
    from daemon.masking import mask, mask_optional

    assert mask("a01045342227b") == "a***********b"
    assert mask("010453-42227 and 160980 38063") == "*********** and ***********"
    assert mask("0104534222") == "0104534222"  # 10 digits
    assert mask("010453422271") == "010453422271"  # 12 digits
    assert mask("010453--42227") == "010453--42227"  # two separators: not one number
    assert mask("1010453-42227") == "1010453-42227"  # part of a longer number
    assert mask("20261123T120000123456Z") == "20261123T120000123456Z"
    assert mask_optional(None) is None and mask_optional("16098038063") == "***********"


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_configure_writes_json_lines_with_level_time_and_context():
    structlog.reset_defaults()
    stream = io.StringIO()
    logs.configure("info", stream)
    try:
        structlog.contextvars.bind_contextvars(message_id="m-1")
        logs.get().info("answered", status="1")
        logs.get().debug("not shown")
    finally:
        structlog.contextvars.clear_contextvars()
        logs.configure("info")
    (line,) = _lines(stream.getvalue())
    assert line["event"] == "answered" and line["status"] == "1" and line["level"] == "info"
    assert line["message_id"] == "m-1"
    assert line["timestamp"].endswith("Z") and line["timestamp"][10] == "T"


def test_configure_filters_by_level():
    structlog.reset_defaults()
    stream = io.StringIO()
    logs.configure("warning", stream)
    try:
        logs.get().info("quiet")
        logs.get().warning("loud")
    finally:
        logs.configure("info")
    assert [x["event"] for x in _lines(stream.getvalue())] == ["loud"]
    stream = io.StringIO()
    logs.configure(stream=stream)  # the default level: info
    try:
        logs.get().debug("quiet")
        logs.get().info("shown")
    finally:
        logs.configure("info")
    assert [x["event"] for x in _lines(stream.getvalue())] == ["shown"]
    with pytest.raises(KeyError):  # config.py allows only the five; never a silent default
        logs.configure("no-such-level", io.StringIO())
    with pytest.raises(ConfigError, match=r"\[logging\] level"):
        from_mapping({"logging": {"level": "loud"}}, Path("kravmottak.toml"))


def test_an_exception_is_rendered_as_text_and_masked():
    structlog.reset_defaults()
    stream = io.StringIO()
    logs.configure("info", stream)
    try:
        try:
            raise ValueError("bad 010453-42227 ø")
        except ValueError:
            logs.get().exception("failed")
    finally:
        logs.configure("info")
    (line,) = _lines(stream.getvalue())
    assert "Traceback" in line["exception"] and "ValueError: bad *********** ø" in line["exception"]
    assert "ø" in stream.getvalue()  # JSON without ASCII escapes, for journald readers


def test_the_log_follows_sys_stderr_as_it_is_when_a_line_is_written():
    structlog.reset_defaults()
    logs.configure("info")
    first, second = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(first):
        logs.get().info("one")
    with contextlib.redirect_stderr(second):
        logs.get().info("two")
    assert [x["event"] for x in _lines(first.getvalue())] == ["one"]
    assert [x["event"] for x in _lines(second.getvalue())] == ["two"]


def test_a_logger_made_before_a_reconfiguration_follows_it():
    """Modules take their logger at import; a later `configure` (a reload, a test's
    stream) must still reach them: loggers are not cached on first use."""
    structlog.reset_defaults()
    log = logs.get()
    first, second = io.StringIO(), io.StringIO()
    try:
        logs.configure("info", first)
        log.info("one")
        logs.configure("info", second)
        log.info("two")
    finally:
        logs.configure("info")
    assert [x["event"] for x in _lines(first.getvalue())] == ["one"]
    assert [x["event"] for x in _lines(second.getvalue())] == ["two"]


def test_uuids_and_hashes_keep_their_digits():
    """A UUID or a hash with eleven digits in a row is not a person: an answer must
    still name the message it answers."""
    from daemon.masking import mask

    uuid = "513b7c4f-d711-4ad0-85c8-d82545899289"
    digest = "ab" + "12345678901" + "cd" * 10
    assert mask(uuid) == uuid and mask(f"msg {{{uuid.upper()}}}") == f"msg {{{uuid.upper()}}}"
    assert mask(digest) == digest
    assert mask(f"{uuid} 01045342227") == f"{uuid} ***********"
    assert mask("x-01045342227-y") == "x-***********-y"
