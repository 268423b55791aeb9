"""What a rule may look at besides the bill: read-only, passed in, never global."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from functools import cached_property
from typing import Protocol

from daemon.domain import Bill, Claim
from daemon.registry import Institution, Partner
from daemon.rules.settings import RuleSettings
from daemon.tariffs import Tariffs


class BillHistory(Protocol):
    """Earlier bills, as the ledger remembers them (only accepted outcomes count)."""

    def paid_bill(self, institution_id: str, uuid: str) -> Decimal | None:
        """What this uuid has been paid so far, net of corrections and credits; None when
        no bill with it was ever paid (approved or reduced)."""
        ...

    def service_seen(self, institution_id: str, patient_key: str, codes: str, when: str) -> bool:
        """An earlier approved bill for the same patient, code set and TransDatoTid."""
        ...


class NoBillHistory:
    def paid_bill(self, institution_id: str, uuid: str) -> Decimal | None:
        return None

    def service_seen(self, institution_id: str, patient_key: str, codes: str, when: str) -> bool:
        return False


@dataclass(frozen=True)
class RuleContext:
    today: date
    claim: Claim
    tariffs: Tariffs
    institution: Institution | None
    history: BillHistory = field(default_factory=NoBillHistory)
    settings: RuleSettings = field(default_factory=RuleSettings)
    sender: Partner | None = None  # the partner the message came from

    def earlier_in_claim(self, bill: Bill, key: object) -> bool:
        """Did a new bill earlier in this claim have the same `key`?"""
        return any(p < self.positions[id(bill)] for p in self._new_bills_by_key.get(key, ()))

    @cached_property
    def _new_bills_by_key(self) -> dict[object, tuple[int, ...]]:
        """Positions of new bills (typeTransaksjon 1-3) per uuid, per service (patient,
        code set, instant) and per episode: the same-file duplicate checks, in one pass."""
        from daemon.rules.common import service_codes

        index: dict[object, list[int]] = {}
        for position, bill in enumerate(self.claim.bills):
            if not bill.is_new:
                continue
            keys = []
            if bill.uuid:
                keys.append(("uuid", bill.uuid))
            if bill.episode_id:
                keys.append(("episode", bill.episode_id))
            patient = bill.episode.patient.key if bill.episode else None
            if patient and bill.lines:
                keys.append(("service", patient, service_codes(bill), bill.instant))
            for key in keys:
                index.setdefault(key, []).append(position)
        return {key: tuple(positions) for key, positions in index.items()}

    @cached_property
    def bills_by_uuid(self) -> dict[str, tuple[tuple[int, str], ...]]:
        """uuid → ((position in the claim, typeTransaksjon), ...), built once per claim:
        the same-file checks of COM-06/07 stay linear for 10 000-bill claims."""
        index: dict[str, list[tuple[int, str]]] = {}
        for position, bill in enumerate(self.claim.bills):
            if bill.uuid:
                index.setdefault(bill.uuid, []).append((position, bill.transaction_type))
        return {uuid: tuple(entries) for uuid, entries in index.items()}

    @cached_property
    def positions(self) -> dict[int, int]:
        """id(bill) → its position in the claim."""
        return {id(bill): n for n, bill in enumerate(self.claim.bills)}

    @property
    def sector(self) -> str:
        """Rates differ for state institutions and private labs with a driftsavtale."""
        if self.institution is not None and "private-driftsavtale" in self.institution.kinds:
            return "privat"
        return "stat"
