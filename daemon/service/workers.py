"""Several workers on one inbox: leases, heartbeats, holds, take-over, fencing.

Each `kravmottak run` is a worker with an id (`[worker] id`, `--worker-id`, default
host:pid). It has a row in the ledger's `workers` table with a lease (`lease_until`)
that its heartbeat renews every `heartbeat_seconds`, in a thread and on a connection of
its own (`keep_beating`), from before the recovery at start until the process stops.

- Claiming stays the rename into work/; right after it, the worker records that it
  holds the file (`holds`). Whoever records the hold handles the file: two workers
  never handle one file, whatever the interleaving (a unique key decides).
- A worker whose lease has run out (killed, or paused longer than the lease) is taken
  over by a live one: its holds move to the taker in one transaction, and the taker
  processes those files (the ledger's receipts make a half-done file finish exactly
  once, as after a restart).
- Fencing: a worker that finds its own lease expired (its heartbeat is refused, or more
  than `lease_seconds` passed since the last renewal: it was paused) stops at once with
  status 75 (EX_TEMPFAIL), before it writes anything more; systemd starts it again.

On SQLite there is one process per ledger (the state directory lock): every file in
work/ is its own, and the tables only serve `status`.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from daemon.config import Settings
from daemon.ledger import backends
from daemon.logs import get as get_logger

EX_TEMPFAIL = 75


def stamp(moment: datetime) -> str:
    """A UTC time as text of one width (microseconds always): such texts compare in
    time order, in SQL too."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def now_utc() -> datetime:
    return datetime.now(UTC)


def default_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Fenced(Exception):
    """This worker's lease ran out: it must not write anything more."""


class Worker:
    """This process as a worker: its id, its lease and its holds.

    `ledger` is the intake's (the main thread's) ledger; the heartbeat runs on a ledger
    connection of its own (`beat_ledger`), in the scheduler's thread. On PostgreSQL
    holds are written on a third connection that commits at once (`hold_ledger`), so a
    peer sees a hold as soon as the file is in work/, whatever group commit is open."""

    def __init__(
        self,
        settings: Settings,
        ledger,
        *,
        open_ledger: Callable = backends.open_ledger,
        clock: Callable[[], datetime] = now_utc,
        exit: Callable[[int], object] = os._exit,
    ) -> None:
        w = settings.worker
        self.id = w.id or default_id()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.lease = timedelta(seconds=w.lease_seconds)
        self.heartbeat_seconds = w.heartbeat_seconds
        self.shared = not backends.is_sqlite(settings)
        self.ledger = ledger
        self.clock = clock
        self._exit = exit
        self._open = open_ledger
        self._settings = settings
        self.beat_ledger = None
        self.hold_ledger = ledger
        self._renewed = time.monotonic()
        self._fenced = False
        self._beat_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.log = get_logger()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        now = self.clock()
        self.beat_ledger = self._open(self._settings)
        if self.shared:
            self.hold_ledger = self._open(self._settings)
        self.beat_ledger.register_worker(
            self.id, self.host, self.pid, stamp(now), stamp(now + self.lease)
        )
        self._renewed = time.monotonic()

    def keep_beating(self) -> threading.Thread:
        """The heartbeat, every `heartbeat_seconds`, in a thread of its own from now
        on: recovery at start, a long pass or a settlement batch never delay it."""

        def loop() -> None:
            while not self._stopping.wait(self.heartbeat_seconds):
                try:
                    self.beat()
                except Fenced:  # only when exiting was not possible (tests)
                    return
                except Exception as exc:  # never let the heartbeat thread die quietly
                    self.log.error("heartbeat_failed", error=type(exc).__name__)

        thread = threading.Thread(target=loop, name="kravmottak-heartbeat", daemon=True)
        thread.start()
        self._thread = thread
        return thread

    def stop(self) -> None:
        """A clean stop: the lease ends now, the connections close."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._beat_lock:
            try:
                if self.beat_ledger is not None and not self._fenced:
                    self.beat_ledger.retire_worker(self.id, self.pid, stamp(self.clock()))
            except Exception as exc:  # the lease runs out by itself
                self.log.error("worker_retire_failed", error=type(exc).__name__)
            for extra in {id(x): x for x in (self.beat_ledger, self.hold_ledger)}.values():
                if extra is not None and extra is not self.ledger:
                    extra.close()
            self.beat_ledger = None

    # ------------------------------------------------------------------ lease

    def beat(self) -> None:
        """The heartbeat job: renew the lease, or fence this worker."""
        with self._beat_lock:
            if self.beat_ledger is None:
                return
            self.check()
            now = self.clock()
            try:
                ok = self.beat_ledger.heartbeat(
                    self.id, self.host, self.pid, stamp(now), stamp(now + self.lease)
                )
            except Exception as exc:  # the ledger is away: the lease may run out
                self.log.error("heartbeat_failed", error=type(exc).__name__)
                self.check()
                return
            if not ok:
                self.fence("lease lost: expired or taken over")
            self._renewed = time.monotonic()

    def check(self) -> None:
        """Fence now if the lease may have run out since the last renewal (this process
        was paused, or the ledger did not answer): a peer may be handling our files."""
        if not self.shared:
            return  # alone on the ledger (SQLite): nobody takes our files while we pause
        if self._fenced or time.monotonic() - self._renewed > self.lease.total_seconds():
            self.fence("lease expired before it was renewed")

    def fence(self, reason: str) -> None:
        self._fenced = True
        self.log.error("worker_fenced", reason=reason, exit_status=EX_TEMPFAIL)
        self._exit(EX_TEMPFAIL)
        raise Fenced(reason)  # when `exit` returns (tests)

    # ------------------------------------------------------------------ holds

    def hold(self, work_name: str) -> bool:
        """Right after the rename into work/: True when this worker handles the file."""
        if not self.shared:
            return True  # alone (SQLite): every file of work/ is ours; no write per file
        self.check()
        return self.hold_ledger.hold(work_name, self.id, stamp(self.clock()))

    def release(self, work_name: str) -> None:
        if self.shared:
            self.hold_ledger.release(work_name)

    def claimable(self, paths: list[Path], *, takeover_only: bool = False) -> list[Path]:
        """Of these files in work/, the ones this worker is to handle: its own holds,
        the holds of workers whose lease ran out (taken over here), and files nobody
        holds (claimed by a worker killed before it recorded the hold). On SQLite:
        every one (one process per ledger). `takeover_only`: only the ones newly taken."""
        if not paths:
            return []
        now = self.clock()
        holds = self.hold_ledger.holds()
        taken: set[str] = set()
        for dead, force in self._dead_peers(now, set(holds.values())):
            moved = self.hold_ledger.take_over(dead, self.id, stamp(now), force=force)
            if moved:
                self.log.warning("worker_taken_over", dead=dead, files=len(moved))
            taken.update(moved)
        mine: list[Path] = []
        for path in paths:
            holder = holds.get(path.name)
            if path.name in taken:
                mine.append(path)
            elif holder == self.id:
                if not takeover_only:
                    mine.append(path)
            elif holder is None or not self.shared:
                if self.shared and not self._orphaned(path, now):
                    continue  # just renamed by a peer that records its hold next
                if self.hold_ledger.hold(path.name, self.id, stamp(now)) or not self.shared:
                    mine.append(path)
        return mine

    def _dead_peers(self, now: datetime, holders: set[str]) -> list[tuple[str, bool]]:
        """The other workers holding files that are gone: (id, known dead without the
        lease's say). On SQLite, every other one (the state directory lock is ours)."""
        dead = []
        for row in self.hold_ledger.workers():
            wid = row["worker_id"]
            if wid == self.id or wid not in holders:
                continue
            if not self.shared:
                dead.append((wid, True))
            elif row["state"] != "running" or row["lease_until"] < stamp(now):
                dead.append((wid, False))
            elif row["host"] == self.host and not _alive(row["pid"]):
                dead.append((wid, True))  # a process of this host that no longer exists
        return dead

    def _orphaned(self, path: Path, now: datetime) -> bool:
        """No hold and renamed into work/ longer than a lease ago: its claimer died
        between the rename and the hold."""
        try:
            changed = path.lstat().st_ctime
        except FileNotFoundError:
            return False
        return now.timestamp() - changed > self.lease.total_seconds()
