"""The functional core: an ordered tuple of stages, each `stage(work, ctx) -> work`.

`Work` is an immutable record that every stage returns a new copy of; a stage that
finds a technical problem adds it to `work.problems`, and the loop stops after that
stage (later stages cannot make sense of a message an earlier one rejected). The
answer is then built from whatever the stages learnt, so a rejected message is
answered as precisely as an accepted one.

Nothing here does I/O. The clock, the id source, the partner registry and the read-
only view of the ledger arrive in `Context`.
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
from daemon.schemas import Schemas
from daemon.trust import KeyPair


class History(Protocol):
    """What the core may ask of earlier messages (a read-only view of the ledger)."""

    def accepted_hash(self, ebxml_message_id: str) -> str | None:
        """The content hash of an earlier accepted message with this MessageId."""
        ...


class NoHistory:
    def accepted_hash(self, ebxml_message_id: str) -> str | None:
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
    ca_pem: bytes | None = None  # a CA bundle partner certificates may chain to


@dataclass(frozen=True)
class Work:
    raw: bytes
    content_hash: str
    multipart: Multipart | None = None
    soap: etree._Element | None = None
    header: EbxmlHeader | None = None
    payload: bytes | None = None
    msghead: etree._Element | None = None
    msghead_info: MsgHeadInfo | None = None
    partner: Partner | None = None
    claim: Claim | None = None
    decision: Decision | None = None
    problems: tuple[Problem, ...] = ()

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


def run(stages: tuple[Stage, ...], work: Work, ctx: Context, around: Around = _plain) -> Work:
    """Run `stages` in order until one reports a problem. `around` wraps each stage
    from outside (timing, metrics) without the stages knowing."""
    for stage in stages:
        work = around(stage.__name__, lambda stage=stage, work=work: stage(work, ctx))
        if work.problems:
            break
    return work
