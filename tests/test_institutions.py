"""The institution registry as an operator uses it: `kravmottak institution …` run as a
subprocess against a sandbox, asserting exit code, message and that no traceback is
printed (issue #16 items 1 and 4, the institution half; issue #15 item 6)."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from tests.conftest import Sandbox

VALID_ORGNR = "974633574"  # passes mod 11


def kravmottak(box: Sandbox, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "daemon", "--config", str(box.config_path), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def entries(box: Sandbox) -> dict[str, dict]:
    data = tomllib.loads(box.paths.institutions.read_text(encoding="utf-8"))
    return {row["orgnr"]: row for row in data.get("institution", [])}


def add(box: Sandbox, *extra: str, orgnr: str = VALID_ORGNR, name: str = "Nytt sykehus HF"):
    return kravmottak(box, "institution", "add", "--orgnr", orgnr, "--name", name, *extra)


def test_the_short_rhf_name_is_an_alias_of_the_table_name(sandbox):
    """#16 item 1: "Helse Sør-Øst" is stored as the RHF table's "Helse Sør-Øst RHF", the
    payee settlement knows; ownership and services are written as given."""
    done = add(sandbox, "--rhf", "helse sør-øst", "--service", "lab")
    assert done.returncode == 0, done.stderr
    row = entries(sandbox)[VALID_ORGNR]
    assert row["rhf"] == "Helse Sør-Øst RHF"
    assert row["ownership"] == "rhf" and row["services"] == ["lab"]


def test_an_unknown_rhf_is_refused_listing_the_valid_ones(sandbox):
    done = add(sandbox, "--rhf", "Helse Sørøst")
    assert done.returncode == 2
    assert "Helse Sørøst" in done.stderr and "Helse Sør-Øst RHF" in done.stderr
    assert "Helse Nord RHF" in done.stderr
    assert VALID_ORGNR not in entries(sandbox)


@pytest.mark.parametrize(
    ("orgnr", "name", "extra", "said"),
    [
        ("974633575", "Sykehus", ("--rhf", "Helse Vest RHF"), "mod 11"),
        ("97463357", "Sykehus", ("--rhf", "Helse Vest RHF"), "organisation number"),
        (VALID_ORGNR, "   ", ("--rhf", "Helse Vest RHF"), "--name"),
        (VALID_ORGNR, "Sykehus", (), "needs --rhf"),
        (VALID_ORGNR, "Sykehus", ("--ownership", "state", "--rhf", "Helse Vest"), "no --rhf"),
    ],
    ids=["bad-check-digit", "eight-digits", "blank-name", "rhf-owned-without-rhf", "state-rhf"],
)
def test_add_checks_orgnr_name_and_ownership(sandbox, orgnr, name, extra, said):
    """#16 item 4: the organisation number (mod 11) and the name are checked."""
    done = add(sandbox, *extra, orgnr=orgnr, name=name)
    assert done.returncode == 2 and said in done.stderr, done.stderr
    assert orgnr not in entries(sandbox)


def test_a_state_institution_outside_the_rhfs_is_paid_directly(sandbox):
    done = add(sandbox, "--ownership", "state", "--service", "radiology")
    assert done.returncode == 0, done.stderr
    row = entries(sandbox)[VALID_ORGNR]
    assert row["ownership"] == "state" and row["rhf"] == ""


def test_remove(sandbox):
    """#16 item 4: `institution remove`; removing one that is not there exits 1."""
    assert add(sandbox, "--rhf", "Helse Vest").returncode == 0
    done = kravmottak(sandbox, "institution", "remove", "--orgnr", VALID_ORGNR)
    assert done.returncode == 0 and VALID_ORGNR not in entries(sandbox)
    again = kravmottak(sandbox, "institution", "remove", "--orgnr", VALID_ORGNR)
    assert again.returncode == 1 and "not registered" in again.stderr


def test_units_are_added_kept_and_removed(sandbox):
    """#15 item 6: `institution unit` registers a unit's own services; replacing the
    institution keeps its units; --remove forgets them."""
    assert add(sandbox, "--rhf", "Helse Vest").returncode == 0
    unit = ("institution", "unit", "--orgnr", VALID_ORGNR, "--resh", "4001")
    done = kravmottak(sandbox, *unit, "--service", "genetics", "--name", "Genetikk")
    assert done.returncode == 0, done.stderr
    assert add(sandbox, "--rhf", "Helse Vest", name="Omdøpt HF").returncode == 0
    row = entries(sandbox)[VALID_ORGNR]
    assert row["name"] == "Omdøpt HF"
    assert row["units"] == [{"resh": "4001", "name": "Genetikk", "services": ["genetics"]}]
    listed = kravmottak(sandbox, "institution", "list").stdout
    assert "4001:genetics" in listed
    assert kravmottak(sandbox, *unit, "--remove").returncode == 0
    assert "units" not in entries(sandbox)[VALID_ORGNR]
    missing = kravmottak(sandbox, "institution", "unit", "--orgnr", "983974676", "--resh", "1")
    assert missing.returncode == 1 and "not registered" in missing.stderr


def test_a_broken_registry_entry_names_the_field(sandbox):
    """A hand-edited file with an unknown service or ownership: exit 2, the entry named."""
    path = sandbox.paths.institutions
    path.write_text(
        path.read_text(encoding="utf-8")
        + '\n[[institution]]\norgnr = "974633574"\nname = "X"\nrhf = "Helse Vest RHF"\n'
        'services = ["xray"]\n',
        encoding="utf-8",
    )
    done = kravmottak(sandbox, "institution", "list")
    assert done.returncode == 2 and "institution #2" in done.stderr and "xray" in done.stderr
