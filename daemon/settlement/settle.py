"""Settlement: approved lines become money, exactly once.

KUHR's practice: every working day at 16:00 the claims answered so far are gathered,
one decision (vedtak) per payee, and paid. Here:

1. `Calendar` says when a batch runs: a cron expression in a time zone, minus public
   holidays (the `holidays` library) and configured days off.
2. `settle()` runs one batch. In ONE ledger transaction it records the run, selects the
   open payments of claims answered up to the cut-off, groups them per payee, renders
   and signs each payee's vedtak (M22 Oppgjørsresultat) and payment (M23-style
   Utbetaling), and assigns every payment to its vedtak. A killed process leaves all of
   it or none of it: a payment is never in two vedtak, and never dropped.
3. `deliver()` writes the recorded files to the outbox (temp, fsync, rename) and marks
   them delivered; it runs after every batch and at start, so files a kill cut off are
   written again from the ledger, byte for byte.

A credit or correction is a new payment of its own (negative, or the difference): an
old vedtak is never changed.
"""

from __future__ import annotations

import time
import uuid as uuid_module
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import holidays as holiday_calendars
from apscheduler.triggers.cron import CronTrigger

from daemon import files
from daemon.claims import answer
from daemon.config import ConfigError, Settings
from daemon.domain import PartyRef
from daemon.ledger.sqlite import MadeVedtak, OpenPayment
from daemon.logs import get as get_logger
from daemon.records import Context
from daemon.registers.registry import Partner, Registry
from daemon.registers.tariffs import Tariffs
from daemon.settlement import vedtak
from daemon.settlement.vedtak import Payee, Utbetaling, Vedtak, VedtakLine
from daemon.transport import ebms

SERVICE = "OppgjorsKontroll"
ACTIONS = {"vedtak": "Oppgjorsresultat", "utbetaling": "Utbetaling"}
RECEIVER_ROLE = "Oppgjorsmottaker"
STATUS_OF_VERDICT = {
    "approved": vedtak.STATUS_APPROVED,
    "reduced": vedtak.STATUS_REDUCED,
    "rejected": vedtak.STATUS_REJECTED,
}


# --------------------------------------------------------------------------- when


@dataclass(frozen=True)
class Calendar:
    trigger: CronTrigger
    zone: ZoneInfo
    days_off: holiday_calendars.HolidayBase | None
    extra: frozenset[date] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> Calendar:
        s = settings.settlement
        try:
            zone = ZoneInfo(s.timezone)
            trigger = CronTrigger.from_crontab(s.cron, timezone=zone)
            days_off = (
                holiday_calendars.country_holidays(s.holidays_country)
                if s.holidays_country
                else None
            )
            extra = frozenset(date.fromisoformat(d) for d in s.extra_holidays)
        except (ValueError, KeyError, NotImplementedError) as exc:
            raise ConfigError(f"[settlement] {exc}") from exc
        return cls(trigger, zone, days_off, extra)

    def working_day(self, day: date) -> bool:
        return day not in self.extra and (self.days_off is None or day not in self.days_off)

    def runs_between(self, start: datetime, end: datetime) -> Iterable[datetime]:
        """The batch instants in (start, end], holidays left out."""
        fire = self.trigger.get_next_fire_time(None, start + timedelta(microseconds=1))
        while fire is not None and fire <= end:
            if self.working_day(fire.astimezone(self.zone).date()):
                yield fire
            fire = self.trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))

    def next_run(self, now: datetime) -> datetime | None:
        return next(iter(self.runs_between(now, now + timedelta(days=62))), None)

    def last_run(self, now: datetime) -> datetime | None:
        """The latest batch instant at or before `now` (looking a month back)."""
        found = None
        for fire in self.runs_between(now - timedelta(days=31), now):
            found = fire
        return found


def run_key(instant: datetime) -> str:
    return f"batch:{instant.astimezone(UTC).isoformat()}"


# --------------------------------------------------------------------------- who


def payee_of(key: str, tariffs: Tariffs | None, registry: Registry) -> Payee | None:
    """`RHF:<name>` from the RHF table; `INST:<orgnr>` from the institution registry.
    None: we cannot address this payee (its payments wait, and a log line says so)."""
    kind, _, ident = key.partition(":")
    if kind == "RHF" and tariffs is not None:
        rhf = tariffs.rhf.by_name(ident)
        if rhf is not None:
            return Payee(key, rhf.name, rhf.orgnr, rhf.account)
    if kind == "INST":
        inst = registry.institution(ident)
        if inst is not None:
            return Payee(key, inst.name, inst.orgnr, inst.account)
    return None


def why_unaddressable(key: str | None, tariffs: Tariffs | None, registry: Registry) -> str:
    """In an operator's words: why the payments of `key` cannot be paid."""
    if key is None:
        return "no payee: the institution was not in the registry when the bill was decided"
    kind, _, ident = key.partition(":")
    if kind == "RHF":
        known = ", ".join(r.name for r in tariffs.rhf.rhfs) if tariffs is not None else ""
        return f"no RHF named {ident!r} in the RHF table (rhf.toml); known: {known or 'none'}"
    if kind == "INST":
        return f"institution {ident} is not in the institution registry (institutions.toml)"
    return f"unknown kind of payee {kind!r} (RHF:<name> or INST:<orgnr>)"


@dataclass(frozen=True)
class Held:
    """Open payments no batch can pay: the payee cannot be addressed."""

    payee: str | None
    payments: int
    approved: Decimal
    since: str
    reason: str

    def as_dict(self) -> dict:
        return {
            "payee": self.payee,
            "payments": self.payments,
            "approved": str(self.approved),
            "since": self.since,
            "reason": self.reason,
        }


def held(ledger, tariffs: Tariffs | None, registry: Registry) -> list[Held]:
    """Every payee whose open payments a batch would leave behind, with the reason.
    Payments of no payee that move no money (bills of unknown institutions, rejected)
    are not held: there is nothing to pay."""
    out = []
    for t in ledger.open_by_payee():
        if t.payee is None and t.approved == 0:
            continue
        if t.payee is not None and payee_of(t.payee, tariffs, registry) is not None:
            continue
        reason = why_unaddressable(t.payee, tariffs, registry)
        out.append(Held(t.payee, t.payments, t.approved, t.since, reason))
    return out


def partner_of(payee: Payee, registry: Registry) -> Partner | None:
    """The payee's agreement, when it has one (matched by organisation number)."""
    return next((p for p in registry.partners if p.orgnr == payee.orgnr), None)


# --------------------------------------------------------------------------- what


@dataclass(frozen=True)
class Batch:
    """What one run needs besides the ledger."""

    ctx: Context  # settings, schemas, registry, keys, tariffs, now
    cutoff: datetime
    tick: Callable[[], None] = lambda: None  # a sign of life per payee (systemd watchdog)


def make(batch: Batch, run: int, payments: list[OpenPayment]) -> list[MadeVedtak]:
    """Group the open payments per payee and render each payee's vedtak and payment.
    Pure apart from signing; called inside the ledger's transaction."""
    log = get_logger()
    ctx = batch.ctx
    decided_on = batch.cutoff.astimezone(ZoneInfo(ctx.settings.settlement.timezone)).date()
    by_payee: dict[str, list[OpenPayment]] = {}
    for p in payments:
        by_payee.setdefault(p.payee, []).append(p)
    out = []
    for n, (key, rows) in enumerate(sorted(by_payee.items()), start=1):
        batch.tick()
        payee = payee_of(key, ctx.tariffs, ctx.registry)
        if payee is None:  # held: `status`, `payments held`, the metric and settle's exit say so
            log.error(
                "payments_held",
                payee=key,
                payments=len(rows),
                kroner=str(sum((p.approved for p in rows), Decimal("0"))),
                reason=why_unaddressable(key, ctx.tariffs, ctx.registry),
            )
            continue
        v = Vedtak(
            oppgjors_nr=f"{decided_on:%Y%m%d}-{run}-{n}",
            payee=payee,
            decided_on=decided_on,
            cutoff=batch.cutoff,
            lines=tuple(_line(p) for p in rows),
        )
        out.append(
            MadeVedtak(
                oppgjors_nr=v.oppgjors_nr,
                payee=key,
                decided_on=decided_on.isoformat(),
                claimed=v.claimed_total,
                approved=v.total,
                payment_ids=tuple(p.id for p in rows),
                outputs=render(v, ctx),
            )
        )
    return out


def _line(p: OpenPayment) -> VedtakLine:
    status = STATUS_OF_VERDICT[p.verdict]
    if p.transaction_type in ("4", "5") and p.verdict != "rejected":
        status = vedtak.STATUS_APPROVED  # the difference or the credit is what is decided
    # the M22 Regning has no field for the line kind: an egenandel paid to the
    # institution (EG-02) says so in a Merknad
    kind = (f"Linjetype: {p.kind}",) if p.kind != "refusjon" else ()
    return VedtakLine(
        regning_nr=p.regning_nr,
        claimed=p.claimed,
        approved=p.approved,
        status=status,
        remarks=kind + p.remarks,
    )


def render(v: Vedtak, ctx: Context) -> tuple[tuple[str, str, bytes], ...]:
    """The vedtak (and, when money moves, the payment) as signed ebMS messages."""
    ids = _Ids(v.oppgjors_nr)
    stamp = answer.timestamp(ctx.now)
    bodies = [("vedtak", vedtak.render_oppgjorsresultat(
        v, us=ctx.settings.party, msg_id=ids.new("m22"), gen_date=ctx.now, keys=ctx.keys
    ))]  # fmt: skip
    if v.total != Decimal("0"):
        payment = Utbetaling(
            utbetalings_nr=f"U{v.oppgjors_nr}",
            payee=v.payee,
            amount=v.total,
            paid_on=v.decided_on,
            oppgjors_nr=v.oppgjors_nr,
        )
        bodies.append(("utbetaling", vedtak.render_utbetaling(
            payment, us=ctx.settings.party, msg_id=ids.new("m23"), gen_date=ctx.now, keys=ctx.keys
        )))  # fmt: skip
    partner = partner_of(v.payee, ctx.registry)
    us = PartyRef(ctx.settings.party.her_id, "HER", ctx.settings.party.role)
    to = (
        PartyRef(partner.her_id, "HER", RECEIVER_ROLE)
        if partner is not None
        else PartyRef(v.payee.orgnr, "ENH", RECEIVER_ROLE)
    )
    outputs = []
    for kind, xml in bodies:
        problems = vedtak.validate_vedtak(xml, ctx.schemas)
        if problems:  # never send what our own schema refuses: a bug, the run fails
            raise answer.InvalidOutput(f"{kind} {v.oppgjors_nr}: {problems[0]}")
        route = ebms.Route(
            from_party=us,
            to_party=to,
            cpa_id=partner.cpa_id if partner is not None else f"kravmottak:oppgjor:{v.payee.orgnr}",
            conversation_id=ids.new("conversation"),
            service=SERVICE,
            action=ACTIONS[kind],
            message_id=ids.new(f"{kind}-ebms"),
            timestamp=stamp,
        )
        part = answer.payload_part(f"{kind}-{v.oppgjors_nr}@kravmottak", xml, partner)
        env = ebms.envelope(route, manifest=(part.content_id,))
        content = answer.ebms_message(env, [part], ctx)
        outputs.append((kind, f"{kind}-{v.oppgjors_nr}.msg", content))
    return tuple(outputs)


@dataclass(frozen=True)
class _Ids:
    seed: str

    def new(self, purpose: str) -> str:
        return str(
            uuid_module.uuid5(uuid_module.NAMESPACE_URL, f"kravmottak:{self.seed}:{purpose}")
        )


# --------------------------------------------------------------------------- the shell


@dataclass(frozen=True)
class Result:
    run: int | None  # None: a run with this key had already happened
    vedtak: int
    delivered: int
    held: tuple[Held, ...] = ()  # what no batch can pay until the payee is repaired


def settle(intake, *, cutoff: datetime, kind: str, key: str | None = None) -> Result:
    """Run one batch up to `cutoff` and deliver its files. `intake` is the daemon's
    loaded state (ledger, settings, schemas, registry, keys, tariffs, clock). `key`
    names a scheduled batch, so it runs once however often it is asked for; without
    one (`kravmottak settle`) every call is a run of its own.

    Several workers: the batch runs under the ledger's settlement lock, taken without
    waiting; a worker that finds it held leaves the batch to its holder (run None). A
    worker killed inside the batch loses the lock with its connection, and its
    transaction with it: the next batch takes everything."""
    with intake.ledger.settlement_lock() as ours:
        if not ours:
            get_logger().info("settlement_elsewhere", kind=kind, reason="another worker settles")
            return Result(None, 0, 0)
        return _settle(intake, cutoff=cutoff, kind=kind, key=key)


def _settle(intake, *, cutoff: datetime, kind: str, key: str | None) -> Result:
    log = get_logger()
    now = intake.clock()
    batch = Batch(intake.context(now), cutoff, tick=lambda: _alive(intake))
    made: list[MadeVedtak] = []

    def make_and_count(run_id: int, payments: list[OpenPayment]) -> list[MadeVedtak]:
        made[:] = make(batch, run_id, payments)  # a retried transaction starts afresh
        return made

    run = intake.ledger.settle(
        key, kind, cutoff.astimezone(UTC).isoformat(), now.isoformat(), make_and_count
    )
    delivered = deliver(intake)
    left = tuple(held(intake.ledger, intake.tariffs, intake.registry))
    log.info(
        "settled",
        run=run,
        kind=kind,
        cutoff=cutoff.isoformat(),
        vedtak=len(made),
        bills=sum(len(m.payment_ids) for m in made),
        kroner=str(sum((m.approved for m in made), Decimal("0"))),
        held_payees=len(left),
    )
    return Result(run, len(made), delivered, left)


def _alive(intake) -> None:
    if hasattr(intake, "heartbeat"):
        intake.heartbeat = time.monotonic()


def deliver(intake) -> int:
    """Write every recorded vedtak's files that are not in the outbox yet."""
    count = 0
    for vedtak_id, outputs in intake.ledger.undelivered():
        for name, content in outputs:
            files.write_atomic(intake.settings.paths.outbox / name, content)
        intake.ledger.mark_delivered(vedtak_id, intake.clock().isoformat())
        count += 1
    return count


def scheduled_batch(intake, calendar: Calendar, now: datetime) -> Result | None:
    """The cron job (e.g. 16:00 Europe/Oslo, Monday to Friday): the batch of the latest
    scheduled instant, unless today is a day off. A batch runs once, however often the
    job fires for it (its key is the instant)."""
    if not calendar.working_day(now.astimezone(calendar.zone).date()):
        get_logger().info("settlement_skipped", reason="day off")
        return None
    scheduled = calendar.last_run(now)
    if scheduled is None:
        return None
    return settle(intake, cutoff=scheduled, kind="scheduled", key=run_key(scheduled))


def make_up(intake, calendar: Calendar) -> Result | None:
    """At start: the latest batch the daemon was down for, when no run has covered it."""
    last = calendar.last_run(intake.clock())
    if last is None or intake.ledger.settled_since(last.astimezone(UTC).isoformat()):
        return None
    return settle(intake, cutoff=last, kind="make-up", key=run_key(last))
