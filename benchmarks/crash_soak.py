"""Crash soak: the real daemon and real `settle` runs, SIGKILLed again and again.

    .venv/bin/python benchmarks/crash_soak.py --messages 1000 --kills 20 --seed 1

A sandbox with twenty institutions: Demo sykehus HF, three private labs with a
driftsavtale under the other three RHFs, and sixteen paid directly, so a batch has up
to twenty payees (the four RHFs and the sixteen). Generated claims
(`benchmarks/generate.py`: signed, encrypted and gzipped, lab and radiology, some lines
wrong) are dropped into the inbox in waves while the real daemon
(`python -m daemon --config CFG run`) runs. At seeded random instants something is
SIGKILLed:

- **intake**: the daemon, while it answers a wave (after a random number of answers);
- **start-up**: the daemon right after a restart: just as it recovers what the last
  kill left in work/, or at a random instant of its start (imports, schemas, tariffs,
  undelivered vedtak, the make-up batch);
- **settlement**: a `kravmottak settle` process started between waves. Half start
  while the daemon still answers the wave and die at a random instant; the others
  start when it is idle and are aimed, by watching the ledger's write lock, at a
  random instant of the batch's transaction, at the moment after its commit while
  the vedtak files are written, or anywhere in the run.

Every killed daemon is restarted at once. At the end one daemon runs until the inbox
and work/ are empty, and one `settle` runs to its end. Then the invariants are checked
from the ledger, the outbox and the folders alone; only the set of dropped files (the
generator's output for the seed) and what the generator says each bill is worth are
taken from outside. A table says what happened; the exit status is 1 on any violation.

Several workers (`--workers N --ledger postgresql://…`, or `--ledger temp` for a
throw-away cluster started here, tests/pg.py): N `run --worker-id` processes share the
inbox and one PostgreSQL ledger. Each intake or start-up kill strikes a random worker;
it comes back at once, half of the time under its own id (it recovers its own holds),
otherwise under a new one (the others take its files over: its process is gone). The
`settle` processes take the ledger's settlement lock while the workers answer.

Competing claims (`--conflicts N`, a share of --messages below 1, else a count): extra
messages in groups dropped side by side, a bill re-sent in several messages (COM-06
pays one) or CT/MR/UL exams of one patient and day one per message (RAD-06 pays two).
The plan cannot know which message of a group wins, so the check counts the winners of
each group and checks every patient and day against the same-day limits.

The sandbox's clock is frozen at 2026-11-23T12:00Z (the generated claims are judged on
that day), so the daemon's make-up batch at its first start covers Friday's 16:00
batch and finds nothing: every claim is answered "at" the frozen instant, after it.
The settlement kills are therefore all on `settle` processes.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from lxml import etree

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import generate  # noqa: E402
from daemon import files  # noqa: E402
from daemon.registers import ncrp  # noqa: E402
from daemon.registers.registry import load_institutions  # noqa: E402
from daemon.rules.sameday import DAILY_LIMIT  # noqa: E402
from daemon.transport import (  # noqa: E402
    keys,
    mime,
    trust,
)
from daemon.transport.ebms import NS  # noqa: E402
from tests.conftest import Sandbox, make_sandbox  # noqa: E402

AR = "{http://www.kith.no/xmlstds/apprec/2004-11-21}"
M22 = "{http://www.kith.no/xmlstds/eresept/m22/2006-10-06}"
UTB = "{http://kravmottak.no/xmlstds/utbetaling/2026-11-23}"
MH = "{http://www.kith.no/xmlstds/msghead/2006-05-24}"
ZERO = Decimal("0")


# --------------------------------------------------------------------------- the sandbox


def orgnr(n: int) -> str:
    """A made-up organisation number with a valid mod-11 control digit."""
    for base in range(970_000_00 + n * 10, 970_000_00 + n * 10 + 10):
        digits = [int(c) for c in f"{base:08d}"]
        k = 11 - sum(w * d for w, d in zip((3, 2, 7, 6, 5, 4, 3, 2), digits, strict=True)) % 11
        if k == 11:
            return f"{base:08d}0"
        if k < 10:
            return f"{base:08d}{k}"
    raise ValueError(n)


def institutions_toml(her_id: str, direct: int = 16) -> str:
    """Demo sykehus HF (Helse Sør-Øst), private labs with a driftsavtale under the other
    three RHFs (their own rates), and `direct` institutions paid directly (no RHF)."""
    rows = [
        ("983974678", "Demo sykehus HF", "Helse Sør-Øst RHF", ["hf"]),
        (orgnr(1), "Vestlab AS", "Helse Vest RHF", ["private-driftsavtale"]),
        (orgnr(2), "Midtlab AS", "Helse Midt-Norge RHF", ["private-driftsavtale"]),
        (orgnr(3), "Nordlab AS", "Helse Nord RHF", ["private-driftsavtale"]),
    ]
    rows += [(orgnr(10 + n), f"Ideelt sykehus {n + 1}", "", ["hf"]) for n in range(direct)]
    return "".join(
        f'[[institution]]\norgnr = "{o}"\nname = "{name}"\nrhf = "{rhf}"\n'
        f"kinds = {kinds!r}\nsenders = [{her_id!r}]\n\n".replace("'", '"')
        for o, name, rhf, kinds in rows
    )


def set_intake(box: Sandbox, **values: float) -> None:
    text = box.config_path.read_text(encoding="utf-8")
    for key, value in values.items():
        lines = text.splitlines()
        lines = [f"{key} = {value}" if line.startswith(f"{key} = ") else line for line in lines]
        text = "\n".join(lines) + "\n"
    box.config_path.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- processes


class Daemon:
    """One run of `python -m daemon run`, its output in a file."""

    def __init__(self, box: Sandbox, logs: Path, run: int, worker: str | None = None) -> None:
        self.log = logs / f"daemon-{run:02d}.log"
        self.started_at = time.monotonic()
        self.worker = worker
        extra = ["--worker-id", worker] if worker else []
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daemon", "--config", str(box.config_path), "run", *extra],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    def logged(self, event: str) -> bool:
        return f'"event": "{event}"'.encode() in self.log.read_bytes()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> int:
        self.proc.kill()
        return self.proc.wait(timeout=30)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]


def settle_process(box: Sandbox, logs: Path, n: int) -> tuple[subprocess.Popen, Path]:
    log = logs / f"settle-{n:02d}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "--config", str(box.config_path), "settle"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    return proc, log


def wait_for(condition: Callable[[], bool], timeout: float, what: str, step=0.002) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def count_files(folder: Path) -> int:
    """Files under `folder` (one level of subfolders: the archive's days)."""
    total = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir():
                with os.scandir(entry.path) as inner:
                    total += sum(1 for e in inner if e.is_file())
            else:
                total += 1
    return total


def connect(box: Sandbox):
    """The sandbox's ledger for the soak's own reads, whichever backend."""
    if box.ledger_url:
        from tests.conftest import PgConnection

        return PgConnection(box.ledger_url)
    return sqlite3.connect(f"file:{box.paths.ledger}?mode=ro", uri=True)


def write_lock_held(ledger: Path) -> bool:
    """Is some process inside a write transaction right now?"""
    db = sqlite3.connect(ledger, timeout=0, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        db.close()


# --------------------------------------------------------------------------- conflicts

SAME_DAY_REGIONS = ("Hode", "Toraks", "Overekstremitet", "Underekstremitet")  # no RAD-07 pair


@dataclass(frozen=True)
class ConflictGroup:
    """Messages whose bills compete: `duplicate`, one bill (same institution and uuid)
    sent in several messages, so COM-06 pays exactly one; `same-day`, one CT, MR or UL
    exam (`modality`, the same for the group) of one patient and day in each message,
    so RAD-06 pays exactly `sameday.DAILY_LIMIT`. The plan cannot know which win, only
    how many: `winners`."""

    kind: str
    winners: int
    messages: tuple[generate.PlannedMessage, ...]
    modality: str = ""

    @property
    def message_ids(self) -> set[str]:
        return {m.message_id for m in self.messages}


def _conflicts(
    spec: generate.Spec,
    institutions,
    base: list[generate.PlannedMessage],
    count: int,
) -> list[ConflictGroup]:
    """About `count` extra messages in conflict groups (seeded), half duplicate bills,
    half same-day CT, MR or UL exams. Every bill is without defects and has a patient of its own
    group, so the only thing that can reject one is the conflict."""
    rng = random.Random(f"{spec.seed}/conflicts")
    codes = generate._Codes(generate.default_tariffs(), replace(spec, invalid=0.0))
    seen = {b.fnr for m in base for b in m.bills}
    people = generate._People(rng)
    people.used |= seen
    radiology = [i for i in institutions if "radiology" in i.services]
    claimable = [i for i in institutions if {"lab", "radiology"} & set(i.services)]
    limited = {  # codes of one region each, of regions no RAD-07 list pairs
        group: [
            c
            for c in codes.radiology.get(group, [])
            if c.modality == group and len(c.regions) == 1 and c.regions[0] in SAME_DAY_REGIONS
        ]
        for group in ("CT", "MR", "UL")
    }
    limited = {g: pool for g, pool in limited.items() if len(pool) >= DAILY_LIMIT + 2}
    if not radiology or not limited:
        raise ValueError("--conflicts needs radiology institutions and CT, MR or UL codes")
    regning = iter(range(900_001, 10**9))
    index = iter(range(len(base), 10**9))
    groups: list[ConflictGroup] = []
    made = 0
    while made < count:
        day = spec.today - timedelta(days=rng.randint(2, spec.days_back))
        fnr = people.new()
        municipality = generate._municipality(rng)

        def common(at: str, day=day, fnr=fnr, municipality=municipality) -> dict:
            return {
                "regning_nr": str(next(regning)),
                "uuid": generate._uuid(rng, braces=True),
                "episode_id": "1",
                "fnr": fnr,
                "municipality": municipality,
                "instant": f"{day.isoformat()}T{at}",
            }

        def message(inst, bill, day=day) -> generate.PlannedMessage:
            n = next(index)
            sent = max(day + timedelta(days=1), spec.today - timedelta(days=rng.randint(1, 5)))
            return generate.PlannedMessage(
                index=n,
                name=f"{spec.prefix}-{spec.seed}-c{n:06d}.msg",
                message_id=generate._uuid(rng),
                conversation_id=generate._uuid(rng),
                msg_id=generate._uuid(rng),
                gen_date=datetime.combine(sent, datetime.min.time(), UTC)
                + timedelta(hours=rng.randint(5, 10), minutes=rng.randint(0, 59)),
                institution=inst,
                bills=(bill,),
            )

        if len(groups) % 2 == 0:  # one bill re-sent in 2..3 messages
            inst = rng.choice(claimable)
            at = f"{rng.randint(7, 16):02d}:{rng.randint(0, 59):02d}:00"
            if "radiology" in inst.services and rng.random() < 0.5:
                bill = codes.radiology_bill(rng, inst, day, rng.randint(1, 3), common(at))
            else:
                bill = codes.lab_bill(rng, inst, day, rng.randint(1, 3), common(at))
            sent = [message(inst, bill) for _ in range(rng.randint(2, 3))]
            groups.append(ConflictGroup("duplicate", 1, tuple(sent)))
        else:  # DAILY_LIMIT + 1..2 exams of one group, patient and day, one a message
            sent = []
            modality = rng.choice(sorted(limited))
            pool = limited[modality]
            for n, code in enumerate(rng.sample(pool, DAILY_LIMIT + rng.randint(1, 2))):
                inst = rng.choice(radiology)
                cs = ncrp.CodeString(code.code, None, None, None, ())
                amount = codes.radiology_amount(cs, code, inst, day)
                system = "R" if code.code_system == "NCRP" else "K"
                line = generate.PlannedLine("radiology", str(cs), amount, code_system=system)
                rhf = codes.rhf.for_municipality(municipality, day)
                bill = generate.PlannedBill(
                    **common(f"{8 + n:02d}:{rng.randint(0, 59):02d}:00"),
                    payee=f"RHF:{rhf.name}",
                    lines=(line,),
                )
                sent.append(message(inst, bill))
            groups.append(ConflictGroup("same-day", DAILY_LIMIT, tuple(sent), modality))
        made += len(sent)
    return groups


def _spread(named: list, groups: list[ConflictGroup], rng: random.Random) -> list:
    """The conflict messages put among the others, each group's side by side (so one
    wave carries a group whole, and the workers take its files at the same time)."""
    raw = dict(named)
    grouped = {m.name for g in groups for m in g.messages}
    out = [(n, data) for n, data in named if n not in grouped]
    for group in groups:
        at = rng.randint(0, len(out))
        out[at:at] = [(m.name, raw[m.name]) for m in group.messages]
    return out


# --------------------------------------------------------------------------- the soak


@dataclass
class Kill:
    kind: str  # intake, start-up, settlement
    where: str  # where it landed (mid-stream, recovering work/, in its transaction, …)
    note: str = ""  # the counts at that moment


@dataclass
class Report:
    spec: generate.Spec
    summary: generate.Summary
    kills: list[Kill] = field(default_factory=list)
    daemon_starts: int = 0
    settle_runs: Counter = field(default_factory=Counter)  # killed / completed / final
    seconds: float = 0.0
    figures: dict[str, str] = field(default_factory=dict)
    checks: list[tuple[str, list[str]]] = field(default_factory=list)  # (invariant, problems)
    workers: int = 1
    ledger: str = "sqlite"
    groups: list[ConflictGroup] = field(default_factory=list)

    def spread_groups(self, logs: Path) -> int:
        """How many conflict groups had their messages answered by more than one
        worker process (from the daemons' `answered` events)."""
        by = {
            e["message_id"]: e.get("worker") for e in _events(logs) if e.get("event") == "answered"
        }
        return sum(len({by.get(i) for i in g.message_ids}) > 1 for g in self.groups)

    @property
    def violations(self) -> list[str]:
        return [f"{name}: {p}" for name, problems in self.checks for p in problems]


def run(
    root: Path,
    *,
    messages: int,
    kills: int,
    seed: int,
    bills: int = 2,
    lines: int = 4,
    radiology: float = 0.3,
    invalid: float = 0.1,
    secure: bool = True,
    workers: int = 1,
    ledger: str | None = None,
    conflicts: float = 0,
    say: Callable[[str], None] = lambda _: None,
) -> Report:
    """The soak in `root` (a new folder); the report holds the invariants' results."""
    started = time.monotonic()
    spec = generate.Spec(
        messages=messages,
        bills=bills,
        lines=lines,
        radiology=radiology,
        invalid=invalid,
        seed=seed,
        sign=secure,
        encrypt=secure,
        gzip=secure,
        prefix="soak",
    )
    if workers > 1 and not ledger:
        raise ValueError("several workers need a PostgreSQL ledger (--ledger)")
    if ledger:
        from daemon.ledger import migrate

        migrate.upgrade(ledger)
    box = make_sandbox(root / "sandbox", institutions_toml(spec.from_her), ledger_url=ledger)
    set_intake(box, poll_interval_seconds=0.2)
    if ledger:  # short leases: a killed worker's files are taken over within seconds
        with open(box.config_path, "a", encoding="utf-8") as cfg:
            cfg.write("\n[worker]\nlease_seconds = 4\nheartbeat_seconds = 1\n")
    institutions = load_institutions(box.paths.institutions)
    ours = keys.load_pair(box.paths.private_key, box.paths.certificate, None)
    planned = generate.plan(spec, institutions)
    extra = round(conflicts * messages) if 0 < conflicts < 1 else int(conflicts)
    groups = _conflicts(spec, institutions, planned, extra) if extra else []
    everything = planned + [m for g in groups for m in g.messages]
    say(f"generating {len(everything)} messages (seed {seed}) …")
    named = generate.render_all(
        everything, spec, institutions, recipient=ours.certificate, jobs=os.cpu_count() or 1
    )
    named = _spread(named, groups, random.Random(f"{seed}/spread"))
    sender = None
    if secure:
        partner = generate.write_sender(root / "sender", spec, institutions)
        generate.register(box.config_path, partner)
        sender = generate.sender_keys(
            spec.seed, spec.from_her, institutions[0].orgnr, institutions[0].name
        )
    report = Report(spec, generate.summarize(planned), workers=workers, groups=groups)
    report.ledger = "postgresql" if ledger else "sqlite"
    logs = root / "logs"
    logs.mkdir()
    soak = _Soak(box, logs, random.Random(seed), report, workers)
    steps = soak.plan(kills)
    waves = _waves(named, sum(s != "start-up" for s in steps) + 1)
    say(f"{len(steps)} kills in {len(waves)} waves …")
    soak.start_all()
    soak.measure_start()
    for step in steps:
        if step != "start-up":
            soak.drop(waves.pop(0))
        {"intake": soak.kill_intake, "start-up": soak.kill_startup}.get(step, soak.kill_settle)()
        for daemon in soak.pool.values():
            if not daemon.alive():
                raise RuntimeError(f"a daemon exited by itself: {daemon.tail()}")

    for wave in waves:  # what is left
        soak.drop(wave)
    say("final run: the daemon empties the inbox, one settle runs to its end …")
    soak.finish()
    report.seconds = time.monotonic() - started
    if ledger:
        taken = [e for e in _events(logs) if e.get("event") == "worker_taken_over"]
        report.figures["taken over"] = (
            f"{sum(e['files'] for e in taken)} files from {len(taken)} dead workers"
        )
        if groups:
            report.figures["conflicts spread"] = (
                f"{report.spread_groups(logs)} of {len(groups)} groups answered by"
                " two or more worker processes"
            )
    check(report, box, named, planned, sender, groups)
    return report


class _Soak:
    """The running soak: the sandbox, the current daemon, what has been dropped."""

    def __init__(
        self, box: Sandbox, logs: Path, rng: random.Random, report: Report, workers: int = 1
    ) -> None:
        self.box, self.logs, self.rng, self.report = box, logs, rng, report
        # the running daemons by worker id ("" alone: no --worker-id); `daemon` is the
        # one the next kill strikes
        self.shared = box.ledger_url is not None
        self.ids = [f"w{n + 1}" for n in range(workers)] if self.shared else [""]
        self.pool: dict[str, Daemon] = {}
        self.victim = self.ids[0]
        self.dropped = 0
        self.settle_seconds = 2.0  # how long a settle process takes; learnt as they finish
        self.transaction_seconds = 0.15  # how long a batch holds the write lock; learnt
        self.start_seconds = 1.5  # how long the daemon takes to start; measured first
        self.archive, self.inbox, self.work = box.paths.archive, box.paths.inbox, box.paths.work

    def plan(self, kills: int) -> list[str]:
        """The kinds of kill, in order: ~35 % settlement, ~15 % start-up (each right
        after another kill, so the restarted daemon has work/ to recover), the rest
        during intake."""
        n_settle = round(kills * 0.35) if kills >= 3 else min(kills, 1)
        n_startup = round(kills * 0.15) if kills >= 5 else 0
        steps = ["intake"] * (kills - n_settle - n_startup) + ["settlement"] * n_settle
        self.rng.shuffle(steps)
        for _ in range(n_startup):
            after = [i for i, s in enumerate(steps) if s == "intake"]
            steps.insert(self.rng.choice(after) + 1 if after else 0, "start-up")
        return steps

    @property
    def daemon(self) -> Daemon:
        return self.pool[self.victim]

    def start_daemon(self, worker: str | None = None) -> None:
        """(Re)start a worker: `worker`, else the one the last kill struck."""
        worker = self.victim if worker is None else worker
        self.pool[worker] = Daemon(self.box, self.logs, self.report.daemon_starts, worker or None)
        self.report.daemon_starts += 1

    def start_all(self) -> None:
        for worker in self.ids:
            self.start_daemon(worker)

    def choose_victim(self) -> None:
        self.victim = self.rng.choice(sorted(self.pool))

    def measure_start(self) -> None:
        """How long a start takes here (the start-up kills are spread over it)."""
        daemon = self.daemon
        wait_for(lambda: daemon.logged("started"), 120, "the first start", step=0.01)
        self.start_seconds = time.monotonic() - daemon.started_at

    def drop(self, wave: list[tuple[str, bytes]]) -> None:
        generate.write(self.inbox, wave)
        self.dropped += len(wave)

    def answered(self) -> int:
        return count_files(self.archive)

    def wait_answered(self, target: int) -> None:
        wait_for(lambda: self.answered() >= target, 300, f"{target} messages answered")

    def _killed(self, kind: str, detail: str) -> None:
        code = self.daemon.kill()
        if code != -signal.SIGKILL:
            raise RuntimeError(f"the daemon had exited ({code}): {self.daemon.tail()}")
        where, note = detail.split("; ")
        if self.shared:
            note += f"; worker {self.victim}"
        self.report.kills.append(Kill(kind, where, note))
        if self.shared and self.rng.random() < 0.5:
            # back under a new id: the others (or it) take the dead one's files over
            dead = self.pool.pop(self.victim)
            self.victim = f"{dead.worker.split('.')[0]}.{self.report.daemon_starts}"
        self.start_daemon()

    def kill_intake(self) -> None:
        """SIGKILL the daemon after a random number of further answers, at a random
        point in the next message."""
        self.choose_victim()
        before = self.answered()
        self.wait_answered(
            min(self.dropped, before + self.rng.randint(1, max(1, self.dropped - before - 1)))
        )
        time.sleep(self.rng.uniform(0, 0.015))
        in_work, waiting = len(os.listdir(self.work)), len(os.listdir(self.inbox))
        if in_work:
            where = "mid-stream, a file in work/"
        else:
            where = "mid-stream, between files" if waiting else "idle, the wave answered"
        self._killed("intake", f"{where}; {self.answered()}/{self.dropped} answered")

    def kill_startup(self) -> None:
        """SIGKILL the freshly restarted daemon: half of the time just as it recovers
        what the last kill left in work/, otherwise at a random instant of its start
        (importing, loading schemas and tariffs, delivering, making up a batch)."""
        daemon, in_work = self.daemon, len(os.listdir(self.work))
        if in_work and self.rng.random() < 0.5:
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: daemon.logged("recovering"), 3 * self.start_seconds, "recovery")
            time.sleep(self.rng.uniform(0, 0.01))
        else:
            delay = self.rng.uniform(0.05, 1.0) * self.start_seconds
            time.sleep(max(0.0, daemon.started_at + delay - time.monotonic()))
        if daemon.logged("started"):
            phase = "after 'started'"
        else:
            phase = "recovering work/" if daemon.logged("recovering") else "loading"
        self._killed("start-up", f"{phase}; {in_work} in work/ at the restart")

    def kill_settle(self) -> None:
        """A `kravmottak settle` process, killed. Half are started while the daemon
        still answers the wave and killed at a random instant. The others start when
        the daemon is idle, so the ledger's write lock is the batch's own, and are
        aimed: at a random instant of the batch's transaction, just after its commit
        (while the files are written), or anywhere in the run."""
        before = self.answered()
        concurrent = self.rng.random() < 0.5
        partly = min(self.dropped, before + self.rng.randint(1, max(1, self.dropped - before)))
        self.wait_answered(partly if concurrent else self.dropped)
        aim = "random" if concurrent else self.rng.choice(("transaction", "files", "random"))
        for _attempt in range(6):
            runs_before = _runs(self.box)
            proc, log = settle_process(self.box, self.logs, sum(self.report.settle_runs.values()))
            begun = time.monotonic()
            if aim == "random" or self.shared:  # aiming watches SQLite's write lock
                delay = self.rng.uniform(0.1, 1.0) * self.settle_seconds
            else:
                delay = self._aim(proc, aim)
            try:
                code = proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                # while the daemon answers, its own writes may hold the lock: no guess
                locked = (
                    None if concurrent or self.shared else write_lock_held(self.box.paths.ledger)
                )
                proc.kill()
                code = proc.wait(timeout=30)
                if code == -signal.SIGKILL:
                    phase = _settle_phase(self.box, runs_before, locked)
                    busy = "while the daemon answers" if concurrent else f"aimed: {aim}"
                    self.report.kills.append(Kill("settlement", phase, busy))
                    self.report.settle_runs["killed"] += 1
                    return
            if code != 0:
                raise RuntimeError(f"settle exited {code}: {log.read_text()[-2000:]}")
            self.settle_seconds = 0.5 * self.settle_seconds + 0.5 * (time.monotonic() - begun)
            self.report.settle_runs["completed"] += 1
            aim = "random"  # it settled everything: the next batch has nothing to aim at
        self.report.kills.append(Kill("settlement", "missed: every run finished first"))

    def _aim(self, proc: subprocess.Popen, aim: str) -> float:
        """Watch the ledger's write lock (the daemon is idle, so it is the batch's) and
        return how much longer to wait before the kill. `transaction`: a random instant
        of the batch's transaction (from how long the last one held the lock);
        `files`: a few milliseconds after its commit, while the vedtak files are written."""
        ledger = self.box.paths.ledger

        def ended() -> bool:
            return proc.poll() is not None

        def batch_holds_it() -> bool:  # the ledger's set-up holds it for a moment only
            if not write_lock_held(ledger):
                return False
            time.sleep(0.005)
            return write_lock_held(ledger)

        with contextlib.suppress(TimeoutError):
            wait_for(lambda: ended() or batch_holds_it(), 60, "the batch", step=0.001)
        taken = time.monotonic()
        deadline = taken + self.rng.uniform(0, 1) * self.transaction_seconds
        if aim == "files":
            deadline = float("inf")

        def released() -> bool:
            return not write_lock_held(ledger)

        with contextlib.suppress(TimeoutError):
            wait_for(
                lambda: ended() or time.monotonic() >= deadline or released(),
                60,
                "the commit",
                step=0.001,
            )
        if not ended() and released():  # the commit: learn how long a transaction takes
            held = time.monotonic() - taken
            self.transaction_seconds = 0.5 * self.transaction_seconds + 0.5 * held
        return self.rng.uniform(0, 0.02) if aim == "files" else 0.0

    def finish(self) -> None:
        """One daemon until inbox and work/ are empty, one settle to its end, SIGTERM;
        then a last start, so a recovery follows every kill (a killed settle's
        temporary file is removed by the next start), and SIGTERM again."""
        self._until_empty_and_settled()
        self.start_all()
        self.stop_daemon()

    def _until_empty_and_settled(self) -> None:
        for daemon in self.pool.values():
            wait_for(lambda d=daemon: d.logged("started"), 120, "the last start", step=0.05)
        wait_for(
            lambda: not os.listdir(self.inbox) and not os.listdir(self.work),
            600,
            "inbox and work/ to empty",
            step=0.05,
        )
        proc, log = settle_process(self.box, self.logs, sum(self.report.settle_runs.values()))
        if proc.wait(timeout=600) != 0:
            raise RuntimeError(f"the final settle failed: {log.read_text()[-2000:]}")
        self.report.settle_runs["final"] += 1
        self.stop_daemon()

    def stop_daemon(self) -> None:
        """Once they have started (recovered), SIGTERM each; each must exit cleanly."""
        for daemon in self.pool.values():
            wait_for(lambda d=daemon: d.logged("started"), 120, "the start", step=0.05)
            daemon.proc.send_signal(signal.SIGTERM)
        for daemon in self.pool.values():
            if daemon.proc.wait(timeout=120) != 0:
                raise RuntimeError(f"a daemon did not stop cleanly: {daemon.tail()}")


def _events(logs: Path) -> list[dict]:
    """Every JSON log line the daemons wrote."""
    out = []
    for log in sorted(logs.glob("daemon-*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
    return out


def _waves(named: list, count: int) -> list[list]:
    size, extra = divmod(len(named), count)
    out, at = [], 0
    for i in range(count):
        n = size + (1 if i < extra else 0)
        out.append(named[at : at + n])
        at += n
    return out


def _runs(box: Sandbox) -> int:
    with contextlib.closing(connect(box)) as db:
        return db.execute("SELECT count(*) FROM settlements").fetchone()[0]


def _settle_phase(box: Sandbox, runs_before: int, locked: bool | None) -> str:
    with contextlib.closing(connect(box)) as db:
        runs = db.execute("SELECT count(*) FROM settlements").fetchone()[0]
        undelivered = db.execute(
            "SELECT count(*) FROM vedtak WHERE delivered_at IS NULL"
        ).fetchone()[0]
    if runs == runs_before:
        if locked is None:
            return "before its commit (no run recorded)"
        return "in its transaction (rolled back)" if locked else "starting up (no run yet)"
    if undelivered:
        return "after the commit, files not all written"
    return "after the files"


# --------------------------------------------------------------------------- the invariants


def check(
    report: Report,
    box: Sandbox,
    named: list[tuple[str, bytes]],
    planned: list[generate.PlannedMessage],
    sender: trust.KeyPair | None,
    groups: list[ConflictGroup] = (),
) -> None:
    """Every invariant, from the ledger, the outbox and the folders. `planned`: the
    messages whose outcome the plan knows; `groups`: those whose winners it cannot
    know, only how many there must be."""
    paths = box.paths
    db = connect(box)
    q = db.execute
    results = report.checks

    def invariant(name: str, problems: list[str]) -> None:
        shown = problems[:10]
        if len(problems) > 10:
            shown.append(f"… and {len(problems) - 10} more")
        results.append((name, shown))

    # ---- one terminal state per message
    receipts = q("SELECT original_name, state, duplicate, finished_at FROM receipts").fetchall()
    by_name = Counter(r[0] for r in receipts)
    dropped = {name for name, _ in named}
    problems = [f"{n}: {c} receipts" for n, c in by_name.items() if c != 1]
    problems += [f"{n}: no receipt" for n in dropped - set(by_name)]
    problems += [f"{n}: not dropped by us" for n in set(by_name) - dropped]
    problems += [
        f"{r[0]}: receipt {r[1]}, duplicate {r[2]}" for r in receipts if r[1:3] != ("answered", 0)
    ]
    problems += [f"{r[0]}: receipt not finished" for r in receipts if not r[3]]
    in_conflict = {m.message_id: g for g in groups for m in g.messages}
    ids = {m.message_id for m in planned} | set(in_conflict)
    rows = q("SELECT ebxml_message_id, state, final, apprec_status FROM messages").fetchall()
    per_id = Counter(r[0] for r in rows)
    problems += [f"MessageId {i}: {c} outcomes" for i, c in per_id.items() if c != 1]
    problems += [f"MessageId {i}: no outcome" for i in ids - set(per_id)]
    problems += [
        f"MessageId {r[0]}: {r[1]}, final {r[2]}" for r in rows if r[1:3] != ("answered", 1)
    ]
    invariant("every message has exactly one terminal state (receipts, messages)", problems)

    # ---- the originals
    originals = [p for p in paths.archive.rglob("*") if p.is_file()]
    by_original = {files.original_name(p.name): p for p in originals}
    raw = dict(named)
    problems = []
    if len(originals) != len(named):
        problems.append(f"{len(originals)} archived for {len(named)} dropped")
    problems += [
        f"{n}: archived bytes differ"
        for n, p in by_original.items()
        if raw.get(n) != p.read_bytes()
    ]
    invariant("every original archived once, unchanged", problems)

    # ---- one AppRec and one Ack per message; statuses
    status_of = {r[0]: r[3] for r in rows}
    apprecs: dict[str, list[str]] = {}
    acks: dict[str, list[str]] = {}
    for path in sorted(paths.outbox.iterdir()):  # strays: the outbox = ledger invariant
        answers = {"apprec": apprecs, "ack": acks}.get(path.name.split("-")[0])
        if answers is not None:
            answers.setdefault(_ref_to(path.read_bytes()), []).append(path.name)
    problems = [f"{i}: {len(v)} AppRecs" for i, v in apprecs.items() if len(v) != 1]
    problems += [f"{i}: no AppRec" for i in ids - set(apprecs)]
    problems += [f"{i}: AppRec for an unknown message" for i in set(apprecs) - ids]
    problems += [f"{i}: {len(v)} Acks" for i, v in acks.items() if len(v) != 1]
    problems += [f"{i}: no Ack" for i in ids - set(acks)]
    invariant("exactly one AppRec (and one Ack) per message in the outbox", problems)

    expected_status = {m.message_id: m.status for m in planned}
    problems = []
    seen_status: Counter = Counter()
    group_status: dict[int, Counter] = {id(g): Counter() for g in groups}
    for message_id, names_ in apprecs.items():
        status = _apprec_status((paths.outbox / names_[0]).read_bytes(), sender)
        seen_status[status] += 1
        if status != status_of.get(message_id):
            problems.append(
                f"{message_id}: AppRec says {status}, ledger {status_of.get(message_id)}"
            )
        if message_id in in_conflict:  # the winners say 1, the others 3 (COM-06, RAD-06)
            group_status[id(in_conflict[message_id])][status] += 1
        elif status != expected_status.get(message_id):
            problems.append(
                f"{message_id}: status {status}, expected {expected_status.get(message_id)}"
            )
    for g in groups:
        want = Counter({"1": g.winners, "3": len(g.messages) - g.winners})
        if group_status[id(g)] != want:
            problems.append(
                f"{g.kind} group of {len(g.messages)}: AppRec status "
                f"{dict(group_status[id(g)])}, expected {dict(want)}"
            )
    report.figures["AppRec status"] = ", ".join(f"{k}: {v}" for k, v in sorted(seen_status.items()))
    invariant("every AppRec's status is the ledger's and the expected one (1 or 3)", problems)

    # ---- bills: never paid twice, payments = approved, as the generator expects
    twice = q(
        "SELECT institution_id, uuid, count(*) FROM bills WHERE verdict IN ('approved', 'reduced')"
        " AND transaction_type NOT IN ('4', '5') GROUP BY institution_id, uuid HAVING count(*) > 1"
    ).fetchall()
    problems = [f"{i} {u}: paid {n} times" for i, u, n in twice]
    bills = q("SELECT id, institution_id, uuid, approved, verdict FROM bills").fetchall()
    paid = {}
    for bill_id, amount in q("SELECT bill_id, approved FROM payments"):
        paid[bill_id] = paid.get(bill_id, ZERO) + Decimal(amount)
    problems += [
        f"bill {b[1]} {b[2]}: payments {paid.get(b[0], ZERO)}, approved {b[3]}"
        for b in bills
        if paid.get(b[0], ZERO) != Decimal(b[3])
    ]
    invariant("no bill paid twice; each bill's payments equal its approved amount", problems)

    expected = generate.expected_of(planned)
    contested = {
        (m.institution.orgnr, b.uuid): b for g in groups for m in g.messages for b in m.bills
    }
    got = {(b[1], b[2]): Decimal(b[3]) for b in bills if (b[1], b[2]) not in contested}
    problems = []
    sent = len(expected) + sum(len(g.messages) for g in groups)
    if len(bills) != sent:
        problems.append(f"{len(bills)} bills in the ledger, {sent} sent")
    problems += [
        f"{k}: approved {got.get(k)}, expected {v}" for k, v in expected.items() if got.get(k) != v
    ]
    report.figures["bills"] = ", ".join(
        f"{k} {v}" for k, v in sorted(Counter(b[4] for b in bills).items())
    )
    invariant("every bill approved as the generator planned it", problems)

    # ---- conflicts: how many won, never which; the limits hold for every patient
    problems, contested_paid = [], ZERO
    by_key: dict[tuple[str, str], list[tuple]] = {}
    for b in bills:
        by_key.setdefault((b[1], b[2]), []).append(b)
    for g in groups:
        keys = list(
            dict.fromkeys((m.institution.orgnr, b.uuid) for m in g.messages for b in m.bills)
        )
        rows_ = [r for k in keys for r in by_key.get(k, [])]
        won = [r for r in rows_ if r[4] in ("approved", "reduced")]
        lost = [r for r in rows_ if r[4] not in ("approved", "reduced")]
        if len(rows_) != len(g.messages):
            problems.append(
                f"{g.kind} group: {len(rows_)} bills in the ledger, {len(g.messages)} sent"
            )
        if len(won) != g.winners:
            problems.append(
                f"{g.kind} group of {len(g.messages)}: {len(won)} approved, expected {g.winners}"
            )
        for r in won:
            if Decimal(r[3]) != contested[(r[1], r[2])].approved:
                claimed = contested[(r[1], r[2])].approved
                problems.append(
                    f"{g.kind} winner {r[1]} {r[2]}: approved {r[3]}, claimed {claimed}"
                )
            contested_paid += Decimal(r[3])
        problems += [
            f"{g.kind} loser {r[1]} {r[2]}: {r[4]} {r[3]}" for r in lost if Decimal(r[3]) != ZERO
        ]
    if groups:
        report.figures["conflict groups"] = (
            ", ".join(
                f"{k} {v}"
                for k, v in sorted(
                    Counter(f"{g.kind} {g.modality}".strip() for g in groups).items()
                )
            )
            + f" ({sum(len(g.messages) for g in groups)} messages)"
        )
    invariant("every conflict group has exactly its number of winners", problems)

    units: Counter = Counter()
    for patient, day, modality, kind, n in q(
        "SELECT patient_key, day, modality, kind, units FROM exams WHERE active = 1"
    ):
        group = _limit_group(modality, kind)
        if group is not None:
            units[(patient, day, group)] += n
    problems = [
        f"patient {p[:8]}… {d} {g}: {n} exams approved, limit {DAILY_LIMIT}"
        for (p, d, g), n in units.items()
        if n > DAILY_LIMIT
    ]
    invariant("no patient and day over a same-day limit (RAD-06, RAD-09)", problems)

    # ---- settlement
    open_ = q(
        "SELECT count(*) FROM payments WHERE payee IS NOT NULL AND vedtak_id IS NULL"
    ).fetchone()[0]
    orphans = q(
        "SELECT count(*) FROM payments p WHERE vedtak_id IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM vedtak v WHERE v.id = p.vedtak_id)"
    ).fetchone()[0]
    vedtak = q(
        "SELECT id, oppgjors_nr, payee, bills, approved, delivered_at FROM vedtak"
    ).fetchall()
    per_vedtak: dict[int, tuple[int, Decimal]] = {}
    for vid, amount in q("SELECT vedtak_id, approved FROM payments WHERE vedtak_id IS NOT NULL"):
        count, total = per_vedtak.get(vid, (0, ZERO))
        per_vedtak[vid] = (count + 1, total + Decimal(amount))
    problems = []
    if open_:
        problems.append(f"{open_} payments with a payee are in no vedtak")
    if orphans:
        problems.append(f"{orphans} payments name a vedtak that does not exist")
    for vid, nr, _payee, n, approved, delivered in vedtak:
        count, total = per_vedtak.get(vid, (0, ZERO))
        if count != n or total != Decimal(approved):
            problems.append(f"vedtak {nr}: {n} bills / {approved} vs payments {count} / {total}")
        if not delivered:
            problems.append(f"vedtak {nr}: never delivered")
    invariant("every payment with a payee is in exactly one vedtak", problems)

    files_total, regninger, problems = _vedtak_files(paths.outbox, vedtak, sender)
    payments_with_payee = q("SELECT count(*) FROM payments WHERE payee IS NOT NULL").fetchone()[0]
    if len(regninger) != payments_with_payee:
        problems.append(f"{len(regninger)} Regning in the files, {payments_with_payee} payments")
    # a bill re-sent (a duplicate group) is in a vedtak once per copy, paid in one only
    resent = {b.regning_nr for g in groups if g.kind == "duplicate" for b in g.messages[0].bills}
    times = Counter(nr for nr, _ in regninger)
    paid_in = Counter(nr for nr, amount in regninger if amount != ZERO)
    problems += [
        f"Regning {r} in {c} vedtak files" for r, c in times.items() if c > 1 and r not in resent
    ]
    problems += [f"Regning {r} paid in {c} vedtak files" for r, c in paid_in.items() if c > 1]
    ledger_total = sum((Decimal(v[4]) for v in vedtak), ZERO)
    approved_total = sum((Decimal(a) for (a,) in q("SELECT approved FROM payments")), ZERO)
    expected_total = sum(expected.values(), ZERO) + contested_paid
    if not files_total == ledger_total == approved_total == expected_total:
        problems.append(
            f"vedtak files {files_total}, ledger vedtak {ledger_total}, "
            f"approved payments {approved_total}, expected {expected_total}"
        )
    report.figures["vedtak"] = f"{len(vedtak)} (payees {len({v[2] for v in vedtak})})"
    report.figures["paid"] = f"{ledger_total:.2f} kr"
    runs = Counter(k for (k,) in q("SELECT kind FROM settlements"))
    report.figures["settlement runs"] = ", ".join(f"{k} {v}" for k, v in sorted(runs.items()))
    invariant("the vedtak totals (files and ledger) equal the approved payments", problems)

    # ---- the outbox is the ledger's, byte for byte
    stored = {n: bytes(c) for n, c in q("SELECT file_name, content FROM outputs")}
    stored |= {n: bytes(c) for n, c in q("SELECT file_name, content FROM vedtak_outputs")}
    outbox = {p.name: p.read_bytes() for p in paths.outbox.iterdir()}
    problems = [f"{n}: in the outbox, not in the ledger" for n in set(outbox) - set(stored)]
    problems += [f"{n}: in the ledger, not in the outbox" for n in set(stored) - set(outbox)]
    problems += [f"{n}: bytes differ" for n in set(outbox) & set(stored) if outbox[n] != stored[n]]
    invariant("the outbox equals the ledger's stored outputs byte for byte", problems)

    # ---- nothing left behind
    problems = [f"inbox/{n}" for n in os.listdir(paths.inbox)]
    problems += [f"work/{n}" for n in os.listdir(paths.work)]
    problems += [f"quarantine/{n}" for n in os.listdir(paths.quarantine)]
    problems += [f"receipt {r[0]} still claimed" for r in receipts if r[1] == "claimed"]
    invariant("nothing left in inbox/, work/ or quarantine/", problems)
    temps = [
        f"{p.relative_to(box.root)}{_writer_of(p.name)}"
        for p in box.root.rglob("*")
        if p.name.startswith(".") or p.name.endswith(box.settings.intake.temp_suffixes)
    ]
    invariant("no temporary files anywhere in the sandbox", temps)
    db.close()


def _limit_group(modality: str, kind: str) -> str | None:
    """The same-day limit group of an exam as the ledger records it (the default
    settings: CT and CTA share a limit, MR and MRA too); None: no limit."""
    if kind in ("intervention", "nuclear"):
        return kind
    for group in ("CT", "MR", "UL"):
        if modality.startswith(group):
            return group
    return None


def _writer_of(name: str) -> str:
    """Whose temporary file `name` is, for the report: a dead writer's should have
    gone with the last recovery, a live writer's means something still runs."""
    owner = files.temp_owner(name)
    if owner is None:
        return ""
    return f" (writer {owner[0]} {'alive' if files.writer_alive(*owner) else 'gone'})"


def _ref_to(data: bytes) -> str:
    multipart, problem = mime.parse(data)
    if problem is not None:
        return f"(unreadable: {problem.text})"
    soap = etree.fromstring(multipart.start.data)
    return soap.findtext("SOAP:Header/eb:MessageHeader/eb:MessageData/eb:RefToMessageId", "", NS)


def _payload(data: bytes, sender: trust.KeyPair | None) -> etree._Element:
    """The MsgHead or AppRec an outbound message carries: decrypted with the sender's
    key when its agreement wants answers encrypted, inflated when gzipped."""
    multipart, problem = mime.parse(data)
    if problem is not None:
        raise ValueError(problem.text)
    part = multipart.attachments[0]
    payload = part.data
    if part.content_type.startswith("application/pkcs7-mime"):
        payload, problem = trust.decrypt(payload, sender)
        if problem is not None:
            raise ValueError(problem.text)
    if payload[:2] == b"\x1f\x8b":
        payload = gzip.decompress(payload)
    return etree.fromstring(payload)


def _apprec_status(data: bytes, sender: trust.KeyPair | None) -> str | None:
    status = _payload(data, sender).find(f"{AR}Status")
    return status.get("V") if status is not None else None


def _vedtak_files(
    outbox: Path, vedtak: list[tuple], sender
) -> tuple[Decimal, list[str], list[str]]:
    """Σ Godkjent over every vedtak file, its Regning (number, Godkjent) pairs, and what
    disagrees with the ledger (a vedtak's total, its Utbetaling)."""
    total, regninger, problems = ZERO, [], []
    ledger = {v[1]: Decimal(v[4]) for v in vedtak}
    for path in sorted(outbox.glob("vedtak-*.msg")):
        body = _payload(path.read_bytes(), sender).find(f".//{M22}Oppgjorsresultat")
        nr = body.findtext(f"{M22}OppgjorsNr")
        amounts = [Decimal(r.find(f"{M22}Godkjent").get("V")) for r in body.iter(f"{M22}Regning")]
        regninger += [
            (r.findtext(f"{M22}RegningsNr"), Decimal(r.find(f"{M22}Godkjent").get("V")))
            for r in body.iter(f"{M22}Regning")
        ]
        total += sum(amounts, ZERO)
        if sum(amounts, ZERO) != ledger.get(nr):
            problems.append(f"{path.name}: Godkjent {sum(amounts, ZERO)}, ledger {ledger.get(nr)}")
        payment = outbox / path.name.replace("vedtak-", "utbetaling-")
        if sum(amounts, ZERO) != ZERO:
            if not payment.exists():
                problems.append(f"{path.name}: no {payment.name}")
                continue
            paid = _payload(payment.read_bytes(), sender).find(f".//{UTB}Utbetalt")
            if Decimal(paid.get("V")) != sum(amounts, ZERO):
                problems.append(f"{payment.name}: Utbetalt {paid.get('V')}")
    if len(list(outbox.glob("vedtak-*.msg"))) != len(vedtak):
        problems.append(
            f"{len(list(outbox.glob('vedtak-*.msg')))} vedtak files, {len(vedtak)} in the ledger"
        )
    return total, regninger, problems


# --------------------------------------------------------------------------- the table


def table(report: Report) -> str:
    s, kinds = report.summary, Counter(k.kind for k in report.kills)
    security = "signed, encrypted, gzipped" if report.spec.sign else "plain"
    out = [
        f"crash soak, seed {report.spec.seed}: {s.messages} messages ({security}), "
        f"{s.bills} bills ({s.lab_bills} lab, {s.radiology_bills} radiology), {s.lines} lines, "
        f"{sum(s.defects.values())} lines made wrong",
        f"{report.workers} worker(s) on a {report.ledger} ledger",
        "",
        f"{'SIGKILLs':<40}{len(report.kills):>6}",
        f"{'  daemon during intake':<40}{kinds['intake']:>6}",
        f"{'  daemon during start-up':<40}{kinds['start-up']:>6}",
        f"{'  settle during settlement':<40}{kinds['settlement']:>6}",
        f"{'daemon starts (restarts)':<40}{report.daemon_starts:>6}  ({report.daemon_starts - 1})",
        f"{'settle processes':<40}{sum(report.settle_runs.values()):>6}  "
        + ", ".join(f"{k} {v}" for k, v in sorted(report.settle_runs.items())),
    ]
    for label, value in report.figures.items():
        out.append(f"{label:<40}{value}")
    out.append(f"{'time':<40}{report.seconds:.1f} s")
    out += ["", "where the kills landed"]
    for (kind, where), n in sorted(Counter((k.kind, k.where) for k in report.kills).items()):
        out.append(f"  {kind:<12}{where:<50}{n:>4}")
    out += ["", "the kills in order"]
    for n, k in enumerate(report.kills, start=1):
        out.append(f"  {n:>2} {k.kind:<12}{k.where}" + (f" ({k.note})" if k.note else ""))
    out += ["", "invariants"]
    for name, problems in report.checks:
        out.append(f"  {'OK  ' if not problems else 'FAIL'} {name}")
        out += [f"         {p}" for p in problems]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bills", type=int, default=2, help="bills per message")
    ap.add_argument("--lines", type=int, default=4, help="most lines per bill")
    ap.add_argument("--radiology", type=float, default=0.3)
    ap.add_argument("--invalid", type=float, default=0.1)
    ap.add_argument("--plain", action="store_true", help="no signatures, encryption or gzip")
    ap.add_argument("--keep", type=Path, help="run in this (new) folder and keep it")
    ap.add_argument("--workers", type=int, default=1, help="daemons on one inbox (PostgreSQL)")
    ap.add_argument(
        "--ledger",
        metavar="URL",
        help="postgresql://… (an empty database), or 'temp': a throw-away cluster started"
        " here (tests/pg.py); default: the sandbox's SQLite file",
    )
    ap.add_argument(
        "--conflicts",
        type=float,
        default=0,
        metavar="N",
        help="extra messages in conflict groups: a share of --messages (below 1) or a count;"
        " bills re-sent in several messages (COM-06 pays one) and CT/MR/UL exams of one patient"
        " and day spread over messages (RAD-06 pays two)",
    )
    args = ap.parse_args(argv)
    if args.conflicts < 0:
        ap.error("--conflicts is a share (0..1) or a count, not negative")
    if args.workers > 1 and not args.ledger:
        ap.error("several workers need a PostgreSQL ledger: --ledger URL or --ledger temp")
    with contextlib.ExitStack() as stack:
        ledger = args.ledger
        if ledger == "temp":
            from tests import pg

            bindir = pg.binaries()
            if bindir is None:
                ap.error("--ledger temp: PostgreSQL's initdb/pg_ctl not found")
            cluster = pg.Cluster(bindir).start()
            stack.callback(cluster.stop)
            ledger = cluster.empty_database()
        if args.keep:
            args.keep.mkdir(parents=True)
            root = args.keep
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="crash-soak-")))
        report = run(
            root,
            messages=args.messages,
            kills=args.kills,
            seed=args.seed,
            bills=args.bills,
            lines=args.lines,
            radiology=args.radiology,
            invalid=args.invalid,
            secure=not args.plain,
            workers=args.workers,
            ledger=ledger,
            conflicts=args.conflicts,
            say=lambda text: print(text, flush=True),
        )
        print(table(report))
    return 1 if report.violations else 0


if __name__ == "__main__":
    raise SystemExit(main())
