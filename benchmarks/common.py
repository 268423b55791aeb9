"""What the benchmarks share: a sandbox like the tests' one, seeded signed claims whose
patients never collide, and the check that every message was approved in full.

A benchmark that counts refused bills as throughput measures nothing: each one here
asserts, after the run, that every AppRec has status 1 and every bill is approved.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import platform
import re
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from lxml import etree

from benchmarks import generate as g
from daemon import cli, config
from daemon.ledger import migrate
from daemon.transport import keys, mime

ROOT = Path(__file__).resolve().parents[1]
TODAY = "2026-11-23T12:00:00Z"  # the day the generated claims are judged on
APPREC = "{http://www.kith.no/xmlstds/apprec/2004-11-21}"


def sandbox(root: Path, ledger: str | None = None, **intake: object) -> Path:
    """`kravmottak init` with the example registers, the generator's judging day, our
    certificate valid on that day, and `[intake]` settings overridden; the config path.
    `ledger`: a PostgreSQL URL for `[ledger] url` (migrated here), else SQLite."""
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["init", str(root)]) == 0
    shutil.copy(ROOT / "config" / "partners.toml", root / "partners.toml")
    shutil.copy(ROOT / "config" / "institutions.toml", root / "institutions.toml")
    cfg = root / "kravmottak.toml"
    text = cfg.read_text().replace("[intake]\n", f'[intake]\nfixed_time = "{TODAY}"\n')
    for key, value in intake.items():  # numbers only: poll_interval_seconds, max_file_bytes ...
        line = f"{key} = {value}"
        text, found = re.subn(rf"^{key} = .*$", line, text, flags=re.MULTILINE)
        if not found:
            text = text.replace("[intake]\n", f"[intake]\n{line}\n")
    if ledger:
        text += f'\n[ledger]\nurl = "{ledger}"\n'
        migrate.upgrade(ledger)
    cfg.write_text(text)
    s = config.load(cfg)
    keys.generate(
        s.paths.private_key,
        s.paths.certificate,
        her_id="79768",
        orgnr="889640782",
        name="HELFO",
        not_before=datetime(2025, 1, 1, tzinfo=UTC),
        days=3650,
    )
    return cfg


def fresh_database(url: str, name: str) -> str:
    """A new, empty database `name` on the server of `url` (dropped first if it is
    there); its URL."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f"DROP DATABASE IF EXISTS {name}")
        db.execute(f"CREATE DATABASE {name}")
    scheme, rest = url.split("://", 1)
    netloc, _, tail = rest.partition("/")
    query = tail.partition("?")[2]
    return f"{scheme}://{netloc}/{name}" + (f"?{query}" if query else "")


def ledger_connection(settings: config.Settings):
    """The sandbox's ledger for plain reads (no parameters): SQLite or PostgreSQL."""
    if migrate.is_sqlite(settings.ledger):
        return sqlite3.connect(settings.paths.ledger)
    import psycopg

    return psycopg.connect(settings.ledger)


def signed_claims(
    cfg: Path, messages: int, bills: int, *, seed: int = 1, prefix: str = "gen"
) -> list[tuple[str, bytes]]:
    """`messages` valid lab/radiology claims of `bills` bills each, from the generator
    with a fixed seed: MsgHead and envelope signed, an Ack asked for, every patient a
    fødselsnummer used once (the generator's `_People`), no defects. The sender's
    agreement (signatures required) is registered in the sandbox."""
    spec = g.Spec(messages=messages, bills=bills, lines=3, seed=seed, sign=True, prefix=prefix)
    institutions = g.load_institutions(config.load(cfg).paths.institutions)
    planned = g.plan(spec, institutions)
    named = g.render_all(planned, spec, institutions, jobs=min(2, os.cpu_count() or 1))
    partner = g.write_sender(cfg.parent / "sender", spec, institutions)
    g.register(cfg, partner)
    return named


def apprec_status(path: Path) -> str:
    """The Status of the AppRec inside one outbox file."""
    multipart, problem = mime.parse(path.read_bytes())
    assert problem is None, problem
    (part,) = multipart.attachments
    data = gzip.decompress(part.data) if part.data[:2] == b"\x1f\x8b" else part.data
    return etree.fromstring(data).find(f"{APPREC}Status").get("V")


def assert_all_approved(cfg: Path, messages: int, bills: int) -> None:
    """Every message answered with an AppRec of status 1, every bill approved in full."""
    settings = config.load(cfg)
    paths = settings.paths
    apprecs = sorted(paths.outbox.glob("apprec-*"))
    assert len(apprecs) == messages, f"{len(apprecs)} AppRecs for {messages} messages"
    statuses = {apprec_status(p) for p in apprecs}
    assert statuses == {"1"}, f"AppRec statuses {statuses}"
    with contextlib.closing(ledger_connection(settings)) as db:
        verdicts = dict(
            db.execute("SELECT verdict, count(*) FROM bills GROUP BY verdict").fetchall()
        )
        (unequal,) = db.execute("SELECT count(*) FROM bills WHERE claimed != approved").fetchone()
    assert verdicts == {"approved": messages * bills}, f"bill verdicts {verdicts}"
    assert unequal == 0, f"{unequal} bills approved with another amount than claimed"


def machine() -> str:
    """One line on where the figures come from: CPU model, cores, load, Python."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{model}, {os.cpu_count()} cores, load average {load} at start, "
        f"Python {platform.python_version()}"
    )
