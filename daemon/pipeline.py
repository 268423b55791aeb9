"""The functional core: an ordered tuple of stages, each `stage(work, ctx) -> work`.

`Work` is an immutable record that every stage returns a new copy of; a stage that
finds a technical problem adds it to `work.problems`, and the loop stops after that
stage (later stages cannot make sense of a message an earlier one rejected). The
answer is then built from whatever the stages learnt, so a rejected message is
answered as precisely as an accepted one.

Nothing here does I/O. The clock, keys, registry and a read-only view of the ledger
arrive in `Context`; ids are derived from the content (`Work.ids`), never random.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from lxml import etree

from daemon.config import Settings
from daemon.domain import Claim, Decision, EbxmlHeader, MsgHeadInfo, Problem
from daemon.mime import Multipart
from daemon.registry import Partner, Registry
from daemon.rules.context import BillHistory, NoBillHistory
from daemon.schemas import Schemas
from daemon.tariffs import Tariffs
from daemon.trust import KeyPair


class History(BillHistory, Protocol):
    """What the core may ask of earlier messages and bills (a read-only ledger view)."""

    def accepted(self, ebxml_message_id: str) -> tuple[str, str | None] | None:
        """(content hash, payload part hash) of an accepted message with this MessageId."""
        ...


class NoHistory(NoBillHistory):
    def accepted(self, ebxml_message_id: str) -> tuple[str, str | None] | None:
        return None


@dataclass(frozen=True)
class Ids:
    """Deterministic ids: the same input gets the same ids (replay, recovery)."""

    seed: str

    def new(self, purpose: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kravmottak:{self.seed}:{purpose}"))


@dataclass(frozen=True)
class Context:
    settings: Settings
    schemas: Schemas
    registry: Registry
    now: datetime
    history: History = field(default_factory=NoHistory)
    keys: KeyPair | None = None  # ours: decrypts inbound, signs outbound
    tariffs: Tariffs | None = None  # NLK codes and rates (None: every lab line is unknown)


@dataclass(frozen=True)
class Work:
    raw: bytes
    content_hash: str
    multipart: Multipart | None = None
    soap: etree._Element | None = None
    header: EbxmlHeader | None = None
    payload: bytes | None = None
    payload_part_hash: str | None = None  # sha256 of the manifest's part, as sent
    msghead: etree._Element | None = None
    msghead_info: MsgHeadInfo | None = None
    partner: Partner | None = None
    claim: Claim | None = None
    decision: Decision | None = None
    problems: tuple[Problem, ...] = ()
    # content hash of an accepted message this one merely retransmits (same MessageId,
    # same payload part, other envelope bytes): answered with that message's answer
    retransmission_of: str | None = None

    @property
    def ids(self) -> Ids:
        return Ids(self.content_hash)

    def with_(self, **changes) -> Work:
        return replace(self, **changes)

    def failed(self, *problems: Problem) -> Work:
        return replace(self, problems=self.problems + tuple(problems))


def content_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


Stage = Callable[[Work, Context], Work]
Around = Callable[[str, Callable[[], Work]], Work]


def _plain(_name: str, call: Callable[[], Work]) -> Work:
    return call()


OnError = Callable[[str, Exception], Problem]


def run(
    stages: tuple[Stage, ...],
    work: Work,
    ctx: Context,
    around: Around = _plain,
    on_error: OnError | None = None,
) -> Work:
    """Run `stages` in order until one reports a problem or finds the message already
    answered. `around` wraps each stage from outside (timing, metrics) without the
    stages knowing. A stage that raises is a bug: with `on_error` the message keeps
    what the earlier stages learnt (so it can still be answered) plus that problem."""
    for stage in stages:
        try:
            work = around(stage.__name__, lambda stage=stage, work=work: stage(work, ctx))
        except Exception as exc:
            if on_error is None:
                raise
            return work.failed(on_error(stage.__name__, exc))
        if work.problems or work.retransmission_of:
            break
    return work
