"""The long-running daemon: recover, then poll the inbox on an apscheduler job.

- Live intake: inotify (`daemon.service.watch`) wakes the poll the moment a file is dropped;
  the interval poll stays as the safety net.
- The settlement batch runs on its calendar (`daemon.settlement.settle`). A lock keeps passes and
  batches one at a time: the ledger connection is never used by two threads at once.
- systemd (`daemon.service.notify`): READY=1 once schemas, tariffs, keys and ledger are loaded
  and recovery is done; STATUS= with the queue after each pass; WATCHDOG=1 while the
  handling loop shows signs of life; RELOADING=1 / READY=1 around SIGHUP; STOPPING=1.
- SIGTERM / SIGINT: the message in hand is finished, then the process exits 0.
  SIGHUP: `reload()`, all or nothing.
- Metrics on loopback (`daemon.service.metrics`): /metrics, /healthz, /readyz.

The poll job has `max_instances=1` and `coalesce=True`: a slow pass never overlaps
the next, and missed runs collapse into one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sqlite3
import time
from datetime import UTC, datetime
from threading import Event, Lock, Thread

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from daemon import __version__, config, files, logs
from daemon.config import ConfigError, Settings
from daemon.ledger import backends
from daemon.logs import get as get_logger
from daemon.registers import registry, tariffs
from daemon.registers.tariffs import Tariffs
from daemon.schemas import Schemas
from daemon.service import lock, notify, workers
from daemon.service.intake import Intake, utcnow
from daemon.service.metrics import Metrics, serve
from daemon.service.watch import InboxWatcher
from daemon.settlement import settle
from daemon.transport import keys

RETRY_SECONDS = 60.0
STALL_SECONDS = 300.0  # no sign of life for this long: the loop is hung (watchdog)
RECOVERY_SECONDS_PER_FILE = 180.0  # start-up time asked of systemd per file in work/


def build(settings: Settings) -> Intake:
    """Load everything the daemon needs once: schemas, registry, ledger, folders."""
    paths = settings.paths
    files.ensure_folders(paths)
    if settings.generate_missing_keys and not paths.private_key.exists():
        keys.generate(
            paths.private_key,
            paths.certificate,
            her_id=settings.party.her_id,
            orgnr=settings.party.orgnr,
            name=settings.party.name,
        )
    if settings.ca_file is not None and not settings.ca_file.is_file():
        raise ConfigError(f"[trust] ca_file not found: {settings.ca_file}")
    pair = keys.load_pair(
        paths.private_key, paths.certificate, keys.passphrase(settings.key_passphrase)
    )
    loaded = registry.load(paths.partners, paths.institutions)
    report_broken(loaded)
    return Intake(
        settings,
        Schemas.load(),
        loaded,
        backends.open_ledger(settings),
        keys=pair,
        tariffs=load_tariffs(paths.tariffs),
        clock=clock_for(settings),
        metrics=Metrics(version=__version__),
        # made on first start when missing (an upgraded install: see `db rekey-patients`)
        patient_secret=keys.patient_secret(paths.patient_secret),
    )


def report_broken(loaded: registry.Registry) -> None:
    """A partner whose certificate cannot be loaded is logged, not fatal: the others
    are served, and its messages are refused retryably (X99, not final)."""
    for p in loaded.partners:
        if p.broken:
            get_logger().error("partner_broken", her_id=p.her_id, cpa_id=p.cpa_id, reason=p.broken)


def clock_for(settings: Settings):
    """The real clock, or the configured fixed time (rehearsals and tests)."""
    if settings.intake.fixed_time is None:
        return utcnow
    try:
        fixed = datetime.fromisoformat(settings.intake.fixed_time.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"[intake] fixed_time: {exc}") from exc
    fixed = fixed if fixed.tzinfo else fixed.replace(tzinfo=UTC)
    return lambda: fixed


def load_tariffs(directory) -> Tariffs:
    try:
        return tariffs.load(directory)
    except tariffs.TariffError as exc:
        raise ConfigError(f"tariffs: {exc}") from exc


def tariff_rows(t: Tariffs | None) -> dict[str, int]:
    """How many codes and rates are in force (the `started` and `reloaded` lines)."""
    if t is None:
        return {}
    return {
        "nlk_codes": len(t.codes),
        "lab_rates": len(t.rates),
        "radiology_codes": len(t.radiology.codes),
        "radiology_rates": len(t.radiology.rates),
        "rhfs": len(t.rhf.rhfs),
    }


def reload(intake: Intake) -> bool:
    """SIGHUP: the config file, partners, institutions, tariffs and our key pair, all
    or nothing. Anything broken (a syntax error, a bad rate, a key that does not load,
    a bad cron expression) is refused with a log line, and what runs stays in force.
    Folders and the ledger cannot move while running: a changed [paths] is refused
    (restart for that). Returns whether the new state took effect."""
    log = get_logger()
    try:
        new = config.load(intake.settings.source)
        if new.paths != intake.settings.paths:
            raise ConfigError("[paths] changed: restart the daemon to move folders or the ledger")
        settle.Calendar.from_settings(new)  # a bad cron or time zone is refused here
        new_registry = registry.load(new.paths.partners, new.paths.institutions)
        report_broken(new_registry)
        new_tariffs = load_tariffs(new.paths.tariffs)
        new_keys = keys.load_pair(
            new.paths.private_key, new.paths.certificate, keys.passphrase(new.key_passphrase)
        )
        new_clock = clock_for(new)
    except (ConfigError, keys.KeyLoadError, OSError) as exc:
        log.error("reload_refused", reason=str(exc))
        return False
    intake.settings, intake.registry, intake.tariffs = new, new_registry, new_tariffs
    intake.keys, intake.clock = new_keys, new_clock
    logs.configure(new.log_level)
    log.info(
        "reloaded",
        codes=len(new_tariffs.codes),
        radiology_codes=len(new_tariffs.radiology.codes),
        partners=len(new_registry.partners),
        partners_broken=sum(1 for p in new_registry.partners if p.broken),
        institutions=len(new_registry.institutions),
        tariff_rows=tariff_rows(new_tariffs),
    )
    return True


def readiness(settings: Settings) -> tuple[bool, str]:
    """/readyz: the ledger answers (its own read-only connection: the server thread
    must not share the intake's) and every folder is writable."""
    try:
        if backends.is_sqlite(settings):
            uri = f"file:{settings.paths.ledger}?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=1.0)) as db:
                db.execute("SELECT 1 FROM receipts LIMIT 1").fetchall()
        else:
            from daemon.ledger.postgres import probe

            probe(settings.ledger)
    except Exception as exc:  # sqlite3.Error, psycopg.Error: the ledger does not answer
        return False, f"ledger: {exc}"
    for folder in settings.paths.folders():
        if not os.access(folder, os.W_OK | os.X_OK):
            return False, f"folder not writable: {folder.name}"
    return True, "ok"


def _status_text(intake: Intake) -> tuple[int, float | None, str]:
    depth, age = intake.queue()
    oldest = f", oldest {age:.0f} s" if age is not None else ""
    return depth, age, f"{depth} waiting{oldest}"


def run(settings: Settings) -> int:
    """The daemon, holding the state directory's lock (`daemon.service.lock`) throughout
    on SQLite: a second daemon or a `process` on the same folders is refused, naming our
    PID. On PostgreSQL several workers share the folders (`daemon.service.workers`)."""
    if not backends.is_sqlite(settings):
        return _run(settings)
    with lock.hold(settings):
        return _run(settings)


def _run(settings: Settings) -> int:
    """The daemon: load, recover, make up a missed settlement, then poll the inbox
    (woken at once by inotify), settle on the calendar, serve metrics, talk to
    systemd (READY, STATUS, WATCHDOG, RELOADING, STOPPING) until SIGTERM/SIGINT."""
    log = get_logger()
    logging.basicConfig(level=logging.WARNING)  # apscheduler's own messages, stderr
    # "skipped: maximum number of running instances reached" is max_instances=1 doing
    # its job when a pass outlasts the interval: not worth a plain-text warning
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    stop, reload_requested, woken = Event(), Event(), Event()
    received: list[str] = []

    def on_signal(signum: int, _frame: object) -> None:
        # only set the flag: logging here could deadlock on the log writer's lock
        received.append(signal.Signals(signum).name)
        stop.set()

    def on_hangup(_signum: int, _frame: object) -> None:
        reload_requested.set()  # done by the poll thread, between files
        woken.set()

    # handlers first: a SIGTERM while loading still means "stop cleanly, exit 0"
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    worker_id = settings.worker.id or workers.default_id()
    logs.bind_process(worker=worker_id)
    intake = build(settings)
    if stop.is_set():
        intake.ledger.close()
        log.info("stopped")
        return 0
    metrics = intake.metrics
    metrics.set_worker(worker_id)
    worker = workers.Worker(settings, intake.ledger)
    worker.start()
    worker.keep_beating()  # from now: recovery below may outlast a lease
    intake.worker = worker
    # recovery of big files left in work/ may outlast TimeoutStartSec: ask for more
    left = sum(1 for p in settings.paths.work.iterdir() if not p.name.startswith("."))
    notify.extend_timeout(RECOVERY_SECONDS_PER_FILE * max(1, left))
    recovered = intake.recover()
    notify.extend_timeout(RECOVERY_SECONDS_PER_FILE)  # the settlement catch-up below
    calendar = [settle.Calendar.from_settings(settings)]
    settle.deliver(intake)  # vedtak a kill cut off between commit and files
    if settings.settlement.make_up_missed:
        made_up = settle.make_up(intake, calendar[0])
        if made_up is not None:
            log.info("settlement_made_up", run=made_up.run, vedtak=made_up.vedtak)
    metrics.set_certificates(intake.registry, intake.keys.certificate if intake.keys else None)
    metrics.observe_settlement(intake.ledger.last_settlement(), new=False)
    held_checked: list = [0.0, None]  # when, and what was last logged

    def observe_held() -> None:
        """Held payments as a metric, and a log line per payee whenever the set changes:
        at start, after each batch and reload, and once a minute (a `payments repoint`
        from the command line shows here without a restart)."""
        held_checked[0] = time.monotonic()
        found = settle.held(intake.ledger, intake.tariffs, intake.registry)
        metrics.set_held(found)
        seen = [(h.payee, h.payments, h.approved) for h in found]
        if seen == held_checked[1]:
            return
        held_checked[1] = seen
        for h in found:
            log.error(
                "payments_held",
                payee=h.payee,
                payments=h.payments,
                kroner=str(h.approved),
                reason=h.reason,
            )

    observe_held()
    server = _serve_metrics(settings, metrics)
    last_retry = [time.monotonic()]
    last_takeover = [time.monotonic()]
    scheduler = BackgroundScheduler(
        timezone=UTC, executors={"default": ThreadPoolExecutor(max_workers=2)}
    )

    def apply_reload() -> None:
        notify.reloading("reloading configuration")
        ok = reload(intake)
        metrics.observe_reload(ok)
        if ok:
            keys_ = intake.keys
            metrics.set_certificates(intake.registry, keys_.certificate if keys_ else None)
            observe_held()
            calendar[0] = settle.Calendar.from_settings(intake.settings)
            scheduler.reschedule_job("settlement", trigger=calendar[0].trigger)
        notify.ready(_status_text(intake)[2])

    handling = Lock()  # one pass at a time: the ledger connection is not shared

    def one_pass() -> None:
        """Reload if asked, retry failures, take every ready file, report the queue."""
        if reload_requested.is_set():
            reload_requested.clear()
            apply_reload()
        # a file failed earlier (disk full, ledger locked): retry work/ once a minute
        if intake.failures and time.monotonic() - last_retry[0] >= RETRY_SECONDS:
            last_retry[0] = time.monotonic()
            intake.failures = 0
            intake.recover()
        # several workers: take over the files of a worker whose lease ran out
        if worker.shared and time.monotonic() - last_takeover[0] >= worker.heartbeat_seconds:
            last_takeover[0] = time.monotonic()
            intake.recover(takeover_only=True)
        # answers recorded but not delivered (outbox unwritable a moment ago): every
        # pass, so a repaired outbox gets them without a restart
        intake.redeliver()
        if intake.ledger.undelivered():
            try:
                settle.deliver(intake)
            except OSError as exc:  # the inbox is still handled; tried again next pass
                log.error("vedtak_delivery_failed", error=type(exc).__name__, detail=exc.strerror)
        intake.poll(stop)
        depth, age, text = _status_text(intake)
        metrics.set_queue(depth, age)
        metrics.undelivered.set(intake.undelivered().answers)
        if time.monotonic() - held_checked[0] >= RETRY_SECONDS:
            observe_held()
        notify.status(text)

    def poll() -> None:
        """The apscheduler interval job: the safety net when no event came."""
        try:
            with handling:
                one_pass()
        except Exception as exc:  # e.g. the inbox itself vanished; keep the daemon alive
            intake.failures += 1
            log.error("poll_failed", error=type(exc).__name__)

    def live() -> None:
        """The live-intake thread: a pass as soon as inotify (or SIGHUP) wakes it. A
        wake during a pass is kept by the event and runs the next pass at once."""
        while not stop.is_set():
            if not woken.wait(timeout=0.5):
                continue
            woken.clear()
            poll()

    def settle_batch() -> None:
        try:
            with handling:
                result = settle.scheduled_batch(intake, calendar[0], datetime.now(UTC))
            if result is not None and result.run is not None:
                metrics.observe_settlement(intake.ledger.last_settlement())
                observe_held()
        except Exception as exc:  # nothing is assigned; the next batch takes it all
            log.error("settlement_failed", error=type(exc).__name__, detail=str(exc)[:200])

    def wake() -> None:
        woken.set()

    scheduler.add_job(
        poll,
        "interval",
        seconds=settings.intake.poll_interval_seconds,
        id="poll-inbox",
        max_instances=1,
        coalesce=True,
        next_run_time=datetime.now(UTC),
    )
    scheduler.add_job(
        settle_batch,
        calendar[0].trigger,
        id="settlement",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=3600,  # a batch delayed by a long intake pass still runs
    )
    watcher = _watch(settings, intake, wake)
    live_thread = Thread(target=live, name="live-intake", daemon=True)
    live_thread.start()
    scheduler.start()
    notify.ready(_status_text(intake)[2])
    log.info(
        "started",
        version=__version__,
        config=str(settings.source.resolve()),
        partners=len(intake.registry.partners),
        partners_broken=sum(1 for p in intake.registry.partners if p.broken),
        institutions=len(intake.registry.institutions),
        tariff_rows=tariff_rows(intake.tariffs),
        recovered=recovered,
        inbox=str(settings.paths.inbox),
        metrics_port=server.port if server else None,
        live=watcher is not None,
    )
    interval = notify.watchdog_interval()
    stall = max(interval or 0.0, STALL_SECONDS)
    try:
        while not stop.wait(min(0.5, interval / 2) if interval else 0.5):
            # feed the systemd watchdog only while the handling loop shows signs of
            # life (a stage begun or ended within `stall` seconds): a hung pass stops
            # the pings, and systemd restarts the service. One stage of a legal 50 MB
            # claim can take half a minute, hence the margin over WatchdogSec.
            if interval and time.monotonic() - intake.heartbeat < stall:
                notify.watchdog()
    finally:
        log.info("stopping", signal=",".join(received) or None)
        notify.stopping("finishing the message in hand")
        if watcher is not None:
            watcher.stop()
        live_thread.join()  # the pass in hand finishes its current file
        scheduler.shutdown(wait=True)
        if server is not None:
            server.close()
        worker.stop()
        intake.ledger.close()
    log.info("stopped")
    return 0


def _serve_metrics(settings: Settings, metrics):
    """/metrics, /healthz, /readyz on loopback; a taken port is logged, not fatal: the
    claims matter more than their figures."""
    m = settings.metrics
    if not m.enabled:
        return None
    try:
        return serve(
            metrics, m.host, m.port, ready=lambda: readiness(settings), allow_remote=m.allow_remote
        )
    except ConfigError as exc:
        get_logger().error("metrics_unavailable", reason=str(exc))
        return None


def _watch(settings: Settings, intake: Intake, wake):
    """inotify on the inbox; without it (no inotify, too many watches) the poll alone
    still finds every file, a little later."""
    try:
        watcher = InboxWatcher(settings.paths.inbox, intake.complete, wake)
        watcher.start()
        return watcher
    except Exception as exc:
        get_logger().error("watch_unavailable", error=type(exc).__name__)
        return None
