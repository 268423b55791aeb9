"""The long-running daemon: recover, then poll the inbox on an apscheduler job.

SIGTERM / SIGINT: the message in hand is finished, then the process exits 0.
The poll job has `max_instances=1` and `coalesce=True`: a slow pass never overlaps
the next, and missed runs collapse into one.
"""

from __future__ import annotations

import logging
import signal
import time
from datetime import UTC, datetime
from threading import Event

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from daemon import files, keys, registry, settle, tariffs
from daemon.config import ConfigError, Settings
from daemon.intake import Intake, utcnow
from daemon.ledger import SqliteLedger
from daemon.logs import get as get_logger
from daemon.schemas import Schemas
from daemon.tariffs import Tariffs

RETRY_SECONDS = 60.0


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
    return Intake(
        settings,
        Schemas.load(),
        registry.load(paths.partners, paths.institutions),
        SqliteLedger(paths.ledger),
        keys=pair,
        tariffs=load_tariffs(paths.tariffs),
        clock=clock_for(settings),
    )


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


def reload(intake: Intake) -> None:
    """SIGHUP: new partners, institutions and tariffs, all or nothing. A broken file
    is refused with a log line and the running tables stay in force."""
    log = get_logger()
    paths = intake.settings.paths
    try:
        new_registry = registry.load(paths.partners, paths.institutions)
        new_tariffs = load_tariffs(paths.tariffs)
    except ConfigError as exc:
        log.error("reload_refused", reason=str(exc))
        return
    intake.registry, intake.tariffs = new_registry, new_tariffs
    log.info("reloaded", codes=len(new_tariffs.codes), partners=len(new_registry.partners))


def run(settings: Settings) -> int:
    log = get_logger()
    logging.basicConfig(level=logging.WARNING)  # apscheduler's own messages, stderr
    # "skipped: maximum number of running instances reached" is max_instances=1 doing
    # its job when a pass outlasts the interval: not worth a plain-text warning
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    stop = Event()

    received: list[str] = []
    reload_requested = Event()

    def on_signal(signum: int, _frame: object) -> None:
        # only set the flag: logging here could deadlock on the log writer's lock
        received.append(signal.Signals(signum).name)
        stop.set()

    def on_hangup(_signum: int, _frame: object) -> None:
        reload_requested.set()  # done by the poll thread, between files

    # handlers first: a SIGTERM while loading still means "stop cleanly, exit 0"
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    intake = build(settings)
    if stop.is_set():
        intake.ledger.close()
        log.info("stopped")
        return 0
    recovered = intake.recover()
    calendar = settle.Calendar.from_settings(settings)
    settle.deliver(intake)  # vedtak a kill cut off between commit and files
    if settings.settlement.make_up_missed:
        made_up = settle.make_up(intake, calendar)
        if made_up is not None:
            log.info("settlement_made_up", run=made_up.run, vedtak=made_up.vedtak)
    log.info("started", recovered=recovered, inbox=str(settings.paths.inbox))

    last_retry = [time.monotonic()]

    def poll() -> None:
        try:
            if reload_requested.is_set():
                reload_requested.clear()
                reload(intake)
            # a file failed earlier (disk full, ledger locked): retry work/ once a minute
            if intake.failures and time.monotonic() - last_retry[0] >= RETRY_SECONDS:
                last_retry[0] = time.monotonic()
                intake.failures = 0
                intake.recover()
            intake.poll(stop)
        except Exception as exc:  # e.g. the inbox itself vanished; keep the daemon alive
            intake.failures += 1
            log.error("poll_failed", error=type(exc).__name__)

    def settle_batch() -> None:
        try:
            settle.scheduled_batch(intake, calendar, datetime.now(UTC))
        except Exception as exc:  # nothing is assigned; the next batch takes it all
            log.error("settlement_failed", error=type(exc).__name__, detail=str(exc)[:200])

    scheduler = BackgroundScheduler(
        timezone=UTC, executors={"default": ThreadPoolExecutor(max_workers=1)}
    )
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
        calendar.trigger,
        id="settlement",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=3600,  # a batch delayed by a long intake pass still runs
    )
    scheduler.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        log.info("stopping", signal=",".join(received) or None)
        scheduler.shutdown(wait=True)  # lets the pass in hand finish its current file
        intake.ledger.close()
    log.info("stopped")
    return 0
