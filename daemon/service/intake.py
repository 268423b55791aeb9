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
"""

from __future__ import annotations

import hashlib
import re
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from threading import Event

import structlog

from daemon import files
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
from daemon.rules.decide import decide
from daemon.schemas import Schemas
from daemon.service.metrics import Metrics
from daemon.service.pipeline import run
from daemon.service.watch import CompleteNames
from daemon.transport.agreement import check_agreement, check_history
from daemon.transport.trust import KeyPair
from daemon.transport.unwrap import extract_payload, open_envelope, peek_header
from daemon.transport.verify import verify_envelope_signature, verify_payload_signature

STAGES = (
    open_envelope,
    check_agreement,
    verify_envelope_signature,
    check_history,
    extract_payload,
    validate,
    verify_payload_signature,
    read,
    decide,
)
PEEK_BYTES = 1024 * 1024
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
    ) -> None:
        self.settings = settings
        self.schemas = schemas
        self.registry = registry
        self.ledger = ledger
        self.clock = clock
        self.keys = keys
        self.tariffs = tariffs
        self.log = get_logger()
        self._seen: dict[str, tuple[int, float, float]] = {}  # future-mtime files
        self.complete = CompleteNames()  # files inotify saw completed (daemon.service.watch)
        self.metrics = metrics or Metrics(process=False)
        self.heartbeat = time.monotonic()  # last sign of life of the handling loop
        self.failures = 0  # files whose handling raised; they wait in work/

    # ------------------------------------------------------------------ passes

    def recover(self) -> int:
        """Finish everything a previous run left in work/ (call before polling)."""
        for folder in (self.settings.paths.outbox, self.settings.paths.quarantine):
            for temp in files.remove_stale_temps(folder):  # a write cut short by a kill
                self.log.info("removed_stale_temp", file=temp)
        names = sorted(p for p in self.settings.paths.work.iterdir() if not p.name.startswith("."))
        for path in names:
            self.log.info("recovering", file=path.name)
            self._handle_safely(path)
        return len(names)

    def poll(self, stop: Event | None = None) -> int:
        """Claim and handle every ready file in the inbox once; returns how many."""
        self.heartbeat = time.monotonic()
        ready, _settling = self._scan()
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
            self._handle_safely(path, received_at=candidate.mtime)
            self.heartbeat = time.monotonic()
            done += 1
        return done

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
        return files.scan(
            self.settings.paths.inbox,
            self.settings.intake,
            seen=self._seen,
            complete=self.complete.take(),
        )

    def _handle_safely(self, path: Path, received_at: float | None = None) -> bool:
        """One file's failure (ledger locked, disk full, a bug in the shell) must not
        stop the others: it stays in work/ and is re-driven by the next recovery."""
        try:
            self.handle(path, received_at)
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

    def handle(self, path: Path, received_at: float | None = None) -> None:
        """One file, with its name and (when its envelope says) the ebXML MessageId and
        ConversationId on every log line written meanwhile."""
        with structlog.contextvars.bound_contextvars(file=path.name, **_ids_of(path)):
            self._handle(path, received_at)

    def _handle(self, path: Path, received_at: float | None = None) -> None:
        name = path.name
        now = self.clock()
        receipt = self.ledger.receipt(name)
        mtime = received_at if received_at is not None else path.stat().st_mtime
        if receipt is None:
            received = datetime.fromtimestamp(mtime, UTC).isoformat()
            self.ledger.claim(name, files.original_name(name), received, now.isoformat())
            self.log.info("claimed")
        elif receipt.state != "claimed":  # outcome recorded before a crash: deliver it
            stored = self.ledger.by_id(receipt.message_id)
            self._deliver(path, stored)
            self._log_outcome("delivered", name, stored, None)
            # the run that recorded it died before counting it: counted here, once
            self.metrics.observe_message(stored.state, stored.apprec_status, time.time() - mtime)
            return
        started = time.perf_counter()
        for _attempt in range(3):
            try:
                stored, duplicate, decision = self._process(path, now)
                break
            except Conflict:  # another worker stored this content or MessageId first
                now = self.clock()
        else:
            raise RuntimeError(f"{name}: ledger conflict persisted over 3 attempts")
        self._deliver(path, stored)
        ms = round((time.perf_counter() - started) * 1000, 2)
        outcome = "duplicate" if duplicate else stored.state
        self._log_outcome(outcome, name, stored, ms)
        self.metrics.observe_message(outcome, stored.apprec_status, time.time() - mtime)
        if not duplicate:
            self.metrics.observe_decision(decision)

    def _log_outcome(self, event: str, name: str, stored: Stored, ms: float | None) -> None:
        """The one line per terminal state change: ids, sender, outcome, duration."""
        ids = {"message_id": stored.ebxml_message_id, "conversation_id": stored.conversation_id}
        self.log.info(
            event,
            **{k: v for k, v in ids.items() if v},  # as read from the envelope, when it was
            sender_her=stored.sender_her,
            status=stored.apprec_status,
            problems=[f"{p['code']}@{p['layer']}" for p in stored.problems],
            outputs=[o.name for o in stored.outputs],
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
        )

    def _process(self, path: Path, now: datetime) -> tuple[Stored, bool, Decision | None]:
        started = time.perf_counter()
        size = path.stat().st_size
        limit = self.settings.intake.max_file_bytes
        if size > limit:
            digest, raw = _hash_file(path), b""
        else:
            raw = path.read_bytes()
            digest = content_hash(raw)
        earlier = self.ledger.by_hash(digest)
        if earlier is not None:
            self.ledger.record_duplicate(path.name, earlier, now.isoformat())
            return earlier, True, None
        ctx = self.context(now)
        if size > limit:
            work = _oversized(path, digest, size, limit)
        else:
            work = self._run(Work(raw=raw, content_hash=digest), ctx)
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
        return run(STAGES, work, ctx, around=self._around, on_error=self._internal_error)

    def _around(self, stage: str, call: Callable[[], Work]) -> Work:
        """Each stage timed into the metrics; the heartbeat says the loop is alive
        (the systemd watchdog is fed only while it moves)."""
        self.heartbeat = time.monotonic()
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
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        # only the exception type and code location: its message may quote the input
        self.log.error(
            "internal_error",
            stage=where,
            error=type(exc).__name__,
            at=f"{Path(frame.filename).name}:{frame.lineno}",
        )
        return Problem(Layer.INTERNAL, "X99", f"intern feil hos mottaker ({type(exc).__name__})")

    def _deliver(self, path: Path, stored: Stored) -> None:
        paths = self.settings.paths
        written = [
            files.write_if_changed(paths.outbox / o.name, o.content, sync_folder=False)
            for o in stored.outputs
        ]
        if any(written):  # one fsync of the outbox for the message's files
            files.fsync_dir(paths.outbox)
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


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


_MESSAGE_ID = re.compile(rb"<(?:[\w.-]+:)?MessageId>\s*([^<\s]{1,200})\s*</")
_CONVERSATION_ID = re.compile(rb"<(?:[\w.-]+:)?ConversationId>\s*([^<\s]{1,200})\s*</")


def _ids_of(path: Path) -> dict[str, str]:
    """The ebXML MessageId and ConversationId from the start of the file, for the log
    lines of its handling. A plain search of the first bytes (the SOAP part comes
    first), not a parse: these are labels for the log, trusted for nothing, and a
    second MIME parse per message cost 3 ms (benchmarks/throughput.py, cProfile)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(IDS_PEEK_BYTES)
    except OSError:  # an unreadable file: its handling will say so
        return {}
    ids = {}
    for key, pattern in (("message_id", _MESSAGE_ID), ("conversation_id", _CONVERSATION_ID)):
        found = pattern.search(head)
        if found:
            ids[key] = mask(found.group(1).decode("ascii", "replace"))
    return ids


def _oversized(path: Path, digest: str, size: int, limit: int) -> Work:
    """Too big to read: answer from the header in the first megabyte, if we find it."""
    with open(path, "rb") as fh:
        prefix = fh.read(PEEK_BYTES)
    header = peek_header(prefix)
    text = f"filen er {size} byte, over grensen på {limit} byte; den er ikke lest"
    return Work(raw=b"", content_hash=digest, header=header).failed(
        Problem(Layer.FILE, "T99", text)
    )
