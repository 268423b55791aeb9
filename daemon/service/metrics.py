"""Prometheus metrics and health endpoints, served on a loopback port.

`Metrics` owns its own `CollectorRegistry` (never the global one), so tests and several
daemons in one process do not collide. The daemon reports what happened through a few
small methods (`observe_message`, `observe_decision`, `around`/`stage_timer`,
`set_queue`, `set_certificates`, `observe_settlement`, `observe_reload`); nothing in the
functional core knows about metrics: stage timing wraps the stages from outside through
`pipeline.run(..., around=metrics.around)`.

Labels are small and bounded (outcomes, verdicts, rule ids, stage names, partner HER-ids,
payees) and never carry personal data or message ids. As a guard, every label value
passes `safe_label`, which masks any run of 11 or more digits (a fødselsnummer or
D-nummer) the way the log processor does.

`serve` starts a stdlib `ThreadingHTTPServer` in a daemon thread with `/metrics`,
`/healthz` and `/readyz`. The stdlib server rather than prometheus_client's wsgiref
server: we need two more endpoints next to /metrics, a clean `close()` and a choice of
address family, and that is a dozen lines of `BaseHTTPRequestHandler` with no WSGI
layer between; the exposition itself is still prometheus_client's (`choose_encoder`
gives the classic text or OpenMetrics, as the scraper asks).

`status_rows` turns a scraped /metrics text into the key figures for `kravmottak status`.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import math
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daemon.config import ConfigError, MetricsSettings  # noqa: F401 (re-exported)
from daemon.domain import TRANSACTION_CREDIT, BillDecision, Decision, Verdict

PREFIX = "kravmottak"
OUTCOMES = ("answered", "quarantined", "duplicate")
APPREC_STATUSES = ("1", "2", "3")  # code list 8258: OK, avvist, OK med feil i delmelding
VERDICTS = tuple(str(v) for v in Verdict)
AMOUNT_KINDS = ("approved", "rejected", "credited")
RELOAD_RESULTS = ("ok", "refused")
OTHER = "other"  # an unexpected value for a bounded label
SELF = "self"  # our own certificate's partner label

# a pipeline stage: 1 ms to 10 s; a message from drop to AppRec: the inbox's settle
# time (stable_seconds) and poll interval come on top, so up to an hour
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MESSAGE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)

DIGIT_RUN = re.compile(r"\d{11,}")  # a fødselsnummer or D-nummer, or longer
MAX_LABEL = 80
ZERO = Decimal("0")

Clock = Callable[[], float]  # seconds since the epoch
Ready = Callable[[], tuple[bool, str]]


def safe_label(value: object) -> str:
    """A label value that can never carry an identity number: every run of 11 or more
    digits becomes `***********`, and the value is cut to 80 characters."""
    text = DIGIT_RUN.sub("*" * 11, str(value))
    return text[:MAX_LABEL]


def _bounded(value: object, allowed: tuple[str, ...]) -> str:
    text = str(value)
    return text if text in allowed else OTHER


def _version() -> str:
    try:
        return metadata.version("kravmottak")
    except metadata.PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True, slots=True)
class _Cert:
    partner: str
    fingerprint: str  # first 8 hex digits of the SHA-256 fingerprint
    not_after: float  # epoch seconds


class _Snapshots:
    """Gauges whose whole label set is replaced at once (certificates after a reload,
    the last settlement's payees): computed at scrape time from an immutable snapshot,
    so a partner removed by a reload disappears and a scrape never sees half a swap.
    Certificate days are computed with the clock at scrape time, so they keep falling
    between reloads."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.certs: tuple[_Cert, ...] = ()
        self.payees: tuple[tuple[str, float], ...] = ()
        self.last_run: float | None = None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        cert, payee, last = self._families()
        now = self.clock()
        for c in self.certs:
            cert.add_metric([c.partner, c.fingerprint], (c.not_after - now) / 86400)
        for name, amount in self.payees:
            payee.add_metric([name], amount)
        if self.last_run is not None:
            last.add_metric([], self.last_run)
        return iter((cert, payee, last))

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                f"{PREFIX}_certificate_expiry_days",
                "Days until each registered certificate's not_valid_after (partner HER-id, "
                "or 'self' for our own; certificate = start of its SHA-256 fingerprint)",
                labels=["partner", "certificate"],
            ),
            GaugeMetricFamily(
                f"{PREFIX}_settlement_last_total_kroner",
                "Kroner paid per payee by the last settlement run",
                labels=["payee"],
            ),
            GaugeMetricFamily(
                f"{PREFIX}_settlement_last_run_timestamp_seconds",
                "When the last settlement run started (epoch seconds)",
            ),
        )


class Metrics:
    """All of kravmottak's metrics in one registry of their own (`self.registry`)."""

    def __init__(
        self, *, version: str | None = None, clock: Clock = time.time, process: bool = True
    ) -> None:
        self.registry = CollectorRegistry()
        self.clock = clock
        reg = self.registry
        self.messages = Counter(
            f"{PREFIX}_messages_total",
            "Inbound messages handled, by outcome (answered, quarantined, duplicate)",
            ["outcome"],
            registry=reg,
        )
        self.apprec_status = Counter(
            f"{PREFIX}_apprec_status_total",
            "AppRecs sent, by status (8258: 1 OK, 2 avvist, 3 OK med feil i delmelding)",
            ["status"],
            registry=reg,
        )
        self.bills = Counter(
            f"{PREFIX}_bills_total",
            "Bills (EnkeltRegning) judged, by verdict (approved, reduced, rejected)",
            ["verdict"],
            registry=reg,
        )
        self.bill_kroner = Counter(
            f"{PREFIX}_bill_amount_kroner_total",
            "Kroner judged: approved (paid), rejected (claimed but refused: a rejected "
            "bill's claim, a reduced bill's rejected lines), credited (taken back)",
            ["verdict"],
            registry=reg,
        )
        self.rule_findings = Counter(
            f"{PREFIX}_rule_findings_total",
            "Rule findings told to senders (a bill or line rejected, a claim refused), by rule",
            ["rule"],
            registry=reg,
        )
        self.rule_kroner = Counter(
            f"{PREFIX}_rule_rejected_kroner_total",
            "Rejected kroner, each attributed to the first rule that rejected its bill or line",
            ["rule"],
            registry=reg,
        )
        self.stage_seconds = Histogram(
            f"{PREFIX}_stage_seconds",
            "Time spent in each pipeline stage",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=reg,
        )
        self.message_seconds = Histogram(
            f"{PREFIX}_message_seconds",
            "From the inbound file's mtime (dropped) to its AppRec written to the outbox",
            buckets=MESSAGE_BUCKETS,
            registry=reg,
        )
        self.queue_depth = Gauge(
            f"{PREFIX}_queue_depth",
            "Messages waiting: ready files in the inbox plus files claimed in work/",
            registry=reg,
        )
        self.oldest_unanswered = Gauge(
            f"{PREFIX}_oldest_unanswered_age_seconds",
            "Age of the oldest message not yet answered (0 when none waits)",
            registry=reg,
        )
        self.payments_held = Gauge(
            f"{PREFIX}_payments_held",
            "Open payments no settlement batch can pay (the payee cannot be addressed)",
            ["payee"],
            registry=reg,
        )
        self.payments_held_kroner = Gauge(
            f"{PREFIX}_payments_held_kroner",
            "Approved kroner of the held payments, per payee",
            ["payee"],
            registry=reg,
        )
        self.undelivered = Gauge(
            f"{PREFIX}_undelivered_answers",
            "Answers recorded in the ledger but not yet written to the outbox",
            registry=reg,
        )
        self.partners_broken = Gauge(
            f"{PREFIX}_partners_broken",
            "Partner agreements whose certificates cannot be loaded (their messages are"
            " refused retryably)",
            registry=reg,
        )
        self.settlement_vedtak = Counter(
            f"{PREFIX}_settlement_vedtak_total",
            "Vedtak (one per payee and run) made by settlement runs",
            registry=reg,
        )
        self.reloads = Counter(
            f"{PREFIX}_reloads_total",
            "SIGHUP reloads of partners, institutions and tariffs, by result (ok, refused)",
            ["result"],
            registry=reg,
        )
        self.build_info = Gauge(
            f"{PREFIX}_build_info", "The running version (always 1)", ["version"], registry=reg
        )
        self.build_info.labels(safe_label(version or _version())).set(1)
        self.worker_info = Gauge(
            f"{PREFIX}_worker_info",
            "This process's worker id among the workers of one inbox (always 1)",
            ["worker"],
            registry=reg,
        )
        self._snapshots = _Snapshots(clock)
        reg.register(self._snapshots)
        if process:  # CPU, memory, open files, start time (Linux /proc; empty elsewhere)
            ProcessCollector(namespace=PREFIX, registry=reg)
        self._settlement_run: object = None
        # the bounded label sets exist from the start, at 0: a rate() needs no first event
        for outcome in OUTCOMES:
            self.messages.labels(outcome)
        for status in APPREC_STATUSES:
            self.apprec_status.labels(status)
        for verdict in VERDICTS:
            self.bills.labels(verdict)
        for kind in AMOUNT_KINDS:
            self.bill_kroner.labels(kind)
        for result in RELOAD_RESULTS:
            self.reloads.labels(result)

    # ------------------------------------------------------------------ messages

    def observe_message(
        self, outcome: str, status: str | int | None, seconds: float | None
    ) -> None:
        """One inbound message reached a terminal state. `status`: the AppRec status sent
        (the stored one for a duplicate; None when no AppRec went out). `seconds`: from
        the file's mtime to the AppRec written (None or negative, e.g. a writer's clock
        ahead of ours: not observed)."""
        self.messages.labels(_bounded(outcome, OUTCOMES)).inc()
        if status is not None:
            self.apprec_status.labels(_bounded(status, APPREC_STATUSES)).inc()
        if seconds is not None and seconds >= 0:
            self.message_seconds.observe(seconds)

    def observe_decision(self, decision: Decision | None) -> None:
        """Count a freshly made decision (never a duplicate's stored one): bills by
        verdict, kroner approved/rejected/credited, and each remark's rule with the
        rejected kroner attributed to it. A claim refused by claim rules has no bills;
        its fired claim rules (the trace entries without a regning) are counted."""
        if decision is None:
            return
        if not decision.bills:
            for rule_id, regning_nr, line, fired, _inputs in decision.trace:
                if fired and not regning_nr and not line:
                    self.rule_findings.labels(safe_label(rule_id)).inc()
            return
        # summed here first, one inc per label: a 10 000-bill claim would otherwise make
        # 40 000 labels() lookups under the client's lock
        verdicts: dict[str, int] = defaultdict(int)
        kroner: dict[str, Decimal] = defaultdict(Decimal)
        findings: dict[str, int] = defaultdict(int)
        rule_kroner: dict[str, Decimal] = defaultdict(Decimal)
        for bill in decision.bills:
            verdicts[_bounded(bill.verdict, VERDICTS)] += 1
            approved, rejected, credited = bill_amounts(bill)
            for kind, amount in zip(AMOUNT_KINDS, (approved, rejected, credited), strict=True):
                if amount > 0:
                    kroner[kind] += amount
            for remark in bill.remarks:
                findings[remark.rule_id] += 1
            for rule_id, amount in rejected_by_rule(bill, rejected).items():
                rule_kroner[rule_id] += amount
        for verdict, n in verdicts.items():
            self.bills.labels(verdict).inc(n)
        for kind, amount in kroner.items():
            self.bill_kroner.labels(kind).inc(float(amount))
        for rule_id, n in findings.items():
            self.rule_findings.labels(safe_label(rule_id)).inc(n)
        for rule_id, amount in rule_kroner.items():
            self.rule_kroner.labels(safe_label(rule_id)).inc(float(amount))

    # ------------------------------------------------------------------ stages

    @contextlib.contextmanager
    def stage_timer(self, stage: str) -> Iterator[None]:
        """Time a block as `stage` (also when it raises)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.stage_seconds.labels(safe_label(stage)).observe(elapsed)

    def around(self, stage: str, call: Callable[[], object]):
        """The `around` hook of `pipeline.run`: `run(STAGES, work, ctx, around=m.around)`."""
        with self.stage_timer(stage):
            return call()

    # ------------------------------------------------------------------ gauges

    def set_worker(self, worker_id: str) -> None:
        self.worker_info.clear()
        self.worker_info.labels(safe_label(worker_id)).set(1)

    def set_queue(self, depth: int, oldest_age: float | None) -> None:
        """Ready inbox files + claimed work/ files, and the oldest one's age in seconds
        (None when nothing waits)."""
        self.queue_depth.set(depth)
        self.oldest_unanswered.set(max(oldest_age or 0.0, 0.0))

    def set_held(self, held) -> None:
        """The settlement's held payments (`daemon.settlement.settle.held`): the set is
        replaced; a payee repaired disappears."""
        self.payments_held.clear()
        self.payments_held_kroner.clear()
        for h in held:
            payee = safe_label(h.payee or "none")
            self.payments_held.labels(payee).set(h.payments)
            self.payments_held_kroner.labels(payee).set(float(h.approved))

    def set_certificates(self, registry, our_cert: x509.Certificate | None) -> None:
        """Every partner certificate of `registry` (a `daemon.registers.registry.Registry`) and our
        own (partner "self"). Call at start and after each reload: the set is replaced."""
        found: dict[tuple[str, str], _Cert] = {}
        pairs = [(p.her_id, c) for p in registry.partners for c in p.certs]
        if our_cert is not None:
            pairs.append((SELF, our_cert))
        for partner, cert in pairs:
            entry = _Cert(
                safe_label(partner),
                hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()[:8],
                cert.not_valid_after_utc.timestamp(),
            )
            found[entry.partner, entry.fingerprint] = entry
        self._snapshots.certs = tuple(found.values())
        self.partners_broken.set(sum(1 for p in registry.partners if getattr(p, "broken", None)))

    def observe_settlement(self, last: Mapping | None, *, new: bool = True) -> None:
        """The ledger's `last_settlement()` after a run: totals per payee and the run's
        time. `new=False` (at start): show the figures without counting the run's vedtak
        again. A run already observed (same id) is never counted twice."""
        if last is None:
            return
        self._snapshots.payees = tuple(
            (safe_label(v["payee"]), float(v["approved"])) for v in last.get("vedtak", ())
        )
        self._snapshots.last_run = _epoch(last.get("started_at"))
        run = last.get("id", last.get("key"))
        if new and run != self._settlement_run:
            self.settlement_vedtak.inc(len(last.get("vedtak", ())))
        self._settlement_run = run

    def observe_reload(self, ok: bool) -> None:
        self.reloads.labels("ok" if ok else "refused").inc()

    def exposition(self) -> str:
        """The registry as Prometheus text (what /metrics answers by default)."""
        return generate_latest(self.registry).decode("utf-8")


def _epoch(stamp: object) -> float | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def bill_amounts(bill: BillDecision) -> tuple[Decimal, Decimal, Decimal]:
    """(approved, rejected, credited) kroner of one bill. Approved: what it pays
    (a correction's positive difference). Credited: what it takes back (a credit, or a
    correction's negative difference). Rejected: the claim of a rejected bill, the
    rejected lines of a reduced one; a credit claims nothing, so it rejects nothing."""
    approved = max(bill.approved, ZERO)
    credited = max(-bill.approved, ZERO)
    if bill.transaction_type == TRANSACTION_CREDIT:
        rejected = ZERO
    elif bill.verdict == Verdict.REJECTED:
        rejected = max(bill.claimed, ZERO)
    elif bill.verdict == Verdict.REDUCED:
        rejected = sum((max(ld.claimed - ld.approved, ZERO) for ld in bill.lines), ZERO)
    else:
        rejected = ZERO
    return approved, rejected, credited


def rejected_by_rule(bill: BillDecision, rejected: Decimal) -> dict[str, Decimal]:
    """The bill's rejected kroner per rule, each krone attributed once: to the first
    bill rule that fired (it rejected the whole bill); else each rejected line to the
    first rule that named it, and what the lines do not explain (a bill whose sum
    differs from its lines) to the bill's first remark."""
    if rejected <= 0 or not bill.remarks:
        return {}
    bill_rules = [r.rule_id for r in bill.remarks if r.line is None]
    if bill_rules:
        return {bill_rules[0]: rejected}
    first: dict[int | None, str] = {}
    for remark in bill.remarks:
        first.setdefault(remark.line, remark.rule_id)
    out: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for ld in bill.lines:
        lost = ld.claimed - ld.approved
        if lost > 0 and ld.line in first:
            out[first[ld.line]] += lost
    rest = rejected - sum(out.values(), ZERO)
    if rest > 0:
        out[bill.remarks[0].rule_id] += rest
    return dict(out)


# --------------------------------------------------------------------------- serving


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a hung scraper never keeps the process alive

    def __init__(self, address: tuple[str, int], metrics: Metrics, ready: Ready) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.metrics = metrics
        self.ready = ready
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "kravmottak"
    sys_version = ""
    timeout = 10  # seconds a client may take to send its request

    def do_GET(self) -> None:
        self._respond(body=True)

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def _respond(self, *, body: bool) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, encoder(self.server.metrics.registry), content_type, body)
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8", body)
        elif path == "/readyz":
            try:
                ok, reason = self.server.ready()
            except Exception as exc:  # a failing check means "not ready", not a 500
                ok, reason = False, f"readiness check failed: {type(exc).__name__}"
            text = "ready\n" if ok else f"not ready: {reason}\n"
            self._send(200 if ok else 503, text.encode(), "text/plain; charset=utf-8", body)
        else:
            self._send(404, b"not found: try /metrics, /healthz, /readyz\n", "text/plain", body)

    def _send(self, code: int, payload: bytes, content_type: str, body: bool) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Silent: scrapes every few seconds are not worth a log line (the stdlib would
        write each one to stderr, beside our JSON logs)."""


class Server:
    """A running metrics/health server; `close()` stops it and frees the port."""

    def __init__(self, httpd: _HTTPServer) -> None:
        self._httpd = httpd
        self.host = httpd.server_address[0]
        self.port: int = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="kravmottak-metrics",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def serve(
    metrics: Metrics,
    host: str = "127.0.0.1",
    port: int = 9464,
    *,
    ready: Ready,
    allow_remote: bool = False,
) -> Server:
    """Serve GET /metrics, /healthz (200 while alive) and /readyz (200 when `ready()`
    says so, else 503 with its reason) in a daemon thread. Port 0: an ephemeral port
    (`Server.port`). A non-loopback host is refused unless `allow_remote`.

    `ready` runs in the server's thread: it must not share a connection another
    thread may be using (open its own, or report a state the worker keeps)."""
    if not allow_remote and not is_loopback(host):
        raise ConfigError(
            f"[metrics] host {host!r} is not a loopback address; metrics are served on "
            "loopback only unless allow_remote = true"
        )
    try:
        httpd = _HTTPServer((host, port), metrics, ready)
    except OSError as exc:
        raise ConfigError(f"[metrics] cannot listen on {host}:{port}: {exc.strerror}") from exc
    return Server(httpd)


def fetch(host: str = "127.0.0.1", port: int = 9464, timeout: float = 1.0) -> str | None:
    """The running daemon's /metrics text, or None when nothing answers there."""
    host = f"[{host}]" if ":" in host else host
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as resp:
            return resp.read().decode("utf-8")
    except (urllib.error.URLError, OSError, ValueError):
        return None


# --------------------------------------------------------------------------- status


def status_rows(source: Metrics | str | bytes, top_rules: int = 5) -> list[tuple[str, str]]:
    """The key figures of a /metrics text (or of a `Metrics`) as (what, value) rows for
    `kravmottak status`: messages by outcome, bills by verdict, kroner, the top rule
    findings, queue, oldest unanswered, certificate expiry, the last settlement."""
    if isinstance(source, Metrics):
        text = source.exposition()
    elif isinstance(source, bytes):
        text = source.decode("utf-8")
    else:
        text = source
    samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[s.name].append((s.labels, s.value))

    def by(name: str, label: str) -> dict[str, float]:
        return {
            labels.get(label, ""): value for labels, value in samples.get(f"{PREFIX}_{name}", ())
        }

    def one(name: str) -> float | None:
        found = samples.get(f"{PREFIX}_{name}")
        return found[0][1] if found else None

    rows: list[tuple[str, str]] = []
    for version in by("build_info", "version"):
        rows.append(("version", version))
    for worker in by("worker_info", "worker"):
        rows.append(("worker", worker))
    messages = by("messages_total", "outcome")
    rows += [(f"messages {o}", _count(messages.get(o, 0))) for o in OUTCOMES]
    count, total = one("message_seconds_count"), one("message_seconds_sum")
    if count:
        rows.append(("drop to AppRec (mean)", _duration(total / count)))
    bills = by("bills_total", "verdict")
    rows += [(f"bills {v}", _count(bills.get(v, 0))) for v in VERDICTS]
    kroner = by("bill_amount_kroner_total", "verdict")
    rows += [(f"kroner {k}", _kroner(kroner.get(k, 0))) for k in AMOUNT_KINDS]
    findings = by("rule_findings_total", "rule")
    rule_kroner = by("rule_rejected_kroner_total", "rule")
    ranked = sorted(findings.items(), key=lambda item: (-item[1], item[0]))
    for rule, n in [item for item in ranked if item[1] > 0][:top_rules]:
        rows.append((f"rule {rule}", f"{_count(n)} ({_kroner(rule_kroner.get(rule, 0))} kr)"))
    depth = one("queue_depth")
    if depth is not None:
        rows.append(("queue depth", _count(depth)))
    oldest = one("oldest_unanswered_age_seconds")
    if oldest is not None:
        rows.append(("oldest unanswered", _duration(oldest) if oldest > 0 else "-"))
    refused = by("reloads_total", "result").get("refused", 0)
    if refused:
        rows.append(("reloads refused", _count(refused)))
    certs = samples.get(f"{PREFIX}_certificate_expiry_days", ())
    for labels, days in sorted(certs, key=lambda s: (s[0].get("partner") != SELF, s[1])):
        what = f"certificate {labels.get('partner', '?')} {labels.get('certificate', '')}"
        rows.append((what.strip(), f"{math.floor(days)} days" if days >= 0 else "EXPIRED"))
    held = by("payments_held", "payee")
    held_kroner = by("payments_held_kroner", "payee")
    for payee, n in sorted(held.items()):
        rows.append(
            (f"HELD {payee}", f"{_count(n)} payments, {_kroner(held_kroner.get(payee, 0))} kr")
        )
    undelivered = one("undelivered_answers")
    if undelivered:
        rows.append(("UNDELIVERED answers", _count(undelivered)))
    broken = one("partners_broken")
    if broken:
        rows.append(("BROKEN partners", _count(broken)))
    last = one("settlement_last_run_timestamp_seconds")
    if last is not None:
        stamp = datetime.fromtimestamp(last, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append(("last settlement", stamp))
    for payee, amount in sorted(by("settlement_last_total_kroner", "payee").items()):
        rows.append((f"settlement {payee}", f"{_kroner(amount)} kr"))
    return rows


def _count(value: float) -> str:
    return str(int(value))


def _kroner(value: float) -> str:
    return f"{value:.2f}"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
