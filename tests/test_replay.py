"""`kravmottak replay`: the recorded corpus through the whole pipeline, compared,
recorded, settled and shadowed (tests/corpus/README.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from daemon import cli
from daemon.rules.decide import RULEBOOK
from tests.conftest import ROOT

CORPUS = ROOT / "tests" / "corpus"
EXPECTED = CORPUS / "expected"
CONFIG = CORPUS / "config" / "kravmottak.toml"
TECHNICAL = {"T01", "T02", "T10", "T99", "E10", "E21", "S01", "S02", "S99"}
MESSAGES = sorted(p.name for p in CORPUS.iterdir() if p.suffix in (".msg", ".xml"))


def replay(capsys, *args: str, config: Path = CONFIG) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["--config", str(config), "replay", *map(str, args)])
    return code, capsys.readouterr().out


def decisions() -> dict[str, dict]:
    return {name: json.loads((EXPECTED / name / "decision.json").read_text()) for name in MESSAGES}


def fired(decision: dict) -> set[str]:
    rules = {e["rule"] for e in decision.get("claim_fired", [])}
    for bill in decision.get("bills", []):
        rules |= {e["rule"] for e in bill["fired"]}
        rules |= {e["rule"] for line in bill["lines"] for e in line["fired"]}
    return rules


def changed_rate_config(tmp_path: Path, old: str = "6.96", new: str = "7.11") -> Path:
    """A copy of the corpus config whose tariffs (a copy too) pay MB2 `new` at the state
    rate from 2023 instead of `old`."""
    folder = tmp_path / "candidate"
    shutil.copytree(CONFIG.parent, folder)
    # the shipped registers beside the corpus's own egenandel register (which stays)
    shutil.copytree(
        ROOT / "config" / "tariffs",
        folder / "tariffs",
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("egenandel.toml"),
    )
    rates = folder / "tariffs" / "lab-rates.csv"
    text = rates.read_text()
    assert f"MB2,stat,{old},2023-01-01" in text
    rates.write_text(text.replace(f"MB2,stat,{old},2023-01-01", f"MB2,stat,{new},2023-01-01"))
    cfg = folder / "kravmottak.toml"
    assert 'tariffs = "tariffs"' in cfg.read_text()  # the corpus config's own folder
    return cfg


def subset(tmp_path: Path, *names: str) -> tuple[Path, Path]:
    """A few corpus messages and their expectations, in a folder of their own."""
    source, expected = tmp_path / "source", tmp_path / "expected"
    source.mkdir()
    expected.mkdir()
    for name in names:
        shutil.copy(CORPUS / name, source / name)
        shutil.copytree(EXPECTED / name, expected / name)
    return source, expected


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- the corpus


def test_the_corpus_replays_as_expected(capsys):
    """`replay tests/corpus --expect tests/corpus/expected` passes: what CI runs."""
    code, out = replay(capsys, CORPUS, "--expect", EXPECTED)
    assert out.strip().splitlines()[-1] == f"{len(MESSAGES)} passed, 0 failed", out[-3000:]
    assert code == 0


def test_every_rule_and_every_technical_error_is_in_the_corpus():
    """Each rule id of the registry fires in some expectation and has an approving case
    too; each technical error code appears, and so does a MessageError."""
    found = decisions()
    rules = {fn.rule.id for fn in RULEBOOK.all}
    fires = set().union(*(fired(d) for d in found.values()))
    assert rules <= fires, sorted(rules - fires)
    cases = json.loads((CORPUS / "cases.json").read_text()).values()
    approving = {c["rule"] for c in cases if c.get("fires") is False}
    assert rules <= approving, sorted(rules - approving)
    approved = [d for d in found.values() if d.get("apprec_status") == "1"]
    assert approved and all(not fired(d) for d in approved)
    codes = {p["code"] for d in found.values() for p in d.get("problems", [])}
    assert codes >= TECHNICAL, sorted(TECHNICAL - codes)
    errors = [n for n in MESSAGES if (EXPECTED / n / "error.soap.xml").exists()]
    assert {c for n in errors for c in (p["code"] for p in found[n]["problems"])} >= {
        "E10",
        "E21",
        "S01",
        "S02",
        "S99",
        "T99",
    }


def test_every_corpus_file_shows_what_cases_json_says():
    """cases.json (written by make_corpus.py) against the recorded decisions: a rule
    case fires exactly when its CASES row says, a technical case has its codes."""
    cases = json.loads((CORPUS / "cases.json").read_text())
    assert sorted(cases) == MESSAGES
    for name, decision in decisions().items():
        shows = cases[name]
        if "rule" in shows:
            assert (shows["rule"] in fired(decision)) == shows["fires"], name
            if not shows["fires"]:
                assert decision["apprec_status"] == "1", name
        elif "outcome" in shows:
            assert decision["outcome"] == shows["outcome"], name
        else:
            codes = sorted(p["code"] for p in decision["problems"])
            assert codes == sorted(shows["problems"]), name
            if not codes:
                assert decision["apprec_status"] == "1", name


def test_make_corpus_gives_the_committed_bytes():
    """The corpus is reproducible: the generator builds exactly the committed files."""
    from tests.corpus import make_corpus

    built = make_corpus.corpus()
    assert sorted(name for name, _, _ in built) == MESSAGES
    for name, raw, _ in built:
        assert (CORPUS / name).read_bytes() == raw, name


def test_the_corpus_reads_nothing_outside_the_project():
    """Everything the corpus needs is in the repository (no ../shared)."""
    for path in [*CORPUS.glob("*.py"), *(CORPUS / "config").glob("*.toml")]:
        assert "shared" not in path.read_text(), path


# --------------------------------------------------------------------------- comparing


def test_a_changed_rate_fails_naming_the_bill_and_the_amount(tmp_path, capsys):
    """MB2 at 7.11 instead of 6.96: exit 1, and the report names message, bill, line,
    code, old and new verdict and amount, and the rule that now fires."""
    code, out = replay(capsys, CORPUS, "--expect", EXPECTED, config=changed_rate_config(tmp_path))
    assert code == 1
    assert (
        "lab-lab09-ok.msg: bill 1001 line 1 NOR05003: approved 6.96 -> rejected 0.00 (+LAB-09)"
    ) in out
    assert "lab-lab09-ok.msg: bill 1001: approved 6.96 -> rejected 0.00 (+LAB-09)" in out
    assert "krevd 6.96, sats 7.11" in out  # the remark the sender now gets
    assert "lab-lab09-ok.msg: apprec.payload.xml differs:" in out
    assert '-  <Status V="1" DN="OK"/>' in out  # and the AppRec's own diff
    last = out.strip().splitlines()[-1]
    passed, failed = (int(w) for w in last.replace(",", "").split()[::2])
    assert failed > 0 and passed + failed == len(MESSAGES), last


def test_two_recordings_are_byte_identical(tmp_path, capsys):
    """The same corpus and config write the same bytes, twice (and as committed)."""
    first, second = tmp_path / "first", tmp_path / "second"
    assert replay(capsys, CORPUS, "--record", first)[0] == 0
    assert replay(capsys, CORPUS, "--record", second)[0] == 0
    recorded = tree(first)
    assert recorded == tree(second)
    assert recorded == tree(EXPECTED)


def test_missing_and_orphaned_expectations_fail(tmp_path, capsys):
    source, expected = subset(tmp_path, "lab-lab09-ok.msg", "lab-lab09-wrong.msg")
    shutil.rmtree(expected / "lab-lab09-wrong.msg")
    shutil.copytree(EXPECTED / "rad-rad01-ok.msg", expected / "rad-rad01-ok.msg")
    code, out = replay(capsys, source, "--expect", expected)
    assert code == 1
    assert "lab-lab09-wrong.msg: no expectation (record one with --record)" in out
    assert "rad-rad01-ok.msg: expected, but not in this replay" in out
    assert out.strip().endswith("1 passed, 2 failed")


def test_record_replaces_stale_expectations(tmp_path, capsys):
    source, expected = subset(tmp_path, "lab-lab09-ok.msg")
    shutil.copytree(EXPECTED / "rad-rad01-ok.msg", expected / "rad-rad01-ok.msg")
    (expected / "lab-lab09-ok.msg" / "old.soap.xml").write_text("stale")
    (expected / "notes").mkdir()  # not an expectation: left alone
    assert replay(capsys, source, "--record", expected)[0] == 0
    assert sorted(p.name for p in expected.iterdir()) == ["lab-lab09-ok.msg", "notes"]
    assert tree(expected / "lab-lab09-ok.msg") == tree(EXPECTED / "lab-lab09-ok.msg")


# --------------------------------------------------------------------------- bare MsgHead


def test_a_bare_msghead_is_wrapped_and_replayed(tmp_path, capsys):
    """An *.xml file is a MsgHead: wrapped for the tester (the demo partner by default)
    with a MessageId from its name and content, judged at its own GenDate."""
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(ROOT / "tests" / "data" / "claim-demo.xml", source / "demo.xml")
    code, out = replay(capsys, source, "--record", tmp_path / "a")
    assert code == 0
    assert "demo.xml: answered, AppRec status 1; bills 1001 approved 509.75" in out
    decision = json.loads((tmp_path / "a" / "demo.xml" / "decision.json").read_text())
    assert decision["message"]["sender_her"] == "90001"
    assert [b["verdict"] for b in decision["bills"]] == ["approved"] * 3
    assert sorted(p.name for p in (tmp_path / "a" / "demo.xml").iterdir()) == [
        "ack.soap.xml",
        "apprec.payload.xml",
        "apprec.soap.xml",
        "decision.json",
    ]
    replay(capsys, source / "demo.xml", "--record", tmp_path / "b")  # one file as SOURCE
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    # --at moves the clock: in May 2027 the October 2026 bills are too old (COM-08)
    code, out = replay(capsys, source, "--at", "2027-06-01T12:00:00Z", "--expect", tmp_path / "a")
    assert code == 1
    assert "demo.xml: bill 1001: approved 509.75 -> rejected 0.00 (+COM-08)" in out


def test_a_bare_msghead_from_another_partner(tmp_path, capsys):
    """--from-her picks the sender; its CPA comes from its agreement."""
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(ROOT / "tests" / "data" / "claim-demo.xml", source / "demo.xml")
    code, out = replay(capsys, source, "--from-her", "90002")
    assert code == 0
    assert "demo.xml: quarantined, AppRec status 2, S01" in out  # 90002 must sign


# --------------------------------------------------------------------------- settle, shadow

SETTLED = (
    "lab-lab04-genetics-lab.msg",  # paid to the genetics lab itself (LAB-10)
    "lab-lab09-ok.msg",
    "lab-lab09-wrong.msg",
    "rad-rad15-vestland.msg",  # paid to Helse Vest (RAD-15)
    "seq-com07-1-original.msg",
    "seq-com07-2-credit.msg",  # a negative line in the same vedtak
)


def test_settle_records_and_compares_the_vedtak(tmp_path, capsys):
    source, _ = subset(tmp_path, *SETTLED)
    recorded = tmp_path / "settled"
    code, out = replay(capsys, source, "--settle", "--record", recorded)
    assert code == 0 and "settlement: 3 vedtak" in out
    files = sorted(p.name for p in (recorded / "settlement").iterdir())
    assert "settlement.json" in files
    assert "vedtak-RHF-Helse-Sor-Ost-RHF.payload.xml" in files
    assert "utbetaling-RHF-Helse-Vest-RHF.payload.xml" in files
    summary = json.loads((recorded / "settlement" / "settlement.json").read_text())
    by_payee = {v["payee"]: v for v in summary["vedtak"]}
    assert by_payee["RHF:Helse Sør-Øst RHF"]["approved"] == "6.96"  # 6.96 + 53.32 - 53.32
    assert by_payee["INST:999000111"]["approved"] == "2724.87"
    vedtak = (recorded / "settlement" / "vedtak-RHF-Helse-Sor-Ost-RHF.payload.xml").read_text()
    assert '<m22:Godkjent U="NOK" V="-53.32"/>' in vedtak  # the credit: a line of its own
    assert replay(capsys, source, "--settle", "--expect", recorded)[0] == 0
    code, out = replay(capsys, source, "--expect", recorded)  # without --settle
    assert code == 1
    assert "settlement: expected, but this replay did not settle (use --settle)" in out
    changed = changed_rate_config(tmp_path)
    code, out = replay(capsys, source, "--settle", "--expect", recorded, config=changed)
    assert code == 1
    assert "settlement: RHF:Helse Sør-Øst RHF: 4 bills, paid 6.96 -> 4 bills, paid 0.00" in out
    payee = "settlement: RHF:Helse Sør-Øst RHF"
    assert f"{payee}: lab-lab09-ok.msg bill 1001: approved 6.96 -> rejected 0.00" in out
    assert "settlement: utbetaling-RHF-Helse-Sor-Ost-RHF.payload.xml gone" in out  # paid 0


def test_shadow_reports_every_bill_that_differs(tmp_path, capsys):
    """--shadow CONFIG: the same messages under a candidate config, bill by bill; a
    report, so exit 0."""
    source, _ = subset(tmp_path, "lab-lab09-ok.msg", "lab-lab03-repeats.msg", "rad-rad01-ok.msg")
    candidate = changed_rate_config(tmp_path)
    code, out = replay(capsys, source, "--shadow", candidate)
    assert code == 0
    assert "lab-lab09-ok.msg: bill 1001: approved 6.96 -> rejected 0.00 (+LAB-09)" in out
    assert "lab-lab03-repeats.msg" not in out and "rad-rad01-ok.msg" not in out
    assert out.strip().endswith("1 bills differ of 3")
    assert replay(capsys, source, "--shadow", CONFIG)[1].strip().endswith("0 bills differ of 3")


# --------------------------------------------------------------------------- the edges


def test_encrypted_answers_are_recorded_the_same_every_time(tmp_path, capsys):
    """A partner whose answers are encrypted (random keys, so other bytes every run):
    the recorded payload names only its type and size, and two recordings agree."""
    folder = tmp_path / "config"
    shutil.copytree(CONFIG.parent, folder)
    partners = folder / "partners.toml"
    text = partners.read_text()
    assert "encrypt = false\ncompress = true" in text
    partners.write_text(
        text.replace("encrypt = false\ncompress = true", "encrypt = true\ncompress = true")
    )
    source, _ = subset(tmp_path, "tech-ok-signed-encrypted.msg")
    cfg = folder / "kravmottak.toml"
    replay(capsys, source, "--record", tmp_path / "a", config=cfg)
    replay(capsys, source, "--record", tmp_path / "b", config=cfg)
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    text = (tmp_path / "a" / "tech-ok-signed-encrypted.msg" / "apprec.payload.txt").read_text()
    assert "application/pkcs7-mime" in text and "encrypted" in text


@pytest.mark.parametrize(
    "args",
    [
        ["/no/such/folder"],
        [str(CORPUS / "config")],  # a folder without recorded messages
        [str(CORPUS), "--at", "yesterday"],
        [str(CORPUS), "--expect", "/no/such/folder"],
        [str(CORPUS), "--shadow", str(CONFIG), "--expect", str(EXPECTED)],
    ],
    ids=["no-source", "no-messages", "bad-at", "no-expect-dir", "shadow-and-expect"],
)
def test_usage_errors_exit_2(capsys, args):
    capsys.readouterr()
    assert cli.main(["--config", str(CONFIG), "replay", *args]) == 2
    assert "kravmottak replay:" in capsys.readouterr().err
