"""Property: whatever bytes arrive, the core answers or refuses with a reason.

Mutations of a valid ebMS message (byte flips, truncations, insertions, spliced
XML fragments, MIME header damage) go through the real pipeline and answer stages
with `on_error=None`, so any exception inside the core fails the test instead of
being turned into X99.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon import config
from daemon.claims.answer import answer
from daemon.records import Context, Work, content_hash
from daemon.registers import registry
from daemon.schemas import Schemas
from daemon.service.intake import STAGES
from daemon.service.pipeline import run
from tests.conftest import ROOT, wrap_demo

EXAMPLES = int(os.environ.get("KRAVMOTTAK_FUZZ_EXAMPLES", "2000"))
VALID = wrap_demo(message_id="fuzz-1")
FRAGMENTS = [
    b"<!DOCTYPE x [<!ENTITY a 'b'>]>",
    b"&a;",
    b"<eb:MessageHeader/>",
    b"</SOAP:Envelope>",
    b"\x00",
    b"\xff\xfe",
    b"--",
    b"Content-ID: <x>\r\n",
    b'episodeID="1"',
    b"<Melding/>",
    b"]]>",
    b"<![CDATA[",
]


@pytest.fixture(scope="module")
def ctx() -> Context:
    settings_ = config.load(ROOT / "config" / "kravmottak.toml")
    reg = registry.load(ROOT / "config" / "partners.toml", ROOT / "config" / "institutions.toml")
    return Context(settings_, Schemas.load(), reg, datetime(2026, 11, 23, 12, 0, tzinfo=UTC))


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "splice", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "splice":
            data[at:at] = draw(st.sampled_from(FRAGMENTS))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
    return bytes(data)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(raw=mutated())
def test_mutated_messages_are_answered_or_refused_with_a_reason(ctx, raw):
    """No exception escapes the core; a refusal always carries at least one problem."""
    work = run(STAGES, Work(raw=raw, content_hash=content_hash(raw)), ctx)
    result = answer(work, ctx)
    if result.state == "quarantined":
        assert result.problems and all(p.text for p in result.problems)
    else:
        assert result.status in ("1", "3") and not result.problems
    if work.header is not None:
        assert any(o.kind == "apprec" for o in result.outputs)
