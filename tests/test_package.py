"""The package as an operator installs it: a wheel in a fresh venv outside the checkout.

One slow smoke test (issue 13): build the wheel with `pip wheel --no-deps` from a copy
of the sources, install it into a new venv in a temporary folder with the dependencies
from requirements.lock, and from a folder outside the checkout run init, partner add,
institution add, tariff import, process (a signed claim: AppRec status 1) and settle (a
vedtak that `kravmottak validate` accepts). Nothing may be written into the checkout or
into the folder the commands run from; everything lands in the sandbox the config names.
pip's cache is reused, so after the first run nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from lxml import etree

from daemon.tools.wrap import wrap
from daemon.transport import keys, trust
from tests.conftest import CERTS_FROM, ROOT, TODAY, unique_claim
from tests.test_intake import AR, read_output

PARTNER_HER = "90001"
PARTNER_CPA = "kravmottak:demo:1"
INSTITUTION = "983974678"  # the demo claim's institution
SOURCES = ("pyproject.toml", "README.md", "daemon", "schemas", "config")


def run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def git_status() -> str | None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return None
    done = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=all"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv outside the checkout holding the wheel and the locked dependencies."""
    tmp = tmp_path_factory.mktemp("package")
    source = tmp / "source"  # a copy, so the build writes nothing into the checkout
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, symlinks=True)
        else:
            shutil.copy2(ROOT / name, source / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = [sys.executable, "-m", "pip", "--quiet"]
    run([*pip, "wheel", "--no-deps", "--wheel-dir", str(tmp / "dist"), str(source)], tmp, env)
    (wheel,) = (tmp / "dist").glob("kravmottak-*.whl")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp, env)
    vpip = [str(venv / "bin" / "python"), "-m", "pip", "--quiet"]
    run([*vpip, "install", "--require-hashes", "-r", str(ROOT / "requirements.lock")], tmp, env)
    run([*vpip, "install", "--no-deps", str(wheel)], tmp, env)
    run([*vpip, "check"], tmp, env)  # the lock holds everything the wheel requires
    return venv


@pytest.mark.slow
def test_the_wheel_finds_every_schema_and_register(installed: Path, tmp_path: Path) -> None:
    """`import daemon` from the install: the XSDs and registers are the wheel's own
    copies, every one of the repository's, and they load."""
    probe = textwrap.dedent(
        """
        import json, pathlib, daemon
        from daemon import resources
        from daemon.schemas import Schemas
        from daemon.registers import tariffs
        schemas, registers = resources.schema_dir(), resources.shipped_registers()
        Schemas.load()
        shipped = tariffs.load(pathlib.Path("no-imports-here"))
        print(json.dumps({
            "package": daemon.__file__,
            "schemas": sorted(str(p.relative_to(schemas)) for p in schemas.rglob("*.xsd")),
            "registers": sorted(p.name for p in registers.iterdir()),
            "rhfs": len(shipped.rhf.rhfs),
            "radiology": len(shipped.radiology.codes),
        }))
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    found = json.loads(run([str(installed / "bin" / "python"), "-c", probe], tmp_path, env))
    assert Path(found["package"]).is_relative_to(installed)
    assert found["schemas"] == sorted(
        str(p.relative_to(ROOT / "schemas")) for p in (ROOT / "schemas").rglob("*.xsd")
    )
    tariffs_dir = ROOT / "config" / "tariffs"
    assert found["registers"] == sorted(
        p.name for p in tariffs_dir.iterdir() if p.suffix in (".csv", ".toml")
    )
    assert found["rhfs"] == 4 and found["radiology"] > 0
    assert not list(tmp_path.iterdir())  # nothing written where it ran


@pytest.mark.slow
def test_installed_service_end_to_end_outside_the_checkout(installed: Path, tmp_path: Path):
    before = git_status()
    if os.environ.get("CI"):  # a fresh clone: clean before, so clean after
        assert before in ("", None), before
    elsewhere = tmp_path / "elsewhere"  # the operator's working folder
    elsewhere.mkdir()
    box = tmp_path / "sandbox"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{installed / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    k = [str(installed / "bin" / "kravmottak")]
    cfg = box / "kravmottak.toml"

    run([*k, "init", str(box)], elsewhere, env)
    # the demo claim is from October 2026: judged as of a fixed day, with our
    # certificate valid then (as tests/conftest.py's sandboxes do)
    cfg.write_text(cfg.read_text().replace("[intake]\n", f'[intake]\nfixed_time = "{TODAY}"\n'))
    our = {"her_id": "79768", "orgnr": "889640782", "name": "HELFO"}
    keys_dir = box / "var" / "keys"
    keys.generate(
        keys_dir / "kravmottak.key.pem", keys_dir / "kravmottak.cert.pem",
        **our, not_before=CERTS_FROM, days=3650,
    )  # fmt: skip
    hospital = tmp_path / "hospital"
    keys.generate(
        hospital / "key.pem", hospital / "cert.pem",
        her_id=PARTNER_HER, orgnr=INSTITUTION, name="Demo sykehus HF",
        not_before=CERTS_FROM, days=3650,
    )  # fmt: skip
    pair = keys.load_pair(hospital / "key.pem", hospital / "cert.pem", None)
    c = ["--config", str(cfg)]
    run(
        [*k, *c, "partner", "add", "--her-id", PARTNER_HER, "--cpa-id", PARTNER_CPA,
         "--orgnr", INSTITUTION, "--name", "Demo sykehus HF",
         "--certificate", str(hospital / "cert.pem")],
        elsewhere, env,
    )  # fmt: skip
    run(
        [*k, *c, "institution", "add", "--orgnr", INSTITUTION, "--name", "Demo sykehus HF",
         "--rhf", "Helse Sør-Øst RHF", "--service", "lab"],
        elsewhere, env,
    )  # fmt: skip
    table = tmp_path / "radiologi.csv"
    table.write_text("kode,navn,refusjonskategori,belop\nSNG0AA,RG Kne,R1,312.50\n")
    report = run(
        [*k, *c, "tariff", "import", "--kind", "radiologi", str(table),
         "--valid-from", "2026-01-01", "--force"],  # one row replaces 1 378: forced
        elsewhere, env,
    )  # fmt: skip
    assert (box / "var" / "tariffs").is_dir(), report
    shown = run([*k, *c, "tariff", "show", "SNG0AA", "--date", "2026-10-05"], elsewhere, env)
    assert "312.50" in shown
    assert git_status() == before  # nothing of the above went into the checkout

    # a signed claim from the registered partner: AppRec status 1
    msghead = etree.tostring(
        trust.sign_msghead(etree.fromstring(unique_claim()), pair),
        xml_declaration=True,
        encoding="UTF-8",
    )
    raw = wrap(msghead, from_her=PARTNER_HER, cpa_id=PARTNER_CPA, signer=pair)
    inbox = box / "var" / "inbox"
    (inbox / ".claim.msg.tmp").write_bytes(raw)
    past = time.time() - 60  # written a while ago: past the stability wait
    os.utime(inbox / ".claim.msg.tmp", (past, past))
    os.rename(inbox / ".claim.msg.tmp", inbox / "claim.msg")
    run([*k, *c, "process"], elsewhere, env)
    outbox = box / "var" / "outbox"
    (answer,) = outbox.glob("apprec-*.msg")
    apprec = read_output(answer)[1]
    assert apprec.find("ar:Status", AR).get("V") == "1", etree.tostring(apprec)
    assert apprec.findall("ar:Error", AR) == []

    # settle: a vedtak per payee, which `validate` accepts
    settled = run([*k, *c, "settle", "--cutoff", "2026-11-23T12:00:00+00:00"], elsewhere, env)
    vedtak = sorted(outbox.glob("vedtak-*.msg"))
    assert vedtak, settled
    for path in vedtak:
        assert run([*k, *c, "validate", str(path)], elsewhere, env).strip() == "valid"

    assert not list(elsewhere.iterdir())  # nothing written where the commands ran
    assert git_status() == before


@pytest.mark.slow
def test_the_wheel_ships_the_migrations(installed: Path, tmp_path: Path) -> None:
    """`kravmottak db current` / `db upgrade` from the install: Alembic finds the
    wheel's own migration scripts, and a ledger made before versioned migrations is
    refused by `db current` (exit 1, naming the command) until `db upgrade` ran."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    k = [str(installed / "bin" / "kravmottak")]
    box = tmp_path / "sandbox"
    run([*k, "init", str(box)], tmp_path, env)
    cfg = ["--config", str(box / "kravmottak.toml")]
    assert "revision 0002 (head)" in run([*k, *cfg, "db", "current"], tmp_path, env)
    ledger = box / "var" / "ledger.sqlite3"
    import sqlite3

    with sqlite3.connect(ledger) as db:  # as a ledger made before versions looks
        db.execute("DROP TABLE alembic_version")
    old = subprocess.run([*k, *cfg, "db", "current"], env=env, capture_output=True, text=True)
    assert old.returncode == 1 and "kravmottak db upgrade" in old.stdout, old
    out = run([*k, *cfg, "db", "upgrade"], tmp_path, env)
    assert "upgraded from legacy to revision 0002 (head)" in out
    assert "revision 0002 (head)" in run([*k, *cfg, "db", "current"], tmp_path, env)
