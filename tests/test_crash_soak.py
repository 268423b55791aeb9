"""The crash soak (`benchmarks/crash_soak.py`): intake and settlement SIGKILLed at
random, then every invariant checked from the ledger and the outbox alone.

The full soak (1000 messages, 20 kills) is a benchmark; this is its short version. The
second test proves the checker is not vacuous: a sandbox left whole passes it, and each
kind of damage is reported by the invariant that should catch it.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

from benchmarks import crash_soak
from benchmarks import generate as g
from daemon import files
from daemon.settlement import settle
from tests.conftest import make_sandbox

MESSAGES = 150
KILLS = 8
SEED = 20261123


@pytest.mark.slow
def test_sigkills_during_intake_and_settlement_lose_nothing_and_pay_nothing_twice(tmp_path):
    report = crash_soak.run(tmp_path / "soak", messages=MESSAGES, kills=KILLS, seed=SEED)
    print(crash_soak.table(report))
    assert report.violations == []
    kinds = Counter(k.kind for k in report.kills)
    assert len(report.kills) == KILLS
    assert kinds["intake"] >= 3 and kinds["settlement"] >= 2 and kinds["start-up"] >= 1
    assert not any(k.where.startswith("missed") for k in report.kills)
    assert report.daemon_starts == 2 + kinds["intake"] + kinds["start-up"]  # + the last
    assert len(report.checks) == 11
    assert report.summary.messages == MESSAGES and report.summary.defects


@pytest.mark.slow
def test_several_workers_on_postgresql_survive_sigkills_of_random_workers(tmp_path, pg_cluster):
    """The same soak with two workers on one inbox and one PostgreSQL ledger: each kill
    strikes a random worker, which comes back under its own id or a new one; a dead
    worker's files are taken over by the others. Every invariant holds."""
    report = crash_soak.run(
        tmp_path / "soak",
        messages=60,
        kills=5,
        seed=SEED,
        workers=2,
        ledger=pg_cluster.empty_database(),
    )
    print(crash_soak.table(report))
    assert report.violations == []
    assert len(report.kills) == 5 and len(report.checks) == 11
    assert report.workers == 2 and report.ledger == "postgresql"
    assert {k.kind for k in report.kills} >= {"intake", "settlement"}
    assert all("worker w" in k.note for k in report.kills if k.kind != "settlement")


def test_the_checker_passes_a_whole_sandbox_and_names_each_kind_of_damage(tmp_path):
    box = make_sandbox(tmp_path / "sandbox", crash_soak.institutions_toml("90001", direct=3))
    institutions = g.load_institutions(box.paths.institutions)
    spec = g.Spec(messages=12, bills=2, lines=3, radiology=0.4, invalid=0.2, seed=5)
    planned = g.plan(spec, institutions)
    named = g.render_all(planned, spec, institutions)
    g.write(box.paths.inbox, named)
    box.process()
    intake = box.intake()
    try:
        settle.settle(intake, cutoff=intake.clock(), kind="manual")
    finally:
        intake.ledger.close()

    def violations() -> list[str]:
        report = crash_soak.Report(spec, g.summarize(planned))
        crash_soak.check(report, box, named, planned, None)
        return report.violations

    assert violations() == []
    outbox = box.paths.outbox
    apprec = box.outbox("apprec-")[0]
    apprec.rename(outbox / f"apprec-{'0' * 8}-copy.msg")  # a second name: a stray file
    (outbox / ".vedtak-x.msg.0badf00d.tmp").write_bytes(b"half")
    files.temp_path(outbox / "vedtak-y.msg").write_bytes(b"half")  # a live writer's
    vedtak = box.outbox("vedtak-")[0]
    vedtak.write_bytes(vedtak.read_bytes().replace(b"Godkjent", b"Godkjent ", 1))
    (box.paths.work / "left.msg").write_bytes(b"x")
    db = box.db()
    db.execute("UPDATE payments SET vedtak_id = NULL WHERE id = 1")
    db.commit()
    db.close()
    found = violations()
    assert {v.split(":")[0] for v in found} == {
        "the outbox equals the ledger's stored outputs byte for byte",
        "every payment with a payee is in exactly one vedtak",
        "nothing left in inbox/, work/ or quarantine/",
        "no temporary files anywhere in the sandbox",
    }, found
    assert any("bytes differ" in v and vedtak.name in v for v in found)
    assert any(apprec.name in v and "not in the outbox" in v for v in found)
    assert any(f"writer {os.getpid()} alive" in v for v in found)
    assert os.path.exists(outbox / f"apprec-{'0' * 8}-copy.msg")
