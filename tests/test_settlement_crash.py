"""Settlement under SIGKILL: no payment paid twice, none dropped, files = ledger.

Twenty-five institutions paid directly (25 payees, so a batch renders and signs 50
messages and takes a while) send claims; between batches more claims arrive. Each
`kravmottak settle` is started as a real process and SIGKILLed at a seeded random
instant: during start-up, inside the ledger transaction, between the commit and the
files, or after. A last batch then runs to the end. Everything is checked from the
ledger and the outbox alone.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import closing
from decimal import Decimal

import pytest
from lxml import etree

from daemon.settlement import settle
from daemon.transport import mime
from tests.claims import B, C, L, msghead, person_number
from tests.conftest import make_sandbox, wrap_demo

PAYEES = 25
ROUNDS = 20
SEED = 20261123
ORGNRS = [f"97{n:07d}" for n in range(PAYEES)]  # made-up, paid directly (no RHF)
INSTITUTIONS = "\n".join(
    f'[[institution]]\norgnr = "{o}"\nname = "Lab {n}"\nrhf = ""\nkinds = ["hf"]\n'
    f'senders = ["90001"]\n'
    for n, o in enumerate(ORGNRS)
)
BOTH_BACKENDS = True  # on SQLite and on PostgreSQL (conftest.py)
OSMO, BAD = L("NOR05003", "6.96"), L("NOR05003", "9.99")
_n = iter(range(1_000_000))


def claims(round_: int) -> list[C]:
    """One claim per institution: two paid bills and a rejected one (own patients)."""
    out, born = [], f"{round_ + 1:02d}0385"
    for orgnr in ORGNRS:
        bills = tuple(
            B((line,), fnr=person_number(next(_n) % 700, born=born), date=f"2026-10-{d}T10:00:00")
            for line, d in ((OSMO, "05"), (OSMO, "06"), (BAD, "07"))
        )
        out.append(C(bills, institution=orgnr))
    return out


def _ledger(box, sql: str) -> int:
    with closing(box.db()) as db:
        return db.execute(sql).fetchone()[0]


def _landed(box, runs_before: int) -> str:
    """Where a kill landed, from the ledger right after it."""
    if _ledger(box, "SELECT count(*) FROM settlements") == runs_before:
        return "before the commit"
    if _ledger(box, "SELECT count(*) FROM vedtak WHERE delivered_at IS NULL"):
        return "after the commit, files not all written"
    return "after the files"


def _drop_and_process(box, round_: int) -> None:
    for i, claim in enumerate(claims(round_)):
        box.drop(wrap_demo(msghead(claim), message_id=f"r{round_}-{i}"))
    box.process()


@pytest.mark.slow
def test_settlement_survives_sigkill_at_random_instants(tmp_path, ledger_url):
    rng = random.Random(SEED)
    box = make_sandbox(tmp_path / "sandbox", INSTITUTIONS, ledger_url=ledger_url)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    outcomes, batch, landed = [], None, Counter()
    for round_ in range(ROUNDS):
        _drop_and_process(box, round_)
        runs_before = _ledger(box, "SELECT count(*) FROM settlements")
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "--config", str(box.config_path), "settle"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        if batch is None or round_ % 4 == 3:
            # the first batch (timed: how long one takes on this machine) and every
            # fourth run to their end, so finished batches mix with killed ones
            outcomes.append(proc.wait())
            batch = batch or time.monotonic() - started
            continue
        # anywhere from start-up to just after the end (about 1.2 s here)
        time.sleep(rng.uniform(0.25, 1.2) * batch)
        proc.send_signal(signal.SIGKILL)
        outcomes.append(proc.wait())
        landed[_landed(box, runs_before) if outcomes[-1] == -signal.SIGKILL else "finished"] += 1
    # a last batch runs to its end: it first writes what a kill left unwritten
    intake = box.intake()
    try:
        settle.deliver(intake)
        settle.settle(intake, cutoff=intake.clock(), kind="manual")
    finally:
        intake.ledger.close()

    with closing(box.db()) as db:
        open_ = db.execute(
            "SELECT count(*) FROM payments WHERE vedtak_id IS NULL AND payee IS NOT NULL"
        ).fetchone()[0]
        paid = sum(Decimal(a) for (a,) in db.execute("SELECT approved FROM payments"))
        vedtak = db.execute("SELECT id, approved, delivered_at FROM vedtak").fetchall()
        per_vedtak = dict(
            db.execute("SELECT vedtak_id, count(*) FROM payments GROUP BY vedtak_id").fetchall()
        )
        files_ = db.execute("SELECT file_name, content FROM vedtak_outputs").fetchall()
        runs = db.execute("SELECT count(*) FROM settlements").fetchone()[0]
    assert open_ == 0, "a payment was dropped"
    assert all(delivered for _, _, delivered in vedtak), "a vedtak was never written"
    assert sum(Decimal(a) for _, a, _ in vedtak) == paid == Decimal("6.96") * 2 * PAYEES * ROUNDS
    # each payment in exactly one vedtak: the counts per vedtak add up to all payments
    assert sum(n for v, n in per_vedtak.items() if v is not None) == 3 * PAYEES * ROUNDS
    # the outbox holds exactly the ledger's files, byte for byte, and no temp files
    outbox = {
        p.name: p.read_bytes()
        for p in box.paths.outbox.iterdir()
        if not p.name.startswith(("apprec", "ack"))
    }
    assert outbox == {name: bytes(content) for name, content in files_}
    # and read from the files alone, every bill is in exactly one vedtak
    seen = []
    for name, content in outbox.items():
        if name.startswith("vedtak-"):
            msghead_ = etree.fromstring(mime.parse(content)[0].attachments[0].data)
            for regning in msghead_.iterfind(".//{*}Regning"):
                seen.append(
                    (msghead_.findtext(".//{*}Receiver//{*}Id"), regning.findtext("{*}RegningsNr"))
                )
    assert len(seen) == 3 * PAYEES * ROUNDS
    # some batches died before their commit, some after it; every committed run counted
    print("where the kills landed:", dict(landed))
    assert set(outcomes) <= {0, -signal.SIGKILL}, outcomes
    assert landed["before the commit"] >= 2, landed  # else the kills proved nothing
    committed = outcomes.count(0) + outcomes.count(-signal.SIGKILL) - landed["before the commit"]
    assert runs == committed + 1, (runs, landed)  # + the last batch
