"""Progress of a long message in the log (#17.5): every N bills a `progress` line,
through the real pipeline."""

from __future__ import annotations

import io
import json

from daemon import logs
from tests.claims import B, C, L, msghead, person_number
from tests.conftest import wrap_demo


def test_a_long_message_logs_its_progress_every_n_bills(sandbox):
    text = sandbox.config_path.read_text()
    sandbox.config_path.write_text(
        text.replace("[intake]\n", "[intake]\nprogress_every_bills = 2\n", 1)
    )
    bills = tuple(
        B(
            (L("NOR05003", "6.96"),),
            regning_nr=str(n),
            fnr=person_number(n),
            date=f"2026-10-0{n}T10:00:00",
        )
        for n in range(1, 6)
    )
    stream = io.StringIO()
    logs.configure("info", stream)
    try:
        sandbox.drop(wrap_demo(msghead(C(bills))))
        sandbox.drop(wrap_demo())  # the demo claim: three bills, one line of progress
        sandbox.process()
    finally:
        logs.configure("info")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    progress = [(x["stage"], x["bills"], x["of"]) for x in lines if x["event"] == "progress"]
    assert progress == [("decide", 2, 5), ("decide", 4, 5), ("decide", 2, 3)]
    assert [x["status"] for x in lines if x["event"] == "answered"] == ["1", "1"]
    assert person_number(1) not in stream.getvalue()
