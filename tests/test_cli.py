"""The `kravmottak` command line: init, partner, institution, validate, status."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime

import pytest
from cryptography import x509

from daemon import cli, config
from daemon.config import ConfigError
from tests.conftest import demo_claim, wrap_demo


def test_init_makes_a_self_contained_sandbox(tmp_path, capsys):
    """init DIR: config, var folders, ledger, and a key pair with a real certificate."""
    assert cli.main(["init", str(tmp_path / "sb")]) == 0
    cfg = tmp_path / "sb" / "kravmottak.toml"
    assert capsys.readouterr().out.strip() == str(cfg.resolve())
    settings = config.load(cfg)
    for folder in settings.paths.folders():
        assert folder.is_dir()
    for name in settings.paths.__dataclass_fields__:  # every path the config names
        assert getattr(settings.paths, name).is_relative_to(tmp_path / "sb"), name
    assert settings.paths.ledger.exists()
    cert = x509.load_pem_x509_certificate(settings.paths.certificate.read_bytes())
    assert "HER 79768" in cert.subject.rfc4514_string()
    assert settings.paths.private_key.stat().st_mode & 0o077 == 0
    assert cli.main(["init", str(tmp_path / "sb")]) == 2  # never overwrites silently (usage)


def test_partner_add_and_list(sandbox, capsys, tmp_path):
    """partner add writes partners.toml; list shows the certificate's subject."""
    cert = sandbox.paths.certificate
    args = [
        "--config",
        str(sandbox.config_path),
        "partner",
        "add",
        "--her-id",
        "555",
        "--cpa-id",
        "cpa:555",
        "--name",
        "Lab AS",
        "--certificate",
        str(cert),
        "--no-require-signature",
        "--encrypt",
    ]
    assert cli.main(args) == 0
    saved = tomllib.loads(sandbox.paths.partners.read_text())["partner"]
    (lab,) = [p for p in saved if p["her_id"] == "555"]
    assert lab["require_signature"] is False and lab["encrypt"] is True
    capsys.readouterr()
    assert cli.main(["--config", str(sandbox.config_path), "partner", "list"]) == 0
    out = capsys.readouterr().out
    assert "cpa:555" in out and "HER 79768" in out and "Lab AS" in out


def test_institution_add_with_ownership_and_services(sandbox, capsys):
    """institution add takes ownership and repeated --service; list shows them."""
    args = [
        "--config",
        str(sandbox.config_path),
        "institution",
        "add",
        "--orgnr",
        "974633574",
        "--name",
        "Gen Lab",
        "--rhf",
        "Helse Vest RHF",
        "--ownership",
        "driftsavtale",
        "--service",
        "genetics",
        "--service",
        "lab",
    ]
    assert cli.main(args) == 0
    capsys.readouterr()
    assert cli.main(["--config", str(sandbox.config_path), "institution", "list"]) == 0
    assert "driftsavtale" in (out := capsys.readouterr().out) and "genetics,lab" in out


def test_validate_reports_every_problem_and_exit_code(sandbox, tmp_path, capsys):
    """validate FILE: exit 0 and 'valid', or exit 1 with one line per problem."""
    good = tmp_path / "good.msg"
    good.write_bytes(wrap_demo())
    assert cli.main(["--config", str(sandbox.config_path), "validate", str(good)]) == 0
    bad = tmp_path / "bad.xml"
    bad.write_bytes(
        demo_claim()
        .replace(b' regningNr="1001"', b"")
        .replace(b'kravGrunnlag="1" regningNr="1002"', b'kravGrunnlag="7" regningNr="1002"')
    )
    capsys.readouterr()
    assert cli.main(["--config", str(sandbox.config_path), "validate", str(bad)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert all(
        line.startswith("T02 msghead /MsgHead/Document/RefDoc/Content/Melding") for line in lines
    )


def test_status_counts_states(sandbox, capsys):
    """status shows inbox, work and ledger counts."""
    sandbox.drop(wrap_demo())
    sandbox.drop(b"junk")
    sandbox.process()
    capsys.readouterr()
    assert cli.main(["--config", str(sandbox.config_path), "status"]) == 0
    counts = capsys.readouterr().out.split("\n\n")[0]  # then the settlement table
    rows = dict(line.rsplit(None, 1) for line in counts.splitlines()[1:])
    assert rows["ledger answered"] == "1"
    assert rows["ledger quarantined"] == "1"
    assert rows["work (claimed, in hand)"] == "0"
    assert rows["oldest unanswered"] == "-"


def test_config_path_precedence(monkeypatch, tmp_path):
    """--config, then $KRAVMOTTAK_CONFIG, then config/kravmottak.toml."""
    monkeypatch.setenv("KRAVMOTTAK_CONFIG", str(tmp_path / "env.toml"))
    assert config.config_path("x.toml").name == "x.toml"
    assert config.config_path(None) == tmp_path / "env.toml"
    monkeypatch.delenv("KRAVMOTTAK_CONFIG")
    assert config.config_path(None) == config.DEFAULT_CONFIG


def test_bad_config_is_a_clear_error(tmp_path, capsys):
    """Unknown keys or sections: exit 2 with the file named, no traceback."""
    cfg = tmp_path / "k.toml"
    cfg.write_text("[intake]\npoll_every = 3\n")
    with pytest.raises(ConfigError, match="poll_every"):
        config.load(cfg)
    assert cli.main(["--config", str(cfg), "status"]) == 2
    assert "k.toml" in capsys.readouterr().err


def test_repository_default_config_loads():
    """The embedded default that `make run` uses is valid and points at ./var."""
    settings = config.load(config.DEFAULT_CONFIG)
    assert settings.paths.inbox.parts[-2:] == ("var", "inbox")
    assert settings.generate_missing_keys


def test_wrap_drops_a_message_the_inbox_accepts(sandbox, capsys):
    """wrap MSGHEAD INBOX: an ebMS message, written atomically, that is answered OK."""
    from tests.conftest import DATA

    args = [
        "--config",
        str(sandbox.config_path),
        "wrap",
        str(DATA / "claim-demo.xml"),
        str(sandbox.paths.inbox),
        "--message-id",
        "wrapped-1",
    ]
    assert cli.main(args) == 0
    dropped = sandbox.paths.inbox / "claim-demo.msg"
    assert capsys.readouterr().out.strip() == str(dropped)
    assert [p.name for p in sandbox.paths.inbox.iterdir()] == ["claim-demo.msg"]
    import os
    import time

    os.utime(dropped, (time.time() - 5, time.time() - 5))
    sandbox.process()
    (apprec,) = sandbox.outbox("apprec")
    assert b'<Status V="1" DN="OK"/>' in apprec.read_bytes()
    assert b"<eb:RefToMessageId>wrapped-1</eb:RefToMessageId>" in apprec.read_bytes()


def test_status_oldest_unanswered_counts_the_inbox(sandbox, capsys):
    """A ready file waiting in the inbox shows as the oldest unanswered message."""
    dropped = sandbox.drop(wrap_demo())
    capsys.readouterr()
    assert cli.main(["--config", str(sandbox.config_path), "status"]) == 0
    counts = capsys.readouterr().out.split("\n\n")[0]  # then the settlement table
    rows = dict(line.rsplit(None, 1) for line in counts.splitlines()[1:])
    assert rows["inbox (received, ready)"] == "1"
    assert rows["oldest unanswered"].startswith(
        datetime.fromtimestamp(dropped.stat().st_mtime, UTC).strftime("%Y-%m-%dT%H:%M")
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[intake]\npoll_interval_seconds = 'fast'\n", "[intake] poll_interval_seconds: a number"),
        ("[logging]\nlevel = 'verbose'\n", "[logging] level: Input should be 'debug'"),
        ("[intake]\npoll_intervall_seconds = 2\n", "[intake] poll_intervall_seconds: unknown"),
        ("[metrics]\nenabled = 'yes'\n", "[metrics] enabled: true or false is needed"),
        ("[intake]\nmax_file_bytes = 0\n", "[intake] max_file_bytes: Input should be greater"),
        ("[keys]\npassphrase_env = 'A'\npassphrase_file = 'pw'\n", "one passphrase source"),
        ("[partys]\nher_id = '1'\n", "[partys]: unknown key"),
        ("[rules]\nmax_age_months = 'six months'\n", "[rules] max_age_months: a whole number"),
        ("[rules]\nmax_age_days = 183\n", "[rules] max_age_days is replaced by max_age_months"),
    ],
)
def test_config_errors_name_the_file_table_and_key(tmp_path, capsys, text, expected):
    """A misspelt key or a value of the wrong type: exit 2, one line naming the file,
    the table and the key, and no traceback."""
    cfg = tmp_path / "k.toml"
    cfg.write_text(text)
    assert cli.main(["--config", str(cfg), "status"]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: " in err and expected in err, err
    assert "Traceback" not in err and "pydantic" not in err


def test_config_rules_normalise_condition_codes(tmp_path):
    """[rules] hpv_conditions are compared without dots, in upper case."""
    cfg = tmp_path / "k.toml"
    cfg.write_text("[rules]\nhpv_conditions = ['z12.4', 'R87.6']\n")
    assert config.load(cfg).rules.hpv_conditions == ("Z124", "R876")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("her_id = '555'\ncpa_id = 'c'\nrequire_signatur = false", "partner #2 (HER 555) require_"),
        ("her_id = '555'\ncpa_id = 'c'\nencrypt = 'yes'", "partner #2 (HER 555) encrypt: true or"),
        ("her_id = '555'", "partner #2 (HER 555) cpa_id: missing"),
        ("her_id = '555'\ncpa_id = 'c'\nactions = ['Krav']", "actions #1: action 'Krav' must be"),
        ("her_id = '555'\ncpa_id = 'c'\nencrypt = true", "encrypt = true needs the partner's"),
    ],
)
def test_a_broken_partners_file_stops_the_daemon_naming_entry_and_field(
    sandbox, capsys, entry, expected
):
    """`process` on a sandbox whose partners.toml has a bad last entry: exit 2, the
    file, the entry and the field named, nothing processed."""
    before = sandbox.paths.partners.read_text()
    sandbox.paths.partners.write_text(before + f"\n[[partner]]\n{entry}\n")
    expected = expected.replace("partner #2", f"partner #{before.count('[[partner]]') + 1}")
    assert cli.main(["--config", str(sandbox.config_path), "process"]) == 2
    err = capsys.readouterr().err
    assert f"{sandbox.paths.partners}: " in err and expected in err, err
    assert "Traceback" not in err
