"""The keys the ledger's judging reads hold are the keys its record holds.

On PostgreSQL several workers judge at once; what keeps a bill from being paid twice
or a day's limit from being passed is that every read the rules make (a uuid paid
before, who was paid, an egenandel's status, a patient's exams of a day) first holds
the same advisory lock the record of the decision takes (postgres.py `_hold`). A read
under another key would judge unguarded while the tests on one worker still pass, so
here each real message's holds are recorded (SQLite's `_hold` is a no-op: it is
replaced by a recorder) and compared with what its record holds.
"""

from __future__ import annotations

import pytest

from daemon.ledger.sqlite import SqliteLedger, bill_key
from tests import test_egenandel as eg
from tests import test_radiology_rules as rad
from tests.claims import B, C, msghead
from tests.conftest import make_sandbox, wrap_demo
from tests.test_lab_rules import OSMO

HF = "983974678"
LAB_UUID = "{B01D0000-0000-4000-8000-000000000001}"


@pytest.fixture
def holds(monkeypatch):
    """Every `_hold` call, in order: a list of keys per call."""
    calls: list[list[str]] = []
    monkeypatch.setattr(SqliteLedger, "_hold", lambda self, keys: calls.append(list(keys)))
    return calls


def _send(box, claim: C, message_id: str, holds: list) -> tuple[list[list[str]], list[str]]:
    """The reads' holds and the record's holds (its last call) for one message."""
    holds.clear()
    box.drop(wrap_demo(msghead(claim), message_id=message_id))
    box.process()
    *reads, record = holds
    return reads, record


def test_the_reads_of_credits_and_same_day_exams_hold_what_the_record_holds(tmp_path, holds):
    box = make_sandbox(tmp_path / "sandbox", rad.INSTITUTIONS)
    lab = B((OSMO,), fnr=eg.fnr(), uuid=LAB_UUID)
    head, chest = rad.same_day(rad.CT_HEAD, rad.CT_CHEST)
    _send(box, C((lab, head)), "first", holds)

    credit = B(lab.lines, fnr=lab.fnr, date=lab.date, uuid=LAB_UUID, transaction_type="5")
    reads, record = _send(box, C((credit, chest)), "second", holds)
    key = bill_key(HF, LAB_UUID)
    # COM-06/07 ask for both bills' uuids at once (paid_bills); the credit's payee
    # (paid_by_payee) is asked for the credited bill alone
    assert any(key in call and len(call) == 2 for call in reads), reads
    assert [key] in reads, reads
    days = [k for call in reads for k in call if k.startswith("day:")]
    assert days and days[0].endswith(":2026-10-05"), reads  # exams_on, day_version
    assert {k for call in reads for k in call} <= set(record), (reads, record)
    assert key in record and days[0] in record


def test_an_egenandel_correction_reads_its_status_under_the_bills_key(tmp_path, holds):
    box = make_sandbox(tmp_path / "sandbox")
    code, out = eg.import_register(box, eg.REGISTER, "--force")
    assert code == 0, out
    uid = eg.UID % 90
    patient = eg.fnr()
    _send(box, C((eg._b(eg.CONS, transaction_type="2", uuid=uid, fnr=patient),)), "unpaid", holds)
    correction = eg._b(eg.CONS, transaction_type="4", uuid=uid, fnr=patient)
    reads, record = _send(box, C((correction,)), "paid", holds)
    assert [bill_key(HF, uid)] in reads, reads  # egenandel_status (EG-03)
    assert {k for call in reads for k in call} <= set(record), (reads, record)
