"""Hostile files and parsers through the real intake (issue #14, findings 4, 5, 9, 10, 12,
14, 15): a file in a sandbox inbox, `process`, then the answer, the ledger, the folders."""

from __future__ import annotations

import codecs
import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT, demo_claim, wrap_demo
from tests.test_intake import AR, apprec_of, errors

MSGHEAD_NS = b"http://www.kith.no/xmlstds/msghead/2006-05-24"


def process_in_child(sandbox, timeout: float = float(os.environ.get("HANG_TIMEOUT", 300))) -> dict:
    """`process` in a child process (a hang must not hang the test run): the child's
    peak RSS in KiB and its exit code. `timeout` only turns a hang into a failure."""
    script = textwrap.dedent(
        f"""
        import json, resource, sys
        from daemon import cli
        rc = cli.main(["--config", {str(sandbox.config_path)!r}, "process"])
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"rc": rc, "peak_kib": peak}}))
        """
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`process` did not finish within {timeout} s: intake hangs")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------- finding 4: DTDs


def _doctype_payload(target: str, how: str) -> bytes:
    """A MsgHead behind `<!DOCTYPE x SYSTEM target>`, hidden from a naive prolog check."""
    doc = (
        f'<!DOCTYPE MsgHead SYSTEM "{target}"><MsgHead xmlns="{MSGHEAD_NS.decode()}">&x;</MsgHead>'
    )
    if how == "bom":
        return codecs.BOM_UTF8 + doc.encode()
    if how == "utf16":
        return ('<?xml version="1.0" encoding="UTF-16"?>' + doc).encode("utf-16")
    if how == "comments":
        return b"<!--" + b"c" * 70_000 + b"-->\n" + doc.encode()
    if how == "utf7":
        return ('<?xml version="1.0" encoding="UTF-7"?>' + doc).encode("utf-7")
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["bom", "utf16", "comments", "utf7"])
def test_doctype_pointing_at_a_fifo_is_refused_without_opening_it(sandbox, tmp_path, how):
    """A DOCTYPE behind a BOM, UTF-16, UTF-7 or 70 KB of comments, naming a FIFO: a
    parser that opened it would block forever. T01 DOCTYPE, and the intake finishes."""
    fifo = tmp_path / "hang.dtd"
    os.mkfifo(fifo)
    sandbox.drop(wrap_demo(_doctype_payload(fifo.as_uri(), how)), "fifo.msg")
    process_in_child(sandbox)
    apprec = apprec_of(sandbox)
    (err,) = errors(apprec)
    assert err["V"] == "T01" and "DOCTYPE" in err["DN"]
    assert len(list(sandbox.paths.quarantine.glob("*--fifo.msg"))) == 1


def test_doctype_answer_does_not_tell_whether_a_path_exists(make_box, tmp_path):
    """An existing file, a directory and a missing path as the external subset: the same
    answer text for all three, so the sender learns nothing about our disk (a parser
    that opens them says "Content error in the external subset" or "Is a directory")."""
    existing = tmp_path / "exists.txt"
    existing.write_text("SECRET not a DTD")
    answers = []
    for target in (existing, tmp_path, tmp_path / "missing.dtd"):
        box = make_box()
        box.drop(wrap_demo(_doctype_payload(target.as_uri(), "bom")), "probe.msg")
        box.process()
        apprec = apprec_of(box)
        answers.append([(e["V"], e["DN"], e.get("OT")) for e in errors(apprec)])
        assert "SECRET" not in apprec.xpath("string()")
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][0][0] == "T01" and "DOCTYPE" in answers[0][0][1]


def test_resolver_refuses_external_loads_even_past_the_prolog_check(tmp_path):
    """The parser itself opens nothing: fed straight to lxml (no prolog check), a DOCTYPE
    naming a FIFO returns at once. Run in a child: a failure would be a hang."""
    fifo = tmp_path / "hang.dtd"
    os.mkfifo(fifo)
    script = textwrap.dedent(
        f"""
        from lxml import etree
        from daemon.transport.xmlsafe import new_parser
        doc = b'<!DOCTYPE a SYSTEM "{fifo.as_uri()}"><a>1</a>'
        etree.fromstring(doc, new_parser())
        print("returned")
        """
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the hardened parser opened the FIFO")
    assert "returned" in done.stdout, done.stderr


@pytest.fixture
def make_box(tmp_path):
    from tests.conftest import make_sandbox

    count = iter(range(100))
    return lambda: make_sandbox(tmp_path / f"box{next(count)}")


def test_the_demo_claim_still_passes(sandbox):
    """The hardening refuses hostile files only: an ordinary claim is approved."""
    sandbox.drop(wrap_demo(demo_claim()), "ok.msg")
    sandbox.process()
    assert apprec_of(sandbox).find("ar:Status", AR).get("V") == "1"
