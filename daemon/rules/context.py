"""What a rule may look at besides the bill: read-only, passed in, never global."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from functools import cached_property
from typing import Any

from daemon.domain import Bill, Claim, Unit
from daemon.records import BillHistory, NoBillHistory
from daemon.registers.registry import Institution, Partner
from daemon.registers.tariffs import Tariffs
from daemon.rule_settings import RuleSettings
from daemon.rules import sameday


@dataclass(frozen=True)
class RuleContext:
    today: date
    claim: Claim
    tariffs: Tariffs
    institution: Institution | None
    history: BillHistory = field(default_factory=NoBillHistory)
    settings: RuleSettings = field(default_factory=RuleSettings)
    sender: Partner | None = None  # the partner the message came from
    # the same-day outcomes (RAD-06..11) per (id(bill), id(line)), judged after every
    # other rule by `daemon.rules.decide` through `judge_same_day`
    same_day: Mapping[object, sameday.Outcome] = field(default_factory=dict)

    def paid_bill(self, uuid: str) -> Decimal | None:
        """What this institution's bill `uuid` has been paid before this claim (None:
        never paid). Asked of the ledger once for all the claim's uuids."""
        return self._paid.get(uuid)

    def service_seen(self, patient: str, codes: str, when: str) -> bool:
        """An earlier approved bill of this institution for the same patient, code set
        and instant. Asked of the ledger once for all the claim's bills."""
        return (patient, codes, when) in self._seen

    @cached_property
    def _paid(self) -> dict[str, Decimal]:
        uuids = sorted({b.uuid for b in self.claim.bills if b.uuid})
        return self.history.paid_bills(self.claim.institution_id, uuids) if uuids else {}

    @cached_property
    def _seen(self) -> set[tuple[str, str, str]]:
        services = sorted(
            {
                (b.episode.patient.key, b.codes, b.instant)
                for b in self.claim.bills
                if b.is_new and b.episode is not None and b.episode.patient.key and b.lines
            }
        )
        if not services:
            return set()
        return self.history.services_seen(self.claim.institution_id, services)

    def earlier_in_claim(self, bill: Bill, key: object) -> bool:
        """Did a new bill earlier in this claim have the same `key`?"""
        return any(p < self.positions[id(bill)] for p in self._new_bills_by_key.get(key, ()))

    @cached_property
    def _new_bills_by_key(self) -> dict[object, tuple[int, ...]]:
        """Positions of new bills (typeTransaksjon 1-3) per uuid, per service (patient,
        code set, instant) and per episode: the same-file duplicate checks, in one pass."""
        index: dict[object, list[int]] = {}
        for position, bill in enumerate(self.claim.bills):
            for key in duplicate_keys(bill):
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

    def judge_same_day(
        self, days: Mapping[tuple[str, str], Sequence[sameday.Candidate]]
    ) -> tuple[dict[object, sameday.Outcome], tuple[tuple[str, str, int], ...]]:
        """RAD-06..11 for the whole claim: `days` holds this claim's radiology lines per
        (patient, day) in the judgement order; the exams approved earlier come from the
        ledger, less those whose bill this claim corrects or credits. Also returns the
        version of each day judged against (`Decision.same_day_basis`)."""
        inst = self.claim.institution_id
        corrected = {(inst, b.uuid) for b in self.claim.bills if not b.is_new and b.uuid}
        out: dict[object, sameday.Outcome] = {}
        basis = []
        for (patient, day), current in days.items():
            basis.append((patient, day, self.history.day_version(patient, day)))  # first
            earlier = [
                e
                for e in self.history.exams_on(patient, day)
                if (e.institution_id, e.uuid) not in corrected
            ]
            out.update(sameday.judge(current, earlier, self.settings))
        return out, tuple(basis)

    @property
    def sector(self) -> str:
        """Rates differ for state institutions and private ones with a driftsavtale."""
        return self.institution.sector if self.institution is not None else "stat"

    @cached_property
    def _resh(self) -> dict[int, str]:
        return {id(b): unit.resh_id for unit in self.claim.units for b in unit.bills}

    @cached_property
    def _units(self) -> dict[int, Unit]:
        return {id(b): unit for unit in self.claim.units for b in unit.bills}

    def unit_of(self, bill: Bill) -> Unit | None:
        """The unit (`Enhet`) whose Krav holds `bill`."""
        return self._units.get(id(bill))

    @cached_property
    def first_of(self) -> dict[object, Any]:
        """(kind, key) → the position of the first bill with it, for rule sets that ask
        "did an earlier bill of this claim have it" in one pass (EG-08); filled by
        the rule set on first use, per claim."""
        return {}

    def services(self, bill: Bill) -> tuple[str, ...]:
        """What the unit (`Enhet`, by reshID) that claims `bill` is approved for: its
        own registered services, or the institution's (LAB-04/05, COM-09)."""
        if self.institution is None:
            return ()
        return self.institution.services_of(self._resh.get(id(bill)))


def duplicate_keys(bill: Bill) -> list[tuple]:
    """The same-file duplicate keys of a bill: its uuid, its episode and its service
    (patient, code set, instant); none for a correction or credit (only new bills, 1-3)."""
    if not bill.is_new:
        return []
    keys: list[tuple] = []
    if bill.uuid:
        keys.append(("uuid", bill.uuid))
    if bill.episode_id:
        keys.append(("episode", bill.episode_id))
    patient = bill.episode.patient.key if bill.episode else None
    if patient and bill.lines:
        keys.append(("service", patient, bill.codes, bill.instant))
    return keys
