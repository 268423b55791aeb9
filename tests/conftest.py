"""Shared fixtures: a real sandbox (made by `kravmottak init`), real files, real ledger."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon import cli, config
from daemon.service import runner as service
from daemon.service.intake import Intake
from daemon.tools.wrap import wrap
from daemon.transport import keys

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SHARED = ROOT.parent / "shared" / "reference"
DEMO_HER = "90001"
DEMO_CPA = "kravmottak:demo:1"
TODAY = "2026-11-23T12:00:00Z"  # the day the demo claims are judged on
CERTS_FROM = datetime(2025, 1, 1, tzinfo=UTC)  # test certificates: valid 2025-2034


def shared_or_skip(relative: str = "") -> Path:
    """A path under ../shared/reference, or skip: a fresh clone has no ../shared."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"../shared/reference/{relative} not present (only beside the project repo)")
    return path


def demo_claim() -> bytes:
    return (DATA / "claim-demo.xml").read_bytes()


DEMO_FNRS = (b"15057810014", b"02039010065", b"31128810016")


def unique_claim() -> bytes:
    """The demo claim as a new claim: fresh bill uuids, patients and MsgId, so COM-06
    (never paid twice) does not call it a duplicate of the last one."""
    claim = demo_claim().replace(
        b"5e0b7c1a-3f0e-4f7a-9a1d-0c2b4d6e8f10", str(uuid.uuid4()).encode()
    )
    for n in (1, 2, 3):
        fresh = uuid.uuid4().hex[:12].upper()
        claim = claim.replace(f"-00000000000{n}}}".encode(), f"-{fresh}}}".encode())
    for fnr in DEMO_FNRS:
        claim = claim.replace(fnr, random_person_number().encode())
    return claim


_ISSUED_PERSON_NUMBERS: set[str] = set()


def random_person_number() -> str:
    """A made-up fødselsnummer with valid mod-11 control digits, never the same twice in
    one test session: two claims of one patient with the demo claim's codes and times
    would be a true COM-06 duplicate (a 200-message test drew one in about 3 % of runs)."""
    import random

    from tests.claims import _mod11

    while True:
        born = f"{random.randint(1, 28):02d}{random.randint(1, 12):02d}{random.randint(50, 99)}"
        base = f"{born}{random.randint(100, 499)}"
        for control in range(100):
            if _mod11(candidate := f"{base}{control:02d}"):
                if candidate not in _ISSUED_PERSON_NUMBERS:
                    _ISSUED_PERSON_NUMBERS.add(candidate)
                    return candidate
                break


def wrap_demo(payload: bytes | None = None, **kwargs) -> bytes:
    """An ebMS message from the demo partner; without a payload, a new demo claim."""
    kwargs.setdefault("message_id", str(uuid.uuid4()))
    return wrap(
        payload if payload is not None else unique_claim(),
        from_her=DEMO_HER,
        cpa_id=DEMO_CPA,
        **kwargs,
    )


class PgConnection:
    """A PostgreSQL ledger as the tests read it: `sqlite3.Connection`'s calls (`?`
    parameters, `with` for a transaction, `execute(...).fetchall()`)."""

    def __init__(self, url: str) -> None:
        from daemon.ledger.postgres import _Connection

        self._db = _Connection(url, readonly=False)

    def execute(self, sql: str, params=()):
        return self._db.execute(sql, params)

    def executemany(self, sql: str, rows):
        return self._db.executemany(sql, rows)

    def commit(self) -> None:
        pass  # autocommit: each statement is committed

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PgConnection:
        return self

    def __exit__(self, *exc) -> None:
        pass  # like sqlite3's: the connection stays open (closed by `close`)


@dataclass
class Sandbox:
    root: Path
    config_path: Path
    ledger_url: str | None = None  # PostgreSQL; None: the SQLite file

    @property
    def settings(self) -> config.Settings:
        return config.load(self.config_path)

    @property
    def paths(self) -> config.Paths:
        return self.settings.paths

    def drop(self, raw: bytes, name: str | None = None, *, settle: bool = True) -> Path:
        """Drop a message the way a hospital's handler does: temp name, then rename."""
        name = name or f"{uuid.uuid4()}.msg"
        inbox = self.paths.inbox
        tmp = inbox / f".{name}.tmp"
        tmp.write_bytes(raw)
        if settle:  # as if written a while ago, so the stability wait is over
            past = time.time() - 5
            os.utime(tmp, (past, past))
        os.rename(tmp, inbox / name)
        return inbox / name

    def intake(self) -> Intake:
        return service.build(self.settings)

    def accept_official_sample(self, sender_orgnr: str) -> None:
        """Replay an official 2009 sample through the demo partner (HER 90001): no limit
        on how far its Timestamp and GenDate lie before receipt, and the organisation
        its MsgHead names as Sender registered as one the partner sends for (MsgHead
        Sender = eb:From's party, or an institution it may send for)."""
        from daemon.registers import registry

        cfg = self.config_path
        cfg.write_text(cfg.read_text() + "\n[trust]\nmax_message_age_days = 36500\n")
        sender = registry.Institution(
            sender_orgnr, "Official sample sender", "Helse Sør-Øst RHF", senders=("90001",)
        )
        registry.upsert_institution(self.paths.institutions, sender)

    def process(self) -> None:
        intake = self.intake()
        try:
            intake.recover()
            intake.drain()
        finally:
            intake.ledger.close()

    def outbox(self, kind: str = "") -> list[Path]:
        return sorted(p for p in self.paths.outbox.iterdir() if p.name.startswith(kind))

    def db(self) -> sqlite3.Connection:
        """The ledger for a test's own SQL, whichever backend the sandbox has."""
        if self.ledger_url:
            return PgConnection(self.ledger_url)  # type: ignore[return-value]
        return sqlite3.connect(self.paths.ledger)


def make_sandbox(
    root: Path, institutions: str | None = None, ledger_url: str | None = None
) -> Sandbox:
    """`kravmottak init` plus the example partners and institutions (or `institutions`,
    TOML text), a fixed clock and a certificate valid on that day."""
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["init", str(root)]) == 0
    shutil.copy(ROOT / "config" / "partners.toml", root / "partners.toml")
    if institutions is None:
        shutil.copy(ROOT / "config" / "institutions.toml", root / "institutions.toml")
    else:
        (root / "institutions.toml").write_text(institutions, encoding="utf-8")
    cfg = root / "kravmottak.toml"
    # the demo claims are from October 2026: judge them as of a fixed day, not today,
    # with our own certificate valid on that day whenever the tests run
    cfg.write_text(cfg.read_text().replace("[intake]\n", f'[intake]\nfixed_time = "{TODAY}"\n'))
    if ledger_url:
        cfg.write_text(cfg.read_text() + f'\n[ledger]\nurl = "{ledger_url}"\n')
    settings = config.load(cfg)
    keys.generate(
        settings.paths.private_key,
        settings.paths.certificate,
        her_id="79768",
        orgnr="889640782",
        name="HELFO",
        not_before=CERTS_FROM,
        days=3650,
    )
    return Sandbox(root, cfg, ledger_url)


# ------------------------------------------------------------------ the two ledger backends


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module with `BOTH_BACKENDS = True` runs each test that uses `backend` (through
    `sandbox` or `ledger_url`) once on SQLite and once on PostgreSQL."""
    if "backend" in metafunc.fixturenames and getattr(metafunc.module, "BOTH_BACKENDS", False):
        metafunc.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[object]:
    """One throw-away PostgreSQL cluster for the session (tests/pg.py)."""
    from tests import pg

    bindir = pg.binaries()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL's initdb/pg_ctl not found under CI (.ci/run installs them)")
        pytest.skip("PostgreSQL's initdb/pg_ctl not found (apt-get install postgresql)")
    cluster = pg.Cluster(bindir)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def ledger_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """None for SQLite (the sandbox's file); else a new PostgreSQL ledger's URL."""
    if backend == "sqlite":
        return None
    return request.getfixturevalue("pg_cluster").new_database()


@pytest.fixture
def sandbox(tmp_path: Path, ledger_url: str | None) -> Iterator[Sandbox]:
    yield make_sandbox(tmp_path / "sandbox", ledger_url=ledger_url)
