"""`kravmottak replay`: recorded traffic through the whole pipeline, in a throw-away sandbox.

Testers replay recorded messages to check a new release, a new tariff or a rule change
before it goes live.

- Every recorded message in SOURCE (a folder, or one file) runs through the real intake
  in a sandbox of its own (temporary folders and ledger) that uses the current config's
  party, partners, institutions, tariffs, rules and *our* key pair. Messages go one at a
  time, in name order, so rules that look at earlier messages (COM-06, RAD-06..10) see
  the same history every time.
- The clock is fixed per message: `--at`, else the message's own ebXML Timestamp, else
  its MsgHead GenDate, else `DEFAULT_AT`. With `--at`, the message-age window
  (`[trust] max_message_age_days`) is not applied. Ids are uuid5 of the content and signatures
  are RSA PKCS#1 v1.5, so the same input gives the same bytes.
- A `*.xml` file is a bare MsgHead. It is wrapped as `kravmottak wrap` does, with a
  MessageId derived from the file's name and content.
- Each message's outcome becomes *expectation files*, one folder per message: its
  outputs normalised (signature values, digests, certificates, generated ids,
  conversation ids and timestamps replaced by placeholders) and `decision.json`, the
  ledger's verdict per bill and line.
- `--expect DIR` compares, `--record DIR` writes, `--settle` adds one settlement batch
  at the end (folder `settlement/`), `--shadow CONFIG` compares two configs bill by bill.

Normalising and comparing are pure functions (`daemon.tools.replay_compare`); `Sandbox` is
the shell.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import structlog

from daemon import config, logs
from daemon.config import Settings
from daemon.ledger.sqlite import SqliteLedger
from daemon.service import runner as service
from daemon.tools.replay_compare import (
    DECISION,
    SETTLEMENT,
    SETTLEMENT_JSON,
    Expectations,
    compare,
    decision_changes,
    dump_json,
    keyed,
    kind_of,
    normalise_output,
    settlement_changes,
    slug,
    state_of,
)
from daemon.tools.wrap import wrap
from daemon.transport.unwrap import peek_header

DEFAULT_AT = datetime(2000, 1, 1, tzinfo=UTC)  # a file with no time of its own
DEFAULT_FROM_HER = "90001"  # the demo partner (config/partners.toml)
DEFAULT_CPA = "kravmottak:demo:1"
BARE_SUFFIX = ".xml"  # a bare MsgHead, wrapped by replay
RECORDED_SUFFIXES = (".msg", BARE_SUFFIX)


class UsageError(Exception):
    """A bad argument: the command exits 2."""


# --------------------------------------------------------------------------- what to replay


@dataclass(frozen=True, slots=True)
class Recorded:
    name: str
    path: Path

    @property
    def bare(self) -> bool:
        return self.name.lower().endswith(BARE_SUFFIX)


def recorded(source: Path) -> list[Recorded]:
    """The messages in SOURCE in name order: a folder's `*.msg` and `*.xml` files (not
    its sub-folders, hidden files or anything else), or the one file given."""
    if source.is_file():
        return [Recorded(source.name, source)]
    if not source.is_dir():
        raise UsageError(f"no such file or folder: {source}")
    found = [
        Recorded(p.name, p)
        for p in source.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in RECORDED_SUFFIXES
    ]
    if not found:
        raise UsageError(f"{source}: no recorded messages (*.msg, *.xml)")
    return sorted(found, key=lambda r: r.name)


def parse_time(text: str, option: str = "--at") -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(f"{option} {text!r} is not an ISO 8601 date and time") from exc
    # in UTC, as the daemon's own clock: the ledger compares instants as text
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


_GEN_DATE = re.compile(rb"<(?:\w+:)?GenDate>\s*([^<\s]+)\s*</(?:\w+:)?GenDate>")


def clock_for(raw: bytes, bare: bool, at: datetime | None) -> datetime:
    """The message's own time: `--at`, else the ebXML Timestamp, else the MsgHead
    GenDate (when readable in the file), else DEFAULT_AT."""
    if at is not None:
        return at
    candidates: list[str] = []
    if not bare:
        try:
            header = peek_header(raw[: 1024 * 1024])
        except Exception:  # a file that is no MIME at all: the intake will say why
            header = None
        if header is not None and header.timestamp:
            candidates.append(header.timestamp)
    candidates += [m.group(1).decode("ascii", "replace") for m in _GEN_DATE.finditer(raw)]
    for text in candidates:
        try:
            return parse_time(text)
        except UsageError:
            continue
    return DEFAULT_AT


def wrapped(message: Recorded, raw: bytes, at: datetime, from_her: str, cpa_id: str, to_her: str):
    """A bare MsgHead as its sender's ebMS handler would send it, with ids derived
    from the file's name and content: the same file always gives the same bytes."""
    seed = f"kravmottak:replay:{message.name}:{hashlib.sha256(raw).hexdigest()}"
    return wrap(
        raw,
        from_her=from_her,
        cpa_id=cpa_id,
        to_her=to_her,
        message_id=str(uuid.uuid5(uuid.NAMESPACE_URL, seed)),
        conversation_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{seed}:conversation")),
        timestamp=at,
    )


# --------------------------------------------------------------------------- the shell


@dataclass(frozen=True)
class Replayed:
    """One message's (or the settlement's) expectation files and its summary."""

    name: str
    files: dict[str, bytes]
    summary: dict


class Sandbox:
    """Temporary folders and ledger around the real intake; everything else (party,
    partners, institutions, tariffs, rules, our key pair) is the config's own."""

    def __init__(self, settings: Settings, root: Path) -> None:
        paths = replace(
            settings.paths,
            inbox=root / "inbox",
            outbox=root / "outbox",
            work=root / "work",
            archive=root / "archive",
            quarantine=root / "quarantine",
            ledger=root / "ledger.sqlite3",
        )
        # no stability wait (we wrote the file whole); the clock is set per message
        intake = replace(settings.intake, stable_seconds=0.0, fixed_time=None)
        # always a throw-away SQLite ledger, whatever ledger the config names
        self.settings = replace(settings, paths=paths, intake=intake, ledger_url="")
        # as `run` does: with generate_if_missing and no key yet, one is made in the
        # config's own place, so the next replay signs with the same key
        self.intake = service.build(self.settings)
        # a throw-away ledger needs no fsync per transaction
        self.intake.ledger.close()
        self.intake.ledger = SqliteLedger(paths.ledger, synchronous="OFF")
        self.db = sqlite3.connect(paths.ledger)
        self.first_of: dict[int, str] = {}  # ledger message row → file first giving it
        self.latest = DEFAULT_AT

    def close(self) -> None:
        self.db.close()
        self.intake.ledger.close()

    def replay(self, message: Recorded, raw: bytes, at: datetime) -> Replayed:
        """Drop one message in the inbox, drain it with the clock at `at`, collect."""
        self.intake.clock = lambda: at
        self.latest = max(self.latest, at)
        (self.settings.paths.inbox / message.name).write_bytes(raw)
        (before,) = self.db.execute("SELECT coalesce(max(id), 0) FROM receipts").fetchone()
        self.intake.drain()
        for kept in (self.settings.paths.archive, self.settings.paths.quarantine):
            shutil.rmtree(kept, ignore_errors=True)  # originals: of no use here
            kept.mkdir()
        outputs = self._take_outbox()
        summary = self._decision(before, message.name)
        summary["outputs"] = sorted(kind_of(name) for name, _ in outputs)
        files = {DECISION: dump_json(summary)}
        for name, content in outputs:
            files.update(normalise_output(kind_of(name), content))
        return Replayed(message.name, files, summary)

    def settle(self) -> Replayed:
        """One settlement batch up to the latest clock; its vedtak and payments."""
        from daemon.settlement import settle

        self.intake.clock = lambda: self.latest
        result = settle.settle(self.intake, cutoff=self.latest, kind="manual")
        summary = settlement_of(self.db, result.run, self.first_of)
        summary["cutoff"] = self.latest.isoformat()
        payee_of = {v["oppgjors_nr"]: v["payee"] for v in summary["vedtak"]}
        files = {SETTLEMENT_JSON: dump_json(summary)}
        for name, content in self._take_outbox():
            kind, _, rest = name.removesuffix(".msg").partition("-")
            files.update(normalise_output(f"{kind}-{slug(payee_of.get(rest, rest))}", content))
        return Replayed(SETTLEMENT, files, summary)

    def _take_outbox(self) -> list[tuple[str, bytes]]:
        out = []
        for path in sorted(self.settings.paths.outbox.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                out.append((path.name, path.read_bytes()))
                path.unlink()
        return out

    def _decision(self, before: int, name: str) -> dict:
        rows = self.db.execute(
            "SELECT state, message_id, duplicate FROM receipts WHERE id > ? ORDER BY id",
            (before,),
        ).fetchall()
        if not rows:
            return {"outcome": "not taken (see the log on stderr)"}
        state, message_id, duplicate = rows[-1]
        if state == "claimed" or message_id is None:
            return {"outcome": "not finished: the intake failed (see the log on stderr)"}
        summary = decision_of(self.db, message_id)
        if duplicate:
            summary = {
                "outcome": "duplicate",
                "same_as": self.first_of.get(message_id, "?"),
                "apprec_status": summary["apprec_status"],
                "problems": summary["problems"],
            }
        else:
            self.first_of[message_id] = name
        return summary


@contextmanager
def quiet_logs() -> Iterator[None]:
    """The intake's JSON log lines go to stderr (warnings and up) while replaying, so
    stdout holds only the report; the previous logging setup is restored after."""
    saved = structlog.get_config()
    logs.configure("warning", stream=_Stderr())
    try:
        yield
    finally:
        structlog.configure(**saved)


class _Stderr:
    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@dataclass(frozen=True)
class Options:
    at: datetime | None = None
    settle: bool = False
    from_her: str = DEFAULT_FROM_HER
    cpa_id: str | None = None


def run(settings: Settings, messages: list[Recorded], options: Options) -> list[Replayed]:
    """Replay `messages` in a fresh sandbox under `settings`; the sandbox is removed."""
    cpa_id = options.cpa_id or _cpa_of(settings, options.from_her)
    if options.at is not None:
        # `--at` asks how the claims are judged on that day: the message is as old as
        # the tester makes it, so the age window ([trust] max_message_age_days) is off
        settings = replace(settings, trust=replace(settings.trust, max_message_age_days=36500))
    root = Path(tempfile.mkdtemp(prefix="kravmottak-replay-", dir=_scratch()))
    try:
        with quiet_logs():
            box = Sandbox(settings, root)
            try:
                out = []
                for message in messages:
                    raw = message.path.read_bytes()
                    at = clock_for(raw, message.bare, options.at)
                    if message.bare:
                        raw = wrapped(
                            message, raw, at, options.from_her, cpa_id, settings.party.her_id
                        )
                    out.append(box.replay(message, raw, at))
                if options.settle:
                    out.append(box.settle())
                return out
            finally:
                box.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _scratch() -> str | None:
    """Where the sandbox goes: $TMPDIR when set, else /dev/shm when there is one (a
    throw-away ledger and outbox need no disk, and the intake's fsyncs cost nothing
    there), else the system's temporary folder."""
    if os.environ.get("TMPDIR"):
        return None
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None


def _cpa_of(settings: Settings, her_id: str) -> str:
    """The CPA of the partner with this HER-id, or the demo partner's."""
    from daemon.registers import registry

    for partner in registry.load_partners(settings.paths.partners):
        if partner.her_id == her_id:
            return partner.cpa_id
    return DEFAULT_CPA


# --------------------------------------------------------------------------- decisions


def _kr(value: str | None) -> str | None:
    return None if value is None else f"{Decimal(value).quantize(Decimal('0.01'))}"


def _fired(entries: list) -> list[dict]:
    return [
        {"rule": rule_id, "inputs": [f"{k}={v}" for k, v in inputs]}
        for rule_id, _nr, _line, _hit, inputs in entries
    ]


def decision_of(db: sqlite3.Connection, message_id: int) -> dict:
    """A message's outcome as the ledger holds it: status, technical problems, and per
    bill and line the verdict, amounts, payee, the rules that fired and the remarks."""
    state, status, problems, trace, ebxml_id, msghead_id, sender = db.execute(
        "SELECT state, apprec_status, problems, trace, ebxml_message_id, msghead_id, sender_her"
        " FROM messages WHERE id = ?",
        (message_id,),
    ).fetchone()
    fired = json.loads(trace)
    bills = []
    for bill_id, nr, uid, ttype, verdict, claimed, approved, payee in db.execute(
        "SELECT id, regning_nr, uuid, transaction_type, verdict, claimed, approved, payee"
        " FROM bills WHERE message_id = ? ORDER BY id",
        (message_id,),
    ).fetchall():
        columns = ("line", "code", "count", "category", "claimed", "approved", "verdict", "payee")
        lines = []
        for row in db.execute(
            f"SELECT {', '.join(columns)} FROM bill_lines WHERE bill_id = ? ORDER BY line",
            (bill_id,),
        ):
            line = dict(zip(columns, row, strict=True))
            line["claimed"], line["approved"] = _kr(line["claimed"]), _kr(line["approved"])
            line["fired"] = _fired([e for e in fired if e[1] == nr and e[2] == line["line"]])
            lines.append(line)
        remarks = [
            {"rule": rule_id, "number": number, "line": line, "text": text}
            for rule_id, number, text, line in db.execute(
                "SELECT rule_id, number, text, line FROM remarks WHERE bill_id = ? ORDER BY rowid",
                (bill_id,),
            )
        ]
        bills.append(
            {
                "regning_nr": nr,
                "uuid": uid,
                "transaction_type": ttype,
                "verdict": verdict,
                "claimed": _kr(claimed),
                "approved": _kr(approved),
                "payee": payee,
                "fired": _fired([e for e in fired if e[1] == nr and not e[2]]),
                "remarks": remarks,
                "lines": lines,
            }
        )
    return {
        "outcome": state,
        "apprec_status": status,
        "message": {"ebxml_message_id": ebxml_id, "msghead_id": msghead_id, "sender_her": sender},
        "problems": [
            {k: p.get(k) for k in ("code", "layer", "location", "line", "column", "text")}
            for p in json.loads(problems)
        ],
        "claim_fired": _fired([e for e in fired if e[1] == ""]),
        "bills": bills,
    }


def settlement_of(db: sqlite3.Connection, run: int | None, first_of: dict[int, str]) -> dict:
    """The batch: per payee its vedtak with totals and lines, and what stayed open."""
    vedtak = []
    for vid, nr, payee, decided_on, bills, claimed, approved in db.execute(
        "SELECT id, oppgjors_nr, payee, decided_on, bills, claimed, approved FROM vedtak"
        " WHERE settlement_id = ? ORDER BY payee",
        (run,),
    ).fetchall():
        lines = [
            {
                "message": first_of.get(message_id, "?"),
                "regning_nr": regning_nr,
                "transaction_type": ttype,
                "verdict": verdict,
                "claimed": _kr(p_claimed),
                "approved": _kr(p_approved),
            }
            for message_id, regning_nr, ttype, verdict, p_claimed, p_approved in db.execute(
                "SELECT b.message_id, b.regning_nr, b.transaction_type, b.verdict, p.claimed,"
                " p.approved FROM payments p JOIN bills b ON b.id = p.bill_id"
                " WHERE p.vedtak_id = ? ORDER BY p.id",
                (vid,),
            )
        ]
        vedtak.append(
            {
                "payee": payee,
                "oppgjors_nr": nr,
                "decided_on": decided_on,
                "bills": bills,
                "claimed": _kr(claimed),
                "approved": _kr(approved),
                "lines": lines,
            }
        )
    left = db.execute(
        "SELECT coalesce(payee, '(none)'), count(*) FROM payments WHERE vedtak_id IS NULL"
        " GROUP BY payee ORDER BY payee"
    ).fetchall()
    return {"vedtak": vedtak, "not_settled": {payee: n for payee, n in left}}


# --------------------------------------------------------------------------- recording


def load_expectations(folder: Path) -> Expectations:
    if not folder.is_dir():
        raise UsageError(f"--expect {folder}: no such folder")
    return {
        sub.name: {f.name: f.read_bytes() for f in sorted(sub.iterdir()) if f.is_file()}
        for sub in sorted(folder.iterdir())
        if sub.is_dir() and not sub.name.startswith(".")
    }


def record(folder: Path, results: list[Replayed], whole: bool) -> None:
    """Write each result's files as the new expectations. `whole` (SOURCE was a folder):
    expectation folders of messages no longer replayed are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    keep = {r.name for r in results}
    if whole:
        for sub in folder.iterdir():
            ours = (sub / DECISION).exists() or sub.name == SETTLEMENT
            if sub.is_dir() and sub.name not in keep and ours:
                shutil.rmtree(sub)
    for result in results:
        target = folder / result.name
        target.mkdir(exist_ok=True)
        for stale in target.iterdir():
            if stale.is_file() and stale.name not in result.files:
                stale.unlink()
        for name, content in result.files.items():
            path = target / name
            if not path.exists() or path.read_bytes() != content:
                path.write_bytes(content)


# --------------------------------------------------------------------------- the command


def one_line(result: Replayed) -> str:
    """A message's outcome in a line (replay without --expect)."""
    s = result.summary
    if result.name == SETTLEMENT:
        paid = ", ".join(f"{v['payee']} {v['approved']}" for v in s["vedtak"]) or "nothing"
        return f"{SETTLEMENT}: {len(s['vedtak'])} vedtak: {paid}"
    text = f"{result.name}: {s.get('outcome')}"
    if s.get("apprec_status"):
        text += f", AppRec status {s['apprec_status']}"
    if s.get("same_as"):
        text += f" (the answer to {s['same_as']})"
    codes = [p["code"] for p in s.get("problems", [])]
    if codes:
        text += f", {' '.join(codes)}"
    bills = s.get("bills", [])
    if bills:
        verdicts = ", ".join(f"{b['regning_nr']} {b['verdict']} {b['approved']}" for b in bills)
        text += f"; bills {verdicts}"
    return text


def command(args: argparse.Namespace, settings: Settings) -> int:
    """`kravmottak replay`: 0 when everything matches (or nothing was compared), 1 when
    an expectation differs, 2 on usage errors."""
    try:
        return _command(args, settings)
    except UsageError as exc:
        print(f"kravmottak replay: {exc}", file=sys.stderr)
        return 2


def _command(args: argparse.Namespace, settings: Settings) -> int:
    sources = [Path(s) for s in args.source]
    # one folder is the whole corpus: its expectations without a message fail (gone);
    # several paths (`replay corpus/lab-*.msg --expect …`) or one file are a subset:
    # only the messages replayed are compared
    whole = len(sources) == 1 and sources[0].is_dir()
    messages = [m for source in sources for m in recorded(source)]
    if len({m.name for m in messages}) != len(messages):
        raise UsageError("two recorded messages with the same file name: replay them apart")
    options = Options(
        at=parse_time(args.at) if args.at else None,
        settle=args.settle,
        from_her=args.from_her,
        cpa_id=args.cpa_id,
    )
    if args.shadow:
        if args.expect or args.record:
            raise UsageError("--shadow is a report of its own: not with --expect or --record")
        candidate = config.load(config.config_path(args.shadow))
        return shadow(settings, candidate, messages, options, args.shadow)
    expected = load_expectations(Path(args.expect)) if args.expect else None
    results = run(settings, messages, options)
    if args.record:
        record(Path(args.record), results, whole=whole)
    if expected is None:
        for result in results:
            print(one_line(result))
        count = sum(1 for r in results if r.name != SETTLEMENT)
        where = f", recorded in {args.record}" if args.record else ""
        print(f"{count} message{'' if count == 1 else 's'} replayed{where}")
        return 0
    actual = {r.name: r.files for r in results}
    names = list(actual)
    if whole:  # expectations of messages that are gone fail too
        names += sorted(n for n in expected if n not in actual)
    passed = failed = 0
    for name in names:
        ok, report = compare(name, expected.get(name), actual.get(name))
        for line in report:
            print(line)
        passed, failed = passed + ok, failed + (not ok)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def shadow(
    current: Settings,
    candidate: Settings,
    messages: list[Recorded],
    options: Options,
    label: str,
) -> int:
    """The same messages under the current and a candidate config: every bill whose
    verdict or approved amount differs, with both values and the rules. A report: 0."""
    now = {r.name: r.summary for r in run(current, messages, options)}
    then = {r.name: r.summary for r in run(candidate, messages, options)}
    print(f"shadow: {current.source} -> {label}")
    differ = total = 0
    for name in now:
        if name == SETTLEMENT:
            for line in settlement_changes(now[name], then.get(name)):
                print(line)
            continue
        a, b = now[name], then.get(name, {})
        old_bills = keyed(a.get("bills", []), "regning_nr")
        new_bills = keyed(b.get("bills", []), "regning_nr")
        keys = [*old_bills, *(k for k in new_bills if k not in old_bills)]
        moved = [k for k in keys if state_of(old_bills.get(k)) != state_of(new_bills.get(k))]
        total, differ = total + len(keys), differ + len(moved)
        for line in decision_changes(name, a, b):
            about = line.removeprefix(f"{name}: ")
            bill = about.removeprefix("bill ").split(":")[0].split(" ")[0]
            if not about.startswith("bill ") or bill in moved:  # the bills that moved only
                print(line)
    print(f"{differ} bills differ of {total}")
    return 0
