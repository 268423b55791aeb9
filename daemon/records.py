"""The records the pipeline's stages pass along: `Work` and `Context`.

`Work` is an immutable record that every stage returns a new copy of; a stage that
finds a technical problem adds it to `work.problems`. The clock, keys, registry and a
read-only view of the ledger (`History`) arrive in `Context`; ids are derived from the
content (`Work.ids`), never random. The runner that composes the stages is
`daemon.service.pipeline`.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from lxml import etree

from daemon.config import Settings
from daemon.domain import Claim, Decision, EbxmlHeader, Exam, MsgHeadInfo, Problem
from daemon.schemas import Schemas

if TYPE_CHECKING:  # the layers above: only their types are named here
    from daemon.registers.registry import Partner, Registry
    from daemon.registers.tariffs import Tariffs
    from daemon.transport.mime import Multipart
    from daemon.transport.trust import KeyPair


class BillHistory(Protocol):
    """Earlier bills, as the ledger remembers them (only accepted outcomes count)."""

    def paid_bill(self, institution_id: str, uuid: str) -> Decimal | None:
        """What this uuid has been paid so far, net of corrections and credits; None when
        no bill with it was ever paid (approved or reduced)."""
        ...

    def service_seen(self, institution_id: str, patient_key: str, codes: str, when: str) -> bool:
        """An earlier approved bill for the same patient, code set and TransDatoTid."""
        ...

    def paid_by_payee(self, institution_id: str, uuid: str) -> dict[str | None, Decimal]:
        """What each payee has been paid for this uuid so far, net of corrections and
        credits (a credit or correction moves money with the same payees)."""
        ...

    def paid_bills(self, institution_id: str, uuids: list[str]) -> dict[str, Decimal]:
        """`paid_bill` for many uuids in one question: uuid → net paid (uuids never paid
        are left out)."""
        ...

    def services_seen(
        self, institution_id: str, services: list[tuple[str, str, str]]
    ) -> set[tuple[str, str, str]]:
        """`service_seen` for many (patient key, code set, instant) in one question: the
        ones an earlier approved bill has."""
        ...

    def exams_on(self, patient_key: str, day: str) -> tuple[Exam, ...]:
        """The radiology exams approved earlier for this patient on this day (ISO date),
        not since credited or corrected, in the order they were approved; `where` tells
        which message and regning."""
        ...

    def egenandel_status(self, institution_id: str, uuid: str) -> str | None:
        """How the egenandel of this institution's bill `uuid` was recorded (EG-03):
        'ikke betalt', 'betalt', 'fritak'; None when no egenandel was recorded for it."""
        ...

    def day_version(self, patient_key: str, day: str) -> int:
        """The version of that day's approved exams (moves with every change): asked
        before `exams_on`, kept in the decision, checked again when it is recorded."""
        ...


class NoBillHistory:
    def egenandel_status(self, institution_id: str, uuid: str) -> str | None:
        return None

    def paid_bill(self, institution_id: str, uuid: str) -> Decimal | None:
        return None

    def service_seen(self, institution_id: str, patient_key: str, codes: str, when: str) -> bool:
        return False

    def paid_by_payee(self, institution_id: str, uuid: str) -> dict[str | None, Decimal]:
        return {}

    def paid_bills(self, institution_id: str, uuids: list[str]) -> dict[str, Decimal]:
        return {}

    def services_seen(
        self, institution_id: str, services: list[tuple[str, str, str]]
    ) -> set[tuple[str, str, str]]:
        return set()

    def exams_on(self, patient_key: str, day: str) -> tuple[Exam, ...]:
        return ()

    def day_version(self, patient_key: str, day: str) -> int:
        return 0


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
    # the secret patient pseudonyms are made with ([keys] patient_secret); None: bills
    # carry no patient key (pure-core callers that consult no history)
    patient_secret: bytes | None = field(default=None, repr=False)
    # told (stage, bills done, bills in all) every `[intake] progress_every_bills` bills of
    # a long message: the shell logs it and counts it as a sign of life (watchdog)
    progress: Callable[[str, int, int], None] | None = None


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
