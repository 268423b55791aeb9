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


# ------------------------------------------- findings 5, 12, 15: what is claimed and read


def _report(sandbox, name: str) -> dict:
    (kept,) = sandbox.paths.quarantine.glob(f"*{name}")  # work/ names: stamp--name
    return json.loads(kept.with_name(kept.name + ".err.json").read_text())


def _bills(sandbox) -> int:
    with sandbox.db() as db:
        return db.execute("SELECT count(*) FROM bills").fetchone()[0]


def _receipts(sandbox) -> dict[str, int]:
    with sandbox.db() as db:
        return dict(db.execute("SELECT state, count(*) FROM receipts GROUP BY state"))


def test_a_symlink_swapped_in_after_the_claim_is_not_followed(sandbox, tmp_path, monkeypatch):
    """The race: the scan saw a regular file, but by the time it is read, work/ holds a
    symlink to a valid claim elsewhere. Before the fix that claim was read and paid."""
    from daemon import files

    outside = tmp_path / "outside.msg"
    outside.write_bytes(wrap_demo(demo_claim()))
    real_claim = files.claim

    def claim_then_swap(candidate, work_dir, now):
        target = real_claim(candidate, work_dir, now)
        link = work_dir / ".swap"
        link.symlink_to(outside)
        os.replace(link, target)  # what a racing sender (or a bug) could leave there
        return target

    monkeypatch.setattr(files, "claim", claim_then_swap)
    sandbox.drop(b"harmless", "race.msg")
    sandbox.process()
    assert sandbox.outbox() == []  # nothing answered from the other file's header
    assert _bills(sandbox) == 0
    report = _report(sandbox, "race.msg")
    assert report["problems"][0]["code"] == "T01"
    assert "symbolsk lenke" in report["problems"][0]["text"]
    assert next(sandbox.paths.quarantine.glob("*--race.msg")).is_symlink()  # the link itself
    assert outside.exists()
    assert list(sandbox.paths.work.iterdir()) == []
    assert _receipts(sandbox) == {"quarantined": 1}


@pytest.mark.parametrize("where", ["inbox", "work"])
def test_a_fifo_is_quarantined_with_a_reason_and_blocks_nothing(sandbox, where):
    """A FIFO in the inbox or in work/: opening it for reading would block for good.
    It is quarantined with a reason, and the good file beside it is answered."""
    folder = sandbox.paths.inbox if where == "inbox" else sandbox.paths.work
    fifo = folder / "pipe.msg"
    os.mkfifo(fifo)
    past = os.stat(fifo).st_mtime - 10
    os.utime(fifo, (past, past), follow_symlinks=False)
    sandbox.drop(wrap_demo(), "good.msg")
    process_in_child(sandbox)
    assert len(sandbox.outbox("apprec")) == 1
    report = _report(sandbox, "pipe.msg")
    assert report["problems"][0]["code"] == "T01" and "FIFO" in report["problems"][0]["text"]
    assert list(sandbox.paths.work.iterdir()) == []
    assert "pipe.msg" not in os.listdir(sandbox.paths.inbox)


def test_symlinks_and_directories_in_work_are_quarantined(sandbox, tmp_path):
    """Left in work/ (by a crash, an operator, a race): refused with a reason each, so
    nothing stays there unanswered."""
    secret = tmp_path / "secret.msg"
    secret.write_bytes(wrap_demo())
    (sandbox.paths.work / "link.msg").symlink_to(secret)
    (sandbox.paths.work / "dir.msg").mkdir()
    sandbox.process()
    assert "symbolsk lenke" in _report(sandbox, "link.msg")["problems"][0]["text"]
    assert "katalog" in _report(sandbox, "dir.msg")["problems"][0]["text"]
    assert list(sandbox.paths.work.iterdir()) == []
    assert sandbox.outbox() == [] and _bills(sandbox) == 0
    assert _receipts(sandbox) == {"quarantined": 2}


def test_symlink_in_the_inbox_is_quarantined_not_followed(sandbox, tmp_path):
    """A symlink dropped in the inbox used to sit there forever, silently."""
    secret = tmp_path / "secret.msg"
    secret.write_bytes(wrap_demo())
    link = sandbox.paths.inbox / "link.msg"
    link.symlink_to(secret)
    os.utime(link, (0, 0), follow_symlinks=False)
    sandbox.process()
    assert "symbolsk lenke" in _report(sandbox, "link.msg")["problems"][0]["text"]
    assert sandbox.outbox() == [] and _bills(sandbox) == 0
    assert secret.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000 anyway")
def test_an_unreadable_file_is_quarantined_with_a_reason(sandbox):
    path = sandbox.drop(wrap_demo(), "locked.msg")
    path.chmod(0)
    sandbox.process()
    assert "ingen tilgang" in _report(sandbox, "locked.msg")["problems"][0]["text"]


def test_a_directory_in_the_inbox_is_logged_once_and_counted_in_status(sandbox, capsys):
    """Never claimed (it may be a sender's working folder), but not silent either: one
    log line per directory, however many polls, and a count in `status`."""
    from daemon import cli, logs
    from daemon.service import runner as service

    logs.configure("info")  # JSON on stderr, as the daemon logs (not structlog's default)
    (sandbox.paths.inbox / "subdir").mkdir()
    intake = service.build(sandbox.settings)
    try:
        intake.poll()
        intake.poll()
    finally:
        intake.ledger.close()
    logged = [line for line in capsys.readouterr().err.splitlines() if "stray_in_inbox" in line]
    assert len(logged) == 1 and "subdir" in logged[0]
    assert (sandbox.paths.inbox / "subdir").is_dir()
    assert cli.main(["--config", str(sandbox.config_path), "status"]) == 0
    status = capsys.readouterr().out
    assert any("never claimed" in line and line.split()[-1] == "1" for line in status.splitlines())


def test_a_file_with_a_hidden_hard_link_is_refused(sandbox):
    """Finding 12: a sender keeps a second name (hidden in the inbox) for the file it
    drops, so it could rewrite our archived original. Refused with T99 (the header still
    addresses the answer), not processed, not paid, not archived."""
    path = sandbox.drop(wrap_demo(message_id="linked"), "linked.msg")
    os.link(path, sandbox.paths.inbox / ".keep")
    sandbox.process()
    (err,) = errors(apprec_of(sandbox))
    assert err["V"] == "T99" and "harde lenker" in err["DN"]
    assert _bills(sandbox) == 0
    assert list(sandbox.paths.archive.rglob("*linked.msg")) == []
    assert len(list(sandbox.paths.quarantine.glob("*--linked.msg"))) == 1


# --------------------------------------------------------------- finding 14: permissions


def test_permissions_hold_under_a_loose_umask(tmp_path, monkeypatch):
    """`init` and `process` under umask 022 (a service manager's default): the ledger and
    the private key 0600, folders 0750, outputs and reports 0640."""
    import stat

    from daemon import cli
    from tests.conftest import make_sandbox

    previous = os.umask(0o022)
    try:
        box = make_sandbox(tmp_path / "box")
        box.drop(wrap_demo(), "ok.msg")
        box.drop(b"junk", "junk.msg")
        assert cli.main(["--config", str(box.config_path), "process"]) == 0
    finally:
        os.umask(previous)

    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)

    paths = box.paths
    assert mode(paths.ledger) == 0o600
    for extra in (paths.ledger.with_name(paths.ledger.name + s) for s in ("-wal", "-shm")):
        if extra.exists():
            assert mode(extra) == 0o600, extra
    assert mode(paths.private_key) == 0o600
    for folder in (paths.inbox, paths.work, paths.outbox, paths.quarantine, paths.archive):
        assert mode(folder) == 0o750, folder
    (day,) = paths.archive.iterdir()
    assert mode(day) == 0o750
    outputs = [*paths.outbox.iterdir(), *paths.quarantine.glob("*.err.json")]
    assert len(outputs) >= 2
    assert {mode(p) for p in outputs} == {0o640}


# ------------------------------------------------------- finding 9: small in, huge out


def _unknown_codes_claim(regning_nr: str, codes: int) -> bytes:
    from tests.claims import B, C, L, msghead

    lines = tuple(L(f"ZZ{i:04d}", "10.00") for i in range(codes))
    return wrap_demo(msghead(C(bills=(B(lines=lines, regning_nr=regning_nr),))))


def test_a_megabyte_regningnr_times_300_codes_gives_a_small_answer(sandbox):
    """1 MB regningNr and 300 unknown codes made a 300 MB AppRec, 600 MB of ledger and
    1.5 GB of memory. Now: T02 naming the attribute, a few KB out, a small ledger, and
    the child's peak memory far from those figures."""
    sandbox.drop(_unknown_codes_claim("9" * 1_000_000, 300), "huge-nr.msg")
    usage = process_in_child(sandbox)
    (apprec_file,) = sandbox.outbox("apprec")
    assert apprec_file.stat().st_size < 64_000
    (err,) = errors(apprec_of(sandbox))
    assert err["V"] == "T02" and "@regningNr" in err["OT"] and "1000000 tegn" in err["DN"]
    assert sum(p.stat().st_size for p in sandbox.outbox()) < 128_000
    assert sandbox.paths.ledger.stat().st_size < 2_000_000
    assert usage["peak_kib"] < 400 * 1024, usage  # 1.5 GB before


def test_echoed_values_and_the_number_of_errors_are_bounded(sandbox):
    """A regningNr at the limit echoed in 1100 remarks: each OT cut to 100 characters,
    at most 1000 Error lines plus one saying how many more there were."""
    from daemon.claims.answer import MAX_ERRORS, MAX_REF

    sandbox.drop(_unknown_codes_claim("7" * 256, MAX_ERRORS + 100), "many.msg")
    sandbox.process()
    apprec = apprec_of(sandbox)
    listed = errors(apprec)
    assert len(listed) == MAX_ERRORS + 1
    assert all(len(e.get("OT", "")) <= MAX_REF for e in listed)
    assert listed[0]["OT"].startswith("7" * (MAX_REF - 1)) and listed[0]["OT"].endswith("…")
    assert "100 merknader til" in listed[-1]["DN"]
    (apprec_file,) = sandbox.outbox("apprec")
    assert apprec_file.stat().st_size < MAX_ERRORS * 1000


# ------------------------------------------------- finding 10: inflation and the OOM kill


def test_23_kb_inflating_to_20_mb_of_tiny_elements_is_refused_with_bounded_memory(sandbox):
    """A gzip payload of 23 KB that inflates to 20 MB of `<a/>` (5 million elements)
    took 1.7 GB to parse. Now the markup is counted before a tree is built: T99, and
    the child's peak RSS stays a small multiple of the inflated bytes."""
    inner = b'<MsgHead xmlns="' + MSGHEAD_NS + b'">' + b"<a/>" * 5_000_000 + b"</MsgHead>"
    raw = wrap_demo(inner, gzip=True, message_id="tiny-elements")
    assert len(raw) < 64_000
    sandbox.drop(raw, "bomb.msg")
    usage = process_in_child(sandbox)
    (err,) = errors(apprec_of(sandbox))
    assert err["V"] == "T99" and "XML-noder" in err["DN"]
    print("peak RSS of the child (KiB):", usage["peak_kib"])
    assert usage["peak_kib"] < 300 * 1024, usage
    assert len(list(sandbox.paths.quarantine.glob("*--bomb.msg"))) == 1


def test_the_inflation_ceiling_follows_the_file_size_limit(sandbox):
    """With max_file_bytes at 100 000, a payload may inflate to 400 000 bytes at most,
    however high max_payload_bytes is set."""
    text = sandbox.config_path.read_text()
    sandbox.config_path.write_text(
        text.replace("max_file_bytes = 134217728", "max_file_bytes = 100000")
    )
    padding = b"<!--" + b"x" * 1_000_000 + b"-->"
    big = demo_claim().replace(b"<MsgHead", padding + b"<MsgHead", 1)
    sandbox.drop(wrap_demo(big, gzip=True), "inflates.msg")
    sandbox.process()
    (err,) = errors(apprec_of(sandbox))
    assert err["V"] == "T99" and "400000" in err["DN"]


KILL_ON_MARKER = textwrap.dedent(
    """
    import os, signal, sys
    from daemon import cli
    from daemon.service import intake

    def out_of_memory(work, ctx):  # what the kernel's OOM killer does to a hungry parse
        if b"KILL-ME" in work.raw:
            os.kill(os.getpid(), signal.SIGKILL)
        return work

    intake.STAGES = (out_of_memory, *intake.STAGES)
    sys.exit(cli.main(["--config", sys.argv[1], "process"]))
    """
)


def test_a_file_that_kills_every_start_is_set_aside_after_max_attempts(sandbox):
    """A message whose handling kills the process (out of memory) must not kill every
    start after it: after `max_attempts` starts without an outcome it is quarantined
    unprocessed with X99 saying so, and the daemon carries on."""
    sandbox.drop(
        wrap_demo(demo_claim().replace(b"</MsgHead>", b"<!--KILL-ME--></MsgHead>")), "oom.msg"
    )
    sandbox.drop(wrap_demo(), "fine.msg")
    limit = sandbox.settings.intake.max_attempts
    codes = []
    for _ in range(limit + 1):
        done = subprocess.run(
            [sys.executable, "-c", KILL_ON_MARKER, str(sandbox.config_path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        codes.append(done.returncode)
    assert codes == [-9] * limit + [0], codes
    replies = [apprec_of_file(p) for p in sandbox.outbox("apprec")]
    assert sorted(r.find("ar:Status", AR).get("V") for r in replies) == ["1", "2"]
    (refused,) = [r for r in replies if r.find("ar:Status", AR).get("V") == "2"]
    (err,) = [dict(e.attrib) for e in refused.findall("ar:Error", AR)]
    assert err["V"] == "X99" and f"avbrutt {limit} ganger" in err["DN"]
    assert len(list(sandbox.paths.quarantine.glob("*--oom.msg"))) == 1
    assert list(sandbox.paths.work.iterdir()) == []


def apprec_of_file(path):
    from tests.test_intake import read_output

    return read_output(path)[1]
