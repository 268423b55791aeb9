"""Issue #16, as an operator meets it: every command run as a subprocess against a real
sandbox, asserting the exit code (0 ok, 1 the work found problems, 2 usage or
configuration error), the message, and that no Python traceback is printed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.transport import keys
from tests.conftest import DEMO_CPA, DEMO_HER, Sandbox, make_sandbox, unique_claim, wrap_demo
from tests.test_daemon import apprec_statuses, command, names, set_intake, wait_for

SHORT_RHF = """[[institution]]
orgnr = "983974678"
name = "Demo sykehus HF"
rhf = "Helse Sør-Øst"
kinds = ["hf"]
"""
DEMO_KRONER = "708.38"  # the demo claim: 509.75 + 6.96 + 191.67, all approved
NOBODY = 65534
AS_ROOT = os.geteuid() == 0


def cli(box: Sandbox, *args: str, user: int | None = None, **kw) -> subprocess.CompletedProcess:
    """`python -m daemon --config … ARGS` as an operator types it (as `user` when given)."""
    prefix = []
    if user is not None and AS_ROOT:
        prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [*prefix, *command(box, *args)], capture_output=True, text=True, timeout=120, env=env, **kw
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done


def log_events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@contextlib.contextmanager
def daemon(box: Sandbox, logs: Path, user: int | None = None) -> Iterator[subprocess.Popen]:
    """`run` in the background until the block ends (SIGTERM, exit 0)."""
    prefix = []
    if user is not None and AS_ROOT:
        prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    err = logs / "daemon.err"
    with open(logs / "daemon.out", "wb") as out, open(err, "wb") as errfile:
        proc = subprocess.Popen([*prefix, *command(box, "run")], stdout=out, stderr=errfile)
    try:
        wait_for(lambda: b'"started"' in err.read_bytes(), 30, "the daemon to start")
        yield proc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err.read_text()


@pytest.fixture
def shared_root() -> Iterator[Path]:
    """A folder another user may enter (pytest's tmp_path is root's alone)."""
    root = Path(tempfile.mkdtemp(prefix="kravmottak-operator-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- 1b held payments


@pytest.mark.slow
def test_held_payments_are_shown_fail_settle_and_are_repointed_with_an_audit_row(tmp_path):
    """An institution registered with the RHF's short name: its bills are approved and
    paid to "RHF:Helse Sør-Øst", a payee the RHF table does not know. settle says so and
    exits 1, status and `payments held` show the kroner and the reason, the daemon's
    /metrics has it; `payments repoint` moves them (audited) and the next batch pays."""
    box = make_sandbox(tmp_path / "sb", institutions=SHORT_RHF)
    box.drop(wrap_demo())
    assert cli(box, "process").returncode == 0

    settled = cli(box, "settle")
    assert settled.returncode == 1
    assert f"HELD RHF:Helse Sør-Øst: 3 payments, {DEMO_KRONER} kr" in settled.stdout
    assert "no RHF named 'Helse Sør-Øst'" in settled.stdout
    assert "payments of 1 payee(s) are held" in settled.stderr
    assert box.outbox("vedtak-") == []

    status = cli(box, "status")
    assert status.returncode == 0
    assert re.search(rf"RHF:Helse Sør-Øst +3 +{DEMO_KRONER} +no RHF named", status.stdout)
    (held,) = json.loads(cli(box, "status", "--json").stdout)["held_payments"]
    assert (held["payee"], held["payments"], held["approved"]) == (
        "RHF:Helse Sør-Øst",
        3,
        DEMO_KRONER,
    )
    listed = cli(box, "payments", "held")
    assert listed.returncode == 1 and "RHF:Helse Sør-Øst" in listed.stdout

    with daemon(box, tmp_path):
        started = next(e for e in log_events((tmp_path / "daemon.err").read_text())
                       if e["event"] == "started")  # fmt: skip
        port = started["metrics_port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert 'kravmottak_payments_held{payee="RHF:Helse Sør-Øst"} 3.0' in text
        assert f'kravmottak_payments_held_kroner{{payee="RHF:Helse Sør-Øst"}} {DEMO_KRONER}' in text

    wrong = cli(box, "payments", "repoint", "--from", "RHF:Helse Sør-Øst", "--to", "RHF:Nowhere")
    assert wrong.returncode == 2 and "no RHF named 'Nowhere'" in wrong.stderr
    moved = cli(
        box, "payments", "repoint", "--from", "RHF:Helse Sør-Øst", "--to", "RHF:Helse Sør-Øst RHF",
        "--reason", "short name",
    )  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    assert f"3 open payment(s), {DEMO_KRONER} kr, moved" in moved.stdout
    with contextlib.closing(box.db()) as db:
        (row,) = db.execute(
            "SELECT changed_by, from_payee, to_payee, payments, approved, reason FROM payee_changes"
        ).fetchall()
    assert row[1:] == ("RHF:Helse Sør-Øst", "RHF:Helse Sør-Øst RHF", 3, DEMO_KRONER, "short name")
    assert row[0]  # who did it
    assert cli(box, "payments", "held").returncode == 0
    again = cli(
        box, "payments", "repoint", "--from", "RHF:Helse Sør-Øst", "--to", "RHF:Helse Vest RHF"
    )
    assert again.returncode == 2 and "no open payments" in again.stderr  # nothing left to move
    paid = cli(box, "settle")
    assert paid.returncode == 0, paid.stderr
    assert f"RHF:Helse Sør-Øst RHF: 3 bills, paid {DEMO_KRONER}" in paid.stdout


# --------------------------------------------------------------------------- 2 settle --cutoff


def test_settle_with_a_cutoff_in_the_future_is_refused(sandbox):
    sandbox.drop(wrap_demo())
    assert cli(sandbox, "process").returncode == 0
    done = cli(sandbox, "settle", "--cutoff", "2030-01-01T16:00")
    assert done.returncode == 2
    assert "--cutoff 2030-01-01T16:00:00+01:00 is in the future" in done.stderr
    assert sandbox.outbox("vedtak-") == []
    with contextlib.closing(sandbox.db()) as db:
        assert db.execute("SELECT count(*) FROM settlements").fetchone() == (0,)
    assert cli(sandbox, "settle", "--cutoff", "2026-11-23T12:00").returncode == 0  # the past


# --------------------------------------------------------------------------- 3 safe imports


def test_a_radiology_import_that_empties_the_register_needs_force(tmp_path, sandbox):
    """A one-row CSV without amounts would remove nearly every code and rate: refused
    (exit 1, nothing written), --dry-run prints the report and writes nothing, --force
    writes."""
    target = tmp_path / "tariffs"
    one = tmp_path / "one.csv"
    one.write_text("kode,navn,refusjonskategori\nSNG0AA,RG Kne,R1\n", encoding="utf-8")
    argv = ["tariff", "import", "--kind", "radiologi", str(one), "--target", str(target)]

    refused = cli(sandbox, *argv)
    assert refused.returncode == 1
    assert re.search(r"UNSAFE: it removes \d+ of \d+ codes", refused.stdout)
    assert "refused, nothing written" in refused.stderr and "--force" in refused.stderr
    assert not target.exists() or names(target) == []

    dry = cli(sandbox, *argv, "--dry-run")
    assert dry.returncode == 1
    assert (
        "Radiology codes: one.csv" in dry.stdout
        and f"Dry run: nothing written to {target}" in dry.stdout
    )
    assert not target.exists() or names(target) == []

    forced = cli(sandbox, *argv, "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"Written to {target}" in forced.stdout and "(--force)" in forced.stdout
    assert (target / "ncrp-codes.csv").read_text().count("\n") == 2  # header + the one code


def test_a_safe_import_is_written_and_a_bad_share_is_a_usage_error(tmp_path, sandbox):
    """Next year's Helfo table (every code, one re-categorised, the same kroner) over
    this year's is safe: written without --force."""
    from daemon.registers import radiology_tariffs
    from daemon.registers.tariffs import SHIPPED_DIR

    codes = list(radiology_tariffs.load(SHIPPED_DIR).codes.values())
    kroner = {c.category: f"{100 + i}.00" for i, c in enumerate(codes)}
    rows = [f"{c.code},{c.name.replace(',', ' ')},{c.category},{kroner[c.category]}" for c in codes]
    table = tmp_path / "helfo.csv"
    header = "kode,navn,refusjonskategori,belop"
    table.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    target = tmp_path / "tariffs"
    argv = ["tariff", "import", "--kind", "radiologi", str(table), "--target", str(target)]
    first = cli(sandbox, *argv, "--valid-from", "2026-01-01", "--force")  # EXAMPLE rates go
    assert first.returncode == 0 and "UNSAFE" in first.stdout, first.stdout
    rows[0] = rows[0].replace(f",{codes[0].category},", ",I2,")
    rows[0] = rows[0].rsplit(",", 1)[0] + f",{kroner['I2']}"
    table.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    dry = cli(sandbox, *argv, "--valid-from", "2026-01-01", "--dry-run")
    assert dry.returncode == 0 and "UNSAFE" not in dry.stdout, dry.stdout
    assert "1 re-categorised" in dry.stdout
    done = cli(sandbox, *argv, "--valid-from", "2026-01-01")
    assert done.returncode == 0 and f"Written to {target}" in done.stdout, done.stdout + done.stderr
    assert cli(sandbox, *argv, "--max-removed", "lots").returncode == 2


def test_an_nlk_import_that_would_replace_the_register_needs_force(tmp_path, sandbox):
    """A short NLK list over the shipped register (9 187 codes): refused, --dry-run
    writes nothing, --force writes; the same list again is then safe."""
    from tests.test_tariffs import BASE_RATES, BASE_ROWS, write_helfo, write_rates

    nlk = write_helfo(tmp_path / "Alle_nlk.csv", BASE_ROWS)
    rates = write_rates(tmp_path / "satser.csv", BASE_RATES)
    target = tmp_path / "tariffs"
    argv = ["tariff", "import", "--kind", "nlk", str(nlk), "--rates", str(rates)]
    argv += ["--target", str(target)]
    refused = cli(sandbox, *argv)
    assert refused.returncode == 1 and "refused, nothing written" in refused.stderr
    assert re.search(r"UNSAFE: it removes \d+ of 9\d{3} codes", refused.stdout)
    assert not target.exists() or names(target) == []
    dry = cli(sandbox, *argv, "--dry-run")
    assert dry.returncode == 1 and "Dry run: nothing written" in dry.stdout
    assert not target.exists() or names(target) == []
    assert cli(sandbox, *argv, "--force").returncode == 0
    assert names(target) == ["lab-rates.csv", "nlk-codes.csv"]
    again = cli(sandbox, *argv)
    assert again.returncode == 0 and "UNSAFE" not in again.stdout
    assert f"Nothing to write: {target} is up to date" in again.stdout


# --------------------------------------------------------------------------- 4a broken partner


@pytest.mark.slow
def test_a_partner_whose_certificate_is_gone_is_refused_retryably_and_the_others_served(
    tmp_path,
):
    box = make_sandbox(tmp_path / "sb")
    cert = tmp_path / "lab.cert.pem"
    keys.generate(tmp_path / "lab.key.pem", cert, her_id="90777", orgnr="974633574", name="Lab")
    added = cli(
        box,
        "partner",
        "add",
        "--her-id",
        "90777",
        "--cpa-id",
        "lab:1",
        "--orgnr",
        "983974678",
        "--certificate",
        str(cert),
        "--no-require-signature",
    )  # fmt: skip  (the orgnr: it sends for the demo institution, MsgHead Sender = eb:From)
    assert added.returncode == 0, added.stderr
    cert.unlink()  # "remove the old certificate file", as a rollover ends

    listed = cli(box, "partner", "list")
    assert listed.returncode == 1
    assert re.search(r"90777 +lab:1 .*BROKEN: certificate .*lab\.cert\.pem", listed.stdout)
    assert "partner HER 90777 / CPA lab:1 is broken" in listed.stderr
    other = cli(box, "partner", "add", "--her-id", "90888", "--cpa-id", "other:1")
    assert other.returncode == 0, other.stderr  # repair commands work

    from daemon.tools.wrap import wrap

    lab_id = str(uuid.uuid4())
    raw = wrap(unique_claim(), from_her="90777", cpa_id="lab:1", message_id=lab_id)
    box.drop(raw, name="lab.msg")
    demo_id = str(uuid.uuid4())
    box.drop(wrap_demo(message_id=demo_id), name="demo.msg")
    done = cli(box, "process")
    assert done.returncode == 0, done.stderr
    events = log_events(done.stderr)
    broken = [e for e in events if e["event"] == "partner_broken"]
    assert broken and broken[0]["her_id"] == "90777" and "lab.cert.pem" in broken[0]["reason"]
    statuses = apprec_statuses(box)
    assert statuses[demo_id] == "1"  # the others are served
    assert statuses[lab_id] == "2"
    assert any(p.name.startswith("error-") for p in box.outbox())  # MessageError too
    with contextlib.closing(box.db()) as db:
        final, problems = db.execute(
            "SELECT final, problems FROM messages WHERE ebxml_message_id = ?", (lab_id,)
        ).fetchone()
    assert final == 0 and '"X99"' in problems and "send meldingen på nytt senere" in problems

    # repaired (the agreement without the lost file), the same file sent again is processed
    assert cli(box, "partner", "remove", "--her-id", "90777").returncode == 0
    fixed = cli(
        box, "partner", "add", "--her-id", "90777", "--cpa-id", "lab:1",
        "--orgnr", "983974678", "--no-require-signature",
    )  # fmt: skip
    assert fixed.returncode == 0
    for p in box.outbox():
        p.unlink()
    box.drop(raw, name="lab-again.msg")
    assert cli(box, "process").returncode == 0
    with contextlib.closing(box.db()) as db:
        rows = db.execute(
            "SELECT final, problems FROM messages WHERE ebxml_message_id = ? ORDER BY id",
            (lab_id,),
        ).fetchall()
    assert len(rows) == 2  # processed again, not answered from the first, retryable outcome
    assert rows[1][0] == 1 and "X99" not in rows[1][1], rows[1]


def test_partner_add_refuses_bad_ids_and_expired_certificates_and_remove_works(tmp_path, sandbox):
    for her, cpa in (("", "x:1"), ("12a", "x:1"), ("0123", "x:1"), ("555", ""), ("555", "a b")):
        done = cli(sandbox, "partner", "add", "--her-id", her, "--cpa-id", cpa)
        assert done.returncode == 2, (her, cpa)
        assert (
            "nothing" in done.stderr or "is not a HER-id" in done.stderr or "CPAId" in done.stderr
        )
    bad_org = cli(sandbox, "partner", "add", "--her-id", "555", "--cpa-id", "x:1", "--orgnr", "123")
    assert bad_org.returncode == 2 and "organisation number" in bad_org.stderr
    old = tmp_path / "old.cert.pem"
    keys.generate(
        tmp_path / "old.key.pem", old, her_id="555", orgnr="974633574", name="Old",
        not_before=datetime(2015, 1, 1, tzinfo=UTC), days=365,
    )  # fmt: skip
    argv = ["partner", "add", "--her-id", "555", "--cpa-id", "x:1", "--certificate", str(old)]
    expired = cli(sandbox, *argv)
    assert expired.returncode == 2
    assert "EXPIRED on 2016-01-01" in expired.stderr and "nothing saved" in expired.stderr
    assert "555" not in sandbox.paths.partners.read_text()
    forced = cli(sandbox, *argv, "--force")
    assert forced.returncode == 0 and "WARNING" in forced.stderr and "EXPIRED" in forced.stderr
    assert cli(sandbox, "partner", "remove", "--her-id", "555").returncode == 0
    assert "555" not in sandbox.paths.partners.read_text()
    gone = cli(sandbox, "partner", "remove", "--her-id", "555")
    assert gone.returncode == 2 and "no partner HER 555" in gone.stderr


# --------------------------------------------------------------------------- 5 + 9 as a user


def _own(path: Path, uid: int) -> None:
    for p in [path, *path.rglob("*")]:
        os.chown(p, uid, uid, follow_symlinks=False)


@pytest.mark.slow
def test_an_undelivered_answer_is_counted_retried_every_pass_and_fails_process(
    shared_root, tmp_path
):
    """The outbox is not writable for the daemon's user: `process` exits 1 saying so,
    status counts it undelivered (not answered), and the running daemon delivers it on
    a later pass once the outbox is repaired, without a restart."""
    box = make_sandbox(shared_root / "sb")
    set_intake(box, poll_interval_seconds=0.2)
    message_id = str(uuid.uuid4())
    box.drop(wrap_demo(message_id=message_id))
    user = NOBODY if AS_ROOT else None
    outbox = box.paths.outbox
    if AS_ROOT:
        _own(box.root, NOBODY)
        os.chown(outbox, 0, 0)
    outbox.chmod(0o555)

    done = cli(box, "process", user=user)
    assert done.returncode == 1
    assert done.stdout == "recovered 0, processed 1\n"
    assert "1 answer(s) recorded but not delivered to the outbox" in done.stderr
    assert len(names(box.paths.work)) == 1

    status = cli(box, "status", user=user)
    assert re.search(r"UNDELIVERED answers +1, oldest since 2026-11-23T12:00", status.stdout)
    assert re.search(r"ledger answered +0\n", status.stdout)
    figures = json.loads(cli(box, "status", "--json", user=user).stdout)
    assert figures["undelivered"]["answers"] == 1
    assert figures["undelivered"]["answers_age_seconds"] is not None
    assert figures["ledger"]["answered"] == 0

    with daemon(box, tmp_path, user=user):
        assert box.outbox("apprec-") == []  # still unwritable: nothing delivered at start
        log = tmp_path / "daemon.err"
        wait_for(lambda: b'"delivery_failed"' in log.read_bytes(), 30, "a pass to try again")
        if AS_ROOT:
            os.chown(outbox, NOBODY, NOBODY)
        outbox.chmod(0o755)  # repaired while the daemon runs
        wait_for(lambda: box.outbox("apprec-") != [], 30, "the AppRec on a later pass")
        wait_for(lambda: names(box.paths.work) == [], 10, "work/ to empty")
    assert apprec_statuses(box) == {message_id: "1"}
    failed = [e for e in log_events(log.read_text()) if e["event"] == "delivery_failed"]
    assert len(failed) == 1  # logged when it got stuck, not on every pass
    status = cli(box, "status", user=user)
    assert re.search(r"undelivered answers +0", status.stdout)
    assert re.search(r"ledger answered +1\n", status.stdout)
    assert cli(box, "process", user=user).returncode == 0


def test_status_is_read_only_and_its_json_has_the_same_figures(shared_root):
    """A user who may only read the ledger (and its folder) gets the status."""
    box = make_sandbox(shared_root / "sb")
    box.drop(wrap_demo())
    box.process()
    for path in box.root.rglob("*"):  # the operator may read it all (not the keys)
        if "keys" not in path.relative_to(box.root).parts:
            path.chmod(path.stat().st_mode | (0o005 if path.is_dir() else 0o004))
    box.root.chmod(box.root.stat().st_mode | 0o005)
    ledger = box.paths.ledger
    before = ledger.read_bytes()
    ledger.chmod(0o444)
    ledger.parent.chmod(0o555)
    try:
        text = cli(box, "status", user=NOBODY)
        assert text.returncode == 0, text.stderr
        figures = json.loads(cli(box, "status", "--json", user=NOBODY).stdout)
    finally:
        ledger.parent.chmod(0o755)
    assert ledger.read_bytes() == before
    assert figures["ledger"]["answered"] == 1 and figures["ledger"]["messages"] == 1
    for key, value in figures["ledger"].items():
        assert re.search(rf"ledger {key} +{value}\n", text.stdout), key
    assert figures["settlement"]["next"] in text.stdout


# --------------------------------------------------------------------------- 6 + 10 + 11


@pytest.mark.slow
def test_one_daemon_per_state_directory_logs_and_an_online_backup(sandbox, tmp_path):
    """While `run` holds the lock, a second `run` and a `process` are refused naming its
    PID; `backup` makes a consistent copy meanwhile. The started line says what runs."""
    sandbox.drop(wrap_demo())
    with daemon(sandbox, tmp_path) as proc:
        wait_for(lambda: sandbox.outbox("apprec-") != [], 30, "the AppRec")
        for args in (("process",), ("run",)):
            refused = cli(sandbox, *args)
            assert refused.returncode == 2
            assert f"another kravmottak process (PID {proc.pid}) holds" in refused.stderr
        dest = tmp_path / "backup"
        done = cli(sandbox, "backup", str(dest))
        assert done.returncode == 0, done.stderr
        assert "the private key is not included" in done.stdout
        assert cli(sandbox, "backup", str(dest)).returncode == 2  # never over a backup
    started = next(e for e in log_events((tmp_path / "daemon.err").read_text())
                   if e["event"] == "started")  # fmt: skip
    assert started["version"] and started["config"] == str(sandbox.config_path.resolve())
    assert (started["partners"], started["institutions"]) == (2, 1)
    assert started["tariff_rows"]["nlk_codes"] > 9000 and started["tariff_rows"]["lab_rates"] > 0
    assert (tmp_path / "daemon.out").read_text() == ""  # logs on stderr only
    with contextlib.closing(sqlite3.connect(dest / "ledger.sqlite3")) as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (1,)
    manifest = json.loads((dest / "MANIFEST.json").read_text())
    files = {f["file"] for f in manifest["files"]}
    assert {"ledger.sqlite3", "partners.toml", "institutions.toml", "kravmottak.toml"} <= files
    assert not any("key" in f for f in files)
    # the lock went with the daemon
    assert cli(sandbox, "process").returncode == 0


def test_outcome_lines_carry_bills_and_kroner_and_stdout_only_the_summary(sandbox):
    sandbox.drop(wrap_demo())
    done = cli(sandbox, "process")
    assert done.returncode == 0 and done.stdout == "recovered 0, processed 1\n"
    (answered,) = [e for e in log_events(done.stderr) if e["event"] == "answered"]
    assert (answered["bills"], answered["claimed"], answered["approved"]) == (
        3,
        DEMO_KRONER,
        DEMO_KRONER,
    )
    settled = cli(sandbox, "settle")
    assert settled.stdout.startswith("settlement run 1: 1 vedtak")
    assert all(not line.startswith("{") for line in settled.stdout.splitlines())
    assert any(e["event"] == "settled" for e in log_events(settled.stderr))


def test_archive_prune_keeps_the_retention(sandbox):
    archive = sandbox.paths.archive
    for day in ("2024-01-02", "2025-11-01", "2026-11-20"):
        (archive / day).mkdir()
        (archive / day / "x.msg").write_bytes(b"x")
    argv = ["archive", "prune", "--older-than", "400d", "--today", "2026-11-23"]
    dry = cli(sandbox, *argv, "--dry-run")
    assert dry.returncode == 0 and "would remove archive/2024-01-02: 1 files" in dry.stdout
    assert names(archive) == ["2024-01-02", "2025-11-01", "2026-11-20"]
    done = cli(sandbox, *argv)
    assert done.returncode == 0 and "removed 1 day folder(s) older than 400 days" in done.stdout
    assert names(archive) == ["2025-11-01", "2026-11-20"]
    short = cli(sandbox, "archive", "prune", "--older-than", "30d")
    assert short.returncode == 2 and "keeps less than 365 days" in short.stderr
    assert cli(sandbox, "archive", "prune", "--older-than", "soon").returncode == 2


# --------------------------------------------------------------------------- 7 + 8


def test_a_missing_registry_file_refuses_to_start_an_empty_one_is_fine(sandbox):
    sandbox.paths.institutions.unlink()
    for args in (("process",), ("run",)):
        done = cli(sandbox, *args)
        assert done.returncode == 2
        assert "institutions file not found" in done.stderr and "must be explicit" in done.stderr
    sandbox.paths.institutions.write_text("")  # explicit: no institutions
    assert cli(sandbox, "process").returncode == 0


def test_clean_errors_and_exit_codes(sandbox, tmp_path):
    key = sandbox.paths.private_key
    saved = key.read_bytes()
    key.unlink()
    key.mkdir()  # unreadable as a key, whoever runs it
    done = cli(sandbox, "process")
    assert done.returncode == 2 and f"private key {key}: cannot read" in done.stderr
    key.rmdir()
    key.write_bytes(saved)

    missing = cli(sandbox, "wrap", str(tmp_path / "nope.xml"), str(sandbox.paths.inbox))
    assert missing.returncode == 2 and "nope.xml: no such file" in missing.stderr
    claim = tmp_path / "claim.xml"
    claim.write_bytes(unique_claim())
    nowhere = sandbox.paths.inbox.parent / "inbx"
    wrong = cli(sandbox, "wrap", str(claim), str(nowhere))
    assert wrong.returncode == 2 and "no such folder" in wrong.stderr
    assert not nowhere.exists()  # no file named like the folder
    into = cli(sandbox, "wrap", str(claim), str(sandbox.paths.inbox), "--from-her", DEMO_HER,
               "--cpa-id", DEMO_CPA)  # fmt: skip
    assert into.returncode == 0 and into.stdout.strip().endswith("claim.msg")

    a_file = tmp_path / "plain-file"
    a_file.write_text("x")
    init = cli(sandbox, "init", str(a_file))
    assert init.returncode == 2 and "is a file, not a folder" in init.stderr
    again = cli(sandbox, "init", str(sandbox.root))
    assert again.returncode == 2 and "exists already" in again.stderr

    date = cli(sandbox, "tariff", "show", "NOR05007", "--date", "notadate")
    assert date.returncode == 2 and "--date 'notadate' is not a date" in date.stderr

    # `status | head`: the reader goes away before we write
    proc = subprocess.Popen(
        command(sandbox, "status"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err


# --------------------------------------------------------------------------- 12


def test_explain_shows_every_message_sharing_a_msgid(sandbox):
    """The same MsgHead sent twice under two ebXML MessageIds: explain by the MsgId
    shows both processings."""
    payload = unique_claim()
    msg_id = re.search(rb"<MsgId>([^<]+)</MsgId>", payload).group(1).decode()
    sandbox.drop(wrap_demo(payload, message_id="first-" + str(uuid.uuid4())))
    sandbox.drop(wrap_demo(payload, message_id="second-" + str(uuid.uuid4())))
    assert cli(sandbox, "process").returncode == 0
    done = cli(sandbox, "explain", msg_id)
    assert done.returncode == 0
    headers = [line for line in done.stdout.splitlines() if line.startswith("message ")]
    assert len(headers) == 2, done.stdout
    assert "first-" in headers[0] and "second-" in headers[1]


def test_replay_expect_on_a_subset_compares_only_that_subset():
    """Some corpus files against the whole expectations folder: only they are compared
    (one folder stays the whole corpus, where a gone message's expectation fails)."""
    root = Path(__file__).resolve().parent / "corpus"
    config_path = root / "config" / "kravmottak.toml"
    box = Sandbox(root, config_path)
    picked = [str(root / "lab-lab09-ok.msg"), str(root / "lab-lab09-wrong.msg")]
    done = cli(box, "replay", *picked, "--expect", str(root / "expected"))
    assert done.returncode == 0, done.stdout
    assert done.stdout.strip().endswith("2 passed, 0 failed")
    assert "expected, but not in this replay" not in done.stdout
