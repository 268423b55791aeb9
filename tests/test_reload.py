"""SIGHUP reload: new tariffs and registry all or nothing; a broken file changes nothing."""

from __future__ import annotations

import shutil
from datetime import date

from daemon.registers.tariffs import SHIPPED_DIR
from daemon.service import runner as service


def _use_copied_tariffs(sandbox) -> None:
    shutil.copytree(SHIPPED_DIR, sandbox.root / "tariffs")
    cfg = sandbox.config_path
    cfg.write_text(cfg.read_text().replace("[paths]\n", '[paths]\ntariffs = "tariffs"\n'))


def test_reload_takes_new_tariffs_and_refuses_broken_ones(sandbox):
    """A changed rate takes effect on reload; a broken rates file is refused, old stays."""
    _use_copied_tariffs(sandbox)
    intake = sandbox.intake()
    try:
        day = date(2026, 10, 5)
        assert str(intake.tariffs.rate("MB2", "stat", day)) == "6.96"
        rates = sandbox.root / "tariffs" / "lab-rates.csv"
        original = rates.read_text()
        rates.write_text(original.replace(",6.96,", ",7.11,"))
        service.reload(intake)
        assert str(intake.tariffs.rate("MB2", "stat", day)) == "7.11"

        rates.write_text(original.replace(",6.96,", ",not-money,"))
        before = intake.tariffs
        service.reload(intake)
        assert intake.tariffs is before  # refused: the running table stays
        assert str(intake.tariffs.rate("MB2", "stat", day)) == "7.11"
    finally:
        intake.ledger.close()


def test_reload_refuses_a_broken_partner_file(sandbox):
    """partners.toml with a syntax error: the old agreements keep running."""
    intake = sandbox.intake()
    try:
        before = intake.registry
        sandbox.paths.partners.write_text("[[partner]\nher_id = ")
        service.reload(intake)
        assert intake.registry is before
    finally:
        intake.ledger.close()
