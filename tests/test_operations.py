"""Operations, end to end: the real daemon process, live intake, metrics, SIGHUP, SIGTERM.

One daemon (`python -m daemon run`) runs while 100 messages are dropped into its inbox.
The test reads /metrics, /healthz and /readyz, changes a lab rate and sends SIGHUP,
checks that the next claims are judged by the new rate, then sends SIGTERM and checks:
everything answered, exit 0, nothing left in work/.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import urllib.request
from decimal import Decimal

import pytest

from daemon.registers.tariffs import SHIPPED_DIR
from daemon.service import metrics
from tests.claims import B, C, L, msghead, person_number
from tests.conftest import wrap_demo
from tests.test_daemon import (
    apprec_statuses,
    assert_no_personal_data,
    command,
    names,
    set_intake,
    wait_for,
)

_n = iter(range(700))


def claim(rate: str) -> C:
    """One bill of Us-Osmolalitet (MB2) claimed at `rate` (6.96 in the shipped table)."""
    return C((B((L("NOR05003", rate),), fnr=person_number(next(_n), born="171170")),))


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    for family in metrics.text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise AssertionError(f"{name}{labels} not in the metrics")


def counted(port: int, answered: int) -> bool:
    """Have `answered` outcomes been counted? A message is counted once its answer is
    delivered (group commit: after the group's commit and delivery), so an AppRec can
    be visible a moment before its figures are."""
    try:
        text = get(port, "/metrics")[1]
        return sample(text, "kravmottak_messages_total", outcome="answered") >= answered
    except AssertionError:
        return False


@pytest.mark.slow
def test_daemon_runs_live_serves_metrics_reloads_and_stops(sandbox, tmp_path):
    # a poll every 5 s: the files must be found by inotify, not by the poll
    set_intake(sandbox, poll_interval_seconds=5.0, stable_seconds=1.0)
    shutil.copytree(SHIPPED_DIR, sandbox.root / "tariffs")
    cfg = sandbox.config_path
    cfg.write_text(cfg.read_text().replace("[paths]\n", '[paths]\ntariffs = "tariffs"\n'))
    stdout, stderr = tmp_path / "daemon.out", tmp_path / "daemon.err"
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        proc = subprocess.Popen(command(sandbox, "run"), stdout=out, stderr=err)
    try:
        wait_for(lambda: b'"started"' in stderr.read_bytes(), 30, "the daemon to start")
        started = next(
            json.loads(line) for line in stderr.read_text().splitlines() if '"started"' in line
        )
        port, live = started["metrics_port"], started["live"]
        assert port and live

        sent = {}
        for i in range(100):
            message_id = f"ops-{i}"
            sandbox.drop(wrap_demo(msghead(claim("6.96")), message_id=message_id), settle=False)
            sent[message_id] = "1"
        wait_for(lambda: len(sandbox.outbox("apprec-")) == 100, 120, "100 AppRecs")
        wait_for(lambda: counted(port, 100), 60, "the 100 outcomes counted")
        status, text = get(port, "/metrics")
        assert status == 200
        assert sample(text, "kravmottak_messages_total", outcome="answered") == 100
        assert sample(text, "kravmottak_apprec_status_total", status="1") == 100
        assert sample(text, "kravmottak_bills_total", verdict="approved") == 100
        kroner = sample(text, "kravmottak_bill_amount_kroner_total", verdict="approved")
        assert kroner == pytest.approx(float(Decimal("6.96") * 100), abs=0.005)  # a float counter
        assert sample(text, "kravmottak_stage_seconds_count", stage="decide") == 100
        assert sample(text, "kravmottak_certificate_expiry_days", partner="self") > 0
        assert get(port, "/healthz")[0] == 200
        assert get(port, "/readyz")[0] == 200

        # a new rate for MB2, then SIGHUP: the next claims are judged by it
        rates = sandbox.root / "tariffs" / "lab-rates.csv"
        rates.write_text(rates.read_text().replace("MB2,stat,6.96,", "MB2,stat,7.11,"))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: b'"reloaded"' in stderr.read_bytes(), 30, "the reload")
        sandbox.drop(wrap_demo(msghead(claim("7.11")), message_id="after-new"), settle=False)
        sandbox.drop(wrap_demo(msghead(claim("6.96")), message_id="after-old"), settle=False)
        sent.update({"after-new": "1", "after-old": "3"})
        wait_for(lambda: len(sandbox.outbox("apprec-")) == 102, 60, "the last AppRecs")
        wait_for(lambda: counted(port, 102), 60, "the last outcomes counted")
        status, text = get(port, "/metrics")
        assert sample(text, "kravmottak_reloads_total", result="ok") == 1
        assert sample(text, "kravmottak_rule_findings_total", rule="LAB-09") == 1

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert apprec_statuses(sandbox) == sent
    assert names(sandbox.paths.work) == []
    assert names(sandbox.paths.inbox) == []
    out, err = stdout.read_text(encoding="utf-8"), stderr.read_text(encoding="utf-8")
    assert out == ""  # the logs are JSON lines on stderr
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert events[-1]["event"] == "stopped"
    # every line about a message carries its ids
    for e in events:
        if e["event"] in ("claimed", "answered"):
            assert e.get("message_id", "").startswith(("ops-", "after-")), e
            assert e.get("conversation_id"), e
    assert_no_personal_data(out)
    assert_no_personal_data(err)
    assert not re.search(r"\b\d{11}\b", err)


def test_status_shows_the_running_daemons_figures(sandbox, capsys):
    """`kravmottak status` scrapes the daemon's /metrics on the configured port."""
    from daemon import cli
    from daemon.domain import BillDecision, Decision, Verdict

    m = metrics.Metrics(process=False)
    m.observe_message("answered", "1", 0.2)
    m.observe_decision(
        Decision((BillDecision("1", None, Verdict.APPROVED, Decimal("6.96"), Decimal("6.96")),))
    )
    with metrics.serve(m, "127.0.0.1", 0, ready=lambda: (True, "ok")) as server:
        cfg = sandbox.config_path
        cfg.write_text(cfg.read_text().replace("port = 0", f"port = {server.port}"))
        capsys.readouterr()
        assert cli.main(["--config", str(cfg), "status"]) == 0
    out = capsys.readouterr().out
    assert "DAEMON (live, from /metrics)" in out
    assert re.search(r"answered\s+1", out), out


@pytest.mark.slow
def test_daemon_talks_to_systemd(sandbox, tmp_path):
    """With NOTIFY_SOCKET and WATCHDOG_USEC set, as systemd sets them for Type=notify:
    READY=1 once loaded, WATCHDOG=1 pings, STATUS= with the queue, RELOADING=1 and
    READY=1 around SIGHUP, STOPPING=1 on SIGTERM, exit 0."""
    import os
    import socket

    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    received: list[str] = []

    def drain() -> None:
        while True:
            try:
                received.append(sock.recv(4096).decode())
            except TimeoutError:
                return

    def lines() -> list[str]:
        drain()
        return [line for m in received for line in m.split("\n")]

    def seen(assignment: str) -> bool:
        return any(line.startswith(assignment) for line in lines())

    set_intake(sandbox, poll_interval_seconds=0.2, stable_seconds=1.0)
    env = {**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"}
    with open(tmp_path / "out", "wb") as out:
        proc = subprocess.Popen(command(sandbox, "run"), stdout=out, stderr=out, env=env)
    try:
        wait_for(lambda: seen("READY=1"), 30, "READY=1")
        wait_for(lambda: seen("WATCHDOG=1"), 10, "a watchdog ping")
        wait_for(lambda: seen("STATUS=0 waiting"), 10, "a STATUS line")
        readies = lines().count("READY=1")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: seen("RELOADING=1"), 10, "RELOADING=1")
        wait_for(lambda: lines().count("READY=1") > readies, 10, "READY=1 after the reload")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert seen("STOPPING=1")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    reloading = next(m for m in received if "RELOADING=1" in m.split("\n"))
    assert "MONOTONIC_USEC=" in reloading
