"""The imperative shell around the core: claim, process, record, answer, file away.

For one file the order is what makes it crash-safe:

1. claim: rename inbox/X → work/<unique>--X, then a `claimed` receipt in the ledger;
2. process: the pure pipeline (or, for content seen before, the stored answer);
3. record: outcome, decisions and the outputs' bytes, in ONE ledger transaction;
4. deliver: write the outputs to the outbox (atomically, idempotently), then move
   the original to archive/ (or quarantine/ beside its .err.json).

Killed before 3: the file is still in work/ with no outcome, and is processed again
at start. Killed after 3: the file is still in work/, its outcome is in the ledger,
and step 4 is redone from the ledger — the same bytes under the same names, so no
message is ever answered twice or lost.

Group commit: a poll pass handles its files in groups. Steps 1 and 3 of every file
in a group go into ONE ledger transaction (each file in its own savepoint), committed
with one fsync when the group closes: after `[intake] commit_batch_messages` files, or
once it has been open `commit_batch_ms`, or at the end of the pass. Only then is step 4
done for the group, with the fsyncs of all its answers issued together and one fsync
of the outbox. No answer leaves before its outcome is durable; killed before the
commit, every file of the group is still in work/ without an outcome (as before 3).
"""

from __future__ import annotations

import contextlib
import ctypes
import re
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from threading import Event

import structlog

from daemon import files
from daemon.claims import stream
from daemon.claims.answer import Answer, answer, timestamp
from daemon.claims.read import read
from daemon.claims.validate import validate
from daemon.config import Settings
from daemon.domain import Decision, Layer, Problem
from daemon.ledger.sqlite import Conflict, Ledger, Stored
from daemon.logs import get as get_logger
from daemon.masking import mask
from daemon.records import Context, Work, content_hash
from daemon.registers.registry import Registry
from daemon.registers.tariffs import Tariffs
from daemon.rules.chunked import decide_streamed
from daemon.rules.decide import decide
from daemon.schemas import Schemas
from daemon.service.metrics import Metrics
from daemon.service.pipeline import run
from daemon.service.watch import CompleteNames
from daemon.service.workers import Fenced
from daemon.transport.agreement import check_agreement, check_history
from daemon.transport.trust import KeyPair
from daemon.transport.unwrap import extract_payload, open_envelope, peek_header
from daemon.transport.verify import (
    check_dates,
    verify_envelope_signature,
    verify_payload_signature,
)

STAGES = (
    open_envelope,
    check_agreement,
    verify_envelope_signature,
    check_history,
    extract_payload,
    validate,
    verify_payload_signature,
    read,
    check_dates,
    decide,
)
PEEK_BYTES = 1024 * 1024
STUCK_LOG_SECONDS = 60.0  # an undelivered answer is logged again at most this often
# a group holds the ledger's write lock while its files are judged: a file bigger than
# this (seconds of work) is handled outside any group, so `kravmottak settle` and other
# writers never wait long for the lock
GROUP_MAX_BYTES = 1024 * 1024
IDS_PEEK_BYTES = 64 * 1024  # enough for any real SOAP header

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Intake:
    def __init__(
        self,
        settings: Settings,
        schemas: Schemas,
        registry: Registry,
        ledger: Ledger,
        clock: Clock = utcnow,
        keys: KeyPair | None = None,
        tariffs: Tariffs | None = None,
        metrics: Metrics | None = None,
        patient_secret: bytes | None = None,
    ) -> None:
        self.settings = settings
        self.patient_secret = patient_secret
        self.schemas = schemas
        self.registry = registry
        self.ledger = ledger
        self.clock = clock
        self.keys = keys
        self.tariffs = tariffs
        self.log = get_logger()
        self._seen: dict[str, tuple[int, float, float]] = {}  # future-mtime files
        self.strays: set[str] = set()  # directories in the inbox, each logged once
        self.complete = CompleteNames()  # files inotify saw completed (daemon.service.watch)
        self.metrics = metrics or Metrics(process=False)
        self.heartbeat = time.monotonic()  # last sign of life of the handling loop
        self.failures = 0  # files whose handling raised; they wait in work/
        self._stuck: dict[str, float] = {}  # answered files not delivered: last logged
        # the open commit group: files whose outcome waits for the group's commit, each
        # with what to do once it is durable (deliver, log, count); None: no group open
        self._group: list[tuple[Path, Stored, Callable[[], None]]] | None = None
        self._group_files = 0
        self._group_opened = 0.0
        self._big = False  # the message in hand is over GROUP_MAX_BYTES
        # this process among the workers of the inbox (`daemon.service.workers`): set by
        # the daemon; None: a one-off `process`, alone on the folders (the state lock)
        self.worker = None
        self._spill: stream.Spill | None = None  # the streamed message in hand's spill
        self._opened: files.Opened | None = None  # the file in hand, while it is processed
        # the stage whose progress is being told: (stage, when first told, bills then)
        self._progress_began: tuple[str, float, int] | None = None

    # ------------------------------------------------------------------ passes

    def recover(self, *, takeover_only: bool = False) -> int:
        """Finish everything a previous run left in work/ (call before polling). With
        several workers: only the files this worker holds, or takes over from a worker
        whose lease ran out (`takeover_only`: only those; the periodic take-over)."""
        if not takeover_only:
            for folder in (self.settings.paths.outbox, self.settings.paths.quarantine):
                for temp in files.remove_stale_temps(folder):  # a write cut short by a kill
                    self.log.info("removed_stale_temp", file=temp)
            for spill in stream.remove_spills(self.settings.paths.work):  # killed while opening
                self.log.info("removed_stale_temp", file=spill)
        names = sorted(p for p in self.settings.paths.work.iterdir() if not p.name.startswith("."))
        if self.worker is not None:
            names = self.worker.claimable(names, takeover_only=takeover_only)
        for path in names:
            self.log.info("recovering", file=path.name)
            self._handle_safely(path, recovering=True)
        return len(names)

    def in_work(self) -> list[Path]:
        return sorted(p for p in self.settings.paths.work.iterdir() if not p.name.startswith("."))

    def redeliver(self) -> int:
        """Deliver again every answer that is recorded but whose file is still in work/
        (the outbox was unwritable, the disk full): called on every pass, so a repaired
        outbox gets its answers without a restart. Returns how many are still stuck."""
        stuck = 0
        for path in self._own(self.in_work()):
            receipt = self.ledger.receipt(path.name)
            if receipt is None or receipt.state == "claimed":
                continue  # not answered yet: the retry of failed handling takes it
            try:
                self.handle(path)
                self._stuck.pop(path.name, None)
            except Exception as exc:
                stuck += 1
                # one line when it gets stuck, then one a minute: not one per pass
                last = self._stuck.get(path.name)
                if last is None or time.monotonic() - last >= STUCK_LOG_SECONDS:
                    self._stuck[path.name] = time.monotonic()
                    self.log.error(
                        "delivery_failed", file=path.name, error=type(exc).__name__,
                        detail=getattr(exc, "strerror", None),
                    )  # fmt: skip
        return stuck

    def _own(self, paths: list[Path]) -> list[Path]:
        """The files of work/ this worker holds (all of them when it is alone)."""
        if self.worker is None or not self.worker.shared or not paths:
            return paths
        holds = self.worker.hold_ledger.holds()
        return [p for p in paths if holds.get(p.name) == self.worker.id]

    def undelivered(self):
        """Answers recorded but not in the outbox (files still in work/), and vedtak."""
        return self.ledger.undelivered_outputs([p.name for p in self.in_work()])

    def poll(self, stop: Event | None = None) -> int:
        """Claim and handle every ready file in the inbox once; returns how many."""
        self.heartbeat = time.monotonic()
        ready, _settling = self._scan()
        done = 0
        try:
            done = self._poll(ready, stop)
        finally:
            self._close_group()
        return done

    def _poll(self, ready: list[files.Candidate], stop: Event | None) -> int:
        done = 0
        for candidate in ready:
            if stop is not None and stop.is_set():
                break
            try:
                path = files.claim(candidate, self.settings.paths.work, self.clock())
            except OSError as exc:  # e.g. a name the file system refuses: skip, say so
                self.log.error(
                    "claim_failed",
                    file=files.safe_name(candidate.path.name),
                    error=type(exc).__name__,
                )
                continue
            if path is None:
                continue
            if self.worker is not None and not self._hold(path):
                continue
            try:
                if candidate.size > min(GROUP_MAX_BYTES, self.settings.intake.stream_above_bytes):
                    self._close_group()  # judged alone, in its own short transactions
                else:
                    self._open_group()
            except Exception as exc:  # the ledger is locked: the file waits in work/
                self.log.error("group_open_failed", file=path.name, error=type(exc).__name__)
                self.failures += 1
                continue
            self._handle_safely(path, received_at=candidate.mtime)
            self.heartbeat = time.monotonic()
            done += 1
            self._group_files += 1
            if self._group_is_full():
                self._close_group()
        return done

    def _hold(self, path: Path) -> bool:
        """Record that this worker holds the file it just claimed; False when a peer
        recorded it first (it took the file for an orphan): then the peer handles it."""
        try:
            if self.worker.hold(path.name):
                return True
            self.log.info("held_by_peer", file=path.name)
        except Exception as exc:  # the ledger is away: recovery of work/ takes it later
            if isinstance(exc, Fenced):
                raise
            self.log.error("hold_failed", file=path.name, error=type(exc).__name__)
            self.failures += 1
        return False

    def queue(self) -> tuple[int, float | None]:
        """Files waiting (ready in the inbox, or claimed in work/) and the age in seconds
        of the oldest unanswered one: what `status`, STATUS= and the metrics show."""
        ready, _settling = files.scan(self.settings.paths.inbox, self.settings.intake)
        in_work = sum(1 for p in self.settings.paths.work.iterdir() if not p.name.startswith("."))
        oldest = [c.mtime for c in ready]
        claimed = self.ledger.oldest_unanswered()
        if claimed:
            oldest.append(datetime.fromisoformat(claimed).timestamp())
        age = max(0.0, time.time() - min(oldest)) if oldest else None
        return len(ready) + in_work, age

    def _scan(self):
        strays: list[str] = []
        found = files.scan(
            self.settings.paths.inbox,
            self.settings.intake,
            seen=self._seen,
            complete=self.complete.take(),
            strays=strays,
        )
        for name in sorted(set(strays) - self.strays):  # once per name while it stays
            self.log.warning("stray_in_inbox", entry=name, reason="a directory: never claimed")
        self.strays = set(strays)
        return found

    def _handle_safely(
        self, path: Path, received_at: float | None = None, *, recovering: bool = False
    ) -> bool:
        """One file's failure (ledger locked, disk full, a bug in the shell) must not
        stop the others: it stays in work/ and is re-driven by the next recovery."""
        try:
            self.handle(path, received_at, recovering=recovering)
            return True
        except Exception as exc:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            self.log.error(
                "handle_failed",
                file=path.name,
                error=type(exc).__name__,
                at=f"{Path(frame.filename).name}:{frame.lineno}",
            )
            self.failures += 1
            return False

    def drain(self, stop: Event | None = None) -> int:
        """Handle the inbox until it is empty, waiting for files still being written."""
        total = 0
        while not (stop is not None and stop.is_set()):
            total += self.poll(stop)
            ready, settling = self._scan()
            if not ready and not settling:
                return total
            if not ready:
                time.sleep(min(0.1, self.settings.intake.stable_seconds))
        return total

    # ------------------------------------------------------------------ one file

    def handle(
        self, path: Path, received_at: float | None = None, *, recovering: bool = False
    ) -> None:
        """One file, with its name and (when its envelope says) the ebXML MessageId and
        ConversationId on every log line written meanwhile.

        The file is read once, through a descriptor that follows no link and blocks on
        nothing (`files.read_claimed`); whatever is not a readable regular file with one
        link is refused with a reason instead."""
        try:
            opened: files.Opened | files.Refused = files.read_claimed(
                path, self.settings.intake.max_file_bytes, PEEK_BYTES
            )
        except files.Refused as refused:
            opened = refused
        ids = _ids_of(opened.prefix) if isinstance(opened, files.Opened) else {}
        with structlog.contextvars.bound_contextvars(file=path.name, **ids):
            try:
                self._handle(path, opened, received_at, recovering)
            finally:
                self._drop_spill()

    def _drop_spill(self) -> None:
        spill, self._spill = self._spill, None
        if spill is not None:
            spill.close()

    def _handle(
        self,
        path: Path,
        opened: files.Opened | files.Refused,
        received_at: float | None = None,
        recovering: bool = False,
    ) -> None:
        name = path.name
        if self.worker is not None:
            self.worker.check()  # a worker whose lease ran out writes nothing more
        now = self.clock()
        receipt = self.ledger.receipt(name)
        if received_at is not None:
            mtime = received_at
        elif isinstance(opened, files.Opened):
            mtime = opened.mtime
        else:
            mtime = path.lstat().st_mtime
        attempts = 1
        if receipt is None:
            # found in work/ at start with no receipt: a handling began before (in a
            # commit group that never committed, or killed right after the rename), so
            # this start is its second (the claim is durable before the handling runs)
            attempts = 2 if recovering else 1
            received = datetime.fromtimestamp(mtime, UTC).isoformat()
            self.ledger.claim(
                name, files.original_name(name), received, now.isoformat(), attempts=attempts
            )
            self.log.info("claimed")
        elif receipt.state == "claimed":  # a start before this one ended without outcome
            attempts = self.ledger.restart(name)
        else:  # outcome recorded before a crash: deliver it
            stored = self.ledger.by_id(receipt.message_id)
            self._deliver(path, stored)
            self._log_outcome("delivered", name, stored, None, self.ledger.bill_totals(stored.id))
            # the run that recorded it died before counting it: counted here, once
            self.metrics.observe_message(stored.state, stored.apprec_status, time.time() - mtime)
            return
        started = time.perf_counter()
        for _attempt in range(3):
            opened = self._reread(path, opened)
            try:
                stored, duplicate, decision = self._process(path, opened, now, attempts)
                break
            except Conflict:  # another worker stored this content or MessageId first
                now = self.clock()
                if self._group is not None:
                    # a shared ledger: the group's transaction holds locks the other
                    # worker may be waiting for; commit what it has, judge again anew
                    self._close_group()
                    self._open_group()
        else:
            raise RuntimeError(f"{name}: ledger conflict persisted over 3 attempts")
        ms = round((time.perf_counter() - started) * 1000, 2)
        outcome = "duplicate" if duplicate else stored.state
        totals = _totals(decision) if decision else self.ledger.bill_totals(stored.id)
        # a streamed message's decision reads its bills from the spill: kept open until
        # the metrics have counted them
        spill, self._spill = self._spill, None

        def done() -> None:  # once the outcome is durable and the answers delivered
            self._log_outcome(outcome, name, stored, ms, totals)
            self.metrics.observe_message(outcome, stored.apprec_status, time.time() - mtime)
            if not duplicate:
                self.metrics.observe_decision(decision)
            if spill is not None:
                spill.close()

        if self._group is None:
            self._deliver(path, stored)
            done()
        else:
            self._group.append((path, stored, done))

    def _reread(
        self, path: Path, opened: files.Opened | files.Refused
    ) -> files.Opened | files.Refused:
        """The file again when a streamed try let go of its bytes (`_release_raw`) and a
        ledger conflict makes us try once more."""
        limit = self.settings.intake.max_file_bytes
        if isinstance(opened, files.Opened) and opened.raw is None and opened.size <= limit:
            try:
                return files.read_claimed(path, limit, PEEK_BYTES)
            except files.Refused as refused:
                return refused
        return opened

    def _log_outcome(
        self,
        event: str,
        name: str,
        stored: Stored,
        ms: float | None,
        totals: tuple[int, Decimal, Decimal],
    ) -> None:
        """The one line per terminal state change: ids, sender, outcome, the bills with
        the kroner claimed and approved, duration."""
        bills, claimed, approved = totals
        ids = {"message_id": stored.ebxml_message_id, "conversation_id": stored.conversation_id}
        self.log.info(
            event,
            **{k: v for k, v in ids.items() if v},  # as read from the envelope, when it was
            sender_her=stored.sender_her,
            status=stored.apprec_status,
            problems=[f"{p['code']}@{p['layer']}" for p in stored.problems],
            outputs=[o.name for o in stored.outputs],
            bills=bills,
            claimed=str(claimed),
            approved=str(approved),
            duration_ms=ms,
        )

    def context(self, now: datetime) -> Context:
        """What the functional core may see: the loaded tables, the ledger's history."""
        return Context(
            self.settings,
            self.schemas,
            self.registry,
            now,
            history=self.ledger,
            keys=self.keys,
            tariffs=self.tariffs,
            patient_secret=self.patient_secret,
            progress=self._progress,
        )

    def _progress(self, stage: str, done: int, total: int) -> None:
        """A long message's progress: a log line, and a sign of life for the watchdog.
        `of` is None while the number of bills is not known yet (a streamed read);
        `bills_per_s` since the stage began (its first report starts the clock)."""
        now = time.monotonic()
        self.heartbeat = now
        began = self._progress_began
        if began is None or began[0] != stage or done <= began[2]:
            began = self._progress_began = (stage, now, done)
        _stage, since, first = began
        rate = (done - first) / (now - since) if done > first and now > since else None
        self.log.info(
            "progress", stage=stage, bills=done, of=total or None,
            bills_per_s=round(rate) if rate else None,
        )  # fmt: skip

    def _process(
        self, path: Path, opened: files.Opened | files.Refused, now: datetime, attempts: int = 1
    ) -> tuple[Stored, bool, Decision | None]:
        started = time.perf_counter()
        ctx = self.context(now)
        self._big = isinstance(opened, files.Opened) and opened.size > GROUP_MAX_BYTES
        limit = self.settings.intake.max_attempts
        if attempts > limit and isinstance(opened, files.Opened):
            # killed (out of memory, a watchdog) each time it was handled: never again,
            # or it would kill every start; answered from its header when it has one
            self.log.error("interrupted_too_often", attempts=attempts - 1)
            work = _interrupted(opened, attempts - 1)
        elif isinstance(opened, files.Refused):  # nothing we may read: the reason is the answer
            self.log.warning("refused_file", reason=opened.reason)
            work = Work(raw=b"", content_hash=content_hash(b"")).failed(
                Problem(Layer.FILE, "T01", opened.reason)
            )
        else:
            earlier = self.ledger.by_hash(opened.digest)  # (an earlier, final outcome)
            if earlier is not None:
                self.ledger.record_duplicate(path.name, earlier, now.isoformat())
                return earlier, True, None
            if opened.links != 1:  # a hidden hard link could rewrite the archived original
                work = _refused_links(opened)
            elif opened.raw is None:
                work = _oversized(opened, self.settings.intake.max_file_bytes)
            else:
                self._opened = opened  # `_run_streamed` lets go of its bytes
                try:
                    work = self._run_opened(opened, ctx)
                finally:
                    self._opened = None
        if work.retransmission_of:  # same MessageId and payload in a new envelope
            earlier = self.ledger.by_hash(work.retransmission_of)
            self.ledger.record_duplicate(path.name, earlier, now.isoformat())
            return earlier, True, None
        with self.metrics.stage_timer("answer"):
            result = self._answer(work, ctx)
        ms = (time.perf_counter() - started) * 1000
        with self.metrics.stage_timer("record"):
            stored = self.ledger.record(path.name, work, result, now.isoformat(), ms)
        return stored, False, work.decision

    def _run(self, work: Work, ctx: Context) -> Work:
        # a bug must not lose the message nor stop the daemon
        on_error = self._internal_error
        return self._rest([run(self._front(), work, ctx, self._around, on_error)], ctx)

    def _run_opened(self, opened: files.Opened, ctx: Context) -> Work:
        """`_run` for a claimed file. No frame keeps a `Work` with the file's bytes
        while the rest runs (the box is the only holder): a streamed message lets go
        of them (`_rest`)."""
        start, on_error = [Work(raw=opened.raw, content_hash=opened.digest)], self._internal_error
        return self._rest([run(self._front(), start.pop(), ctx, self._around, on_error)], ctx)

    @staticmethod
    def _front() -> tuple:
        """The stages up to the payload; the rest follow (`_rest`)."""
        return STAGES[: STAGES.index(extract_payload) + 1]

    def _rest(self, box: list[Work], ctx: Context) -> Work:
        """The stages after the payload: a payload over `stream_above_bytes` takes the
        streamed ones instead (`_run_streamed`). `box` holds the only reference."""
        work, rest = box.pop(), STAGES[len(self._front()) :]
        if work.problems or work.retransmission_of:
            return work
        if stream.wants_stream(work, ctx):
            if not stream.signed(work.payload):
                # the file's bytes and its MIME parts are not needed any more (the
                # envelope is open and verified, the payload taken out): a 100 MB claim
                # held 200 MB of bytes while it was judged
                work = work.with_(raw=b"", multipart=None)
                if self._opened is not None:
                    object.__setattr__(self._opened, "raw", None)  # frozen: see `_reread`
            return self._run_streamed(work, ctx, rest)
        return run(rest, work, ctx, around=self._around, on_error=self._internal_error)

    def _run_streamed(self, work: Work, ctx: Context, whole: tuple) -> Work:
        """A payload over `stream_above_bytes`: read as a stream and judged in chunks,
        its state in a spill file (`daemon.claims.stream`, `daemon.rules.chunked`). A
        signed one is verified whole, which needs its tree: up to `max_whole_bytes`
        it takes the whole-message path, over that it is refused (T99)."""
        size, limit = len(work.payload), ctx.settings.intake.max_whole_bytes
        if stream.signed(work.payload):
            if size <= limit:
                return run(whole, work, ctx, around=self._around, on_error=self._internal_error)
            text = (
                f"signert MsgHead på {size} byte er over grensen på {limit} byte for "
                "signaturkontroll (signaturen må kontrolleres over hele dokumentet); "
                "del kravet i flere meldinger"
            )
            return work.failed(Problem(Layer.MSGHEAD, "T99", text, "/MsgHead/Signature"))
        self._drop_spill()  # a retry after a ledger conflict starts afresh
        self.log.info("streaming", payload_bytes=size)
        spill = self._spill = stream.Spill(
            stream.spill_path(ctx.settings.paths.work, work.content_hash)
        )
        self._big = True  # the skeleton and the freed subtrees: give the heap back

        def validate(work: Work, ctx: Context) -> Work:
            return stream.stream_validate(work, ctx, spill)

        def decide(work: Work, ctx: Context) -> Work:
            return decide_streamed(work, ctx, spill)

        stages = (validate, verify_payload_signature, decide)
        return run(stages, work, ctx, around=self._around, on_error=self._internal_error)

    def _around(self, stage: str, call: Callable[[], Work]) -> Work:
        """Each stage timed into the metrics; the heartbeat says the loop is alive
        (the systemd watchdog is fed only while it moves)."""
        self.heartbeat = time.monotonic()
        if stage == "decide" and self._big:
            _return_freed_memory()  # the big claim's XML trees, let go of by `read`
        try:
            return self.metrics.around(stage, call)
        finally:
            self.heartbeat = time.monotonic()

    def _answer(self, work: Work, ctx: Context) -> Answer:
        try:
            return answer(work, ctx)
        except Exception as exc:
            problem = self._internal_error("answer", exc)
            return Answer("quarantined", None, (), (*work.problems, problem))

    def _internal_error(self, where: str, exc: Exception) -> Problem:
        if isinstance(exc, Conflict):  # the ledger's history moved under us: judge again
            raise exc
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        # only the exception type and code location: its message may quote the input
        self.log.error(
            "internal_error",
            stage=where,
            error=type(exc).__name__,
            at=f"{Path(frame.filename).name}:{frame.lineno}",
        )
        return Problem(Layer.INTERNAL, "X99", f"intern feil hos mottaker ({type(exc).__name__})")

    # ------------------------------------------------------------------ group commit

    def _open_group(self) -> None:
        if self._group is None:
            self.ledger.begin_group()
            self._group, self._group_files = [], 0
            self._group_opened = time.monotonic()

    def _group_is_full(self) -> bool:
        intake = self.settings.intake
        open_ms = (time.monotonic() - self._group_opened) * 1000
        return self._group_files >= intake.commit_batch_messages or (
            open_ms >= intake.commit_batch_ms
        )

    def _close_group(self) -> None:
        """Commit the group's outcomes (one transaction, one fsync), then deliver its
        answers (their fsyncs together, one fsync of the outbox), then file the
        originals away, log and count. A failed commit leaves the group's files in
        work/ with no outcome: the next recovery processes them again."""
        group, self._group = self._group, None
        if group is None:
            return
        if self.worker is not None:
            self.worker.check()
        try:
            self.ledger.commit_group()
        except Exception as exc:
            self.log.error("group_commit_failed", files=self._group_files, error=type(exc).__name__)
            self.failures += self._group_files
            return
        try:
            outputs = [
                (self.settings.paths.outbox / o.name, o.content)
                for _path, stored, _done in group
                for o in stored.outputs
            ]
            files.write_all_atomic(outputs)
        except Exception as exc:  # committed: recovery delivers the same bytes later
            self.log.error("delivery_failed", files=len(group), error=type(exc).__name__)
            self.failures += len(group)
            return
        for path, stored, done in group:
            try:
                self._file_away(path, stored)
            except Exception as exc:
                self.log.error("delivery_failed", file=path.name, error=type(exc).__name__)
                self.failures += 1
                continue
            done()

    def _deliver(self, path: Path, stored: Stored) -> None:
        paths = self.settings.paths
        files.write_all_atomic([(paths.outbox / o.name, o.content) for o in stored.outputs])
        self._file_away(path, stored)

    def _file_away(self, path: Path, stored: Stored) -> None:
        """The original to quarantine/ (beside its .err.json) or archive/, once its
        answers are in the outbox."""
        paths = self.settings.paths
        if stored.state == "quarantined":
            report = {
                "file": files.original_name(path.name),
                "work_name": path.name,
                "state": "quarantined",
                "answered_with": [o.name for o in stored.outputs],
                "problems": list(stored.problems),
                "written_at": timestamp(self.clock()),
            }
            files.write_error_file(paths.quarantine, path.name, report)
            files.move(path, paths.quarantine)
        else:
            day = self.clock().astimezone(UTC).strftime("%Y-%m-%d")
            # no fsync of the archive folder: the outcome is committed and the answers
            # are durable; if a power cut undoes this rename, the file is back in
            # work/ and recovery re-delivers the stored answer (same bytes) and moves it
            files.move(path, paths.archive / day, sync_folder=False)
        if self.worker is not None and self.worker.shared:
            self.worker.release(path.name)  # a kill before this: a hold on nothing, harmless


def _totals(decision: Decision) -> tuple[int, Decimal, Decimal]:
    bills = decision.bills
    zero = Decimal("0")
    return len(bills), sum((b.claimed for b in bills), zero), sum((b.approved for b in bills), zero)


def _return_freed_memory() -> None:
    """Give the C heap's free pages back to the system (glibc `malloc_trim`). lxml's
    tree of a big claim lives in malloc'd memory that glibc keeps after it is freed, and
    Python's objects come from separate arenas, so without this the rules' objects are
    added on top of the dead tree's pages: about 4 kB per bill (benchmarks/big_message.py).
    Elsewhere than glibc this does nothing."""
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None).malloc_trim(0)


_MESSAGE_ID = re.compile(rb"<(?:[\w.-]+:)?MessageId>\s*([^<\s]{1,200})\s*</")
_CONVERSATION_ID = re.compile(rb"<(?:[\w.-]+:)?ConversationId>\s*([^<\s]{1,200})\s*</")


def _ids_of(prefix: bytes) -> dict[str, str]:
    """The ebXML MessageId and ConversationId from the start of the file, for the log
    lines of its handling. A plain search of the first bytes (the SOAP part comes
    first), not a parse: these are labels for the log, trusted for nothing, and a
    second MIME parse per message cost 3 ms (benchmarks/throughput.py, cProfile)."""
    head = prefix[:IDS_PEEK_BYTES]
    ids = {}
    for key, pattern in (("message_id", _MESSAGE_ID), ("conversation_id", _CONVERSATION_ID)):
        found = pattern.search(head)
        if found:
            ids[key] = mask(found.group(1).decode("ascii", "replace"))
    return ids


def _oversized(opened: files.Opened, limit: int) -> Work:
    """Too big to read: answer from the header in the first megabyte, if we find it."""
    text = f"filen er {opened.size} byte, over grensen på {limit} byte; den er ikke lest"
    return _unread(opened, Problem(Layer.FILE, "T99", text))


def _interrupted(opened: files.Opened, starts: int) -> Work:
    """A file whose handling started `starts` times and never finished: quarantined
    unprocessed (X99: ours to investigate; the same file sent again is tried again)."""
    text = (
        f"behandlingen av filen ble avbrutt {starts} ganger uten resultat"
        " (minne- eller tidsgrense hos mottaker); filen er satt til side"
    )
    return _unread(opened, Problem(Layer.INTERNAL, "X99", text))


def _refused_links(opened: files.Opened) -> Work:
    """A file with more than one hard link: someone holds another name for it and could
    rewrite the original after we archived it. Not processed; the header addresses the
    refusal so the sender can send it again as a file of its own."""
    text = (
        f"filen har {opened.links} harde lenker; bare filer med én lenke tas imot"
        " (skriv til et midlertidig navn og gi det nytt navn)"
    )
    return _unread(opened, Problem(Layer.FILE, "T99", text))


def _unread(opened: files.Opened, problem: Problem) -> Work:
    """A file refused without processing it: answered to the sender its ebXML header
    names (read from the first bytes only), with `problem` as the reason."""
    return Work(raw=b"", content_hash=opened.digest, header=peek_header(opened.prefix)).failed(
        problem
    )
