"""Metrics and health endpoints: real HTTP requests to a server on an ephemeral port."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon import config
from daemon.config import ConfigError
from daemon.domain import BillDecision, Decision, LineDecision, Payment, Remark, Verdict
from daemon.records import Work, content_hash
from daemon.registers.registry import Partner, Registry
from daemon.service.intake import STAGES
from daemon.service.metrics import Metrics, MetricsSettings, fetch, safe_label, serve, status_rows
from daemon.service.pipeline import run
from daemon.transport import keys
from tests.conftest import wrap_demo

D = Decimal
T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=10)  # the metrics' clock in these tests


def get(url: str) -> tuple[int, str, str]:
    """(status, body, content type) of a GET, 503 included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode(), resp.headers["Content-Type"]
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), err.headers["Content-Type"]


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[f"kravmottak_{name}", frozenset(labels.items())]


def label_values(text: str) -> list[str]:
    return [
        v
        for family in text_string_to_metric_families(text)
        for s in family.samples
        for v in s.labels.values()
    ]


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(version="9.9.9", clock=NOW.timestamp)


@pytest.fixture
def server(metrics: Metrics) -> Iterator:
    state = {"ok": True, "reason": ""}
    srv = serve(metrics, "127.0.0.1", 0, ready=lambda: (state["ok"], state["reason"]))
    srv.state = state
    try:
        yield srv
    finally:
        srv.close()


def line(n: int, claimed: str, approved: str) -> LineDecision:
    verdict = Verdict.APPROVED if D(approved) else Verdict.REJECTED
    return LineDecision(n, f"NLK{n}", 1, D(claimed), D(approved), verdict)


def remark(rule: str, regning: str, line_no: int | None = None) -> Remark:
    return Remark(rule, "1", f"text [{rule}]", regning, line_no)


def bill(nr: str, verdict: Verdict, claimed: int, approved: int, **kw) -> BillDecision:
    return BillDecision(nr, None, verdict, D(claimed), D(approved), **kw)


def a_decision() -> Decision:
    """Approved 100; reduced 300 → 200 (LAB-06 on line 2); rejected 250 by two bill rules
    (COM-08 first); rejected 120 by its lines (LAB-09 on both, LAB-11 second on line 2);
    a credit taking 80 back."""
    reduced_lines = (line(1, "100", "100"), line(2, "100", "0"), line(3, "100", "100"))
    line_remarks = (remark("LAB-09", "4", 1), remark("LAB-09", "4", 2), remark("LAB-11", "4", 2))
    credit = Payment("RHF:Helse Vest", D(-80), D(-80))
    return Decision(
        bills=(
            bill("1", Verdict.APPROVED, 100, 100, lines=(line(1, "100", "100"),)),
            bill("2", Verdict.REDUCED, 300, 200, remarks=(remark("LAB-06", "2", 2),),
                 lines=reduced_lines),
            bill("3", Verdict.REJECTED, 250, 0, remarks=(remark("COM-08", "3"),
                 remark("COM-03", "3")), lines=(line(1, "250", "0"),)),
            bill("4", Verdict.REJECTED, 120, 0, remarks=line_remarks,
                 lines=(line(1, "50", "0"), line(2, "70", "0"))),
            bill("5", Verdict.APPROVED, 80, -80, transaction_type="5", payments=(credit,)),
        )
    )  # fmt: skip


# --------------------------------------------------------------------------- HTTP


def test_healthz_answers_ok_while_alive(server) -> None:
    assert get(f"{server.url}/healthz")[:2] == (200, "ok\n")


def test_readyz_follows_the_ready_check_and_says_why(server) -> None:
    assert get(f"{server.url}/readyz")[:2] == (200, "ready\n")
    server.state.update(ok=False, reason="ledger: database is locked")
    status, body, _ = get(f"{server.url}/readyz")
    assert (status, body) == (503, "not ready: ledger: database is locked\n")


def test_readyz_is_503_when_the_check_itself_raises(metrics: Metrics) -> None:
    def broken() -> tuple[bool, str]:
        raise OSError("disk gone")

    with serve(metrics, "127.0.0.1", 0, ready=broken) as srv:
        status, body, _ = get(f"{srv.url}/readyz")
    assert status == 503 and "OSError" in body


def test_an_unknown_path_is_404(server) -> None:
    assert get(f"{server.url}/nope")[0] == 404


def test_metrics_serves_the_text_exposition(server, metrics: Metrics) -> None:
    metrics.observe_message("answered", "1", 2.5)
    status, body, ctype = get(f"{server.url}/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    assert value(body, "messages_total", outcome="answered") == 1
    assert value(body, "build_info", version="9.9.9") == 1


def test_close_frees_the_port(metrics: Metrics) -> None:
    srv = serve(metrics, "127.0.0.1", 0, ready=lambda: (True, ""))
    url = srv.url
    srv.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/healthz", timeout=2)
    assert fetch("127.0.0.1", srv.port) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "example.org", "", "::"])
def test_a_non_loopback_host_is_refused(metrics: Metrics, host: str) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        serve(metrics, host, 0, ready=lambda: (True, ""))


def test_ipv6_loopback_is_served(metrics: Metrics) -> None:
    try:
        srv = serve(metrics, "::1", 0, ready=lambda: (True, ""))
    except ConfigError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with srv:
        assert get(f"{srv.url}/healthz")[0] == 200
        assert fetch("::1", srv.port) is not None


def test_settings_default_to_loopback_port_9464() -> None:
    assert MetricsSettings() == MetricsSettings(True, "127.0.0.1", 9464, False)
    with pytest.raises(ConfigError, match=r"\[metrics\] port: .*65535, not 70000"):
        config.from_mapping({"metrics": {"port": 70000}}, Path("k.toml"))


def test_two_instances_do_not_collide() -> None:
    a, b = Metrics(process=False), Metrics(process=False)
    a.observe_message("answered", 1, None)
    assert value(a.exposition(), "messages_total", outcome="answered") == 1
    assert value(b.exposition(), "messages_total", outcome="answered") == 0


# --------------------------------------------------------------------------- observe_*


def test_messages_count_outcomes_statuses_and_drop_to_apprec_time(server, metrics) -> None:
    metrics.observe_message("answered", "1", 1.5)
    metrics.observe_message("answered", 3, 4.0)
    metrics.observe_message("quarantined", None, 0.2)
    metrics.observe_message("duplicate", "2", None)
    metrics.observe_message("exploded", "7", -3.0)  # unexpected values stay bounded
    body = fetch("127.0.0.1", server.port)
    assert value(body, "messages_total", outcome="answered") == 2
    assert value(body, "messages_total", outcome="quarantined") == 1
    assert value(body, "messages_total", outcome="duplicate") == 1
    assert value(body, "messages_total", outcome="other") == 1
    assert value(body, "apprec_status_total", status="1") == 1
    assert value(body, "apprec_status_total", status="2") == 1
    assert value(body, "apprec_status_total", status="3") == 1
    assert value(body, "apprec_status_total", status="other") == 1
    assert value(body, "message_seconds_count") == 3
    assert value(body, "message_seconds_sum") == pytest.approx(5.7)
    assert value(body, "message_seconds_bucket", le="1.0") == 1


def test_the_bounded_label_sets_are_exported_at_zero_from_the_start(metrics) -> None:
    body = metrics.exposition()
    assert value(body, "bills_total", verdict="reduced") == 0
    assert value(body, "reloads_total", result="refused") == 0
    assert value(body, "apprec_status_total", status="2") == 0


def test_a_decision_counts_verdicts_kroner_and_rule_findings(server, metrics) -> None:
    metrics.observe_decision(a_decision())
    metrics.observe_decision(None)  # nothing decided (a message refused before decide)
    body = fetch("127.0.0.1", server.port)
    assert value(body, "bills_total", verdict="approved") == 2
    assert value(body, "bills_total", verdict="reduced") == 1
    assert value(body, "bills_total", verdict="rejected") == 2
    assert value(body, "bill_amount_kroner_total", verdict="approved") == 300
    assert value(body, "bill_amount_kroner_total", verdict="rejected") == 100 + 250 + 120
    assert value(body, "bill_amount_kroner_total", verdict="credited") == 80
    findings = {"LAB-06": 1, "COM-08": 1, "COM-03": 1, "LAB-09": 2, "LAB-11": 1}
    for rule, n in findings.items():
        assert value(body, "rule_findings_total", rule=rule) == n
    # each rejected krone once, to the first rule that rejected its bill or line
    by_rule = {"LAB-06": 100, "COM-08": 250, "LAB-09": 120}
    for rule, kroner in by_rule.items():
        assert value(body, "rule_rejected_kroner_total", rule=rule) == kroner
    for rule in ("COM-03", "LAB-11"):
        assert ("kravmottak_rule_rejected_kroner_total", frozenset({("rule", rule)})) not in (
            samples(body)
        )


def test_a_claim_refused_by_claim_rules_counts_those_rules(metrics) -> None:
    trace = (("COM-01", "", 0, True, ()), ("COM-02", "", 0, False, ()))
    metrics.observe_decision(Decision((), trace))
    body = metrics.exposition()
    assert value(body, "rule_findings_total", rule="COM-01") == 1
    assert ("kravmottak_rule_findings_total", frozenset({("rule", "COM-02")})) not in samples(body)


def test_the_stage_timer_wraps_pipeline_stages_from_outside(metrics) -> None:
    def slow_stage(work: Work, _ctx) -> Work:
        time.sleep(0.02)
        return work

    def quick_stage(work: Work, _ctx) -> Work:
        return work

    work = Work(raw=b"", content_hash="x")
    assert run((slow_stage, quick_stage), work, None, around=metrics.around) is work
    with metrics.stage_timer("answer"):
        time.sleep(0.005)
    body = metrics.exposition()
    assert value(body, "stage_seconds_count", stage="slow_stage") == 1
    assert value(body, "stage_seconds_sum", stage="slow_stage") >= 0.02
    assert value(body, "stage_seconds_bucket", stage="slow_stage", le="0.01") == 0
    assert value(body, "stage_seconds_count", stage="quick_stage") == 1  # no upper bound:
    # a loaded machine may pause any stage; only sleeps give a bound (a lower one)
    assert value(body, "stage_seconds_count", stage="answer") == 1


def test_the_real_pipeline_times_every_stage_and_counts_the_demo_claim(sandbox, metrics) -> None:
    """The demo claim through the daemon's own STAGES: three lab bills approved."""
    intake = sandbox.intake()
    try:
        ctx = intake.context(intake.clock())
        raw = wrap_demo()
        work = run(
            STAGES, Work(raw=raw, content_hash=content_hash(raw)), ctx, around=metrics.around
        )
    finally:
        intake.ledger.close()
    assert not work.problems
    metrics.observe_decision(work.decision)
    body = metrics.exposition()
    for stage in STAGES:
        assert value(body, "stage_seconds_count", stage=stage.__name__) == 1
    assert value(body, "bills_total", verdict="approved") == 3
    approved = value(body, "bill_amount_kroner_total", verdict="approved")
    assert approved == float(work.decision.approved_total) > 0


def test_a_stage_that_raises_is_timed_too(metrics) -> None:
    with pytest.raises(ValueError), metrics.stage_timer("decide"):
        raise ValueError("boom")
    assert value(metrics.exposition(), "stage_seconds_count", stage="decide") == 1


def test_queue_and_oldest_unanswered(metrics) -> None:
    metrics.set_queue(4, 93.5)
    body = metrics.exposition()
    assert value(body, "queue_depth") == 4
    assert value(body, "oldest_unanswered_age_seconds") == 93.5
    metrics.set_queue(0, None)
    assert value(metrics.exposition(), "oldest_unanswered_age_seconds") == 0


def make_cert(tmp_path: Path, name: str, days: int):
    key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
    keys.generate(key, cert, her_id="90001", orgnr="999999999", name=name, not_before=T0, days=days)
    (loaded,) = keys.load_certificates(cert)
    return loaded


def test_certificate_expiry_days_per_partner_and_our_own(tmp_path: Path, metrics) -> None:
    old, new, ours = (make_cert(tmp_path, n, d) for n, d in [("a", 100), ("b", 400), ("c", 730)])
    partner = Partner(her_id="90001", cpa_id="kravmottak:demo:1", certs=(old, new))
    metrics.set_certificates(Registry(partners=(partner,)), ours)
    body = metrics.exposition()
    days = {
        (labels["partner"], labels["certificate"]): v
        for (name, fs), v in samples(body).items()
        if name == "kravmottak_certificate_expiry_days"
        for labels in [dict(fs)]
    }
    assert sorted(days.values()) == [90, 390, 720]  # clock: 10 days after not_before
    assert {p for p, _ in days} == {"90001", "self"}
    assert all(re.fullmatch(r"[0-9a-f]{8}", fp) for _, fp in days)
    # a reload without the partner: its certificates disappear
    metrics.set_certificates(Registry(), ours)
    rows = dict(status_rows(metrics))
    assert [k for k in rows if k.startswith("certificate")] == [
        k for k in rows if k.startswith("certificate self")
    ]


def test_settlement_figures_and_vedtak_counted_once(metrics) -> None:
    last = {
        "id": 7,
        "key": "batch:2026-11-23T15:00:00+00:00",
        "kind": "scheduled",
        "cutoff": "2026-11-23T15:00:00+00:00",
        "started_at": "2026-11-23T15:00:02+00:00",
        "vedtak": [
            {
                "payee": "RHF:Helse Vest",
                "oppgjors_nr": "1",
                "bills": 2,
                "claimed": D("500"),
                "approved": D("450.50"),
                "delivered": True,
            },
            {
                "payee": "INST:974589095",
                "oppgjors_nr": "2",
                "bills": 1,
                "claimed": D("100"),
                "approved": D("100"),
                "delivered": True,
            },
        ],
    }
    metrics.observe_settlement(last)
    metrics.observe_settlement(last)  # the same run seen again
    metrics.observe_settlement(None)  # never settled: nothing changes
    body = metrics.exposition()
    assert value(body, "settlement_vedtak_total") == 2
    assert value(body, "settlement_last_total_kroner", payee="RHF:Helse Vest") == 450.5
    assert value(body, "settlement_last_total_kroner", payee="INST:974589095") == 100
    started = datetime(2026, 11, 23, 15, 0, 2, tzinfo=UTC).timestamp()
    assert value(body, "settlement_last_run_timestamp_seconds") == started
    fresh = Metrics(process=False)
    fresh.observe_settlement(last, new=False)  # at start: figures, but no count
    assert value(fresh.exposition(), "settlement_vedtak_total") == 0


def test_reloads_by_result(metrics) -> None:
    metrics.observe_reload(True)
    metrics.observe_reload(False)
    metrics.observe_reload(False)
    body = metrics.exposition()
    assert value(body, "reloads_total", result="ok") == 1
    assert value(body, "reloads_total", result="refused") == 2


# --------------------------------------------------------------------------- personal data

FNR = "01017012345"  # an 11-digit identity number where none belongs


def test_safe_label_masks_every_run_of_eleven_or_more_digits() -> None:
    assert safe_label(f"INST:{FNR}") == "INST:***********"
    assert safe_label("x" + FNR + "9") == "x***********"
    assert safe_label("974589095") == "974589095"  # an orgnr (9 digits) stays
    assert len(safe_label("R" * 500)) == 80


def test_no_label_value_ever_carries_an_eleven_digit_number(
    tmp_path: Path, server, metrics
) -> None:
    cert = make_cert(tmp_path, "p", 100)
    metrics.set_certificates(
        Registry(partners=(Partner(her_id=FNR, cpa_id="c", certs=(cert,)),)), None
    )
    rejected = bill("1", Verdict.REJECTED, 10, 0, remarks=(remark(f"X-{FNR}", "1"),))
    metrics.observe_decision(Decision((rejected,)))
    metrics.observe_settlement(
        {
            "id": 1,
            "started_at": "2026-11-23T15:00:00Z",
            "vedtak": [{"payee": f"INST:{FNR}", "approved": D(1)}],
        }
    )
    with metrics.stage_timer(f"stage-{FNR}"):
        pass
    body = fetch("127.0.0.1", server.port)
    assert FNR not in body
    values = label_values(body)
    assert "INST:***********" in values and "X-***********" in values
    assert not [v for v in values if re.search(r"\d{11}", v)]


# --------------------------------------------------------------------------- status


def test_status_rows_read_a_real_scrape(tmp_path: Path, server, metrics) -> None:
    metrics.observe_message("answered", "1", 3.0)
    metrics.observe_message("answered", "3", 5.0)
    metrics.observe_message("quarantined", None, None)
    metrics.observe_decision(a_decision())
    metrics.set_queue(3, 150.0)
    metrics.set_certificates(Registry(), make_cert(tmp_path, "ours", 730))
    metrics.observe_settlement(
        {
            "id": 1,
            "started_at": "2026-11-23T15:00:00Z",
            "vedtak": [{"payee": "RHF:Helse Vest", "approved": D("450.5")}],
        }
    )
    metrics.observe_reload(False)
    rows = status_rows(fetch("127.0.0.1", server.port))
    table = dict(rows)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in rows)
    assert table["version"] == "9.9.9"
    assert (table["messages answered"], table["messages quarantined"]) == ("2", "1")
    assert table["messages duplicate"] == "0"
    assert table["drop to AppRec (mean)"] == "4.0 s"
    assert (table["bills approved"], table["bills reduced"], table["bills rejected"]) == (
        "2",
        "1",
        "2",
    )
    assert table["kroner approved"] == "300.00"
    assert table["kroner rejected"] == "470.00"
    assert table["kroner credited"] == "80.00"
    rules = [k for k, _ in rows if k.startswith("rule ")]
    assert rules[0] == "rule LAB-09" and len(rules) == 5
    assert table["rule LAB-09"] == "2 (120.00 kr)"
    assert table["queue depth"] == "3"
    assert table["oldest unanswered"] == "2 min"
    assert table["reloads refused"] == "1"
    (cert,) = [k for k in table if k.startswith("certificate self ")]
    assert table[cert] == "720 days"
    assert table["last settlement"] == "2026-11-23T15:00:00Z"
    assert table["settlement RHF:Helse Vest"] == "450.50 kr"


def test_status_rows_of_a_fresh_daemon() -> None:
    table = dict(status_rows(Metrics(process=False).exposition().encode()))
    assert table["messages answered"] == "0" and table["kroner rejected"] == "0.00"
    assert table["oldest unanswered"] == "-"
    assert "last settlement" not in table
