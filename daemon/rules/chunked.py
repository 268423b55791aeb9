"""The rules on a streamed claim, in chunks (#17.4): the same rules, the same outcome.

`decide.evaluate` holds the whole claim in memory. For a claim read as a stream
(`daemon.claims.stream`) the bills wait in a spill file and are judged in chunks of
`[intake] stream_chunk_bills`, in the same order and by the same functions
(`_judge`, `_finish`, `sameday.judge`). What spans chunks lives in the spill, not in
memory:

- the claim rules (COM-04 totals, COM-09) see the unit's bills as light rows
  (typeTransaksjon, sumBelop, TransDatoTid) read back from the spill;
- the same-file duplicate checks (COM-06: uuid, episode, service) ask a `keys` table
  of the new bills of earlier chunks; COM-07 asks the spill for every bill with a uuid;
- the same-day judgement (RAD-06..11) needs every radiology line of the claim in one
  order: pass 1 judges bill and line rules chunk by chunk and spills the candidates,
  then each (patient, day) is judged in the judgement order, then pass 2 finishes the
  bills (exam rules, payments) chunk by chunk;
- the decisions themselves go to the spill; `Decision.bills` reads them back in order
  (for the answer, the ledger and the metrics).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from functools import cached_property

from daemon.claims.read import N, claim_header
from daemon.claims.stream import Spill, dumps, loads
from daemon.domain import TRANSACTION_CREDIT, Bill, Claim, Decision, Unit, _day_of
from daemon.records import Context, Work
from daemon.rules import radiology, sameday
from daemon.rules.context import RuleContext, duplicate_keys
from daemon.rules.decide import (
    RULEBOOK,
    Trace,
    _finish,
    _judge,
    claim_rules,
    rule_context,
)
from daemon.transport.verify import check_dates

SAME_DAY_BATCH = 2000  # radiology candidates judged against the ledger in one go


@dataclass(frozen=True, slots=True)
class _Light:
    """A bill as the claim rules and the backdating check see it."""

    transaction_type: str
    sum_amount: Decimal
    claimed_at: str

    @property
    def service_date(self) -> date | None:
        return _day_of(self.claimed_at[:10])


class Spilled:
    """A table of the spill read back in file order: `len`, iteration (re-iterable)."""

    def __init__(self, spill: Spill, table: str, make) -> None:
        self.spill, self.table, self.make = spill, table, make
        self._len: int | None = None

    def __len__(self) -> int:
        if self._len is None:
            (self._len,) = self.spill.db.execute(f"SELECT count(*) FROM {self.table}").fetchone()
        return self._len

    def __bool__(self) -> bool:
        return len(self) > 0

    def __iter__(self) -> Iterator:
        make = self.make
        for (blob,) in self.spill.db.execute(f"SELECT blob FROM {self.table} ORDER BY pos"):
            yield make(loads(blob))


class _LightBills(Spilled):
    def __init__(self, spill: Spill) -> None:
        super().__init__(spill, "bills", None)

    def __len__(self) -> int:
        return self.spill.count()

    def __iter__(self) -> Iterator[_Light]:
        for ttype, amount, at in self.spill.light_bills():
            yield _Light(ttype, amount, at)


@dataclass(frozen=True)
class StreamedClaim:
    """The claim as the ledger and the answer see it: its institution and its bills,
    read back from the spill in file order."""

    institution_id: str
    period_from: str
    bills: Spilled


class _ByUuid(Mapping):
    """uuid → ((position, typeTransaksjon), ...) over the whole claim, from the spill."""

    def __init__(self, spill: Spill) -> None:
        self.spill = spill

    def __getitem__(self, uuid: str) -> tuple[tuple[int, str], ...]:
        rows = self.spill.db.execute(
            "SELECT pos, ttype FROM bills WHERE uuid = ? ORDER BY pos", (uuid,)
        ).fetchall()
        return tuple((pos, ttype) for pos, ttype in rows)

    def __iter__(self):
        return (r[0] for r in self.spill.db.execute("SELECT DISTINCT uuid FROM bills"))

    def __len__(self) -> int:
        return self.spill.db.execute("SELECT count(DISTINCT uuid) FROM bills").fetchone()[0]


@dataclass(frozen=True)
class ChunkContext(RuleContext):
    """A RuleContext whose `claim` is one chunk, with the claim-wide questions answered
    from the spill: positions are positions in the whole claim."""

    spill: Spill | None = None
    at: Mapping[int, int] = field(default_factory=dict)  # id(bill) → position in the claim

    @cached_property
    def positions(self) -> dict[int, int]:
        return dict(self.at)

    @cached_property
    def bills_by_uuid(self) -> Mapping[str, tuple[tuple[int, str], ...]]:
        return _ByUuid(self.spill)

    @cached_property
    def _new_bills_by_key(self) -> dict[object, tuple[int, ...]]:
        index: dict[object, list[int]] = {}
        for key, position in _keys(self.claim.bills, self.positions):
            index.setdefault(key, []).append(position)
        return {key: tuple(positions) for key, positions in index.items()}

    def earlier_in_claim(self, bill: Bill, key: object) -> bool:
        if super().earlier_in_claim(bill, key):
            return True
        return repr(key) in self._earlier_keys  # a new bill of an earlier chunk

    @cached_property
    def _earlier_keys(self) -> set[str]:
        """This chunk's duplicate keys that new bills of earlier chunks had: asked of
        the spill once per chunk, 500 at a time."""
        wanted = sorted({repr(key) for key in self._new_bills_by_key})
        found: set[str] = set()
        for i in range(0, len(wanted), 500):
            part = wanted[i : i + 500]
            marks = ",".join("?" * len(part))
            rows = self.spill.db.execute(f"SELECT key FROM keys WHERE key IN ({marks})", part)
            found.update(r[0] for r in rows)
        return found

    def judge_same_day(self, days):
        inst = self.claim.institution_id
        corrected = {
            (inst, uuid)
            for (uuid,) in self.spill.db.execute(
                "SELECT DISTINCT uuid FROM bills WHERE uuid IS NOT NULL AND ttype IN ('4', '5')"
            )
        }
        out: dict[object, sameday.Outcome] = {}
        basis = []
        for (patient, day), current in days.items():
            basis.append((patient, day, self.history.day_version(patient, day)))
            earlier = [
                e
                for e in self.history.exams_on(patient, day)
                if (e.institution_id, e.uuid) not in corrected
            ]
            out.update(sameday.judge(current, earlier, self.settings))
        return out, tuple(basis)


def _keys(bills, positions: Mapping[int, int]) -> Iterator[tuple[object, int]]:
    """(key, position) of the same-file duplicate keys of new bills, as
    `RuleContext._new_bills_by_key` makes them."""
    for bill in bills:
        for key in duplicate_keys(bill):
            yield key, positions[id(bill)]


def _claim_of(melding, bills) -> Claim:
    institution = melding.find(f"{N}Institusjon")
    enhet = institution.find(f"{N}Enhet")
    krav = enhet.find(f"{N}Krav")
    sum_text = krav.get("sumKravBelop")
    unit = Unit(
        enhet_id=enhet.get("enhetID", ""),
        enhet_kode=enhet.get("enhetKode", ""),
        resh_id=enhet.get("reshID", ""),
        name=enhet.get("enhetLokal"),
        claimed_count=int(krav.get("antallRegninger", "0")),
        claimed_sum=Decimal(sum_text) if sum_text else Decimal("0"),
        bills=bills,
    )
    return Claim(**claim_header(melding, institution), units=(unit,))


def _dump(value) -> bytes:
    return dumps(value)


def decide_streamed(work: Work, ctx: Context, spill: Spill) -> Work:
    """`check_dates` and `decide` for a streamed claim (after `stream_validate`)."""
    melding = work.msghead.find(
        "{*}Document/{*}RefDoc/{*}Content/*"
    )  # the skeleton: the bills are in the spill
    light = _claim_of(melding, _LightBills(spill))
    work = check_dates(work.with_(claim=light), ctx)
    if work.problems:
        return work
    db = spill.db
    db.executescript(
        """
        CREATE INDEX bills_uuid ON bills (uuid);
        CREATE TABLE keys (key TEXT PRIMARY KEY);
        CREATE TABLE judged (pos INTEGER PRIMARY KEY, blob BLOB);
        CREATE TABLE cands (patient TEXT, day TEXT, instant TEXT, pos INTEGER,
                            number INTEGER, blob BLOB);
        CREATE TABLE outcomes (pos INTEGER, number INTEGER, blob BLOB,
                               PRIMARY KEY (pos, number));
        CREATE TABLE decisions (pos INTEGER PRIMARY KEY, blob BLOB);
        """
    )
    base = rule_context(light, ctx, work.partner)
    trace = Trace()
    problems, decision = claim_rules(light, base, RULEBOOK, trace)
    streamed = StreamedClaim(
        light.institution_id,
        light.period_from,
        Spilled(spill, "judged", lambda j: j.bill),
    )
    if decision is not None:
        return work.with_(claim=streamed, decision=decision).failed(*problems)
    total = spill.count()
    chunk = ctx.settings.intake.stream_chunk_bills
    every = ctx.settings.intake.progress_every_bills
    inst = light.institution_id
    done = 0
    # pass 1: bill and line rules, chunk by chunk; the radiology candidates spilled
    for part in spill.bills(chunk):
        bills = tuple(b for _, b in part)
        rc = _chunk_context(base, light, bills, {id(b): pos for pos, b in part}, spill)
        rows, cands = [], []
        for pos, bill in part:
            j = _judge(bill, rc, RULEBOOK, trace)
            rows.append((pos, _dump(j)))
            cands.extend(_candidates(pos, j, rc, inst))
            done += 1
            if ctx.progress is not None and total >= every and done % every == 0:
                ctx.progress("decide", done, total)
        db.executemany("INSERT INTO judged VALUES (?, ?)", rows)
        db.executemany("INSERT INTO cands VALUES (?, ?, ?, ?, ?, ?)", cands)
        db.executemany(
            "INSERT OR IGNORE INTO keys VALUES (?)",
            [(repr(key),) for key, _pos in _keys(bills, rc.positions)],
        )
    # the same-day judgement, each (patient, day) in the judgement order
    basis = _same_day(base, light, spill)
    # pass 2: exam rules and payments, chunk by chunk; the decisions spilled
    last = -1
    while True:
        rows = db.execute(
            "SELECT pos, blob FROM judged WHERE pos > ? ORDER BY pos LIMIT ?", (last, chunk)
        ).fetchall()
        if not rows:
            break
        last = rows[-1][0]
        judged = [(pos, loads(blob)) for pos, blob in rows]
        outcomes = {
            (pos, number): loads(blob)
            for pos, number, blob in db.execute(
                "SELECT pos, number, blob FROM outcomes WHERE pos BETWEEN ? AND ?",
                (rows[0][0], last),
            )
        }
        same_day = {}
        for pos, j in judged:
            for number, line in enumerate(j.bill.lines, start=1):
                if (pos, number) in outcomes:
                    same_day[(id(j.bill), id(line))] = outcomes[(pos, number)]
        bills = tuple(j.bill for _, j in judged)
        rc = _chunk_context(base, light, bills, {id(j.bill): pos for pos, j in judged}, spill)
        rc = replace(rc, same_day=same_day)
        db.executemany(
            "INSERT INTO decisions VALUES (?, ?)",
            [(pos, _dump(_finish(j, rc, RULEBOOK, trace))) for pos, j in judged],
        )
    bills_out = Spilled(spill, "decisions", lambda d: d)
    decision = Decision(bills_out, tuple(trace.fired), trace.count, basis)  # type: ignore[arg-type]
    return work.with_(claim=streamed, decision=decision)


def _chunk_context(
    base: RuleContext, light: Claim, bills: tuple[Bill, ...], at: dict[int, int], spill: Spill
) -> ChunkContext:
    claim = replace(light, units=(replace(light.units[0], bills=bills),))
    fields = {name: getattr(base, name) for name in RuleContext.__dataclass_fields__}
    fields["claim"] = claim
    return ChunkContext(**fields, spill=spill, at=at)


def _candidates(pos: int, j, rc: RuleContext, inst: str):
    """The bill's radiology lines as same-day candidates (as `decide._same_day` makes
    them), keyed by (position, line number) instead of object ids."""
    bill = j.bill
    patient = bill.episode.patient.key if bill.episode else None
    if patient is None or j.bill.transaction_type == TRANSACTION_CREDIT:
        return
    for number, line in enumerate(bill.lines, start=1):
        exam = radiology.exam_of(line, number, bill, rc)
        if exam is None:
            continue
        exam = replace(exam, institution_id=inst, uuid=bill.uuid)
        eligible = not (j.rejected or j.line_rejected[number - 1])
        candidate = sameday.Candidate((pos, number), pos, exam, eligible, inst)
        yield (patient, exam.day, bill.instant, pos, number, _dump(candidate))


def _same_day(base: RuleContext, light: Claim, spill: Spill) -> tuple:
    rc = _chunk_context(base, light, (), {}, spill)
    db = spill.db
    basis: list = []
    days: dict[tuple[str, str], list] = {}
    held = 0

    def judge() -> None:
        nonlocal days, held
        if not days:
            return
        outcomes, seen = rc.judge_same_day(days)
        db.executemany(
            "INSERT INTO outcomes VALUES (?, ?, ?)",
            [(key[0], key[1], _dump(o)) for key, o in outcomes.items()],
        )
        basis.extend(seen)
        days, held = {}, 0

    rows = db.execute(
        "SELECT patient, day, blob FROM cands ORDER BY patient, day, instant, pos, number"
    )
    current = None
    for patient, day, blob in rows:
        if (patient, day) != current and held >= SAME_DAY_BATCH:
            judge()
        current = (patient, day)
        days.setdefault(current, []).append(loads(blob))
        held += 1
    judge()
    return tuple(basis)
