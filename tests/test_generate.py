"""The benchmark generator (`benchmarks/generate.py`): the same seed gives the same bytes,
the claims are realistic, and the real intake decides every bill as the plan says."""

from __future__ import annotations

import gzip
import tomllib
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
from lxml import etree

from benchmarks import generate as g
from daemon.registers import ncrp
from daemon.registers.registry import Institution
from daemon.rules import radiology
from daemon.rules.common import valid_person_number
from daemon.transport import keys, mime, trust
from tests.conftest import CERTS_FROM

AR = "{http://www.kith.no/xmlstds/apprec/2004-11-21}"
MIXED = g.Spec(
    messages=40, bills=3, lines=4, radiology=0.4, invalid=0.2, seed=7, sign=True, encrypt=True
)


def our_certificate(sandbox):
    return keys.load_pair(sandbox.paths.private_key, sandbox.paths.certificate, None).certificate


def make_cert(tmp_path):
    keys.generate(
        tmp_path / "k.pem", tmp_path / "c.pem", her_id="1", orgnr="1", name="x",
        not_before=CERTS_FROM, days=3650,
    )  # fmt: skip
    return keys.load_pair(tmp_path / "k.pem", tmp_path / "c.pem", None).certificate


def send(sandbox, spec: g.Spec, institutions=None) -> list[g.PlannedMessage]:
    """Plan, render, register the sender when it signs or encrypts, drop, process once."""
    institutions = institutions or g.load_institutions()
    planned = g.plan(spec, institutions)
    recipient = our_certificate(sandbox) if spec.encrypt else None
    named = g.render_all(planned, spec, institutions, recipient=recipient)
    if spec.sign or spec.encrypt:
        partner = g.write_sender(sandbox.root / "sender", spec, institutions)
        g.register(sandbox.config_path, partner)
    g.write(sandbox.paths.inbox, named)
    sandbox.process()
    return planned


def ledger_bills(sandbox) -> dict[tuple[str, str], tuple[int, Decimal, str]]:
    db = sandbox.db()
    try:
        rows = db.execute("SELECT id, institution_id, uuid, approved, verdict FROM bills")
        return {(i, u): (b, Decimal(a), v) for b, i, u, a, v in rows}
    finally:
        db.close()


def apprec_status(data: bytes, sender: trust.KeyPair | None) -> str:
    """The Status of an AppRec in the outbox, opened as the partner opens it."""
    multipart, problem = mime.parse(data)
    assert problem is None, problem
    part = multipart.attachments[0]
    payload = part.data
    if part.content_type.startswith("application/pkcs7-mime"):
        payload, problem = trust.decrypt(payload, sender)
        assert problem is None, problem
    if payload[:2] == b"\x1f\x8b":
        payload = gzip.decompress(payload)
    return etree.fromstring(payload).find(f"{AR}Status").get("V")


# --------------------------------------------------------------------------- determinism


def test_the_same_seed_gives_the_same_bytes_signed_and_encrypted(tmp_path):
    """Signatures, the CMS envelope and every id come from the seed."""
    cert = make_cert(tmp_path)
    spec = replace(MIXED, messages=6, gzip=True)
    first = g.generate(spec, recipient=cert)
    assert first == g.generate(spec, recipient=cert)
    assert first == g.generate(spec, recipient=cert, jobs=2)  # processes change nothing
    other = g.generate(replace(spec, seed=8), recipient=cert)
    assert not {data for _, data in first} & {data for _, data in other}
    assert [name for name, _ in first] == [f"gen-7-{n:06d}.msg" for n in range(6)]


def test_the_sender_key_is_derived_from_the_seed():
    """Two derivations (no cache) give the same key and certificate, valid 2025-2034."""
    derive = g.sender_keys.__wrapped__
    a, b = derive(3), derive(3)
    assert a.private_key.private_numbers() == b.private_key.private_numbers()
    assert a.certificate == b.certificate
    assert a.private_key.key_size == 2048
    assert a.certificate.not_valid_before_utc == CERTS_FROM
    assert derive(4).private_key.private_numbers() != a.private_key.private_numbers()


def test_seeded_encryption_opens_with_our_key(tmp_path):
    """`encrypt_seeded` makes standard CMS: the daemon's decrypt opens it."""
    keys.generate(tmp_path / "k.pem", tmp_path / "c.pem", her_id="1", orgnr="1", name="x")
    ours = keys.load_pair(tmp_path / "k.pem", tmp_path / "c.pem", None)
    sealed = g.encrypt_seeded(b"<x/>" * 100, ours.certificate, g.random.Random(1))
    assert trust.decrypt(sealed, ours) == (b"<x/>" * 100, None)


# --------------------------------------------------------------------------- realism


def test_the_plan_is_realistic():
    """Distinct valid patients and ids, real codes at real amounts, real
    municipalities of all four RHFs, dates inside COM-08's window."""
    spec = g.Spec(messages=300, bills=3, lines=4, radiology=0.3, seed=1)
    register = g.default_tariffs()
    messages = g.plan(spec)
    bills = [b for m in messages for b in m.bills]
    assert len(bills) == 900

    fnrs = [b.fnr for b in bills]
    assert len(set(fnrs)) == len(fnrs) and all(valid_person_number(f) for f in fnrs)
    assert len({f[:6] for f in fnrs}) > 800  # birth dates spread, not ~740 a date
    for ids in ([b.uuid for b in bills], [b.regning_nr for b in bills]):
        assert len(set(ids)) == len(ids)
    assert len({m.message_id for m in messages} | {m.msg_id for m in messages}) == 600

    oldest = spec.today - timedelta(days=spec.days_back)
    fixed = datetime(2026, 11, 23, 12, tzinfo=UTC)
    for m in messages:
        assert all(oldest <= b.service_date < spec.today for b in m.bills)
        assert max(b.service_date for b in m.bills) < m.gen_date.date() and m.gen_date < fixed

    assert 0.22 < sum(b.kind == "radiology" for b in bills) / len(bills) < 0.38
    assert {b.payee for b in bills if b.kind == "radiology"} == {
        f"RHF:{name}" for name in g.MUNICIPALITIES
    }
    assert {b.payee for b in bills if b.kind == "lab"} == {"RHF:Helse Sør-Øst RHF"}
    for b in bills:
        if b.kind == "lab":
            for line in b.lines:
                code = register.code(line.code, b.service_date)
                assert code.valid_on(b.service_date) and code.field_prefix != "MG"
                assert line.amount == register.rate(code.category, "stat", b.service_date)
                assert not (b.consultation and code.starred), "LAB-07"
                assert not g.lab_rules.is_hpv(code) or b.diagnoses == ("Z124",), "LAB-08"
        else:
            groups = []
            for line in b.lines:
                cs = ncrp.parse(line.code)
                assert str(cs) == line.code
                code = register.radiology.code(cs.procedure, b.service_date)
                ctx = SimpleNamespace(tariffs=register, sector="stat")
                day = SimpleNamespace(service_date=b.service_date)
                assert line.amount == radiology.amount_for(cs, code, day, ctx).kroner
                groups.append(g._group(code))
            limited = [x for x in groups if x != "RG"]
            assert len(limited) == len(set(limited)), "RAD-06/07/09: one exam a group a day"


def test_the_invalid_share_makes_lines_wrong_with_every_kind_of_defect():
    spec = g.Spec(messages=400, bills=2, lines=4, radiology=0.4, invalid=0.3, seed=2)
    summary = g.summarize(g.plan(spec))
    assert 0.26 < sum(summary.defects.values()) / summary.lines < 0.34
    assert set(summary.defects) == {
        "LAB-02", "LAB-03", "LAB-07", "LAB-08", "LAB-09",
        "RAD-02", "RAD-03", "RAD-04", "RAD-13", "RAD-14",
    }  # fmt: skip
    assert summary.statuses["3"] and summary.statuses["1"]
    assert summary.approved < summary.claimed


# --------------------------------------------------------------------------- the real intake


def test_every_message_is_answered_as_planned_through_the_real_intake(sandbox):
    """Signed, encrypted and gzipped lab and radiology claims: each AppRec has the planned
    status (1 or 3), each bill the planned amount, each wrong line its rule's remark,
    and no right line any remark."""
    spec = replace(MIXED, gzip=True)
    planned = send(sandbox, spec)
    sender = g.sender_keys(spec.seed, spec.from_her, "983974678", "Demo sykehus HF")
    db = sandbox.db()
    stored = dict(db.execute("SELECT ebxml_message_id, apprec_status FROM messages"))
    remarks = Counter()
    for bill_id, rule, line in db.execute("SELECT bill_id, rule_id, line FROM remarks"):
        remarks[(bill_id, line, rule)] += 1
    db.close()
    assert {m.message_id: m.status for m in planned} == stored
    assert set(stored.values()) == {"1", "3"}
    apprecs = sandbox.outbox("apprec-")
    assert len(apprecs) == len(planned) and not sandbox.outbox("error-")
    assert Counter(apprec_status(p.read_bytes(), sender) for p in apprecs) == Counter(
        stored.values()
    )

    bills = ledger_bills(sandbox)
    assert {k: v[1] for k, v in bills.items()} == g.expected_of(planned)
    for m in planned:
        for b in m.bills:
            bill_id, _, verdict = bills[(m.institution.orgnr, b.uuid)]
            assert verdict == b.verdict
            fired = {(line, rule) for (bid, line, rule) in remarks if bid == bill_id}
            assert all(line is not None for line, _ in fired), "no bill-level remark"
            for n, line in enumerate(b.lines, start=1):
                rules = {rule for ln, rule in fired if ln == n}
                assert (line.rule in rules) if line.defect else not rules, (b, n, rules)
    assert sum(1 for m in planned for b in m.bills for x in b.lines if x.defect) > 20


def test_without_invalid_lines_every_message_is_ok(sandbox):
    """Plain messages (the demo partner needs no signature), no defects: status 1."""
    planned = send(sandbox, g.Spec(messages=30, bills=2, lines=5, radiology=0.5, seed=3))
    db = sandbox.db()
    statuses = [s for (s,) in db.execute("SELECT apprec_status FROM messages")]
    db.close()
    assert statuses == ["1"] * 30
    assert all(v[2] == "approved" for v in ledger_bills(sandbox).values())
    assert sum(b.kind == "radiology" for m in planned for b in m.bills) > 15


def test_other_institutions_private_rates_and_direct_payment(tmp_path):
    """`--institutions`: a private lab with a driftsavtale is priced at the privat rates,
    an institution without an RHF is paid directly, each as planned; a genetics lab
    gets nothing (it may claim only MG codes, which are never generated)."""
    from tests.conftest import make_sandbox

    text = (
        '[[institution]]\norgnr = "983974678"\nname = "Demo sykehus HF"\n'
        'rhf = "Helse Sør-Øst RHF"\nkinds = ["hf"]\n\n'
        '[[institution]]\norgnr = "970000019"\nname = "Vestlab AS"\nrhf = "Helse Vest RHF"\n'
        'kinds = ["private-driftsavtale"]\nsenders = ["90001"]\n\n'
        '[[institution]]\norgnr = "970000027"\nname = "Ideelt sykehus"\nrhf = ""\n'
        'kinds = ["hf", "radiology"]\nsenders = ["90001"]\n\n'
        '[[institution]]\norgnr = "970000035"\nname = "Genetikklab"\nrhf = "Helse Vest RHF"\n'
        'kinds = ["genetics-lab"]\nsenders = ["90001"]\n'
    )
    box = make_sandbox(tmp_path / "sandbox", text)
    institutions = g.load_institutions(box.paths.institutions)
    spec = g.Spec(messages=30, bills=2, lines=3, radiology=0.3, invalid=0.1, seed=4)
    planned = send(box, spec, institutions)
    assert {k: v[1] for k, v in ledger_bills(box).items()} == g.expected_of(planned)
    assert "970000035" not in {m.institution.orgnr for m in planned}  # MG codes only (LAB-05)
    payees = {b.payee for m in planned for b in m.bills}
    assert {"RHF:Helse Vest RHF", "INST:970000027"} <= payees
    private = [m for m in planned if m.institution.orgnr == "970000019"]
    assert private and all(b.kind == "lab" for m in private for b in m.bills)
    register = g.default_tariffs()
    for b in (b for m in private for b in m.bills):
        for line in (x for x in b.lines if x.defect is None):
            category = register.code(line.code).category
            assert line.amount == register.rate(category, "privat", b.service_date)


def test_claimable_problems_names_institutions_the_sender_may_not_claim_for():
    inst = Institution("970000019", "Vestlab AS", "Helse Vest RHF", "driftsavtale", ("lab",))
    assert g.claimable_problems([inst], "90001", "983974678") == [
        '970000019 Vestlab AS: add senders = ["90001"] or it is rejected (COM-09)'
    ]
    assert g.claimable_problems([replace(inst, senders=("90001",))], "90001", None) == []


def test_the_command_line_writes_the_messages_and_registers_the_sender(sandbox, capsys):
    """--sign --encrypt --register: messages in the inbox, the key pair and partner entry
    in inbox/sender/ (a folder: never claimed), and the daemon answers all of them."""
    inbox = sandbox.paths.inbox
    argv = [
        "--messages", "12", "--bills", "2", "--radiology", "0.5", "--invalid", "0.2",
        "--seed", "9", "--sign", "--encrypt", "--gzip", "--config", str(sandbox.config_path),
        "--register", "--out", str(inbox), "--jobs", "1",
    ]  # fmt: skip
    assert g.main(argv) == 0
    out = capsys.readouterr().out
    assert "wrote 12 messages" in out and "AppRec status 1:" in out
    assert sorted(p.name for p in (inbox / "sender").iterdir()) == [
        "partner.toml",
        "sender.cert.pem",
        "sender.key.pem",
    ]
    partners = tomllib.loads(sandbox.paths.partners.read_text())["partner"]
    (ours,) = [p for p in partners if p["her_id"] == "90001"]
    assert ours["require_signature"] and ours["encrypts_to_us"] and ours["encrypt"]
    assert ours["certificates"] == [str((inbox / "sender" / "sender.cert.pem").resolve())]
    sandbox.process()
    db = sandbox.db()
    states = Counter(db.execute("SELECT state, apprec_status FROM messages").fetchall())
    db.close()
    assert sum(states.values()) == 12
    assert {state for state, _ in states} == {"answered"} and {s for _, s in states} <= {"1", "3"}
    assert [p.name for p in inbox.iterdir()] == ["sender"]


@pytest.mark.parametrize(
    "bad",
    [{"radiology": 1.5}, {"invalid": -0.1}, {"bills": 0}, {"lines": 0}, {"days_back": 200}],
)
def test_a_spec_out_of_range_is_refused(bad):
    with pytest.raises(ValueError):
        g.Spec(**bad)
